//! The event journal benchmark (`scripts/bench-events` runs it), in one process, on a
//! temp data directory (replica `aws` in the data directory, search off, no job runner:
//! `dss::server::assemble`, so compaction runs only when this bench calls it):
//!
//! 1. **setup**: N events put straight into the journal, as the record job writes them
//!    but without bundle PUTs (too slow for 100,000): for each, a bundle metadata document
//!    of 2–4 KB (`event_type`, `bundle_info`, a manifest of 3–7 files, the donor, specimen
//!    and project documents, values varied), serialised as the record job does
//!    (`pyjson::dumps`), written as a one-event journal (`Bucket::put_event`) and added
//!    to the index (`EventIndex::record_event`) with strictly increasing timestamps spread
//!    over one simulated year (2024), 64 at a time;
//! 2. **listing, one-event journals vs compacted**: the time to walk every event with
//!    `GET /v1/events?replica=aws&per_page=10`, following the `Link` tokens to the 200
//!    (events counted, must be N; order checked), and the latency of one page from a
//!    random `from_date` in the year (p50/p99 over PAGES requests); then compaction
//!    (`Journaller::compact`, called until nothing is left to pack; its time, events/s, and
//!    each call's time), then the same again; ratios compacted / uncompacted; beside,
//!    the index read behind a page alone (`EventIndex::event_entries` with the limit a
//!    page of 10 streams uses, `entries_for(10)` = 11,000 rows, and with 11);
//! 3. **seek independence**: the page latency from a `from_date` in the first 1% of the
//!    events beside one from the last place a full page still follows (the index seeks;
//!    nothing should scan), in both states (with fewer than about 13,000 events that
//!    place is near the start too: use 100,000);
//! 4. **replay**: every compacted stream downloaded by its `stream_url` (this server's
//!    `/blob/...` route, called in-process), cut at the listed offsets, each event parsed
//!    as JSON: MB/s and events/s; beside `GET /v1/events/{uuid}?version=` one event at a
//!    time for a sample (SAMPLE events, random) in both states, and the one-event streams
//!    of the uncompacted listing downloaded one by one (same sample size): per-event
//!    cost ratios.
//!
//! Requests go through the app's router (`NativeApp::handle`) as the tests make them:
//! no sockets, so the figures are the server's work plus the client's JSON parsing.
//!
//! `events_bench [EVENTS] [PAGES] [SAMPLE]` (defaults 100000, 200, 2000) prints a
//! plain-text summary.

use bytes::Bytes;
use dss::jobs::events::{CompactJob, Journaller};
use dss::jobs::queue::journal::{EventIndex, Recorded};
use dss::jobs::queue::runner::Outcome;
use dss::jobs::queue::AnyQueue;
use dss::model::event::{entries_for, Cursor, EventEntry};
use dss::search::synthetic::Rng;
use dss::server::{assemble, NativeApp, ServeConfig};
use futures::StreamExt;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::{arg, call, init_logging, latency_line, mean, mib, pct, thousands, Resp};

// The server's allocator, so the work is measured as `dss serve` runs it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const API: &str = "http://dss.test";
const REPLICA: &str = "aws";
/// Far longer than the bench: compaction packs everything when called (the simulated
/// year is long past) and nothing else would start it anyway (no job runner).
const COMPACT_AFTER: u64 = 86_400;
/// Streams per page, the API's most.
const PER_PAGE: usize = 10;
/// Events written at once during the setup.
const SETUP_CONCURRENCY: usize = 64;
/// How long a compaction's garbage is kept (as `Journaller` sets it, for the default URL
/// life of an hour).
fn grace_secs() -> i64 {
    dss::model::event::grace(std::time::Duration::from_secs(3600)).as_secs() as i64
}

const ORGANS: &[&str] = &[
    "brain", "heart", "liver", "kidney", "lung", "spleen", "pancreas", "skin",
];
const DISEASES: &[&str] = &["glioblastoma", "normal", "carcinoma", "fibrosis", "diabetes"];
const SPECIES: &[(&str, u64)] = &[("Homo sapiens", 9606), ("Mus musculus", 10090)];
const SEXES: &[&str] = &["male", "female", "unknown", "mixed"];
/// Files a bundle may have: (name, dcp-type, indexed).
const FILES: &[(&str, &str, bool)] = &[
    ("cell_suspension_0.json", "metadata/biomaterial", true),
    ("donor_organism_0.json", "metadata/biomaterial", true),
    ("specimen_from_organism_0.json", "metadata/biomaterial", true),
    ("project_0.json", "metadata/project", true),
    ("links.json", "metadata/links", true),
    ("sequence_file_0.json", "metadata/file", true),
    ("R1.fastq.gz", "data", false),
    ("R2.fastq.gz", "data", false),
];

/// µs since the epoch as a DSS_VERSION.
fn dss_version(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .expect("a time in range")
        .format("%Y-%m-%dT%H%M%S.%6fZ")
        .to_string()
}

/// A bundle's metadata document as the record job builds it (`metadata_document`):
/// `event_type`, `bundle_info`, the manifest, and the indexed files' documents by type.
fn document(r: &mut Rng, uuid: &str, version: &str) -> Value {
    let (species, taxon) = SPECIES[r.below(SPECIES.len() as u64) as usize];
    let organ = r.pick(ORGANS);
    let project = format!("project-{}", r.below(97));
    let donor_id = format!("donor-{}", r.hex(8));
    let file_version = dss_version(1_500_000_000_000_000 + (r.below(200_000_000) * 1_000_000) as i64);
    let donor = json!({
        "describedBy": "https://schema.humancellatlas.org/type/biomaterial/15.3.0/donor_organism",
        "schema_type": "biomaterial",
        "biomaterial_core": {"biomaterial_id": donor_id, "ncbi_taxon_id": [taxon]},
        "genus_species": [{"text": species, "ontology": if taxon == 9606 { "NCBITaxon:9606" } else { "NCBITaxon:10090" }}],
        "biological_sex": r.pick(SEXES),
        "is_living": r.below(2) == 0,
        "organism_age": (r.below(80) + 1).to_string(),
        "organism_age_unit": {"text": "year", "ontology": "UO:0000036"},
        "medical_history": {"smoking_history": if r.below(3) == 0 { "yes" } else { "no" }},
        "provenance": {"document_id": r.uuid(), "submission_date": "2019-05-15T09:40:38.092Z"},
    });
    let specimen = json!({
        "describedBy": "https://schema.humancellatlas.org/type/biomaterial/10.4.0/specimen_from_organism",
        "schema_type": "biomaterial",
        "biomaterial_core": {"biomaterial_id": format!("specimen-{}", r.hex(8)), "ncbi_taxon_id": [taxon]},
        "organ": {"text": organ, "ontology": format!("UBERON:{:07}", r.below(2_000_000))},
        "disease": [{"text": r.pick(DISEASES)}],
        "collection_time": format!("20{:02}-{:02}-{:02}", 17 + r.below(3), 1 + r.below(12), 1 + r.below(28)),
        "provenance": {"document_id": r.uuid(), "submission_date": "2019-05-15T09:40:38.092Z"},
    });
    let project_doc = json!({
        "describedBy": "https://schema.humancellatlas.org/type/project/14.1.0/project",
        "schema_type": "project",
        "project_core": {
            "project_shortname": project,
            "project_title": format!("A single-cell atlas of the {organ}, {}", r.hex(12)),
        },
        "provenance": {"document_id": r.uuid(), "submission_date": "2019-05-15T09:40:38.092Z"},
    });
    // 3 to 7 files: the donor, specimen and project always, then some of the rest.
    let mut chosen = vec![1usize, 2, 3];
    let extra = r.below(5) as usize;
    for k in [0usize, 4, 5, 6, 7].into_iter().take(extra) {
        chosen.push(k);
    }
    chosen.sort_unstable();
    let files: Vec<Value> = chosen
        .iter()
        .map(|&k| {
            let (name, dcp, indexed) = FILES[k];
            let content_type = if indexed {
                format!("application/json; dcp-type=\"{dcp}\"")
            } else {
                "application/gzip; dcp-type=data".to_string()
            };
            json!({
                "name": name,
                "uuid": r.uuid(),
                "version": file_version,
                "content-type": content_type,
                "size": if indexed { 500 + r.below(4000) } else { 1_000_000 + r.below(1_000_000_000) },
                "indexed": indexed,
                "crc32c": r.hex(8),
                "s3-etag": r.hex(32),
                "sha1": r.hex(40),
                "sha256": r.hex(64),
            })
        })
        .collect();
    json!({
        "event_type": "CREATE",
        "bundle_info": {"uuid": uuid, "version": version},
        "manifest": {"format": "0.0.1", "version": version, "files": files, "creator_uid": 12},
        "files": {
            "donor_organism_json": [donor],
            "specimen_from_organism_json": [specimen],
            "project_json": [project_doc],
        },
    })
}

/// One event of the setup: its bundle and when it was recorded (µs since the epoch).
struct Written {
    uuid: String,
    version: String,
    at: i64,
}

/// Path and query of an absolute URL, to send it back through the router.
fn local_part(u: &str) -> String {
    let u = url::Url::parse(u).unwrap_or_else(|e| panic!("not a URL ({e}): {u}"));
    match u.query() {
        Some(q) => format!("{}?{}", u.path(), q),
        None => u.path().to_string(),
    }
}

fn json_of(r: &Resp, what: &str) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", String::from_utf8_lossy(&r.body)))
}

/// A stream of a listing, as a client keeps it to download it.
struct StreamRef {
    url: String,
    size: u64,
    /// `(offset, size)` of each event.
    events: Vec<(u64, u64)>,
}

fn stream_ref(s: &Value) -> StreamRef {
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("stream without {k}: {v}"));
    StreamRef {
        url: s["stream_url"]
            .as_str()
            .unwrap_or_else(|| panic!("stream without stream_url: {s}"))
            .to_string(),
        size: n(s, "size"),
        events: s["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (n(e, "offset"), n(e, "size")))
            .collect(),
    }
}

/// A walk over the whole listing.
struct Walk {
    secs: f64,
    pages: usize,
    streams: usize,
    events: usize,
    /// Each page's latency (request to parsed body), ms.
    page_ms: Vec<f64>,
    /// The first `keep` streams.
    kept: Vec<StreamRef>,
    /// Distinct journals seen.
    journals: usize,
}

/// Walk every event of the listing, `per_page` streams a page, following the `Link`s;
/// checks that the events come in strict `(timestamp, event_id)` order.
async fn walk(app: &NativeApp, per_page: usize, keep: usize) -> Walk {
    let mut next = format!("/v1/events?replica={REPLICA}&per_page={per_page}");
    let (mut pages, mut streams, mut events) = (0usize, 0usize, 0usize);
    let mut page_ms = Vec::new();
    let mut kept = Vec::new();
    let mut last: Option<(String, String)> = None;
    let mut journals = std::collections::HashSet::new();
    let start = Instant::now();
    loop {
        let (r, page, ms) = page_at(app, &next).await;
        page_ms.push(ms);
        pages += 1;
        let list = page["event_streams"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {next}: no event_streams"));
        for s in list {
            streams += 1;
            journals.insert(s["journal_id"].as_str().unwrap_or_default().to_string());
            for e in s["events"].as_array().into_iter().flatten() {
                let key = (
                    e["timestamp"].as_str().unwrap_or_default().to_string(),
                    e["event_id"].as_str().unwrap_or_default().to_string(),
                );
                if let Some(prev) = &last {
                    assert!(*prev < key, "events out of order or repeated: {prev:?} then {key:?}");
                }
                last = Some(key);
                events += 1;
            }
            if kept.len() < keep {
                kept.push(stream_ref(s));
            }
        }
        if r.status == 200 {
            assert!(r.headers.get("link").is_none(), "a 200 with a Link");
            break;
        }
        let link = r
            .headers
            .get("link")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("GET {next}: a 206 without a Link"));
        let url = dss::cli::events::next_link(link).unwrap_or_else(|| panic!("Link not <url>; rel='next': {link}"));
        next = local_part(&url);
    }
    Walk {
        secs: start.elapsed().as_secs_f64(),
        pages,
        streams,
        events,
        page_ms,
        kept,
        journals: journals.len(),
    }
}

/// GET the listing page `uri` (200 or 206): the response, its JSON, and how long both
/// took (ms).
async fn page_at(app: &NativeApp, uri: &str) -> (Resp, Value, f64) {
    let t = Instant::now();
    let r = call(app, "GET", uri, None, String::new()).await;
    assert!(
        r.status == 200 || r.status == 206,
        "GET {uri}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    let page = json_of(&r, uri);
    (r, page, t.elapsed().as_secs_f64() * 1000.0)
}

/// The latency (ms) of one page of `per_page` streams from each of `dates`, and the events
/// the pages held in all.
async fn pages_from(app: &NativeApp, dates: &[String], per_page: usize) -> (Vec<f64>, usize) {
    let mut ms = Vec::with_capacity(dates.len());
    let mut events = 0;
    for d in dates {
        let uri = format!("/v1/events?replica={REPLICA}&per_page={per_page}&from_date={d}");
        let (_, page, took) = page_at(app, &uri).await;
        ms.push(took);
        events += page["event_streams"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["events"].as_array().map_or(0, Vec::len))
            .sum::<usize>();
    }
    (ms, events)
}

/// The latency (ms) of the index read behind one page, `EventIndex::event_entries` with
/// `limit`, from each of `dates`.
async fn index_reads(queue: &AnyQueue, dates: &[String], limit: usize) -> Vec<f64> {
    let mut ms = Vec::with_capacity(dates.len());
    for d in dates {
        let t = Instant::now();
        let rows = queue
            .event_entries(REPLICA, &Cursor::at(d), None, limit)
            .await
            .expect("event_entries");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(rows);
    }
    ms
}

/// `n` random dates (DSS_VERSIONs) between the times of events `lo` and `hi` (indices).
fn dates_between(rng: &mut Rng, written: &[Written], lo: usize, hi: usize, n: usize) -> Vec<String> {
    let hi = hi.clamp(1, written.len()) - 1;
    let lo = lo.min(hi);
    let (a, b) = (written[lo].at, written[hi].at);
    (0..n)
        .map(|_| dss_version(a + rng.below((b - a).max(1) as u64) as i64))
        .collect()
}

/// Download `streams` by their URLs and cut and parse every event: (seconds, bytes, events).
async fn replay(app: &NativeApp, streams: &[StreamRef]) -> (f64, u64, usize) {
    let (mut bytes, mut events) = (0u64, 0usize);
    let start = Instant::now();
    for s in streams {
        let uri = local_part(&s.url);
        let r = call(app, "GET", &uri, None, String::new()).await;
        assert_eq!(
            r.status,
            200,
            "GET {uri}: {}",
            String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
        );
        assert_eq!(r.body.len() as u64, s.size, "a stream's size is its object's length");
        bytes += r.body.len() as u64;
        for &(off, size) in &s.events {
            let doc = r
                .body
                .get(off as usize..(off + size) as usize)
                .unwrap_or_else(|| panic!("event at {off}+{size} past the stream's end ({})", r.body.len()));
            let v: Value = serde_json::from_slice(doc).unwrap_or_else(|e| panic!("an event is not JSON: {e}"));
            assert_eq!(v["event_type"], "CREATE");
            events += 1;
        }
    }
    (start.elapsed().as_secs_f64(), bytes, events)
}

/// `GET /v1/events/{uuid}?version=` for each of `sample`: (seconds, bytes).
async fn one_by_one(app: &NativeApp, written: &[Written], sample: &[usize]) -> (f64, u64) {
    let mut bytes = 0u64;
    let start = Instant::now();
    for &i in sample {
        let w = &written[i];
        let uri = format!("/v1/events/{}?replica={REPLICA}&version={}", w.uuid, w.version);
        let r = call(app, "GET", &uri, None, String::new()).await;
        assert_eq!(r.status, 200, "GET {uri}: {}", String::from_utf8_lossy(&r.body));
        let v = json_of(&r, &uri);
        assert_eq!(v["bundle_info"]["uuid"], w.uuid.as_str());
        bytes += r.body.len() as u64;
    }
    (start.elapsed().as_secs_f64(), bytes)
}

/// Files and bytes under `dir` (not following links).
fn du(dir: &Path) -> (usize, u64) {
    let (mut files, mut bytes) = (0usize, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => {
                    files += 1;
                    bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Put `n` events into the journal (one-event journals, pending compaction), 64 at a time.
async fn setup(app: &NativeApp, queue: &AnyQueue, n: usize) -> (Vec<Written>, u64) {
    let replica = app.replica(REPLICA).expect("replica aws");
    let bucket = app.bucket(replica);
    // One simulated year from 2024-01-01, evenly spread with jitter, strictly increasing.
    let start_us = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("2024-01-01")
        .and_utc()
        .timestamp_micros();
    let year_us: i64 = 365 * 86_400 * 1_000_000;
    let step = year_us / n.max(1) as i64;
    assert!(step >= 2, "too many events for one year of microseconds");
    let mut rng = Rng(0xE7E7);
    let written: Vec<Written> = (0..n)
        .map(|i| {
            let at = start_us + step * i as i64 + rng.below((step / 2) as u64) as i64;
            // The bundle version: written up to a minute before its event was recorded.
            let version = dss_version(at - 1 - rng.below(60_000_000) as i64);
            Written {
                uuid: rng.uuid(),
                version,
                at,
            }
        })
        .collect();
    let garbage_after = chrono::Utc::now().timestamp() + grace_secs();
    let bytes = std::sync::atomic::AtomicU64::new(0);
    let bucket = &bucket;
    let bytes_ref = &bytes;
    futures::stream::iter(written.iter().enumerate())
        .map(|(i, w)| async move {
            let mut r = Rng(0xD0C ^ (i as u64).wrapping_mul(0x1000_0001));
            let doc = Bytes::from(dss::model::pyjson::dumps(&document(&mut r, &w.uuid, &w.version)));
            bytes_ref.fetch_add(doc.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let id = dss::model::event::event_id(&w.uuid, &w.version);
            let ts = dss_version(w.at);
            let size = doc.len() as u64;
            bucket
                .put_event(&id, doc)
                .await
                .unwrap_or_else(|e| panic!("put_event {id}: {e}"));
            let entry = EventEntry {
                event_id: id.clone(),
                timestamp: ts,
                journal: id.clone(),
                offset: 0,
                size,
                journal_size: size,
            };
            match queue.record_event(REPLICA, &entry, garbage_after).await {
                Ok(Recorded::Added) => {}
                Ok(other) => panic!("record_event {id}: {other:?}"),
                Err(e) => panic!("record_event {id}: {e}"),
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    (written, bytes.into_inner())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    init_logging();
    let (n, pages, sample) = (arg(1, 100_000).max(100), arg(2, 200).max(10), arg(3, 2000).max(10));
    let sample = sample.min(n);
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "events benchmark: {cores} cores; {} events over one simulated year (2024); replica {REPLICA} in the data \
         directory;\nsearch off; no job runner; requests through the app's router in-process; per_page={PER_PAGE}; \
         {pages} pages per latency figure\n",
        thousands(n)
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = ServeConfig::for_dir(dir.path());
    cfg.public_url_opt = Some(API.into());
    cfg.replicas = REPLICA.into();
    cfg.search = "off".into();
    cfg.events_compact_after = COMPACT_AFTER;
    let (app, queue) = assemble(&cfg).expect("app (assemble)");
    let queue_file = dir.path().join("jobs/queue.sqlite");
    let events_dir = dir.path().join(REPLICA).join("main").join("events");
    // Where the local store keeps each object's content type (a file per object).
    let sidecar_dir = dir.path().join(REPLICA).join("main").join(".dss-meta").join("events");

    // 1. Setup.
    let t = Instant::now();
    let (written, doc_bytes) = setup(&app, &queue, n).await;
    let setup_secs = t.elapsed().as_secs_f64();
    let (files_before, disk_before) = du(&events_dir);
    let (sidecars_before, _) = du(&sidecar_dir);
    let _ = writeln!(
        out,
        "1. Setup: {} one-event journals (put_event + record_event, {SETUP_CONCURRENCY} at a time): {:.1} s, \
         {:.0} events/s\n   documents {:.0} bytes on average ({:.1} MiB in all); events/ holds {} files, {:.1} MiB \
         (+ {} sidecar files); queue file {:.1} MiB",
        thousands(n),
        setup_secs,
        n as f64 / setup_secs,
        doc_bytes as f64 / n as f64,
        mib(doc_bytes),
        thousands(files_before),
        mib(disk_before),
        thousands(sidecars_before),
        mib(file_size(&queue_file) + file_size(&dir.path().join("jobs/queue.sqlite-wal")))
    );

    let mut rng = Rng(0x5EED);
    let random_dates = dates_between(&mut rng, &written, 0, n, pages);
    let first_pct = (n / 100).max(2);
    // The last place a full page still follows: (per_page + 1) compacted journals.
    let full_page = (PER_PAGE + 1) * dss::model::event::JOURNAL_MAX_EVENTS;
    let end_hi = n.saturating_sub(full_page).max(first_pct);
    let end_lo = end_hi.saturating_sub(first_pct);
    let start_dates = dates_between(&mut rng, &written, 0, first_pct, pages);
    let end_dates = dates_between(&mut rng, &written, end_lo, end_hi, pages);
    let tail_dates = dates_between(&mut rng, &written, n - first_pct, n, pages);
    let mut pick = Rng(0x5A);
    let sample_idx: Vec<usize> = (0..sample).map(|_| pick.below(n as u64) as usize).collect();

    // 2. Uncompacted.
    let before = walk(&app, PER_PAGE, sample).await;
    assert_eq!(before.events, n, "the uncompacted listing holds every event once");
    let (rand_before, rand_before_events) = pages_from(&app, &random_dates, PER_PAGE).await;
    let (start_before, _) = pages_from(&app, &start_dates, PER_PAGE).await;
    let (end_before, _) = pages_from(&app, &end_dates, PER_PAGE).await;
    let index_full_before = index_reads(&queue, &random_dates, entries_for(PER_PAGE)).await;
    let index_small_before = index_reads(&queue, &random_dates, PER_PAGE + 1).await;
    let (single_before, _) = one_by_one(&app, &written, &sample_idx).await;
    let one_event_streams = replay(&app, &before.kept).await;

    // Compaction.
    let journaller = Journaller::new(app.clone(), queue.clone(), Duration::from_secs(COMPACT_AFTER));
    let job = CompactJob {
        replica: REPLICA.into(),
    };
    let mut calls: Vec<f64> = Vec::new();
    let t = Instant::now();
    loop {
        // Done when nothing is pending but an open journal's tail (fewer than 1000 events,
        // kept pending to take in later ones), which compaction leaves as it is.
        let pending = queue
            .pending_events(REPLICA, dss::model::event::JOURNAL_MAX_EVENTS)
            .await
            .expect("pending_events");
        if dss::model::event::unchanged(&pending) {
            break;
        }
        assert!(
            calls.len() <= n / 1000 + 10,
            "compaction does not finish: {} calls so far",
            calls.len()
        );
        let c = Instant::now();
        match journaller.compact(&job).await {
            Outcome::Done => {}
            other => panic!("compaction: {other:?}"),
        }
        calls.push(c.elapsed().as_secs_f64());
    }
    let compact_secs = t.elapsed().as_secs_f64();
    let (files_after, disk_after) = du(&events_dir);
    let (sidecars_after, _) = du(&sidecar_dir);

    // 2., 3. and 4. compacted.
    let after = walk(&app, PER_PAGE, usize::MAX).await;
    assert_eq!(after.events, n, "the compacted listing holds every event once");
    let (rand_after, rand_after_events) = pages_from(&app, &random_dates, PER_PAGE).await;
    let (start_after, _) = pages_from(&app, &start_dates, PER_PAGE).await;
    let (end_after, end_after_events) = pages_from(&app, &end_dates, PER_PAGE).await;
    let (tail_after, tail_after_events) = pages_from(&app, &tail_dates, PER_PAGE).await;
    let index_full_after = index_reads(&queue, &random_dates, entries_for(PER_PAGE)).await;
    let (replay_secs, replay_bytes, replay_events) = replay(&app, &after.kept).await;
    assert_eq!(replay_events, n, "the streams hold every event");
    let (single_after, single_after_bytes) = one_by_one(&app, &written, &sample_idx).await;

    let _ = writeln!(
        out,
        "\n   Compaction (Journaller::compact until nothing is left to pack): {:.1} s, {:.0} events/s, {:.1} MiB/s of \
         documents;\n   {} calls (each {:.2} s at first, {:.2} s last, {:.2} s at most); {} journals; events/ then \
         holds {} files, {:.1} MiB (+ {} sidecar files)\n   (the one-event journals stay {} s, for the URLs handed out)",
        compact_secs,
        n as f64 / compact_secs,
        mib(doc_bytes) / compact_secs,
        calls.len(),
        calls.first().copied().unwrap_or(f64::NAN),
        calls.last().copied().unwrap_or(f64::NAN),
        calls.iter().copied().fold(0.0, f64::max),
        after.journals,
        thousands(files_after),
        mib(disk_after),
        thousands(sidecars_after),
        grace_secs()
    );

    let _ = writeln!(
        out,
        "\n2. Listing every event, GET /v1/events?per_page={PER_PAGE} following the Link tokens (counted: {} and {}; \
         order checked)",
        thousands(before.events),
        thousands(after.events)
    );
    for (label, w) in [("one-event journals", &before), ("compacted", &after)] {
        let _ = writeln!(
            out,
            "   {label:<19} {:>8.2} s   {:>7} pages   {:>7} streams   {:>9.0} events/s   page p50 {:.2} ms",
            w.secs,
            thousands(w.pages),
            thousands(w.streams),
            w.events as f64 / w.secs,
            pct(&w.page_ms, 0.5)
        );
    }
    let _ = writeln!(
        out,
        "   ratio compacted / one-event: walk time {:.4} ({:.0}x faster), pages {:.4}, page p50 {:.2}",
        after.secs / before.secs,
        before.secs / after.secs,
        after.pages as f64 / before.pages as f64,
        pct(&after.page_ms, 0.5) / pct(&before.page_ms, 0.5)
    );
    let _ = writeln!(
        out,
        "   One page from a random from_date in the year ({} requests):",
        random_dates.len()
    );
    let _ = writeln!(
        out,
        "     {}   {:.0} events/page",
        latency_line("one-event journals", &rand_before),
        rand_before_events as f64 / rand_before.len() as f64
    );
    let _ = writeln!(
        out,
        "     {}   {:.0} events/page",
        latency_line("compacted", &rand_after),
        rand_after_events as f64 / rand_after.len() as f64
    );
    let per_event = |ms: &[f64], events: usize| mean(ms) * ms.len() as f64 * 1000.0 / events.max(1) as f64;
    let _ = writeln!(
        out,
        "     ratio compacted / one-event: p50 {:.2}, p99 {:.2}; per event listed {:.1} µs / {:.1} µs = {:.4}",
        pct(&rand_after, 0.5) / pct(&rand_before, 0.5),
        pct(&rand_after, 0.99) / pct(&rand_before, 0.99),
        per_event(&rand_after, rand_after_events),
        per_event(&rand_before, rand_before_events),
        per_event(&rand_after, rand_after_events) / per_event(&rand_before, rand_before_events)
    );

    let _ = writeln!(
        out,
        "   The index read behind a page (EventIndex::event_entries from the same dates; a page of {PER_PAGE} streams \
         reads entries_for({PER_PAGE}) = {} rows):",
        thousands(entries_for(PER_PAGE))
    );
    let _ = writeln!(
        out,
        "     {}",
        latency_line(
            &format!("one-event, limit {}", entries_for(PER_PAGE)),
            &index_full_before
        )
    );
    let _ = writeln!(
        out,
        "     {}",
        latency_line(&format!("one-event, limit {}", PER_PAGE + 1), &index_small_before)
    );
    let _ = writeln!(
        out,
        "     {}",
        latency_line(
            &format!("compacted, limit {}", entries_for(PER_PAGE)),
            &index_full_after
        )
    );
    let _ = writeln!(
        out,
        "\n3. Seek: one page from a from_date in the first 1% of the events vs in events {}..{} ({:.0}%..{:.0}% of the \
         year; the last place a full page follows)",
        thousands(end_lo),
        thousands(end_hi),
        100.0 * end_lo as f64 / n as f64,
        100.0 * end_hi as f64 / n as f64
    );
    for (label, s, e) in [
        ("compacted", &start_after, &end_after),
        ("one-event journals", &start_before, &end_before),
    ] {
        let _ = writeln!(out, "   {label}:");
        let _ = writeln!(out, "     {}", latency_line("near the start", s));
        let _ = writeln!(out, "     {}", latency_line("near the end", e));
        let _ = writeln!(
            out,
            "     ratio end / start: p50 {:.2}, p99 {:.2}",
            pct(e, 0.5) / pct(s, 0.5),
            pct(e, 0.99) / pct(s, 0.99)
        );
    }
    let _ = writeln!(
        out,
        "   (compacted, events per page near the end {:.0}; in the last 1% of the year, where the listing ends: \
         p50 {:.2} ms, {:.0} events/page)",
        end_after_events as f64 / end_after.len() as f64,
        pct(&tail_after, 0.5),
        tail_after_events as f64 / tail_after.len() as f64
    );

    let replay_us = replay_secs * 1e6 / replay_events as f64;
    let single_after_us = single_after * 1e6 / sample as f64;
    let single_before_us = single_before * 1e6 / sample as f64;
    let (os_secs, os_bytes, os_events) = one_event_streams;
    let os_us = os_secs * 1e6 / os_events.max(1) as f64;
    let _ = writeln!(
        out,
        "\n4. Replay: every compacted stream downloaded by its stream_url (/blob, in-process), cut at the offsets, each \
         event parsed"
    );
    let _ = writeln!(
        out,
        "   {} streams, {} events, {:.1} MiB in {:.2} s: {:.1} MiB/s, {:.0} events/s, {:.1} µs/event",
        thousands(after.kept.len()),
        thousands(replay_events),
        mib(replay_bytes),
        replay_secs,
        mib(replay_bytes) / replay_secs,
        replay_events as f64 / replay_secs,
        replay_us
    );
    let _ = writeln!(
        out,
        "   GET /v1/events/{{uuid}}?version= one at a time, {} random events: compacted {:.1} µs/event ({:.0}/s, \
         {:.1} MiB/s), one-event journals {:.1} µs/event ({:.0}/s)",
        thousands(sample),
        single_after_us,
        1e6 / single_after_us,
        mib(single_after_bytes) / single_after,
        single_before_us,
        1e6 / single_before_us
    );
    let _ = writeln!(
        out,
        "   one-event streams by their stream_url (the first {} of the uncompacted listing): {:.1} µs/event ({:.0}/s, \
         {:.1} MiB/s)",
        thousands(os_events),
        os_us,
        1e6 / os_us,
        mib(os_bytes) / os_secs
    );
    let _ = writeln!(
        out,
        "   per-event cost ratio: one at a time / compacted replay {:.1}; one-event streams / compacted replay {:.1}; \
         one at a time compacted / one-event {:.2}",
        single_after_us / replay_us,
        os_us / replay_us,
        single_after_us / single_before_us
    );
    let _ = writeln!(
        out,
        "\nqueue file {:.1} MiB (+ WAL {:.1} MiB); {:.0} s in all",
        mib(file_size(&queue_file)),
        mib(file_size(&dir.path().join("jobs/queue.sqlite-wal"))),
        started.elapsed().as_secs_f64()
    );
    print!("{out}");
}
