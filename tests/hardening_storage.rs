//! Hardening of the local storage and the job records (issue 9): `file://` sources are
//! opened once and never outside the staging directory, identical writes at once all
//! succeed, and temporary files of a killed process do not stay forever.

mod common;
use common::*;
use dss::server::NativeApp;
use futures::StreamExt;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One request through the router from a spawned task (so requests really run at once).
async fn send(app: Arc<NativeApp>, method: &str, uri: &str, token: &str, body: String) -> Resp {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "dss.test")
        .header("authorization", format!("Bearer {token}"))
        .body(bytes::Bytes::from(body))
        .unwrap();
    let (parts, body) = app.handle(req).await.into_parts();
    let body = match body {
        dss::api::Body::Full(b) => b,
        dss::api::Body::Stream(_) => panic!("no streamed answers expected here"),
    };
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

fn put_file_body(source_url: &str) -> String {
    json!({"source_url": source_url, "creator_uid": 0}).to_string()
}

/// Every regular file under `dir`, hidden directories (temp files, sidecars) included.
fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            all_files(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

fn set_mtime(path: &Path, age: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

fn staging(env: &Env) -> PathBuf {
    env.cfg.staging_dir.canonicalize().unwrap()
}

// ---------------------------------------------------------------------------------------
// Defect 2: staging escape by symlink race.

const INSIDE: &[u8] = b"inside--";
const OUTSIDE: &[u8] = b"OUTSIDE!";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_a_staged_directory_for_a_symlink_never_ingests_outside_bytes() {
    let env = Env::new();
    let staging = staging(&env);
    // Same size inside and out, so nothing but the confinement tells them apart.
    let inside: Vec<u8> = INSIDE.repeat(512);
    let outside: Vec<u8> = OUTSIDE.repeat(512);
    let out_dir = env.data().join("outside");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("file.bin"), &outside).unwrap();
    let race = staging.join("race");
    std::fs::create_dir_all(race.join("inner")).unwrap();
    std::fs::write(race.join("inner/file.bin"), &inside).unwrap();
    std::os::unix::fs::symlink(&out_dir, race.join("swap")).unwrap();

    // `race/inner` is the real directory and the link to the outside, in turns.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, a, b) = (stop.clone(), race.join("inner"), race.join("swap"));
        std::thread::spawn(move || {
            use rustix::fs::{renameat_with, RenameFlags, CWD};
            let mut rounds = 0u32;
            while rounds < 2_000_000 && !stop.load(Ordering::Relaxed) {
                renameat_with(CWD, &a, CWD, &b, RenameFlags::EXCHANGE).unwrap();
                rounds += 1;
            }
            // Leave the real directory in place.
            if rounds % 2 == 1 {
                renameat_with(CWD, &a, CWD, &b, RenameFlags::EXCHANGE).unwrap();
            }
            rounds
        })
    };
    let url = format!("file://{}/race/inner/file.bin", staging.display());
    let token = env.user();
    let results: Vec<(String, Resp)> = futures::stream::iter(0..400)
        .map(|_| {
            let (app, url, token) = (env.app.clone(), url.clone(), token.clone());
            async move {
                let u = uuid::Uuid::new_v4().to_string();
                let uri = format!("/v1/files/{u}?version={V1}&replica=aws");
                let r = tokio::spawn(async move { send(app, "PUT", &uri, &token, put_file_body(&url)).await })
                    .await
                    .unwrap();
                (u, r)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    stop.store(true, Ordering::Relaxed);
    let rounds = swapper.join().unwrap();
    assert!(rounds > 0);

    // Not one byte from outside was stored, anywhere in either replica (once the copies
    // to gcp have settled: replication writes temporary files while it runs).
    env.jobs_completed("replicate", 120).await;
    let mut files = Vec::new();
    all_files(&env.data().join("aws"), &mut files);
    all_files(&env.data().join("gcp"), &mut files);
    let leaked: Vec<&PathBuf> = files
        .iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap();
            bytes.windows(OUTSIDE.len()).any(|w| w == OUTSIDE)
        })
        .collect();
    assert!(leaked.is_empty(), "outside bytes stored in {leaked:?}");
    // Each request either read the inside file or was refused as the client's error.
    let inside_sha = sha256_hex(&inside);
    let mut created = 0;
    for (u, r) in &results {
        if r.status == 201 {
            created += 1;
            let h = env.head(&format!("/v1/files/{u}?replica=aws&version={V1}")).await;
            assert_eq!(h.status, 200);
            assert_eq!(h.header("x-dss-sha256"), Some(inside_sha.as_str()), "file {u}");
        } else {
            r.expect_error(400, "illegal_source_url");
        }
    }
    assert!(created > 0, "no request got through while the directory was swapped");
}

#[tokio::test]
async fn a_symlink_loop_is_an_illegal_source_url() {
    let env = Env::new();
    let staging = staging(&env);
    std::fs::create_dir_all(staging.join("loop")).unwrap();
    std::os::unix::fs::symlink("b", staging.join("loop/a")).unwrap();
    std::os::unix::fs::symlink("a", staging.join("loop/b")).unwrap();
    std::os::unix::fs::symlink("self", staging.join("loop/self")).unwrap();
    std::os::unix::fs::symlink("self", staging.join("loop/dir")).unwrap();
    for path in ["loop/a", "loop/self", "loop/dir/x.txt"] {
        let src = format!("file://{}/{path}", staging.display());
        let u = uuid::Uuid::new_v4().to_string();
        env.put_file(&u, V1, &src, None)
            .await
            .expect_error(400, "illegal_source_url");
    }
}

#[tokio::test]
async fn links_out_of_the_staging_directory_are_refused() {
    let env = Env::new();
    let staging = staging(&env);
    let secret = env.data().join("secret.txt");
    std::fs::write(&secret, b"not for download").unwrap();
    std::fs::create_dir_all(staging.join("out")).unwrap();
    // Absolute, and relative through `..`.
    std::os::unix::fs::symlink(&secret, staging.join("out/abs.txt")).unwrap();
    std::os::unix::fs::symlink("../../secret.txt", staging.join("out/rel.txt")).unwrap();
    std::os::unix::fs::symlink("../..", staging.join("out/up")).unwrap();
    for path in ["out/abs.txt", "out/rel.txt", "out/up/secret.txt"] {
        let src = format!("file://{}/{path}", staging.display());
        let u = uuid::Uuid::new_v4().to_string();
        env.put_file(&u, V1, &src, None)
            .await
            .expect_error(400, "illegal_source_url");
    }
    // A relative link that stays inside is followed.
    let real = env.stage("real.txt", b"inside");
    let dir_name = Path::new(real.trim_start_matches("file://"))
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    std::os::unix::fs::symlink(format!("../{dir_name}/real.txt"), staging.join("out/ok.txt")).unwrap();
    let src = format!("file://{}/out/ok.txt", staging.display());
    let u = uuid::Uuid::new_v4().to_string();
    assert_eq!(env.put_file(&u, V1, &src, None).await.status, 201);
}

#[tokio::test]
async fn a_path_through_a_file_or_to_a_missing_file_is_an_illegal_source_url() {
    let env = Env::new();
    let staging = staging(&env);
    let plain = env.stage("plain.txt", b"x");
    let through = format!("{plain}/below.txt");
    let gone = env.stage("gone.txt", b"soon deleted");
    std::fs::remove_file(gone.trim_start_matches("file://")).unwrap();
    let vanished_dir = env.stage("f.txt", b"dir deleted");
    std::fs::remove_dir_all(Path::new(vanished_dir.trim_start_matches("file://")).parent().unwrap()).unwrap();
    for src in [
        through,
        gone,
        vanished_dir,
        format!("file://{}/nowhere/x", staging.display()),
    ] {
        let u = uuid::Uuid::new_v4().to_string();
        env.put_file(&u, V1, &src, None)
            .await
            .expect_error(400, "illegal_source_url");
    }
}

/// A staged file gone by the time its (resumed) job copies it: the job's recorded
/// failure is the client's 400, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_vanishes_before_its_job_runs_fails_with_illegal_source_url() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("staging/abc")).unwrap();
    let declared = dss::model::checksum::checksums_of(b"bytes that were staged");
    let u = uuid::Uuid::new_v4().to_string();
    let job = dss::bucket::ingest::IngestJob {
        task_id: "t-gone".into(),
        source: dss::bucket::ingest::SourceUrl {
            scheme: "file".into(),
            bucket: String::new(),
            key: "abc/gone.bin".into(),
        },
        replica: "aws".into(),
        uuid: u.clone(),
        version: V1.into(),
        creator_uid: 7,
        expected: Some(declared),
        size: 22,
        content_type: "application/octet-stream".into(),
    };
    std::fs::create_dir_all(dir.path().join("jobs/pending")).unwrap();
    std::fs::write(
        dir.path().join("jobs/pending/t-gone.json"),
        serde_json::to_vec(&job).unwrap(),
    )
    .unwrap();
    let env = Env::in_dir(dir, |_| {});
    let uri = format!("/v1/files/{u}?replica=aws&version={V1}");
    let mut r = env.get(&uri).await;
    for _ in 0..600 {
        if r.status != 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = env.get(&uri).await;
    }
    r.expect_error(400, "illegal_source_url");
}

/// Opens the FIFO for writing when dropped, so a reader stuck on it (the old code) is released.
struct ReleaseFifo(PathBuf);

impl Drop for ReleaseFifo {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.0);
    }
}

#[tokio::test]
async fn the_sidecar_of_a_staged_file_is_confined_too() {
    let env = Env::new();
    let staging = staging(&env);
    // A sidecar that is a link to a file outside: its content type must not leak into
    // the public file metadata.
    let secret = env.data().join("secret.json");
    std::fs::write(&secret, json!({"content_type": "leaked/secret"}).to_string()).unwrap();
    let src = env.stage("data.txt", b"hello");
    let key = src.rsplit_once("/staging/").unwrap().1.to_string();
    let meta = staging.join(".dss-meta").join(format!("{key}.json"));
    std::fs::create_dir_all(meta.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&secret, &meta).unwrap();
    let u = uuid::Uuid::new_v4().to_string();
    assert_eq!(env.put_file(&u, V1, &src, None).await.status, 201);
    let h = env.head(&format!("/v1/files/{u}?replica=aws&version={V1}")).await;
    assert_eq!(h.header("x-dss-content-type"), Some("text/plain"));

    // A sidecar that is a FIFO must not hang the request.
    let src = env.stage("fifo.txt", b"hello");
    let key = src.rsplit_once("/staging/").unwrap().1.to_string();
    let fifo = staging.join(".dss-meta").join(format!("{key}.json"));
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let _release = ReleaseFifo(fifo);
    let u = uuid::Uuid::new_v4().to_string();
    let r = tokio::time::timeout(Duration::from_secs(10), env.put_file(&u, V1, &src, None))
        .await
        .expect("a FIFO sidecar hung the request");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

// ---------------------------------------------------------------------------------------
// Defect 5: identical writes at once.

async fn index_settles(env: &Env, query: serde_json::Value) {
    for _ in 0..400 {
        let left = env
            .jobs("index")
            .await
            .iter()
            .filter(|j| j.state != dss::jobs::queue::JobState::Completed)
            .count();
        let hits = env
            .req("POST", "/v1/search?replica=aws", None, &query.to_string(), &[])
            .await
            .json()["total_hits"]
            .as_u64();
        if left == 0 && hits == Some(1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the index job was never processed: {query}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_bundle_puts_at_once_answer_one_201_and_the_rest_200() {
    let env = Env::new();
    let f = env.file("a.txt", b"abc").await;
    let b = uuid::Uuid::new_v4().to_string();
    let body = json!({"files": [{"uuid": f, "version": V1, "name": "a.txt", "indexed": false}], "creator_uid": 12})
        .to_string();
    let token = env.user();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (app, token, body) = (env.app.clone(), token.clone(), body.clone());
            let uri = format!("/v1/bundles/{b}?version={V1}&replica=aws");
            tokio::spawn(async move { send(app, "PUT", &uri, &token, body).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in futures::future::join_all(tasks).await {
        let r = t.unwrap();
        assert!(
            r.status == 200 || r.status == 201,
            "{}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        statuses.push(r.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 31, "{statuses:?}");
    index_settles(&env, json!({"es_query": {"query": {"term": {"uuid": b}}}})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_deletes_at_once_all_answer_200() {
    let env = Env::new();
    let f = env.file("a.txt", b"abc").await;
    let b = uuid::Uuid::new_v4().to_string();
    let r = env.put_bundle(&b, V1, &[("a.txt", &f, V1)], None).await;
    assert_eq!(r.status, 201);
    let token = env.admin();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (app, token) = (env.app.clone(), token.clone());
            let uri = format!("/v1/bundles/{b}?replica=aws&version={V1}");
            let body = json!({"reason": "withdrawn"}).to_string();
            tokio::spawn(async move { send(app, "DELETE", &uri, &token, body).await })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        let r = t.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    index_settles(
        &env,
        json!({"es_query": {"query": {"bool": {"must": [{"term": {"admin_deleted": true}}, {"term": {"uuid": b}}]}}}}),
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Defect 6: temporary files of killed processes.

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_sweeps_temp_files_of_dead_processes_but_not_of_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("aws/main/.dss-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    // What the old code left: flat files, one long untouched, one just written.
    std::fs::write(tmp.join("0123456789abcdef0123456789abcdef"), vec![7u8; 4096]).unwrap();
    set_mtime(
        &tmp.join("0123456789abcdef0123456789abcdef"),
        Duration::from_secs(3 * 3600),
    );
    std::fs::write(tmp.join("fedcba9876543210fedcba9876543210"), b"recent").unwrap();
    // A killed process's directory: its lock file is there but nobody holds it.
    std::fs::create_dir_all(tmp.join("deadbeef")).unwrap();
    std::fs::write(tmp.join("deadbeef/partial"), vec![1u8; 4096]).unwrap();
    std::fs::write(tmp.join("deadbeef.lock"), b"").unwrap();
    // A directory without any lock file.
    std::fs::create_dir_all(tmp.join("orphan")).unwrap();
    std::fs::write(tmp.join("orphan/partial"), b"x").unwrap();
    // And a job record's temp file left by an earlier version's crash long ago.
    let index_pending = dir.path().join("jobs/index/pending");
    std::fs::create_dir_all(&index_pending).unwrap();
    let stale_record = index_pending.join("aws.x.json.0123abcd.tmp");
    std::fs::write(&stale_record, b"{").unwrap();
    set_mtime(&stale_record, Duration::from_secs(3 * 3600));

    let env = Env::in_dir(dir, |_| {});
    let left = entries(&tmp);
    assert!(
        !left.contains(&"0123456789abcdef0123456789abcdef".to_string()),
        "{left:?}"
    );
    assert!(
        left.contains(&"fedcba9876543210fedcba9876543210".to_string()),
        "{left:?}"
    );
    for gone in ["deadbeef", "deadbeef.lock", "orphan"] {
        assert!(!left.contains(&gone.to_string()), "{gone} left: {left:?}");
    }
    // Old job records are moved by a task the server starts beside its workers: soon.
    let t = std::time::Instant::now();
    while stale_record.exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "the stale record is still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The running server's own directory (and its lock) is all that is new.
    let live: Vec<&String> = left
        .iter()
        .filter(|n| n.as_str() != "fedcba9876543210fedcba9876543210")
        .collect();
    assert_eq!(live.len(), 2, "{left:?}");
    let live_dir = tmp.join(live.iter().find(|n| !n.ends_with(".lock")).unwrap());
    assert!(live_dir.is_dir());

    // A write in progress in the live store survives another store opening the same root
    // (`dss reindex` beside `dss serve`), and that one's writes work.
    std::fs::write(live_dir.join("in-flight"), b"being written").unwrap();
    {
        use dss::storage::Store;
        let other = dss::storage::fs::FsStore::new("aws", env.main_dir("aws"), None).unwrap();
        assert!(live_dir.join("in-flight").exists());
        other
            .put(
                "files/x",
                bytes::Bytes::from_static(b"y"),
                dss::storage::PutOptions::if_absent(),
            )
            .await
            .unwrap();
        assert_eq!(entries(&tmp).len(), 5, "one more directory and lock");
    }
    // Closed stores take their own directory with them.
    assert_eq!(entries(&tmp).len(), 3);
    assert!(live_dir.join("in-flight").exists());

    // Uploads still work through the live store after all that.
    env.file("after.txt", b"after").await;
}

#[tokio::test]
async fn orphaned_incoming_copies_are_swept_when_old_and_jobless() {
    use dss::storage::{memory::MemoryStore, PutOptions, Store};
    let store = MemoryStore::new("aws", None, Arc::new(dss::model::SystemClock));
    for key in [
        "incoming/pending",
        "incoming/orphan-a",
        "incoming/orphan-b",
        "blobs/keep",
    ] {
        store
            .put(key, bytes::Bytes::from_static(b"copy"), PutOptions::overwrite())
            .await
            .unwrap();
    }
    let live: std::collections::HashSet<String> = ["pending".to_string()].into();
    let now = chrono::Utc::now();
    // Younger than an hour (an inline ingest has no job record): kept, job or not.
    let soon = now + chrono::Duration::minutes(30);
    assert_eq!(dss::jobs::sweep_incoming(&store, &live, soon).await.unwrap(), 0);
    assert_eq!(dss::storage::list_all(&store, "").await.unwrap().len(), 4);
    // Two hours on: the copies whose job is gone go; the pending job's stays.
    let later = now + chrono::Duration::hours(2);
    assert_eq!(dss::jobs::sweep_incoming(&store, &live, later).await.unwrap(), 2);
    let left = dss::storage::list_all(&store, "").await.unwrap();
    assert_eq!(left, ["blobs/keep", "incoming/pending"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_removes_old_orphaned_incoming_copies() {
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("aws/main/incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    std::fs::write(incoming.join("dead-task"), b"half a copy").unwrap();
    set_mtime(&incoming.join("dead-task"), Duration::from_secs(2 * 3600));
    let env = Env::in_dir(dir, |_| {});
    let path = env.main_dir("aws").join("incoming/dead-task");
    for _ in 0..400 {
        if !path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("an orphaned incoming copy was never swept");
}
