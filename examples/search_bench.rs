//! The search benchmark's two halves (driven by `scripts/bench-search`):
//!
//! - `search_bench index DATA_DIR COUNT`: builds COUNT synthetic bundles from the fixtures'
//!   example bundle (values varied per bundle) and indexes them into the embedded index of
//!   DATA_DIR in batches, timing the indexing; prints JSON.
//! - `search_bench query URL ROUNDS`: sends five representative queries to a running
//!   server's `POST /v1/search`, one at a time, ROUNDS times each; prints p50/p99 in JSON.

use dss::search::synthetic::Generator;
use dss::search::tantivy_engine::TantivyEngine;
use dss::search::{IndexOp, SearchEngine};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

const BATCH: u64 = 5_000;

// The server's allocator, so the engine is measured as `dss serve` runs it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn example_files() -> Vec<(String, Value)> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = here.join("../shared/fixtures/example_bundle");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("../shared/fixtures/example_bundle")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let v = serde_json::from_slice(&std::fs::read(dir.join(&n)).expect("read fixture")).expect("fixture JSON");
            (n, v)
        })
        .collect()
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let m = e.metadata().ok();
                    match m {
                        Some(m) if m.is_dir() => dir_size(&e.path()),
                        Some(m) => m.len(),
                        None => 0,
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn index(data: &Path, count: u64) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = dss::server::search_dir(data);
    let engine = TantivyEngine::open(&dir).expect("open index");
    let generator = Generator::new(example_files());
    let (mut indexing, mut generating) = (0.0f64, 0.0f64);
    let mut i = 0;
    while i < count {
        let t = Instant::now();
        let ops: Vec<IndexOp> = (i..(i + BATCH).min(count))
            .map(|n| {
                let (u, v, doc) = generator.bundle(n);
                IndexOp::Put {
                    id: format!("{u}.{v}"),
                    doc,
                }
            })
            .collect();
        generating += t.elapsed().as_secs_f64();
        let t = Instant::now();
        rt.block_on(engine.index("aws", ops)).expect("index");
        indexing += t.elapsed().as_secs_f64();
        i += BATCH;
        eprintln!("indexed {}/{count}", i.min(count));
    }
    println!(
        "{}",
        json!({
            "bundles": count, "index_seconds": indexing, "generate_seconds": generating,
            "bundles_per_second": count as f64 / indexing,
            "index_bytes": dir_size(&dir), "docs": engine.num_docs(),
        })
    );
}

fn queries() -> Vec<(&'static str, Value)> {
    vec![
        ("match_all (first page of 100)", json!({})),
        (
            "README bool of 3 matches (.text)",
            json!({"query": {"bool": {"must": [
                {"match": {"files.donor_organism_json.medical_history.smoking_history": "yes"}},
                {"match": {"files.specimen_from_organism_json.genus_species.text": "Homo sapiens"}},
                {"match": {"files.specimen_from_organism_json.organ.text": "brain"}}]}}}),
        ),
        (
            "term on a keyword",
            json!({"query": {"term": {"files.donor_organism_json.biological_sex": "female"}}}),
        ),
        (
            "range on a date + filter",
            json!({"query": {"bool": {"filter": [
                {"range": {"files.specimen_from_organism_json.collection_time": {"gte": "2018-01-01", "lt": "2018-02-01"}}},
                {"term": {"files.donor_organism_json.genus_species.text": "mus musculus"}}]}}}),
        ),
        (
            "match_phrase on text + prefix",
            json!({"query": {"bool": {"must": [
                {"match_phrase": {"files.specimen_from_organism_json.disease.text.text": "glioblastoma"}},
                {"prefix": {"files.project_json.project_core.project_shortname": "project-1"}}]}}}),
        ),
    ]
}

fn query(url: &str, rounds: usize) {
    let http = reqwest::blocking::Client::new();
    let mut out = Vec::new();
    for (name, q) in queries() {
        let body = json!({ "es_query": q }).to_string();
        let mut times = Vec::with_capacity(rounds);
        let mut total = Value::Null;
        for i in 0..rounds + 20 {
            let t = Instant::now();
            let r = http
                .post(format!("{url}/v1/search?replica=aws"))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .expect("search");
            let status = r.status();
            let j: Value = r.json().expect("JSON answer");
            let elapsed = t.elapsed().as_secs_f64() * 1000.0;
            assert!(status.is_success(), "{name}: {status} {j}");
            total = j["total_hits"].clone();
            if i >= 20 {
                times.push(elapsed);
            }
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
        out.push(
            json!({"query": name, "total_hits": total, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0)}),
        );
    }
    println!("{}", Value::Array(out));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("index") if args.len() == 4 => index(Path::new(&args[2]), args[3].parse().expect("COUNT")),
        Some("query") if args.len() == 4 => query(&args[2], args[3].parse().expect("ROUNDS")),
        _ => {
            eprintln!("usage: search_bench index DATA_DIR COUNT | search_bench query URL ROUNDS");
            std::process::exit(2);
        }
    }
}
