//! Where a bucket is and with which credentials: [`GcsConfig`] (from the environment or
//! the worker's variables), the service-account key, and endpoints.

use rsa::RsaPrivateKey;
use serde::Deserialize;
use sha2::Sha256;

/// The public GCS endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
/// Where access tokens are obtained when the key file names no `token_uri`.
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Problems loading GCS configuration.
#[derive(Debug, thiserror::Error)]
pub enum GcsConfigError {
    /// The credentials file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The credentials are not a usable service-account key.
    #[error("service-account key: {0}")]
    Key(String),
}

/// A service-account key, as in the JSON file Google issues.
#[derive(Clone)]
pub struct ServiceAccountKey {
    /// The account (`…@….iam.gserviceaccount.com`): JWT issuer and V4 credential.
    pub client_email: String,
    /// Id of the key, sent as the JWT `kid`.
    pub private_key_id: String,
    /// Where access tokens are obtained.
    pub token_uri: String,
    /// The project of the account, if the file names one (used by `create_bucket`).
    pub project_id: Option<String>,
    /// The key, for the token assertion ([`super::auth`]).
    pub(super) key: RsaPrivateKey,
    /// The key ready for PKCS#1 v1.5 signatures of download URLs ([`super::sign`]), made
    /// once (not per URL).
    pub(super) url_signer: rsa::pkcs1v15::SigningKey<Sha256>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: String,
    #[serde(default)]
    token_uri: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
}

impl ServiceAccountKey {
    /// Parse a service-account JSON key file (`private_key` is PKCS#8 PEM).
    pub fn from_json(json: &str) -> Result<Self, GcsConfigError> {
        use rsa::pkcs8::DecodePrivateKey;
        let f: KeyFile = serde_json::from_str(json).map_err(|e| GcsConfigError::Key(e.to_string()))?;
        let key = RsaPrivateKey::from_pkcs8_pem(&f.private_key).map_err(|e| GcsConfigError::Key(e.to_string()))?;
        Ok(ServiceAccountKey {
            client_email: f.client_email,
            private_key_id: f.private_key_id,
            token_uri: f.token_uri.unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string()),
            project_id: f.project_id,
            url_signer: rsa::pkcs1v15::SigningKey::new(key.clone()),
            key,
        })
    }

    /// A key from its parts (for tests and for keys held elsewhere).
    pub fn new(client_email: &str, private_key_id: &str, token_uri: &str, key: RsaPrivateKey) -> Self {
        ServiceAccountKey {
            client_email: client_email.to_string(),
            private_key_id: private_key_id.to_string(),
            token_uri: token_uri.to_string(),
            project_id: None,
            url_signer: rsa::pkcs1v15::SigningKey::new(key.clone()),
            key,
        }
    }
}

/// Where and how to reach a bucket.
#[derive(Clone)]
pub struct GcsConfig {
    /// The bucket.
    pub bucket: String,
    /// Base URL of the JSON API, without a trailing slash ([`DEFAULT_ENDPOINT`], or an emulator).
    pub endpoint: String,
    /// Service account for OAuth2 and RSA-signed URLs; `None` sends no auth (emulators).
    pub credentials: Option<ServiceAccountKey>,
    /// HMAC key `(access_id, secret)`: when set, download URLs are HMAC-signed.
    pub hmac: Option<(String, String)>,
}

impl std::fmt::Debug for GcsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the HMAC secret (the service account key hides its own).
        f.debug_struct("GcsConfig")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials)
            .field("hmac_access_id", &self.hmac.as_ref().map(|(id, _)| id))
            .finish()
    }
}

impl GcsConfig {
    /// An unauthenticated configuration for an emulator at `endpoint`.
    pub fn emulator(bucket: &str, endpoint: &str) -> Self {
        GcsConfig {
            bucket: bucket.to_string(),
            endpoint: normalize_endpoint(endpoint),
            credentials: None,
            hmac: None,
        }
    }

    /// Configuration from the environment, as Google's client libraries read it:
    /// `STORAGE_EMULATOR_HOST` (an emulator: `http://` is added when it has no scheme,
    /// and no credentials are loaded or sent), else the public endpoint (or
    /// `GCS_ENDPOINT_URL`: another JSON API endpoint that gets tokens and signed URLs as
    /// GCS would) with the service-account file named by `GOOGLE_APPLICATION_CREDENTIALS`,
    /// and optionally `GCS_HMAC_ACCESS_ID` / `GCS_HMAC_SECRET` for HMAC-signed download
    /// URLs.
    pub fn from_env(bucket: &str) -> Result<Self, GcsConfigError> {
        Self::from_vars(bucket, &|k| std::env::var(k).ok())
    }

    /// The same settings, read through `lookup`. There are no files at the edge, so
    /// `GOOGLE_APPLICATION_CREDENTIALS_JSON` may hold the key document itself.
    pub fn from_vars(bucket: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, GcsConfigError> {
        let var = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        if let Some(host) = var("STORAGE_EMULATOR_HOST") {
            return Ok(Self::emulator(bucket, &host));
        }
        let credentials = match (
            var("GOOGLE_APPLICATION_CREDENTIALS_JSON"),
            var("GOOGLE_APPLICATION_CREDENTIALS"),
        ) {
            (Some(json), _) => Some(ServiceAccountKey::from_json(&json)?),
            (None, Some(path)) => {
                let json = std::fs::read_to_string(&path).map_err(|source| GcsConfigError::Io { path, source })?;
                Some(ServiceAccountKey::from_json(&json)?)
            }
            (None, None) => None,
        };
        let hmac = match (var("GCS_HMAC_ACCESS_ID"), var("GCS_HMAC_SECRET")) {
            (Some(id), Some(secret)) => Some((id, secret)),
            _ => None,
        };
        Ok(GcsConfig {
            bucket: bucket.to_string(),
            endpoint: var("GCS_ENDPOINT_URL")
                .map(|e| normalize_endpoint(&e))
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            credentials,
            hmac,
        })
    }
}

/// An endpoint as the store uses it: trimmed, no trailing slash, `http://` when it names
/// no scheme (as `STORAGE_EMULATOR_HOST` usually does).
pub(super) fn normalize_endpoint(e: &str) -> String {
    let e = e.trim().trim_end_matches('/');
    if e.contains("://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn endpoints_are_normalized() {
        assert_eq!(normalize_endpoint("localhost:4443"), "http://localhost:4443");
        assert_eq!(normalize_endpoint("https://x.example/"), "https://x.example");
        assert_eq!(
            normalize_endpoint(" https://x.example:8443// "),
            "https://x.example:8443"
        );
    }

    #[test]
    fn variables_choose_emulator_or_cloud() {
        let vars = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        // An emulator: no credentials, even when some are named.
        let v = vars(&[
            ("STORAGE_EMULATOR_HOST", "localhost:4443"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent.json"),
        ]);
        let c = GcsConfig::from_vars("b", &|k| v.get(k).cloned()).unwrap();
        assert_eq!(c.endpoint, "http://localhost:4443");
        assert!(c.credentials.is_none() && c.hmac.is_none());

        // The cloud: the public endpoint unless overridden; blank values count as unset;
        // the HMAC pair only when both halves are there.
        let v = vars(&[("STORAGE_EMULATOR_HOST", " "), ("GCS_HMAC_ACCESS_ID", "GOOG1")]);
        let c = GcsConfig::from_vars("b", &|k| v.get(k).cloned()).unwrap();
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert!(c.credentials.is_none() && c.hmac.is_none());
        let v = vars(&[
            ("GCS_ENDPOINT_URL", "https://gcs.example/"),
            ("GCS_HMAC_ACCESS_ID", "GOOG1"),
            ("GCS_HMAC_SECRET", "s3cret"),
        ]);
        let c = GcsConfig::from_vars("b", &|k| v.get(k).cloned()).unwrap();
        assert_eq!(c.endpoint, "https://gcs.example");
        assert_eq!(c.hmac, Some(("GOOG1".into(), "s3cret".into())));
        assert!(!format!("{c:?}").contains("s3cret"), "Debug hides the HMAC secret");

        // A named file that is missing is an error, not a silent anonymous store.
        let v = vars(&[("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")]);
        assert!(matches!(
            GcsConfig::from_vars("b", &|k| v.get(k).cloned()),
            Err(GcsConfigError::Io { .. })
        ));
        let v = vars(&[("GOOGLE_APPLICATION_CREDENTIALS_JSON", "{}")]);
        assert!(matches!(
            GcsConfig::from_vars("b", &|k| v.get(k).cloned()),
            Err(GcsConfigError::Key(_))
        ));
    }
}
