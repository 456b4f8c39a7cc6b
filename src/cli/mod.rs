//! The `dss` command: `serve`, `token`, `stage`, `checksum`, `reindex`, `jobs`.

pub mod events;
pub mod jobs;
pub mod sync;

use crate::auth::dev::DevIssuer;
use crate::server::{self, dev_issuer_dir, ServeConfig};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

/// A replicated data store for large scientific data sets (HCA DSS API).
#[derive(Debug, Parser)]
#[command(name = "dss", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the all-in-one server (every route, local replicas under the data dir).
    Serve(Box<ServeConfig>),
    /// Print a token signed by the local dev issuer (trusted by `dss serve` on loopback).
    Token {
        /// Email claim of the token.
        #[arg(long, default_value = "dev@example.org")]
        email: String,
        /// Group claim (`hca` may upload files).
        #[arg(long, default_value = "hca")]
        group: String,
        /// Lifetime in seconds (at most DSS_MAX_TOKEN_LIFETIME, which the server enforces).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
        ttl: u64,
        /// The server's cap on token lifetimes, in seconds (see `dss serve --help`).
        #[arg(long, env = "DSS_MAX_TOKEN_LIFETIME", default_value_t = crate::auth::DEFAULT_MAX_TOKEN_LIFETIME_SECS)]
        max_token_lifetime: u64,
        /// Audience (default: the first of OIDC_AUDIENCE's defaults).
        #[arg(long)]
        audience: Option<String>,
        /// Data directory of the server.
        #[arg(long, env = "DSS_DATA_DIR", default_value = "./dss-data")]
        data_dir: PathBuf,
    },
    /// Copy files into the staging directory with their checksums (as the `hca` CLI tags
    /// staged objects); print, per file, a fresh file uuid and its `file://` source URL,
    /// separated by a space.
    Stage {
        /// Files to stage.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Data directory of the server.
        #[arg(long, env = "DSS_DATA_DIR", default_value = "./dss-data")]
        data_dir: PathBuf,
        /// Staging directory (default: DATA_DIR/staging).
        #[arg(long, env = "DSS_STAGING_DIR")]
        staging_dir: Option<PathBuf>,
    },
    /// Rebuild the search index of one or both replicas from their buckets (stop the
    /// server first, or let it be: writers take turns). Prints progress. Runs no jobs.
    Reindex(Box<ReindexArgs>),
    /// List the job queue's jobs, show one, or retry a failed one.
    Jobs(Box<jobs::JobsArgs>),
    /// Replication: `dss sync status` shows it per replica pair; `dss sync --from A --to B
    /// [--prefix P] [--dry-run]` compares two replicas and copies what the second lacks
    /// or holds differently.
    Sync(Box<sync::SyncArgs>),
    /// The event journal: `dss events replay --from DATE [--to DATE] [--replica R]
    /// [--url URL]` prints a running server's events as JSON lines.
    Events(Box<events::EventsArgs>),
    /// Collections: `dss collections reindex [--replica R]` rebuilds the owner index (which
    /// `GET /v1/collections` lists from) from the replicas' buckets, as needed for a bucket
    /// written by the original, whose owners were kept outside it.
    Collections(Box<CollectionsArgs>),
    /// Print the four DSS checksums of files (sha256, sha1, s3_etag, crc32c), the byte
    /// count and the hashing rate: what `hca-dss-*` staging tags must hold.
    Checksum {
        /// Files to hash.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Arguments of `dss collections`.
#[derive(Debug, clap::Args)]
pub struct CollectionsArgs {
    /// What to do (only `reindex`).
    #[arg(value_parser = ["reindex"])]
    pub action: String,
    /// Server settings (the same flags and environment as `dss serve`).
    #[command(flatten)]
    pub cfg: ServeConfig,
    /// Replica to read (`all`: every configured replica).
    #[arg(long, default_value = "all")]
    pub replica: String,
}

/// Arguments of `dss reindex`: the server's settings (buckets, search engine) and which
/// replica.
#[derive(Debug, clap::Args)]
pub struct ReindexArgs {
    /// Server settings (the same flags and environment as `dss serve`).
    #[command(flatten)]
    pub cfg: ServeConfig,
    /// Replica to reindex (`all`: every configured replica).
    #[arg(long, default_value = "all")]
    pub replica: String,
}

/// Set up logging from `DSS_DEBUG` (0: warnings and dss info, 1: dss debug, 2: everything
/// at debug), unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    let level = match std::env::var("DSS_DEBUG").ok().as_deref() {
        Some("2") => "debug",
        Some("1") => "info,dss=debug",
        _ => "warn,dss=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, so that log files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Serve(cfg) => serve(cfg.finish()),
        Command::Token {
            email,
            group,
            ttl,
            max_token_lifetime,
            audience,
            data_dir,
        } => mint_dev_token(&data_dir, &email, &group, ttl, max_token_lifetime, audience).map(|t| println!("{t}")),
        Command::Stage {
            files,
            data_dir,
            staging_dir,
        } => stage(&files, &staging_dir.unwrap_or_else(|| data_dir.join("staging"))),
        Command::Checksum { files } => checksum(&files),
        Command::Jobs(args) => runtime().and_then(|rt| rt.block_on(jobs::run(*args))),
        Command::Events(args) => runtime().and_then(|rt| rt.block_on(events::run(*args))),
        Command::Sync(args) => match runtime().and_then(|rt| rt.block_on(sync::run(*args))) {
            Ok(true) => Ok(()),
            Ok(false) => return 1,
            Err(e) => Err(e),
        },
        Command::Collections(args) => {
            let CollectionsArgs { cfg, replica, .. } = *args;
            reindex_collections(cfg.finish(), &replica)
        }
        Command::Reindex(args) => {
            let ReindexArgs { cfg, replica } = *args;
            reindex(cfg.finish(), &replica)
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dss: {e}");
            1
        }
    }
}

/// The multi-threaded runtime the server and `reindex` run on.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn serve(cfg: ServeConfig) -> Result<(), String> {
    let rt = runtime()?;
    rt.block_on(async move {
        let app = server::build_app(&cfg).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        let url = cfg.public_url();
        // Ignore write errors: a closed stdout must not stop the server.
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "dss {} listening on {url} (data in {})",
            env!("CARGO_PKG_VERSION"),
            cfg.data_dir.display()
        );
        let _ = if app.dev_jwks.is_some() {
            writeln!(
                out,
                "get a token with: dss token --email you@example.org   (then send 'Authorization: Bearer <token>')"
            )
        } else {
            writeln!(
                out,
                "dev issuer off (not on loopback; DSS_DEV_ISSUER=on enables it): use tokens from your OIDC provider"
            )
        };
        let _ = out.flush();
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        server::serve_with(app, listener, server::ServeLimits::from_config(&cfg), shutdown)
            .await
            .map_err(|e| e.to_string())
    })
}

/// `dss collections reindex`: every collection of the replicas' buckets into the owner
/// index (deleted ones out of it); prints what it did per replica.
fn reindex_collections(cfg: ServeConfig, which: &str) -> Result<(), String> {
    use crate::bucket::collections::Ownership;
    use crate::jobs::queue::registry::Registry;
    let rt = runtime()?;
    rt.block_on(async move {
        let (app, queue) = server::assemble(&cfg).map_err(|e| e.to_string())?;
        let replicas: Vec<&str> = match which {
            "all" => app.replicas.names(),
            one => vec![one],
        };
        for name in replicas {
            let replica = app.replica(name).map_err(|e| e.to_string())?;
            let started = std::time::Instant::now();
            let (all, ownerless) = app
                .bucket(replica)
                .collection_ownership()
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            let (mut collections, mut versions, mut deleted) = (0usize, 0usize, 0usize);
            for c in all {
                match c {
                    Ownership::Deleted(uuid) => {
                        queue.remove_collection(&uuid).await.map_err(|e| e.to_string())?;
                        deleted += 1;
                    }
                    Ownership::Owned(uuid, owned) => {
                        for (version, owner) in &owned {
                            queue
                                .add_collection(owner, &uuid, version)
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        collections += 1;
                        versions += owned.len();
                    }
                }
            }
            println!(
                "{name}: {collections} collections ({versions} versions) indexed, {deleted} deleted ones left out, \
                 {ownerless} versions without an owner skipped, in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    })
}

fn reindex(cfg: ServeConfig, which: &str) -> Result<(), String> {
    use crate::search::IndexOp;
    use futures::StreamExt;
    let rt = runtime()?;
    rt.block_on(async move {
        // No job runner: the server (if one runs) does the jobs.
        let (app, _queue) = server::assemble(&cfg).map_err(|e| e.to_string())?;
        let engine = app.search.clone().ok_or("no search engine configured")?;
        let scrubber = server::schema_scrubber(&cfg).map_err(|e| e.to_string())?;
        let replicas: Vec<&str> = match which {
            "all" => app.replicas.names(),
            one => vec![one],
        };
        let mut failed = 0usize;
        for name in replicas {
            let replica = app.replica(name).map_err(|e| e.to_string())?;
            let started = std::time::Instant::now();
            engine.clear(name).await.map_err(|e| format!("{name}: {e}"))?;
            let (mut bundles, mut docs) = (0usize, 0usize);
            let bucket = app.bucket(replica);
            let mut token: Option<String> = None;
            loop {
                // Every stored version: tombstones are found through the versions they cover.
                let (versions, next) = bucket
                    .bundle_versions(token.as_deref())
                    .await
                    .map_err(|e| format!("{name}: listing bundles: {e}"))?;
                let results: Vec<(String, Result<Vec<IndexOp>, crate::search::indexer::IndexError>)> =
                    futures::stream::iter(versions)
                        .map(|(uuid, version)| {
                            let k = crate::bucket::keys::bundle_key(&uuid, &version);
                            let bucket = &bucket;
                            let scrubber = &scrubber;
                            let now = app.clock.now();
                            async move {
                                let r = crate::search::indexer::ops_for_key(bucket, &k, now, scrubber.as_deref()).await;
                                (k, r)
                            }
                        })
                        .buffered(16)
                        .collect()
                        .await;
                let mut ops = Vec::new();
                for (k, r) in results {
                    match r {
                        Ok(o) => {
                            bundles += 1;
                            ops.extend(o);
                        }
                        Err(e) => {
                            failed += 1;
                            eprintln!("{name}: {k}: {e}");
                        }
                    }
                }
                docs += ops.len();
                if !ops.is_empty() {
                    engine.index(name, ops).await.map_err(|e| format!("{name}: {e}"))?;
                }
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "{name}: {bundles} bundles, {docs} documents indexed ({:.0} bundles/s)",
                    bundles as f64 / secs.max(1e-9)
                );
                match next {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            println!(
                "{name}: reindexed {bundles} bundles ({docs} documents) in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        if failed > 0 {
            return Err(format!("{failed} bundles could not be indexed (see above)"));
        }
        Ok(())
    })
}

/// A token from the dev issuer of `data_dir` (its key is created if absent), for the
/// issuer name `dss serve` recorded there.
fn mint_dev_token(
    data_dir: &std::path::Path,
    email: &str,
    group: &str,
    ttl: u64,
    max_lifetime: u64,
    audience: Option<String>,
) -> Result<String, String> {
    if ttl > max_lifetime {
        return Err(format!(
            "--ttl {ttl} is longer than DSS_MAX_TOKEN_LIFETIME ({max_lifetime} s): the server would refuse the token"
        ));
    }
    let ttl = i64::try_from(ttl)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .filter(|d| chrono::Utc::now().checked_add_signed(*d).is_some())
        .ok_or_else(|| format!("--ttl {ttl} is too large"))?;
    let dir = dev_issuer_dir(data_dir);
    let issuer = crate::auth::dev::read_issuer_name(&dir).unwrap_or_else(|| "http://127.0.0.1:5000/".to_string());
    let dev = DevIssuer::load_or_create(&dir, &issuer).map_err(|e| e.to_string())?;
    let aud = audience.unwrap_or_else(|| {
        crate::auth::DEFAULT_AUDIENCES
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string()
    });
    let group = (!group.is_empty()).then_some(group);
    dev.mint(email, group, &aud, ttl).map_err(|e| e.to_string())
}

/// Hash a file with the server's hasher (two threads for large files).
fn hash_file(path: &std::path::Path) -> Result<(crate::model::Checksums, u64), String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = f.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
    let mut h = crate::storage::verify::Hasher::new(size);
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = f.read(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        h.update(&bytes::Bytes::from(buf));
    }
    Ok(h.finish())
}

fn checksum(files: &[PathBuf]) -> Result<(), String> {
    for f in files {
        let started = std::time::Instant::now();
        let (c, size) = hash_file(f)?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "file": f.display().to_string(), "size": size,
                "hca-dss-sha256": c.sha256, "hca-dss-sha1": c.sha1, "hca-dss-s3_etag": c.s3_etag, "hca-dss-crc32c": c.crc32c,
                "seconds": secs, "mb_per_s": size as f64 / secs.max(1e-9) / 1e6,
            })
        );
    }
    Ok(())
}

fn stage(files: &[PathBuf], staging: &std::path::Path) -> Result<(), String> {
    use crate::storage::{PutOptions, Store};
    std::fs::create_dir_all(staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    let staging = std::fs::canonicalize(staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    let store = crate::storage::fs::FsStore::new("staging", &staging, None).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    for f in files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: not a file name", f.display()))?;
        // One directory per staged file, like the `hca` CLI's `{uuid}/{name}` staging keys.
        let file_uuid = uuid::Uuid::new_v4().to_string();
        let key = format!("{file_uuid}/{name}");
        // The checksums travel with the object, as the CLI's staging tags do, so the
        // server verifies the bytes in the same pass that stores them.
        let (c, _) = hash_file(f)?;
        let metadata = [
            ("hca-dss-sha256", c.sha256),
            ("hca-dss-sha1", c.sha1),
            ("hca-dss-s3_etag", c.s3_etag),
            ("hca-dss-crc32c", c.crc32c),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let opts = PutOptions {
            if_absent: true,
            content_type: Some(crate::api::dss::files::guess_content_type(name)),
            metadata,
            expiring: false,
        };
        rt.block_on(async {
            let file = tokio::fs::File::open(f)
                .await
                .map_err(|e| format!("{}: {e}", f.display()))?;
            let stream = crate::model::platform::box_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
            store
                .put_stream(&key, stream, opts)
                .await
                .map_err(|e| format!("{}: {e}", f.display()))
        })?;
        let url = url::Url::from_file_path(staging.join(&key))
            .map_err(|_| format!("{}: not an absolute path", staging.display()))?;
        println!("{file_uuid} {url}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetime_is_capped_like_the_servers() {
        let dir = tempfile::tempdir().unwrap();
        let cap = crate::auth::DEFAULT_MAX_TOKEN_LIFETIME_SECS;
        let err = mint_dev_token(dir.path(), "a@example.org", "hca", cap + 1, cap, None).unwrap_err();
        assert!(err.contains("DSS_MAX_TOKEN_LIFETIME"), "{err}");
        let err = mint_dev_token(dir.path(), "a@example.org", "hca", u64::MAX, u64::MAX, None).unwrap_err();
        assert!(err.contains("too large"), "{err}");
        // The default --ttl passes the default cap, under the issuer `dss serve` recorded.
        std::fs::create_dir_all(dev_issuer_dir(dir.path())).unwrap();
        crate::auth::dev::write_issuer_name(&dev_issuer_dir(dir.path()), "http://127.0.0.1:5009/").unwrap();
        let t = mint_dev_token(dir.path(), "a@example.org", "hca", 3600, cap, None).unwrap();
        let claims = jwt_compact::UntrustedToken::new(&t)
            .unwrap()
            .deserialize_claims_unchecked::<serde_json::Map<String, serde_json::Value>>()
            .unwrap();
        assert_eq!(claims.custom["iss"], "http://127.0.0.1:5009/");
        let lifetime = claims.expiration.unwrap() - claims.issued_at.unwrap();
        assert_eq!(lifetime.num_seconds(), 3600);
    }
}
