//! Signing keys: static (a trusted JWKS document, the dev issuer) and fetched
//! (OIDC discovery, Google service-account JWKS), cached per issuer and refreshed
//! when a token names a key id not seen yet.

use super::AuthError;
use crate::http::HttpClient;
use crate::model::Clock;
use bytes::Bytes;
use jwt_compact::jwk::JsonWebKey;
use rsa::RsaPublicKey;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Minimum seconds between two fetches of one issuer's keys (unknown-kid refreshes).
const REFRESH_INTERVAL: i64 = 30;

/// A public key and the id it is published under.
#[derive(Debug, Clone)]
pub struct NamedKey {
    /// `kid`, if the JWKS gave one.
    pub kid: Option<String>,
    /// The key.
    pub key: RsaPublicKey,
}

/// Parse a JWKS document (`{"keys": [...]}`), keeping RSA keys.
pub fn parse_jwks(doc: &[u8]) -> Result<Vec<NamedKey>, String> {
    let v: Value = serde_json::from_slice(doc).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS has no \"keys\" array")?;
    let mut out = Vec::new();
    for k in keys {
        if k.get("kty").and_then(Value::as_str) != Some("RSA") {
            continue;
        }
        let kid = k.get("kid").and_then(Value::as_str).map(str::to_string);
        let jwk: JsonWebKey<'_> = serde_json::from_value(k.clone()).map_err(|e| format!("bad JWK: {e}"))?;
        let key = RsaPublicKey::try_from(&jwk).map_err(|e| format!("bad RSA JWK: {e}"))?;
        out.push(NamedKey { kid, key });
    }
    Ok(out)
}

/// A JWKS document for `keys`.
pub fn to_jwks(keys: &[NamedKey]) -> Value {
    let list: Vec<Value> = keys
        .iter()
        .map(|k| {
            let mut v = serde_json::to_value(JsonWebKey::from(&k.key)).unwrap_or(Value::Null);
            if let (Some(obj), Some(kid)) = (v.as_object_mut(), &k.kid) {
                obj.insert("kid".into(), Value::String(kid.clone()));
                obj.insert("alg".into(), Value::String("RS256".into()));
                obj.insert("use".into(), Value::String("sig".into()));
            }
            v
        })
        .collect();
    serde_json::json!({ "keys": list })
}

struct Fetched {
    at: i64,
    keys: Vec<NamedKey>,
}

/// Where token keys come from.
pub struct KeySet<H> {
    http: Option<H>,
    static_keys: Vec<NamedKey>,
    openid_provider: Option<String>,
    clock: Arc<dyn Clock>,
    fetched: Mutex<HashMap<String, Arc<Fetched>>>,
}

impl<H: HttpClient> KeySet<H> {
    /// Keys from `static_keys`, plus keys fetched with `http` (none fetched when `http` is `None`).
    pub fn new(
        http: Option<H>,
        static_keys: Vec<NamedKey>,
        openid_provider: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        KeySet {
            http,
            static_keys,
            openid_provider,
            clock,
            fetched: Mutex::new(HashMap::new()),
        }
    }

    /// The key that signed a token from `iss` with header `kid`.
    pub async fn find(&self, iss: &str, kid: Option<&str>) -> Result<RsaPublicKey, AuthError> {
        if let Some(k) = pick(&self.static_keys, kid) {
            return Ok(k);
        }
        let Some(url) = self.jwks_url_hint(iss) else {
            return Err(AuthError::Invalid);
        };
        let now = self.clock.now().timestamp();
        let cached = self.fetched.lock().unwrap_or_else(|e| e.into_inner()).get(iss).cloned();
        if let Some(f) = &cached {
            if let Some(k) = pick(&f.keys, kid) {
                return Ok(k);
            }
            if now - f.at < REFRESH_INTERVAL {
                return Err(AuthError::Invalid);
            }
        }
        let keys = self.fetch(iss, url).await?;
        let found = pick(&keys, kid);
        self.fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(iss.to_string(), Arc::new(Fetched { at: now, keys }));
        found.ok_or(AuthError::Invalid)
    }

    fn jwks_url_hint(&self, iss: &str) -> Option<JwksSource> {
        if self.openid_provider.as_deref() == Some(iss) {
            let base = if iss.ends_with('/') {
                iss.to_string()
            } else {
                format!("{iss}/")
            };
            return Some(JwksSource::Discovery(format!("{base}.well-known/openid-configuration")));
        }
        if iss.contains('@') {
            return Some(JwksSource::Direct(format!(
                "https://www.googleapis.com/service_accounts/v1/jwk/{iss}"
            )));
        }
        None
    }

    async fn get_json(&self, url: &str) -> Result<Bytes, AuthError> {
        let http = self
            .http
            .as_ref()
            .ok_or_else(|| AuthError::KeysUnavailable("no HTTP client".into()))?;
        let req = http::Request::get(url)
            .body(Bytes::new())
            .map_err(|e| AuthError::KeysUnavailable(e.to_string()))?;
        let resp = http
            .send(req)
            .await
            .map_err(|e| AuthError::KeysUnavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(AuthError::KeysUnavailable(format!("{url}: HTTP {}", resp.status())));
        }
        Ok(resp.into_body())
    }

    async fn fetch(&self, iss: &str, src: JwksSource) -> Result<Vec<NamedKey>, AuthError> {
        let url = match src {
            JwksSource::Direct(u) => u,
            JwksSource::Discovery(u) => {
                let doc = self.get_json(&u).await?;
                let v: Value = serde_json::from_slice(&doc).map_err(|e| AuthError::KeysUnavailable(e.to_string()))?;
                v.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| AuthError::KeysUnavailable(format!("{iss}: discovery document has no jwks_uri")))?
                    .to_string()
            }
        };
        let doc = self.get_json(&url).await?;
        parse_jwks(&doc).map_err(AuthError::KeysUnavailable)
    }
}

enum JwksSource {
    Discovery(String),
    Direct(String),
}

fn pick(keys: &[NamedKey], kid: Option<&str>) -> Option<RsaPublicKey> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .map(|k| k.key.clone()),
        // A token without `kid` is accepted only when exactly one key could have signed it.
        None if keys.len() == 1 => Some(keys[0].key.clone()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpError;
    use chrono::{DateTime, Utc};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct ManualClock(Mutex<DateTime<Utc>>);
    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    /// Serves a discovery document and whatever JWKS `keys` holds; counts calls.
    struct FakeProvider {
        keys: Mutex<Vec<NamedKey>>,
        calls: AtomicUsize,
    }

    impl HttpClient for &FakeProvider {
        async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let body = match req.uri().path() {
                "/.well-known/openid-configuration" => {
                    serde_json::json!({"jwks_uri": "https://issuer.example/keys"}).to_string()
                }
                "/keys" => to_jwks(&self.keys.lock().unwrap()).to_string(),
                _ => return Ok(http::Response::builder().status(404).body(Bytes::new()).unwrap()),
            };
            Ok(http::Response::new(Bytes::from(body)))
        }

        async fn send_stream(
            &self,
            _req: http::Request<crate::http::ReqBody>,
        ) -> Result<http::Response<crate::model::platform::ByteStream>, HttpError> {
            Err(HttpError::Transport("not used".into()))
        }
    }

    fn key(kid: &str) -> (NamedKey, RsaPublicKey) {
        let k = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024)
            .unwrap()
            .to_public_key();
        (
            NamedKey {
                kid: Some(kid.into()),
                key: k.clone(),
            },
            k,
        )
    }

    #[tokio::test]
    async fn discovery_cache_and_refresh_on_unknown_kid() {
        let iss = "https://issuer.example/";
        let (k1, pk1) = key("k1");
        let (k2, pk2) = key("k2");
        let provider = FakeProvider {
            keys: Mutex::new(vec![k1]),
            calls: AtomicUsize::new(0),
        };
        let clock = Arc::new(ManualClock(Mutex::new(Utc::now())));
        let set = KeySet::new(Some(&provider), vec![], Some(iss.to_string()), clock.clone());

        assert_eq!(set.find(iss, Some("k1")).await.unwrap(), pk1);
        assert_eq!(provider.calls.load(Ordering::SeqCst), 2, "discovery + JWKS");
        assert_eq!(set.find(iss, Some("k1")).await.unwrap(), pk1);
        assert_eq!(provider.calls.load(Ordering::SeqCst), 2, "served from cache");

        // The provider rotates to k2. Right after a fetch, unknown kids do not refetch
        // (a flood of random kids cannot hammer the provider) ...
        provider.keys.lock().unwrap().push(k2);
        assert_eq!(set.find(iss, Some("k2")).await, Err(AuthError::Invalid));
        assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
        // ... but once the refresh interval has passed, an unknown kid refetches.
        *clock.0.lock().unwrap() += chrono::Duration::seconds(REFRESH_INTERVAL + 1);
        assert_eq!(set.find(iss, Some("k2")).await.unwrap(), pk2);
        assert_eq!(provider.calls.load(Ordering::SeqCst), 4);
        // Issuers that are neither the provider nor service accounts are never fetched.
        assert_eq!(
            set.find("https://other.example/", Some("k1")).await,
            Err(AuthError::Invalid)
        );
        assert_eq!(provider.calls.load(Ordering::SeqCst), 4);
    }
}
