//! The native rim: configuration, building the [`App`] on local directories, and
//! serving it over HTTP/1.1 with hyper.

pub mod config;
pub mod conn;

use crate::api::{ApiConfig, App, Body, Replica};
use crate::auth::dev::DevIssuer;
use crate::auth::jwks::{parse_jwks, to_jwks, KeySet};
use crate::auth::{AuthConfig, Authenticator};
use crate::http::ReqwestClient;
use crate::jobs::queue::{AnyQueue, QueueLocation};
use crate::model::{Clock, SystemClock};
use crate::storage::fs::FsStore;
use crate::storage::signer::Signer;
use crate::storage::AnyStore;
use bytes::Bytes;
pub use config::ServeConfig;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::api::params::split_list;
pub use crate::api::MAX_BODY;
/// A client must send its request head within this time (also how long an idle
/// keep-alive connection is kept).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub use crate::http::TokioSleeper;

/// The native application type (the one the jobs run against).
pub type NativeApp = crate::jobs::work::Services;

/// Failures while starting up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// Files could not be prepared.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Store(#[from] crate::storage::StoreError),
    /// The dev issuer key could not be loaded.
    #[error("{0}")]
    Dev(#[from] crate::auth::dev::DevIssuerError),
}

/// Read or create a random secret file (mode 0600) in the data dir.
fn secret_file(path: &Path) -> Result<Vec<u8>, StartError> {
    if let Ok(s) = std::fs::read(path) {
        if s.len() >= 32 {
            return Ok(s);
        }
    }
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
    let hexed = hex::encode(secret).into_bytes();
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    // Created atomically, so two processes starting on one data dir agree on one secret.
    if crate::auth::dev::create_private_atomically(path, &hexed)? {
        return Ok(hexed);
    }
    match std::fs::read(path) {
        Ok(s) if s.len() >= 32 => Ok(s),
        // A short (damaged) key is replaced; the new file is private from its first byte.
        _ => {
            let _ = std::fs::remove_file(path);
            crate::auth::dev::write_private(path, &hexed)?;
            Ok(hexed)
        }
    }
}

/// Where the dev issuer keeps its key and issuer name.
pub fn dev_issuer_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("dev-issuer")
}

/// Build the application from `cfg` and start its job runner (which resumes any jobs left
/// unfinished). Creates the data directory layout if missing. Call inside a
/// multi-threaded tokio runtime.
pub fn build_app(cfg: &ServeConfig) -> Result<Arc<NativeApp>, StartError> {
    let (app, queue) = assemble(cfg)?;
    start_jobs(app.clone(), queue, cfg)?;
    Ok(app)
}

/// The application and its job queue, with no job runner (`dss reindex`, `dss jobs`).
pub fn assemble(cfg: &ServeConfig) -> Result<(Arc<NativeApp>, Arc<AnyQueue>), StartError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let data = &cfg.data_dir;
    std::fs::create_dir_all(data)?;
    let public_url = cfg.public_url();
    let secret = secret_file(&data.join("url-signing.key"))?;
    let signer = Arc::new(Signer::new(&public_url, secret, clock.clone()));
    let local = |name: &str, dir: &str| -> Result<AnyStore, StartError> {
        Ok(AnyStore::Fs(FsStore::new(name, data.join(dir), Some(signer.clone()))?))
    };
    let http = ReqwestClient::new(Duration::from_secs(30)).map_err(|e| StartError::Config(e.to_string()))?;
    let search = match cfg.search.as_str() {
        "off" => None,
        _ => Some(open_search(cfg, data, &http)?),
    };
    let cloud = CloudStores {
        http: http.clone(),
        clock: clock.clone(),
    };
    let env = |name: &str| std::env::var(name).ok();
    let specs = crate::api::replicas::specs(
        &split_list(&cfg.replicas),
        (&cfg.s3_bucket, &cfg.s3_checkout_bucket),
        (&cfg.gs_bucket, &cfg.gs_checkout_bucket),
        &env,
    )
    .map_err(|e| StartError::Config(e.to_string()))?;
    let mut list = Vec::with_capacity(specs.len());
    for spec in &specs {
        // A replica's own variables first (DSS_REPLICA_{NAME}_AWS_ACCESS_KEY_ID, …), then the
        // process's.
        let prefix = spec.var_prefix();
        let vars = |n: &str| env(&format!("{prefix}{n}")).or_else(|| env(n));
        let open = |bucket: &Option<String>, local_name: &str, dir: &str| -> Result<AnyStore, StartError> {
            match (spec.kind, bucket) {
                (crate::api::replicas::StoreKind::S3, Some(b)) => cloud.s3(b, &vars),
                (crate::api::replicas::StoreKind::Gs, Some(b)) => cloud.gcs(b, &vars),
                _ => local(local_name, dir),
            }
        };
        let name = &spec.name;
        let r = Replica::new(
            name,
            open(&spec.bucket, name, &format!("{name}/main"))?,
            open(&spec.checkout, &format!("{name}-checkout"), &format!("{name}/checkout"))?,
        );
        r.cache
            .docs
            .listings
            .set_freshness(Duration::from_secs_f64(cfg.bucket_freshness));
        match &spec.bucket {
            Some(b) => tracing::info!(replica = %name, bucket = %b, kind = ?spec.kind, "replica in the cloud"),
            None => tracing::info!(replica = %name, "replica in the data directory"),
        }
        list.push(r);
    }
    // Staging buckets are opened per request, for the clouds whose replica is configured.
    let on = |name: &str, kind| specs.iter().any(|s| s.name == name && s.kind == kind);
    let (s3_on, gs_on) = (
        on("aws", crate::api::replicas::StoreKind::S3),
        on("gcp", crate::api::replicas::StoreKind::Gs),
    );
    // Kept per bucket, so credentials are read and tokens exchanged once, not per request.
    let opened: std::sync::Mutex<std::collections::HashMap<String, Arc<AnyStore>>> = Default::default();
    let bucket_store: crate::api::BucketStoreFn<AnyStore> = Box::new(move |scheme, bucket| {
        let id = format!("{scheme}://{bucket}");
        if let Some(s) = opened.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Some(s.clone());
        }
        let store = Arc::new(match scheme {
            "s3" if s3_on => cloud.s3(bucket, &env).ok()?,
            "gs" if gs_on => cloud.gcs(bucket, &env).ok()?,
            _ => return None,
        });
        let mut opened = opened.lock().unwrap_or_else(|e| e.into_inner());
        if opened.len() >= 256 {
            opened.clear(); // bounded: bucket names come from requests
        }
        opened.insert(id, store.clone());
        Some(store)
    });
    std::fs::create_dir_all(&cfg.staging_dir)?;
    let staging_abs = std::fs::canonicalize(&cfg.staging_dir)?;
    let staging = AnyStore::Fs(FsStore::confined("staging", &staging_abs)?);

    let mut static_keys = Vec::new();
    if let Some(path) = &cfg.trusted_jwks {
        let doc =
            std::fs::read(path).map_err(|e| StartError::Config(format!("DSS_TRUSTED_JWKS {}: {e}", path.display())))?;
        static_keys.extend(
            parse_jwks(&doc).map_err(|e| StartError::Config(format!("DSS_TRUSTED_JWKS {}: {e}", path.display())))?,
        );
    }
    let mut auth_cfg = AuthConfig {
        openid_provider: cfg.openid_provider.clone(),
        audiences: split_list(&cfg.oidc_audience),
        group_claim: cfg.oidc_group_claim.clone(),
        email_claim: cfg.oidc_email_claim.clone(),
        authorized_domains: split_list(cfg.authorized_domains.as_deref().unwrap_or("")),
        dev_issuer: None,
        max_token_lifetime: Duration::from_secs(cfg.max_token_lifetime),
        limits: crate::auth::AuthLimits::NATIVE,
    };
    let mut dev_jwks = None;
    if cfg.dev_issuer_enabled() {
        let issuer = format!("{public_url}/");
        let dev = DevIssuer::load_or_create(&dev_issuer_dir(data), &issuer)?;
        crate::auth::dev::write_issuer_name(&dev_issuer_dir(data), &issuer)?;
        let pk = dev.public_key();
        dev_jwks = Some((issuer.clone(), to_jwks(std::slice::from_ref(&pk))));
        static_keys.push(pk);
        auth_cfg.dev_issuer = Some(issuer);
    }
    let keys = KeySet::new(Some(http), static_keys, cfg.openid_provider.clone(), clock.clone());
    let swagger: serde_json::Value = serde_json::from_str(include_str!("../../schema/dss-api.json"))
        .map_err(|e| StartError::Config(format!("embedded OpenAPI document: {e}")))?;
    let config = ApiConfig {
        admin_emails: split_list(cfg.admin_user_emails.as_deref().unwrap_or(""))
            .into_iter()
            .collect(),
        read_only: cfg.read_only_mode.is_some(),
        presigned_ttl: Duration::from_secs(cfg.presigned_url_ttl.min(7 * 24 * 3600)),
        public_url: Some(public_url),
        staging_dir: Some(staging_abs.to_string_lossy().into_owned()),
        bundle_file_wait: Duration::from_secs(cfg.bundle_file_wait),
        version: cfg
            .dss_version
            .clone()
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
        staging_buckets: cfg
            .staging_buckets
            .as_deref()
            .map(|b| split_list(b).into_iter().collect()),
        cors_origins: crate::api::cors::CorsOrigins::parse(cfg.cors_origins.as_deref().unwrap_or("")),
        deployment_stage: cfg.deployment_stage.clone(),
        read_deadline: Duration::from_secs(cfg.read_deadline),
        application_secrets: application_secrets(cfg, dev_jwks.is_some())?,
        async_ingest_threshold: cfg.async_ingest_threshold,
        checkout: crate::bucket::checkout::CacheRules::parse(
            cfg.blob_ttl_days.as_deref(),
            cfg.blob_public_ttl_days.as_deref(),
            cfg.checkout_cache_criteria.as_deref(),
        )
        .map(|rules| crate::bucket::checkout::CacheRules {
            inline_max: cfg.checkout_inline_max,
            ..rules
        })
        .map_err(StartError::Config)?,
    };
    let queue = Arc::new(open_queue(cfg)?);
    if let (Some(_), None, true) = (&search, &cfg.es_endpoint, queue.is_shared()) {
        return Err(StartError::Config(
            "with a shared job queue (DSS_JOBS_URL=postgres://…) search must be Elasticsearch \
             (DSS_ES_ENDPOINT) or off (DSS_SEARCH=off): an embedded index on each backend would \
             hold only the writes that backend indexed"
                .into(),
        ));
    }
    let replicas = crate::api::Replicas::new(list);
    let replica_names = replicas.names().into_iter().map(String::from).collect();
    let app = App {
        config,
        replicas,
        staging: Some(staging),
        auth: Authenticator::new(auth_cfg, keys, clock.clone()),
        signer: Some(signer),
        dev_jwks,
        clock,
        sleeper: TokioSleeper,
        swagger,
        bucket_store: Some(bucket_store),
        jobs: Some(Arc::new(crate::jobs::work::QueueJobs::new(
            queue.clone(),
            replica_names,
        ))),
        search,
        subscriptions: Some(Arc::new(crate::jobs::notify::Subscriptions::new(
            queue.clone(),
            Arc::new(webhooks(cfg)?),
        ))),
        collections: Some(Arc::new(crate::jobs::collections::CollectionIndex::new(queue.clone()))),
        events: Some(Arc::new(crate::jobs::events::JournalIndex::new(queue.clone()))),
    };
    Ok((Arc::new(app), queue))
}

/// The webhook client `DSS_NOTIFY_DELAYS`, `DSS_NOTIFY_TIMEOUT` and
/// `DSS_NOTIFY_ALLOW_PRIVATE` describe.
fn webhooks(cfg: &ServeConfig) -> Result<crate::jobs::notify::Webhooks, StartError> {
    let allow = cfg
        .notify_allow_private
        .as_deref()
        .is_some_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no"));
    let settings = crate::jobs::notify::NotifySettings::parse(&cfg.notify_delays, cfg.notify_timeout, allow)
        .map_err(StartError::Config)?;
    if allow {
        tracing::warn!("DSS_NOTIFY_ALLOW_PRIVATE: notifications may go to private addresses and over http");
    }
    crate::jobs::notify::Webhooks::new(settings).map_err(StartError::Config)
}

/// Open the job queue `DSS_JOBS_URL` names (default: SQLite in the data directory).
fn open_queue(cfg: &ServeConfig) -> Result<AnyQueue, StartError> {
    let config = |e: crate::jobs::queue::QueueError| StartError::Config(format!("DSS_JOBS_URL: {e}"));
    let at = QueueLocation::parse(cfg.jobs_url.as_deref(), &cfg.data_dir).map_err(config)?;
    let queue = match &at {
        // Start-up only: connecting to PostgreSQL is async, and so is its migration.
        QueueLocation::Postgres(_) => {
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(AnyQueue::open(&at)))
        }
        // Synchronous, so that single-threaded runtimes (the tests') can build an app.
        QueueLocation::Disk(path) => crate::jobs::queue::disk::DiskQueue::open(path).map(AnyQueue::Disk),
    }
    .map_err(config)?;
    if queue.is_shared() {
        tracing::info!("job queue on PostgreSQL, shared with other backends");
    }
    Ok(queue)
}

/// Start this process's job runner on `queue`: first moving job records of earlier
/// versions into it, then sweeping orphaned `incoming/` copies; completed jobs older
/// than a week are pruned every hour. Call inside a tokio runtime.
pub fn start_jobs(app: Arc<NativeApp>, queue: Arc<AnyQueue>, cfg: &ServeConfig) -> Result<(), StartError> {
    use crate::jobs::queue::{runner, JobQueue};
    let dir = cfg.data_dir.join("jobs");
    let scrubber = schema_scrubber(cfg)?;
    let runner_cfg = runner::RunnerConfig::new(
        usize::try_from(cfg.job_workers).unwrap_or(1),
        Duration::from_secs(cfg.job_lease),
    );
    let mailer = match (&cfg.notification_sender, &cfg.smtp_url) {
        (Some(sender), Some(url)) => Some(crate::jobs::email::Mailer::new(sender, url).map_err(StartError::Config)?),
        (None, None) => None,
        _ => {
            return Err(StartError::Config(
                "checkout emails need both DSS_NOTIFICATION_SENDER and DSS_SMTP_URL".into(),
            ))
        }
    };
    let settings = crate::jobs::work::WorkerSettings {
        buckets_dir: cfg.data_dir.join("buckets"),
        mailer,
        scrubber,
        replication_inline_max: cfg.replication_inline_max,
        events_compact_after: Duration::from_secs(cfg.events_compact_after),
        // Half the workers at most wait on subscribers, so slow ones never stall the rest.
        notifier: Arc::new(crate::jobs::notify::Notifier::new(
            Arc::new(webhooks(cfg)?),
            usize::try_from(cfg.job_workers / 2).unwrap_or(1),
        )),
    };
    // Subscribed before anything else runs, so that no announcement goes by unheard.
    if let Some(news) = queue.writes() {
        tokio::spawn(forget_what_others_wrote(app.clone(), news));
    }
    tokio::spawn(async move {
        if let Err(e) = crate::jobs::import_legacy_records(&dir, &*queue).await {
            tracing::error!("job records of an earlier version not moved into the queue (kept on disk): {e}");
        }
        let work = Arc::new(crate::jobs::work::Worker::new(app.clone(), queue.clone(), settings));
        let _runner = runner::start(queue.clone(), work, runner_cfg);
        crate::jobs::sweep_orphaned_copies(&app, &*queue).await;
        loop {
            match queue.prune(chrono::Utc::now() - chrono::Duration::days(7)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "pruned completed jobs older than a week"),
                Err(e) => tracing::warn!("completed jobs not pruned: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
    Ok(())
}

/// With a shared queue, forget at once what this backend listed of a uuid another backend
/// wrote (the freshness time bounds it when news is lost).
async fn forget_what_others_wrote(
    app: Arc<NativeApp>,
    mut news: tokio::sync::broadcast::Receiver<crate::jobs::queue::pg::WriteNews>,
) {
    use crate::jobs::queue::pg::WriteNews;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match news.recv().await {
            Ok(WriteNews::Written { replica, key }) => {
                if let Some(r) = app.replicas.get(&replica) {
                    r.cache.docs.written(&key);
                }
            }
            Ok(WriteNews::Missed) | Err(RecvError::Lagged(_)) => {
                for r in app.replicas.iter() {
                    r.cache.docs.listings.clear();
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// The document of `/internal/application_secrets`: `GOOGLE_APPLICATION_SECRETS` (a path,
/// or the JSON itself), or for the dev issuer one that names this server, so that a fresh
/// `hca` install has something well-formed to keep.
fn application_secrets(cfg: &ServeConfig, dev_issuer: bool) -> Result<Option<serde_json::Value>, StartError> {
    let bad = |e: String| StartError::Config(format!("GOOGLE_APPLICATION_SECRETS: {e}"));
    match cfg.application_secrets.as_deref().map(str::trim) {
        Some(doc) if doc.starts_with('{') => serde_json::from_str(doc).map(Some).map_err(|e| bad(e.to_string())),
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| bad(format!("{path}: {e}")))?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| bad(format!("{path}: {e}")))
        }
        None if dev_issuer => {
            let url = cfg.public_url();
            Ok(Some(serde_json::json!({"installed": {
                "client_id": "dss-dev-issuer",
                "client_secret": "dss-dev-issuer",
                "auth_uri": format!("{url}/authorize"),
                "token_uri": format!("{url}/oauth/token"),
                "redirect_uris": ["urn:ietf:wg:oauth:2.0:oob", "http://localhost"],
            }})))
        }
        None => Ok(None),
    }
}

/// The schema scrubber, when `DSS_INDEX_SCHEMA_SCRUB=on`.
pub fn schema_scrubber(cfg: &ServeConfig) -> Result<Option<Arc<crate::jobs::work::Scrubber>>, StartError> {
    if cfg.index_schema_scrub != "on" {
        return Ok(None);
    }
    let hosts = crate::search::schema::SchemaHosts::parse(&cfg.index_schema_hosts)
        .map_err(|e| StartError::Config(format!("DSS_INDEX_SCHEMA_HOSTS: {e}")))?;
    let http = ReqwestClient::new(Duration::from_secs(10)).map_err(|e| StartError::Config(e.to_string()))?;
    Ok(Some(Arc::new(crate::search::schema::SchemaScrubber::new(http, hosts))))
}

/// Where the embedded search index lives.
pub fn search_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("search").join("tantivy")
}

/// The search engine: Elasticsearch/OpenSearch when `DSS_ES_ENDPOINT` is set, else the
/// embedded index in the data directory.
fn open_search(
    cfg: &ServeConfig,
    data: &Path,
    http: &ReqwestClient,
) -> Result<Arc<dyn crate::search::SearchEngine>, StartError> {
    match &cfg.es_endpoint {
        Some(endpoint) => {
            let es = crate::search::es::EsEngine::new(http.clone(), endpoint, &cfg.es_index_prefix)
                .map_err(|e| StartError::Config(format!("DSS_ES_ENDPOINT: {e}")))?;
            tracing::info!(endpoint = %es.endpoint(), "search on Elasticsearch");
            Ok(Arc::new(es))
        }
        None => {
            let engine = crate::search::tantivy_engine::TantivyEngine::open(&search_dir(data))
                .map_err(|e| StartError::Config(format!("search index: {e}")))?
                .with_timeout(Duration::from_secs_f64(cfg.search_timeout));
            Ok(Arc::new(engine))
        }
    }
}

/// Opens cloud stores with the shared HTTP client.
#[derive(Clone)]
struct CloudStores {
    http: ReqwestClient,
    clock: Arc<dyn Clock>,
}

impl CloudStores {
    fn gcs(&self, bucket: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<AnyStore, StartError> {
        let cfg = crate::storage::gcs::GcsConfig::from_vars(bucket, vars)
            .map_err(|e| StartError::Config(format!("GCS: {e}")))?;
        Ok(AnyStore::Gcs(Box::new(crate::storage::gcs::GcsStore::new(
            cfg,
            self.http.clone(),
            TokioSleeper,
            self.clock.clone(),
        ))))
    }

    fn s3(&self, bucket: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<AnyStore, StartError> {
        let cfg = crate::storage::s3::S3Config::from_vars(bucket, vars)
            .map_err(|e| StartError::Config(format!("S3: {e}")))?;
        Ok(AnyStore::S3(Box::new(crate::storage::s3::S3Store::new(
            cfg,
            self.http.clone(),
            TokioSleeper,
            self.clock.clone(),
        ))))
    }
}

/// What every connection shares: the app, and the limits its requests are read under.
struct Shared {
    app: Arc<NativeApp>,
    limits: conn::BodyLimits,
}

async fn respond(
    shared: Arc<Shared>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<http::Response<Body>, std::convert::Infallible> {
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let (method, path) = (parts.method.clone(), parts.uri.path().to_string());
    // The route table says how much body a route takes; routes that take none never
    // have theirs read.
    let limit = crate::api::Route::classify(&method, &path).body_limit();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let read = if limit == 0 {
        Ok(None)
    } else if let Some(n) = declared.filter(|n| *n > limit as u64) {
        if n <= conn::DRAIN_MAX {
            conn::discard(body, 0, &shared.limits).await;
        }
        Err(crate::api::ApiError::PayloadTooLarge(limit))
    } else {
        conn::read_body(body, limit, &shared.limits).await.map(Some)
    };
    let resp = match read {
        Ok(held) => {
            let bytes = held.as_ref().map(|b| b.bytes.clone()).unwrap_or_default();
            let resp = shared.app.handle(http::Request::from_parts(parts, bytes)).await;
            drop(held);
            resp
        }
        Err(e) => {
            // Refused before the app: still the DSS shape, CORS and a request id.
            let id = crate::api::request_id(&parts.headers);
            let span = tracing::info_span!("request", id = %id);
            let mut r = span.in_scope(|| e.into_response(&method, &path));
            crate::api::cors::decorate(&shared.app.config.cors_origins, &parts.headers, r.headers_mut());
            if let Ok(v) = http::HeaderValue::from_str(&id) {
                r.headers_mut().insert(crate::api::REQUEST_ID, v);
            }
            r
        }
    };
    let id = resp.headers().get(crate::api::REQUEST_ID).and_then(|v| v.to_str().ok());
    tracing::debug!(id = id.unwrap_or(""), %method, path = ?path, status = resp.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    Ok(resp)
}

/// Serve `app` on `listener` until `shutdown` resolves, with the body and connection
/// limits of `cfg`.
pub async fn serve(
    app: Arc<NativeApp>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let cfg = ServeLimits::default();
    serve_with(app, listener, cfg, shutdown).await
}

/// The connection and body limits of a server.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Longest pause in a request body.
    pub body_idle: Duration,
    /// Longest time to receive a request body.
    pub body_total: Duration,
    /// Bytes of request bodies in memory at once.
    pub body_budget: usize,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            body_idle: Duration::from_secs(30),
            body_total: Duration::from_secs(300),
            body_budget: 128 * 1024 * 1024,
            max_connections: 1024,
        }
    }
}

impl ServeLimits {
    /// The limits set by `dss serve`'s flags.
    pub fn from_config(cfg: &ServeConfig) -> Self {
        ServeLimits {
            body_idle: Duration::from_secs(cfg.body_idle_timeout),
            body_total: Duration::from_secs(cfg.body_timeout),
            body_budget: usize::try_from(cfg.body_budget_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX),
            max_connections: usize::try_from(cfg.max_connections).unwrap_or(usize::MAX),
        }
    }
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    app: Arc<NativeApp>,
    listener: tokio::net::TcpListener,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let kib = u32::try_from(limits.body_budget / 1024).unwrap_or(u32::MAX).max(1);
    let shared = Arc::new(Shared {
        limits: conn::BodyLimits {
            idle: limits.body_idle,
            total: limits.body_total,
            budget: Arc::new(tokio::sync::Semaphore::new(kib as usize)),
        },
        app: app.clone(),
    });
    let cors = Arc::new(app.config.cors_origins.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        // At the connection limit, wait for one to end before accepting the next.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => return Ok(()) },
            _ = &mut shutdown => return Ok(()),
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let io = conn::ShapedIo::new(stream, cors.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| respond(shared.clone(), req));
            if let Err(e) = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(io), svc)
                .await
            {
                tracing::debug!("connection ended: {e}");
            }
            drop(slot);
        });
    }
}

/// Convenience for tests and tools: a request with a body.
pub fn request(method: &str, uri: &str, body: impl Into<Bytes>) -> http::Request<Bytes> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .unwrap_or_default()
}
