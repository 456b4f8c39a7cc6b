//! The one conformance suite every [`Store`] must pass. Each backend's tests call
//! [`run`] on a fresh, empty store; a failure panics with the name of the check.

use super::*;
use crate::model::platform::box_stream;
use futures::StreamExt;

async fn collect(mut s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.expect("stream chunk"));
    }
    out
}

/// Run every check against `store`, and the cross-store checks with `peer` (another,
/// empty store of the same backend, such as a second bucket).
pub async fn run_with_peer<S: Store>(store: &S, peer: &S) {
    run(store).await;
    copy_from_peer(store, peer).await;
}

/// Options for a JSON object carrying one user-metadata entry, and that metadata.
fn json_with_metadata() -> (PutOptions, BTreeMap<String, String>) {
    let mut md = BTreeMap::new();
    md.insert("hca-dss-sha256".to_string(), "abc".to_string());
    let opts = PutOptions {
        if_absent: false,
        content_type: Some("application/json".into()),
        metadata: md.clone(),
        expiring: false,
    };
    (opts, md)
}

async fn copy_from_peer<S: Store>(s: &S, peer: &S) {
    let (opts, md) = json_with_metadata();
    peer.put("staging/x.json", Bytes::from_static(b"{\"a\": 1}"), opts)
        .await
        .expect("put in peer");
    let tagged = peer.head_with_tags("staging/x.json").await.expect("head_with_tags");
    assert_eq!(
        tagged.metadata.get("hca-dss-sha256").map(String::as_str),
        Some("abc"),
        "metadata visible with tags"
    );
    s.copy_from(peer, "staging/x.json", "blobs/x", PutOptions::if_absent())
        .await
        .expect("copy_from");
    assert_eq!(&s.get("blobs/x").await.expect("get copy")[..], b"{\"a\": 1}");
    let h = s.head("blobs/x").await.expect("head copy");
    assert_eq!(
        h.content_type.as_deref(),
        Some("application/json"),
        "copy keeps content type"
    );
    assert_eq!(h.metadata, md, "copy keeps user metadata");
    assert!(
        matches!(
            s.copy_from(peer, "staging/x.json", "blobs/x", PutOptions::if_absent())
                .await,
            Err(StoreError::AlreadyExists(_))
        ),
        "create-only copy onto an existing key is refused"
    );
    assert!(
        matches!(
            s.copy_from(peer, "staging/missing", "blobs/y", PutOptions::if_absent())
                .await,
            Err(StoreError::NotFound(_))
        ),
        "copy of a missing source"
    );
    assert!(
        matches!(s.head("blobs/y").await, Err(StoreError::NotFound(_))),
        "nothing written by a failed copy"
    );
    s.delete("blobs/x").await.expect("delete");
    peer.delete("staging/x.json").await.expect("delete");
}

/// Run every check against `store`, which must be empty.
pub async fn run<S: Store>(store: &S) {
    put_get_head(store).await;
    ranges(store).await;
    if_absent(store).await;
    concurrent_if_absent(store).await;
    listing(store).await;
    copy_delete(store).await;
    streams(store).await;
    bad_keys(store).await;
    presign(store).await;
}

async fn put_get_head<S: Store>(s: &S) {
    assert!(
        matches!(s.get("files/missing").await, Err(StoreError::NotFound(_))),
        "get missing"
    );
    assert!(
        matches!(s.head("files/missing").await, Err(StoreError::NotFound(_))),
        "head missing"
    );
    let (opts, md) = json_with_metadata();
    s.put("files/a.1", Bytes::from_static(b"{\"x\": 1}"), opts)
        .await
        .expect("put");
    assert_eq!(&s.get("files/a.1").await.expect("get")[..], b"{\"x\": 1}");
    let h = s.head("files/a.1").await.expect("head");
    assert_eq!(h.size, 8, "head size");
    assert_eq!(h.content_type.as_deref(), Some("application/json"), "content type kept");
    assert_eq!(h.metadata, md, "user metadata kept");
    // Overwrite replaces bytes and metadata.
    s.put("files/a.1", Bytes::from_static(b"new"), PutOptions::overwrite())
        .await
        .expect("overwrite");
    assert_eq!(&s.get("files/a.1").await.expect("get")[..], b"new");
    assert!(
        s.head("files/a.1").await.expect("head").metadata.is_empty(),
        "overwrite drops metadata"
    );
    // Empty objects exist.
    s.put("files/empty", Bytes::new(), PutOptions::overwrite())
        .await
        .expect("put empty");
    assert_eq!(s.head("files/empty").await.expect("head empty").size, 0);
    s.delete("files/a.1").await.expect("delete");
    s.delete("files/empty").await.expect("delete");
}

async fn ranges<S: Store>(s: &S) {
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    s.put("blobs/r", Bytes::from(data.clone()), PutOptions::overwrite())
        .await
        .expect("put");
    let cases = [
        (None, 0, 1000),
        (Some(ByteRange::FromTo(0, 0)), 0, 1),
        (Some(ByteRange::FromTo(10, 19)), 10, 20),
        (Some(ByteRange::FromTo(990, 5000)), 990, 1000),
        (Some(ByteRange::From(0)), 0, 1000),
        (Some(ByteRange::From(999)), 999, 1000),
        (Some(ByteRange::Suffix(5)), 995, 1000),
        (Some(ByteRange::Suffix(5000)), 0, 1000),
    ];
    for (r, a, b) in cases {
        let (meta, got, stream) = s.get_range("blobs/r", r).await.expect("range");
        assert_eq!(meta.size, 1000);
        assert_eq!(got, (a, b), "resolved {r:?}");
        assert_eq!(collect(stream).await, &data[a as usize..b as usize], "bytes of {r:?}");
    }
    for r in [ByteRange::From(1000), ByteRange::FromTo(5, 4), ByteRange::Suffix(0)] {
        assert!(
            matches!(
                s.get_range("blobs/r", Some(r)).await,
                Err(StoreError::RangeNotSatisfiable)
            ),
            "{r:?}"
        );
    }
    assert!(matches!(
        s.get_range("blobs/none", None).await,
        Err(StoreError::NotFound(_))
    ));
    s.delete("blobs/r").await.expect("delete");
}

async fn if_absent<S: Store>(s: &S) {
    s.put("bundles/x.1", Bytes::from_static(b"one"), PutOptions::if_absent())
        .await
        .expect("first");
    let again = s
        .put("bundles/x.1", Bytes::from_static(b"two"), PutOptions::if_absent())
        .await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists(_))),
        "second create-only put refused"
    );
    assert_eq!(
        &s.get("bundles/x.1").await.expect("get")[..],
        b"one",
        "first write kept"
    );
    s.delete("bundles/x.1").await.expect("delete");
}

async fn concurrent_if_absent<S: Store>(s: &S) {
    for round in 0..5 {
        let key = format!("bundles/race.{round}");
        let attempts = (0..16).map(|i| {
            let key = key.clone();
            async move {
                (
                    i,
                    s.put(&key, Bytes::from(format!("writer {i}")), PutOptions::if_absent())
                        .await,
                )
            }
        });
        let results = futures::future::join_all(attempts).await;
        let winners: Vec<usize> = results.iter().filter(|(_, r)| r.is_ok()).map(|(i, _)| *i).collect();
        assert_eq!(winners.len(), 1, "exactly one create-only writer wins");
        for (_, r) in &results {
            assert!(
                r.is_ok() || matches!(r, Err(StoreError::AlreadyExists(_))),
                "losers see AlreadyExists"
            );
        }
        let stored = s.get(&key).await.expect("get");
        assert_eq!(
            &stored[..],
            format!("writer {}", winners[0]).as_bytes(),
            "the winner's bytes are stored"
        );
        s.delete(&key).await.expect("delete");
    }
}

async fn listing<S: Store>(s: &S) {
    let mut expected = Vec::new();
    for i in 0..25 {
        let k = format!("bundles/u{:02}.v", i);
        s.put(&k, Bytes::from_static(b"m"), PutOptions::overwrite())
            .await
            .expect("put");
        expected.push(k);
    }
    s.put("bundles-other/z", Bytes::from_static(b"z"), PutOptions::overwrite())
        .await
        .expect("put");
    s.put("files/u00.v", Bytes::from_static(b"f"), PutOptions::overwrite())
        .await
        .expect("put");
    s.put(
        "checkout/bundles/u.1/a/b.json",
        Bytes::from_static(b"n"),
        PutOptions::overwrite(),
    )
    .await
    .expect("nested");

    assert_eq!(
        list_all(s, "bundles/").await.expect("list"),
        expected,
        "prefix listing, sorted"
    );
    assert_eq!(
        list_all(s, "bundles/u1").await.expect("list"),
        expected[10..20].to_vec(),
        "partial name prefix"
    );
    assert!(list_all(s, "nothing/").await.expect("list").is_empty());
    assert_eq!(
        list_all(s, "checkout/").await.expect("list"),
        vec!["checkout/bundles/u.1/a/b.json".to_string()]
    );
    // Paging: 10 + 10 + 5, each key once, tokens continue where the page ended.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let p = s.list("bundles/", token.as_deref(), 10).await.expect("page");
        pages += 1;
        assert!(p.keys.len() <= 10);
        seen.extend(p.keys);
        match p.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, expected, "pages cover every key once");
    assert!(pages == 3 || pages == 4, "page count");
    for k in expected.iter().chain(
        [
            "bundles-other/z".to_string(),
            "files/u00.v".to_string(),
            "checkout/bundles/u.1/a/b.json".to_string(),
        ]
        .iter(),
    ) {
        s.delete(k).await.expect("delete");
    }
    assert!(
        list_all(s, "").await.expect("list").is_empty(),
        "store empty after deletes"
    );
}

async fn copy_delete<S: Store>(s: &S) {
    let opts = PutOptions {
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    s.put("staging/a", Bytes::from_static(b"payload"), opts)
        .await
        .expect("put");
    s.copy("staging/a", "blobs/b").await.expect("copy");
    assert_eq!(&s.get("blobs/b").await.expect("get")[..], b"payload");
    assert_eq!(
        s.head("blobs/b").await.expect("head").content_type.as_deref(),
        Some("text/plain"),
        "copy keeps content type"
    );
    assert!(
        matches!(s.copy("staging/none", "blobs/c").await, Err(StoreError::NotFound(_))),
        "copy of missing"
    );
    s.delete("staging/a").await.expect("delete");
    s.delete("staging/a").await.expect("delete twice is fine");
    s.delete("blobs/b").await.expect("delete");
}

async fn streams<S: Store>(s: &S) {
    let chunks: Vec<std::io::Result<Bytes>> = (0..64).map(|i| Ok(Bytes::from(vec![i as u8; 16 * 1024]))).collect();
    let n = s
        .put_stream(
            "blobs/big",
            box_stream(futures::stream::iter(chunks)),
            PutOptions::if_absent(),
        )
        .await
        .expect("put_stream");
    assert_eq!(n, 64 * 16 * 1024);
    let data = s.get("blobs/big").await.expect("get");
    assert_eq!(data.len(), 64 * 16 * 1024);
    assert!(
        data.chunks(16 * 1024)
            .enumerate()
            .all(|(i, c)| c.iter().all(|b| *b == i as u8)),
        "bytes in order"
    );
    // A stream that fails half way leaves nothing visible.
    let failing: Vec<std::io::Result<Bytes>> =
        vec![Ok(Bytes::from_static(b"part")), Err(std::io::Error::other("boom"))];
    assert!(s
        .put_stream(
            "blobs/partial",
            box_stream(futures::stream::iter(failing)),
            PutOptions::overwrite()
        )
        .await
        .is_err());
    assert!(
        matches!(s.head("blobs/partial").await, Err(StoreError::NotFound(_))),
        "no partial object"
    );
    let dup: Vec<std::io::Result<Bytes>> = vec![Ok(Bytes::from_static(b"other"))];
    assert!(matches!(
        s.put_stream(
            "blobs/big",
            box_stream(futures::stream::iter(dup)),
            PutOptions::if_absent()
        )
        .await,
        Err(StoreError::AlreadyExists(_))
    ));
    s.delete("blobs/big").await.expect("delete");
}

async fn bad_keys<S: Store>(s: &S) {
    for k in ["", "/abs", "a/../../etc", "a//b", "a/./b", "trailing/"] {
        assert!(
            s.put(k, Bytes::from_static(b"x"), PutOptions::overwrite())
                .await
                .is_err(),
            "key {k:?} refused"
        );
    }
}

async fn presign<S: Store>(s: &S) {
    s.put("blobs/p", Bytes::from_static(b"abc"), PutOptions::overwrite())
        .await
        .expect("put");
    let url = s
        .presign_get(
            "blobs/p",
            Duration::from_secs(60),
            &PresignOptions {
                content_disposition: Some("attachment".into()),
                content_type: None,
            },
        )
        .await
        .expect("presign");
    assert!(
        url.starts_with("http://") || url.starts_with("https://"),
        "absolute URL: {url}"
    );
    s.delete("blobs/p").await.expect("delete");
}
