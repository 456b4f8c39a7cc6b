//! The notification benchmark of issue 12 (`scripts/bench-notify` runs it):
//!
//! 1. **matching cost** of one bundle event as the match job runs it
//!    (`Notifier::subscriptions`, then `Notifier::notifications`) over 200 synthetic
//!    bundles (the fixtures' example bundle with values varied) against 0, SUBS/10 and SUBS
//!    registered subscriptions of realistic, varied queries (a few percent match), v2
//!    (JMESPath over the metadata document) and v1 (Elasticsearch queries over the index
//!    document) apart; the subscriptions live in a DiskQueue of their own, compiled once;
//! 2. **write latency** of `PUT /v1/bundles` through an in-process app (replicas aws and
//!    gcp in the data directory; search off unless `DSS_SEARCH=auto`, since the merges of a
//!    growing embedded index load the machine more and more) with 0 and with SUBS v2
//!    subscriptions (registered in the app's queue file; about 0.04% match, so a write causes a few
//!    deliveries); one write every INTERVAL ms; the 0 phase is split before and after the
//!    SUBS phase, so that drift does not pass for an effect;
//! 3. **PUT answered to webhook received** with one subscription that matches every bundle,
//!    writes one after another (each once the previous one's webhook arrived and its jobs
//!    are done), beside the PUT latency of the same writes; again with SUBS/10 subscriptions
//!    registered of which that one matches.
//!
//! Every bundle has the example bundle's 14 metadata files: 11 shared, and its own donor,
//! specimen and project files (those the queries look at), ingested before the timing.
//!
//! `notify_bench [WRITES] [SUBS] [INTERVAL_MS]` (defaults 200, 10000, 50) prints a
//! plain-text summary.

use bytes::Bytes;
use dss::auth::dev::DevIssuer;
use dss::jobs::notify::{Event, Notifier, NotifySettings, Webhooks};
use dss::jobs::queue::disk::DiskQueue;
use dss::jobs::queue::registry::Registry;
use dss::jobs::queue::{AnyQueue, JobFilter, JobQueue, JobState};
use dss::model::notification::EventType;
use dss::model::subscription::{Kind, Subscription, SUBSCRIPTION_LIMIT};
use dss::search::synthetic::{Generator, Rng};
use dss::server::{build_app, dev_issuer_dir, NativeApp, ServeConfig};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{arg, call, init_logging, latency_line, mean, pct, thousands};

// The server's allocator, so the work is measured as `dss serve` runs it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The values the synthetic bundles vary over (as `dss::search::synthetic` picks them).
const ORGANS: &[&str] = &[
    "brain", "heart", "liver", "kidney", "lung", "spleen", "pancreas", "skin",
];
const DISEASES: &[&str] = &["glioblastoma", "normal", "carcinoma", "fibrosis", "diabetes"];
const SPECIES: &[&str] = &["Homo sapiens", "Mus musculus"];
const SEXES: &[&str] = &["male", "female", "unknown", "mixed"];
/// The files each bundle has of its own (the others are shared).
const OWN_FILES: [&str; 3] = [
    "donor_organism_0.json",
    "specimen_from_organism_0.json",
    "project_0.json",
];

const API: &str = "http://dss.test";
const AUDIENCE: &str = "https://dev.data.humancellatlas.org/";
const FILE_VERSION: &str = "2024-04-01T000000.000000Z";
const BUNDLE_VERSION: &str = "2024-05-01T000000.000000Z";
/// Synthetic bundles the matching cost is measured over.
const EVENTS: u64 = 200;

/// v2 query `k`: one of four shapes over the donor, specimen and project (each matches
/// 1 to 6% of the synthetic bundles; 3.5% on average).
fn v2_query(k: u64) -> String {
    let mut r = Rng(k ^ 0x2222);
    match k % 4 {
        0 => format!(
            "files.donor_organism_json[0].genus_species[0].text == '{}' && \
             files.donor_organism_json[0].biological_sex == '{}' && \
             files.donor_organism_json[0].medical_history.smoking_history == 'yes'",
            r.pick(SPECIES),
            r.pick(SEXES)
        ),
        1 => format!(
            "files.specimen_from_organism_json[0].organ.text == '{}' && \
             files.specimen_from_organism_json[0].disease[0].text == '{}'",
            r.pick(ORGANS),
            r.pick(DISEASES)
        ),
        2 => format!(
            "files.project_json[0].project_core.project_shortname == 'project-{}'",
            r.next_u64() % 97
        ),
        _ => format!(
            "contains(files.specimen_from_organism_json[].organ.text, '{}') && files.donor_organism_json[0].is_living",
            r.pick(ORGANS)
        ),
    }
}

/// v2 query `k` narrowed to one project in 97 (about 0.04% match).
fn v2_rare_query(k: u64) -> String {
    format!(
        "{} && files.project_json[0].project_core.project_shortname == 'project-{}'",
        v2_query(k),
        Rng(k ^ 0x3333).next_u64() % 97
    )
}

/// v2 query `k` that matches no bundle (evaluated as far as its first condition).
fn v2_never_query(k: u64) -> String {
    format!(
        "{} && files.project_json[0].project_core.project_shortname == 'no-such-project'",
        v2_query(k)
    )
}

/// v1 query `k`: one of four shapes (bool of matches, a keyword, a term and a match, a
/// date range with a term filter; 1 to 6% match, 3.4% on average).
fn v1_query(k: u64) -> Value {
    let mut r = Rng(k ^ 0x1111);
    match k % 4 {
        0 => json!({"query": {"bool": {"must": [
            {"match": {"files.donor_organism_json.genus_species.text": r.pick(SPECIES)}},
            {"match": {"files.specimen_from_organism_json.organ.text": r.pick(ORGANS)}}]}}}),
        1 => json!({"query": {"bool": {"must": [
            {"match": {"files.project_json.project_core.project_shortname": format!("project-{}", r.next_u64() % 97)}}]}}}),
        2 => json!({"query": {"bool": {"must": [
            {"term": {"files.donor_organism_json.biological_sex": r.pick(SEXES)}},
            {"match": {"files.specimen_from_organism_json.disease.text": r.pick(DISEASES)}}]}}}),
        _ => {
            let start =
                chrono::NaiveDate::from_ymd_opt(2017, 1, 1).unwrap_or_default() + chrono::Days::new(r.next_u64() % 970);
            let end = start + chrono::Days::new(30);
            json!({"query": {"bool": {"filter": [
                {"range": {"files.specimen_from_organism_json.collection_time": {
                    "gte": start.format("%Y-%m-%d").to_string(), "lt": end.format("%Y-%m-%d").to_string()}}},
                {"term": {"files.donor_organism_json.genus_species.text": "mus musculus"}}]}}})
        }
    }
}

/// A subscription as `PUT /v1/subscriptions` stores it; 100 per owner (the API's limit).
fn subscription(replica: &str, k: u64, kind: Kind, query: Value, callback: &str) -> Subscription {
    let uuid = uuid::Uuid::new_v4().to_string();
    let owner = format!("owner{}@example.org", k / SUBSCRIPTION_LIMIT as u64);
    let mut doc = Map::new();
    doc.insert("callback_url".into(), json!(callback));
    match kind {
        Kind::Jmespath => doc.insert("jmespath_query".into(), query),
        Kind::Elasticsearch => doc.insert("es_query".into(), query),
    };
    doc.insert("owner".into(), json!(owner));
    doc.insert("uuid".into(), json!(uuid));
    doc.insert("replica".into(), json!(replica));
    Subscription {
        uuid,
        owner,
        replica: replica.to_string(),
        kind,
        doc,
    }
}

/// Add `subs` (many per commit, as concurrent requests would be).
async fn register(q: &AnyQueue, subs: &[Subscription]) {
    for chunk in subs.chunks(500) {
        let done = futures::future::join_all(chunk.iter().map(|s| q.put_subscription(s, SUBSCRIPTION_LIMIT))).await;
        for r in done {
            assert!(
                r.expect("put_subscription"),
                "an owner's subscription limit was reached"
            );
        }
    }
}

async fn unregister(q: &AnyQueue, subs: &[Subscription]) {
    for chunk in subs.chunks(500) {
        let done = futures::future::join_all(chunk.iter().map(|s| q.delete_subscription(&s.replica, &s.uuid))).await;
        for r in done {
            r.expect("delete_subscription");
        }
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

fn example_files() -> Vec<(String, Value)> {
    let dir = fixtures().join("example_bundle");
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

/// The files of a synthetic index document, with names as in a bundle
/// (`files.donor_organism_json[0]` -> `donor_organism_0.json`).
fn files_of(index: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (key, list) in index["files"].as_object().into_iter().flatten() {
        let stem = key.strip_suffix("_json").unwrap_or(key);
        for (n, v) in list.as_array().into_iter().flatten().enumerate() {
            out.push((format!("{stem}_{n}.json"), v.clone()));
        }
    }
    out
}

/// This process's resident memory, MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------
// Part 1: matching cost.

struct Cost {
    subs: usize,
    /// Resident memory grown since the previous size (registered and compiled), MiB.
    rss_mib: f64,
    us_per_event: f64,
    matched_per_event: f64,
    calls: usize,
}

/// A bundle's documents, from which each timed call gets its own [`Event`] (matching
/// takes the event by value).
struct Doc {
    uuid: String,
    version: String,
    metadata: Option<Value>,
    index: Option<Value>,
}

impl Doc {
    fn event(&self) -> Event {
        Event {
            kind: EventType::Create,
            uuid: self.uuid.clone(),
            version: self.version.clone(),
            metadata: self.metadata.clone(),
            index: self.index.clone(),
        }
    }
}

/// µs to copy one event's documents (part of every timed call).
fn copy_cost(docs: &[Doc]) -> f64 {
    let start = Instant::now();
    let n = 2000;
    for i in 0..n {
        std::hint::black_box(docs[i % docs.len()].event());
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Time one event at a time, as the match job runs it (the subscriptions looked up, then
/// matched off the async workers), over `docs` cycled, with the subscriptions registered now.
async fn time_matching(notifier: &Notifier, q: &AnyQueue, replica: &str, docs: &[Doc], subs: usize) -> Cost {
    // The first call after a change compiles the subscriptions; not timed.
    let compiled = notifier.subscriptions(q, replica).await.expect("subscriptions");
    notifier
        .notifications(compiled, replica, docs[0].event(), API)
        .await
        .expect("notifications");
    let (mut calls, mut matched) = (0usize, 0usize);
    let start = Instant::now();
    while calls < 20 || (start.elapsed() < Duration::from_millis(1500) && calls < 20_000) {
        let compiled = notifier.subscriptions(q, replica).await.expect("subscriptions");
        matched += notifier
            .notifications(compiled, replica, docs[calls % docs.len()].event(), API)
            .await
            .expect("notifications")
            .len();
        calls += 1;
    }
    Cost {
        subs,
        rss_mib: 0.0,
        us_per_event: start.elapsed().as_secs_f64() * 1e6 / calls as f64,
        matched_per_event: matched as f64 / calls as f64,
        calls,
    }
}

async fn matching_cost(sizes: &[usize], out: &mut String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let q = AnyQueue::Disk(DiskQueue::open(&dir.path().join("queue.sqlite")).expect("queue"));
    let settings = NotifySettings::parse("0", 60.0, true).expect("settings");
    let notifier = Notifier::new(Arc::new(Webhooks::new(settings).expect("webhooks")), 4);
    let generator = Generator::new(example_files());
    let docs: Vec<(String, String, Value)> = (0..EVENTS).map(|i| generator.bundle(i)).collect();
    let v2_events: Vec<Doc> = docs
        .iter()
        .map(|(u, v, index)| Doc {
            uuid: u.clone(),
            version: v.clone(),
            metadata: Some(dss::search::document::metadata_document(
                u,
                v,
                &index["manifest"],
                files_of(index),
            )),
            index: None,
        })
        .collect();
    let v1_events: Vec<Doc> = docs
        .iter()
        .map(|(u, v, index)| Doc {
            uuid: u.clone(),
            version: v.clone(),
            metadata: None,
            index: Some(index.clone()),
        })
        .collect();
    let callback = "http://127.0.0.1:9/hook";
    let _ = writeln!(
        out,
        "1. Matching cost of one bundle event, as the match job runs it (Notifier::subscriptions, then\n   \
         Notifier::notifications; compiled once; {EVENTS} synthetic bundles from the example bundle, cycled;\n   \
         queries of 4 shapes, varied; per subscription = (µs/event - fixed) / subscriptions)"
    );
    for (label, kind, replica, events) in [
        ("v2 JMESPath", Kind::Jmespath, "aws", &v2_events),
        ("v1 ES query", Kind::Elasticsearch, "gcp", &v1_events),
    ] {
        let mut registered = 0usize;
        let mut costs = vec![time_matching(&notifier, &q, replica, events, 0).await];
        for &n in sizes {
            let rss = rss_mib();
            let subs: Vec<Subscription> = (registered as u64..n as u64)
                .map(|k| {
                    let query = match kind {
                        Kind::Jmespath => json!(v2_query(k)),
                        Kind::Elasticsearch => v1_query(k),
                    };
                    subscription(replica, k, kind, query, callback)
                })
                .collect();
            register(&q, &subs).await;
            registered = n;
            let mut c = time_matching(&notifier, &q, replica, events, n).await;
            c.rss_mib = rss_mib() - rss;
            costs.push(c);
        }
        let base = costs[0].us_per_event;
        let copy = copy_cost(events);
        for c in &costs {
            if c.subs == 0 {
                let _ = writeln!(
                    out,
                    "   {label} {:>7} subs: {:>9.1} µs/event fixed: nothing to match (of which {:.1} µs copying the \
                     event's documents for the call); {} calls",
                    0, c.us_per_event, copy, c.calls
                );
                continue;
            }
            let per_sub = (c.us_per_event - base) / c.subs as f64;
            let _ = writeln!(
                out,
                "   {label} {:>7} subs: {:>9.1} µs/event = {:.3} µs/subscription; {:.1} matched/event ({:.2}%); \
                 {} calls; {:+.0} MiB resident",
                thousands(c.subs),
                c.us_per_event,
                per_sub,
                c.matched_per_event,
                100.0 * c.matched_per_event / c.subs as f64,
                c.calls,
                c.rss_mib
            );
        }
        if let [_, small, .., large] = costs.as_slice() {
            let per = |c: &Cost| (c.us_per_event - base) / c.subs as f64;
            let _ = writeln!(
                out,
                "   {label} per-subscription cost {} vs {}: ratio {:.2} (1.00 = linear)",
                thousands(large.subs),
                thousands(small.subs),
                per(large) / per(small)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The webhook receiver.

/// What the receiver saw: the first arrival per bundle uuid, and how many arrived.
#[derive(Default)]
struct Hooks {
    seen: Mutex<HashMap<String, Instant>>,
    count: AtomicU64,
    notify: tokio::sync::Notify,
}

impl Hooks {
    fn arrived(&self, body: &[u8], at: Instant) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let uuid = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|p| p["match"]["bundle_uuid"].as_str().map(str::to_string));
        if let Some(u) = uuid {
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(u)
                .or_insert(at);
            self.notify.notify_waiters();
        }
    }

    /// When the first notification of bundle `uuid` arrived, waiting up to `timeout`.
    async fn wait_for(&self, uuid: &str, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(t) = self.seen.lock().unwrap_or_else(|e| e.into_inner()).get(uuid) {
                return Some(*t);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// A receiver on 127.0.0.1 that notes each request's arrival and answers 200; its port.
async fn receiver(hooks: Arc<Hooks>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let hooks = hooks.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let hooks = hooks.clone();
                    async move {
                        let at = Instant::now();
                        let body = http_body_util::BodyExt::collect(req.into_body())
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        hooks.arrived(&body, at);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::new())))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    port
}

// ---------------------------------------------------------------------------------------
// Parts 2 and 3: the in-process app.

struct Bench {
    app: Arc<NativeApp>,
    token: String,
    staging: PathBuf,
    /// A second connection to the app's queue file, for subscriptions.
    queue: AnyQueue,
    /// A plain connection to it, for how many jobs are left (see `jobs_in`).
    db: Mutex<rusqlite::Connection>,
    hooks: Arc<Hooks>,
    callback: String,
    /// `DSS_SEARCH` of the app.
    search: String,
    /// `(name, uuid)` of the shared files, and of each synthetic bundle's own.
    shared: Vec<(String, String)>,
    own: Vec<Vec<(String, String)>>,
    _dir: tempfile::TempDir,
}

impl Bench {
    async fn start(hooks: Arc<Hooks>, port: u16) -> Bench {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = ServeConfig::for_dir(dir.path());
        cfg.public_url_opt = Some(API.into());
        cfg.notify_allow_private = Some("1".into());
        cfg.notify_delays = "0 1".into();
        // No index unless asked for (DSS_SEARCH=auto): matching does not use it, and the
        // merges of a growing embedded index would pass for drift.
        if std::env::var_os("DSS_SEARCH").is_none() {
            cfg.search = "off".into();
        }
        let app = build_app(&cfg).expect("app");
        let issuer = DevIssuer::load_or_create(&dev_issuer_dir(dir.path()), &format!("{API}/")).expect("dev issuer");
        let token = issuer
            .mint("bench@example.org", Some("hca"), AUDIENCE, chrono::Duration::hours(6))
            .expect("token");
        let path = dir.path().join("jobs/queue.sqlite");
        let queue = AnyQueue::Disk(DiskQueue::open(&path).expect("queue"));
        let db = rusqlite::Connection::open(&path).expect("queue file");
        db.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
        Bench {
            app,
            token,
            staging: cfg.staging_dir.clone(),
            queue,
            db: Mutex::new(db),
            hooks,
            callback: format!("http://127.0.0.1:{port}/hook"),
            search: cfg.search.clone(),
            shared: Vec::new(),
            own: Vec::new(),
            _dir: dir,
        }
    }

    /// Stage `value` as `name` and ingest it; its uuid.
    async fn ingest(&self, name: &str, value: &Value) -> String {
        let dir = self.staging.join(uuid::Uuid::new_v4().to_string());
        std::fs::create_dir_all(&dir).expect("staging dir");
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_vec_pretty(value).expect("JSON")).expect("stage");
        let src = url::Url::from_file_path(std::fs::canonicalize(&p).expect("canonical"))
            .expect("file URL")
            .to_string();
        let u = uuid::Uuid::new_v4().to_string();
        let body = json!({"source_url": src, "creator_uid": 0}).to_string();
        let r = call(
            &self.app,
            "PUT",
            &format!("/v1/files/{u}?version={FILE_VERSION}"),
            Some(&self.token),
            body,
        )
        .await;
        assert_eq!(r.status, 201, "PUT file: {}", String::from_utf8_lossy(&r.body));
        u
    }

    /// Ingest the shared files and `count` bundles' own, then wait for their jobs.
    async fn prepare(&mut self, count: usize) {
        let files = example_files();
        for (name, v) in &files {
            if !OWN_FILES.contains(&name.as_str()) {
                let u = self.ingest(name, v).await;
                self.shared.push((name.clone(), u));
            }
        }
        let generator = Generator::new(files);
        for i in 0..count as u64 {
            let (_, _, index) = generator.bundle(i);
            let mut own = Vec::new();
            for (name, v) in files_of(&index) {
                if OWN_FILES.contains(&name.as_str()) {
                    own.push((name.clone(), self.ingest(&name, &v).await));
                }
            }
            self.own.push(own);
        }
        self.drain(Duration::from_secs(120)).await;
    }

    /// How many jobs are in `state`, the event journal's compaction left out (it waits
    /// `DSS_EVENTS_COMPACT_AFTER` for more events, so it is always queued: counted, no
    /// drain would end). Read with the queue's `jobs_runnable` index: the generic
    /// `JobQueue::list` of the disk queue scans the whole table, which would make this
    /// harness a load of its own that grows with the jobs done.
    fn jobs_in(&self, states: &str) -> i64 {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        db.query_row(
            &format!(
                "SELECT count(*) FROM jobs INDEXED BY jobs_runnable WHERE state IN ({states}) AND kind != '{}'",
                dss::jobs::events::COMPACT
            ),
            [],
            |r| r.get(0),
        )
        .expect("count jobs")
    }

    /// Wait until the queue holds no queued or running job; how long that took, if it did.
    async fn drain(&self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if self.jobs_in("'queued', 'running'") == 0 {
                return Some(start.elapsed());
            }
            if start.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// PUT bundle `i` (its own files those of synthetic bundle `i`); its uuid, its latency
    /// and when it was answered.
    async fn put_bundle(&self, i: usize) -> (String, f64, Instant) {
        let own = &self.own[i % self.own.len()];
        let files: Vec<Value> = self
            .shared
            .iter()
            .chain(own.iter())
            .map(|(name, u)| json!({"uuid": u, "version": FILE_VERSION, "name": name, "indexed": true}))
            .collect();
        let body = json!({"files": files, "creator_uid": 12}).to_string();
        let u = uuid::Uuid::new_v4().to_string();
        let uri = format!("/v1/bundles/{u}?version={BUNDLE_VERSION}&replica=aws");
        let t = Instant::now();
        let r = call(&self.app, "PUT", &uri, Some(&self.token), body).await;
        let answered = Instant::now();
        assert_eq!(r.status, 201, "PUT bundle: {}", String::from_utf8_lossy(&r.body));
        (u, (answered - t).as_secs_f64() * 1000.0, answered)
    }

    /// `n` writes, one every `interval` (open loop); their latencies (ms).
    async fn paced(&self, n: usize, first: usize, interval: Duration) -> Vec<f64> {
        let start = tokio::time::Instant::now();
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            tokio::time::sleep_until(start + interval * k as u32).await;
            out.push(self.put_bundle(first + k).await.1);
        }
        out
    }

    /// `n` writes one after another, each once the previous one's notification arrived
    /// and its jobs are done: (PUT latencies, PUT answered to webhook arrival; ms), and
    /// how many notifications did not arrive within 10 s.
    async fn to_webhook(&self, n: usize, first: usize) -> (Vec<f64>, Vec<f64>, usize) {
        let (mut put, mut delay, mut lost) = (Vec::new(), Vec::new(), 0);
        for k in 0..n {
            let (u, latency, answered) = self.put_bundle(first + k).await;
            put.push(latency);
            match self.hooks.wait_for(&u, Duration::from_secs(10)).await {
                // Signed: matching may deliver before the answer is back with the caller.
                Some(at) if at >= answered => delay.push((at - answered).as_secs_f64() * 1000.0),
                Some(at) => delay.push(-((answered - at).as_secs_f64() * 1000.0)),
                None => lost += 1,
            }
            self.drain(Duration::from_secs(10)).await;
        }
        (put, delay, lost)
    }

    /// Jobs in the queue file, and ms per `JobQueue::list` of one kind and key (what a
    /// match job asks twice: whether a match of its key is running, and whether one
    /// completed before), for a key with no jobs.
    async fn list_cost(&self) -> (i64, f64) {
        let jobs = self.jobs_in("'queued', 'running', 'completed', 'failed'");
        let f = JobFilter {
            kind: Some(dss::jobs::notify::MATCH.into()),
            key: Some("aws/bundles/00000000-0000-4000-8000-000000000000.2024-05-01T000000.000000Z".into()),
            states: vec![JobState::Completed],
            limit: 1,
        };
        let n = 20;
        let start = Instant::now();
        for _ in 0..n {
            self.queue.list(&f).await.expect("list jobs");
        }
        (jobs, start.elapsed().as_secs_f64() * 1000.0 / f64::from(n))
    }

    fn failed_jobs(&self) -> i64 {
        self.jobs_in("'failed'")
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    init_logging();
    let (writes, subs, interval_ms) = (arg(1, 200).max(2), arg(2, 10_000).max(10), arg(3, 50));
    let small = subs / 10;
    let interval = Duration::from_millis(interval_ms as u64);
    let started = Instant::now();
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let _ = writeln!(
        out,
        "notify benchmark: {cores} cores; {writes} writes per phase; {} / {} subscriptions\n",
        thousands(small),
        thousands(subs)
    );

    // 1.
    matching_cost(&[small, subs], &mut out).await;

    // 2. and 3.
    let hooks = Arc::new(Hooks::default());
    let port = receiver(hooks.clone()).await;
    let mut b = Bench::start(hooks.clone(), port).await;
    b.prepare(writes).await;
    let list_before = b.list_cost().await;
    // Warm-up: the first writes open files, caches and the index.
    b.paced(10, 0, interval).await;
    b.drain(Duration::from_secs(30)).await;

    let half = writes / 2;
    let mut zero = b.paced(half, 0, interval).await;
    let zero_before = (pct(&zero, 0.5), pct(&zero, 0.99));
    b.drain(Duration::from_secs(60)).await;
    let many: Vec<Subscription> = (0..subs as u64)
        .map(|k| subscription("aws", k, Kind::Jmespath, json!(v2_rare_query(k)), &b.callback))
        .collect();
    register(&b.queue, &many).await;
    b.paced(2, 0, interval).await; // compiles the subscriptions in the app; not timed
    b.drain(Duration::from_secs(60)).await;
    let hooks_before = hooks.count.load(Ordering::Relaxed);
    let loaded = b.paced(writes, 0, interval).await;
    let backlog = b.drain(Duration::from_secs(120)).await;
    let delivered = hooks.count.load(Ordering::Relaxed) - hooks_before;
    unregister(&b.queue, &many).await;
    b.paced(2, 0, interval).await;
    b.drain(Duration::from_secs(60)).await;
    let zero_after = b.paced(writes - half, half, interval).await;
    let zero_after_p = (pct(&zero_after, 0.5), pct(&zero_after, 0.99));
    zero.extend(zero_after);
    b.drain(Duration::from_secs(60)).await;

    let _ = writeln!(
        out,
        "\n2. PUT /v1/bundles latency, in-process app (search {}, replicas aws+gcp), one write every {interval_ms} ms\n   \
         (0 subscriptions: {half} writes before and {} after the {} phase; same data, same run)",
        b.search,
        writes - half,
        thousands(subs)
    );
    let _ = writeln!(out, "   {}", latency_line("0 subscriptions", &zero));
    let _ = writeln!(
        out,
        "   {}",
        latency_line(&format!("{} v2 subscriptions", thousands(subs)), &loaded)
    );
    let _ = writeln!(
        out,
        "   ratio {} / 0: p50 {:.2}, p99 {:.2}, mean {:.2}",
        thousands(subs),
        pct(&loaded, 0.5) / pct(&zero, 0.5),
        pct(&loaded, 0.99) / pct(&zero, 0.99),
        mean(&loaded) / mean(&zero)
    );
    let _ = writeln!(
        out,
        "   (0 subscriptions before / after: p50 {:.2} / {:.2} ms, p99 {:.2} / {:.2} ms)",
        zero_before.0, zero_after_p.0, zero_before.1, zero_after_p.1
    );
    let _ = writeln!(
        out,
        "   ({} notifications delivered during the {} phase; its jobs done {} after the last write)",
        delivered,
        thousands(subs),
        match backlog {
            Some(d) => format!("{:.2} s", d.as_secs_f64()),
            None => "NOT within 120 s".into(),
        }
    );

    // 3.
    let body = json!({ "callback_url": b.callback }).to_string();
    let r = call(&b.app, "PUT", "/v1/subscriptions?replica=aws", Some(&b.token), body).await;
    assert_eq!(r.status, 201, "PUT subscription: {}", String::from_utf8_lossy(&r.body));
    b.to_webhook(3, 0).await; // warm-up
    let (mut put1, mut delay1, mut lost1) = b.to_webhook(half, 0).await;
    let before = (pct(&put1, 0.5), pct(&delay1, 0.5));
    let others: Vec<Subscription> = (0..small.saturating_sub(1) as u64)
        .map(|k| subscription("aws", k, Kind::Jmespath, json!(v2_never_query(k)), &b.callback))
        .collect();
    register(&b.queue, &others).await;
    b.to_webhook(3, 0).await; // warm-up: compiles
    let (put2, delay2, lost2) = b.to_webhook(writes, 0).await;
    unregister(&b.queue, &others).await;
    b.to_webhook(3, 0).await;
    let (put3, delay3, lost3) = b.to_webhook(writes - half, half).await;
    let after = (pct(&put3, 0.5), pct(&delay3, 0.5));
    put1.extend(put3);
    delay1.extend(delay3);
    lost1 += lost3;
    let failed = b.failed_jobs();
    let list_after = b.list_cost().await;

    let _ = writeln!(
        out,
        "\n3. PUT answered -> webhook received (one v2 subscription matching every bundle; writes one after\n   \
         another, each once the previous one's webhook arrived and its jobs are done; the 1-subscription\n   \
         phase split: {half} writes before and {} after the {} phase)",
        writes - half,
        thousands(small)
    );
    for (label, put, delay, lost) in [
        ("1 subscription", &put1, &delay1, lost1),
        (
            &*format!("{} subscriptions, 1 matching", thousands(small)),
            &put2,
            &delay2,
            lost2,
        ),
    ] {
        let _ = writeln!(out, "   {label}:");
        let _ = writeln!(out, "     {}", latency_line("PUT latency (baseline)", put));
        let _ = writeln!(out, "     {}", latency_line("PUT answered -> webhook", delay));
        let _ = writeln!(
            out,
            "     ratio webhook / PUT: p50 {:.1}, p99 {:.1}; p99 < 1 s: {}{}",
            pct(delay, 0.5) / pct(put, 0.5),
            pct(delay, 0.99) / pct(put, 0.99),
            if pct(delay, 0.99) < 1000.0 { "yes" } else { "NO" },
            if lost > 0 {
                format!("; {lost} notifications did not arrive within 10 s")
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        out,
        "   (1 subscription, p50 before / after: PUT {:.2} / {:.2} ms, webhook {:.2} / {:.2} ms)\n   \
         ratio {} / 1 subscription: PUT p50 {:.2}; webhook p50 {:.2}, p99 {:.2}",
        before.0,
        after.0,
        before.1,
        after.1,
        thousands(small),
        pct(&put2, 0.5) / pct(&put1, 0.5),
        pct(&delay2, 0.5) / pct(&delay1, 0.5),
        pct(&delay2, 0.99) / pct(&delay1, 0.99)
    );
    let _ = writeln!(
        out,
        "\nJobQueue::list of one kind and key (each match job asks two): {:.2} ms with {} jobs in the queue (before the phases), {:.2} ms with {} (at the end)",
        list_before.1,
        thousands(list_before.0 as usize),
        list_after.1,
        thousands(list_after.0 as usize)
    );
    let _ = writeln!(
        out,
        "{} notifications received in all; {} failed jobs in the queue; {:.0} s",
        hooks.count.load(Ordering::Relaxed),
        failed,
        started.elapsed().as_secs_f64()
    );
    print!("{out}");
}
