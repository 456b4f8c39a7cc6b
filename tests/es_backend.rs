//! The Elasticsearch/OpenSearch engine (`DSS_ES_ENDPOINT`) against a small fake ES
//! server that records what it receives and answers in Elasticsearch's wire format:
//! index creation with the original's mapping, documents through `_bulk`, the query
//! forwarded as written with the original's sort, and ES errors mapped as the original
//! mapped them. (No real Elasticsearch runs in these tests.)

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    body: String,
}

struct FakeEs {
    url: String,
    log: Arc<Mutex<Vec<Received>>>,
}

/// Answers like Elasticsearch 7: index creation, `_bulk`, `_search` over what was bulked
/// (every document, sorted by `_id` descending), and a 400 for a query type named `bogus`.
fn fake_es() -> FakeEs {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://elastic:secret@{}", listener.local_addr().unwrap());
    let log: Arc<Mutex<Vec<Received>>> = Arc::default();
    let docs: Arc<Mutex<std::collections::BTreeMap<String, Value>>> = Arc::default();
    let (log2, docs2) = (log.clone(), docs.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_string();
            let path = parts.next().unwrap_or_default().to_string();
            let mut len = 0;
            let mut auth = String::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap(),
                    "authorization" => auth = v.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let body = String::from_utf8(body).unwrap();
            log2.lock().unwrap().push(Received {
                method: method.clone(),
                path: path.clone(),
                body: body.clone(),
            });
            let (status, answer) = if auth != "Basic ZWxhc3RpYzpzZWNyZXQ=" {
                (
                    401,
                    json!({"error": {"type": "security_exception", "reason": "missing authentication"}, "status": 401}),
                )
            } else if method == "PUT" && !path.contains('_') {
                (
                    200,
                    json!({"acknowledged": true, "index": path.trim_start_matches('/')}),
                )
            } else if path.starts_with("/_bulk") {
                let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
                let mut items = Vec::new();
                for pair in lines.chunks(2) {
                    let id = pair[0]["index"]["_id"].as_str().unwrap().to_string();
                    docs2.lock().unwrap().insert(id.clone(), pair[1].clone());
                    items.push(json!({"index": {"_id": id, "status": 201}}));
                }
                (200, json!({"took": 1, "errors": false, "items": items}))
            } else if path.ends_with("/_search") {
                let q: Value = serde_json::from_str(&body).unwrap();
                if q.to_string().contains("bogus") {
                    (
                        400,
                        json!({"error": {"root_cause": [{"type": "parsing_exception",
                        "reason": "unknown query [bogus]"}], "type": "parsing_exception",
                        "reason": "unknown query [bogus]"}, "status": 400}),
                    )
                } else {
                    let size = q["size"].as_u64().unwrap() as usize;
                    let all = docs2.lock().unwrap();
                    let hits: Vec<Value> = all
                        .iter()
                        .rev()
                        .take(size)
                        .map(|(id, d)| {
                            let (u, v) = id.split_once('.').unwrap();
                            let mut h = json!({"_index": "dss-aws-docs", "_id": id, "_score": null, "sort": [u, v]});
                            if q["_source"] != false {
                                h["_source"] = d.clone();
                            }
                            h
                        })
                        .collect();
                    (
                        200,
                        // A query naming "slow-shard" times out, with what was found so far.
                        json!({"took": 1, "timed_out": q.to_string().contains("slow-shard"),
                        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                        "hits": {"total": {"value": all.len(), "relation": "eq"}, "max_score": null, "hits": hits}}),
                    )
                }
            } else {
                (404, json!({"error": {"type": "not_found"}}))
            };
            let body = answer.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    FakeEs { url, log }
}

impl FakeEs {
    /// The newest `_search` request ES received.
    fn last_search(&self) -> Received {
        self.received()
            .into_iter()
            .rev()
            .find(|r| r.path.ends_with("/_search"))
            .expect("a _search request")
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn search_goes_to_elasticsearch_as_written() {
    let es = fake_es();
    let env = Env::with(|c| c.es_endpoint = Some(es.url.clone()));
    assert_eq!(env.app.search.as_ref().unwrap().name(), "elasticsearch");

    // A bundle PUT through the API is indexed through `_bulk` (a background job).
    let data = std::fs::read(fixtures().join("example_bundle/donor_organism_0.json")).unwrap();
    let f = env.file("donor_organism_0.json", &data).await;
    let b = uuid::Uuid::new_v4().to_string();
    let body = json!({"creator_uid": 1, "files": [{"uuid": f, "version": V1, "name": "donor_organism_0.json", "indexed": true}]});
    let r = env
        .req(
            "PUT",
            &format!("/v1/bundles/{b}?version={V2}&replica=aws"),
            Some(&env.user()),
            &body.to_string(),
            &[],
        )
        .await;
    assert_eq!(r.status, 201);
    let mut bulk = None;
    for _ in 0..200 {
        bulk = es.received().into_iter().find(|r| r.path.starts_with("/_bulk"));
        if bulk.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bulk = bulk.expect("documents sent with _bulk");
    assert_eq!(bulk.path, "/_bulk?refresh=wait_for");
    let lines: Vec<Value> = bulk.body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        lines[0],
        json!({"index": {"_index": "dss-aws-docs", "_id": format!("{b}.{V2}")}})
    );
    assert_eq!(lines[1]["uuid"], b.as_str());
    assert_eq!(
        lines[1]["files"]["donor_organism_json"][0]["medical_history"]["smoking_history"],
        "yes"
    );

    // The index was created first, with the original's mapping.
    let first = &es.received()[0];
    assert_eq!((first.method.as_str(), first.path.as_str()), ("PUT", "/dss-aws-docs"));
    let mapping: Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(mapping, dss::search::es::mapping());
    assert_eq!(
        mapping["settings"]["analysis"]["normalizer"]["keyword_lowercase"]["filter"],
        json!(["lowercase"])
    );
    assert_eq!(
        mapping["mappings"]["dynamic_templates"][1]["short_strings"]["mapping"]["ignore_above"],
        256
    );

    // The query goes out as written, with the server's sort, size and _source.
    let query = json!({"query": {"bool": {"must": [{"match": {"files.donor_organism_json.medical_history.smoking_history": "yes"}}],
        "should": [{"fuzzy": {"uuid": "abc"}}]}}});
    let r = env
        .req(
            "POST",
            "/v1/search?replica=aws&per_page=10",
            None,
            &json!({"es_query": query}).to_string(),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-dss-search-partial"), None);
    let j = r.json();
    assert_eq!(j["total_hits"], 1);
    assert_eq!(j["results"][0]["bundle_fqid"], format!("{b}.{V2}").as_str());
    let sent = es.last_search();
    assert_eq!(sent.path, "/dss-aws-docs/_search");
    let sent: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(
        sent["query"], query["query"],
        "forwarded as written (even what tantivy lacks)"
    );
    assert_eq!(sent["_source"], false);
    assert_eq!(sent["size"], 10);
    assert_eq!(
        sent["sort"],
        json!([{"uuid": {"order": "desc"}}, {"manifest.version": {"missing": "_last", "order": "desc"}}])
    );

    // Paging: search_after goes out as the two sort values.
    let r = env
        .req(
            "POST",
            &format!("/v1/search?replica=aws&output_format=raw&search_after={b}%2C{V2}"),
            None,
            r#"{"es_query": {}}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["results"][0]["metadata"]["uuid"], b.as_str());
    let sent = es.last_search();
    let sent: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(sent["search_after"], json!([b, V2]));
    assert!(sent.get("_source").is_none());

    // A timed-out search is answered with what ES found, marked partial (never cached at the edge).
    let r = env
        .req(
            "POST",
            "/v1/search?replica=aws",
            None,
            r#"{"es_query": {"query": {"term": {"uuid": "slow-shard"}}}}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-dss-search-partial"), Some("true"));

    // An ES 400 is the client's: elasticsearch_bad_request with ES's reason.
    let r = env
        .req(
            "POST",
            "/v1/search?replica=aws",
            None,
            r#"{"es_query": {"query": {"bogus": {}}}}"#,
            &[],
        )
        .await;
    r.expect_error(400, "elasticsearch_bad_request");
    let title = r.json()["title"].as_str().unwrap().to_string();
    assert!(title.contains("unknown query [bogus]"), "{title}");
    assert!(!title.contains("secret") && !title.contains("127.0.0.1"), "{title}");
}

/// An Elasticsearch (or anything at its address) that answers without end: the answer is
/// read up to its cap, then refused, as a 500 whose title holds none of it.
#[tokio::test]
async fn an_oversized_elasticsearch_answer_is_an_error_not_an_oom() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://elastic:secret@{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            // No length: the body runs until the connection closes, past the cap.
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
            );
            let chunk = vec![b' '; 1024 * 1024];
            for _ in 0..dss::search::es::MAX_SEARCH_ANSWER_BYTES / chunk.len() + 2 {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
    });
    let env = Env::with(|c| c.es_endpoint = Some(url));
    let r = env
        .req("POST", "/v1/search?replica=aws", None, r#"{"es_query": {}}"#, &[])
        .await;
    r.expect_error(500, "internal_server_error");
    // The cause is in the log under the request id; the title is plain.
    let title = r.json()["title"].as_str().unwrap().to_string();
    assert!(r.header("x-request-id").is_some());
    assert!(
        title.len() < 200 && !title.contains("secret") && !title.contains("127.0.0.1"),
        "{title}"
    );
}

#[tokio::test]
async fn elasticsearch_down_is_503_with_retry_after() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::with(|c| c.es_endpoint = Some(format!("http://127.0.0.1:{port}")));
    let r = env
        .req("POST", "/v1/search?replica=aws", None, r#"{"es_query": {}}"#, &[])
        .await;
    r.expect_error(503, "service_unavailable");
    assert_eq!(r.header("retry-after"), Some("10"));
    let title = r.json()["title"].as_str().unwrap().to_string();
    assert!(
        !title.contains(&port.to_string()),
        "the transport's message is logged, not answered: {title}"
    );
}
