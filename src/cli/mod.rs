//! The `dss` command: `serve`, `token`, `stage`.

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
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
        /// Audience (default: the first of OIDC_AUDIENCE's defaults).
        #[arg(long)]
        audience: Option<String>,
        /// Data directory of the server.
        #[arg(long, env = "DSS_DATA_DIR", default_value = "./dss-data")]
        data_dir: PathBuf,
    },
    /// Copy files into the staging directory; print, per file, a fresh file uuid and
    /// its `file://` source URL, separated by a space.
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
            audience,
            data_dir,
        } => token(&data_dir, &email, &group, ttl, audience),
        Command::Stage {
            files,
            data_dir,
            staging_dir,
        } => stage(&files, &staging_dir.unwrap_or_else(|| data_dir.join("staging"))),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dss: {e}");
            1
        }
    }
}

fn serve(cfg: ServeConfig) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
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
        server::serve(app, listener, shutdown).await.map_err(|e| e.to_string())
    })
}

fn token(
    data_dir: &std::path::Path,
    email: &str,
    group: &str,
    ttl: i64,
    audience: Option<String>,
) -> Result<(), String> {
    let dir = dev_issuer_dir(data_dir);
    let issuer = std::fs::read_to_string(dir.join("issuer")).unwrap_or_else(|_| "http://127.0.0.1:5000/".to_string());
    let dev = DevIssuer::load_or_create(&dir, issuer.trim()).map_err(|e| e.to_string())?;
    let aud = audience.unwrap_or_else(|| {
        crate::auth::DEFAULT_AUDIENCES
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string()
    });
    let group = (!group.is_empty()).then_some(group);
    let t = dev
        .mint(email, group, &aud, chrono::Duration::seconds(ttl))
        .map_err(|e| e.to_string())?;
    println!("{t}");
    Ok(())
}

fn stage(files: &[PathBuf], staging: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    let staging = std::fs::canonicalize(staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    for f in files {
        let name = f.file_name().ok_or_else(|| format!("{}: not a file", f.display()))?;
        // One directory per staged file, like the `hca` CLI's `{uuid}/{name}` staging keys.
        let file_uuid = uuid::Uuid::new_v4().to_string();
        let dir = staging.join(&file_uuid);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let dest = dir.join(name);
        std::fs::copy(f, &dest).map_err(|e| format!("{}: {e}", f.display()))?;
        let url = url::Url::from_file_path(&dest).map_err(|_| format!("{}: not an absolute path", dest.display()))?;
        println!("{file_uuid} {url}");
    }
    Ok(())
}
