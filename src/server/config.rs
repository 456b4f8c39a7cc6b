//! `dss serve` settings: flags, each with the environment variable of the original
//! DSS where one existed.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Settings of the server. `dss serve --help` lists them all.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "DSS_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// Directory holding the replicas, keys and staging area.
    #[arg(long, env = "DSS_DATA_DIR", default_value = "./dss-data")]
    pub data_dir: PathBuf,
    /// Directory `file://` source URLs must lie under (default: DATA_DIR/staging).
    #[arg(long = "staging-dir", env = "DSS_STAGING_DIR", value_name = "DIR")]
    staging_dir_opt: Option<PathBuf>,
    /// The staging directory in force (filled in by [`ServeConfig::finish`]).
    #[arg(skip)]
    pub staging_dir: PathBuf,
    /// Public base URL of this server, used in redirects, links and token issuers
    /// (default: http://LISTEN).
    #[arg(long = "public-url", env = "DSS_PUBLIC_URL", value_name = "URL")]
    pub public_url_opt: Option<String>,
    /// Lifetime in seconds of presigned download URLs, for every replica (max 7 days).
    #[arg(long, env = "DSS_PRESIGNED_URL_TTL", default_value_t = 3600)]
    pub presigned_url_ttl: u64,
    /// Seconds `PUT /bundles` waits for referenced file metadata to appear (at most 300).
    #[arg(long, env = "DSS_BUNDLE_FILE_WAIT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub bundle_file_wait: u64,
    /// Days a checkout copy lives (the checkout buckets' lifecycle rule); copies are
    /// served until an hour before (default 14).
    #[arg(long, env = "DSS_BLOB_TTL_DAYS")]
    pub blob_ttl_days: Option<String>,
    /// Days after which a checkout copy is copied again while still served (default 7).
    #[arg(long, env = "DSS_BLOB_PUBLIC_TTL_DAYS")]
    pub blob_public_ttl_days: Option<String>,
    /// JSON list of `{"type": content-type prefix, "max_size": bytes}`: files that match
    /// are cached in the checkout buckets, copied there at ingest, and never marked to
    /// expire (default: application/json up to 12314 bytes).
    #[arg(long, env = "CHECKOUT_CACHE_CRITERIA")]
    pub checkout_cache_criteria: Option<String>,
    /// A download whose checkout copy is missing waits for the copy of a file up to this
    /// many bytes; for a larger one the client gets a 301 with a token while a job copies.
    #[arg(long, env = "DSS_CHECKOUT_INLINE_MAX", default_value_t = 64 * 1024 * 1024)]
    pub checkout_inline_max: u64,
    /// A bundle's replication copies the missing files it names up to this many bytes
    /// itself; for larger ones it waits for their own jobs (so that no large file is
    /// streamed twice at once).
    #[arg(long, env = "DSS_REPLICATION_INLINE_MAX", default_value_t = 64 * 1024 * 1024)]
    pub replication_inline_max: u64,
    /// Seconds before each attempt to deliver a notification (the first usually 0); a
    /// notification is given up after the last.
    #[arg(long, env = "DSS_NOTIFY_DELAYS", default_value = crate::jobs::notify::DEFAULT_DELAYS)]
    pub notify_delays: String,
    /// Seconds an event waits before it is packed into a journal smaller than a full one
    /// (1000 events are packed at once).
    #[arg(long, env = "DSS_EVENTS_COMPACT_AFTER", default_value_t = 600)]
    pub events_compact_after: u64,
    /// Seconds a subscriber's endpoint has to answer a notification.
    #[arg(long, env = "DSS_NOTIFY_TIMEOUT", default_value_t = 60.0)]
    pub notify_timeout: f64,
    /// When set (to anything but `0` or `false`), callbacks may use `http` and reach
    /// loopback, private and link-local addresses (tests, closed networks only).
    #[arg(long, env = "DSS_NOTIFY_ALLOW_PRIVATE")]
    pub notify_allow_private: Option<String>,
    /// Sender of the email sent when a checkout ends (with `DSS_SMTP_URL`).
    #[arg(long, env = "DSS_NOTIFICATION_SENDER")]
    pub notification_sender: Option<String>,
    /// SMTP server checkout emails go through: `smtp://host:port` (plain),
    /// `smtp://user:password@host:587?tls=required` (STARTTLS), `smtps://…` (TLS).
    #[arg(long, env = "DSS_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Comma-separated emails allowed to delete bundles.
    #[arg(long, env = "ADMIN_USER_EMAILS")]
    pub admin_user_emails: Option<String>,
    /// When set (to anything), refuse every write with 503 read_only.
    #[arg(long, env = "DSS_READ_ONLY_MODE")]
    pub read_only_mode: Option<String>,
    /// Trusted OpenID Connect issuer (its JWKS is found by discovery).
    #[arg(long, env = "OPENID_PROVIDER")]
    pub openid_provider: Option<String>,
    /// Comma-separated accepted token audiences.
    #[arg(long, env = "OIDC_AUDIENCE", default_value = crate::auth::DEFAULT_AUDIENCES)]
    pub oidc_audience: String,
    /// Token claim holding the user's group.
    #[arg(long, env = "OIDC_GROUP_CLAIM", default_value = crate::auth::DEFAULT_GROUP_CLAIM)]
    pub oidc_group_claim: String,
    /// Token claim holding the user's email (falls back to `email`).
    #[arg(long, env = "OIDC_EMAIL_CLAIM", default_value = crate::auth::DEFAULT_EMAIL_CLAIM)]
    pub oidc_email_claim: String,
    /// Comma-separated domains whose service accounts (iss == sub == name@domain) are trusted.
    #[arg(long, env = "DSS_AUTHORIZED_DOMAINS")]
    pub authorized_domains: Option<String>,
    /// Longest token lifetime accepted, in seconds: a token whose `exp` is further from
    /// now, or from its `iat`, than this is refused (401). The default, one day, accepts
    /// Google service-account tokens, usual OIDC tokens and `dss token`'s.
    #[arg(long, env = "DSS_MAX_TOKEN_LIFETIME", default_value_t = crate::auth::DEFAULT_MAX_TOKEN_LIFETIME_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_token_lifetime: u64,
    /// A local JWKS file whose keys are trusted for any allowed issuer.
    #[arg(long, env = "DSS_TRUSTED_JWKS")]
    pub trusted_jwks: Option<PathBuf>,
    /// S3 bucket of the `aws` replica (credentials, region and endpoint from the standard
    /// AWS_* variables; AWS_ENDPOINT_URL(_S3) selects path-style S3-compatible stores).
    /// Unset: the replica is the local directory DATA_DIR/aws.
    #[arg(long, env = "DSS_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 checkout bucket of the `aws` replica (default: DATA_DIR/aws/checkout).
    #[arg(long, env = "DSS_S3_CHECKOUT_BUCKET")]
    pub s3_checkout_bucket: Option<String>,
    /// GCS bucket of the `gcp` replica (service account from GOOGLE_APPLICATION_CREDENTIALS;
    /// STORAGE_EMULATOR_HOST for an emulator). Unset: the replica is DATA_DIR/gcp.
    #[arg(long, env = "DSS_GS_BUCKET")]
    pub gs_bucket: Option<String>,
    /// GCS checkout bucket of the `gcp` replica (default: DATA_DIR/gcp/checkout).
    #[arg(long, env = "DSS_GS_CHECKOUT_BUCKET")]
    pub gs_checkout_bucket: Option<String>,
    /// Comma-separated buckets that `source_url` may name (default: any the credentials can read).
    #[arg(long, env = "DSS_STAGING_BUCKETS")]
    pub staging_buckets: Option<String>,
    /// Comma-separated origins that may call the API from a browser (CORS), or `*`
    /// for any (default: CORS off).
    #[arg(long, env = "DSS_CORS_ORIGINS")]
    pub cors_origins: Option<String>,
    /// Dev issuer: auto (on when listening on loopback), on, or off.
    #[arg(long, env = "DSS_DEV_ISSUER", default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub dev_issuer: String,
    /// Elasticsearch or OpenSearch endpoint for search (`http(s)://host:port`, credentials
    /// in the URL if needed). Unset: the embedded index under DATA_DIR/search.
    #[arg(long, env = "DSS_ES_ENDPOINT")]
    pub es_endpoint: Option<String>,
    /// Seconds a replica's listing of one uuid (its latest version and tombstones) is
    /// reused; fractions allowed, 0 turns it off. This process's own writes are seen at
    /// once; other processes' writes within this time.
    #[arg(long, env = "DSS_BUCKET_FRESHNESS", default_value_t = 2.0, value_parser = seconds)]
    pub bucket_freshness: f64,
    /// The replicas, comma-separated (see `DSS_REPLICA_{NAME}_*` in the README for
    /// where each is stored).
    #[arg(long, env = "DSS_REPLICAS", default_value = "aws,gcp")]
    pub replicas: String,
    /// Search: `auto` (Elasticsearch when DSS_ES_ENDPOINT is set, else the embedded index)
    /// or `off` (no index is kept; /v1/search answers 501).
    #[arg(long, env = "DSS_SEARCH", default_value = "auto", value_parser = ["auto", "off"])]
    pub search: String,
    /// The job queue: `postgres://…` for one queue shared by several backends, or a path
    /// for the embedded one. Unset: DATA_DIR/jobs/queue.sqlite.
    #[arg(long, env = "DSS_JOBS_URL")]
    pub jobs_url: Option<String>,
    /// Jobs this process runs at once.
    #[arg(long, env = "DSS_JOB_WORKERS", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub job_workers: u64,
    /// Seconds a job's lease lasts: a job whose backend died is taken over after this.
    /// Running jobs renew it at least three times per lease.
    #[arg(long, env = "DSS_JOB_LEASE", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub job_lease: u64,
    /// Staged files larger than this many bytes are ingested by a background job (202 and
    /// a task_id); smaller ones inline.
    #[arg(long, env = "DSS_ASYNC_INGEST_THRESHOLD", default_value_t = crate::bucket::ingest::ASYNC_THRESHOLD)]
    pub async_ingest_threshold: u64,
    /// Prefix of the Elasticsearch index names (`{prefix}-{replica}-docs`).
    #[arg(long, env = "DSS_ES_INDEX_PREFIX", default_value = "dss")]
    pub es_index_prefix: String,
    /// Scrub indexed metadata with each file's JSON schema (fetched from its `describedBy`),
    /// dropping undeclared properties and files without a reachable schema, as the original
    /// did. Off: the JSON is indexed as it is, and indexing needs no schema server.
    #[arg(long, env = "DSS_INDEX_SCHEMA_SCRUB", default_value = "off", value_parser = ["on", "off"])]
    pub index_schema_scrub: String,
    /// Comma-separated hosts that schemas may be fetched from when scrubbing (`host` or
    /// `host:port`: https only; `http://host[:port]` allows plain http for that host).
    /// Any other `describedBy` URL is never fetched.
    #[arg(long, env = "DSS_INDEX_SCHEMA_HOSTS", default_value = crate::search::schema::DEFAULT_SCHEMA_HOSTS)]
    pub index_schema_hosts: String,
    /// Seconds one search of the embedded index may take (waiting for a search thread
    /// included) before it is answered 504 timed_out; fractions allowed, at most 3600.
    #[arg(long, env = "DSS_SEARCH_TIMEOUT", default_value_t = crate::search::DEFAULT_SEARCH_TIMEOUT_SECS, value_parser = seconds)]
    pub search_timeout: f64,
    /// Version string reported by /version.
    #[arg(long, env = "DSS_VERSION")]
    pub dss_version: Option<String>,
    /// Deployment stage. Outside `prod`, a request may carry the header
    /// `DSS_FAKE_504_PROBABILITY: p` to be answered 504 with probability p (client retry tests).
    #[arg(long, env = "DSS_DEPLOYMENT_STAGE", default_value = "dev")]
    pub deployment_stage: String,
    /// OAuth client secrets served at /internal/application_secrets (the `hca` CLI reads
    /// them): a file path, or the JSON document itself. Default: a document naming this
    /// server when the dev issuer runs, else none (404).
    #[arg(long, env = "GOOGLE_APPLICATION_SECRETS")]
    pub application_secrets: Option<String>,
    /// Seconds a read (GET, HEAD, POST /v1/search) may take before it is answered 504
    /// timed_out. Writes always run to their end.
    #[arg(long, env = "DSS_READ_DEADLINE", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub read_deadline: u64,
    /// Seconds a client may pause while sending a request body before it gets 408 and the
    /// connection is closed.
    #[arg(long, env = "DSS_BODY_IDLE_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_idle_timeout: u64,
    /// Seconds a client may take to send a whole request body (408 past it).
    #[arg(long, env = "DSS_BODY_TIMEOUT", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout: u64,
    /// MiB of request bodies held in memory at once, across all connections; bodies
    /// reserve it as their bytes arrive.
    #[arg(long, env = "DSS_BODY_BUDGET_MIB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(16..=65536))]
    pub body_budget_mib: u64,
    /// Client connections served at once; more wait to be accepted.
    #[arg(long, env = "DSS_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
}

/// A number of seconds from 0 to 3600.
fn seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(n) if (0.0..=3600.0).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 3600")),
    }
}

impl ServeConfig {
    /// Fill derived defaults (call after parsing).
    pub fn finish(mut self) -> Self {
        self.staging_dir = self
            .staging_dir_opt
            .clone()
            .unwrap_or_else(|| self.data_dir.join("staging"));
        self
    }

    /// The public base URL, without trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url_opt {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }

    /// Whether the dev issuer runs: on loopback by default, elsewhere only when asked for.
    pub fn dev_issuer_enabled(&self) -> bool {
        match self.dev_issuer.as_str() {
            "on" => true,
            "off" => false,
            _ => self.listen.ip().is_loopback(),
        }
    }

    /// Settings for tests: everything under `data_dir`, on an OS-chosen port.
    pub fn for_dir(data_dir: &std::path::Path) -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            c: ServeConfig,
        }
        let mut c = P::parse_from([
            "dss",
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
        ])
        .c;
        c.bundle_file_wait = 0;
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct P {
        #[command(flatten)]
        c: ServeConfig,
    }

    fn parse(args: &[&str]) -> ServeConfig {
        let mut all = vec!["dss"];
        all.extend_from_slice(args);
        P::parse_from(all).c.finish()
    }

    #[test]
    fn dev_issuer_only_on_loopback_unless_asked() {
        assert!(parse(&["--listen", "127.0.0.1:5000"]).dev_issuer_enabled());
        assert!(parse(&["--listen", "[::1]:5000"]).dev_issuer_enabled());
        assert!(!parse(&["--listen", "0.0.0.0:5000"]).dev_issuer_enabled());
        assert!(!parse(&["--listen", "192.0.2.1:5000"]).dev_issuer_enabled());
        assert!(parse(&["--listen", "0.0.0.0:5000", "--dev-issuer", "on"]).dev_issuer_enabled());
        assert!(!parse(&["--listen", "127.0.0.1:5000", "--dev-issuer", "off"]).dev_issuer_enabled());
    }

    #[test]
    fn search_timeout_is_bounded_seconds() {
        assert_eq!(parse(&[]).search_timeout, crate::search::DEFAULT_SEARCH_TIMEOUT_SECS);
        assert_eq!(parse(&["--search-timeout", "0.5"]).search_timeout, 0.5);
        for bad in ["-1", "NaN", "inf", "3601", "x"] {
            assert!(P::try_parse_from(["dss", "--search-timeout", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_defaults() {
        let c = parse(&["--listen", "127.0.0.1:6000", "--data-dir", "/d"]);
        assert_eq!(c.staging_dir, std::path::PathBuf::from("/d/staging"));
        assert_eq!(c.public_url(), "http://127.0.0.1:6000");
        let c = parse(&["--public-url", "https://dss.example.org/", "--staging-dir", "/s"]);
        assert_eq!(c.public_url(), "https://dss.example.org");
        assert_eq!(c.staging_dir, std::path::PathBuf::from("/s"));
    }
}
