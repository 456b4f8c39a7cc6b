//! The storage conformance suite, run against every backend available here.

use dss::model::SystemClock;
use dss::storage::conformance;
use dss::storage::fs::FsStore;
use dss::storage::memory::MemoryStore;
use dss::storage::signer::Signer;
use std::sync::Arc;

fn signer() -> Arc<Signer> {
    Arc::new(Signer::new(
        "http://127.0.0.1:5000",
        b"test-secret".to_vec(),
        Arc::new(SystemClock),
    ))
}

#[tokio::test]
async fn memory_store_conforms() {
    let s = MemoryStore::new("aws", Some(signer()), Arc::new(SystemClock));
    let peer = MemoryStore::new("staging", None, Arc::new(SystemClock));
    conformance::run_with_peer(&s, &peer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStore::new("aws", dir.path().join("main"), Some(signer())).unwrap();
    let peer = FsStore::new("staging", dir.path().join("staging"), None).unwrap();
    conformance::run_with_peer(&s, &peer).await;
    // The object files are plain files at their keys: the original's bucket layout.
    // No temp files left behind: the store's own temp directory (beside its lock) is empty.
    let mut tmp = Vec::new();
    for e in std::fs::read_dir(dir.path().join("main/.dss-tmp")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            tmp.extend(std::fs::read_dir(e.path()).unwrap().map(|f| f.unwrap().path()));
        }
    }
    assert!(tmp.is_empty(), "no temp files left behind: {tmp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let s: dss::storage::AnyStore =
        dss::storage::AnyStore::Fs(FsStore::new("aws", dir.path(), Some(signer())).unwrap());
    conformance::run(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_listing_sees_changes_made_behind_its_back() {
    use dss::storage::Store;
    let dir = tempfile::tempdir().unwrap();
    let s = FsStore::new("aws", dir.path(), None).unwrap();
    std::fs::create_dir_all(dir.path().join("bundles")).unwrap();
    std::fs::write(dir.path().join("bundles/a.1"), "x").unwrap();
    assert_eq!(s.list("bundles/", None, 100).await.unwrap().keys, vec!["bundles/a.1"]);
    // Immediately (same coarse mtime tick) and after the listing has aged.
    std::fs::write(dir.path().join("bundles/b.1"), "x").unwrap();
    assert_eq!(
        s.list("bundles/", None, 100).await.unwrap().keys,
        vec!["bundles/a.1", "bundles/b.1"]
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(s.list("bundles/", None, 100).await.unwrap().keys.len(), 2);
    std::fs::write(dir.path().join("bundles/c.1"), "x").unwrap();
    std::fs::remove_file(dir.path().join("bundles/a.1")).unwrap();
    assert_eq!(
        s.list("bundles/", None, 100).await.unwrap().keys,
        vec!["bundles/b.1", "bundles/c.1"]
    );
    // Prefix and token paging on the cached listing.
    assert_eq!(s.list("bundles/c", None, 100).await.unwrap().keys, vec!["bundles/c.1"]);
    assert_eq!(
        s.list("bundles/", Some("bundles/b.1"), 100).await.unwrap().keys,
        vec!["bundles/c.1"]
    );
    assert!(s
        .list("bundles/", Some("bundles/z"), 100)
        .await
        .unwrap()
        .keys
        .is_empty());
}
