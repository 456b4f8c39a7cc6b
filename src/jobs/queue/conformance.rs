//! The one suite every [`JobQueue`] must pass (run by `tests/job_queue.rs` against the
//! disk queue and PostgreSQL). Each check gets a fresh, empty queue from the caller and
//! panics with a message on a violation.

use super::journal::{EventIndex, Recorded};
use super::registry::Registry;
use super::runner::{self, Handler, Outcome, RunnerConfig};
use super::{Job, JobFilter, JobQueue, JobState, NewJob};
use crate::model::subscription::{Delivery, Kind, Outcome as Delivered, Subscription};
use chrono::Utc;
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

fn job(kind: &str, key: &str) -> NewJob {
    NewJob::new(kind, key, serde_json::json!({ "key": key }))
}

/// Run every check, each on a fresh queue from `make`.
pub async fn run_all<Q, F, Fut>(make: F)
where
    Q: JobQueue + Registry + EventIndex,
    F: Fn() -> Fut,
    Fut: Future<Output = Q>,
{
    lease_takes_each_job_once(make().await).await;
    queued_repeats_are_one_job(make().await).await;
    only_the_holder_ends_a_job(make().await).await;
    retries_wait_for_their_time(make().await).await;
    failed_jobs_keep_their_error_until_retried(make().await).await;
    expired_leases_are_taken_over(make().await).await;
    heartbeats_keep_a_lease(make().await).await;
    progress_is_reported_by_the_holder(make().await).await;
    concurrent_leases_never_share_a_job(Arc::new(make().await)).await;
    concurrent_repeats_are_one_job(Arc::new(make().await)).await;
    listing_filters_and_prune(make().await).await;
    tallies_count_by_group_and_state(make().await).await;
    wait_wakes_on_enqueue(Arc::new(make().await)).await;
    runner_runs_retries_and_fails(Arc::new(make().await)).await;
    runner_gives_up_after_the_kinds_attempts(Arc::new(make().await)).await;
    runner_beats_within_a_short_lease(Arc::new(make().await)).await;
    subscriptions_are_kept_per_replica_owner_and_kind(make().await).await;
    concurrent_puts_keep_the_limit(Arc::new(make().await)).await;
    delivery_logs_keep_the_newest(make().await).await;
    collection_owners_are_listed_and_forgotten(make().await).await;
    collection_uuids_are_claimed_once(Arc::new(make().await)).await;
    events_are_listed_in_order_and_stay_deleted(make().await).await;
    compaction_moves_all_or_nothing(make().await).await;
    concurrent_moves_of_one_event_succeed_once(Arc::new(make().await)).await;
    unsealed_journals_stay_pending(make().await).await;
}

fn event(n: u32, ts: &str) -> crate::model::event::EventEntry {
    let id = format!("00000000-0000-4000-8000-{n:012}.2019-01-01T000000.000000Z");
    crate::model::event::EventEntry {
        journal: id.clone(),
        event_id: id,
        timestamp: ts.to_string(),
        offset: 0,
        size: 10 + u64::from(n),
        journal_size: 10 + u64::from(n),
    }
}

fn ids(entries: &[crate::model::event::EventEntry]) -> Vec<String> {
    entries.iter().map(|e| e.event_id.clone()).collect()
}

/// Events are listed by `(timestamp, event_id)` in a half-open range, per replica, from
/// a cursor; a deleted event is gone from listings and lookups and a late recording does
/// not bring it back; a journal nothing names becomes garbage once its time has come.
pub async fn events_are_listed_in_order_and_stay_deleted<Q: EventIndex>(q: Q) {
    use crate::model::event::Cursor;
    let (t1, t2, t3) = (
        "2019-01-01T000001.000000Z",
        "2019-01-01T000002.000000Z",
        "2019-01-01T000003.000000Z",
    );
    // Inserted out of order; two share a timestamp.
    for (n, ts) in [(3, t3), (2, t2), (1, t2), (0, t1)] {
        assert_eq!(q.record_event("aws", &event(n, ts), 0).await.unwrap(), Recorded::Added);
    }
    q.record_event("gcp", &event(9, t1), 0).await.unwrap();
    assert_eq!(q.record_event("aws", &event(0, t1), 0).await.unwrap(), Recorded::Live);
    let all = q.event_entries("aws", &Cursor::at(""), None, 100).await.unwrap();
    assert_eq!(
        ids(&all),
        ids(&[event(0, t1), event(1, t2), event(2, t2), event(3, t3)])
    );
    assert_eq!(all[1], event(1, t2), "an entry comes back as recorded");
    let range = q.event_entries("aws", &Cursor::at(t2), Some(t3), 100).await.unwrap();
    assert_eq!(
        ids(&range),
        ids(&[event(1, t2), event(2, t2)]),
        "from inclusive, to exclusive"
    );
    let from = Cursor {
        timestamp: t2.into(),
        event_id: event(2, t2).event_id,
    };
    let rest = q.event_entries("aws", &from, None, 1).await.unwrap();
    assert_eq!(
        ids(&rest),
        ids(&[event(2, t2)]),
        "a cursor between two of one time, and a limit"
    );
    // Deleting: a known event, an unknown one, and one twice.
    let gone = vec![event(1, t2).event_id, event(7, t2).event_id];
    assert_eq!(q.delete_events("aws", &gone, 100).await.unwrap(), 1);
    assert_eq!(q.delete_events("aws", &gone, 100).await.unwrap(), 0);
    let all = q.event_entries("aws", &Cursor::at(""), None, 100).await.unwrap();
    assert_eq!(ids(&all), ids(&[event(0, t1), event(2, t2), event(3, t3)]));
    assert_eq!(
        q.event_entry("aws", &event(1, t2).event_id).await.unwrap(),
        (None, true)
    );
    assert_eq!(
        q.event_entry("aws", &event(8, t2).event_id).await.unwrap(),
        (None, false)
    );
    assert_eq!(
        q.event_entry("aws", &event(3, t3).event_id).await.unwrap(),
        (Some(event(3, t3)), true)
    );
    assert_eq!(
        q.record_event("aws", &event(7, t3), 100).await.unwrap(),
        Recorded::Deleted,
        "deleted before it was recorded"
    );
    assert!(q.event_entry("aws", &event(7, t3).event_id).await.unwrap().0.is_none());
    // The deleted events' one-event journals are garbage from time 100, not before.
    assert_eq!(q.next_garbage("aws").await.unwrap(), Some(100));
    assert_eq!(q.next_garbage("gcp").await.unwrap(), None);
    assert!(q.garbage_journals("aws", 99, 10).await.unwrap().is_empty());
    let mut garbage = q.garbage_journals("aws", 100, 10).await.unwrap();
    garbage.sort();
    assert_eq!(garbage, [event(1, t2).journal, event(7, t3).journal]);
    q.forget_journals("aws", &garbage).await.unwrap();
    assert!(q.garbage_journals("aws", 100, 10).await.unwrap().is_empty());
    assert_eq!(q.next_garbage("aws").await.unwrap(), None);
    // A repeated recording's object is garbage unless the row names it; a journal noted
    // before it is written is garbage at its time unless named by then; a named journal
    // is never garbage.
    let mut again = event(3, t3);
    assert_eq!(q.record_event("aws", &again, 200).await.unwrap(), Recorded::Live);
    again.journal = "elsewhere".into();
    assert_eq!(q.record_event("aws", &again, 200).await.unwrap(), Recorded::Live);
    q.intend_journal("aws", "never-named", 300).await.unwrap();
    q.intend_journal("aws", &event(3, t3).journal, 300).await.unwrap();
    assert_eq!(q.garbage_journals("aws", 250, 10).await.unwrap(), ["elsewhere"]);
    let mut due = q.garbage_journals("aws", 300, 10).await.unwrap();
    due.sort();
    assert_eq!(due, ["elsewhere", "never-named"], "the named journal is not garbage");
    q.forget_journals("aws", &due).await.unwrap();
    assert_eq!(
        ids(&q.event_entries("gcp", &Cursor::at(""), None, 100).await.unwrap()),
        ids(&[event(9, t1)])
    );
}

/// Compaction moves every event of a batch or none (one changed meanwhile), and the
/// journals it emptied become garbage; losing an event to a tombstone makes the rest
/// of its journal pending again.
pub async fn compaction_moves_all_or_nothing<Q: EventIndex>(q: Q) {
    use crate::model::event::{Cursor, EventEntry};
    let t = "2019-01-01T000001.000000Z";
    for n in 0..3 {
        q.record_event("aws", &event(n, t), 0).await.unwrap();
    }
    let pending = q.pending_events("aws", 10).await.unwrap();
    assert_eq!(ids(&pending), ids(&[event(0, t), event(1, t), event(2, t)]));
    assert_eq!(q.pending_count("aws", 10).await.unwrap(), 3);
    assert_eq!(q.pending_count("aws", 2).await.unwrap(), 2, "counted up to the bound");
    assert_eq!(q.pending_count("gcp", 10).await.unwrap(), 0);
    let moved = |e: &EventEntry, offset| EventEntry {
        journal: "J".into(),
        offset,
        journal_size: 99,
        ..e.clone()
    };
    let moves: Vec<super::journal::Move> = pending
        .iter()
        .enumerate()
        .map(|(i, e)| (e.event_id.clone(), e.journal.clone(), moved(e, i as u64 * 20)))
        .collect();
    // A stale batch (its first event was deleted meanwhile) moves nothing.
    q.delete_events("aws", &[event(0, t).event_id], 0).await.unwrap();
    assert!(!q.move_events("aws", &moves, true, 0).await.unwrap());
    let left = q.event_entries("aws", &Cursor::at(""), None, 10).await.unwrap();
    assert_eq!(left, [event(1, t), event(2, t)], "nothing moved");
    q.intend_journal("aws", "J", 10).await.unwrap();
    assert!(q.move_events("aws", &moves[1..], true, 50).await.unwrap());
    let left = q.event_entries("aws", &Cursor::at(""), None, 10).await.unwrap();
    assert_eq!(left, [moved(&event(1, t), 20), moved(&event(2, t), 40)]);
    assert!(q.pending_events("aws", 10).await.unwrap().is_empty());
    let mut garbage = q.garbage_journals("aws", 50, 10).await.unwrap();
    garbage.sort();
    assert_eq!(garbage, [event(0, t).journal, event(1, t).journal, event(2, t).journal]);
    // A moved batch is not moved again.
    assert!(!q.move_events("aws", &moves[1..], true, 50).await.unwrap());
    // Deleting one event of journal J: the other is pending again; J is still named.
    q.delete_events("aws", &[event(1, t).event_id], 60).await.unwrap();
    assert_eq!(q.pending_events("aws", 10).await.unwrap(), [moved(&event(2, t), 40)]);
    assert!(!q
        .garbage_journals("aws", 1000, 10)
        .await
        .unwrap()
        .contains(&"J".to_string()));
    q.delete_events("aws", &[event(2, t).event_id], 60).await.unwrap();
    // Garbage from 60, when it lost its last event: the move took back the note made
    // before J was written (from 10).
    let j = "J".to_string();
    assert!(!q.garbage_journals("aws", 59, 10).await.unwrap().contains(&j));
    assert!(q.garbage_journals("aws", 60, 10).await.unwrap().contains(&j));
}

/// Events moved to a journal that is not sealed stay pending, to be merged again.
pub async fn unsealed_journals_stay_pending<Q: EventIndex>(q: Q) {
    let t = "2019-01-01T000001.000000Z";
    q.record_event("aws", &event(5, t), 0).await.unwrap();
    let mut to = event(5, t);
    to.journal = "K".into();
    let m = vec![(event(5, t).event_id, event(5, t).journal, to.clone())];
    assert!(q.move_events("aws", &m, false, 0).await.unwrap());
    assert_eq!(q.pending_events("aws", 10).await.unwrap(), [to]);
}

/// Two compactions moving the same event at once: exactly one succeeds.
pub async fn concurrent_moves_of_one_event_succeed_once<Q: EventIndex>(q: Arc<Q>) {
    let t = "2019-01-01T000001.000000Z";
    q.record_event("aws", &event(1, t), 0).await.unwrap();
    let e = event(1, t);
    let tries = (0..8).map(|i| {
        let q = q.clone();
        let mut to = e.clone();
        to.journal = format!("J{i}");
        let m = vec![(e.event_id.clone(), e.journal.clone(), to)];
        async move { q.move_events("aws", &m, true, 0).await.unwrap() }
    });
    let won = futures::future::join_all(tries)
        .await
        .into_iter()
        .filter(|w| *w)
        .count();
    assert_eq!(won, 1);
}

/// An owner's collection versions are listed in the original's order (descending by
/// `{uuid}.{version}`), once each, and go when their collection is deleted.
pub async fn collection_owners_are_listed_and_forgotten<Q: Registry>(q: Q) {
    let (a, b) = (
        "00000000-0000-4000-8000-00000000000a",
        "00000000-0000-4000-8000-00000000000b",
    );
    let (v1, v2) = ("2019-01-01T000000.000000Z", "2019-01-02T000000.000000Z");
    for (owner, uuid, version) in [
        ("o@x", a, v1),
        ("o@x", a, v2),
        ("o@x", b, v1),
        ("o@x", a, v1),
        ("p@x", b, v2),
    ] {
        q.add_collection(owner, uuid, version).await.expect("add");
    }
    let mine = q.owner_collections("o@x").await.expect("list");
    let want: Vec<(String, String)> = [(b, v1), (a, v2), (a, v1)]
        .iter()
        .map(|(u, v)| (u.to_string(), v.to_string()))
        .collect();
    assert_eq!(mine, want);
    assert_eq!(q.remove_collection(b).await.expect("remove"), 2);
    assert_eq!(q.owner_collections("o@x").await.expect("list").len(), 2);
    assert!(q.owner_collections("p@x").await.expect("list").is_empty());
}

/// A collection uuid is claimed once: the first claimant keeps it, a uuid already in the
/// owner index is its owner's, and of many claiming a new uuid at once, one wins and
/// every one is told who.
pub async fn collection_uuids_are_claimed_once<Q: Registry>(q: Arc<Q>) {
    let (a, b, c) = (
        "00000000-0000-4000-8000-0000000000a1",
        "00000000-0000-4000-8000-0000000000b1",
        "00000000-0000-4000-8000-0000000000c1",
    );
    assert_eq!(q.claim_collection(a, "o@x").await.expect("claim"), "o@x");
    assert_eq!(q.claim_collection(a, "p@x").await.expect("claim"), "o@x");
    assert_eq!(q.claim_collection(a, "o@x").await.expect("claim"), "o@x");
    // Listed before claims were kept: the latest version's owner has it.
    q.add_collection("p@x", b, "2019-01-01T000000.000000Z")
        .await
        .expect("add");
    q.add_collection("q@x", b, "2018-01-01T000000.000000Z")
        .await
        .expect("add");
    assert_eq!(q.claim_collection(b, "o@x").await.expect("claim"), "p@x");
    let tries = (0..8).map(|i| {
        let q = q.clone();
        async move {
            (
                format!("u{i}@x"),
                q.claim_collection(c, &format!("u{i}@x")).await.expect("claim"),
            )
        }
    });
    let told = futures::future::join_all(tries).await;
    let winner = &told[0].1;
    assert!(told.iter().all(|(_, w)| w == winner), "{told:?}");
    assert_eq!(told.iter().filter(|(me, w)| me == w).count(), 1);
}

fn subscription(replica: &str, owner: &str, kind: Kind, n: usize) -> Subscription {
    let uuid = format!("00000000-0000-4000-8000-{n:012}");
    let doc =
        serde_json::json!({"callback_url": "https://e.org/x", "hmac_secret_key": "s", "owner": owner, "uuid": uuid});
    Subscription {
        uuid,
        owner: owner.into(),
        replica: replica.into(),
        kind,
        doc: doc.as_object().cloned().unwrap_or_default(),
    }
}

/// Subscriptions are found by replica and uuid, listed by owner and kind, limited per
/// owner, replica and kind, and every change moves the replica's generation.
pub async fn subscriptions_are_kept_per_replica_owner_and_kind<Q: Registry>(q: Q) {
    let g0 = q.subscriptions_generation("aws").await.expect("generation");
    let a1 = subscription("aws", "a@x", Kind::Jmespath, 1);
    assert!(q.put_subscription(&a1, 2).await.expect("put"));
    let g1 = q.subscriptions_generation("aws").await.expect("generation");
    assert_ne!(g0, g1, "a put changes the generation");
    assert!(q
        .put_subscription(&subscription("aws", "a@x", Kind::Jmespath, 2), 2)
        .await
        .expect("put"));
    assert!(
        !q.put_subscription(&subscription("aws", "a@x", Kind::Jmespath, 3), 2)
            .await
            .expect("put"),
        "the owner's limit holds"
    );
    assert!(q
        .put_subscription(&subscription("aws", "a@x", Kind::Elasticsearch, 4), 2)
        .await
        .expect("put"));
    assert!(q
        .put_subscription(&subscription("gcp", "a@x", Kind::Jmespath, 5), 2)
        .await
        .expect("put"));
    assert!(q
        .put_subscription(&subscription("aws", "b@x", Kind::Jmespath, 6), 2)
        .await
        .expect("put"));
    assert_eq!(
        q.get_subscription("aws", &a1.uuid).await.expect("get"),
        Some(a1.clone())
    );
    assert_eq!(q.get_subscription("gcp", &a1.uuid).await.expect("get"), None);
    let mine = q.owner_subscriptions("aws", "a@x", Kind::Jmespath).await.expect("list");
    assert_eq!(
        mine.iter().map(|s| s.uuid.as_str()).collect::<Vec<_>>(),
        [&a1.uuid[..], &subscription("aws", "a@x", Kind::Jmespath, 2).uuid[..]]
    );
    assert_eq!(
        q.owner_subscriptions("aws", "a@x", Kind::Elasticsearch)
            .await
            .expect("list")
            .len(),
        1
    );
    let (g, all) = q.replica_subscriptions("aws").await.expect("all");
    assert_eq!(
        (g, all.len()),
        (q.subscriptions_generation("aws").await.expect("generation"), 4)
    );
    assert!(q.delete_subscription("aws", &a1.uuid).await.expect("delete"));
    assert!(!q.delete_subscription("aws", &a1.uuid).await.expect("delete again"));
    assert_ne!(
        q.subscriptions_generation("aws").await.expect("generation"),
        g,
        "a delete changes the generation"
    );
    assert_eq!(q.get_subscription("aws", &a1.uuid).await.expect("get"), None);
}

/// Puts of one owner at once never pass the limit together.
pub async fn concurrent_puts_keep_the_limit<Q: Registry>(q: Arc<Q>) {
    let puts = (0..12).map(|n| {
        let q = q.clone();
        tokio::spawn(async move {
            q.put_subscription(&subscription("aws", "c@x", Kind::Jmespath, 100 + n), 5)
                .await
        })
    });
    let mut added = 0;
    for p in puts {
        if p.await.expect("task").expect("put") {
            added += 1;
        }
    }
    assert_eq!(added, 5);
    assert_eq!(
        q.owner_subscriptions("aws", "c@x", Kind::Jmespath)
            .await
            .expect("list")
            .len(),
        5
    );
}

/// A delivery log keeps the newest attempts, newest first, and goes with its subscription.
pub async fn delivery_logs_keep_the_newest<Q: Registry>(q: Q) {
    let s = subscription("aws", "d@x", Kind::Jmespath, 200);
    assert!(q.put_subscription(&s, 100).await.expect("put"));
    let kept = crate::model::subscription::DELIVERIES_KEPT;
    for attempt in 1..=(kept as u32 + 5) {
        let d = Delivery {
            notification_id: "n".into(),
            event_type: "CREATE".into(),
            bundle_uuid: "u".into(),
            bundle_version: "v".into(),
            attempt,
            time: "2026-12-01T00:00:00.000Z".into(),
            status_code: Some(500),
            error: Some("the receiver answered 500".into()),
            outcome: Delivered::Retrying,
            next_attempt: None,
            duration_ms: 1,
        };
        q.record_delivery("aws", &s.uuid, &d).await.expect("record");
    }
    let log = q.deliveries("aws", &s.uuid).await.expect("log");
    assert_eq!(log.len(), kept);
    assert_eq!(log[0].attempt, kept as u32 + 5, "newest first");
    assert_eq!(log[kept - 1].attempt, 6);
    assert!(q.deliveries("gcp", &s.uuid).await.expect("log").is_empty());
    assert!(q.delete_subscription("aws", &s.uuid).await.expect("delete"));
    assert!(q.deliveries("aws", &s.uuid).await.expect("log").is_empty());
    // An attempt that ends after its subscription was deleted leaves no log behind.
    q.record_delivery("aws", &s.uuid, &log[0]).await.expect("record");
    assert!(q.put_subscription(&s, 100).await.expect("put again"));
    assert!(q.deliveries("aws", &s.uuid).await.expect("log").is_empty());
}

/// Jobs of a kind are counted by the part of their key before the first `/` and by
/// state, with the oldest enqueue time and the job changed last.
pub async fn tallies_count_by_group_and_state<Q: JobQueue>(q: Q) {
    q.enqueue(vec![
        job("copy", "a>b/k1"),
        job("copy", "a>b/k2"),
        job("copy", "a>c/k1"),
        job("other", "a>b/k9"),
    ])
    .await
    .expect("enqueue");
    let got = q.lease("w", 1, LONG).await.expect("lease");
    assert_eq!(got[0].key, "a>b/k1", "oldest first");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(q.complete(got[0].id, "w").await.expect("complete"));
    let t = q.tally("copy").await.expect("tally");
    let row = |g: &str, s: JobState| {
        t.iter()
            .find(|r| r.group == g && r.state == s)
            .map(|r| (r.count, r.latest_key.clone()))
    };
    assert_eq!(row("a>b", JobState::Completed), Some((1, "a>b/k1".into())), "{t:?}");
    assert_eq!(row("a>b", JobState::Queued), Some((1, "a>b/k2".into())), "{t:?}");
    assert_eq!(row("a>c", JobState::Queued), Some((1, "a>c/k1".into())), "{t:?}");
    assert_eq!(t.len(), 3, "other kinds are not counted: {t:?}");
    assert!(t.iter().all(|r| r.oldest <= r.latest), "{t:?}");
}

/// A lease returns a queued job once, with its payload, as running, attempt 1.
pub async fn lease_takes_each_job_once<Q: JobQueue>(q: Q) {
    let ids = q.enqueue(vec![job("a", "k1"), job("b", "k2")]).await.expect("enqueue");
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    let got = q.lease("w1", 10, LONG).await.expect("lease");
    assert_eq!(got.len(), 2, "both jobs leased: {got:?}");
    let first = got.iter().find(|j| j.id == ids[0]).expect("first job leased");
    assert_eq!(first.kind, "a");
    assert_eq!(first.key, "k1");
    assert_eq!(first.payload, serde_json::json!({"key": "k1"}));
    assert_eq!(first.state, JobState::Running);
    assert_eq!(first.attempts, 1);
    assert_eq!(first.worker.as_deref(), Some("w1"));
    assert!(
        first.lease_until.is_some_and(|t| t > Utc::now()),
        "lease ends in the future"
    );
    assert!(
        q.lease("w2", 10, LONG).await.expect("lease").is_empty(),
        "a leased job is not leased again"
    );
    assert!(q.lease("w1", 0, LONG).await.expect("lease").is_empty());
}

/// Repeats of one key enqueued at the same moment (several writes of one bundle, in
/// several processes) are still one queued job; batches naming keys in opposite orders
/// do not deadlock.
pub async fn concurrent_repeats_are_one_job<Q: JobQueue>(q: Arc<Q>) {
    for round in 0..5 {
        let (k1, k2) = (format!("hot-{round}"), format!("warm-{round}"));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let q = q.clone();
                let batch = if i % 2 == 0 {
                    vec![job("index", &k1), job("index", &k2)]
                } else {
                    vec![job("index", &k2), job("index", &k1)]
                };
                tokio::spawn(async move { q.enqueue(batch).await.expect("enqueue") })
            })
            .collect();
        let mut ids = HashSet::new();
        for t in tasks {
            ids.extend(t.await.expect("task"));
        }
        assert_eq!(ids.len(), 2, "round {round}: one job per key, got {ids:?}");
        for key in [&k1, &k2] {
            let listed = q
                .list(&JobFilter {
                    key: Some(key.clone()),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .expect("list");
            assert_eq!(listed.len(), 1, "one row for {key}: {listed:?}");
        }
    }
}

/// Enqueueing a key that is queued returns the queued job; once it runs, a new one.
pub async fn queued_repeats_are_one_job<Q: JobQueue>(q: Q) {
    let a = q.enqueue(vec![job("index", "same")]).await.expect("enqueue")[0];
    let b = q.enqueue(vec![job("index", "same")]).await.expect("enqueue")[0];
    assert_eq!(a, b, "a queued repeat is the same job");
    let other_kind = q.enqueue(vec![job("ingest", "same")]).await.expect("enqueue")[0];
    assert_ne!(a, other_kind, "the same key of another kind is another job");
    let leased = q.lease("w", 1, LONG).await.expect("lease");
    assert_eq!(leased[0].id, a);
    let c = q.enqueue(vec![job("index", "same")]).await.expect("enqueue")[0];
    assert_ne!(
        a, c,
        "a repeat of a running job is a new job (the write came after the run began)"
    );
    // A repeat that may run earlier moves the queued job earlier.
    let later = NewJob {
        run_at: Some(Utc::now() + chrono::Duration::seconds(3600)),
        ..job("x", "delayed")
    };
    let d = q.enqueue(vec![later]).await.expect("enqueue")[0];
    assert_eq!(q.enqueue(vec![job("x", "delayed")]).await.expect("enqueue")[0], d);
    let got = q.get(d).await.expect("get").expect("job");
    assert!(got.run_at <= Utc::now(), "the earlier run time is kept: {}", got.run_at);
}

/// Complete and fail act only for the worker that holds the lease.
pub async fn only_the_holder_ends_a_job<Q: JobQueue>(q: Q) {
    let id = q.enqueue(vec![job("a", "k")]).await.expect("enqueue")[0];
    q.lease("holder", 1, LONG).await.expect("lease");
    assert!(
        !q.complete(id, "other").await.expect("complete"),
        "another worker cannot complete it"
    );
    assert!(!q.fail(id, "other", "no", None).await.expect("fail"));
    assert!(!q.heartbeat(id, "other", LONG).await.expect("heartbeat"));
    assert!(q.complete(id, "holder").await.expect("complete"));
    let j = q.get(id).await.expect("get").expect("job");
    assert_eq!(j.state, JobState::Completed);
    assert!(
        !q.complete(id, "holder").await.expect("complete"),
        "completing twice is refused"
    );
    assert!(
        q.lease("w", 10, LONG).await.expect("lease").is_empty(),
        "completed jobs never run again"
    );
    assert!(q.get(id + 1000).await.expect("get").is_none());
}

/// A retried job is queued again, runnable only from its retry time, attempts counted.
pub async fn retries_wait_for_their_time<Q: JobQueue>(q: Q) {
    let id = q.enqueue(vec![job("a", "k")]).await.expect("enqueue")[0];
    q.lease("w", 1, LONG).await.expect("lease");
    let later = Utc::now() + chrono::Duration::seconds(3600);
    assert!(q.fail(id, "w", "storage down", Some(later)).await.expect("fail"));
    let j = q.get(id).await.expect("get").expect("job");
    assert_eq!(j.state, JobState::Queued);
    assert_eq!(j.error.as_deref(), Some("storage down"));
    assert!(
        q.lease("w", 10, LONG).await.expect("lease").is_empty(),
        "not before its time"
    );
    // Now: runnable again, second attempt.
    let id2 = q.enqueue(vec![job("b", "k2")]).await.expect("enqueue")[0];
    q.lease("w", 1, LONG).await.expect("lease");
    assert!(q.fail(id2, "w", "blip", Some(Utc::now())).await.expect("fail"));
    let again = q.lease("w", 10, LONG).await.expect("lease");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, id2);
    assert_eq!(again[0].attempts, 2);
}

/// A failed job keeps its error, is never leased, and an operator's retry queues it.
pub async fn failed_jobs_keep_their_error_until_retried<Q: JobQueue>(q: Q) {
    let id = q.enqueue(vec![job("a", "k")]).await.expect("enqueue")[0];
    q.lease("w", 1, LONG).await.expect("lease");
    assert!(q.fail(id, "w", "checksum mismatch", None).await.expect("fail"));
    let j = q.get(id).await.expect("get").expect("job");
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.error.as_deref(), Some("checksum mismatch"));
    assert!(
        q.lease("w", 10, LONG).await.expect("lease").is_empty(),
        "failed jobs stay failed"
    );
    assert!(q.retry(id).await.expect("retry"));
    assert!(!q.retry(id).await.expect("retry"), "only a failed job can be retried");
    let again = q.lease("w2", 10, LONG).await.expect("lease");
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].attempts, 1,
        "a retried job counts its attempts anew (its kind's limit applies afresh)"
    );
}

/// When a lease runs out (its process died), another worker takes the job; the old holder
/// can no longer end it.
pub async fn expired_leases_are_taken_over<Q: JobQueue>(q: Q) {
    let id = q.enqueue(vec![job("a", "k")]).await.expect("enqueue")[0];
    q.lease("dead", 1, Duration::from_millis(200)).await.expect("lease");
    assert!(
        q.lease("live", 1, LONG).await.expect("lease").is_empty(),
        "not before the lease ends"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken = q.lease("live", 1, LONG).await.expect("lease");
    assert_eq!(taken.len(), 1, "taken over after the lease ran out");
    assert_eq!(taken[0].id, id);
    assert_eq!(taken[0].attempts, 2);
    assert!(
        !q.complete(id, "dead").await.expect("complete"),
        "the old holder lost it"
    );
    assert!(q.complete(id, "live").await.expect("complete"));
}

/// Only the worker holding a job stores its progress; it is kept across a retry.
pub async fn progress_is_reported_by_the_holder<Q: JobQueue>(q: Q) {
    let p = crate::model::Progress {
        items_done: 1,
        items_total: 3,
        bytes_done: 10,
        bytes_total: 30,
    };
    let id = q.enqueue(vec![job("a", "p")]).await.expect("enqueue")[0];
    assert!(
        !q.report(id, "w", &p).await.expect("report"),
        "not leased: nobody holds it"
    );
    assert_eq!(q.lease("w", 1, LONG).await.expect("lease").len(), 1);
    assert!(!q.report(id, "other", &p).await.expect("report"));
    assert_eq!(q.get(id).await.expect("get").expect("job").progress, None);
    assert!(q.report(id, "w", &p).await.expect("report"));
    assert_eq!(q.get(id).await.expect("get").expect("job").progress, Some(p));
    assert!(q.fail(id, "w", "later", Some(Utc::now())).await.expect("fail"));
    let again = q.lease("w2", 1, LONG).await.expect("lease");
    assert_eq!(again.first().and_then(|j| j.progress), Some(p), "kept across a retry");
}

/// Renewed leases are not taken over.
pub async fn heartbeats_keep_a_lease<Q: JobQueue>(q: Q) {
    q.enqueue(vec![job("a", "k")]).await.expect("enqueue");
    let id = q.lease("w", 1, Duration::from_millis(300)).await.expect("lease")[0].id;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(q
            .heartbeat(id, "w", Duration::from_millis(300))
            .await
            .expect("heartbeat"));
        assert!(
            q.lease("thief", 1, LONG).await.expect("lease").is_empty(),
            "a renewed lease holds"
        );
    }
}

/// Many workers leasing at once: every job is leased by exactly one.
pub async fn concurrent_leases_never_share_a_job<Q: JobQueue>(q: Arc<Q>) {
    let n = 200;
    let jobs = (0..n).map(|i| job("a", &format!("k{i}"))).collect();
    q.enqueue(jobs).await.expect("enqueue");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (q, seen) = (q.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let got = q.lease(&format!("w{w}"), 7, LONG).await.expect("lease");
                if got.is_empty() {
                    return;
                }
                for j in got {
                    assert!(q.complete(j.id, &format!("w{w}")).await.expect("complete"));
                    seen.lock().expect("lock").push(j.id);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("leasing task");
    }
    let seen = seen.lock().expect("lock").clone();
    let distinct: HashSet<_> = seen.iter().collect();
    assert_eq!(seen.len(), n, "every job leased once");
    assert_eq!(distinct.len(), n, "no job leased twice");
}

/// Listing by kind, state and key, newest first; prune removes old completed jobs only.
pub async fn listing_filters_and_prune<Q: JobQueue>(q: Q) {
    let ids = q
        .enqueue(vec![job("ingest", "f1"), job("index", "b1"), job("ingest", "f2")])
        .await
        .expect("enqueue");
    let leased = q.lease("w", 1, LONG).await.expect("lease");
    assert_eq!(leased[0].id, ids[0], "oldest first");
    q.complete(ids[0], "w").await.expect("complete");
    let all = q
        .list(&JobFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        all.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1], ids[0]]
    );
    let ingest = q
        .list(&JobFilter {
            kind: Some("ingest".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(ingest.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[2], ids[0]]);
    let queued = q
        .list(&JobFilter {
            states: vec![JobState::Queued],
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(queued.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[2], ids[1]]);
    let by_key = q
        .list(&JobFilter {
            key: Some("f2".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(by_key.len(), 1);
    let one = q
        .list(&JobFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(one.len(), 1, "limit holds");
    assert_eq!(
        q.prune(Utc::now() - chrono::Duration::seconds(3600))
            .await
            .expect("prune"),
        0
    );
    assert_eq!(
        q.prune(Utc::now() + chrono::Duration::seconds(1)).await.expect("prune"),
        1
    );
    assert!(
        q.get(ids[0]).await.expect("get").is_none(),
        "the completed job was pruned"
    );
    assert!(
        q.get(ids[1]).await.expect("get").is_some(),
        "queued jobs are never pruned"
    );
}

/// An idle waiter wakes soon after an enqueue, long before its maximum wait.
pub async fn wait_wakes_on_enqueue<Q: JobQueue>(q: Arc<Q>) {
    // Drain any stored wake-up first.
    q.wait(Duration::from_millis(50)).await;
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            q.wait(Duration::from_secs(20)).await;
            t.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.enqueue(vec![job("a", "wake")]).await.expect("enqueue");
    let waited = waiter.await.expect("waiter");
    assert!(
        waited < Duration::from_secs(10),
        "woken by the enqueue, not the timeout: {waited:?}"
    );
}

struct Scripted {
    runs: Mutex<Vec<(String, u32)>>,
    slow: Duration,
}

impl Handler for Scripted {
    async fn run(&self, job: &Job, progress: Arc<crate::model::ProgressCounter>) -> Outcome {
        self.runs.lock().expect("lock").push((job.key.clone(), job.attempts));
        // Four steps of a quarter each, counted as they end.
        progress.set_totals(4, 400);
        for _ in 0..4 {
            tokio::time::sleep(self.slow / 4).await;
            progress.add(1, 100);
        }
        match (job.key.as_str(), job.attempts) {
            ("flaky", 1) => Outcome::Retry("not yet".into()),
            ("stubborn", _) => Outcome::Retry("never".into()),
            ("bad", _) => Outcome::Fail("cannot".into()),
            _ => Outcome::Done,
        }
    }

    fn max_attempts(&self, job: &Job) -> u32 {
        if job.kind == "limited" {
            2
        } else {
            u32::MAX
        }
    }
}

async fn until<Q: JobQueue>(q: &Q, id: i64, state: JobState, within: Duration) -> Job {
    let t = Instant::now();
    loop {
        let j = q.get(id).await.expect("get").expect("job");
        if j.state == state {
            return j;
        }
        assert!(t.elapsed() < within, "job {id} not {state} within {within:?}: {j:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The runner completes good jobs, retries after a backoff, and records failures.
pub async fn runner_runs_retries_and_fails<Q: JobQueue>(q: Arc<Q>) {
    let h = Arc::new(Scripted {
        runs: Mutex::new(Vec::new()),
        slow: Duration::ZERO,
    });
    let mut cfg = RunnerConfig::new(4, LONG);
    cfg.poll = Duration::from_millis(50);
    let _runner = runner::start(q.clone(), h.clone(), cfg);
    let ids = q
        .enqueue(vec![job("a", "good"), job("a", "flaky"), job("a", "bad")])
        .await
        .expect("enqueue");
    until(&*q, ids[0], JobState::Completed, Duration::from_secs(10)).await;
    let flaky = until(&*q, ids[1], JobState::Completed, Duration::from_secs(15)).await;
    assert_eq!(flaky.attempts, 2, "retried once");
    assert_eq!(
        flaky.error.as_deref(),
        Some("not yet"),
        "the retried attempt's error is kept"
    );
    let bad = until(&*q, ids[2], JobState::Failed, Duration::from_secs(10)).await;
    assert_eq!(bad.error.as_deref(), Some("cannot"));
    assert_eq!(bad.attempts, 1, "a failure is not retried");
}

/// A retry after the last attempt its kind allows marks the job failed, with the reason.
pub async fn runner_gives_up_after_the_kinds_attempts<Q: JobQueue>(q: Arc<Q>) {
    let h = Arc::new(Scripted {
        runs: Mutex::new(Vec::new()),
        slow: Duration::ZERO,
    });
    let mut cfg = RunnerConfig::new(2, LONG);
    cfg.poll = Duration::from_millis(50);
    let _runner = runner::start(q.clone(), h.clone(), cfg);
    let ids = q.enqueue(vec![job("limited", "stubborn")]).await.expect("enqueue");
    let j = until(&*q, ids[0], JobState::Failed, Duration::from_secs(15)).await;
    assert_eq!(j.attempts, 2, "{j:?}");
    assert_eq!(j.error.as_deref(), Some("gave up after 2 attempts: never"));
    assert_eq!(
        j.progress,
        Some(crate::model::Progress {
            items_done: 4,
            items_total: 4,
            bytes_done: 400,
            bytes_total: 400
        }),
        "the last attempt's progress is kept"
    );
}

/// A job that runs several times longer than its lease keeps it: the runner renews it.
pub async fn runner_beats_within_a_short_lease<Q: JobQueue>(q: Arc<Q>) {
    static SEEN: AtomicU32 = AtomicU32::new(0);
    let lease = Duration::from_millis(600);
    let h = Arc::new(Scripted {
        runs: Mutex::new(Vec::new()),
        slow: lease * 4,
    });
    let mut cfg = RunnerConfig::new(2, lease);
    cfg.heartbeat = Duration::from_secs(3600); // misconfigured: the runner still beats thrice per lease
    cfg.poll = Duration::from_millis(50);
    let _runner = runner::start(q.clone(), h.clone(), cfg);
    let id = q.enqueue(vec![job("a", "long")]).await.expect("enqueue")[0];
    tokio::time::sleep(lease).await;
    let mut partial = false;
    for _ in 0..6 {
        let got = q.lease("thief", 1, LONG).await.expect("lease");
        assert!(got.is_empty(), "a running job's lease is renewed: {got:?}");
        SEEN.fetch_add(1, Ordering::Relaxed);
        let p = q.get(id).await.expect("get").expect("job").progress;
        partial |= p.is_some_and(|p| p.items_total == 4 && (1..4).contains(&p.items_done));
        tokio::time::sleep(lease / 2).await;
    }
    assert!(partial, "progress is stored while the job runs");
    let j = until(&*q, id, JobState::Completed, Duration::from_secs(10)).await;
    assert_eq!(j.attempts, 1, "never taken over");
    assert_eq!(h.runs.lock().expect("lock").len(), 1, "ran once");
}
