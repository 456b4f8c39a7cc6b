//! The one router: every route of the DSS API, written over `http::Request` and
//! `http::Response` and generic over the storage and HTTP-client traits, so the
//! native server and the edge worker run the same code.

pub mod cors;
pub mod download;
pub mod dss;
pub mod edge;
pub mod error;
pub mod meta;
pub mod params;
pub mod replicas;
pub mod routes;

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

/// Largest request body of any route (each route has its own limit in the route table).
pub const MAX_BODY: usize = routes::BUNDLE_BODY;

/// The response type of every route.
pub type Response = http::Response<Body>;

/// One replica: its main bucket and its checkout bucket.
pub struct Replica<S> {
    /// Its name in the API (`aws`, `gcp`, or one configured with `DSS_REPLICAS`).
    pub name: String,
    /// Main bucket: blobs, files, bundles.
    pub main: S,
    /// Checkout bucket.
    pub checkout: S,
    /// Immutable documents read from `main`.
    pub cache: ReplicaCache,
}

impl<S> Replica<S> {
    /// A replica over `main` and `checkout`.
    pub fn new(name: &str, main: S, checkout: S) -> Self {
        Replica {
            name: name.to_string(),
            main,
            checkout,
            cache: ReplicaCache::default(),
        }
    }
}

/// The replicas of a deployment, in configured order; built from configuration
/// (`DSS_REPLICAS`), looked up by name.
pub struct Replicas<S> {
    list: Vec<Replica<S>>,
}

impl<S> Replicas<S> {
    /// The set of `list`; names must be distinct (the first of a repeated name wins).
    pub fn new(list: Vec<Replica<S>>) -> Self {
        let mut seen = HashSet::new();
        Replicas {
            list: list.into_iter().filter(|r| seen.insert(r.name.clone())).collect(),
        }
    }

    /// The replica called `name`.
    pub fn get(&self, name: &str) -> Option<&Replica<S>> {
        self.list.iter().find(|r| r.name == name)
    }

    /// Every replica.
    pub fn iter(&self) -> impl Iterator<Item = &Replica<S>> {
        self.list.iter()
    }

    /// Their names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.list.iter().map(|r| r.name.as_str()).collect()
    }
}

/// A replica's in-memory caches, each bounded by bytes (budgets per target in
/// [`crate::bucket::cache::budgets`]).
pub struct ReplicaCache {
    /// What the bucket layer read: documents, and fresh listings.
    pub docs: crate::bucket::Memo<dss::files::FileEntry>,
    /// Presigned download URLs of this replica's blobs.
    pub presigned: crate::bucket::cache::PresignCache,
}

impl Default for ReplicaCache {
    fn default() -> Self {
        ReplicaCache {
            docs: crate::bucket::Memo::default(),
            presigned: crate::bucket::cache::PresignCache::new(crate::bucket::cache::budgets::PRESIGNED),
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
    /// Staged files larger than this many bytes are ingested by a background job (202 and
    /// a `task_id`); smaller ones inline (`DSS_ASYNC_INGEST_THRESHOLD`).
    pub async_ingest_threshold: u64,
    /// Value of `/version`.
    pub version: String,
    /// `DSS_STAGING_BUCKETS`: when set, the only buckets `source_url` may name.
    pub staging_buckets: Option<HashSet<String>>,
    /// `DSS_CORS_ORIGINS`: origins allowed to call the API from a browser.
    pub cors_origins: cors::CorsOrigins,
    /// `DSS_DEPLOYMENT_STAGE`: outside `prod`, clients may ask for simulated timeouts
    /// with the `DSS_FAKE_504_PROBABILITY` request header (to test their retries).
    pub deployment_stage: String,
    /// `DSS_READ_DEADLINE`: how long a read (GET, HEAD, search) may take before it is
    /// answered 504 `timed_out`.
    pub read_deadline: Duration,
    /// `GOOGLE_APPLICATION_SECRETS`: the OAuth client secrets served at
    /// `/internal/application_secrets` (the `hca` CLI fetches them on a fresh install).
    pub application_secrets: Option<serde_json::Value>,
    /// The checkout copies' lifetimes and caching rules (`DSS_BLOB_TTL_DAYS`,
    /// `DSS_BLOB_PUBLIC_TTL_DAYS`, `CHECKOUT_CACHE_CRITERIA`).
    pub checkout: crate::bucket::checkout::CacheRules,
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
            async_ingest_threshold: crate::bucket::ingest::ASYNC_THRESHOLD,
            version: env!("CARGO_PKG_VERSION").to_string(),
            staging_buckets: None,
            cors_origins: cors::CorsOrigins::Off,
            deployment_stage: "dev".into(),
            read_deadline: Duration::from_secs(60),
            application_secrets: None,
            checkout: Default::default(),
        }
    }
}

pub use crate::model::platform::Sleeper;

/// Everything the routes need.
pub struct App<S, H, T> {
    /// Settings.
    pub config: ApiConfig,
    /// Every replica, looked up by name.
    pub replicas: Replicas<S>,
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
    pub jobs: Option<Arc<dyn crate::bucket::JobSink>>,
    /// The metadata search engine; `None` where searches are forwarded (the edge).
    pub search: Option<Arc<dyn crate::search::SearchEngine>>,
    /// Subscriptions; `None` where their routes are forwarded (the edge).
    pub subscriptions: Option<Arc<dyn crate::model::subscription::SubscriptionService>>,
    /// Which collections each owner has; `None` where collection routes are forwarded.
    pub collections: Option<Arc<dyn crate::model::collection::CollectionOwners>>,
    /// The event journal's index; `None` where event routes are forwarded.
    pub events: Option<Arc<dyn crate::model::event::EventJournal>>,
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
    /// The caller, when the route table says the route needs a token (verified, with
    /// its group and admin rules applied, before the handler runs).
    pub identity: Option<Identity>,
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

    /// The verified caller of a route that needs a token.
    pub fn caller(&self) -> Result<&Identity, ApiError> {
        // The router verifies the token of every route whose table entry asks for one, so
        // a handler asking here for a public route is a bug in the table, not the request.
        self.identity
            .as_ref()
            .ok_or_else(|| ApiError::Internal("route needs a caller but the route table marks it public".into()))
    }
}

/// Header carrying the request id, in answers and (from a trusted hop) in requests.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// [`REQUEST_ID_HEADER`] as a header name (parsed once, not per request).
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);
/// The original's test hook header (see [`ApiConfig::deployment_stage`]).
const FAKE_504_PROBABILITY: http::HeaderName = http::HeaderName::from_static("dss_fake_504_probability");

/// The request's id: the one a previous hop (the edge, a proxy) gave it when it has the
/// expected form, else a new one. It names the request in every log line and is sent
/// back in `X-Request-Id`, so that a client can quote it.
pub fn request_id(headers: &http::HeaderMap) -> String {
    let given = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (8..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    match given {
        Some(v) => v.to_string(),
        None => next_request_id(),
    }
}

/// A new request id: this process's random prefix and a counter, so ids are unique across
/// processes and restarts without a random draw (a system call) per request.
fn next_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| rand_core::RngCore::next_u64(&mut rand_core::OsRng));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(32);
    for word in [prefix, n] {
        for shift in (0..16).rev() {
            id.push(char::from(b"0123456789abcdef"[((word >> (shift * 4)) & 0xf) as usize]));
        }
    }
    id
}

/// The Content-Type rule of JSON bodies: `application/json` or a `+json` type, in UTF-8.
/// A body sent without any Content-Type is read as JSON (what most tools mean); one sent
/// as text, XML, a form or UTF-16 is refused.
pub fn check_json_content_type(headers: &http::HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    let Some(ct) = headers.get(http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let refuse =
        |what: &str| ApiError::UnsupportedMediaType(format!("the body must be application/json in UTF-8, not {what}"));
    let ct = ct.to_str().map_err(|_| refuse("an unreadable type"))?;
    let mut parts = ct.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json = essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
    if !json {
        return Err(refuse(&format!("{essence:?}")));
    }
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            let v = v.trim().trim_matches('"').to_ascii_lowercase();
            if k.trim().eq_ignore_ascii_case("charset") && v != "utf-8" && v != "utf8" {
                return Err(refuse(&format!("charset {v:?}")));
            }
        }
    }
    Ok(())
}

/// The replica named by `name`.
impl<S: Store, H: HttpClient, T: Sleeper> App<S, H, T> {
    /// Look up a replica by its API name.
    pub fn replica(&self, name: &str) -> Result<&Replica<S>, ApiError> {
        self.replicas.get(name).ok_or_else(|| {
            let names: Vec<String> = self.replicas.names().iter().map(|n| format!("'{n}'")).collect();
            // The name comes from the client: quoted as JSON so nothing it holds is raw.
            ApiError::IllegalArguments(format!(
                "{} is not one of [{}]",
                serde_json::Value::String(name.chars().take(64).collect()),
                names.join(", ")
            ))
        })
    }

    /// The bucket of `replica`: every read and write of its documents goes through it,
    /// and its writes record their follow-up work in this app's job queue.
    pub fn bucket<'a>(&'a self, replica: &'a Replica<S>) -> crate::bucket::Bucket<'a, S, dss::files::FileEntry> {
        crate::bucket::Bucket::new(&replica.name, &replica.main, &replica.cache.docs, self.jobs.as_deref())
    }

    /// The replica named by the required `replica` query parameter.
    pub fn replica_param(&self, q: &Query) -> Result<&Replica<S>, ApiError> {
        self.replica(q.required("replica")?)
    }

    /// The store a `source_url` reads from: the staging directory for `file://`, the
    /// named bucket for `s3://` and `gs://` when that cloud is configured.
    pub fn source_store(&self, src: &crate::bucket::ingest::SourceUrl) -> Result<StoreRef<'_, S>, ApiError> {
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

    /// Apply the route table's rules to a request before its handler runs: read-only
    /// mode, the body's type and size, the token, its group, and the admin list. Returns
    /// the verified caller of a route that needs one. The edge runs the same checks
    /// before it forwards a request.
    pub async fn admit(
        &self,
        spec: &routes::RouteSpec,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<Option<Identity>, ApiError> {
        if spec.write && self.config.read_only {
            return Err(ApiError::ReadOnly);
        }
        let who = match spec.access {
            routes::Access::Public => None,
            routes::Access::Groups(groups) => {
                let who = self.auth.authenticate(header_str(headers, "authorization")).await?;
                who.require_group(groups)?;
                Some(who)
            }
            routes::Access::Admin => {
                let who = self.auth.authenticate(header_str(headers, "authorization")).await?;
                who.require_group(routes::HCA)?;
                if !self.config.admin_emails.contains(&who.email) {
                    return Err(ApiError::Forbidden(if spec == &routes::BUNDLE_DELETE {
                        // The original's words.
                        "You can't delete bundles with these credentials!".into()
                    } else {
                        "this route is for the administrators in ADMIN_USER_EMAILS".into()
                    }));
                }
                Some(who)
            }
        };
        if let routes::BodyRule::Json { limit } = spec.body {
            if body.len() > limit {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            check_json_content_type(headers, body)?;
        }
        Ok(who)
    }

    /// Answer one request. Never panics on any input; every failure is a DSS error response.
    pub async fn handle(&self, req: http::Request<Bytes>) -> Response {
        use tracing::Instrument;
        let id = request_id(req.headers());
        // Every log line of a request names its id. Reads, the hot path, log only when they
        // fail, so their span is made only then (in `answer`); other requests run in one.
        let mut resp = if matches!(*req.method(), Method::GET | Method::HEAD) {
            self.answer(req, &id).await
        } else {
            let span = tracing::info_span!("request", id = %id);
            self.answer(req, &id).instrument(span).await
        };
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        resp
    }

    async fn answer(&self, req: http::Request<Bytes>, id: &str) -> Response {
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
        if let Some(pre) = cors::preflight(&self.config.cors_origins, &parts.method, &parts.headers) {
            return pre.map(|()| Body::empty());
        }
        let mut ctx = Ctx {
            method: &parts.method,
            path,
            query: Query::parse(parts.uri.query().unwrap_or("")),
            headers: &parts.headers,
            body: &body,
            base_url,
            identity: None,
        };
        let route = Route::classify(&parts.method, path);
        let result = match self.fake_timeout(&route, &parts.headers) {
            Some(e) => Err(e),
            None => match route.spec() {
                Some(spec) => match self.admit(spec, &parts.headers, &body).await {
                    Ok(who) => {
                        ctx.identity = who;
                        if spec.write {
                            // A write runs to its end: it is atomic, and cutting it off
                            // would only hide its outcome from the client.
                            self.route(&ctx, route).await
                        } else {
                            self.route_within(&ctx, route, self.config.read_deadline).await
                        }
                    }
                    Err(e) => Err(e),
                },
                None => self.route(&ctx, route).await,
            },
        };
        let mut resp = match result {
            Ok(r) => r,
            Err(e) if tracing::Span::current().is_none() => {
                tracing::info_span!("request", id = %id).in_scope(|| e.into_response(&parts.method, path))
            }
            Err(e) => e.into_response(&parts.method, path),
        };
        if parts.method == Method::HEAD {
            *resp.body_mut() = Body::empty();
        }
        cors::decorate(&self.config.cors_origins, &parts.headers, resp.headers_mut());
        resp
    }

    /// The original's test hook: outside the `prod` stage, a request carrying the header
    /// `DSS_FAKE_504_PROBABILITY: p` is answered 504 `timed_out` with probability `p`, so
    /// that clients can exercise their retries.
    fn fake_timeout(&self, route: &Route<'_>, headers: &http::HeaderMap) -> Option<ApiError> {
        if self.config.deployment_stage == "prod" || !route.spec().is_some_and(|s| s.api == routes::Api::DssV1) {
            return None;
        }
        let p: f64 = headers.get(FAKE_504_PROBABILITY)?.to_str().ok()?.trim().parse().ok()?;
        let draw = f64::from(rand_core::RngCore::next_u32(&mut rand_core::OsRng)) / f64::from(u32::MAX);
        (draw < p).then(|| ApiError::TimedOut("Timed out processing request.".into()))
    }

    /// [`Self::route`] with a deadline: past it, 504 `timed_out` (as the original's 25 s
    /// budget). A streamed answer's deadline covers its start, not its transfer.
    async fn route_within(&self, ctx: &Ctx<'_>, route: Route<'_>, deadline: Duration) -> Result<Response, ApiError> {
        within(&self.sleeper, deadline, self.route(ctx, route)).await
    }

    async fn route(&self, ctx: &Ctx<'_>, route: Route<'_>) -> Result<Response, ApiError> {
        match route {
            Route::Version => Ok(meta::version(self)),
            Route::Health => Ok(meta::health(self).await),
            Route::ApplicationSecrets => meta::application_secrets(self),
            Route::Replication => meta::replication(self).await,
            Route::Swagger => Ok(meta::swagger(self, ctx)),
            Route::OpenidConfiguration => meta::openid_configuration(self, ctx),
            Route::Jwks => meta::jwks(self),
            Route::Blob => download::serve(self, ctx).await,
            Route::FileGet(uuid) => dss::files::get(self, ctx, uuid).await,
            Route::FileHead(uuid) => dss::files::head(self, ctx, uuid).await,
            Route::FilePut(uuid) => dss::files::put(self, ctx, uuid).await,
            Route::BundlesAll => dss::bundles::enumerate(self, ctx).await,
            Route::BundleGet(uuid) => dss::bundles::get(self, ctx, uuid).await,
            Route::BundlePut(uuid) => dss::bundles::put(self, ctx, uuid).await,
            Route::BundlePatch(uuid) => dss::bundles::patch(self, ctx, uuid).await,
            Route::BundleDelete(uuid) => dss::bundles::delete(self, ctx, uuid).await,
            Route::MethodNotAllowed => Err(ApiError::MethodNotAllowed),
            Route::Search => dss::search::post(self, ctx).await,
            Route::CheckoutPost(uuid) => dss::checkout::post(self, ctx, uuid).await,
            Route::CheckoutGet(id) => dss::checkout::get(self, ctx, id).await,
            Route::SubscriptionsGet => dss::subscriptions::find(self, ctx).await,
            Route::SubscriptionPut => dss::subscriptions::put(self, ctx).await,
            Route::SubscriptionGet(id) => dss::subscriptions::get(self, ctx, id).await,
            Route::SubscriptionDelete(id) => dss::subscriptions::delete(self, ctx, id).await,
            Route::SubscriptionDeliveries(id) => dss::subscriptions::deliveries(self, ctx, id).await,
            Route::CollectionsGet => dss::collections::list(self, ctx).await,
            Route::CollectionPut => dss::collections::put(self, ctx).await,
            Route::CollectionGet(id) => dss::collections::get(self, ctx, id).await,
            Route::CollectionPatch(id) => dss::collections::patch(self, ctx, id).await,
            Route::CollectionDelete(id) => dss::collections::delete(self, ctx, id).await,
            Route::EventsGet => dss::events::list(self, ctx).await,
            Route::EventGet(id) => dss::events::get(self, ctx, id).await,
            Route::Unknown => Err(ApiError::NotFound(format!(
                "{} {} is not a DSS route",
                ctx.method, ctx.path
            ))),
        }
    }
}

/// `work`, unless `deadline` passes first: then 504 `timed_out`.
pub async fn within<T>(
    sleeper: &impl Sleeper,
    deadline: Duration,
    work: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    use futures::future::{select, Either};
    let mut work = std::pin::pin!(work);
    // Most reads finish on their first poll (cached documents): they never pay for a timer.
    if let std::task::Poll::Ready(r) = futures::poll!(work.as_mut()) {
        return r;
    }
    let timer = std::pin::pin!(sleeper.sleep(deadline));
    match select(work, timer).await {
        Either::Left((r, _)) => r,
        Either::Right(((), _)) => Err(ApiError::TimedOut(format!(
            "Timed out processing request (deadline {} s).",
            deadline.as_secs()
        ))),
    }
}

fn header_str<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A JSON response.
pub fn json_response(status: StatusCode, v: &serde_json::Value) -> Response {
    json_bytes(status, v.to_string().into_bytes())
}

/// `r` as one page of a listing the `hca` client pages through: 206 with `Link: <next>;
/// rel='next'` while more follow, else 200; `X-OpenAPI-Pagination` says which, and
/// `X-OpenAPI-Paginated-Content-Key` names the body's list (the client needs both).
pub fn page_response(mut r: Response, next: Option<String>, content_key: &'static str) -> Response {
    let status = if next.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Some(v) = next.and_then(|n| HeaderValue::from_str(&format!("<{n}>; rel='next'")).ok()) {
        h.insert(http::header::LINK, v);
    }
    let paged = if status == StatusCode::OK { "false" } else { "true" };
    h.insert("x-openapi-pagination", HeaderValue::from_static(paged));
    h.insert("x-openapi-paginated-content-key", HeaderValue::from_static(content_key));
    r
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A timer that has always already run out.
    struct Expired;
    impl Sleeper for Expired {
        async fn sleep(&self, _d: Duration) {}
    }

    #[tokio::test]
    async fn work_past_its_deadline_is_timed_out() {
        let never = futures::future::pending::<Result<(), ApiError>>();
        let r = within(&Expired, Duration::from_secs(60), never).await;
        assert!(matches!(r, Err(ApiError::TimedOut(_))), "{r:?}");
        assert_eq!(r.unwrap_err().code(), "timed_out");
        // Work that is done first wins.
        let r = within(&Expired, Duration::ZERO, async { Ok::<_, ApiError>(7) }).await;
        assert_eq!(r.unwrap(), 7);
    }
}
