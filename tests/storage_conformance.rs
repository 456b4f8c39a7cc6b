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
    conformance::run(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStore::new("aws", dir.path().join("main"), Some(signer())).unwrap();
    conformance::run(&s).await;
    // The object files are plain files at their keys: the original's bucket layout.
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("main/.dss-tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "no temp files left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let s = dss::storage::AnyStore::Fs(FsStore::new("aws", dir.path(), Some(signer())).unwrap());
    conformance::run(&s).await;
}
