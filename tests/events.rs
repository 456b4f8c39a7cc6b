//! The event journal through the API, on a local replica: 1,200 bundles written and some
//! tombstoned; the streams over a date range hold exactly the live ones, each once, in
//! order, before and after compaction; paging with the token covers everything; a stream
//! URL downloads the documented format; single events; the errors.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

const BUNDLES: usize = 1200;
const V3: &str = "2017-06-20T214506.766634Z";

/// Every event of `query` (`replica=aws&...`), following the `Link` of each page: the
/// streams, and their events in order.
async fn all_streams(env: &Env, query: &str) -> (Vec<Value>, Vec<Value>) {
    let mut next = format!("/v1/events?replica=aws&{query}");
    let (mut streams, mut events) = (Vec::new(), Vec::new());
    loop {
        let r = env.get(&next).await;
        assert!(
            r.status == 200 || r.status == 206,
            "{next}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("x-openapi-paginated-content-key"), Some("event_streams"));
        let page = r.json();
        for s in page["event_streams"].as_array().unwrap() {
            events.extend(s["events"].as_array().unwrap().iter().cloned());
            streams.push(s.clone());
        }
        if r.status == 200 {
            assert_eq!(r.header("x-openapi-pagination"), Some("false"));
            assert!(r.header("link").is_none());
            return (streams, events);
        }
        assert_eq!(r.header("x-openapi-pagination"), Some("true"));
        let link = r.header("link").unwrap();
        let url = link.strip_prefix('<').unwrap().split_once('>').unwrap().0;
        next = local_part(url);
    }
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect()
}

/// Every event once, in `(timestamp, event_id)` order.
fn assert_ordered_once(events: &[Value]) {
    let keys: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["timestamp"].as_str().unwrap().into(),
                e["event_id"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "events out of order or repeated");
}

/// Compaction is done: no compaction is queued to run soon (one an hour away only
/// deletes what compaction replaced).
async fn compacted(env: &Env) {
    until(120, || async move {
        let soon = chrono::Utc::now() + chrono::Duration::minutes(30);
        let jobs = env.jobs("events-compact").await;
        let busy = jobs.iter().any(|j| {
            j.state == dss::jobs::queue::JobState::Running
                || (j.state == dss::jobs::queue::JobState::Queued && j.run_at < soon)
        });
        if busy {
            Err(format!("compaction still busy: {jobs:#?}"))
        } else {
            Ok(())
        }
    })
    .await
}

/// Ask `check` every 100 ms until it answers `Ok`; after `secs`, fail with its last `Err`.
async fn until<T, F: std::future::Future<Output = Result<T, String>>>(secs: u64, mut check: impl FnMut() -> F) -> T {
    let t = std::time::Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(why) => assert!(t.elapsed().as_secs() < secs, "after {secs} s: {why}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn now() -> String {
    dss::model::DssVersion::from_datetime(chrono::Utc::now()).to_string()
}

/// Download every stream of `streams` by its URL and cut it as the README says: each
/// event's slice is the bundle's metadata document.
async fn replay(env: &Env, streams: &[Value]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for s in streams {
        let r = env.get(&local_part(s["stream_url"].as_str().unwrap())).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body.len() as u64,
            s["size"].as_u64().unwrap(),
            "size is the object's length"
        );
        for e in s["events"].as_array().unwrap() {
            let (o, n) = (
                e["offset"].as_u64().unwrap() as usize,
                e["size"].as_u64().unwrap() as usize,
            );
            let doc: Value = serde_json::from_slice(&r.body[o..o + n]).unwrap();
            out.push((e["event_id"].as_str().unwrap().to_string(), doc));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_holds_every_live_bundle_once_in_order() {
    let env = Env::with(|c| {
        c.replicas = "aws".into();
        c.search = "off".into();
        c.events_compact_after = 2;
    });
    let admin = env.admin();
    let meta = env
        .file("cell_suspension_0.json", br#"{"describedBy": "x", "cells": 7}"#)
        .await;
    let text = env.file("reads.fastq", b"ACGT").await;
    let files = [
        ("cell_suspension_0.json", meta.as_str(), V1),
        ("reads.fastq", text.as_str(), V1),
    ];

    // 1,200 bundles, 16 at a time; the time half way is noted.
    let uuids: Vec<String> = (0..BUNDLES).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let mut half = String::new();
    for (i, chunk) in uuids.chunks(16).enumerate() {
        if i == BUNDLES / 16 / 2 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            half = now();
        }
        let puts = chunk.iter().map(|u| env.put_bundle(u, V2, &files, None));
        for r in futures::future::join_all(puts).await {
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        }
    }
    // A second version of one bundle, and tombstones: every 10th bundle's version, and
    // all versions of the bundle with two.
    let twice = &uuids[1];
    assert_eq!(env.put_bundle(twice, V3, &files, None).await.status, 201);
    let reason = r#"{"reason": "withdrawn"}"#;
    let mut dead: HashSet<String> = HashSet::new();
    for u in uuids.iter().step_by(10) {
        let r = env
            .req(
                "DELETE",
                &format!("/v1/bundles/{u}?replica=aws&version={V2}"),
                Some(&admin),
                reason,
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        dead.insert(format!("{u}.{V2}"));
    }
    let r = env
        .req(
            "DELETE",
            &format!("/v1/bundles/{twice}?replica=aws"),
            Some(&admin),
            reason,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    dead.insert(format!("{twice}.{V2}"));
    dead.insert(format!("{twice}.{V3}"));
    env.jobs_completed("event", 300).await;
    let mut live: HashSet<String> = uuids.iter().map(|u| format!("{u}.{V2}")).collect();
    live.retain(|id| !dead.contains(id));
    assert_eq!(live.len(), BUNDLES - BUNDLES / 10 - 1);

    // Exactly the live ones, each once, in order (compacted or not, as it happens).
    let (_, events) = all_streams(&env, "per_page=10").await;
    assert_eq!(ids(&events).into_iter().collect::<HashSet<_>>(), live);
    assert_eq!(events.len(), live.len());
    assert_ordered_once(&events);

    // Once compaction is done, a few journals hold them all.
    compacted(&env).await;
    let (streams, after) = all_streams(&env, "per_page=10").await;
    assert_eq!(ids(&after), ids(&events), "compaction changes no event nor its order");
    assert!(streams.len() <= 4, "{} streams after compaction", streams.len());
    let journals: HashSet<&str> = streams.iter().map(|s| s["journal_id"].as_str().unwrap()).collect();
    assert!(journals.len() <= 3, "{journals:?}");

    // Paging with one stream per page covers the same events.
    let (single, paged) = all_streams(&env, "per_page=1").await;
    assert_eq!(ids(&paged), ids(&events));
    assert_eq!(single.len(), streams.len());

    // A date range: from inclusive, to exclusive, against the events' timestamps.
    let ts = |e: &Value| e["timestamp"].as_str().unwrap().to_string();
    let (from, to) = (ts(&events[100]), half.clone());
    let (_, ranged) = all_streams(&env, &format!("from_date={from}&to_date={to}&per_page=3")).await;
    let expected: Vec<Value> = events.iter().filter(|e| ts(e) >= from && ts(e) < to).cloned().collect();
    assert!(!expected.is_empty() && expected.len() < events.len());
    assert_eq!(ids(&ranged), ids(&expected));
    let (_, none) = all_streams(&env, &format!("from_date={to}&to_date={to}")).await;
    assert!(none.iter().all(|e| ts(e) >= to) && none.is_empty(), "[t, t) is empty");

    // The stream URLs give the documented format: each slice a metadata document, the
    // same as the single event's.
    let replayed = replay(&env, &streams).await;
    assert_eq!(replayed.len(), live.len());
    let by_id: HashMap<&str, &Value> = replayed.iter().map(|(id, d)| (id.as_str(), d)).collect();
    let some = ids(&events)[7].clone();
    let (u, v) = some.split_once('.').unwrap();
    let doc = by_id[some.as_str()];
    assert_eq!(doc["event_type"], "CREATE");
    assert_eq!(doc["bundle_info"], json!({"uuid": u, "version": v}));
    assert_eq!(
        doc["files"]["cell_suspension_json"],
        json!([{"describedBy": "x", "cells": 7}])
    );
    assert_eq!(doc["manifest"]["files"].as_array().unwrap().len(), 2);
    let one = env.get(&format!("/v1/events/{u}?replica=aws&version={v}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(&one.json(), doc);

    // Deleted and unknown events are 404.
    let gone = dead.iter().next().unwrap();
    let (u, v) = gone.split_once('.').unwrap();
    env.get(&format!("/v1/events/{u}?replica=aws&version={v}"))
        .await
        .expect_error(404, "not_found");
    env.get(&format!("/v1/events/{}?replica=aws&version={V2}", uuid::Uuid::new_v4()))
        .await
        .expect_error(404, "not_found");
    env.get(&format!("/v1/events/{u}?replica=aws&version=nonsense"))
        .await
        .expect_error(404, "not_found");

    // Errors: dates the wrong way round, malformed dates and tokens.
    env.get(&format!("/v1/events?replica=aws&from_date={half}&to_date={V2}"))
        .await
        .expect_error(400, "bad_request");
    env.get("/v1/events?replica=aws&from_date=yesterday")
        .await
        .expect_error(400, "illegal_arguments");
    env.get("/v1/events?replica=aws&token=../../x")
        .await
        .expect_error(400, "illegal_token");
    env.get("/v1/events?replica=aws&per_page=11")
        .await
        .expect_error(400, "illegal_arguments");
    env.get("/v1/events").await.expect_error(400, "illegal_arguments");
}

/// An event deleted after compaction leaves listings at once; its journal is rewritten
/// without it at the next compaction, and the events around it keep their order; the
/// journals replaced are deleted once the stream URLs handed out for them have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_after_compaction_rewrites_the_journal() {
    let env = Env::with(|c| {
        c.replicas = "aws".into();
        c.search = "off".into();
        c.events_compact_after = 1;
        // Stream URLs live 5 s, so replaced journals go 10 s after.
        c.presigned_url_ttl = 5;
    });
    let meta = env.file("a.json", br#"{"a": 1}"#).await;
    let files = [("a.json", meta.as_str(), V1)];
    let uuids: Vec<String> = (0..5).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for u in &uuids {
        assert_eq!(env.put_bundle(u, V2, &files, None).await.status, 201);
    }
    env.jobs_completed("event", 60).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    compacted(&env).await;
    let (streams, events) = all_streams(&env, "per_page=10").await;
    assert_eq!(streams.len(), 1, "one journal: {streams:#?}");
    let journal = streams[0]["journal_id"].as_str().unwrap().to_string();
    let victim = ids(&events)[2].clone();
    let (u, _) = victim.split_once('.').unwrap();
    let r = env
        .req(
            "DELETE",
            &format!("/v1/bundles/{u}?replica=aws"),
            Some(&env.admin()),
            r#"{"reason": "r"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    env.jobs_completed("event", 60).await;
    let (_, now_events) = all_streams(&env, "per_page=10").await;
    let mut expected = ids(&events);
    expected.retain(|id| *id != victim);
    assert_eq!(ids(&now_events), expected, "gone from the listing at once");
    // Rewritten at the next compaction (a second on).
    let (e, j) = (&env, &journal);
    let streams = until(30, || async move {
        let (streams, _) = all_streams(e, "per_page=10").await;
        if streams.len() == 1 && streams[0]["journal_id"].as_str() != Some(j) {
            Ok(streams)
        } else {
            Err(format!("not rewritten: {streams:#?}"))
        }
    })
    .await;
    let stored = |journal: &str| {
        let events = env.main_dir("aws").join("events");
        [
            events.join(format!("streams/{journal}")).exists(),
            events.join(format!("journals/{journal}")).exists(),
        ]
    };
    assert_eq!(stored(&journal), [true, true], "kept while its URLs live");
    let replayed = replay(&env, &streams).await;
    assert!(replayed.iter().all(|(id, _)| *id != victim));
    assert_eq!(replayed.len(), 4);
    let (_, rewritten) = all_streams(&env, "per_page=10").await;
    assert_eq!(ids(&rewritten), expected);
    // Then deleted: the replaced journal, and the first one-event journals.
    compacted(&env).await;
    assert_eq!(stored(&journal), [false, false], "deleted after its grace time");
    let left: Vec<String> = std::fs::read_dir(env.main_dir("aws").join("events/streams"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [streams[0]["journal_id"].as_str().unwrap()]);
}

/// A full journal's worth of events is packed at once, without waiting
/// `DSS_EVENTS_COMPACT_AFTER` (an hour here); fewer wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pending_events_are_packed_at_once() {
    let env = Env::with(|c| {
        c.replicas = "aws".into();
        c.search = "off".into();
        c.events_compact_after = 3600;
    });
    let meta = env.file("a.json", br#"{"a": 1}"#).await;
    let files = [("a.json", meta.as_str(), V1)];
    let n = dss::model::event::JOURNAL_MAX_EVENTS + 7;
    let uuids: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for chunk in uuids.chunks(16) {
        let puts = chunk.iter().map(|u| env.put_bundle(u, V2, &files, None));
        for r in futures::future::join_all(puts).await {
            assert_eq!(r.status, 201);
        }
    }
    env.jobs_completed("event", 120).await;
    let env = &env;
    until(60, || async move {
        let (streams, events) = all_streams(env, "per_page=10").await;
        assert_eq!(events.len(), n);
        // Events per journal (a journal may show as two streams when an event recorded
        // in the same instant lies between its events).
        let mut sizes: HashMap<&str, usize> = HashMap::new();
        for s in &streams {
            *sizes.entry(s["journal_id"].as_str().unwrap()).or_default() += s["events"].as_array().unwrap().len();
        }
        if sizes.values().any(|n| *n == dss::model::event::JOURNAL_MAX_EVENTS) {
            // The rest stay one-event journals until they are due.
            assert_eq!(sizes.len(), 8, "{sizes:?}");
            return Ok(());
        }
        Err(format!("no full journal: {sizes:?}"))
    })
    .await;
}

/// Bundles stored before the journal existed (here: the original's bucket) become events
/// with `dss events record`: every live version once, none a tombstone hides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dss_events_record_records_a_bucket_written_before() {
    let env = Env::with(|c| {
        c.replicas = "aws".into();
        c.search = "off".into();
    });
    env.load_original_bucket("aws");
    let (_, none) = all_streams(&env, "per_page=10").await;
    assert!(none.is_empty());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dss"))
        .args(["events", "record", "--replica", "aws"])
        .env("DSS_DATA_DIR", env.data())
        .env("DSS_REPLICAS", "aws")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored: Vec<_> = std::fs::read_dir(env.main_dir("aws").join("bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|k| !k.ends_with(".dead"))
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("aws: {} bundle versions queued for recording", stored.len())
    );
    // The live versions, as the bucket listing shows them.
    let mut live = HashSet::new();
    let listed = env.get("/v1/bundles/all?replica=aws&per_page=500").await.json();
    for b in listed["bundles"].as_array().unwrap() {
        live.insert(format!(
            "{}.{}",
            b["uuid"].as_str().unwrap(),
            b["version"].as_str().unwrap()
        ));
    }
    assert!(!live.is_empty() && live.len() < stored.len(), "some are tombstoned");
    let (env, live) = (&env, &live);
    until(60, || async move {
        let (_, events) = all_streams(env, "per_page=10").await;
        let got: HashSet<String> = ids(&events).into_iter().collect();
        if got == *live {
            assert_eq!(events.len(), live.len());
            return Ok(());
        }
        assert!(got.is_subset(live), "a hidden version recorded: {got:?}");
        Err(format!("{got:?} != {live:?}"))
    })
    .await;
}

/// A trickle of events does not leave a journal per compaction: a journal smaller than a
/// full one takes in the events that come after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_of_events_is_merged_into_one_journal() {
    let env = Env::with(|c| {
        c.replicas = "aws".into();
        c.search = "off".into();
        c.events_compact_after = 1;
    });
    let meta = env.file("a.json", br#"{"a": 1}"#).await;
    let files = [("a.json", meta.as_str(), V1)];
    for round in 0..3 {
        for _ in 0..2 {
            let u = uuid::Uuid::new_v4().to_string();
            assert_eq!(env.put_bundle(&u, V2, &files, None).await.status, 201);
        }
        env.jobs_completed("event", 60).await;
        // Compacted once it is due (a second on): all of them in one journal each time.
        let env = &env;
        until(30, || async move {
            let (streams, events) = all_streams(env, "per_page=10").await;
            if streams.len() == 1 && events.len() == 2 * (round + 1) {
                Ok(())
            } else {
                Err(format!("round {round}: {streams:#?}"))
            }
        })
        .await;
    }
}
