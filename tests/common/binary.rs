//! The real `dss` binary as a test peer: started on a free loopback port, ready once it
//! prints its "listening on" line, stopped when dropped; and the `hca` CLI's venv.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

/// A running `dss serve`.
pub struct Server {
    pub child: Child,
    _stdout: BufReader<ChildStdout>,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `dss serve` on a free port with its data in `data`; `configure` adds environment and
/// redirects stderr (inherited by default, so its warnings show in the test output).
pub fn start_dss(data: &Path, configure: impl FnOnce(&mut Command)) -> Server {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dss"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DSS_DATA_DIR", data)
        .env("RUST_LOG", "warn")
        .env_remove("DSS_READ_ONLY_MODE")
        .env_remove("DSS_ES_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    configure(&mut cmd);
    let mut child = cmd.spawn().expect("start dss serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    // "listening on {url}", or on its public URL when DSS_PUBLIC_URL is set.
    if !first.contains(" listening on ") {
        let _ = child.kill();
        let _ = child.wait();
        panic!("dss serve did not start; startup line: {first:?}");
    }
    Server {
        child,
        _stdout: stdout,
        url,
    }
}

/// The `hca` CLI that scripts/test installs into `.venv-hca` (or `DSS_TEST_HCA_VENV`).
pub fn hca_bin() -> PathBuf {
    let venv = std::env::var_os("DSS_TEST_HCA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-hca"));
    let bin = venv.join("bin/hca");
    assert!(
        bin.exists(),
        "{} not found: run scripts/test (it installs hca==7.0.1 into .venv-hca)",
        bin.display()
    );
    bin
}
