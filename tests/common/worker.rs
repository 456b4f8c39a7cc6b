//! The edge worker as a test peer: `build/` (scripts/build-worker) run in workerd through
//! Miniflare (`tests/edge/serve.mjs`) with the given bindings, stopped cleanly when dropped.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The worker in Miniflare, stopped (with its workerd) when dropped.
pub struct Worker {
    child: Child,
    pub url: String,
    _out: Option<BufReader<std::process::ChildStdout>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing stdin asks the Miniflare script to stop workerd (a killed node would
        // leave workerd running); then SIGTERM, and SIGKILL as a last resort.
        let had_stdin = self.child.stdin.take().is_some();
        let pid = self.child.id() as i32;
        let mut exited = |d: Duration| {
            let deadline = std::time::Instant::now() + d;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        };
        if had_stdin && exited(Duration::from_secs(3)) {
            return;
        }
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if !exited(Duration::from_secs(3)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The built worker under Miniflare with `bindings`.
pub fn start_worker(bindings: &Value, log: PathBuf) -> Worker {
    let node = root().join("node_modules/.bin/node");
    assert!(
        node.exists(),
        "{} not found: run scripts/test (it runs npm ci for Node 22 and Miniflare)",
        node.display()
    );
    assert!(
        root().join("build/index.js").exists(),
        "build/index.js not found: run scripts/build-worker (scripts/test does)"
    );
    let mut child = Command::new(node)
        .arg(root().join("tests/edge/serve.mjs"))
        .env("DSS_EDGE_BINDINGS", bindings.to_string())
        .env("DSS_EDGE_STDIN_LIFELINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let url = first
        .strip_prefix("listening ")
        .unwrap_or_else(|| {
            panic!(
                "worker start-up: {first:?}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .trim()
        .to_string();
    Worker {
        child,
        url,
        _out: Some(out),
    }
}

/// Bindings that put the worker's `aws` replica on moto (`dss-main`, `dss-checkout`) and its
/// `gcp` replica on fake-gcs-server (`dss-gs-main`), in front of `backend`; `extra` adds more.
pub fn cloud_bindings(
    backend: &str,
    s3: &super::emulators::Emulator,
    gcs: &super::emulators::Emulator,
    extra: Value,
) -> Value {
    let mut b = serde_json::json!({
        "BACKEND_URL": backend,
        "DSS_S3_BUCKET": "dss-main",
        "DSS_S3_CHECKOUT_BUCKET": "dss-checkout",
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "DSS_GS_BUCKET": "dss-gs-main",
        "STORAGE_EMULATOR_HOST": gcs.endpoint,
    });
    if let (Some(b), Value::Object(extra)) = (b.as_object_mut(), extra) {
        b.extend(extra);
    }
    b
}
