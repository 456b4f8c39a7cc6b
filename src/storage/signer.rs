//! Presigned URLs for the local backends: the analogue of an S3/GCS presigned GET.
//!
//! The URL points at this server (`{base}/blob/{store}/{key}?…`) and carries an
//! expiry and an HMAC-SHA256 over everything the download depends on, so it can be
//! handed to anyone, like a cloud presigned URL, and cannot be altered or reused late.

use crate::model::Clock;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// Characters escaped in query values and key paths (RFC 3986 unreserved stay as is).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
const PATH: &AsciiSet = &QUERY.remove(b'/');

/// Append `s` percent-encoded; blob keys and store names need no escaping, so check first.
fn push_encoded(out: &mut String, s: &str, keep_slash: bool) {
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/'));
    if plain {
        out.push_str(s);
    } else {
        out.extend(utf8_percent_encode(s, if keep_slash { PATH } else { QUERY }));
    }
}

/// `presign_get` of the local backends: a URL signed by `signer` for store `name`.
pub fn presign_local(
    signer: Option<&Arc<Signer>>,
    name: &str,
    key: &str,
    ttl: Duration,
    opts: &super::PresignOptions,
) -> super::StoreResult<String> {
    super::check_key(key)?;
    let signer = signer.ok_or_else(|| super::StoreError::Other("no URL signer configured".into()))?;
    Ok(signer.sign(
        name,
        key,
        ttl,
        opts.content_type.as_deref(),
        opts.content_disposition.as_deref(),
    ))
}

/// Path prefix of local download URLs.
pub const BLOB_ROUTE: &str = "/blob/";

/// What a verified download URL grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Store name (`aws`, `aws-checkout`, …).
    pub store: String,
    /// Object key.
    pub key: String,
    /// `Content-Type` to answer with.
    pub content_type: Option<String>,
    /// `Content-Disposition` to answer with.
    pub content_disposition: Option<String>,
}

/// Why a download URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// Missing or malformed parameters.
    #[error("malformed download URL")]
    Malformed,
    /// The signature does not match.
    #[error("signature mismatch")]
    BadSignature,
    /// Past its expiry.
    #[error("download URL expired")]
    Expired,
}

/// Signs and verifies local download URLs.
pub struct Signer {
    base_url: String,
    key: Hmac<Sha256>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// `base_url` is the server's public URL without a trailing slash.
    pub fn new(base_url: &str, secret: Vec<u8>, clock: Arc<dyn Clock>) -> Self {
        // HMAC takes keys of any length; this cannot fail.
        let key = <Hmac<Sha256> as Mac>::new_from_slice(&secret).expect("HMAC accepts any key length");
        Signer {
            base_url: base_url.trim_end_matches('/').to_string(),
            key,
            clock,
        }
    }

    fn keyed(&self, store: &str, key: &str, expires: i64, ct: &str, cd: &str) -> Hmac<Sha256> {
        // Length-prefixed fields: no two distinct tuples share a message.
        let mut m = self.key.clone();
        for field in [store, key, &expires.to_string(), ct, cd] {
            m.update(&(field.len() as u64).to_be_bytes());
            m.update(field.as_bytes());
        }
        m
    }

    #[cfg(test)]
    fn mac(&self, store: &str, key: &str, expires: i64, ct: &str, cd: &str) -> Vec<u8> {
        self.keyed(store, key, expires, ct, cd).finalize().into_bytes().to_vec()
    }

    /// A URL granting GET of `key` in `store` for `ttl`.
    pub fn sign(&self, store: &str, key: &str, ttl: Duration, ct: Option<&str>, cd: Option<&str>) -> String {
        let expires = self.clock.now().timestamp() + ttl.as_secs() as i64;
        let (ct, cd) = (ct.unwrap_or(""), cd.unwrap_or(""));
        let mac = self.keyed(store, key, expires, ct, cd).finalize().into_bytes();
        // Built by hand: this runs for every download redirect.
        let mut url = String::with_capacity(self.base_url.len() + key.len() + ct.len() + cd.len() + 128);
        url.push_str(&self.base_url);
        url.push_str(BLOB_ROUTE);
        push_encoded(&mut url, store, false);
        url.push('/');
        push_encoded(&mut url, key, true);
        url.push_str("?expires=");
        url.push_str(&expires.to_string());
        if !ct.is_empty() {
            url.push_str("&ct=");
            push_encoded(&mut url, ct, false);
        }
        if !cd.is_empty() {
            url.push_str("&cd=");
            push_encoded(&mut url, cd, false);
        }
        url.push_str("&sig=");
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in mac {
            url.push(HEX[(b >> 4) as usize] as char);
            url.push(HEX[(b & 15) as usize] as char);
        }
        url
    }

    /// Check a request for `{BLOB_ROUTE}{store}/{key}` with `query`; the path is as received
    /// (percent-encoded).
    pub fn verify(&self, path: &str, query: &str) -> Result<Grant, SignError> {
        let rest = path.strip_prefix(BLOB_ROUTE).ok_or(SignError::Malformed)?;
        let (store, key) = rest.split_once('/').ok_or(SignError::Malformed)?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
        };
        let store = decode(store).map_err(|_| SignError::Malformed)?;
        let key = decode(key).map_err(|_| SignError::Malformed)?;
        let (mut expires, mut ct, mut cd, mut sig) = (None, String::new(), String::new(), None);
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "expires" => expires = v.parse::<i64>().ok(),
                "ct" => ct = v.into_owned(),
                "cd" => cd = v.into_owned(),
                "sig" => sig = hex::decode(v.as_bytes()).ok(),
                _ => {}
            }
        }
        let (expires, sig) = (expires.ok_or(SignError::Malformed)?, sig.ok_or(SignError::Malformed)?);
        // Constant-time comparison.
        self.keyed(&store, &key, expires, &ct, &cd)
            .verify_slice(&sig)
            .map_err(|_| SignError::BadSignature)?;
        if self.clock.now().timestamp() > expires {
            return Err(SignError::Expired);
        }
        Ok(Grant {
            store,
            key,
            content_type: (!ct.is_empty()).then_some(ct),
            content_disposition: (!cd.is_empty()).then_some(cd),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SystemClock;

    #[test]
    fn sign_verify() {
        let s = Signer::new("http://127.0.0.1:5000/", b"secret".to_vec(), Arc::new(SystemClock));
        let url = s.sign(
            "aws",
            "blobs/a.b.c.d",
            Duration::from_secs(60),
            Some("text/plain"),
            Some("attachment; filename=\"x y\""),
        );
        let u = url::Url::parse(&url).unwrap();
        let g = s.verify(u.path(), u.query().unwrap()).unwrap();
        assert_eq!(g.key, "blobs/a.b.c.d");
        assert_eq!(g.content_disposition.as_deref(), Some("attachment; filename=\"x y\""));
        let tampered = u.query().unwrap().replace("text%2Fplain", "text%2Fhtml");
        assert_eq!(s.verify(u.path(), &tampered), Err(SignError::BadSignature));
        assert_eq!(
            s.verify("/blob/aws/blobs/other", u.query().unwrap()),
            Err(SignError::BadSignature)
        );
        let old = s.sign("aws", "k", Duration::from_secs(0), None, None);
        let u = url::Url::parse(&old).unwrap();
        let q = u.query().unwrap().to_string();
        let exp: i64 = q
            .split('&')
            .next()
            .unwrap()
            .trim_start_matches("expires=")
            .parse()
            .unwrap();
        // Re-sign an already expired grant by hand to check expiry.
        let sig = hex::encode(s.mac("aws", "k", exp - 10, "", ""));
        assert_eq!(
            s.verify(u.path(), &format!("expires={}&sig={sig}", exp - 10)),
            Err(SignError::Expired)
        );
        assert_eq!(s.verify(u.path(), "expires=1"), Err(SignError::Malformed));
    }
}
