//! Collections through the API, on local replicas: put, get, the owner's list with
//! paging, patch, delete; 403 for another user, 422 for items that do not resolve, 400 for
//! bad bodies and more than 1000 items, 404 after delete; the bytes in the bucket as the
//! original wrote them.

mod common;
use common::*;
use serde_json::{json, Value};

const V3: &str = "2017-06-20T214506.766634Z";

async fn put(env: &Env, token: &str, uuid: &str, version: &str, body: &Value) -> Resp {
    env.req(
        "PUT",
        &format!("/v1/collections?uuid={uuid}&version={version}&replica=aws"),
        Some(token),
        &body.to_string(),
        &[],
    )
    .await
}

async fn call(env: &Env, method: &str, uri: &str, token: &str, body: &str) -> Resp {
    env.req(method, uri, Some(token), body, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_are_kept_listed_patched_and_deleted() {
    let env = Env::new();
    let user = env.user();
    let other = env.token("other@example.org", Some("hca"));
    let json_file = env.file("a.json", br#"{"foo": {"bar": [1, 2]}}"#).await;
    let text_file = env.file("notes.txt", b"plain").await;
    let b = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        env.put_bundle(&b, V2, &[("a.json", &json_file, V1)], None).await.status,
        201
    );
    let items = json!([
        {"type": "file", "uuid": json_file, "version": V1},
        {"type": "bundle", "uuid": b, "version": V2},
        {"type": "biomaterial", "uuid": json_file, "version": V1, "fragment": "/foo/bar/1"},
        {"uuid": json_file, "type": "file", "version": V1},
    ]);
    let c = uuid::Uuid::new_v4().to_string();
    let body = json!({"name": "mine", "description": "d", "details": {"k": 1}, "contents": items});
    let r = put(&env, &user, &c, V2, &body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"uuid": c, "version": V2}));
    // The same again is the same write; other content at that version is a conflict.
    assert_eq!(put(&env, &user, &c, V2, &body).await.status, 201);
    let mut changed = body.clone();
    changed["name"] = json!("other");
    put(&env, &user, &c, V2, &changed)
        .await
        .expect_error(409, "collection_already_exists");

    // Stored as the original wrote it: the body as sent, de-duplicated, owner last.
    let stored = std::fs::read_to_string(env.main_dir("aws").join(format!("collections/{c}.{V2}"))).unwrap();
    assert!(
        stored.starts_with(r#"{"name": "mine", "description": "d", "details": {"k": 1}, "contents": ["#),
        "{stored}"
    );
    assert!(stored.ends_with(r#""owner": "user@example.org"}"#), "{stored}");
    let got = call(&env, "GET", &format!("/v1/collections/{c}?replica=aws"), &user, "").await;
    assert_eq!(got.status, 200);
    let got = got.json();
    assert_eq!(
        got["contents"].as_array().unwrap().len(),
        3,
        "duplicates kept once: {got}"
    );
    assert_eq!(got["owner"], "user@example.org");
    call(&env, "GET", &format!("/v1/collections/{c}?replica=aws"), &other, "")
        .await
        .expect_error(403, "forbidden");
    put(&env, &other, &c, V3, &body).await.expect_error(403, "forbidden");

    // Items that do not resolve.
    let bad = |item: Value| json!({"name": "n", "description": "d", "details": {}, "contents": [item]});
    let missing = uuid::Uuid::new_v4().to_string();
    for item in [
        json!({"type": "file", "uuid": missing, "version": V1}),
        json!({"type": "bundle", "uuid": json_file, "version": V1}),
        json!({"type": "biomaterial", "uuid": json_file, "version": V1, "fragment": "/xyz"}),
        json!({"type": "biomaterial", "uuid": text_file, "version": V1, "fragment": "/foo"}),
        json!({"type": "biomaterial", "uuid": json_file, "version": V1}),
    ] {
        let r = put(&env, &user, &uuid::Uuid::new_v4().to_string(), V2, &bad(item.clone())).await;
        r.expect_error(422, "invalid_link");
    }
    // A fragment's file is read only up to 1 MiB, even when its fragment is in there.
    let big = format!(r#"{{"foo": 1, "pad": "{}"}}"#, "x".repeat(1024 * 1024));
    let big_file = env.file("big.json", big.as_bytes()).await;
    let r = put(
        &env,
        &user,
        &uuid::Uuid::new_v4().to_string(),
        V2,
        &bad(json!({"type": "biomaterial", "uuid": big_file, "version": V1, "fragment": "/foo"})),
    )
    .await;
    assert!(
        String::from_utf8_lossy(&r.body).contains("larger than 1048576 bytes"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.expect_error(422, "invalid_link");
    // Bad bodies and parameters.
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"type": "biomaterial", "uuid": json_file, "version": V1, "fragment": format!("/{i}")}))
        .collect();
    put(&env, &user, &c, V3, &bad(Value::Null))
        .await
        .expect_error(400, "illegal_arguments");
    put(
        &env,
        &user,
        &c,
        V3,
        &json!({"name": "n", "description": "d", "details": {}, "contents": too_many}),
    )
    .await
    .expect_error(400, "illegal_arguments");
    put(
        &env,
        &user,
        &c,
        V3,
        &json!({"name": "n", "details": {}, "contents": []}),
    )
    .await
    .expect_error(400, "illegal_arguments");
    put(&env, &user, &c, "v", &body)
        .await
        .expect_error(400, "illegal_version");

    // PATCH makes a new version, listed too.
    let patch = json!({"name": "renamed", "remove_contents": [{"type": "bundle", "uuid": b, "version": V2}],
                       "add_contents": [{"type": "file", "uuid": json_file, "version": V1}]});
    let r = call(
        &env,
        "PATCH",
        &format!("/v1/collections/{c}?replica=aws&version={V2}"),
        &user,
        &patch.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v_new = r.json()["version"].as_str().unwrap().to_string();
    assert!(v_new.as_str() > V2);
    let latest = call(&env, "GET", &format!("/v1/collections/{c}?replica=aws"), &user, "")
        .await
        .json();
    assert_eq!(latest["name"], "renamed");
    assert_eq!(latest["contents"].as_array().unwrap().len(), 2, "{latest}");
    let old = call(
        &env,
        "GET",
        &format!("/v1/collections/{c}?replica=aws&version={V2}"),
        &user,
        "",
    )
    .await
    .json();
    assert_eq!(old["name"], "mine");
    call(
        &env,
        "PATCH",
        &format!("/v1/collections/{c}?replica=aws&version={V2}"),
        &other,
        "{}",
    )
    .await
    .expect_error(403, "forbidden");
    let add_bad = json!({"add_contents": [{"type": "file", "uuid": missing, "version": V1}]});
    call(
        &env,
        "PATCH",
        &format!("/v1/collections/{c}?replica=aws&version={V2}"),
        &user,
        &add_bad.to_string(),
    )
    .await
    .expect_error(422, "invalid_link");

    // The owner's list: every version, paged.
    for _ in 0..11 {
        let u = uuid::Uuid::new_v4().to_string();
        assert_eq!(
            put(
                &env,
                &user,
                &u,
                V2,
                &json!({"name": "n", "description": "d", "details": {}, "contents": []})
            )
            .await
            .status,
            201
        );
    }
    let page = call(&env, "GET", "/v1/collections?per_page=10", &user, "").await;
    assert_eq!(page.status, 206);
    assert_eq!(page.header("x-openapi-paginated-content-key"), Some("collections"));
    let link = page.header("link").unwrap().to_string();
    assert!(
        link.ends_with(">; rel='next'") && link.contains("start_at=10"),
        "{link}"
    );
    let first = page.json()["collections"].as_array().unwrap().clone();
    let rest = call(&env, "GET", &local_part(&link[1..link.find('>').unwrap()]), &user, "").await;
    assert_eq!(rest.status, 200);
    let rest = rest.json()["collections"].as_array().unwrap().clone();
    assert_eq!(first.len() + rest.len(), 13, "11 + two versions of {c}");
    let all: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|e| format!("{}.{}", e["uuid"].as_str().unwrap(), e["version"].as_str().unwrap()))
        .collect();
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(all, sorted, "descending, as the original listed");
    assert!(all.contains(&format!("{c}.{v_new}")), "PATCHed versions are listed");
    assert_eq!(
        call(&env, "GET", "/v1/collections", &other, "").await.json(),
        json!({"collections": []})
    );
    call(&env, "GET", "/v1/collections?per_page=9", &user, "")
        .await
        .expect_error(400, "illegal_arguments");

    // DELETE: another's is 403; then the collection is gone, from the list too.
    call(&env, "DELETE", &format!("/v1/collections/{c}?replica=aws"), &other, "")
        .await
        .expect_error(403, "forbidden");
    let r = call(&env, "DELETE", &format!("/v1/collections/{c}?replica=aws"), &user, "").await;
    assert_eq!((r.status, r.json()), (200, json!({})));
    let tomb = std::fs::read_to_string(env.main_dir("aws").join(format!("collections/{c}.dead"))).unwrap();
    assert_eq!(tomb, r#"{"email": "user@example.org"}"#);
    for v in [
        "".to_string(),
        format!("&version={V2}"),
        format!("&version={v_new}"),
        "&version=..".into(),
    ] {
        call(&env, "GET", &format!("/v1/collections/{c}?replica=aws{v}"), &user, "")
            .await
            .expect_error(404, "not_found");
    }
    let after = call(&env, "GET", "/v1/collections", &user, "").await.json();
    assert_eq!(after["collections"].as_array().unwrap().len(), 11);
    call(&env, "DELETE", &format!("/v1/collections/{c}?replica=aws"), &user, "")
        .await
        .expect_error(404, "not_found");
    // A deleted collection stays deleted, whoever writes.
    for who in [&user, &other] {
        put(&env, who, &c, V3, &body)
            .await
            .expect_error(409, "collection_tombstone_already_exists");
    }
    let r = put(
        &env,
        &user,
        &uuid::Uuid::new_v4().to_string(),
        V2,
        &bad(json!({"type": "file", "uuid": "x".repeat(100_000), "version": V1})),
    )
    .await;
    r.expect_error(400, "illegal_arguments");
    assert!(
        r.json()["title"].as_str().unwrap().len() < 200,
        "the client's strings are not echoed"
    );
    // No token: 401; a group other than hca: 403.
    assert_eq!(env.req("GET", "/v1/collections", None, "", &[]).await.status, 401);
    call(
        &env,
        "GET",
        "/v1/collections",
        &env.token("p@example.org", Some("public")),
        "",
    )
    .await
    .expect_error(403, "Forbidden");
}

/// A collection is copied to the other replica after the documents it names, and so is
/// its tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_are_replicated_after_their_items() {
    let env = Env::new();
    let user = env.user();
    let f = env.file("a.json", br#"{"k": [1]}"#).await;
    let b = uuid::Uuid::new_v4().to_string();
    assert_eq!(env.put_bundle(&b, V2, &[("a.json", &f, V1)], None).await.status, 201);
    let c = uuid::Uuid::new_v4().to_string();
    let body = json!({"name": "n", "description": "d", "details": {}, "contents": [
        {"type": "bundle", "uuid": b, "version": V2},
        {"type": "cell", "uuid": f, "version": V1, "fragment": "/k/0"},
    ]});
    assert_eq!(put(&env, &user, &c, V2, &body).await.status, 201);
    let there = env
        .eventually("GET", &format!("/v1/collections/{c}?replica=gcp"), 200, 30)
        .await;
    assert_eq!(there.json()["contents"], body["contents"]);
    let here = std::fs::read(env.main_dir("aws").join(format!("collections/{c}.{V2}"))).unwrap();
    let copied = std::fs::read(env.main_dir("gcp").join(format!("collections/{c}.{V2}"))).unwrap();
    assert_eq!(here, copied, "byte for byte");
    assert!(
        env.main_dir("gcp").join(format!("bundles/{b}.{V2}")).exists(),
        "its bundle came first"
    );
    let r = call(&env, "DELETE", &format!("/v1/collections/{c}?replica=aws"), &user, "").await;
    assert_eq!(r.status, 200);
    env.eventually("GET", &format!("/v1/collections/{c}?replica=gcp"), 404, 30)
        .await;
}

/// A bucket written by the original, with collections (made in its format:
/// tests/fixtures/original-collections): served as is; listed by owner once
/// `dss collections reindex` has read the owners from the bucket; patched on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_originals_collections_are_served_and_reindexed() {
    let env = Env::new();
    env.load_original_bucket("aws");
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_tree(
        &here.join("tests/fixtures/original-collections/collections"),
        &env.main_dir("aws").join("collections"),
    );
    let owner = env.token("owner@example.org", Some("hca"));
    let other = env.token("other@example.org", Some("hca"));
    let (c1, c2, c3) = (
        "c0de0000-0000-4000-8000-000000000001",
        "c0de0000-0000-4000-8000-000000000002",
        "c0de0000-0000-4000-8000-000000000003",
    );
    let stored = |key: &str| -> Value {
        serde_json::from_slice(&std::fs::read(env.main_dir("aws").join("collections").join(key)).unwrap()).unwrap()
    };
    // The latest version by default, any version by name, exactly as stored.
    let got = call(&env, "GET", &format!("/v1/collections/{c1}?replica=aws"), &owner, "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), stored(&format!("{c1}.2019-02-02T000000.000000Z")));
    let got = call(
        &env,
        "GET",
        &format!("/v1/collections/{c1}?replica=aws&version=2019-02-01T000000.000000Z"),
        &owner,
        "",
    )
    .await;
    assert_eq!(got.json()["description"], "written by the original");
    call(&env, "GET", &format!("/v1/collections/{c1}?replica=aws"), &other, "")
        .await
        .expect_error(403, "forbidden");
    call(&env, "GET", &format!("/v1/collections/{c3}?replica=aws"), &owner, "")
        .await
        .expect_error(404, "not_found");
    // The owners were outside the bucket: nothing listed until the index is rebuilt.
    let listed = call(&env, "GET", "/v1/collections", &owner, "").await;
    assert_eq!(listed.json(), json!({"collections": []}));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dss"))
        .args(["collections", "reindex", "--replica", "aws"])
        .env("DSS_DATA_DIR", env.data())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.starts_with("aws: 2 collections (3 versions) indexed, 1 deleted ones left out"),
        "{report}"
    );
    let listed = call(&env, "GET", "/v1/collections", &owner, "").await;
    assert_eq!(
        listed.json(),
        json!({"collections": [
            {"uuid": c1, "version": "2019-02-02T000000.000000Z"},
            {"uuid": c1, "version": "2019-02-01T000000.000000Z"},
        ]})
    );
    let listed = call(&env, "GET", "/v1/collections", &other, "").await;
    assert_eq!(
        listed.json(),
        json!({"collections": [{"uuid": c2, "version": "2019-02-01T000000.000000Z"}]})
    );
    // A PATCH on top of the original's version: its items resolve in the original's bucket.
    let patched = call(
        &env,
        "PATCH",
        &format!("/v1/collections/{c1}?replica=aws&version=2019-02-02T000000.000000Z"),
        &owner,
        r#"{"description": "patched here"}"#,
    )
    .await;
    assert_eq!(patched.status, 200, "{}", String::from_utf8_lossy(&patched.body));
    let v = patched.json()["version"].as_str().unwrap().to_string();
    let mut expected = stored(&format!("{c1}.2019-02-02T000000.000000Z"));
    expected["description"] = json!("patched here");
    assert_eq!(stored(&format!("{c1}.{v}")), expected);
}

/// Two users making the same new collection uuid at once (different versions, so the
/// bucket alone would take both): one gets it, the other 403, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_uuid_goes_to_one_of_two_users_at_once() {
    let env = Env::new();
    let (me, other) = (env.user(), env.token("other@example.org", Some("hca")));
    let body = json!({"name": "n", "description": "d", "details": {}, "contents": []});
    for _ in 0..20 {
        let c = uuid::Uuid::new_v4().to_string();
        let (a, b) = tokio::join!(put(&env, &me, &c, V2, &body), put(&env, &other, &c, V3, &body));
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [201, 403],
            "{} / {}",
            String::from_utf8_lossy(&a.body),
            String::from_utf8_lossy(&b.body)
        );
        let winner = if a.status == 201 { &me } else { &other };
        let got = call(&env, "GET", &format!("/v1/collections/{c}?replica=aws"), winner, "").await;
        assert_eq!(got.status, 200);
    }
}

/// A PATCH after a PUT that named a version in the future is still the latest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_after_a_future_version_is_the_latest() {
    let env = Env::new();
    let me = env.user();
    let c = uuid::Uuid::new_v4().to_string();
    let future = "2099-01-01T000000.000000Z";
    let body = json!({"name": "n", "description": "d", "details": {}, "contents": []});
    assert_eq!(put(&env, &me, &c, future, &body).await.status, 201);
    let r = call(
        &env,
        "PATCH",
        &format!("/v1/collections/{c}?replica=aws&version={future}"),
        &me,
        r#"{"description": "later"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["version"], "2099-01-01T000000.000001Z");
    let got = call(&env, "GET", &format!("/v1/collections/{c}?replica=aws"), &me, "").await;
    assert_eq!(got.json()["description"], "later");
}

/// `dss sync` brings an original's collections to another replica after everything they
/// name, in one run, even where a collection names another collection that waits too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dss_sync_copies_chains_of_collections_in_one_run() {
    let env = Env::new();
    env.load_original_bucket("aws");
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = here.join("tests/fixtures/original-collections/collections");
    copy_tree(&fixture, &env.main_dir("aws").join("collections"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dss"))
        .args(["sync", "--from", "aws", "--to", "gcp"])
        .env("DSS_DATA_DIR", env.data())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for e in std::fs::read_dir(&fixture).unwrap() {
        let name = e.unwrap().file_name();
        let copied = env.main_dir("gcp").join("collections").join(&name);
        assert_eq!(
            std::fs::read(&copied).unwrap_or_default(),
            std::fs::read(fixture.join(&name)).unwrap(),
            "{name:?}"
        );
    }
}
