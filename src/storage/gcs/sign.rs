//! V4 signed URLs (the XML API's query-string authentication): `GOOG4-RSA-SHA256` with a
//! service-account key or `GOOG4-HMAC-SHA256` with an HMAC key.
//!
//! URLs are path style (`{endpoint}/{bucket}/{object}`) and sign one header, `host`, with
//! `UNSIGNED-PAYLOAD`. [`sign_v4_url`] is public so that `tests/gcs_v4_vectors.rs` can
//! hold it to Google's conformance vectors (`googleapis/conformance-tests`,
//! `storage/v1/v4_signatures.json`).

use super::*;
use sha2::{Digest, Sha256};

/// Longest signed-URL lifetime GCS accepts (7 days).
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

/// The key a V4 URL is signed with.
#[derive(Clone, Copy, Debug)]
pub enum V4Key<'a> {
    /// `GOOG4-RSA-SHA256`; the credential is the account's `client_email`.
    Rsa(&'a ServiceAccountKey),
    /// `GOOG4-HMAC-SHA256` with an HMAC key of the account.
    Hmac {
        /// The key's access id (the credential).
        access_id: &'a str,
        /// Its secret.
        secret: &'a str,
    },
}

/// What a signed URL lets its holder do: `method` on `object` of `bucket`, at `endpoint`,
/// for `expires_in` (capped at [`MAX_PRESIGN`]) from `now`.
#[derive(Clone, Debug)]
pub struct V4Request<'a> {
    /// The HTTP method the URL is good for.
    pub method: Method,
    /// `scheme://host[:port]` ([`DEFAULT_ENDPOINT`], or another). The URL keeps the
    /// authority as written, an explicit port included (even a default one); the signed
    /// `host` header is the host name alone, as Google's libraries sign it.
    pub endpoint: &'a str,
    /// The bucket.
    pub bucket: &'a str,
    /// The object's name (not encoded; `/` stays a path separator).
    pub object: &'a str,
    /// More query parameters to sign (not encoded), e.g. `response-content-type`.
    pub query: &'a [(String, String)],
    /// How long the URL is good for.
    pub expires_in: Duration,
    /// When it is signed.
    pub now: DateTime<Utc>,
}

/// A signed URL, with the two texts it was derived from (for tests and debugging).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedUrl {
    /// The URL.
    pub url: String,
    /// The canonical request that was hashed.
    pub canonical_request: String,
    /// The string that was signed.
    pub string_to_sign: String,
}

/// Sign `req` with `key`: a V4 signed URL (path style, `host` the only signed header).
pub fn sign_v4_url(key: V4Key<'_>, req: &V4Request<'_>) -> StoreResult<SignedUrl> {
    let (origin, host) = origin_and_host(req.endpoint)?;
    let (algorithm, account) = match key {
        V4Key::Rsa(sa) => ("GOOG4-RSA-SHA256", sa.client_email.as_str()),
        V4Key::Hmac { access_id, .. } => ("GOOG4-HMAC-SHA256", access_id),
    };
    let expires = req.expires_in.as_secs().clamp(1, MAX_PRESIGN.as_secs());
    let date = req.now.format("%Y%m%d").to_string();
    let stamp = req.now.format("%Y%m%dT%H%M%SZ").to_string();
    let scope = format!("{date}/auto/storage/goog4_request");
    let mut params = req.query.to_vec();
    params.extend([
        ("X-Goog-Algorithm".to_string(), algorithm.to_string()),
        ("X-Goog-Credential".to_string(), format!("{account}/{scope}")),
        ("X-Goog-Date".to_string(), stamp.clone()),
        ("X-Goog-Expires".to_string(), expires.to_string()),
        ("X-Goog-SignedHeaders".to_string(), "host".to_string()),
    ]);
    let query = canonical_query(&params);
    let path = format!("/{}/{}", enc_path(req.bucket), enc_path(req.object));
    let canonical_request = format!(
        "{}\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD",
        req.method.as_str()
    );
    let string_to_sign = format!(
        "{algorithm}\n{stamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let signature = match key {
        V4Key::Rsa(sa) => {
            use rsa::signature::{SignatureEncoding, Signer};
            sa.url_signer
                .try_sign(string_to_sign.as_bytes())
                .map_err(|e| StoreError::Other(format!("signing a download URL: {e}")))?
                .to_vec()
        }
        V4Key::Hmac { secret, .. } => {
            let k = hmac(format!("GOOG4{secret}").as_bytes(), date.as_bytes())?;
            let k = hmac(&k, b"auto")?;
            let k = hmac(&k, b"storage")?;
            let k = hmac(&k, b"goog4_request")?;
            hmac(&k, string_to_sign.as_bytes())?
        }
    };
    Ok(SignedUrl {
        url: format!("{origin}{path}?{query}&X-Goog-Signature={}", hex::encode(signature)),
        canonical_request,
        string_to_sign,
    })
}

/// The origin URLs go to (`scheme://authority`, the authority as configured, so an
/// explicit port stays even when it is the scheme's default) and the `host` that is signed
/// (the host name without any port, as in Google's vectors: `http://localhost:8080` signs
/// `host:localhost`, `https://storage.googleapis.com:443` signs
/// `host:storage.googleapis.com`).
fn origin_and_host(endpoint: &str) -> StoreResult<(String, String)> {
    let bad = |why: &str| StoreError::Other(format!("endpoint {endpoint}: {why}"));
    let url = url::Url::parse(endpoint).map_err(|e| bad(&e.to_string()))?;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("no host"))?;
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials in an endpoint are never put into a URL handed out.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    Ok((
        format!("{}://{}", url.scheme(), authority.to_ascii_lowercase()),
        host.to_string(),
    ))
}

/// `k=v&…` sorted by key, both percent-encoded (RFC 3986 unreserved kept).
fn canonical_query(params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params.iter().map(|(k, v)| (enc(k), enc(v))).collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

type HmacSha256 = hmac::Hmac<Sha256>;

fn hmac(key: &[u8], msg: &[u8]) -> StoreResult<Vec<u8>> {
    use hmac::Mac;
    let mut m = HmacSha256::new_from_slice(key).map_err(|e| StoreError::Other(e.to_string()))?;
    m.update(msg);
    Ok(m.finalize().into_bytes().to_vec())
}

impl<H: HttpClient, T: Sleeper> GcsStore<H, T> {
    /// A download URL for `key`: HMAC-signed when an HMAC key is configured, else
    /// RSA-signed with the service account, else (emulators) the plain object URL.
    pub(super) fn presign(&self, key: &str, expires_in: Duration, opts: &PresignOptions) -> StoreResult<String> {
        let mut params: Vec<(String, String)> = Vec::new();
        if let Some(d) = &opts.content_disposition {
            params.push(("response-content-disposition".into(), d.clone()));
        }
        if let Some(t) = &opts.content_type {
            params.push(("response-content-type".into(), t.clone()));
        }
        let signer = match (&self.hmac, &self.credentials) {
            (Some((id, secret)), _) => V4Key::Hmac { access_id: id, secret },
            (None, Some(sa)) => V4Key::Rsa(sa),
            (None, None) => {
                let path = format!("/{}/{}", enc_path(&self.bucket), enc_path(key));
                let q = canonical_query(&params);
                let sep = if q.is_empty() { "" } else { "?" };
                return Ok(format!("{}{path}{sep}{q}", self.endpoint));
            }
        };
        let req = V4Request {
            method: Method::GET,
            endpoint: &self.endpoint,
            bucket: &self.bucket,
            object: key,
            query: &params,
            expires_in,
            now: self.clock.now(),
        };
        Ok(sign_v4_url(signer, &req)?.url)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn get<'a>(endpoint: &'a str, object: &'a str, query: &'a [(String, String)]) -> V4Request<'a> {
        V4Request {
            method: Method::GET,
            endpoint,
            bucket: "bkt",
            object,
            query,
            expires_in: Duration::from_secs(3600),
            now: t0(),
        }
    }

    #[test]
    fn rsa_signed_urls_verify_with_the_service_account_key() {
        use rsa::signature::Verifier;
        let key = rsa_key();
        let public = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.to_public_key());
        let sa = ServiceAccountKey::new("dss@proj.iam.gserviceaccount.com", "k", TOKEN_URI, key);
        let query = [("response-content-type".to_string(), "text/plain".to_string())];
        let signed = sign_v4_url(
            V4Key::Rsa(&sa),
            &get("https://storage.googleapis.com", "blobs/x", &query),
        )
        .unwrap();
        let (base, sig) = signed.url.split_once("&X-Goog-Signature=").unwrap();
        let query = base.split_once('?').unwrap().1;
        assert!(query.contains("X-Goog-Algorithm=GOOG4-RSA-SHA256"), "{query}");
        let canonical = format!("GET\n/bkt/blobs/x\n{query}\nhost:storage.googleapis.com\n\nhost\nUNSIGNED-PAYLOAD");
        assert_eq!(signed.canonical_request, canonical);
        let to_sign = format!(
            "GOOG4-RSA-SHA256\n20240506T070809Z\n20240506/auto/storage/goog4_request\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        assert_eq!(signed.string_to_sign, to_sign);
        let sig = rsa::pkcs1v15::Signature::try_from(hex::decode(sig).unwrap().as_slice()).unwrap();
        public.verify(to_sign.as_bytes(), &sig).expect("signed by the key");
    }

    #[test]
    fn hmac_signed_urls_follow_v4() {
        let key = V4Key::Hmac {
            access_id: "GOOGACCESSID",
            secret: "c2VjcmV0",
        };
        let params = [("response-content-disposition".to_string(), "attachment".to_string())];
        let url = sign_v4_url(key, &get("https://storage.googleapis.com", "blobs/x", &params))
            .unwrap()
            .url;
        let query = "X-Goog-Algorithm=GOOG4-HMAC-SHA256\
            &X-Goog-Credential=GOOGACCESSID%2F20240506%2Fauto%2Fstorage%2Fgoog4_request\
            &X-Goog-Date=20240506T070809Z&X-Goog-Expires=3600&X-Goog-SignedHeaders=host\
            &response-content-disposition=attachment";
        let (base, sig) = url.split_once("&X-Goog-Signature=").unwrap();
        assert_eq!(base, format!("https://storage.googleapis.com/bkt/blobs/x?{query}"));
        // The signature, derived here step by step.
        let canonical = format!("GET\n/bkt/blobs/x\n{query}\nhost:storage.googleapis.com\n\nhost\nUNSIGNED-PAYLOAD");
        let to_sign = format!(
            "GOOG4-HMAC-SHA256\n20240506T070809Z\n20240506/auto/storage/goog4_request\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut k = b"GOOG4c2VjcmV0".to_vec();
        for part in ["20240506", "auto", "storage", "goog4_request", to_sign.as_str()] {
            k = hmac(&k, part.as_bytes()).unwrap();
        }
        assert_eq!(sig, hex::encode(k));
    }

    #[test]
    fn the_url_keeps_the_endpoint_and_the_signed_host_has_no_port() {
        let key = V4Key::Hmac {
            access_id: "id",
            secret: "s",
        };
        for (endpoint, origin, host) in [
            ("http://localhost:8080", "http://localhost:8080", "localhost"),
            (
                "https://storage.googleapis.com:443",
                "https://storage.googleapis.com:443",
                "storage.googleapis.com",
            ),
            (
                "https://user:pw@GCS.Example:8443/base",
                "https://gcs.example:8443",
                "gcs.example",
            ),
            ("http://[::1]:4443", "http://[::1]:4443", "[::1]"),
        ] {
            let s = sign_v4_url(key, &get(endpoint, "a b/c", &[])).unwrap();
            assert!(
                s.url.starts_with(&format!("{origin}/bkt/a%20b/c?")),
                "{endpoint}: {}",
                s.url
            );
            assert!(
                s.canonical_request.contains(&format!("\nhost:{host}\n")),
                "{endpoint}: {}",
                s.canonical_request
            );
        }
        assert!(sign_v4_url(key, &get("not a url", "a", &[])).is_err());
    }

    #[tokio::test]
    async fn stores_sign_with_hmac_first_then_rsa_else_not_at_all() {
        let fake = Fake::new(|_| reply(500, ""));
        let clock = Arc::new(ManualClock::at(t0()));
        let opts = PresignOptions {
            content_disposition: None,
            content_type: Some("text/plain".into()),
        };
        let sa = ServiceAccountKey::new("dss@proj.iam.gserviceaccount.com", "k", TOKEN_URI, rsa_key());
        let (mut s, _) = store(&fake, Some(sa), clock.clone());
        let url = s.presign_get("blobs/x", Duration::from_secs(60), &opts).await.unwrap();
        assert!(url.contains("X-Goog-Algorithm=GOOG4-RSA-SHA256"), "{url}");
        s.hmac = Some(("GOOG1".into(), "secret".into()));
        let url = s.presign_get("blobs/x", Duration::from_secs(60), &opts).await.unwrap();
        assert!(url.contains("X-Goog-Algorithm=GOOG4-HMAC-SHA256"), "{url}");
        let (s, _) = store(&fake, None, clock);
        let url = s.presign_get("blobs/x", Duration::from_secs(60), &opts).await.unwrap();
        assert_eq!(
            url,
            "https://gcs.example/bkt/blobs/x?response-content-type=text%2Fplain"
        );
        assert_eq!(fake.count(|_| true), 0, "signing needs no network");
    }
}
