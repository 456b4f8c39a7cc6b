//! Signing keys: static (a trusted JWKS document, the dev issuer) and fetched
//! (OIDC discovery, Google service-account JWKS).
//!
//! Fetched keys are cached per issuer in a cache bounded by bytes
//! ([`AuthLimits::key_cache_bytes`]). Fetches are bounded three ways, because every
//! token can name a new issuer or key id: one at a time per issuer (later callers wait
//! for the first fetch, or keep using the keys they have), spaced per issuer (an
//! unknown `kid` refetches at most every [`REFRESH_INTERVAL`] seconds, a failed fetch is
//! remembered for [`FAILURE_TTL`] seconds), and capped across issuers by a token bucket
//! ([`AuthLimits::key_fetches_per_minute`]). Answers are read up to
//! [`KEY_DOCUMENT_LIMIT`] bytes.

use super::{AuthError, AuthLimits, KeysUnavailable};
use crate::http::{HttpClient, HttpError};
use crate::model::Clock;
use bytes::Bytes;
use jwt_compact::jwk::JsonWebKey;
use quick_cache::sync::{Cache, EntryAction, EntryResult};
use rsa::traits::PublicKeyParts;
use rsa::RsaPublicKey;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// Where Google publishes a service account's public keys; the account's email is
/// appended as one percent-encoded path segment.
pub const GOOGLE_SERVICE_ACCOUNT_JWKS: &str = "https://www.googleapis.com/service_accounts/v1/jwk/";

/// Minimum seconds between two fetches of one issuer's keys after a fetch that
/// answered: a token naming a key id the issuer does not publish refetches at most
/// this often.
pub const REFRESH_INTERVAL: i64 = 30;

/// Seconds a failed fetch of one issuer's keys is remembered (negative cache): within
/// it, tokens of that issuer get the same answer without a fetch (401 if the key
/// server said the issuer does not exist, 503 otherwise).
pub const FAILURE_TTL: i64 = 60;

/// Seconds fetched keys are trusted before they are fetched again, so that a key its
/// issuer withdrew (a leaked service-account key) stops working within this time. If
/// that fetch fails, the old keys stay in use and the fetch is retried after
/// [`FAILURE_TTL`].
pub const KEYS_MAX_AGE: i64 = 3600;

/// Largest discovery or JWKS document read, in bytes (Google's service-account JWKS
/// are about 2 KiB); a larger answer is a failed fetch.
pub const KEY_DOCUMENT_LIMIT: usize = 256 * 1024;

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

/// How a fetch of an issuer's keys failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The key server says there is no such issuer (404, 410): the token is invalid.
    Gone,
    /// Anything else: transport, other statuses, too large, not a JWKS.
    Unavailable,
}

/// What the cache holds for one issuer: its last good keys and the last fetch's fate.
#[derive(Clone)]
struct IssuerKeys {
    /// Keys of the last fetch that answered (empty if none did, or the issuer is gone).
    keys: Arc<[NamedKey]>,
    /// When `keys` were fetched.
    fetched_at: Option<i64>,
    /// When a fetch was last started (taken before it runs, so that it also marks a
    /// fetch in progress).
    tried_at: i64,
    /// How the last fetch failed, if it did.
    failure: Option<Failure>,
}

/// What a lookup in the cache decided.
enum Decision {
    Hit(RsaPublicKey),
    Miss(AuthError),
    /// Fetch now; the entry as it was (its keys serve if the fetch fails).
    Fetch(IssuerKeys),
}

/// Bytes a cached key costs besides its modulus and exponent (the big-integer
/// structs, the kid, the cache's bookkeeping, roughly).
const KEY_OVERHEAD: u64 = 160;

/// Weighs an issuer's entry by the bytes it holds.
#[derive(Debug, Clone, Copy)]
struct KeysWeight;

impl quick_cache::Weighter<String, IssuerKeys> for KeysWeight {
    fn weight(&self, iss: &String, e: &IssuerKeys) -> u64 {
        let keys: u64 = e
            .keys
            .iter()
            .map(|k| {
                let bytes = k.key.n().bits().div_ceil(8) + k.key.e().bits().div_ceil(8);
                KEY_OVERHEAD + (bytes + k.kid.as_ref().map_or(0, String::len)) as u64
            })
            .sum();
        KEY_OVERHEAD + iss.len() as u64 + keys
    }
}

/// A token bucket over the injected clock: `per_minute` fetches a minute, refilled
/// evenly, at most `burst` at once. Counted in thousandths of a fetch, so that
/// whole-second clocks refill smoothly.
struct FetchBudget {
    per_minute: u64,
    burst: u64,
    /// Last refill (unix seconds) and thousandths of a fetch left.
    state: Mutex<(i64, u64)>,
}

impl FetchBudget {
    fn new(limits: &AuthLimits, now: i64) -> Self {
        let burst = u64::from(limits.key_fetch_burst);
        FetchBudget {
            per_minute: u64::from(limits.key_fetches_per_minute),
            burst,
            state: Mutex::new((now, burst * 1000)),
        }
    }

    /// Take one fetch, if there is one left.
    fn take(&self, now: i64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, left) = *state;
        let elapsed = u64::try_from(now.saturating_sub(last)).unwrap_or(0);
        let refill = elapsed.saturating_mul(self.per_minute).saturating_mul(1000) / 60;
        let left = left.saturating_add(refill).min(self.burst * 1000);
        // A clock that went back does not move `last` back (no double refill later).
        let last = last.max(now);
        if left >= 1000 {
            *state = (last, left - 1000);
            true
        } else {
            *state = (last, left);
            false
        }
    }
}

/// Where token keys come from.
pub struct KeySet<H> {
    http: Option<H>,
    static_keys: Vec<NamedKey>,
    openid_provider: Option<String>,
    clock: Arc<dyn Clock>,
    fetched: Cache<String, IssuerKeys, KeysWeight>,
    budget: FetchBudget,
}

impl<H: HttpClient> KeySet<H> {
    /// Keys from `static_keys`, plus keys fetched with `http` (none fetched when `http`
    /// is `None`), within [`AuthLimits::NATIVE`] until [`KeySet::with_limits`] says otherwise.
    pub fn new(
        http: Option<H>,
        static_keys: Vec<NamedKey>,
        openid_provider: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let limits = AuthLimits::NATIVE;
        let now = clock.now().timestamp();
        KeySet {
            http,
            static_keys,
            openid_provider,
            fetched: Self::cache(&limits),
            budget: FetchBudget::new(&limits, now),
            clock,
        }
    }

    /// The same key set within `limits` (cache budget and fetch cap); forgets fetched keys.
    pub fn with_limits(self, limits: &AuthLimits) -> Self {
        let now = self.clock.now().timestamp();
        KeySet {
            fetched: Self::cache(limits),
            budget: FetchBudget::new(limits, now),
            ..self
        }
    }

    fn cache(limits: &AuthLimits) -> Cache<String, IssuerKeys, KeysWeight> {
        let budget = limits.key_cache_bytes.max(1);
        // A typical entry: one issuer with two 2048-bit keys.
        let typical = 3 * KEY_OVERHEAD + 2 * 260 + 64;
        Cache::with_weighter((budget / typical).max(1) as usize, budget, KeysWeight)
    }

    /// The key that signed a token from `iss` with header `kid`.
    pub async fn find(&self, iss: &str, kid: Option<&str>) -> Result<RsaPublicKey, AuthError> {
        if let Some(k) = pick(&self.static_keys, kid) {
            return Ok(k);
        }
        let Some(src) = self.source(iss) else {
            return Err(AuthError::Invalid);
        };
        let now = self.clock.now().timestamp();
        // The first caller for an issuer gets a guard, and later ones wait for its fetch;
        // for an issuer already cached, `decide` answers (or claims a refetch) in place.
        let previous = match self.fetched.entry_async(iss, |_, e| self.decide(e, kid, now)).await {
            EntryResult::Retained(Decision::Hit(k)) => return Ok(k),
            EntryResult::Retained(Decision::Miss(e)) => return Err(e),
            EntryResult::Retained(Decision::Fetch(previous)) => previous,
            EntryResult::Vacant(guard) => {
                if !self.budget.take(now) {
                    tracing::warn!(issuer = iss, "key fetch refused: fetch cap reached");
                    return Err(AuthError::KeysUnavailable(KeysUnavailable::RateLimited));
                }
                let empty = IssuerKeys {
                    keys: Arc::from(Vec::new()),
                    fetched_at: None,
                    tried_at: now,
                    failure: None,
                };
                let (entry, found) = self.refresh(iss, src, empty, kid, now).await;
                // Fails only if the placeholder was removed meanwhile; nothing to do then.
                let _ = guard.insert(entry);
                return found;
            }
            // `decide` neither removes nor replaces, and the async entry never times out.
            EntryResult::Removed(..) | EntryResult::Replaced(..) | EntryResult::Timeout => {
                return Err(AuthError::KeysUnavailable(KeysUnavailable::Upstream))
            }
        };
        let (entry, found) = self.refresh(iss, src, previous, kid, now).await;
        self.fetched.insert(iss.to_string(), entry);
        found
    }

    /// Answer from a cached entry, or claim a refetch (taking one from the budget and
    /// marking the entry as tried now, so that concurrent callers do not fetch too).
    /// Runs under the cache shard's lock: no awaiting, no calls back into the cache.
    fn decide(&self, e: &mut IssuerKeys, kid: Option<&str>, now: i64) -> EntryAction<Decision> {
        let key = pick(&e.keys, kid);
        let fresh = e.fetched_at.is_some_and(|t| now - t < KEYS_MAX_AGE);
        if let Some(k) = &key {
            // Past their age, keys still serve while a refetch is under way or failed lately.
            if fresh || now - e.tried_at < FAILURE_TTL {
                return EntryAction::Retain(Decision::Hit(k.clone()));
            }
        }
        let spacing = if e.failure.is_some() {
            FAILURE_TTL
        } else {
            REFRESH_INTERVAL
        };
        if now - e.tried_at < spacing {
            return EntryAction::Retain(Decision::Miss(match e.failure {
                Some(Failure::Unavailable) => AuthError::KeysUnavailable(KeysUnavailable::Upstream),
                Some(Failure::Gone) | None => AuthError::Invalid,
            }));
        }
        if !self.budget.take(now) {
            return EntryAction::Retain(match key {
                Some(k) => Decision::Hit(k),
                None => Decision::Miss(AuthError::KeysUnavailable(KeysUnavailable::RateLimited)),
            });
        }
        e.tried_at = now;
        EntryAction::Retain(Decision::Fetch(e.clone()))
    }

    /// Fetch `iss`'s keys: the entry to cache, and the key for `kid` (from the old keys
    /// if the key server is unavailable).
    async fn refresh(
        &self,
        iss: &str,
        src: JwksSource,
        previous: IssuerKeys,
        kid: Option<&str>,
        now: i64,
    ) -> (IssuerKeys, Result<RsaPublicKey, AuthError>) {
        match self.fetch(iss, src).await {
            Ok(keys) => {
                let found = pick(&keys, kid).ok_or(AuthError::Invalid);
                let entry = IssuerKeys {
                    keys: keys.into(),
                    fetched_at: Some(now),
                    tried_at: now,
                    failure: None,
                };
                (entry, found)
            }
            Err(Failure::Gone) => {
                let entry = IssuerKeys {
                    keys: Arc::from(Vec::new()),
                    fetched_at: None,
                    tried_at: now,
                    failure: Some(Failure::Gone),
                };
                (entry, Err(AuthError::Invalid))
            }
            Err(Failure::Unavailable) => {
                let found = pick(&previous.keys, kid).ok_or(AuthError::KeysUnavailable(KeysUnavailable::Upstream));
                let entry = IssuerKeys {
                    tried_at: now,
                    failure: Some(Failure::Unavailable),
                    ..previous
                };
                (entry, found)
            }
        }
    }

    /// Where `iss`'s keys are published, if it is an issuer whose keys are fetched.
    fn source(&self, iss: &str) -> Option<JwksSource> {
        if self.openid_provider.as_deref() == Some(iss) {
            let base = if iss.ends_with('/') {
                iss.to_string()
            } else {
                format!("{iss}/")
            };
            return Some(JwksSource::Discovery(format!("{base}.well-known/openid-configuration")));
        }
        service_account_jwks_url(iss).map(JwksSource::Direct)
    }

    async fn get_json(&self, iss: &str, url: &str) -> Result<Bytes, Failure> {
        let Some(http) = self.http.as_ref() else {
            tracing::warn!(issuer = iss, "no HTTP client to fetch signing keys with");
            return Err(Failure::Unavailable);
        };
        let req = http::Request::get(url).body(Bytes::new()).map_err(|e| {
            tracing::warn!(issuer = iss, url, "bad key URL: {e}");
            Failure::Unavailable
        })?;
        let resp = http.send_limited(req, KEY_DOCUMENT_LIMIT).await.map_err(|e| {
            match &e {
                HttpError::TooLarge(_) => tracing::warn!(issuer = iss, url, "key document too large: {e}"),
                HttpError::Transport(_) => tracing::warn!(issuer = iss, url, "key fetch failed: {e}"),
            }
            Failure::Unavailable
        })?;
        let status = resp.status();
        if !status.is_success() {
            tracing::warn!(issuer = iss, url, status = status.as_u16(), "key fetch failed");
            return Err(match status.as_u16() {
                404 | 410 => Failure::Gone,
                _ => Failure::Unavailable,
            });
        }
        Ok(resp.into_body())
    }

    async fn fetch(&self, iss: &str, src: JwksSource) -> Result<Vec<NamedKey>, Failure> {
        let url = match src {
            JwksSource::Direct(u) => u,
            JwksSource::Discovery(u) => {
                let doc = self.get_json(iss, &u).await?;
                jwks_uri(&doc).map_err(|e| {
                    tracing::warn!(issuer = iss, url = u, "bad discovery document: {e}");
                    Failure::Unavailable
                })?
            }
        };
        let doc = self.get_json(iss, &url).await?;
        parse_jwks(&doc).map_err(|e| {
            tracing::warn!(issuer = iss, url, "bad JWKS: {e}");
            Failure::Unavailable
        })
    }
}

/// The `jwks_uri` of a discovery document, if it is an http(s) URL.
fn jwks_uri(doc: &[u8]) -> Result<String, String> {
    let v: Value = serde_json::from_slice(doc).map_err(|e| format!("not JSON: {e}"))?;
    let uri = v.get("jwks_uri").and_then(Value::as_str).ok_or("no jwks_uri")?;
    let url = url::Url::parse(uri).map_err(|e| format!("jwks_uri {uri:?}: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("jwks_uri {uri:?} is not http(s)"));
    }
    Ok(url.into())
}

/// The URL of a Google service account's JWKS, if `iss` is a plain `name@domain`
/// (checked again here, since the issuer becomes part of the URL), with the issuer as
/// one percent-encoded path segment.
pub fn service_account_jwks_url(iss: &str) -> Option<String> {
    super::service_account_domain(iss)?;
    let mut url = url::Url::parse(GOOGLE_SERVICE_ACCOUNT_JWKS).ok()?;
    url.path_segments_mut().ok()?.pop_if_empty().push(iss);
    // Whatever the issuer held, it may only have become that one segment.
    let one_segment = url
        .path()
        .strip_prefix("/service_accounts/v1/jwk/")
        .is_some_and(|s| !s.contains('/'));
    (one_segment && url.query().is_none() && url.fragment().is_none()).then(|| url.into())
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
    use crate::auth::testing::{FakeKeyServer, ManualClock};

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

    fn jwks(keys: &[NamedKey]) -> String {
        to_jwks(keys).to_string()
    }

    fn sa_url(iss: &str) -> String {
        format!("{GOOGLE_SERVICE_ACCOUNT_JWKS}{iss}")
    }

    fn limits(per_minute: u32, burst: u32) -> AuthLimits {
        AuthLimits {
            key_fetches_per_minute: per_minute,
            key_fetch_burst: burst,
            ..AuthLimits::NATIVE
        }
    }

    const ISS: &str = "https://issuer.example/";

    #[tokio::test]
    async fn discovery_cache_and_refresh_on_unknown_kid() {
        let (k1, pk1) = key("k1");
        let (k2, pk2) = key("k2");
        let server = FakeKeyServer::default();
        server.answer(
            "https://issuer.example/.well-known/openid-configuration",
            200,
            serde_json::json!({"jwks_uri": "https://issuer.example/keys"}).to_string(),
        );
        server.answer("https://issuer.example/keys", 200, jwks(std::slice::from_ref(&k1)));
        let clock = ManualClock::new();
        let set = KeySet::new(Some(&server), vec![], Some(ISS.to_string()), clock.clone());

        assert_eq!(set.find(ISS, Some("k1")).await.unwrap(), pk1);
        assert_eq!(server.calls(), 2, "discovery + JWKS");
        assert_eq!(set.find(ISS, Some("k1")).await.unwrap(), pk1);
        assert_eq!(server.calls(), 2, "served from cache");

        // The provider rotates to k2. Right after a fetch, unknown kids do not refetch
        // (a flood of random kids cannot hammer the provider) ...
        server.answer("https://issuer.example/keys", 200, jwks(&[k1, k2]));
        assert_eq!(set.find(ISS, Some("k2")).await, Err(AuthError::Invalid));
        assert_eq!(server.calls(), 2);
        // ... but once the refresh interval has passed, an unknown kid refetches.
        clock.advance(REFRESH_INTERVAL);
        assert_eq!(set.find(ISS, Some("k2")).await.unwrap(), pk2);
        assert_eq!(server.calls(), 4);
        // Issuers that are neither the provider nor service accounts are never fetched.
        assert_eq!(
            set.find("https://other.example/", Some("k1")).await,
            Err(AuthError::Invalid)
        );
        assert_eq!(server.calls(), 4);
    }

    #[test]
    fn service_account_key_urls_hold_the_plain_issuer_as_one_segment() {
        assert_eq!(
            service_account_jwks_url("uploader@my-proj.iam.gserviceaccount.com").as_deref(),
            Some("https://www.googleapis.com/service_accounts/v1/jwk/uploader@my-proj.iam.gserviceaccount.com")
        );
        for bad in [
            "me@my-proj.iam.gserviceaccount.com?@auth.example",
            "me@my-proj.iam.gserviceaccount.com#@auth.example",
            "../../x@auth.example",
            "a/b@auth.example",
            "a%2F..@auth.example",
            "a b@auth.example",
            "a\tb@auth.example",
            "a\u{0}b@auth.example",
            "a@b@auth.example",
            "@auth.example",
            "a@",
            "a@auth.example/",
            "a@auth..example",
            "a@-auth.example",
            "a@auth.example:8080",
            "no-at-sign",
        ] {
            assert_eq!(service_account_jwks_url(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn issuers_not_in_plain_form_are_never_fetched() {
        let server = FakeKeyServer::default();
        let set = KeySet::new(Some(&server), vec![], None, ManualClock::new());
        for bad in [
            "me@evil.iam.gserviceaccount.com?@auth.example",
            "a%2F..@auth.example",
            "a b@auth.example",
        ] {
            assert_eq!(set.find(bad, Some("k")).await, Err(AuthError::Invalid), "{bad:?}");
        }
        assert_eq!(server.calls(), 0);
    }

    #[tokio::test]
    async fn key_fetches_are_capped_across_issuers() {
        let (k1, pk1) = key("k1");
        let server = FakeKeyServer::default();
        server.answer(&sa_url("known@auth.example"), 200, jwks(&[k1]));
        let clock = ManualClock::new();
        let set = KeySet::new(Some(&server), vec![], None, clock.clone()).with_limits(&limits(60, 20));
        assert_eq!(set.find("known@auth.example", Some("k1")).await.unwrap(), pk1);

        // 1,000 new issuers at once cost what is left of the burst, no more.
        let (mut refused, mut unknown) = (0, 0);
        for i in 0..1000 {
            match set.find(&format!("sa{i}@auth.example"), Some("k1")).await {
                Err(AuthError::KeysUnavailable(KeysUnavailable::RateLimited)) => refused += 1,
                Err(AuthError::Invalid) => unknown += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(server.calls(), 20);
        assert_eq!((unknown, refused), (19, 981));
        // Cached keys still serve while the cap is reached.
        assert_eq!(set.find("known@auth.example", Some("k1")).await.unwrap(), pk1);
        assert_eq!(server.calls(), 20);
        // The cap refills evenly: one fetch a second at 60 a minute ...
        clock.advance(1);
        for i in 1000..1010 {
            let _ = set.find(&format!("sa{i}@auth.example"), Some("k1")).await;
        }
        assert_eq!(server.calls(), 21);
        // ... and never beyond the burst, however long it was quiet.
        clock.advance(3600);
        for i in 2000..3000 {
            let _ = set.find(&format!("sa{i}@auth.example"), Some("k1")).await;
        }
        assert_eq!(server.calls(), 41);
    }

    #[tokio::test]
    async fn a_repeated_unknown_kid_costs_one_fetch_per_interval() {
        let (k1, _) = key("k1");
        let iss = "uploader@auth.example";
        let server = FakeKeyServer::default();
        server.answer(&sa_url(iss), 200, jwks(&[k1]));
        let clock = ManualClock::new();
        let set = KeySet::new(Some(&server), vec![], None, clock.clone());
        for round in 1..=3 {
            for _ in 0..100 {
                assert_eq!(set.find(iss, Some("nope")).await, Err(AuthError::Invalid));
            }
            assert_eq!(server.calls(), round);
            clock.advance(REFRESH_INTERVAL - 1);
            assert_eq!(set.find(iss, Some("nope")).await, Err(AuthError::Invalid));
            assert_eq!(server.calls(), round);
            clock.advance(1);
        }
        assert_eq!(server.urls()[0], sa_url(iss));
    }

    #[tokio::test]
    async fn a_failing_issuer_is_not_refetched_within_the_failure_ttl() {
        let server = FakeKeyServer::default();
        let (down, gone) = ("down@auth.example", "gone@auth.example");
        server.answer(&sa_url(down), 500, "oops");
        let clock = ManualClock::new();
        let set = KeySet::new(Some(&server), vec![], None, clock.clone());
        let unavailable = Err(AuthError::KeysUnavailable(KeysUnavailable::Upstream));
        // A key server error is a 503; a 404 says there is no such account: a 401.
        for _ in 0..100 {
            assert_eq!(set.find(down, Some("k1")).await, unavailable);
            assert_eq!(set.find(gone, Some("k1")).await, Err(AuthError::Invalid));
        }
        assert_eq!(server.calls(), 2);
        clock.advance(FAILURE_TTL - 1);
        assert_eq!(set.find(down, Some("k1")).await, unavailable);
        assert_eq!(set.find(gone, Some("k1")).await, Err(AuthError::Invalid));
        assert_eq!(server.calls(), 2);
        // Past the failure TTL each is asked again, once.
        clock.advance(1);
        let (k1, pk1) = key("k1");
        server.answer(&sa_url(down), 200, jwks(&[k1]));
        assert_eq!(set.find(down, Some("k1")).await.unwrap(), pk1);
        assert_eq!(set.find(gone, Some("k1")).await, Err(AuthError::Invalid));
        assert_eq!(server.calls(), 4);
    }

    #[tokio::test]
    async fn oversized_key_documents_are_failed_fetches() {
        let server = FakeKeyServer::default();
        let (k1, pk1) = key("k1");
        let mut doc = to_jwks(&[k1]);
        doc["padding"] = Value::String("x".repeat(KEY_DOCUMENT_LIMIT));
        server.answer(&sa_url("big@auth.example"), 200, doc.to_string());
        doc.as_object_mut().unwrap().remove("padding");
        server.answer(&sa_url("fine@auth.example"), 200, doc.to_string());
        // An oversized discovery document, too.
        let disco =
            serde_json::json!({"jwks_uri": "https://issuer.example/keys", "padding": "x".repeat(KEY_DOCUMENT_LIMIT)});
        server.answer(
            "https://issuer.example/.well-known/openid-configuration",
            200,
            disco.to_string(),
        );
        server.answer("https://issuer.example/keys", 200, doc.to_string());
        let set = KeySet::new(Some(&server), vec![], Some(ISS.into()), ManualClock::new());
        let unavailable = Err(AuthError::KeysUnavailable(KeysUnavailable::Upstream));
        assert_eq!(set.find("big@auth.example", Some("k1")).await, unavailable);
        assert_eq!(set.find(ISS, Some("k1")).await, unavailable);
        assert_eq!(
            server.calls(),
            2,
            "the JWKS behind the oversized discovery document is not asked for"
        );
        assert_eq!(set.find("fine@auth.example", Some("k1")).await.unwrap(), pk1);
    }

    #[tokio::test]
    async fn withdrawn_keys_expire_and_known_keys_survive_an_outage() {
        let (k1, pk1) = key("k1");
        let (k2, _) = key("k2");
        let iss = "uploader@auth.example";
        let server = FakeKeyServer::default();
        server.answer(&sa_url(iss), 200, jwks(&[k1]));
        let clock = ManualClock::new();
        let set = KeySet::new(Some(&server), vec![], None, clock.clone());
        assert_eq!(set.find(iss, Some("k1")).await.unwrap(), pk1);
        // Past their age the keys are fetched again; while the key server is down, the
        // keys already known keep working, and it is asked again only after the failure TTL.
        clock.advance(KEYS_MAX_AGE);
        server.answer(&sa_url(iss), 503, "");
        for _ in 0..10 {
            assert_eq!(set.find(iss, Some("k1")).await.unwrap(), pk1);
        }
        assert_eq!(server.calls(), 2);
        // Back up, without k1 (withdrawn): k1 is refused from then on.
        server.answer(&sa_url(iss), 200, jwks(&[k2]));
        clock.advance(FAILURE_TTL);
        assert_eq!(set.find(iss, Some("k1")).await, Err(AuthError::Invalid));
        assert_eq!(server.calls(), 3);
    }

    #[tokio::test]
    async fn the_key_cache_stays_within_its_byte_budget() {
        let (k1, _) = key("k1");
        let server = FakeKeyServer::default();
        let budget = 16 * 1024;
        let tight = AuthLimits {
            key_cache_bytes: budget,
            ..limits(100_000, 100_000)
        };
        let set = KeySet::new(Some(&server), vec![], None, ManualClock::new()).with_limits(&tight);
        for i in 0..500 {
            let iss = format!("sa{i}@auth.example");
            server.answer(&sa_url(&iss), 200, jwks(std::slice::from_ref(&k1)));
            assert!(set.find(&iss, Some("k1")).await.is_ok());
        }
        assert!(set.fetched.weight() <= budget, "{} bytes", set.fetched.weight());
        assert!(set.fetched.len() < 500);
        // One entry's weight counts its key material.
        assert!(set.fetched.weight() / set.fetched.len() as u64 > 128 + 2 * KEY_OVERHEAD);
    }
}
