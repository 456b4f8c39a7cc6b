//! Where a bucket is and which credentials sign for it.

use super::*;

/// Where a bucket is and how to sign for it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// S3-compatible endpoint such as `http://127.0.0.1:5000` (path-style addressing);
    /// `None` for AWS itself (virtual-host style).
    pub endpoint: Option<String>,
    /// Signing region, such as `us-east-1`.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field("session_token", &self.session_token.as_ref().map(|_| "** redacted **"))
            .finish()
    }
}

impl S3Config {
    /// Configuration for `bucket` from the usual AWS variables: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION` (default
    /// `us-east-1`), and the endpoint from `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`.
    /// Fails if the key id or the secret is missing.
    pub fn from_env(bucket: &str) -> StoreResult<Self> {
        Self::from_vars(bucket, &|name| std::env::var(name).ok())
    }

    /// The same settings, read through `lookup` (the edge reads its bindings, not a
    /// process environment).
    pub fn from_vars(bucket: &str, lookup: &dyn Fn(&str) -> Option<String>) -> StoreResult<Self> {
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let required =
            |name: &str| var(name).ok_or_else(|| StoreError::Other(format!("S3 bucket {bucket}: {name} is not set")));
        Ok(S3Config {
            bucket: bucket.to_string(),
            endpoint: var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")),
            region: var("AWS_DEFAULT_REGION").unwrap_or_else(|| "us-east-1".to_string()),
            access_key_id: required("AWS_ACCESS_KEY_ID")?,
            secret_access_key: required("AWS_SECRET_ACCESS_KEY")?,
            session_token: var("AWS_SESSION_TOKEN"),
        })
    }
}
