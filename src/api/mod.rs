//! The one router: every route of the DSS API, written over `http::Request` and
//! `http::Response` and generic over the storage and HTTP-client traits, so the
//! native server and the edge worker run the same code.

pub mod bundles;
pub mod cache;
pub mod cors;
pub mod download;
pub mod edge;
pub mod error;
pub mod files;
pub mod ingest;
pub mod meta;
pub mod params;
pub mod routes;
pub mod search;

use crate::auth::{Authenticator, Identity};
use crate::http::HttpClient;
use crate::model::platform::ByteStream;
use crate::model::Clock;
use crate::storage::signer::Signer;
use crate::storage::Store;
use bytes::Bytes;
pub use error::ApiError;
use http::{HeaderValue, Method, StatusCode};
use params::Query;
pub use routes::Route;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// A response body: whole, or streamed (downloads never buffer a blob).
pub enum Body {
    /// Bytes in memory.
    Full(Bytes),
    /// A stream of known length.
    Stream(ByteStream),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Body::Full(Bytes::new())
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Full(b) => write!(f, "Body::Full({} bytes)", b.len()),
            Body::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Body::Full(b) => {
                if b.is_empty() {
                    std::task::Poll::Ready(None)
                } else {
                    std::task::Poll::Ready(Some(Ok(http_body::Frame::data(std::mem::take(b)))))
                }
            }
            Body::Stream(s) => s
                .as_mut()
                .poll_next(cx)
                .map(|o| o.map(|r| r.map(http_body::Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(b) if b.is_empty())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Full(b) => http_body::SizeHint::with_exact(b.len() as u64),
            Body::Stream(_) => http_body::SizeHint::default(),
        }
    }
}

/// Largest request body accepted (a bundle PUT of tens of thousands of files fits; the
/// original's API gateway allowed 10 MB).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// The response type of every route.
pub type Response = http::Response<Body>;

/// One replica: its main bucket and its checkout bucket.
pub struct Replica<S> {
    /// `aws` or `gcp`.
    pub name: &'static str,
    /// Main bucket: blobs, files, bundles.
    pub main: S,
    /// Checkout bucket.
    pub checkout: S,
    /// Immutable documents read from `main`.
    pub cache: ReplicaCache,
}

impl<S> Replica<S> {
    /// A replica over `main` and `checkout`.
    pub fn new(name: &'static str, main: S, checkout: S) -> Self {
        Replica {
            name,
            main,
            checkout,
            cache: ReplicaCache::default(),
        }
    }
}

/// Caches of a replica's immutable documents, by key.
pub struct ReplicaCache {
    /// `files/{uuid}.{version}`.
    pub files: cache::ImmutableCache<String, files::FileEntry>,
    /// `bundles/{uuid}.{version}`.
    pub bundles: cache::ImmutableCache<String, crate::model::manifest::BundleManifest>,
}

impl Default for ReplicaCache {
    fn default() -> Self {
        // Sized to stay far below the server's memory budget (manifests can be large).
        ReplicaCache {
            files: cache::ImmutableCache::new(20_000),
            bundles: cache::ImmutableCache::new(500),
        }
    }
}

/// Settings the routes read.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `ADMIN_USER_EMAILS`: who may delete bundles.
    pub admin_emails: HashSet<String>,
    /// `DSS_READ_ONLY_MODE`.
    pub read_only: bool,
    /// Lifetime of presigned download URLs (`DSS_PRESIGNED_URL_TTL`).
    pub presigned_ttl: Duration,
    /// Public base URL (no trailing slash); when `None`, taken from the `Host` header.
    pub public_url: Option<String>,
    /// Absolute path that `file://` source URLs must lie under (`DSS_STAGING_DIR`).
    pub staging_dir: Option<String>,
    /// How long `PUT /bundles` waits for file metadata that is not there yet.
    pub bundle_file_wait: Duration,
    /// Value of `/version`.
    pub version: String,
    /// `DSS_STAGING_BUCKETS`: when set, the only buckets `source_url` may name.
    pub staging_buckets: Option<HashSet<String>>,
    /// `DSS_CORS_ORIGINS`: origins allowed to call the API from a browser.
    pub cors_origins: cors::CorsOrigins,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            admin_emails: HashSet::new(),
            read_only: false,
            presigned_ttl: Duration::from_secs(3600),
            public_url: None,
            staging_dir: None,
            bundle_file_wait: Duration::from_secs(10),
            version: env!("CARGO_PKG_VERSION").to_string(),
            staging_buckets: None,
            cors_origins: cors::CorsOrigins::Off,
        }
    }
}

pub use crate::model::platform::Sleeper;

/// Everything the routes need.
pub struct App<S, H, T> {
    /// Settings.
    pub config: ApiConfig,
    /// Replica `aws`.
    pub aws: Replica<S>,
    /// Replica `gcp`.
    pub gcp: Replica<S>,
    /// Where `file://` sources are read from (the staging directory as a store).
    pub staging: Option<S>,
    /// Token verification.
    pub auth: Authenticator<H>,
    /// Local download URL signer (fs/memory replicas).
    pub signer: Option<Arc<Signer>>,
    /// The dev issuer's JWKS and issuer, published at `/.well-known/…`.
    pub dev_jwks: Option<(String, serde_json::Value)>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Timers.
    pub sleeper: T,
    /// The OpenAPI document served at `/v1/swagger.json`.
    pub swagger: serde_json::Value,
    /// Opens a store for a staging bucket (`s3`/`gs` scheme, bucket name), when that
    /// cloud is configured.
    pub bucket_store: Option<BucketStoreFn<S>>,
    /// Background jobs (large ingests); `None` where writes are not run (the edge).
    pub jobs: Option<Arc<dyn ingest::JobSink>>,
    /// The metadata search engine; `None` where searches are forwarded (the edge).
    pub search: Option<Arc<dyn crate::search::SearchEngine>>,
}

/// Opens (or reuses) a store for `(scheme, bucket)`, or `None` if that cloud is not configured.
pub type BucketStoreFn<S> = Box<dyn Fn(&str, &str) -> Option<Arc<S>> + Send + Sync>;

/// A store that is either one of the app's or opened for one request.
pub enum StoreRef<'a, S> {
    /// One of the app's stores.
    Borrowed(&'a S),
    /// Shared with other uses (a cached staging bucket).
    Shared(Arc<S>),
}

impl<S> std::ops::Deref for StoreRef<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        match self {
            StoreRef::Borrowed(s) => s,
            StoreRef::Shared(s) => s,
        }
    }
}

/// The parsed parts of a request every handler gets.
pub struct Ctx<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path, percent-encoded as received.
    pub path: &'a str,
    /// Query parameters.
    pub query: Query,
    /// Headers.
    pub headers: &'a http::HeaderMap,
    /// Body.
    pub body: &'a Bytes,
    /// Absolute base URL of this server, no trailing slash.
    pub base_url: String,
}

impl Ctx<'_> {
    /// The absolute URL of this request with `changes` applied to its query.
    pub fn url_with(&self, changes: &[(&str, Option<&str>)]) -> String {
        let mut q = self.query.clone();
        for (k, v) in changes {
            q.set(k, *v);
        }
        format!("{}{}?{}", self.base_url, self.path, q.encode())
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The replica named by `name`.
impl<S: Store, H: HttpClient, T: Sleeper> App<S, H, T> {
    /// Look up a replica by its API name.
    pub fn replica(&self, name: &str) -> Result<&Replica<S>, ApiError> {
        match name {
            "aws" => Ok(&self.aws),
            "gcp" => Ok(&self.gcp),
            other => Err(ApiError::IllegalArguments(format!(
                "'{other}' is not one of ['aws', 'gcp']"
            ))),
        }
    }

    /// The replica named by the required `replica` query parameter.
    pub fn replica_param(&self, q: &Query) -> Result<&Replica<S>, ApiError> {
        self.replica(q.required("replica")?)
    }

    /// The store a `source_url` reads from: the staging directory for `file://`, the
    /// named bucket for `s3://` and `gs://` when that cloud is configured.
    pub fn source_store(&self, src: &ingest::SourceUrl) -> Result<StoreRef<'_, S>, ApiError> {
        if src.scheme == "file" {
            let s = self
                .staging
                .as_ref()
                .ok_or_else(|| ApiError::IllegalSourceUrl("file:// sources are not enabled on this server".into()))?;
            return Ok(StoreRef::Borrowed(s));
        }
        if let Some(allowed) = &self.config.staging_buckets {
            if !allowed.contains(&src.bucket) {
                return Err(ApiError::IllegalSourceUrl(format!(
                    "bucket {} is not a staging bucket of this server (DSS_STAGING_BUCKETS)",
                    src.bucket
                )));
            }
        }
        let replica = src.implied_replica().unwrap_or("aws");
        self.bucket_store
            .as_ref()
            .and_then(|open| open(&src.scheme, &src.bucket))
            .map(StoreRef::Shared)
            .ok_or_else(|| {
                ApiError::IllegalSourceUrl(format!(
                    "{src}: replica {replica} is a local directory on this server, so it cannot read bucket {}; \
                     stage the file with `dss stage` and use its file:// URL, or configure the {replica} replica's cloud bucket",
                    src.bucket
                ))
            })
    }

    /// Verify the caller's token.
    pub async fn identity(&self, ctx: &Ctx<'_>) -> Result<Identity, ApiError> {
        Ok(self.auth.authenticate(ctx.header("authorization")).await?)
    }

    /// Answer one request. Never panics on any input; every failure is a DSS error response.
    pub async fn handle(&self, req: http::Request<Bytes>) -> Response {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        let base_url = match (&self.config.public_url, parts.uri.scheme_str(), parts.uri.authority()) {
            (Some(u), _, _) => u.clone(),
            // An absolute request URI (the edge sees these) names the scheme too.
            (None, Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            (None, _, _) => {
                let host = parts
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("localhost");
                format!("http://{host}")
            }
        };
        let ctx = Ctx {
            method: &parts.method,
            path,
            query: Query::parse(parts.uri.query().unwrap_or("")),
            headers: &parts.headers,
            body: &body,
            base_url,
        };
        if let Some(pre) = cors::preflight(&self.config.cors_origins, &parts.method, &parts.headers) {
            return pre.map(|()| Body::empty());
        }
        let result = self.route(&ctx).await;
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => e.into_response(&parts.method, path),
        };
        if parts.method == Method::HEAD {
            *resp.body_mut() = Body::empty();
        }
        cors::decorate(&self.config.cors_origins, &parts.headers, resp.headers_mut());
        resp
    }

    async fn route(&self, ctx: &Ctx<'_>) -> Result<Response, ApiError> {
        let m = ctx.method;
        // Read-only mode refuses every write; GET (and searches) still work, as in the original.
        let is_api = ctx.path.starts_with("/v1/");
        if is_api && self.config.read_only && *m != Method::GET && !(*m == Method::POST && ctx.path.contains("search"))
        {
            return Err(ApiError::ReadOnly);
        }
        match Route::classify(m, ctx.path) {
            Route::Version => Ok(meta::version(self)),
            Route::Health => Ok(meta::health(self).await),
            Route::Swagger => Ok(meta::swagger(self, ctx)),
            Route::OpenidConfiguration => meta::openid_configuration(self, ctx),
            Route::Jwks => meta::jwks(self),
            Route::Blob => download::serve(self, ctx).await,
            Route::FileGet(uuid) => files::get(self, ctx, uuid).await,
            Route::FileHead(uuid) => files::head(self, ctx, uuid).await,
            Route::FilePut(uuid) => files::put(self, ctx, uuid).await,
            Route::BundlesAll => bundles::enumerate(self, ctx).await,
            Route::BundleGet(uuid) => bundles::get(self, ctx, uuid).await,
            Route::BundlePut(uuid) => bundles::put(self, ctx, uuid).await,
            Route::BundlePatch(uuid) => bundles::patch(self, ctx, uuid).await,
            Route::BundleDelete(uuid) => bundles::delete(self, ctx, uuid).await,
            Route::MethodNotAllowed => Err(ApiError::MethodNotAllowed),
            Route::Search => search::post(self, ctx).await,
            Route::Unknown => Err(ApiError::NotFound(format!("{} {} is not a DSS route", m, ctx.path))),
        }
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, v: &serde_json::Value) -> Response {
    json_bytes(status, v.to_string().into_bytes())
}

/// A response of already serialised JSON.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = http::Response::new(Body::Full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Insert a header whose value came from data (skipped if not a valid header value).
pub fn set_header(r: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}
