//! Attacks at the HTTP level, against the real binary: slow and stalled request bodies
//! must not stop other clients' writes and searches, and every error a client can get,
//! even one refused before any route is known, is the DSS problem JSON with CORS and a
//! request id.

mod common;
use common::binary;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

const ORIGIN: &str = "https://portal.example";

fn start(envs: &[(&str, &str)]) -> (binary::Server, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let server = binary::start_dss(data.path(), |cmd| {
        cmd.env("DSS_CORS_ORIGINS", ORIGIN);
        for (k, v) in envs {
            cmd.env(k, v);
        }
    });
    (server, data)
}

fn token(data: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dss"))
        .args(["token", "--email", "me@example.org"])
        .env("DSS_DATA_DIR", data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn connect(url: &str) -> TcpStream {
    let s = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    // A hung server fails the test instead of hanging it.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Everything the server sends until it closes the connection.
fn read_all(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Head and parsed body of a raw HTTP answer.
fn parse(raw: &str) -> (u16, String, serde_json::Value) {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer: {raw:?}"));
    let status = head[9..12].parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, head.to_ascii_lowercase(), body)
}

#[track_caller]
fn assert_dss_error(raw: &str, status: u16, code: &str) {
    let (s, head, body) = parse(raw);
    assert_eq!(s, status, "{raw}");
    assert!(head.contains("content-type: application/problem+json"), "{head}");
    assert!(
        head.contains(&format!("access-control-allow-origin: {ORIGIN}")),
        "{head}"
    );
    assert!(head.contains("x-request-id: "), "{head}");
    assert_eq!(body["code"], code, "{raw}");
    assert_eq!(body["status"], status);
}

/// A connection that announced a 16 MiB bundle body (or a chunked one) and sends a byte
/// now and then, never finishing.
fn slow_upload(url: &str, token: &str, chunked: bool) -> TcpStream {
    let mut s = connect(url);
    let u = uuid::Uuid::new_v4();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", dss::api::routes::BUNDLE_BODY)
    };
    write!(
        s,
        "PUT /v1/bundles/{u}?version=2024-01-01T000000.000000Z&replica=aws HTTP/1.1\r\nHost: x\r\n\
         Origin: {ORIGIN}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    )
    .unwrap();
    trickle(&mut s, chunked);
    s
}

fn trickle(s: &mut TcpStream, chunked: bool) {
    let _ = if chunked {
        s.write_all(b"1\r\n \r\n")
    } else {
        s.write_all(b" ")
    };
}

#[test]
fn stalled_uploads_do_not_stop_writes_and_searches() {
    let (server, data) = start(&[("DSS_BODY_IDLE_TIMEOUT", "3")]);
    let token = token(data.path());
    // Twelve clients announce the largest body a route takes and send it a byte a second:
    // under the old rules they reserved 12 x 16 MiB of the 128 MiB budget and every other
    // body waited for ever.
    let mut slow: Vec<(TcpStream, bool)> = (0..12)
        .map(|i| {
            let chunked = i % 3 == 0;
            (slow_upload(&server.url, &token, chunked), chunked)
        })
        .collect();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        for (s, chunked) in &mut slow {
            trickle(s, *chunked);
        }
        // Meanwhile, other clients' writes and searches are answered.
        let r = http
            .post(format!("{}/v1/search?replica=aws", server.url))
            .json(&serde_json::json!({"es_query": {"query": {"match_all": {}}}}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = http
            .put(format!(
                "{}/v1/bundles/{}?version=2024-01-01T000000.000000Z&replica=aws",
                server.url,
                uuid::Uuid::new_v4()
            ))
            .bearer_auth(&token)
            .json(&serde_json::json!({"creator_uid": 1, "files": []}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    }
    // Clients that stop sending are told so and cut off once the idle timeout passes.
    let started = Instant::now();
    for (s, _) in slow {
        let raw = read_all(s);
        assert_dss_error(&raw, 408, "request_timeout");
        assert!(parse(&raw).1.contains("connection: close"));
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn errors_before_any_route_are_dss_json_with_cors() {
    let (server, _data) = start(&[]);
    // A URI over 64 KiB: hyper refuses it before any route is known.
    let mut s = connect(&server.url);
    let long = "a".repeat(70 * 1024);
    write!(
        s,
        "GET /v1/bundles/all?replica=aws&x={long} HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n\r\n"
    )
    .unwrap();
    assert_dss_error(&read_all(s), 414, "uri_too_long");

    // Too many headers.
    let mut s = connect(&server.url);
    let mut head = format!("GET /version HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n");
    for i in 0..200 {
        head.push_str(&format!("X-Filler-{i}: {}\r\n", "b".repeat(64)));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    assert_dss_error(&read_all(s), 431, "request_header_fields_too_large");

    // Not HTTP at all.
    let mut s = connect(&server.url);
    s.write_all(b"GARBAGE / NOPE\r\n\r\n").unwrap();
    let raw = read_all(s);
    let (status, head, body) = parse(&raw);
    assert_eq!(status, 400, "{raw}");
    assert!(head.contains("content-type: application/problem+json"));
    assert_eq!(body["code"], "bad_request");

    // A declared body over the route's limit: refused before it is read, with CORS.
    let mut s = connect(&server.url);
    write!(
        s,
        "PUT /v1/bundles/{}?version=2024-01-01T000000.000000Z&replica=aws HTTP/1.1\r\nHost: x\r\n\
         Origin: {ORIGIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        uuid::Uuid::new_v4(),
        dss::api::routes::BUNDLE_BODY + 1
    )
    .unwrap();
    assert_dss_error(&read_all(s), 413, "payload_too_large");

    // A body over a smaller route's limit, sent without a length.
    let mut s = connect(&server.url);
    write!(
        s,
        "POST /v1/search?replica=aws HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..(dss::api::routes::SEARCH_BODY / chunk.len() + 1) {
        if write!(s, "{:x}\r\n", chunk.len()).is_err() || s.write_all(&chunk).is_err() || s.write_all(b"\r\n").is_err()
        {
            break; // the server may stop reading once it has refused
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    assert_dss_error(&read_all(s), 413, "payload_too_large");

    // And ordinary answers carry a request id too.
    let r = reqwest::blocking::get(format!("{}/version", server.url)).unwrap();
    assert!(r.headers().contains_key("x-request-id"));
}
