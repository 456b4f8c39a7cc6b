//! The embedded tantivy engine against the in-memory evaluator: a corpus of queries over
//! the fixture bundles (real metadata), tombstones and synthetic bundles must give the
//! same hits on both. Also the original's sample queries, and paging.

mod common;
use common::fixtures;
use dss::model::manifest::{BundleFile, BundleManifest, Tombstone};
use dss::search::budget::Budget;
use dss::search::document::{bundle_document, tombstone_document, tombstone_document_json};
use dss::search::dsl::parse_body;
use dss::search::eval::{Checked, EvalDoc};
use dss::search::synthetic::Generator;
use dss::search::tantivy_engine::TantivyEngine;
use dss::search::{IndexOp, SearchEngine, SearchError, SearchRequest};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;

const EXAMPLE_UUID: &str = "ce55fd51-7833-469b-be0b-5da88ebebfcd";
const EXAMPLE_VERSION: &str = "2018-07-23T000000.000000Z";

fn read_dir_json(dir: &Path) -> Vec<(String, Value)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json") && n != "manifest.json")
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let v = serde_json::from_slice(&std::fs::read(dir.join(&n)).unwrap()).unwrap();
            (n, v)
        })
        .collect()
}

fn manifest_for(version: &str, files: &[(String, Value)]) -> BundleManifest {
    let entries = files
        .iter()
        .enumerate()
        .map(|(i, (name, _))| BundleFile {
            name: name.clone(),
            uuid: format!("00000000-0000-4000-8000-{i:012}"),
            version: version.into(),
            content_type: "application/json".into(),
            size: 100,
            indexed: true,
            crc32c: "0".repeat(8),
            s3_etag: "0".repeat(32),
            sha1: "0".repeat(40),
            sha256: "0".repeat(64),
        })
        .collect();
    BundleManifest::new(version, entries, 0)
}

/// `(id, document)` of every bundle in the corpus.
fn corpus() -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    let example = read_dir_json(&fixtures().join("example_bundle"));
    docs.push((
        format!("{EXAMPLE_UUID}.{EXAMPLE_VERSION}"),
        bundle_document(EXAMPLE_UUID, &manifest_for(EXAMPLE_VERSION, &example), &example).unwrap(),
    ));
    for (i, sub) in ["smartseq2/paired_ends", "smartseq2/single_end", "10X_v2/pbmc8k"]
        .iter()
        .enumerate()
    {
        let files = read_dir_json(&fixtures().join("data-bundle-examples").join(sub));
        let uuid = format!("0000000{i}-1111-4000-8000-000000000000");
        let version = "2017-11-01T000000.000000Z";
        docs.push((
            format!("{uuid}.{version}"),
            bundle_document(&uuid, &manifest_for(version, &files), &files).unwrap(),
        ));
    }
    // Tombstones: the API's shape and the original's older one from the fixture bucket.
    let t = Tombstone {
        email: "admin@example.org".into(),
        reason: Some("withdrawn".into()),
        admin_deleted: true,
        version: None,
    };
    let tu = "deadbeef-0000-4a6b-8f0d-a7d2105c23be";
    docs.push((
        format!("{tu}.2017-12-05T235728.441373Z"),
        tombstone_document(tu, "2017-12-05T235728.441373Z", &t),
    ));
    let old: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("original-bucket/bundles/deadbeef-0000-4a6b-8f0d-a7d2105c23be.dead")).unwrap(),
    )
    .unwrap();
    docs.push((
        format!("{tu}.2017-12-05T235850.950361Z"),
        tombstone_document_json(tu, "2017-12-05T235850.950361Z", &old),
    ));
    // Odd values: long strings, mixed types at one path, empty strings, unicode.
    docs.push((
        "aaaaaaaa-0000-4000-8000-000000000001.2019-01-01T000000.000000Z".into(),
        json!({"uuid": "aaaaaaaa-0000-4000-8000-000000000001", "manifest": {"version": "2019-01-01T000000.000000Z"},
               "files": {"odd_json": [{"long": "word ".repeat(80), "mixed": ["10", 10, true, "2018-05-05"],
               "empty": "", "unicode": "Ünïcode Straße", "n": -3.5, "nested": {"deep": {"deeper": "Value"}}}]}}),
    ));
    let generator = Generator::new(read_dir_json(&fixtures().join("example_bundle")));
    for i in 0..300 {
        let (u, v, d) = generator.bundle(i);
        docs.push((format!("{u}.{v}"), d));
    }
    docs
}

fn queries() -> Vec<Value> {
    let d = "files.donor_organism_json";
    let s = "files.specimen_from_organism_json";
    vec![
        json!({}),
        json!({"query": {"match_all": {}}}),
        json!({"query": {"match_none": {}}}),
        // The original's README and tests.
        json!({"query": {"bool": {"must": [
            {"match": {format!("{d}.medical_history.smoking_history"): "yes"}},
            {"match": {format!("{s}.genus_species.text"): "Homo sapiens"}},
            {"match": {format!("{s}.organ.text"): "brain"}}]}}}),
        json!({"query": {"bool": {"must": [{"term": {"admin_deleted": true}}]}}}),
        json!({"query": {"terms": {"_id": [format!("{EXAMPLE_UUID}.{EXAMPLE_VERSION}"), "nope.x"]}}}),
        json!({"query": {"range": {format!("{d}.provenance.submission_date"): {"gte": "2018-06-01", "lt": "2019-01-01"}}}}),
        json!({"query": {"match": {format!("{d}.biomaterial_core.ncbi_taxon_id"): 9606}}}),
        json!({"query": {"match": {format!("{d}.genus_species.text.text"): "homo"}}}),
        json!({"query": {"match": {format!("{d}.genus_species.text.text"): {"query": "homo musculus", "operator": "and"}}}}),
        json!({"query": {"match": {format!("{d}.genus_species.text.text"): {"query": "homo mus musculus", "minimum_should_match": 2}}}}),
        json!({"query": {"match_phrase": {format!("{s}.genus_species.text.text"): "mus musculus"}}}),
        json!({"query": {"match_phrase": {"files.project_json.project_core.project_title.text": "single cell rna"}}}),
        json!({"query": {"multi_match": {"query": "brain", "fields": [format!("{s}.organ.text"), format!("{s}.disease.text.text")]}}}),
        json!({"query": {"term": {format!("{d}.biological_sex"): "Female"}}}),
        json!({"query": {"term": {format!("{d}.is_living"): false}}}),
        json!({"query": {"terms": {format!("{s}.organ.text"): ["brain", "LIVER", "nothing"]}}}),
        json!({"query": {"range": {format!("{s}.collection_time"): {"gt": "2018", "lte": "2019-06"}}}}),
        json!({"query": {"range": {format!("{s}.biomaterial_core.ncbi_taxon_id"): {"gte": 10000}}}}),
        json!({"query": {"range": {"files.project_json.project_core.project_shortname": {"gte": "project-5", "lt": "project-7"}}}}),
        json!({"query": {"range": {"manifest.version": {"gte": "2018-01-01T100000.000000Z"}}}}),
        json!({"query": {"exists": {"field": "admin_deleted"}}}),
        json!({"query": {"exists": {"field": "files.sample_json"}}}),
        json!({"query": {"bool": {"must_not": [{"exists": {"field": "files"}}]}}}),
        json!({"query": {"prefix": {"files.project_json.project_core.project_shortname": "project-1"}}}),
        json!({"query": {"prefix": {format!("{s}.disease.text.text"): "GLIO"}}}),
        json!({"query": {"wildcard": {format!("{s}.organ.text"): "*r?"}}}),
        json!({"query": {"wildcard": {"uuid": "0*"}}}),
        json!({"query": {"ids": {"values": [format!("{EXAMPLE_UUID}.{EXAMPLE_VERSION}")]}}}),
        json!({"query": {"term": {"uuid": EXAMPLE_UUID}}}),
        json!({"query": {"bool": {
            "should": [{"term": {format!("{s}.organ.text"): "brain"}}, {"term": {format!("{s}.organ.text"): "heart"}},
                       {"term": {format!("{d}.biological_sex"): "male"}}],
            "minimum_should_match": 2}}}),
        json!({"query": {"bool": {"filter": [{"term": {format!("{d}.biological_sex"): "male"}}],
            "should": [{"term": {format!("{s}.organ.text"): "brain"}}]}}}),
        json!({"query": {"bool": {"must_not": [{"term": {format!("{d}.biological_sex"): "male"}}],
            "should": [{"term": {format!("{s}.organ.text"): "brain"}}, {"term": {format!("{s}.organ.text"): "lung"}}]}}}),
        json!({"query": {"bool": {"should": [{"match_none": {}}], "minimum_should_match": 0}}}),
        json!({"query": {"constant_score": {"filter": {"term": {format!("{d}.medical_history.smoking_history"): "no"}}}}}),
        json!({"query": {"query_string": {"query": format!("{s}.organ.text:(brain OR heart) AND NOT {d}.biological_sex:male")}}}),
        json!({"query": {"query_string": {"query": "glioblastoma", "default_field": format!("{s}.disease.text.text")}}}),
        json!({"query": {"query_string": {"query": format!("{s}.collection_time:[2018-01-01 TO *] AND _exists_:files.project_json")}}}),
        json!({"query": {"query_string": {"query": "\"homo sapiens\"", "fields": [format!("{d}.genus_species.text.text")]}}}),
        // The odd document.
        json!({"query": {"term": {"files.odd_json.mixed": 10}}}),
        json!({"query": {"term": {"files.odd_json.mixed": "true"}}}),
        json!({"query": {"range": {"files.odd_json.mixed": {"gte": "2018-05-01", "lte": "2018-05-31"}}}}),
        json!({"query": {"term": {"files.odd_json.empty": ""}}}),
        json!({"query": {"exists": {"field": "files.odd_json.long"}}}),
        json!({"query": {"match": {"files.odd_json.long.text": "word"}}}),
        json!({"query": {"match": {"files.odd_json.unicode.text": "straße"}}}),
        json!({"query": {"match": {"files.odd_json.unicode": "ÜNÏCODE STRASSE"}}}),
        json!({"query": {"range": {"files.odd_json.n": {"lt": 0}}}}),
        json!({"query": {"exists": {"field": "files.odd_json.nested.deep"}}}),
        json!({"query": {"match": {"files.odd_json.nested.deep.deeper": "value"}}}),
        json!({"query": {"terms": {"shape_descriptor": ["v5", "None"]}}}),
    ]
}

async fn tantivy_ids(engine: &TantivyEngine, q: &Value, per_page: usize) -> (u64, Vec<String>) {
    let mut ids = Vec::new();
    let mut after = None;
    let mut total;
    loop {
        let page = engine
            .search(SearchRequest {
                replica: "aws",
                es_query: q,
                per_page,
                search_after: after.clone(),
                with_source: false,
                budget: Budget::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        total = page.total;
        let n = page.hits.len();
        if let Some(last) = page.hits.last() {
            after = Some(last.sort.clone());
        }
        ids.extend(page.hits.into_iter().map(|h| h.id));
        if n < per_page {
            break;
        }
    }
    (total, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tantivy_agrees_with_the_evaluator() {
    let dir = tempfile::tempdir().unwrap();
    let engine = TantivyEngine::open(dir.path()).unwrap();
    let docs = corpus();
    for chunk in docs.chunks(100) {
        let ops = chunk
            .iter()
            .map(|(id, doc)| IndexOp::Put {
                id: id.clone(),
                doc: doc.clone(),
            })
            .collect();
        engine.index("aws", ops).await.unwrap();
    }
    // The other replica's index holds one document that no aws search may find.
    engine
        .index(
            "gcp",
            vec![IndexOp::Put {
                id: docs[0].0.clone(),
                doc: docs[0].1.clone(),
            }],
        )
        .await
        .unwrap();
    let prepared: Vec<(&String, EvalDoc)> = docs.iter().map(|(id, d)| (id, EvalDoc::new(d, Some(id)))).collect();
    let mut nonempty = 0;
    for q in queries() {
        let mut body = parse_body(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
        let checked = Checked::new(&mut body).unwrap_or_else(|e| panic!("{q}: {e}"));
        let mut want: Vec<String> = prepared
            .iter()
            .filter(|(_, d)| d.matches(&checked))
            .map(|(id, _)| id.to_string())
            .collect();
        want.sort_by(|a, b| b.cmp(a));
        let (total, got) = tantivy_ids(&engine, &q, 500).await;
        assert_eq!(got, want, "query {q}");
        assert_eq!(total, want.len() as u64, "total of {q}");
        if !want.is_empty() && want.len() < docs.len() {
            nonempty += 1;
        }
    }
    assert!(nonempty >= 35, "most queries select a proper subset ({nonempty})");

    // The README's query finds the example bundle; admin_deleted finds exactly the tombstones.
    let readme = &queries()[3];
    let (_, ids) = tantivy_ids(&engine, readme, 100).await;
    assert!(ids.contains(&format!("{EXAMPLE_UUID}.{EXAMPLE_VERSION}")), "{ids:?}");
    let (_, dead) = tantivy_ids(&engine, &queries()[4], 100).await;
    assert_eq!(dead.len(), 1, "only the tombstone written by the API has admin_deleted");
    let (_, all_dead) = tantivy_ids(&engine, &json!({"query": {"prefix": {"uuid": "deadbeef"}}}), 100).await;
    assert_eq!(all_dead.len(), 2);

    // Paging at every page size returns each hit exactly once, in order.
    let all = json!({"query": {"match_all": {}}});
    for per_page in [10, 100, 500] {
        let (total, ids) = tantivy_ids(&engine, &all, per_page).await;
        assert_eq!(total, docs.len() as u64);
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), docs.len(), "per_page {per_page}");
        assert!(ids.windows(2).all(|w| w[0] > w[1]));
    }

    // Indexing the same documents again changes nothing; raw output returns the document.
    engine
        .index(
            "aws",
            vec![IndexOp::Put {
                id: docs[0].0.clone(),
                doc: docs[0].1.clone(),
            }],
        )
        .await
        .unwrap();
    let page = engine
        .search(SearchRequest {
            replica: "aws",
            es_query: &json!({"query": {"ids": {"values": [docs[0].0]}}}),
            per_page: 10,
            search_after: None,
            with_source: true,
            budget: Budget::new(),
        })
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.hits[0].source.as_ref(), Some(&docs[0].1));

    // Reopened from disk, the index answers the same.
    drop(engine);
    let engine = TantivyEngine::open(dir.path()).unwrap();
    let (total, _) = tantivy_ids(&engine, &all, 500).await;
    assert_eq!(total, docs.len() as u64);
}

/// Whether the evaluator accepts `q` (its parse and its clauses within one budget).
fn evaluator_accepts(q: &Value) -> Result<(), String> {
    let mut body = parse_body(q).map_err(|e| e.to_string())?;
    Checked::new(&mut body).map(|_| ()).map_err(|e| e.to_string())
}

/// Queries at and past the limits of the search budget: tantivy and the evaluator accept
/// and refuse the same ones, for the same reason.
#[tokio::test]
async fn tantivy_and_the_evaluator_refuse_the_same_queries() {
    let dir = tempfile::tempdir().unwrap();
    let engine = TantivyEngine::open(dir.path()).unwrap();
    let many_fields = |n: usize| (0..n).map(|i| format!("files.f{i}.text")).collect::<Vec<_>>();
    let words = |n: usize| vec!["w"; n].join(" ");
    let numbers: Vec<u32> = (0..4000).collect();
    let cases = [
        // The bombs.
        (
            json!({"query": {"query_string": {"query": words(500), "fields": many_fields(2000)}}}),
            false,
        ),
        (
            json!({"query": {"match": {"a.text": "word ".repeat(1_000_000)}}}),
            false,
        ),
        // Within the parse budget, past the clauses the engines would run: each of the
        // 4,000 numbers is a keyword, a number, a date (epoch milliseconds) and a token,
        // and each of the 4,000 words a token.
        (
            json!({"query": {"bool": {"should": [{"terms": {"files.n.text": numbers}},
                {"match": {"files.m.text": words(4000)}}]}}}),
            false,
        ),
        (
            json!({"query": {"multi_match": {"query": words(200), "fields": many_fields(100)}}}),
            false,
        ),
        // Large, ordinary queries.
        (
            json!({"query": {"terms": {"files.n": (0..1000).collect::<Vec<u32>>()}}}),
            true,
        ),
        (
            json!({"query": {"multi_match": {"query": words(30), "fields": many_fields(100)}}}),
            true,
        ),
        (
            json!({"query": {"query_string": {"query": words(100), "fields": many_fields(20)}}}),
            true,
        ),
    ];
    for (q, ok) in cases {
        let shown: String = q.to_string().chars().take(120).collect();
        let eval = evaluator_accepts(&q);
        let tantivy = engine
            .search(SearchRequest {
                replica: "aws",
                es_query: &q,
                per_page: 10,
                search_after: None,
                with_source: false,
                budget: Budget::new(),
            })
            .await;
        assert_eq!(eval.is_ok(), ok, "evaluator on {shown}: {eval:?}");
        match (tantivy, eval) {
            (Ok(_), Ok(())) => {}
            (Err(SearchError::BadRequest(t)), Err(e)) => {
                assert_eq!(t, e, "{shown}");
                assert!(t.contains("limit of"), "{shown}: {t}");
            }
            (t, e) => panic!("{shown}: tantivy {t:?}, evaluator {e:?}"),
        }
    }
}
