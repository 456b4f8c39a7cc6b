//! `/v1/files`: ingest from staging, metadata, redirects, downloads, errors.

mod common;
use common::*;

#[tokio::test]
async fn put_head_get_download() {
    let env = Env::new();
    let data = std::fs::read(fixtures().join("example_bundle/donor_organism_0.json")).unwrap();
    let u = uuid::Uuid::new_v4().to_string();
    let src = env.stage("donor_organism_0.json", &data);
    let r = env.put_file(&u, V1, &src, None).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json(), serde_json::json!({"version": V1}));

    // The stored objects are exactly the original's layout and JSON.
    let c = dss::model::checksum::checksums_of(&data);
    let blob = env.main_dir("aws").join(c.blob_key());
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        data,
        "blob bytes stored at the content address"
    );
    let meta = std::fs::read_to_string(env.main_dir("aws").join(format!("files/{u}.{V1}"))).unwrap();
    assert_eq!(
        meta,
        format!(
            r#"{{"format": "0.0.4", "creator_uid": 0, "version": "{V1}", "content-type": "application/json", "size": {}, "crc32c": "{}", "s3-etag": "{}", "sha1": "{}", "sha256": "{}"}}"#,
            data.len(),
            c.crc32c,
            c.s3_etag,
            c.sha1,
            c.sha256
        )
    );

    let h = env.head(&format!("/v1/files/{u}?replica=aws")).await;
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(h.header("x-dss-sha256"), Some(c.sha256.as_str()));
    assert_eq!(h.header("x-dss-sha1"), Some(c.sha1.as_str()));
    assert_eq!(h.header("x-dss-s3-etag"), Some(c.s3_etag.as_str()));
    assert_eq!(h.header("x-dss-crc32c"), Some(c.crc32c.as_str()));
    assert_eq!(h.header("x-dss-size"), Some(data.len().to_string().as_str()));
    assert_eq!(h.header("x-dss-version"), Some(V1));
    assert_eq!(h.header("x-dss-creator-uid"), Some("0"));
    assert_eq!(h.header("x-dss-content-type"), Some("application/json"));

    let g = env.get(&format!("/v1/files/{u}?replica=aws&version={V1}")).await;
    assert_eq!(g.status, 302);
    assert_eq!(g.header("x-dss-sha256"), Some(c.sha256.as_str()));
    let loc = g.header("location").unwrap().to_string();
    // Served from the replica's checkout bucket, as the original.
    assert!(loc.starts_with("http://dss.test/blob/aws-checkout/blobs/"), "{loc}");
    let d = env.get(&local_part(&loc)).await;
    assert_eq!(d.status, 200);
    assert_eq!(sha256_hex(&d.body), c.sha256, "downloaded bytes match");
    assert_eq!(d.header("content-type"), Some("application/json"));
    assert_eq!(d.header("content-length"), Some(data.len().to_string().as_str()));
    assert_eq!(d.header("accept-ranges"), Some("bytes"));

    // Range requests, as `hca dss download` sends them.
    let p = env
        .req("GET", &local_part(&loc), None, "", &[("range", "bytes=0-")])
        .await;
    assert_eq!(p.status, 206);
    assert_eq!(&p.body[..], &data[..]);
    let p = env
        .req("GET", &local_part(&loc), None, "", &[("range", "bytes=10-19")])
        .await;
    assert_eq!(p.status, 206);
    assert_eq!(&p.body[..], &data[10..20]);
    assert_eq!(
        p.header("content-range"),
        Some(format!("bytes 10-19/{}", data.len()).as_str())
    );
    let p = env
        .req("GET", &local_part(&loc), None, "", &[("range", "bytes=-5")])
        .await;
    assert_eq!(&p.body[..], &data[data.len() - 5..]);
    let p = env
        .req(
            "GET",
            &local_part(&loc),
            None,
            "",
            &[("range", &format!("bytes={}-", data.len() + 10))],
        )
        .await;
    assert_eq!(p.status, 416);

    // content_disposition travels in the signed URL.
    let g = env
        .get(&format!(
            "/v1/files/{u}?replica=aws&content_disposition=attachment%3B%20filename%3Dx.json"
        ))
        .await;
    let d = env.get(&local_part(g.header("location").unwrap())).await;
    assert_eq!(d.header("content-disposition"), Some("attachment; filename=x.json"));
}

#[tokio::test]
async fn download_urls_cannot_be_forged() {
    let env = Env::new();
    let u = env.file("a.txt", b"secret bytes").await;
    let g = env.get(&format!("/v1/files/{u}?replica=aws")).await;
    let loc = local_part(g.header("location").unwrap());
    let other = env.file("b.txt", b"other bytes").await;
    let g2 = env.get(&format!("/v1/files/{other}?replica=aws")).await;
    let loc2 = local_part(g2.header("location").unwrap());
    // Swap the signature of one URL onto the other's path.
    let (path1, _) = loc.split_once('?').unwrap();
    let (_, query2) = loc2.split_once('?').unwrap();
    env.get(&format!("{path1}?{query2}"))
        .await
        .expect_error(403, "forbidden");
    env.get(path1).await.expect_error(403, "forbidden");
    let tampered = loc.replace("expires=", "expires=9");
    env.get(&tampered).await.expect_error(403, "forbidden");
}

#[tokio::test]
async fn idempotent_and_conflicting_puts() {
    let env = Env::new();
    let src = env.stage("x.bin", b"some data");
    let u = uuid::Uuid::new_v4().to_string();
    assert_eq!(env.put_file(&u, V1, &src, None).await.status, 201);
    // Same uuid, version and data: 200.
    assert_eq!(env.put_file(&u, V1, &src, None).await.status, 200);
    // Same data under a new uuid: 201 (blob shared).
    let u2 = uuid::Uuid::new_v4().to_string();
    assert_eq!(env.put_file(&u2, V1, &src, None).await.status, 201);
    // Same uuid and version, different data: 409.
    let other = env.stage("x.bin", b"other data");
    env.put_file(&u, V1, &other, None)
        .await
        .expect_error(409, "file_already_exists");
    // A new version of the same uuid is fine, and becomes the latest.
    assert_eq!(env.put_file(&u, V2, &other, None).await.status, 201);
    let h = env.head(&format!("/v1/files/{u}?replica=aws")).await;
    assert_eq!(h.header("x-dss-version"), Some(V2));
    let h = env.head(&format!("/v1/files/{u}?replica=aws&version={V1}")).await;
    assert_eq!(h.header("x-dss-version"), Some(V1));
    // Uppercase uuid is the same object.
    let up = u.to_uppercase();
    assert_eq!(env.put_file(&up, V1, &src, None).await.status, 200);
}

#[tokio::test]
async fn put_file_bad_input() {
    let env = Env::new();
    let src = env.stage("x.bin", b"data");
    let u = uuid::Uuid::new_v4().to_string();
    let t = env.user();
    let put = |uri: String, body: String| {
        let t = t.clone();
        let env = &env;
        async move { env.req("PUT", &uri, Some(&t), &body, &[]).await }
    };
    let ok_body = format!(r#"{{"source_url": "{src}", "creator_uid": 0}}"#);
    put(
        format!("/v1/files/{u}?version=2017-06-16T19:36:04.240704Z"),
        ok_body.clone(),
    )
    .await
    .expect_error(400, "illegal_version");
    put(format!("/v1/files/{u}?version=yesterday"), ok_body.clone())
        .await
        .expect_error(400, "illegal_version");
    put(format!("/v1/files/{u}"), ok_body.clone())
        .await
        .expect_error(400, "illegal_arguments");
    put(format!("/v1/files/not-a-uuid?version={V1}"), ok_body.clone())
        .await
        .expect_error(400, "illegal_arguments");
    put(format!("/v1/files/{u}?version={V1}"), "{".into())
        .await
        .expect_error(400, "illegal_arguments");
    put(format!("/v1/files/{u}?version={V1}"), "".into())
        .await
        .expect_error(400, "illegal_arguments");
    put(format!("/v1/files/{u}?version={V1}"), "[1]".into())
        .await
        .expect_error(400, "illegal_arguments");
    put(
        format!("/v1/files/{u}?version={V1}"),
        format!(r#"{{"source_url": "{src}"}}"#),
    )
    .await
    .expect_error(400, "illegal_arguments");
    put(
        format!("/v1/files/{u}?version={V1}"),
        format!(r#"{{"source_url": "{src}", "creator_uid": "me"}}"#),
    )
    .await
    .expect_error(400, "illegal_arguments");
    let with = |s: &str| format!(r#"{{"source_url": "{s}", "creator_uid": 0}}"#);
    put(format!("/v1/files/{u}?version={V1}"), with("wasb://b/k"))
        .await
        .expect_error(400, "unknown_source_schema");
    put(format!("/v1/files/{u}?version={V1}"), with("ftp://b/k"))
        .await
        .expect_error(400, "unknown_source_schema");
    put(format!("/v1/files/{u}?version={V1}"), with("s3://bucket/key"))
        .await
        .expect_error(400, "illegal_source_url");
    put(format!("/v1/files/{u}?version={V1}"), with("gs://bucket/key"))
        .await
        .expect_error(400, "illegal_source_url");
    put(format!("/v1/files/{u}?version={V1}"), with("file:///etc/passwd"))
        .await
        .expect_error(400, "illegal_source_url");
    let escape = format!(
        "file://{}/../url-signing.key",
        env.cfg.staging_dir.canonicalize().unwrap().display()
    );
    put(format!("/v1/files/{u}?version={V1}"), with(&escape))
        .await
        .expect_error(400, "illegal_source_url");
    let missing = format!(
        "file://{}/nope/x.bin",
        env.cfg.staging_dir.canonicalize().unwrap().display()
    );
    put(format!("/v1/files/{u}?version={V1}"), with(&missing))
        .await
        .expect_error(400, "illegal_source_url");
    put(format!("/v1/files/{u}?version={V1}&replica=azure"), ok_body.clone())
        .await
        .expect_error(400, "illegal_arguments");

    // Nothing was written by any of these.
    let files = env.main_dir("aws").join("files");
    assert!(
        !files.exists() || std::fs::read_dir(&files).unwrap().next().is_none(),
        "no file metadata written"
    );

    // Auth: none, garbage, wrong group, no group.
    env.req("PUT", &format!("/v1/files/{u}?version={V1}"), None, &ok_body, &[])
        .await
        .expect_error(401, "OAuthProblem");
    env.req(
        "PUT",
        &format!("/v1/files/{u}?version={V1}"),
        Some("garbage"),
        &ok_body,
        &[],
    )
    .await
    .expect_error(401, "Unauthorized");
    let public = env.token("p@example.org", Some("public"));
    env.req(
        "PUT",
        &format!("/v1/files/{u}?version={V1}"),
        Some(&public),
        &ok_body,
        &[],
    )
    .await
    .expect_error(403, "Forbidden");
    let nogroup = env.token("p@example.org", None);
    env.req(
        "PUT",
        &format!("/v1/files/{u}?version={V1}"),
        Some(&nogroup),
        &ok_body,
        &[],
    )
    .await
    .expect_error(403, "Forbidden");
}

#[tokio::test]
async fn staged_checksums_are_verified() {
    let env = Env::new();
    let u = uuid::Uuid::new_v4().to_string();
    // Declared checksums (as the hca CLI tags staging objects) that do not match the bytes: 422.
    let src = env.stage("x.bin", b"actual bytes");
    let key = src.rsplit_once("/staging/").unwrap().1.to_string();
    let c = dss::model::checksum::checksums_of(b"different bytes");
    write_sidecar(
        &env,
        &key,
        &[
            ("hca-dss-sha256", &c.sha256),
            ("hca-dss-sha1", &c.sha1),
            ("hca-dss-s3_etag", &c.s3_etag),
            ("hca-dss-crc32c", &c.crc32c),
        ],
    );
    env.put_file(&u, V1, &src, None)
        .await
        .expect_error(422, "checksum_mismatch");
    // Malformed and missing declared checksums.
    write_sidecar(
        &env,
        &key,
        &[
            ("hca-dss-sha256", "zz"),
            ("hca-dss-sha1", &c.sha1),
            ("hca-dss-s3_etag", &c.s3_etag),
            ("hca-dss-crc32c", &c.crc32c),
        ],
    );
    env.put_file(&u, V1, &src, None)
        .await
        .expect_error(422, "invalid_checksum");
    write_sidecar(&env, &key, &[("hca-dss-sha256", &c.sha256)]);
    env.put_file(&u, V1, &src, None)
        .await
        .expect_error(422, "missing_checksum");
    assert!(
        !env.main_dir("aws").join("blobs").exists()
            || std::fs::read_dir(env.main_dir("aws").join("blobs"))
                .unwrap()
                .next()
                .is_none()
    );
    // Correct declarations, in upper case as some clients send them: accepted.
    let good = dss::model::checksum::checksums_of(b"actual bytes");
    let up = |s: &str| s.to_uppercase();
    write_sidecar(
        &env,
        &key,
        &[
            ("hca-dss-sha256", &up(&good.sha256)),
            ("hca-dss-sha1", &good.sha1),
            ("hca-dss-s3_etag", &good.s3_etag),
            ("hca-dss-crc32c", &good.crc32c),
        ],
    );
    assert_eq!(env.put_file(&u, V1, &src, None).await.status, 201);
}

fn write_sidecar(env: &Env, key: &str, md: &[(&str, &str)]) {
    let path = env.cfg.staging_dir.join(".dss-meta").join(format!("{key}.json"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let metadata: serde_json::Map<String, serde_json::Value> = md
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    std::fs::write(path, serde_json::json!({"metadata": metadata}).to_string()).unwrap();
}

#[tokio::test]
async fn get_file_errors() {
    let env = Env::new();
    let u = env.file("a.txt", b"hello").await;
    let missing = uuid::Uuid::new_v4();
    env.get(&format!("/v1/files/{missing}?replica=aws"))
        .await
        .expect_error(404, "not_found");
    env.head(&format!("/v1/files/{missing}?replica=aws")).await;
    env.get(&format!("/v1/files/{u}"))
        .await
        .expect_error(400, "illegal_arguments");
    env.get(&format!("/v1/files/{u}?replica=azure"))
        .await
        .expect_error(400, "illegal_arguments");
    // GET's version has no format: a non-version is simply not found.
    env.get(&format!("/v1/files/{u}?replica=aws&version=9000"))
        .await
        .expect_error(404, "not_found");
    env.get(&format!("/v1/files/{u}?replica=aws&version=../../../etc"))
        .await
        .expect_error(404, "not_found");
    env.get(&format!("/v1/files/{u}?replica=aws&token=%7B%7D"))
        .await
        .expect_error(400, "illegal_token");
    env.get(&format!("/v1/files/{u}?replica=aws&token=nonsense"))
        .await
        .expect_error(400, "illegal_token");
    env.get(&format!("/v1/files/{u}?replica=aws&directurl=true"))
        .await
        .expect_error(400, "directurls_unavailable");
    // Copied to gcp.
    env.eventually("GET", &format!("/v1/files/{u}?replica=gcp"), 302, 30)
        .await;
    env.req("DELETE", &format!("/v1/files/{u}?replica=aws"), None, "", &[])
        .await
        .expect_error(405, "method_not_allowed");
    env.get("/v1/nothing").await.expect_error(404, "not_found");
}

#[tokio::test]
async fn file_into_gcp_replica() {
    let env = Env::new();
    let src = env.stage("g.txt", b"for gcp");
    let u = uuid::Uuid::new_v4().to_string();
    assert_eq!(env.put_file(&u, V1, &src, Some("gcp")).await.status, 201);
    let g = env.get(&format!("/v1/files/{u}?replica=gcp")).await;
    assert_eq!(g.status, 302);
    let d = env.get(&local_part(g.header("location").unwrap())).await;
    assert_eq!(&d.body[..], b"for gcp");
    // Copied to aws.
    let g = env
        .eventually("GET", &format!("/v1/files/{u}?replica=aws"), 302, 30)
        .await;
    let d = env.get(&local_part(g.header("location").unwrap())).await;
    assert_eq!(&d.body[..], b"for gcp");
}

#[tokio::test]
async fn original_bucket_files_are_served() {
    let env = Env::new();
    env.load_original_bucket("aws");
    let u = "ce55fd51-7833-469b-be0b-5da88ebebfcd";
    // Latest version of the original's 0.0.3-format metadata.
    let h = env.head(&format!("/v1/files/{u}?replica=aws")).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("x-dss-version"), Some("2017-06-18T075702.020366Z"));
    assert_eq!(h.header("x-dss-creator-uid"), Some("1234"));
    for (v, sha) in [
        (
            "2017-06-16T193604.240704Z",
            "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
        ),
        (
            "2017-06-18T075702.020366Z",
            "9cdc9050cecf59381fed55a2433140b69596fc861bee55abeafd1f9150f3e2da",
        ),
    ] {
        let g = env.get(&format!("/v1/files/{u}?replica=aws&version={v}")).await;
        assert_eq!(g.status, 302);
        let d = env.get(&local_part(g.header("location").unwrap())).await;
        assert_eq!(sha256_hex(&d.body), sha, "bytes of {v}");
    }
}

#[tokio::test]
async fn read_only_mode() {
    let env = Env::with(|c| c.read_only_mode = Some("1".into()));
    let src = env.stage("x", b"x");
    let u = uuid::Uuid::new_v4().to_string();
    let r = env.put_file(&u, V1, &src, None).await;
    r.expect_error(503, "read_only");
    assert_eq!(r.header("retry-after"), Some("600"));
    let r = env
        .req(
            "PATCH",
            &format!("/v1/bundles/{u}?replica=aws&version={V1}"),
            None,
            "{}",
            &[],
        )
        .await;
    r.expect_error(503, "read_only");
    assert_eq!(r.header("retry-after"), Some("600"));
    env.get(&format!("/v1/files/{u}?replica=aws"))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn staging_symlinks_and_special_files_are_refused() {
    let env = Env::new();
    let staging = env.cfg.staging_dir.canonicalize().unwrap();
    // A link to the server's own secrets, and a directory link out of the staging area.
    std::fs::create_dir_all(staging.join("evil")).unwrap();
    std::os::unix::fs::symlink(env.data().join("url-signing.key"), staging.join("evil/k.txt")).unwrap();
    std::os::unix::fs::symlink(env.data(), staging.join("evildir")).unwrap();
    // A FIFO would block a reader forever.
    let fifo = staging.join("evil/pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for path in [
        "evil/k.txt",
        "evildir/url-signing.key",
        "evildir/dev-issuer/key.pem",
        "evil/pipe",
        "evil",
    ] {
        let src = format!("file://{}/{path}", staging.display());
        let u = uuid::Uuid::new_v4().to_string();
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), env.put_file(&u, V1, &src, None))
            .await
            .unwrap_or_else(|_| panic!("{path}: request hung"));
        r.expect_error(400, "illegal_source_url");
    }
    // A relative link that stays inside the staging area is fine. (An absolute one is
    // refused even when it points inside: the file is resolved below the staging
    // directory, as openat2's RESOLVE_BENEATH does.)
    let real = env.stage("real.txt", b"inside");
    let real_path = std::path::Path::new(real.trim_start_matches("file://"));
    std::os::unix::fs::symlink(real_path, staging.join("evil/abs.txt")).unwrap();
    let src = format!("file://{}/evil/abs.txt", staging.display());
    env.put_file(&uuid::Uuid::new_v4().to_string(), V1, &src, None)
        .await
        .expect_error(400, "illegal_source_url");
    let rel = real_path.strip_prefix(&staging).unwrap();
    std::os::unix::fs::symlink(std::path::Path::new("..").join(rel), staging.join("evil/ok.txt")).unwrap();
    let src = format!("file://{}/evil/ok.txt", staging.display());
    assert_eq!(
        env.put_file(&uuid::Uuid::new_v4().to_string(), V1, &src, None)
            .await
            .status,
        201
    );
}
