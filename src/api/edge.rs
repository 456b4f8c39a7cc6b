//! The edge's policy, kept pure so that it is tested natively: its settings, what it
//! caches and under which key, and which listings a write makes stale. The Workers
//! rim (`crate::edge`) only carries it out.

use super::cors::CorsOrigins;
use super::params::{split_list, Query};
use super::replicas::{specs, ReplicaSpec, StoreKind};
use super::{ApiConfig, Route};
use crate::auth::AuthConfig;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::time::Duration;

/// Header the backend sets on a search answer that is incomplete (an engine timed out
/// or a shard failed): such answers are never cached.
pub const SEARCH_PARTIAL_HEADER: &str = "x-dss-search-partial";
/// Header the edge adds to search answers: `hit` or `miss`.
pub const EDGE_CACHE_HEADER: &str = "x-dss-edge-cache";

/// Settings of the worker, from its variables and secrets.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Where everything the edge does not answer goes (`BACKEND_URL`), no trailing slash.
    pub backend_url: String,
    /// Routes' settings (the same variables as the backend's).
    pub api: ApiConfig,
    /// Token policy (the same variables as the backend's).
    pub auth: AuthConfig,
    /// `DSS_TRUSTED_JWKS`: the JWKS document itself (there are no files at the edge).
    pub trusted_jwks: Option<String>,
    /// The replicas, as the backend reads them (`DSS_REPLICAS`, `DSS_S3_BUCKET`,
    /// `DSS_GS_BUCKET`, `DSS_REPLICA_{NAME}_*`): those in a cloud bucket are read at the
    /// edge; those in the backend's data directory are forwarded.
    pub replicas: Vec<ReplicaSpec>,
    /// `DSS_EDGE_LIST_TTL` (seconds, default 5): how long "latest version" lookups and
    /// `/bundles/all` pages are cached. Immutable documents are cached for a year.
    pub list_ttl: Duration,
    /// `DSS_SEARCH_CACHE_TTL` (seconds, default 60; 0 turns it off).
    pub search_ttl: Duration,
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("worker setting {name}: {problem}")]
pub struct EdgeConfigError {
    /// The variable.
    pub name: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl EdgeConfig {
    /// Read the settings through `lookup` (the worker's `env`).
    pub fn from_vars(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, EdgeConfigError> {
        let var = |k: &str| lookup(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let secs = |name: &'static str, default: u64| -> Result<Duration, EdgeConfigError> {
            match var(name) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => v.parse::<u64>().map(Duration::from_secs).map_err(|_| EdgeConfigError {
                    name,
                    problem: format!("{v:?} is not a number of seconds"),
                }),
            }
        };
        let backend_url = var("BACKEND_URL").ok_or(EdgeConfigError {
            name: "BACKEND_URL",
            problem: "not set: the worker needs the backend's base URL".into(),
        })?;
        if !(backend_url.starts_with("http://") || backend_url.starts_with("https://")) {
            return Err(EdgeConfigError {
                name: "BACKEND_URL",
                problem: format!("{backend_url:?} is not an http(s) URL"),
            });
        }
        let defaults = AuthConfig::default();
        let auth = AuthConfig {
            openid_provider: var("OPENID_PROVIDER"),
            audiences: var("OIDC_AUDIENCE")
                .map(|a| split_list(&a))
                .unwrap_or(defaults.audiences),
            group_claim: var("OIDC_GROUP_CLAIM").unwrap_or(defaults.group_claim),
            email_claim: var("OIDC_EMAIL_CLAIM").unwrap_or(defaults.email_claim),
            authorized_domains: split_list(&var("DSS_AUTHORIZED_DOMAINS").unwrap_or_default()),
            dev_issuer: None,
            max_token_lifetime: match secs("DSS_MAX_TOKEN_LIFETIME", defaults.max_token_lifetime.as_secs())? {
                d if d.is_zero() => {
                    return Err(EdgeConfigError {
                        name: "DSS_MAX_TOKEN_LIFETIME",
                        problem: "0 would refuse every token".into(),
                    })
                }
                d => d,
            },
            // An isolate has 128 MB for everything.
            limits: crate::auth::AuthLimits::EDGE,
        };
        let api = ApiConfig {
            admin_emails: split_list(&var("ADMIN_USER_EMAILS").unwrap_or_default())
                .into_iter()
                .collect(),
            read_only: var("DSS_READ_ONLY_MODE").is_some(),
            presigned_ttl: secs("DSS_PRESIGNED_URL_TTL", 3600)?.min(Duration::from_secs(7 * 24 * 3600)),
            public_url: var("DSS_PUBLIC_URL").map(|u| u.trim_end_matches('/').to_string()),
            staging_dir: None,
            bundle_file_wait: Duration::ZERO,
            version: var("DSS_VERSION").unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
            staging_buckets: None,
            cors_origins: CorsOrigins::parse(&var("DSS_CORS_ORIGINS").unwrap_or_default()),
            deployment_stage: var("DSS_DEPLOYMENT_STAGE").unwrap_or_else(|| "dev".into()),
            // A Worker's own CPU and wall-time limits bound it further.
            read_deadline: secs("DSS_READ_DEADLINE", 60)?,
            // Served by the backend (forwarded).
            application_secrets: None,
            async_ingest_threshold: crate::bucket::ingest::ASYNC_THRESHOLD,
            checkout: crate::bucket::checkout::CacheRules::parse(
                var("DSS_BLOB_TTL_DAYS").as_deref(),
                var("DSS_BLOB_PUBLIC_TTL_DAYS").as_deref(),
                var("CHECKOUT_CACHE_CRITERIA").as_deref(),
            )
            .map_err(|problem| EdgeConfigError {
                name: "DSS_BLOB_TTL_DAYS",
                problem,
            })?,
        };
        let names = split_list(&var("DSS_REPLICAS").unwrap_or_else(|| "aws,gcp".into()));
        let replicas = specs(
            &names,
            (&var("DSS_S3_BUCKET"), &var("DSS_S3_CHECKOUT_BUCKET")),
            (&var("DSS_GS_BUCKET"), &var("DSS_GS_CHECKOUT_BUCKET")),
            &|k: &str| var(k),
        )
        .map_err(|e| EdgeConfigError {
            name: "DSS_REPLICAS",
            problem: e.to_string(),
        })?;
        Ok(EdgeConfig {
            backend_url: backend_url.trim_end_matches('/').to_string(),
            api,
            auth,
            trusted_jwks: var("DSS_TRUSTED_JWKS"),
            replicas,
            list_ttl: secs("DSS_EDGE_LIST_TTL", 5)?,
            search_ttl: secs("DSS_SEARCH_CACHE_TTL", 60)?,
        })
    }

    /// Which replicas exist, and which of them the edge reads itself.
    pub fn edge_replicas(&self) -> EdgeReplicas {
        EdgeReplicas {
            all: self.replicas.iter().map(|r| r.name.clone()).collect(),
            read_here: self
                .replicas
                .iter()
                .filter(|r| r.kind != StoreKind::Local)
                .map(|r| r.name.clone())
                .collect(),
        }
    }
}

/// The replicas of a deployment as the edge sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeReplicas {
    all: HashSet<String>,
    read_here: HashSet<String>,
}

impl EdgeReplicas {
    /// `all`, of which the edge reads `read_here` itself.
    pub fn new<'a>(all: impl IntoIterator<Item = &'a str>, read_here: impl IntoIterator<Item = &'a str>) -> Self {
        EdgeReplicas {
            all: all.into_iter().map(str::to_string).collect(),
            read_here: read_here.into_iter().map(str::to_string).collect(),
        }
    }
}

/// Whether the edge answers `route` itself: a read route, on a replica the edge reads
/// (or no replica at all). Unknown replica names are answered too (with the router's 400).
pub fn answer_at_edge(route: &Route<'_>, query: &Query, replicas: &EdgeReplicas) -> bool {
    if !route.runs_at_edge() {
        return false;
    }
    match query.get("replica") {
        Some(r) if replicas.all.contains(r) => replicas.read_here.contains(r),
        _ => true,
    }
}

/// Sort object keys recursively, so that equal queries written differently share a key.
fn canonical(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            serde_json::Value::Object(keys.into_iter().map(|k| (k.clone(), canonical(&m[k]))).collect())
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The cache key of a search: a hash over the normalised query document and the
/// parameters that change the answer (replica, output format, page size, position).
/// `None` when the body is not JSON (the backend answers that with a 400, uncached).
pub fn search_cache_key(query: &Query, body: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut h = Sha256::new();
    h.update(canonical(&doc).to_string().as_bytes());
    for name in ["replica", "output_format", "per_page", "search_after"] {
        h.update(b"\0");
        h.update(name.as_bytes());
        h.update(b"=");
        h.update(query.get(name).unwrap_or("").as_bytes());
    }
    Some(hex::encode(h.finalize()))
}

/// Whether a search answer may be cached: complete answers only (200, or 206 for a page).
pub fn search_answer_cacheable(status: u16, headers: &http::HeaderMap) -> bool {
    matches!(status, 200 | 206) && !headers.contains_key(SEARCH_PARTIAL_HEADER)
}

/// The replica and listing prefix a successful forwarded write makes stale, so that the
/// edge can forget its cached "latest version" lookup at once.
pub fn stale_listing<'a>(route: &Route<'a>, query: &'a Query) -> Option<(&'a str, String)> {
    let replica = query.get("replica").unwrap_or("aws");
    match route {
        Route::FilePut(uuid) => Some((replica, crate::bucket::keys::file_prefix(&uuid.to_ascii_lowercase()))),
        Route::BundlePut(uuid) | Route::BundlePatch(uuid) | Route::BundleDelete(uuid) => {
            Some((replica, crate::bucket::keys::bundle_prefix(&uuid.to_ascii_lowercase())))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn settings_need_a_backend_and_read_the_backends_variables() {
        let e = EdgeConfig::from_vars(&vars(&[])).unwrap_err();
        assert_eq!(e.name, "BACKEND_URL");
        assert!(EdgeConfig::from_vars(&vars(&[("BACKEND_URL", "ftp://x")])).is_err());
        let c = EdgeConfig::from_vars(&vars(&[
            ("BACKEND_URL", "https://backend.example.org/"),
            ("DSS_S3_BUCKET", "main"),
            ("OIDC_AUDIENCE", "a, b"),
            ("DSS_CORS_ORIGINS", "*"),
            ("DSS_SEARCH_CACHE_TTL", "7"),
        ]))
        .unwrap();
        assert_eq!(c.backend_url, "https://backend.example.org");
        assert_eq!(
            (
                c.replicas[0].name.as_str(),
                c.replicas[0].kind,
                c.replicas[0].bucket.as_deref()
            ),
            ("aws", StoreKind::S3, Some("main"))
        );
        assert_eq!(
            (c.replicas[1].name.as_str(), c.replicas[1].kind),
            ("gcp", StoreKind::Local)
        );
        assert_eq!(c.auth.audiences, ["a", "b"]);
        assert_eq!(c.api.cors_origins, CorsOrigins::Any);
        assert_eq!(c.search_ttl, Duration::from_secs(7));
        assert_eq!(c.list_ttl, Duration::from_secs(5));
        assert_eq!(c.edge_replicas(), EdgeReplicas::new(["aws", "gcp"], ["aws"]));
        // A third replica is configuration only, at the edge as at the backend.
        let c = EdgeConfig::from_vars(&vars(&[
            ("BACKEND_URL", "http://b"),
            ("DSS_REPLICAS", "aws,gcp,minio,spare"),
            ("DSS_REPLICA_MINIO_STORE", "s3"),
            ("DSS_REPLICA_MINIO_BUCKET", "dss-minio"),
        ]))
        .unwrap();
        assert_eq!(
            c.edge_replicas(),
            EdgeReplicas::new(["aws", "gcp", "minio", "spare"], ["minio"])
        );
        let bad = EdgeConfig::from_vars(&vars(&[("BACKEND_URL", "http://b"), ("DSS_REPLICAS", "aws,aws")]));
        assert_eq!(bad.unwrap_err().name, "DSS_REPLICAS");
        let bad = EdgeConfig::from_vars(&vars(&[("BACKEND_URL", "http://b"), ("DSS_EDGE_LIST_TTL", "soon")]));
        assert_eq!(bad.unwrap_err().name, "DSS_EDGE_LIST_TTL");
    }

    #[test]
    fn token_lifetime_cap_is_read_and_caches_are_the_edges() {
        let c = EdgeConfig::from_vars(&vars(&[("BACKEND_URL", "http://b")])).unwrap();
        let default = Duration::from_secs(crate::auth::DEFAULT_MAX_TOKEN_LIFETIME_SECS);
        assert_eq!(c.auth.max_token_lifetime, default);
        assert_eq!(c.auth.limits, crate::auth::AuthLimits::EDGE);
        let c =
            EdgeConfig::from_vars(&vars(&[("BACKEND_URL", "http://b"), ("DSS_MAX_TOKEN_LIFETIME", "600")])).unwrap();
        assert_eq!(c.auth.max_token_lifetime, Duration::from_secs(600));
        for bad in ["0", "a day"] {
            let e = EdgeConfig::from_vars(&vars(&[("BACKEND_URL", "http://b"), ("DSS_MAX_TOKEN_LIFETIME", bad)]));
            assert_eq!(e.unwrap_err().name, "DSS_MAX_TOKEN_LIFETIME");
        }
    }

    #[test]
    fn reads_on_replicas_without_edge_buckets_are_forwarded() {
        let aws = EdgeReplicas::new(["aws", "gcp", "spare"], ["aws"]);
        let get = Route::classify(&Method::GET, "/v1/files/u");
        assert!(answer_at_edge(&get, &Query::parse("replica=aws"), &aws));
        assert!(!answer_at_edge(&get, &Query::parse("replica=gcp"), &aws));
        assert!(!answer_at_edge(&get, &Query::parse("replica=spare"), &aws));
        assert!(answer_at_edge(&get, &Query::parse("replica=azure"), &aws));
        assert!(answer_at_edge(&get, &Query::parse(""), &aws));
        let put = Route::classify(&Method::PUT, "/v1/files/u");
        assert!(!answer_at_edge(&put, &Query::parse("replica=aws"), &aws));
    }

    #[test]
    fn search_keys_ignore_key_order_but_not_parameters() {
        let q = Query::parse("replica=aws&per_page=10");
        let a = search_cache_key(&q, br#"{"es_query": {"query": {"match": {"a": 1}}, "size": 2}}"#).unwrap();
        let b = search_cache_key(&q, br#"{"es_query":{"size":2,"query":{"match":{"a":1}}}}"#).unwrap();
        assert_eq!(a, b);
        let c = search_cache_key(&Query::parse("replica=aws&per_page=100"), br#"{"es_query": {}}"#).unwrap();
        let d = search_cache_key(&Query::parse("replica=aws&per_page=10"), br#"{"es_query": {}}"#).unwrap();
        assert_ne!(c, d);
        let e = search_cache_key(&Query::parse("replica=gcp&per_page=10"), br#"{"es_query": {}}"#).unwrap();
        assert_ne!(d, e);
        let raw = search_cache_key(
            &Query::parse("replica=aws&per_page=10&output_format=raw"),
            br#"{"es_query": {}}"#,
        );
        assert_ne!(Some(d), raw);
        assert!(search_cache_key(&q, b"{not json").is_none());
    }

    #[test]
    fn only_complete_search_answers_are_cached() {
        let mut h = http::HeaderMap::new();
        assert!(search_answer_cacheable(200, &h));
        assert!(search_answer_cacheable(206, &h));
        assert!(!search_answer_cacheable(400, &h));
        assert!(!search_answer_cacheable(502, &h));
        h.insert(SEARCH_PARTIAL_HEADER, http::HeaderValue::from_static("true"));
        assert!(!search_answer_cacheable(200, &h));
    }

    #[test]
    fn writes_name_the_listing_they_make_stale() {
        let q = Query::parse("replica=gcp&version=v");
        let r = Route::classify(&Method::PUT, "/v1/bundles/ABC");
        assert_eq!(stale_listing(&r, &q), Some(("gcp", "bundles/abc.".to_string())));
        let q = Query::parse("");
        let r = Route::classify(&Method::PUT, "/v1/files/abc");
        assert_eq!(stale_listing(&r, &q), Some(("aws", "files/abc.".to_string())));
        assert_eq!(stale_listing(&Route::classify(&Method::GET, "/v1/files/abc"), &q), None);
    }
}
