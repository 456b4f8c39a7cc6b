//! Starts the real `dss` binary and drives the README flow over HTTP.

mod common;
use common::binary;
use common::{fixtures, sha256_hex};
use serde_json::{json, Value};
use std::process::Command;

/// The binary on a data dir of its own, deleted after the server stops.
struct Server {
    _server: binary::Server,
    url: String,
    data: tempfile::TempDir,
}

fn dss() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dss"))
}

fn start() -> Server {
    let data = tempfile::tempdir().unwrap();
    let inner = binary::start_dss(data.path(), |cmd| {
        cmd.env("ADMIN_USER_EMAILS", "admin@example.org");
    });
    Server {
        url: inner.url.clone(),
        _server: inner,
        data,
    }
}

fn cli(server: &Server, args: &[&str]) -> String {
    let out = dss()
        .args(args)
        .env("DSS_DATA_DIR", server.data.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dss {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One request; returns the status, headers and the body parsed as JSON (Null if empty).
async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rb = http.request(method.parse().unwrap(), url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let bytes = r.bytes().await.unwrap();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, headers, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_flow_against_the_binary() {
    let s = start();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let follow = reqwest::Client::new();
    let token = cli(&s, &["token", "--email", "me@example.org", "--group", "hca"])
        .trim()
        .to_string();
    let admin = cli(&s, &["token", "--email", "admin@example.org"]).trim().to_string();
    let v = "2024-01-01T000000.000000Z";
    let u = &s.url;

    let (_, _, version) = call(&http, "GET", &format!("{u}/version"), None, None).await;
    assert!(version["version_info"]["version"].is_string());
    let (_, _, health) = call(&http, "GET", &format!("{u}/internal/health"), None, None).await;
    assert_eq!(
        health,
        json!({"Healthy": true, "replicas": {"aws": {"Healthy": true}, "gcp": {"Healthy": true}}})
    );
    let (_, _, swagger) = call(&http, "GET", &format!("{u}/v1/swagger.json"), None, None).await;
    assert_eq!(swagger["swagger"], "2.0");
    assert_eq!(swagger["host"], u.trim_start_matches("http://"));
    assert_eq!(swagger["basePath"], "/v1");

    // Stage and upload every file of the example bundle.
    let mut files = Vec::new();
    let mut expected = std::collections::HashMap::new();
    for e in std::fs::read_dir(fixtures().join("example_bundle")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let line = cli(&s, &["stage", path.to_str().unwrap()]);
        let (fu, src) = line.trim().split_once(' ').unwrap();
        let body = json!({"source_url": src, "creator_uid": 0});
        let (status, _, _) = call(
            &http,
            "PUT",
            &format!("{u}/v1/files/{fu}?version={v}"),
            Some(&token),
            Some(body),
        )
        .await;
        assert_eq!(status, 201, "{name}");
        expected.insert(name.clone(), sha256_hex(&std::fs::read(&path).unwrap()));
        files.push(json!({"uuid": fu, "version": v, "name": name, "indexed": true}));
    }
    let bu = uuid::Uuid::new_v4().to_string();
    let bundle_url = format!("{u}/v1/bundles/{bu}?replica=aws");
    let body = json!({"creator_uid": 0, "files": files});
    let (status, _, _) = call(
        &http,
        "PUT",
        &format!("{bundle_url}&version={v}"),
        Some(&token),
        Some(body),
    )
    .await;
    assert_eq!(status, 201);

    // Read it back and download every file through the 302, checking bytes.
    let (status, _, bundle) = call(&http, "GET", &bundle_url, None, None).await;
    assert_eq!(status, 200);
    let listed = bundle["bundle"]["files"].as_array().unwrap();
    assert_eq!(listed.len(), expected.len());
    for f in listed {
        let (fu, fv) = (f["uuid"].as_str().unwrap(), f["version"].as_str().unwrap());
        let url = format!("{u}/v1/files/{fu}?replica=aws&version={fv}");
        let (status, headers, _) = call(&http, "HEAD", &url, None, None).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-dss-sha256"], f["sha256"].as_str().unwrap());
        let (status, _, _) = call(&http, "GET", &url, None, None).await;
        assert_eq!(status, 302);
        let body = follow.get(&url).header("range", "bytes=0-").send().await.unwrap();
        assert_eq!(body.status(), 206);
        let bytes = body.bytes().await.unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            expected[f["name"].as_str().unwrap()],
            "{}",
            f["name"]
        );
    }

    // Listing, PATCH, DELETE.
    let (_, _, all) = call(&http, "GET", &format!("{u}/v1/bundles/all?replica=aws"), None, None).await;
    assert_eq!(all["bundles"], json!([{"uuid": bu, "version": v}]));
    let first = &listed[0];
    let remove = json!({"remove_files": [{"uuid": first["uuid"], "version": first["version"], "name": first["name"]}]});
    let (status, _, patched) = call(
        &http,
        "PATCH",
        &format!("{bundle_url}&version={v}"),
        Some(&token),
        Some(remove),
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, b2) = call(&http, "GET", &bundle_url, None, None).await;
    assert_eq!(b2["bundle"]["version"], patched["version"]);
    assert_eq!(b2["bundle"]["files"].as_array().unwrap().len(), expected.len() - 1);
    // Both versions are events: `dss events replay` prints them as JSON lines, in order
    // (recorded just after the writes, so it is asked until both are there).
    let replay = || {
        let out = cli(&s, &["events", "replay", "--from", "2000-01-01", "--url", u]);
        out.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let wait_for = |n: usize| {
        let t = std::time::Instant::now();
        loop {
            let events = replay();
            if events.len() == n {
                return events;
            }
            assert!(
                t.elapsed().as_secs() < 60,
                "{} events, not {n}: {events:?}",
                events.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let events = wait_for(2);
    let versions: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["document"]["bundle_info"]["version"].as_str().unwrap())
        .collect();
    assert_eq!(
        versions,
        [v, patched["version"].as_str().unwrap()].into_iter().collect()
    );
    for e in &events {
        let d = &e["document"];
        assert_eq!(d["event_type"], "CREATE");
        assert_eq!(
            e["event_id"],
            format!("{bu}.{}", d["bundle_info"]["version"].as_str().unwrap()).as_str()
        );
        assert!(e["timestamp"].is_string());
    }
    assert!(events[0]["timestamp"].as_str() <= events[1]["timestamp"].as_str());
    let reason = json!({"reason": "test"});
    let (status, _, _) = call(&http, "DELETE", &bundle_url, Some(&token), Some(reason.clone())).await;
    assert_eq!(status, 403);
    let (status, _, _) = call(&http, "DELETE", &bundle_url, Some(&admin), Some(reason)).await;
    assert_eq!(status, 200);
    let (status, headers, _) = call(&http, "GET", &bundle_url, None, None).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/problem+json");
    // The tombstone deletes both events.
    wait_for(0);
    // The data dir holds the original's bucket layout.
    assert!(s.data.path().join(format!("aws/main/bundles/{bu}.dead")).is_file());
    assert!(s.data.path().join(format!("aws/main/bundles/{bu}.{v}")).is_file());
}

#[test]
fn oversized_and_slow_requests_are_cut_off() {
    use std::io::{Read, Write};
    let s = start();
    let addr = s.url.trim_start_matches("http://").to_string();
    // A body larger than the limit is refused from its Content-Length, before it is read.
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.write_all(b"PUT /v1/bundles/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 413"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // A GET's body is never buffered: the server answers without waiting for it.
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.write_all(b"GET /version HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let n = c.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}
