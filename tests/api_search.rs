//! `POST /v1/search` through the router: indexing after PUT, PATCH and DELETE, the
//! original's queries, the response shape, paging, tombstones, errors, and indexing jobs
//! resumed after a restart.

mod common;
use common::*;
use dss::search::synthetic::Generator;
use dss::search::IndexOp;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn readme_query() -> Value {
    json!({"es_query": {"query": {"bool": {"must": [
        {"match": {"files.donor_organism_json.medical_history.smoking_history": "yes"}},
        {"match": {"files.specimen_from_organism_json.genus_species.text": "Homo sapiens"}},
        {"match": {"files.specimen_from_organism_json.organ.text": "brain"}}]}}}})
}

fn tombstone_query() -> Value {
    json!({"es_query": {"query": {"bool": {"must": [{"term": {"admin_deleted": true}}]}}}})
}

async fn search(env: &Env, query: &str, body: &Value) -> Resp {
    env.req("POST", &format!("/v1/search?{query}"), None, &body.to_string(), &[])
        .await
}

fn fqids(r: &Resp) -> Vec<String> {
    r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["bundle_fqid"].as_str().unwrap().to_string())
        .collect()
}

/// Search until `pred` holds for the hits (indexing is a background job), at most 10 s.
async fn eventually(env: &Env, body: &Value, pred: impl Fn(&[String]) -> bool) -> Resp {
    for _ in 0..200 {
        let r = search(env, "replica=aws", body).await;
        assert!(
            r.status == 200 || r.status == 206,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        if pred(&fqids(&r)) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("search never satisfied the condition: {body}");
}

/// Upload the example bundle (every file indexed) and return its uuid.
async fn upload_example(env: &Env, version: &str) -> String {
    let dir = fixtures().join("example_bundle");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut files = Vec::new();
    for name in &names {
        let u = env.file(name, &std::fs::read(dir.join(name)).unwrap()).await;
        files.push(json!({"uuid": u, "version": V1, "name": name, "indexed": true}));
    }
    // A metadata file that is not JSON: skipped, the rest indexed.
    let bad = env.file("broken_0.json", b"{not json").await;
    files.push(json!({"uuid": bad, "version": V1, "name": "broken_0.json", "indexed": true}));
    let b = uuid::Uuid::new_v4().to_string();
    let r = env
        .req(
            "PUT",
            &format!("/v1/bundles/{b}?version={version}&replica=aws"),
            Some(&env.user()),
            &json!({"files": files, "creator_uid": 1}).to_string(),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    b
}

#[tokio::test]
async fn bundles_are_found_by_their_metadata_until_deleted() {
    let env = Env::new();
    let b = upload_example(&env, V2).await;
    let fqid = format!("{b}.{V2}");
    let r = eventually(&env, &readme_query(), |ids| ids.contains(&fqid)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-OpenAPI-Pagination"), Some("false"));
    assert_eq!(r.header("X-OpenAPI-Paginated-Content-Key"), Some("results"));
    assert!(r.header("link").is_none());
    let j = r.json();
    assert_eq!(j["es_query"], readme_query()["es_query"], "the query is echoed as sent");
    assert_eq!(j["total_hits"], 1);
    let hit = &j["results"][0];
    assert_eq!(hit["bundle_fqid"], fqid.as_str());
    assert_eq!(
        hit["bundle_url"],
        format!("http://dss.test/v1/bundles/{b}?version={V2}&replica=aws").as_str()
    );
    assert!(
        hit["search_score"].is_null(),
        "sorted by id, so no score (as the original)"
    );
    assert!(hit.get("metadata").is_none());

    // The other replica has its own index, which finds the bundle once it is copied there.
    let t = std::time::Instant::now();
    loop {
        let r = search(&env, "replica=gcp", &readme_query()).await;
        if r.json()["total_hits"] == 1 {
            assert_eq!(
                r.json()["results"][0]["bundle_url"],
                format!("http://dss.test/v1/bundles/{b}?version={V2}&replica=gcp").as_str()
            );
            break;
        }
        assert!(t.elapsed().as_secs() < 30, "not in gcp's index: {}", r.json());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The original's other queries: .text sub-fields, terms on _id, ranges on dates.
    for q in [
        json!({"match": {"files.donor_organism_json.genus_species.text.text": "sapiens"}}),
        json!({"terms": {"_id": [fqid.as_str()]}}),
        json!({"range": {"files.donor_organism_json.provenance.submission_date": {"gte": "2018-07-01", "lt": "2018-08-01"}}}),
        json!({"match": {"files.donor_organism_json.biomaterial_core.ncbi_taxon_id": 9606}}),
        json!({"term": {"manifest.version": V2}}),
        json!({"exists": {"field": "files.project_json.project_core.project_title"}}),
    ] {
        let r = search(&env, "replica=aws", &json!({"es_query": {"query": q}})).await;
        assert_eq!(fqids(&r), vec![fqid.clone()], "{q}");
    }
    let r = search(
        &env,
        "replica=aws",
        &json!({"es_query": {"query": {"exists": {"field": "files.broken_json"}}}}),
    )
    .await;
    assert_eq!(r.json()["total_hits"], 0, "unparsable JSON is skipped");

    // Raw output: the indexed document, and never more than 10 per page.
    let r = search(&env, "replica=aws&output_format=raw&per_page=11", &readme_query()).await;
    let hit = &r.json()["results"][0];
    assert_eq!(hit["metadata"]["uuid"], b.as_str());
    assert_eq!(hit["metadata"]["manifest"]["version"], V2);
    assert_eq!(hit["metadata"]["files"]["process_json"].as_array().unwrap().len(), 3);

    // PATCH makes a new version: indexed too, beside the first (documents are per version).
    let r = env
        .req(
            "PATCH",
            &format!("/v1/bundles/{b}?version={V2}&replica=aws"),
            Some(&env.user()),
            r#"{"remove_files": []}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let v3 = r.json()["version"].as_str().unwrap().to_string();
    let r = eventually(&env, &readme_query(), |ids| ids.len() == 2).await;
    assert_eq!(
        fqids(&r),
        vec![format!("{b}.{v3}"), fqid.clone()],
        "newest version first"
    );

    // Nothing is deleted yet.
    assert_eq!(
        search(&env, "replica=aws", &tombstone_query()).await.json()["total_hits"],
        0
    );
    // Tombstone the first version: its document is replaced by the tombstone's.
    let r = env
        .req(
            "DELETE",
            &format!("/v1/bundles/{b}?replica=aws&version={V2}"),
            Some(&env.admin()),
            r#"{"reason": "withdrawn"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    eventually(&env, &tombstone_query(), |ids| ids == [fqid.clone()]).await;
    eventually(&env, &readme_query(), |ids| ids == [format!("{b}.{v3}")]).await;
    let r = search(&env, "replica=aws&output_format=raw", &tombstone_query()).await;
    let meta = &r.json()["results"][0]["metadata"];
    assert_eq!(meta["reason"], "withdrawn");
    assert_eq!(meta["email"], ADMIN);
    assert_eq!(meta["manifest"], json!({"version": V2}));
    // Tombstone every version.
    let r = env
        .req(
            "DELETE",
            &format!("/v1/bundles/{b}?replica=aws"),
            Some(&env.admin()),
            r#"{"reason": "all gone"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    eventually(&env, &tombstone_query(), |ids| ids.len() == 2).await;
    eventually(&env, &readme_query(), |ids| ids.is_empty()).await;
}

#[tokio::test]
async fn paging_through_a_thousand_hits_returns_each_once() {
    let env = Env::new();
    let engine = env.app.search.clone().unwrap();
    let generator = Generator::new(
        std::fs::read_dir(fixtures().join("example_bundle"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                (name, serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap())
            })
            .collect(),
    );
    let ops: Vec<IndexOp> = (0..1000)
        .map(|i| {
            let (u, v, doc) = generator.bundle(i);
            IndexOp::Put {
                id: format!("{u}.{v}"),
                doc,
            }
        })
        .collect();
    engine.index("aws", ops).await.unwrap();
    let body = json!({"es_query": {"query": {"exists": {"field": "files.donor_organism_json"}}}});
    for per_page in [10usize, 100, 500] {
        let mut seen = Vec::new();
        let mut url = format!("/v1/search?replica=aws&per_page={per_page}");
        loop {
            let r = env.req("POST", &url, None, &body.to_string(), &[]).await;
            let j = r.json();
            assert_eq!(j["total_hits"], 1000);
            let ids = fqids(&r);
            assert!(ids.len() <= per_page);
            seen.extend(ids.iter().cloned());
            match r.header("link") {
                Some(link) => {
                    assert_eq!(r.status, 206);
                    assert_eq!(ids.len(), per_page);
                    assert_eq!(r.header("X-OpenAPI-Pagination"), Some("true"));
                    let next = link
                        .strip_prefix('<')
                        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                        .unwrap_or_else(|| panic!("Link {link}"));
                    assert!(next.starts_with("http://dss.test/v1/search?per_page="), "{next}");
                    assert!(next.contains("&replica=aws&search_after=") && next.ends_with("&output_format=summary"));
                    url = local_part(next);
                }
                None => {
                    assert_eq!(r.status, 200);
                    break;
                }
            }
        }
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(seen.len(), 1000, "per_page {per_page}");
        assert_eq!(unique.len(), 1000, "per_page {per_page}");
    }
    // The default page is 100; raw pages are 10.
    let r = search(&env, "replica=aws", &body).await;
    assert_eq!((r.status, fqids(&r).len()), (206, 100));
    let r = search(&env, "replica=aws&output_format=raw&per_page=500", &body).await;
    assert_eq!((r.status, fqids(&r).len()), (206, 10));
    assert!(r.header("link").unwrap().contains("per_page=10&"));
}

#[tokio::test]
async fn bad_searches_get_clear_400s() {
    let env = Env::new();
    let ok = json!({"es_query": {}});
    search(&env, "", &ok).await.expect_error(400, "illegal_arguments");
    search(&env, "replica=azure", &ok)
        .await
        .expect_error(400, "illegal_arguments");
    for pp in ["9", "501", "ten"] {
        search(&env, &format!("replica=aws&per_page={pp}"), &ok)
            .await
            .expect_error(400, "illegal_arguments");
    }
    search(&env, "replica=aws&output_format=xml", &ok)
        .await
        .expect_error(400, "illegal_arguments");
    let r = env.req("POST", "/v1/search?replica=aws", None, "{not json", &[]).await;
    r.expect_error(400, "illegal_arguments");
    search(&env, "replica=aws", &json!({"query": {}}))
        .await
        .expect_error(400, "illegal_arguments");
    search(&env, "replica=aws", &json!({"es_query": [1]}))
        .await
        .expect_error(400, "illegal_arguments");
    search(&env, "replica=aws&search_after=nocomma", &ok)
        .await
        .expect_error(400, "elasticsearch_bad_request");

    for (q, needle) in [
        (json!({"query": {"percolate": {"field": "query"}}}), "percolate"),
        (
            json!({"query": {"match": {"a": {"query": "x", "fuzziness": 1}}}}),
            "fuzziness",
        ),
        (json!({"aggs": {"x": {"terms": {"field": "uuid"}}}}), "aggs"),
        (json!({"query": {"bool": {"must": "x"}}}), "must"),
    ] {
        let r = search(&env, "replica=aws", &json!({ "es_query": q })).await;
        r.expect_error(400, "elasticsearch_bad_request");
        let title = r.json()["title"].as_str().unwrap().to_string();
        assert!(title.contains(needle), "{title}");
    }
    // Absurd nesting: refused by the DSL's depth limit, and beyond serde_json's own limit.
    let mut deep = json!({"match_all": {}});
    for _ in 0..40 {
        deep = json!({"bool": {"must": [deep]}});
    }
    let r = search(&env, "replica=aws", &json!({"es_query": {"query": deep}})).await;
    r.expect_error(400, "elasticsearch_bad_request");
    assert!(r.json()["title"].as_str().unwrap().contains("nested deeper"));
    let absurd = format!(
        "{{\"es_query\": {{\"query\": {}{}}}}}",
        "{\"bool\": {\"must\": [".repeat(300),
        "]}}".repeat(300)
    );
    let r = env.req("POST", "/v1/search?replica=aws", None, &absurd, &[]).await;
    r.expect_error(400, "illegal_arguments");

    let r = env.get("/v1/search?replica=aws").await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn index_jobs_recorded_before_a_crash_are_resumed() {
    // A data dir holding the original's bucket and two index job records, as a server
    // of an earlier version that stopped before indexing would leave it.
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("original-bucket"), &dir.path().join("aws/main"));
    let pending = dir.path().join("jobs/index/pending");
    std::fs::create_dir_all(&pending).unwrap();
    for key in [
        "bundles/011c7340-9b3c-4d62-bf49-090d79daf198.2017-06-20T214506.766634Z",
        "bundles/deadbeef-0000-4a6b-8f0d-a7d2105c23be.dead",
    ] {
        let name = format!("aws.{}.json", key.strip_prefix("bundles/").unwrap());
        std::fs::write(pending.join(name), json!({"replica": "aws", "key": key}).to_string()).unwrap();
    }
    let env = Env::in_dir(dir, |_| {});
    let all = json!({"es_query": {}});
    let r = eventually(&env, &all, |ids| ids.len() == 3).await;
    assert_eq!(
        fqids(&r),
        vec![
            "deadbeef-0000-4a6b-8f0d-a7d2105c23be.2017-12-05T235850.950361Z",
            "deadbeef-0000-4a6b-8f0d-a7d2105c23be.2017-12-05T235728.441373Z",
            "011c7340-9b3c-4d62-bf49-090d79daf198.2017-06-20T214506.766634Z",
        ]
    );
    // The original's older tombstone format is indexed as it is.
    let r = search(
        &env,
        "replica=aws",
        &json!({"es_query": {"query": {"term": {"reason": "test"}}}}),
    )
    .await;
    assert_eq!(r.json()["total_hits"], 2);
    // The records moved into the queue, where both jobs completed.
    assert_eq!(std::fs::read_dir(&pending).unwrap().count(), 0, "old records removed");
    assert_eq!(env.jobs_completed("index", 10).await.len(), 2);
}

/// Serves fixed JSON documents by path over HTTP/1.1 (one request per connection); the
/// counter counts the requests it received.
fn static_server(routes: Vec<(&'static str, Value)>) -> (String, Arc<AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap_or(0);
            let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let (status, body) = match routes.iter().find(|(p, _)| *p == path) {
                Some((_, v)) => (200, v.to_string()),
                None => (404, "{}".to_string()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, hits)
}

#[tokio::test]
async fn schema_scrubbing_when_asked_for_drops_undeclared_properties() {
    let (schemas, _) = static_server(vec![
        (
            "/type/biomaterial/5.2.1/donor_organism",
            json!({"type": "object", "additionalProperties": false, "properties": {
                "describedBy": {"type": "string"}, "schema_type": {"type": "string"},
                "medical_history": {"$ref": "module/medical_history.json"},
                "genus_species": {"type": "array", "items": {"$ref": "#/definitions/ontology"}}},
                "definitions": {"ontology": {"type": "object", "additionalProperties": false,
                    "properties": {"text": {"type": "string"}}}}}),
        ),
        (
            "/type/biomaterial/5.2.1/module/medical_history.json",
            json!({"type": "object", "additionalProperties": false, "properties": {"smoking_history": {}}}),
        ),
    ]);
    let donor = json!({
        "describedBy": format!("{schemas}/type/biomaterial/5.2.1/donor_organism"),
        "schema_type": "biomaterial", "undeclared": "x",
        "medical_history": {"smoking_history": "yes", "extra": 1},
        "genus_species": [{"text": "Homo sapiens", "ontology": "NCBI:9606"}],
    });
    let unknown = json!({"describedBy": format!("{schemas}/type/nowhere/1.0.0/thing"), "a": 1});
    let plain = json!({"links": []});
    for scrub in [true, false] {
        let env = Env::with(|c| {
            c.index_schema_scrub = if scrub { "on" } else { "off" }.into();
            // Plain http on loopback, allowed because it is listed so.
            c.index_schema_hosts = schemas.clone();
        });
        let mut files = Vec::new();
        for (name, doc) in [
            ("donor_organism_0.json", &donor),
            ("thing_0.json", &unknown),
            ("links.json", &plain),
        ] {
            let u = env.file(name, doc.to_string().as_bytes()).await;
            files.push(json!({"uuid": u, "version": V1, "name": name, "indexed": true}));
        }
        let b = uuid::Uuid::new_v4().to_string();
        let r = env
            .req(
                "PUT",
                &format!("/v1/bundles/{b}?version={V2}&replica=aws"),
                Some(&env.user()),
                &json!({"files": files, "creator_uid": 1}).to_string(),
                &[],
            )
            .await;
        assert_eq!(r.status, 201);
        eventually(&env, &json!({"es_query": {}}), |ids| ids.len() == 1).await;
        let r = search(&env, "replica=aws&output_format=raw", &json!({"es_query": {}})).await;
        let indexed = &r.json()["results"][0]["metadata"]["files"];
        if scrub {
            assert_eq!(
                indexed,
                &json!({"donor_organism_json": [{
                    "describedBy": donor["describedBy"], "schema_type": "biomaterial",
                    "medical_history": {"smoking_history": "yes"},
                    "genus_species": [{"text": "Homo sapiens"}]}]}),
                "undeclared properties dropped; files without a reachable schema left out"
            );
        } else {
            assert_eq!(
                indexed["donor_organism_json"][0], donor,
                "off by default: indexed as it is"
            );
            assert_eq!(indexed["thing_json"][0], unknown);
            assert_eq!(indexed["links_json"][0], plain);
        }
    }
}

/// A `describedBy` (or a `$ref`) naming a host that DSS_INDEX_SCHEMA_HOSTS does not list is
/// never requested, whatever it points to: the file is left out of the index instead.
#[tokio::test]
async fn schema_urls_from_metadata_reach_only_the_listed_hosts() {
    // Schema URLs carry a version, as the index document's shape needs.
    let (elsewhere, elsewhere_hits) = static_server(vec![(
        "/type/file/1.0.0/s",
        json!({"type": "object", "additionalProperties": false, "properties": {"describedBy": {}}}),
    )]);
    let (listed, listed_hits) = static_server(vec![(
        "/type/file/1.0.0/refers",
        json!({"$ref": format!("{elsewhere}/type/file/1.0.0/s")}),
    )]);
    let env = Env::with(|c| {
        c.index_schema_scrub = "on".into();
        c.index_schema_hosts = format!("schema.humancellatlas.org, {listed}");
    });
    let mut files = Vec::new();
    for (name, url) in [
        ("loopback_0.json", format!("{elsewhere}/type/file/1.0.0/s")),
        (
            "metadata_0.json",
            "http://169.254.169.254/type/file/1.0.0/meta-data".to_string(),
        ),
        ("refers_0.json", format!("{listed}/type/file/1.0.0/refers")),
    ] {
        let doc = json!({"describedBy": url, "secret": "x"});
        let u = env.file(name, doc.to_string().as_bytes()).await;
        files.push(json!({"uuid": u, "version": V1, "name": name, "indexed": true}));
    }
    let b = uuid::Uuid::new_v4().to_string();
    let r = env
        .req(
            "PUT",
            &format!("/v1/bundles/{b}?version={V2}&replica=aws"),
            Some(&env.user()),
            &json!({"files": files, "creator_uid": 1}).to_string(),
            &[],
        )
        .await;
    assert_eq!(r.status, 201);
    eventually(&env, &json!({"es_query": {}}), |ids| ids.len() == 1).await;
    let r = search(&env, "replica=aws&output_format=raw", &json!({"es_query": {}})).await;
    let indexed = &r.json()["results"][0]["metadata"]["files"];
    assert!(indexed.get("loopback_json").is_none(), "{indexed}");
    assert!(indexed.get("metadata_json").is_none(), "{indexed}");
    assert!(
        indexed.get("refers_json").is_some(),
        "its own schema was fetched: {indexed}"
    );
    assert_eq!(listed_hits.load(Ordering::SeqCst), 1, "the listed host is asked once");
    assert_eq!(
        elsewhere_hits.load(Ordering::SeqCst),
        0,
        "a host that is not listed is never asked, not even through a $ref"
    );
}

/// The search bombs of issue 9, built here: a 23 KB `query_string` over 2,000 fields ×
/// 500 words (it drove the server from 20 MB to 1.7 GB), a `match` of a million words
/// (1.6 GB; now past the route's body limit, so one of 200,000), and a body of 100,000
/// JSON values. Each is refused with a 400 that names
/// the limit it passed, and ordinary large queries still run.
#[tokio::test]
async fn search_bombs_are_refused_naming_the_limit() {
    let env = Env::new();
    let fields: Vec<String> = (0..2000).map(|i| format!("f{i}")).collect();
    let words = vec!["w"; 500].join(" ");
    let qs_bomb = json!({"es_query": {"query": {"query_string": {"query": words, "fields": fields}}}});
    assert!(qs_bomb.to_string().len() < 24_000, "a small request");
    // 200,000 words fit the route's 1 MiB body limit; the million words of the issue do not.
    let match_bomb = json!({"es_query": {"query": {"match": {"files.x.text": "word ".repeat(200_000)}}}});
    let huge = json!({"es_query": {"query": {"match": {"files.x.text": "word ".repeat(1_000_000)}}}});
    search(&env, "replica=aws", &huge)
        .await
        .expect_error(413, "payload_too_large");
    let values: Vec<u32> = (0..100_000).collect();
    let values_bomb = json!({"es_query": {"query": {"terms": {"n": values}}}});
    for (bomb, limit) in [
        (&qs_bomb, "limit of 16384 clauses"),
        (&match_bomb, "limit of 4096 tokens"),
        (&values_bomb, "limit of 65536 JSON values"),
    ] {
        let r = search(&env, "replica=aws", bomb).await;
        r.expect_error(400, "elasticsearch_bad_request");
        let title = r.json()["title"].as_str().unwrap().to_string();
        assert!(title.contains(limit), "{title}");
    }
    // Large, ordinary queries are within the limits.
    let uuids: Vec<String> = (0..2000).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let fields: Vec<String> = (0..50).map(|i| format!("files.f{i}.text")).collect();
    for q in [
        json!({"terms": {"uuid": uuids}}),
        json!({"multi_match": {"query": "homo sapiens brain tissue", "fields": fields}}),
        json!({"query_string": {"query": vec!["w"; 100].join(" "), "fields": &fields[..10]}}),
    ] {
        let r = search(&env, "replica=aws", &json!({"es_query": {"query": q}})).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
}

/// A search still running at its deadline is answered 504 `timed_out` (with the original's
/// Retry-After). The deadline is set to zero here rather than timing a slow search; a
/// refused query is still refused first, without waiting for a search thread.
#[tokio::test]
async fn a_search_past_its_deadline_is_504_timed_out() {
    let env = Env::with(|c| c.search_timeout = 0.0);
    let r = search(&env, "replica=aws", &readme_query()).await;
    r.expect_error(504, "timed_out");
    assert_eq!(r.header("retry-after"), Some("10"));
    assert!(r.json()["title"].as_str().unwrap().contains("DSS_SEARCH_TIMEOUT"));
    let r = search(
        &env,
        "replica=aws",
        &json!({"es_query": {"query": {"percolate": {"field": "query"}}}}),
    )
    .await;
    r.expect_error(400, "elasticsearch_bad_request");
}
