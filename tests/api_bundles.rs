//! `/v1/bundles`: manifests, paging, idempotency, tombstones, enumeration.

mod common;
use common::*;
use dss::model::manifest::{BundleFile, BundleManifest, FileMetadata};
use serde_json::{json, Value};

/// Write `n` file metadata documents straight into the store (fast setup for paging).
fn seed_files(env: &Env, n: usize) -> Vec<(String, String, String)> {
    let c = dss::model::checksum::checksums_of(b"x");
    (0..n)
        .map(|i| {
            let u = uuid::Uuid::new_v4().to_string();
            let m = FileMetadata::new(0, V1, "text/plain", 1, &c);
            let p = env.main_dir("aws").join(format!("files/{u}.{V1}"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, m.to_bytes()).unwrap();
            (format!("file_{i:04}.txt"), u, V1.to_string())
        })
        .collect()
}

fn refs(files: &[(String, String, String)]) -> Vec<(&str, &str, &str)> {
    files
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect()
}

#[tokio::test]
async fn put_get_bundle_and_download_every_file() {
    let env = Env::new();
    let dir = fixtures().join("example_bundle");
    let mut entries = Vec::new();
    let mut expected = std::collections::HashMap::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in &names {
        let data = std::fs::read(dir.join(name)).unwrap();
        let u = env.file(name, &data).await;
        expected.insert(name.clone(), sha256_hex(&data));
        entries.push((name.clone(), u, V1.to_string()));
    }
    let b = uuid::Uuid::new_v4().to_string();
    let r = env.put_bundle(&b, V2, &refs(&entries), None).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["version"], V2);
    assert_eq!(j["manifest"]["format"], "0.0.1");
    assert_eq!(j["manifest"]["files"].as_array().unwrap().len(), names.len());

    let h = env.head(&format!("/v1/bundles/{b}?replica=aws")).await;
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    let g = env.get(&format!("/v1/bundles/{b}?replica=aws")).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.header("x-openapi-pagination"), Some("false"));
    assert_eq!(g.header("x-openapi-paginated-content-key"), Some("bundle.files"));
    let bundle = &g.json()["bundle"];
    assert_eq!(bundle["uuid"], b.as_str());
    assert_eq!(bundle["version"], V2);
    assert_eq!(bundle["creator_uid"], 12);
    let files = bundle["files"].as_array().unwrap();
    assert_eq!(files.len(), names.len());
    for f in files {
        let keys: std::collections::BTreeSet<_> = f.as_object().unwrap().keys().cloned().collect();
        let want: std::collections::BTreeSet<_> = [
            "name",
            "content-type",
            "size",
            "uuid",
            "version",
            "crc32c",
            "s3_etag",
            "sha1",
            "sha256",
            "indexed",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(keys, want);
        assert_eq!(f["content-type"], "application/json");
        // Download each file the way `hca dss download` does and check its sha256.
        let name = f["name"].as_str().unwrap();
        let loc = env
            .get(&format!(
                "/v1/files/{}?replica=aws&version={}",
                f["uuid"].as_str().unwrap(),
                f["version"].as_str().unwrap()
            ))
            .await;
        let d = env
            .req(
                "GET",
                &local_part(loc.header("location").unwrap()),
                None,
                "",
                &[("range", "bytes=0-")],
            )
            .await;
        assert_eq!(sha256_hex(&d.body), expected[name]);
        assert_eq!(f["sha256"], expected[name].as_str());
    }

    // The stored manifest is byte-identical to what the original would have written.
    let stored = std::fs::read(env.main_dir("aws").join(format!("bundles/{b}.{V2}"))).unwrap();
    let parsed: BundleManifest = serde_json::from_slice(&stored).unwrap();
    assert_eq!(parsed.to_bytes(), stored);
    assert!(String::from_utf8(stored).unwrap().starts_with(&format!(
        r#"{{"format": "0.0.1", "version": "{V2}", "files": [{{"name": ""#
    )));

    // presignedurls: the original's checkout protocol. The first request starts a
    // checkout and sends the client back (301, a token, Retry-After); followed, it ends
    // in 200 with a working URL into the checkout copy for every entry.
    let first = env
        .get(&format!("/v1/bundles/{b}?replica=aws&presignedurls=true"))
        .await;
    assert_eq!(first.status, 301, "{}", String::from_utf8_lossy(&first.body));
    assert_eq!(first.header("retry-after"), Some("10"));
    let mut next = local_part(first.header("location").unwrap());
    assert!(
        next.contains("token=") && next.contains(&format!("version={V2}")),
        "{next}"
    );
    let t = std::time::Instant::now();
    let g = loop {
        let r = env.get(&next).await;
        if r.status != 301 {
            break r;
        }
        assert!(t.elapsed().as_secs() < 30, "checkout never ended");
        next = local_part(r.header("location").unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(g.status, 200, "{}", String::from_utf8_lossy(&g.body));
    for f in g.json()["bundle"]["files"].as_array().unwrap() {
        let url = f["url"].as_str().unwrap();
        assert!(url.contains(&format!("bundles/{b}.{V2}/")), "{url}");
        let d = env.get(&local_part(url)).await;
        assert_eq!(sha256_hex(&d.body), f["sha256"].as_str().unwrap());
    }
    // The copy is valid now: no 301 for the next client.
    let again = env
        .get(&format!("/v1/bundles/{b}?replica=aws&presignedurls=true"))
        .await;
    assert_eq!(again.status, 200);
    // A token of a checkout that does not exist, and one that is not a token.
    let junk = r#"{"execution_id": "00000000-0000-4000-8000-000000000000", "start_time": 1, "attempts": 1}"#;
    let nb = uuid::Uuid::new_v4().to_string();
    let f0 = g.json()["bundle"]["files"][0].clone();
    assert_eq!(
        env.put_bundle(
            &nb,
            V2,
            &[("x", f0["uuid"].as_str().unwrap(), f0["version"].as_str().unwrap())],
            None
        )
        .await
        .status,
        201
    );
    env.get(&format!(
        "/v1/bundles/{nb}?replica=aws&presignedurls=true&token={}",
        urlencoding(junk)
    ))
    .await
    .expect_error(500, "checkout_error");
    env.get(&format!("/v1/bundles/{nb}?replica=aws&presignedurls=true&token=%7B%7D"))
        .await
        .expect_error(400, "illegal_token");
    env.get(&format!(
        "/v1/bundles/{b}?replica=aws&presignedurls=true&directurls=true"
    ))
    .await
    .expect_error(400, "only_one_urltype");
}

#[tokio::test]
async fn bundle_paging() {
    let env = Env::new();
    let files = seed_files(&env, 500);
    for (n, per_page) in [(11usize, 10usize), (33, 10), (500, 100), (500, 500), (33, 500)] {
        let b = uuid::Uuid::new_v4().to_string();
        assert_eq!(env.put_bundle(&b, V1, &refs(&files[..n]), None).await.status, 201);
        let mut url = format!("/v1/bundles/{b}?replica=aws&per_page={per_page}");
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let r = env.get(&url).await;
            pages += 1;
            let got = r.json()["bundle"]["files"].as_array().unwrap().clone();
            assert!(got.len() <= per_page);
            seen.extend(got.iter().map(|f| f["name"].as_str().unwrap().to_string()));
            if r.status == 206 {
                assert_eq!(r.header("x-openapi-pagination"), Some("true"));
                let link = r.header("link").unwrap();
                assert!(link.ends_with(">; rel='next'"), "{link}");
                let next = link.trim_start_matches('<').split('>').next().unwrap();
                assert!(next.starts_with("http://dss.test/v1/bundles/"), "absolute link: {next}");
                assert!(next.contains(&format!("version={V1}")), "link pins the version: {next}");
                url = local_part(next);
            } else {
                assert_eq!(r.status, 200);
                assert!(r.header("link").is_none());
                break;
            }
        }
        let want: Vec<_> = files[..n].iter().map(|f| f.0.clone()).collect();
        assert_eq!(
            seen, want,
            "every file once, in manifest order ({n} files, per_page {per_page})"
        );
        assert_eq!(pages, n.div_ceil(per_page).max(1));
    }
    let b = uuid::Uuid::new_v4().to_string();
    env.put_bundle(&b, V1, &refs(&files[..3]), None).await;
    for bad in ["per_page=9", "per_page=501", "per_page=x", "start_at=-1"] {
        env.get(&format!("/v1/bundles/{b}?replica=aws&{bad}"))
            .await
            .expect_error(400, "illegal_arguments");
    }
    // Past the end: an empty page.
    let r = env.get(&format!("/v1/bundles/{b}?replica=aws&start_at=50")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["bundle"]["files"], json!([]));
}

#[tokio::test]
async fn large_manifests_are_kept_in_memory_and_paged_from_there() {
    let env = Env::new();
    // Above the old limit of cached manifests (2,000 files).
    let files = seed_files(&env, 2_500);
    let b = uuid::Uuid::new_v4().to_string();
    let put = env.put_bundle(&b, V1, &refs(&files), None).await;
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    assert_eq!(put.json()["manifest"]["files"].as_array().unwrap().len(), 2_500);
    let first = env.get(&format!("/v1/bundles/{b}?replica=aws")).await;
    assert_eq!(first.status, 206);
    let last = env.get(&format!("/v1/bundles/{b}?replica=aws&start_at=2000")).await;
    assert_eq!(last.status, 200);
    assert_eq!(last.json()["bundle"]["files"][499]["name"], "file_2499.txt");
    // The stored manifest now reads as garbage: pages still come from the parsed copy.
    std::fs::write(env.main_dir("aws").join(format!("bundles/{b}.{V1}")), b"not json").unwrap();
    let again = env.get(&format!("/v1/bundles/{b}?replica=aws")).await;
    assert_eq!(again.status, 206, "{}", String::from_utf8_lossy(&again.body));
    assert_eq!(again.body, first.body);
    let again = env.get(&format!("/v1/bundles/{b}?replica=aws&start_at=2000")).await;
    assert_eq!(again.body, last.body);
}

#[tokio::test]
async fn a_bundle_over_the_file_cap_is_refused_naming_the_cap() {
    let env = Env::new();
    let cap = dss::api::dss::bundles::MAX_BUNDLE_FILES;
    // Refused before any lookup: these files do not exist (they would be `file_missing`).
    let id = uuid::Uuid::new_v4().to_string();
    let item = format!(r#"{{"uuid": "{id}", "version": "{V1}", "name": "f", "indexed": false}}"#);
    let body = format!(r#"{{"creator_uid": 1, "files": [{}]}}"#, vec![item; cap + 1].join(", "));
    let b = uuid::Uuid::new_v4().to_string();
    let r = env
        .req(
            "PUT",
            &format!("/v1/bundles/{b}?version={V1}&replica=aws"),
            Some(&env.user()),
            &body,
            &[],
        )
        .await;
    r.expect_error(400, "illegal_arguments");
    let title = r.json()["title"].as_str().unwrap().to_string();
    assert!(title.contains(&cap.to_string()), "{title}");
}

#[tokio::test]
async fn bundle_put_idempotency_and_errors() {
    let env = Env::new();
    let files = seed_files(&env, 3);
    let b = uuid::Uuid::new_v4().to_string();
    assert_eq!(env.put_bundle(&b, V1, &refs(&files), None).await.status, 201);
    assert_eq!(
        env.put_bundle(&b, V1, &refs(&files), None).await.status,
        200,
        "identical re-PUT"
    );
    env.put_bundle(&b, V1, &refs(&files[..2]), None)
        .await
        .expect_error(409, "bundle_already_exists");
    let mut dup = refs(&files);
    dup[1].0 = dup[0].0;
    env.put_bundle(&uuid::Uuid::new_v4().to_string(), V1, &dup, None)
        .await
        .expect_error(400, "duplicate_filename");
    let missing = uuid::Uuid::new_v4().to_string();
    env.put_bundle(&uuid::Uuid::new_v4().to_string(), V1, &[("a", &missing, V1)], None)
        .await
        .expect_error(400, "file_missing");
    // A file version that is not a DSS_VERSION is refused at once, not waited for.
    let env_slow = Env::with(|c| c.bundle_file_wait = 30);
    let started = std::time::Instant::now();
    env_slow
        .put_bundle(
            &uuid::Uuid::new_v4().to_string(),
            V1,
            &[("a", &files[0].1, "../../x")],
            None,
        )
        .await
        .expect_error(400, "illegal_version");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    for bad in ["/abs", "./x", "a/./b", "~/x", "a\\b", ".", "..", "a/../b"] {
        env.put_bundle(&uuid::Uuid::new_v4().to_string(), V1, &[(bad, &files[0].1, V1)], None)
            .await
            .expect_error(400, "illegal_arguments");
    }
    let t = env.user();
    let put = |q: &str, body: &str| {
        let (t, uri, body) = (t.clone(), format!("/v1/bundles/{b}{q}"), body.to_string());
        let env = &env;
        async move { env.req("PUT", &uri, Some(&t), &body, &[]).await }
    };
    let body = json!({"files": [], "creator_uid": 1}).to_string();
    put(&format!("?version={V1}"), &body)
        .await
        .expect_error(400, "illegal_arguments");
    put("?replica=aws&version=2017", &body)
        .await
        .expect_error(400, "illegal_version");
    put(
        &format!("?replica=aws&version={V2}"),
        r#"{"files": "no", "creator_uid": 1}"#,
    )
    .await
    .expect_error(400, "illegal_arguments");
    put(
        &format!("?replica=aws&version={V2}"),
        r#"{"files": [{"uuid": "x"}], "creator_uid": 1}"#,
    )
    .await
    .expect_error(400, "illegal_arguments");
    put(&format!("?replica=aws&version={V2}"), r#"{"files": []}"#)
        .await
        .expect_error(400, "illegal_arguments");
    env.req(
        "PUT",
        &format!("/v1/bundles/{b}?replica=aws&version={V2}"),
        None,
        &body,
        &[],
    )
    .await
    .expect_error(401, "OAuthProblem");
    // Nothing written by the failures.
    let keys: Vec<_> = std::fs::read_dir(env.main_dir("aws").join("bundles"))
        .unwrap()
        .collect();
    assert_eq!(keys.len(), 1);
}

#[tokio::test]
async fn bundle_waits_for_late_file_metadata() {
    let env = Env::with(|c| c.bundle_file_wait = 5);
    let files = seed_files(&env, 1);
    let late = uuid::Uuid::new_v4().to_string();
    let env_ref = &env;
    let writer = async {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let c = dss::model::checksum::checksums_of(b"late");
        let m = FileMetadata::new(0, V1, "text/plain", 4, &c);
        std::fs::write(env_ref.main_dir("aws").join(format!("files/{late}.{V1}")), m.to_bytes()).unwrap();
    };
    let b = uuid::Uuid::new_v4().to_string();
    let entries = [
        (files[0].0.as_str(), files[0].1.as_str(), V1),
        ("late.txt", late.as_str(), V1),
    ];
    let put = env.put_bundle(&b, V1, &entries, None);
    let (r, _) = tokio::join!(put, writer);
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn patch_bundle() {
    let env = Env::new();
    let files = seed_files(&env, 4);
    let b = uuid::Uuid::new_v4().to_string();
    env.put_bundle(&b, V1, &refs(&files[..3]), None).await;
    let body = json!({
        "add_files": [{"uuid": files[3].1, "version": V1, "name": "added.txt", "indexed": true}],
        "remove_files": [{"uuid": files[0].1, "version": V1, "name": files[0].0}],
    });
    let r = env
        .req(
            "PATCH",
            &format!("/v1/bundles/{b}?replica=aws&version={V1}"),
            Some(&env.user()),
            &body.to_string(),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let new_version = r.json()["version"].as_str().unwrap().to_string();
    assert_eq!(r.json()["uuid"], b.as_str());
    assert!(new_version.as_str() > V1);
    let g = env.get(&format!("/v1/bundles/{b}?replica=aws")).await.json();
    assert_eq!(g["bundle"]["version"], new_version.as_str());
    let names: Vec<_> = g["bundle"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        vec![files[1].0.clone(), files[2].0.clone(), "added.txt".to_string()]
    );
    // The old version is unchanged.
    let old = env
        .get(&format!("/v1/bundles/{b}?replica=aws&version={V1}"))
        .await
        .json();
    assert_eq!(old["bundle"]["files"].as_array().unwrap().len(), 3);
    // Errors.
    let p = |q: String, body: String| {
        let t = env.user();
        let env = &env;
        async move { env.req("PATCH", &q, Some(&t), &body, &[]).await }
    };
    p(
        format!("/v1/bundles/{}?replica=aws&version={V1}", uuid::Uuid::new_v4()),
        "{}".into(),
    )
    .await
    .expect_error(404, "not_found");
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"uuid": files[0].1, "version": V1, "name": "n", "indexed": false}))
        .collect();
    p(
        format!("/v1/bundles/{b}?replica=aws&version={V1}"),
        json!({"add_files": many}).to_string(),
    )
    .await
    .expect_error(400, "illegal_arguments");
    let dup = json!({"add_files": [{"uuid": files[3].1, "version": V1, "name": files[1].0, "indexed": false}]});
    p(format!("/v1/bundles/{b}?replica=aws&version={V1}"), dup.to_string())
        .await
        .expect_error(400, "duplicate_filename");
    p(format!("/v1/bundles/{b}?replica=aws"), "{}".into())
        .await
        .expect_error(400, "illegal_arguments");
}

#[tokio::test]
async fn tombstones_of_the_original_bucket() {
    let env = Env::new();
    env.load_original_bucket("aws");
    // deadbeef-0000: tombstoned for all versions.
    let all_dead = "deadbeef-0000-4a6b-8f0d-a7d2105c23be";
    env.get(&format!("/v1/bundles/{all_dead}?replica=aws"))
        .await
        .expect_error(404, "not_found");
    env.get(&format!(
        "/v1/bundles/{all_dead}?replica=aws&version=2017-12-05T235728.441373Z"
    ))
    .await
    .expect_error(404, "not_found");
    // deadbeef-0001: its latest version is tombstoned, so "latest" is the one before.
    let one_dead = "deadbeef-0001-4a6b-8f0d-a7d2105c23be";
    let g = env.get(&format!("/v1/bundles/{one_dead}?replica=aws")).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.json()["bundle"]["version"], "2017-12-05T235728.441373Z");
    env.get(&format!(
        "/v1/bundles/{one_dead}?replica=aws&version=2017-12-05T235850.950361Z"
    ))
    .await
    .expect_error(404, "not_found");
    assert_eq!(
        env.get(&format!(
            "/v1/bundles/{one_dead}?replica=aws&version=2017-12-05T235528.321679Z"
        ))
        .await
        .status,
        200
    );
    // The 0.0.2 manifest is served with its files, and they download.
    let g = env
        .get("/v1/bundles/011c7340-9b3c-4d62-bf49-090d79daf198?replica=aws")
        .await;
    assert_eq!(g.status, 200);
    let f = &g.json()["bundle"]["files"][0];
    assert_eq!(f["name"], "LICENSE");
    assert_eq!(f["s3_etag"], "3b83ef96387f14655fc854ddc3c6bd57");
    let loc = env
        .get(&format!(
            "/v1/files/{}?replica=aws&version={}",
            f["uuid"].as_str().unwrap(),
            f["version"].as_str().unwrap()
        ))
        .await;
    let d = env.get(&local_part(loc.header("location").unwrap())).await;
    assert_eq!(sha256_hex(&d.body), f["sha256"].as_str().unwrap());

    // /bundles/all hides every tombstoned version.
    let all = env.get("/v1/bundles/all?replica=aws").await;
    assert_eq!(all.status, 200);
    let j = all.json();
    let listed: Vec<(String, String)> = j["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["uuid"].as_str().unwrap().into(),
                b["version"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (
                "011c7340-9b3c-4d62-bf49-090d79daf198".to_string(),
                "2017-06-20T214506.766634Z".to_string()
            ),
            (one_dead.to_string(), "2017-12-05T235528.321679Z".to_string()),
            (one_dead.to_string(), "2017-12-05T235728.441373Z".to_string()),
        ]
    );
    assert_eq!(j["page_count"], 3);
    assert_eq!(j["has_more"], false);
    assert_eq!(j["object"], "list");
    assert_eq!(j["search_prefix"], "bundles/");
    assert!(j.get("token").is_none() && j.get("search_after").is_none());
    // Prefix filter, case-insensitive.
    let p = env.get("/v1/bundles/all?replica=aws&prefix=DEADBEEF").await.json();
    assert_eq!(p["bundles"].as_array().unwrap().len(), 2);
    assert_eq!(p["search_prefix"], "bundles/deadbeef");
    for bad in ["prefix=-x", "prefix=a_b", "prefix=a/b", "per_page=9", "per_page=501"] {
        env.get(&format!("/v1/bundles/all?replica=aws&{bad}"))
            .await
            .expect_error(400, "illegal_arguments");
    }
    env.get("/v1/bundles/all").await.expect_error(400, "illegal_arguments");
}

#[tokio::test]
async fn delete_writes_tombstones() {
    let env = Env::new();
    let files = seed_files(&env, 1);
    let b = uuid::Uuid::new_v4().to_string();
    env.put_bundle(&b, V1, &refs(&files), None).await;
    env.put_bundle(&b, V2, &refs(&files), None).await;
    let del = |token: Option<String>, q: String, body: &'static str| {
        let env = &env;
        async move { env.req("DELETE", &q, token.as_deref(), body, &[]).await }
    };
    let reason = r#"{"reason": "bad data"}"#;
    del(Some(env.user()), format!("/v1/bundles/{b}?replica=aws"), reason)
        .await
        .expect_error(403, "Forbidden");
    del(None, format!("/v1/bundles/{b}?replica=aws"), reason)
        .await
        .expect_error(401, "OAuthProblem");
    del(
        Some(env.admin()),
        format!("/v1/bundles/{}?replica=aws", uuid::Uuid::new_v4()),
        reason,
    )
    .await
    .expect_error(404, "not_found");
    del(Some(env.admin()), format!("/v1/bundles/{b}?replica=aws"), "{}")
        .await
        .expect_error(400, "illegal_arguments");
    del(
        Some(env.admin()),
        format!("/v1/bundles/{b}?replica=aws&version=2000-01-01T000000.000000Z"),
        reason,
    )
    .await
    .expect_error(404, "not_found");

    // Versioned tombstone: hides V2, latest falls back to V1.
    let r = del(
        Some(env.admin()),
        format!("/v1/bundles/{b}?replica=aws&version={V2}"),
        reason,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({}));
    let stored = std::fs::read_to_string(env.main_dir("aws").join(format!("bundles/{b}.{V2}.dead"))).unwrap();
    assert_eq!(
        stored,
        format!(r#"{{"email": "{ADMIN}", "reason": "bad data", "admin_deleted": true, "version": "{V2}"}}"#)
    );
    assert_eq!(
        env.get(&format!("/v1/bundles/{b}?replica=aws")).await.json()["bundle"]["version"],
        V1
    );
    // Same tombstone again: 200; a different reason: 409.
    assert_eq!(
        del(
            Some(env.admin()),
            format!("/v1/bundles/{b}?replica=aws&version={V2}"),
            reason
        )
        .await
        .status,
        200
    );
    del(
        Some(env.admin()),
        format!("/v1/bundles/{b}?replica=aws&version={V2}"),
        r#"{"reason": "other"}"#,
    )
    .await
    .expect_error(409, "bundle_tombstone_already_exists");

    // Unversioned tombstone hides everything.
    assert_eq!(
        del(Some(env.admin()), format!("/v1/bundles/{b}?replica=aws"), reason)
            .await
            .status,
        200
    );
    let stored = std::fs::read_to_string(env.main_dir("aws").join(format!("bundles/{b}.dead"))).unwrap();
    assert_eq!(
        stored,
        format!(r#"{{"email": "{ADMIN}", "reason": "bad data", "admin_deleted": true}}"#)
    );
    env.get(&format!("/v1/bundles/{b}?replica=aws"))
        .await
        .expect_error(404, "not_found");
    env.get(&format!("/v1/bundles/{b}?replica=aws&version={V1}"))
        .await
        .expect_error(404, "not_found");
    let all = env.get("/v1/bundles/all?replica=aws").await.json();
    assert_eq!(all["bundles"], json!([]));
}

#[tokio::test]
async fn enumerate_pages_cover_every_bundle_once() {
    let env = Env::new();
    let c = dss::model::checksum::checksums_of(b"x");
    let meta = FileMetadata::new(0, V1, "text/plain", 1, &c);
    let file = BundleFile::new("x", "ce55fd51-7833-469b-be0b-5da88ebebfcd", V1, false, &meta);
    let dir = env.main_dir("aws").join("bundles");
    std::fs::create_dir_all(&dir).unwrap();
    let mut expected = Vec::new();
    // 120 uuids with 1-3 versions each; every 7th uuid tombstoned wholly, every 5th has its
    // first version tombstoned.
    for i in 0..120 {
        let u = format!("{:08x}-0000-4000-8000-000000000000", i * 7919);
        let versions = [V1, V2, "2018-01-01T000000.000000Z"];
        let n = 1 + i % 3;
        for (j, v) in versions.iter().take(n).enumerate() {
            let m = BundleManifest::new(v, vec![file.clone()], 1);
            std::fs::write(dir.join(format!("{u}.{v}")), m.to_bytes()).unwrap();
            let dead_version = i % 5 == 0 && j == 0;
            if dead_version {
                std::fs::write(dir.join(format!("{u}.{v}.dead")), "{}").unwrap();
            }
            if i % 7 != 0 && !dead_version {
                expected.push((u.clone(), v.to_string()));
            }
        }
        if i % 7 == 0 {
            std::fs::write(dir.join(format!("{u}.dead")), "{}").unwrap();
        }
    }
    expected.sort();
    for per_page in [10usize, 13, 100, 500] {
        let mut url = format!("/v1/bundles/all?replica=aws&per_page={per_page}");
        let mut seen = Vec::new();
        loop {
            let r = env.get(&url).await;
            let j = r.json();
            let page: Vec<(String, String)> = j["bundles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    (
                        b["uuid"].as_str().unwrap().into(),
                        b["version"].as_str().unwrap().into(),
                    )
                })
                .collect();
            assert!(page.len() <= per_page);
            assert_eq!(j["page_count"], page.len());
            seen.extend(page);
            if r.status == 206 {
                assert_eq!(j["has_more"], true);
                let link = r.header("link").unwrap();
                assert!(link.ends_with(">; rel='next'"));
                assert_eq!(
                    j["link"].as_str().unwrap(),
                    link.trim_start_matches('<').split('>').next().unwrap()
                );
                url = local_part(j["link"].as_str().unwrap());
            } else {
                assert_eq!(r.status, 200);
                break;
            }
        }
        assert_eq!(
            seen, expected,
            "per_page {per_page}: each living bundle exactly once, in order"
        );
    }
}

/// The freshness rule (DSS_BUCKET_FRESHNESS): this server's own writes are seen at once;
/// a write made behind its back (another backend, the bucket itself) within the
/// freshness time; a read that names a version never waits for it.
#[tokio::test]
async fn latest_versions_follow_the_freshness_rule() {
    let env = Env::with(|c| c.bucket_freshness = 3.0);
    let files = seed_files(&env, 1);
    let bu = uuid::Uuid::new_v4().to_string();
    let latest = || {
        let (uri, env) = (format!("/v1/bundles/{bu}?replica=aws"), &env);
        async move { env.get(&uri).await.json()["bundle"]["version"].clone() }
    };
    assert_eq!(env.put_bundle(&bu, V1, &refs(&files), None).await.status, 201);
    assert_eq!(latest().await, V1);
    // Our own write: seen at once, though the listing of V1 was fresh.
    assert_eq!(env.put_bundle(&bu, V2, &refs(&files), None).await.status, 201);
    assert_eq!(latest().await, V2);
    // A newer version written behind the server's back: the kept listing answers...
    let v3 = "2017-06-20T000000.000000Z";
    let dir = env.main_dir("aws").join("bundles");
    let v2_bytes = std::fs::read(dir.join(format!("{bu}.{V2}"))).unwrap();
    let v3_bytes = String::from_utf8(v2_bytes).unwrap().replace(V2, v3);
    std::fs::write(dir.join(format!("{bu}.{v3}")), v3_bytes).unwrap();
    assert_eq!(
        latest().await,
        V2,
        "within the freshness time, the kept listing answers"
    );
    // ...but asking for that version finds it at once,
    let r = env.get(&format!("/v1/bundles/{bu}?replica=aws&version={v3}")).await;
    assert_eq!(
        r.status,
        200,
        "a named version lists again: {}",
        String::from_utf8_lossy(&r.body)
    );
    // and once the freshness time has passed, it is the latest.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_eq!(latest().await, v3);

    // Files alike: a newer version written directly shows after the freshness time.
    let (_, fu, _) = &files[0];
    let head = || {
        let (uri, env) = (format!("/v1/files/{fu}?replica=aws"), &env);
        async move { env.head(&uri).await.header("x-dss-version").map(str::to_string) }
    };
    assert_eq!(head().await.as_deref(), Some(V1));
    let c = dss::model::checksum::checksums_of(b"x");
    let newer = FileMetadata::new(0, V2, "text/plain", 1, &c);
    std::fs::write(env.main_dir("aws").join(format!("files/{fu}.{V2}")), newer.to_bytes()).unwrap();
    assert_eq!(head().await.as_deref(), Some(V1));
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_eq!(head().await.as_deref(), Some(V2));
}

/// With freshness 0 every read lists: a write behind the server's back is seen at once.
#[tokio::test]
async fn freshness_zero_lists_on_every_read() {
    let env = Env::with(|c| c.bucket_freshness = 0.0);
    let files = seed_files(&env, 1);
    let bu = uuid::Uuid::new_v4().to_string();
    assert_eq!(env.put_bundle(&bu, V1, &refs(&files), None).await.status, 201);
    let dir = env.main_dir("aws").join("bundles");
    std::fs::write(dir.join(format!("{bu}.dead")), b"{\"reason\": \"behind its back\"}").unwrap();
    let r = env.get(&format!("/v1/bundles/{bu}?replica=aws")).await;
    assert_eq!(r.status, 404, "the tombstone is seen at once");
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
