//! Subscriptions end to end: the API's rules (owners, kinds, validation, the limit, the
//! address rule), and notifications received by a real subscriber on loopback
//! (tests/support/webhook_receiver.py, which checks signatures with the library the
//! original's receivers used): payloads, encodings, methods and signatures of v1 and v2,
//! create and tombstone events, the retry schedule, the delivery log, and delivery
//! after `kill -9`.

mod common;
use common::binary;
use common::emulators::{webhook_receiver, Receiver};
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &str = "s3cret";
const V3: &str = "2017-06-20T214506.766634Z";

/// An app whose callbacks may go to loopback, retrying after 1 s and 1 s.
fn env() -> Env {
    Env::with(|c| {
        c.notify_allow_private = Some("1".into());
        c.notify_delays = "0 1 1".into();
    })
}

/// `method` `uri` with `token`, no body.
async fn as_(env: &Env, method: &str, uri: &str, token: &str) -> Resp {
    env.req(method, uri, Some(token), "", &[]).await
}

async fn put_sub(env: &Env, token: &str, body: Value) -> Resp {
    env.req(
        "PUT",
        "/v1/subscriptions?replica=aws",
        Some(token),
        &body.to_string(),
        &[("content-type", "application/json")],
    )
    .await
}

async fn subscribe(env: &Env, body: Value) -> String {
    let r = put_sub(env, &env.user(), body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["uuid"].as_str().unwrap().to_string()
}

/// The receiver's requests to `path`, waited for (without blocking the app's tasks).
fn wait(recv: &Receiver, path: &str, n: usize, secs: u64) -> Vec<Value> {
    tokio::task::block_in_place(|| recv.wait_for(Some(path), n, Duration::from_secs(secs)))
}

fn count(recv: &Receiver, path: &str) -> usize {
    recv.requests().iter().filter(|r| r["path"] == path).count()
}

/// The body of a bundle of one JSON metadata file (`indexed` as given) and a data file.
async fn bundle_body(env: &Env, kind: &str, indexed: bool) -> Value {
    let meta = env.file("a.json", format!(r#"{{"kind": "{kind}"}}"#).as_bytes()).await;
    let data = env.file("reads.fastq", b"GATTACA").await;
    json!({"creator_uid": 7, "files": [
        {"uuid": meta, "version": V1, "name": "a.json", "indexed": indexed},
        {"uuid": data, "version": V1, "name": "reads.fastq", "indexed": false},
    ]})
}

async fn put_bundle_body(env: &Env, uuid: &str, version: &str, body: &Value) -> u16 {
    let r = env
        .req(
            "PUT",
            &format!("/v1/bundles/{uuid}?version={version}&replica=aws"),
            Some(&env.user()),
            &body.to_string(),
            &[],
        )
        .await;
    assert!(
        r.status == 201 || r.status == 200,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.status
}

/// A new bundle (or a version of `uuid`) as [`bundle_body`] makes it.
async fn bundle(env: &Env, version: &str, kind: &str, indexed: bool, uuid: Option<&str>) -> (String, String) {
    let body = bundle_body(env, kind, indexed).await;
    let b = uuid
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    assert_eq!(put_bundle_body(env, &b, version, &body).await, 201);
    (b, version.to_string())
}

async fn tombstone(env: &Env, uuid: &str, version: Option<&str>) {
    let q = version.map(|v| format!("&version={v}")).unwrap_or_default();
    let r = env
        .req(
            "DELETE",
            &format!("/v1/bundles/{uuid}?replica=aws{q}"),
            Some(&env.admin()),
            r#"{"reason": "withdrawn"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

fn assert_signed(req: &Value, key_id: &str) {
    assert_eq!(req["signature_ok"], true, "signature: {req}");
    assert_eq!(req["key_id"], key_id);
    let auth = req["headers"]["authorization"].as_str().unwrap();
    assert!(
        auth.contains("algorithm=\"hmac-sha256\",headers=\"date digest\""),
        "{auth}"
    );
    assert!(req["headers"]["digest"].as_str().unwrap().starts_with("SHA-256="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jmespath_subscriptions_are_notified_of_creates_and_tombstones() {
    let recv = webhook_receiver(SECRET);
    let env = env();
    let json_sub = subscribe(
        &env,
        json!({
            "callback_url": recv.url("/json"),
            "hmac_secret_key": SECRET,
            "jmespath_query": "files.a_json[0].kind == 'x'",
            "attachments": {"kind": {"type": "jmespath", "expression": "files.a_json[0].kind"},
                            "broken": {"type": "jmespath", "expression": "length(bundle_info.uuid[0])"}},
        }),
    )
    .await;
    let form_sub = subscribe(
        &env,
        json!({
            "callback_url": recv.url("/form"),
            "method": "PUT",
            "encoding": "multipart/form-data",
            "form_fields": {"foo": "bar"},
            "payload_form_field": "notification",
            "hmac_secret_key": SECRET,
            "hmac_key_id": "my-key",
        }),
    )
    .await;
    subscribe(
        &env,
        json!({"callback_url": recv.url("/never"), "jmespath_query": "files.a_json[0].kind == 'nope'"}),
    )
    .await;

    // A create: the file is not `indexed`, and v2 documents hold every JSON file anyway.
    let body = bundle_body(&env, "x", false).await;
    let (b, v) = (uuid::Uuid::new_v4().to_string(), V2.to_string());
    assert_eq!(put_bundle_body(&env, &b, &v, &body).await, 201);
    let got = wait(&recv, "/json", 1, 30);
    let r = &got[0];
    assert_eq!(r["method"], "POST");
    assert_eq!(r["content_type"], "application/json");
    assert_eq!(r["headers"]["x-dss-notify-attempt"], "0");
    assert_signed(r, &format!("hca-dss:{json_sub}"));
    let p = &r["payload"];
    let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "bundle_url",
            "dss_api",
            "subscription_id",
            "event_timestamp",
            "event_type",
            "match",
            "transaction_id",
            "jmespath_query",
            "attachments"
        ]
    );
    assert_eq!(p["bundle_url"], format!("http://dss.test/v1/bundles/{b}?version={v}"));
    assert_eq!(p["dss_api"], "http://dss.test");
    assert_eq!(p["subscription_id"], json_sub.as_str());
    assert_eq!(p["event_type"], "CREATE");
    assert_eq!(p["match"], json!({"bundle_uuid": b, "bundle_version": v}));
    assert_eq!(p["jmespath_query"], "files.a_json[0].kind == 'x'");
    assert_eq!(p["attachments"]["kind"], "x");
    assert!(p["attachments"]["_errors"]["broken"].is_string(), "{p}");
    assert!(dss::model::DssVersion::parse(p["event_timestamp"].as_str().unwrap()).is_ok());
    assert!(uuid::Uuid::parse_str(p["transaction_id"].as_str().unwrap()).is_ok());

    let form = wait(&recv, "/form", 1, 30);
    let f = &form[0];
    assert_eq!(f["method"], "PUT");
    assert!(f["content_type"]
        .as_str()
        .unwrap()
        .starts_with("multipart/form-data; boundary="));
    assert_signed(f, "my-key");
    assert_eq!(f["form"]["foo"], "bar");
    let fp: Value = serde_json::from_str(f["form"]["notification"].as_str().unwrap()).unwrap();
    assert_eq!(fp["subscription_id"], form_sub.as_str());
    assert_eq!(fp["event_type"], "CREATE");
    assert!(fp.get("jmespath_query").is_none() && fp.get("attachments").is_none());

    // The same bundle again (200): the event was notified, and is not again.
    assert_eq!(put_bundle_body(&env, &b, &v, &body).await, 200);
    env.jobs_completed("notify-match", 30).await;

    // A tombstone of the version: the query no longer matches (no files), the other does.
    tombstone(&env, &b, Some(&v)).await;
    let form = wait(&recv, "/form", 2, 30);
    let t: Value = serde_json::from_str(form[1]["form"]["notification"].as_str().unwrap()).unwrap();
    assert_eq!(t["event_type"], "TOMBSTONE");
    assert_eq!(t["match"], json!({"bundle_uuid": b, "bundle_version": v}));

    // An unversioned tombstone: one notification per version not tombstoned before.
    let (b2, _) = bundle(&env, V2, "y", false, None).await;
    bundle(&env, V3, "y", false, Some(&b2)).await;
    wait(&recv, "/form", 4, 30);
    tombstone(&env, &b2, Some(V2)).await;
    wait(&recv, "/form", 5, 30);
    tombstone(&env, &b2, None).await;
    let form = wait(&recv, "/form", 6, 30);
    env.jobs_completed("notify-match", 30).await;
    env.jobs_completed("notify", 30).await;
    let events: Vec<(String, String)> = recv
        .requests()
        .iter()
        .filter(|r| r["path"] == "/form")
        .map(|r| {
            let p: Value = serde_json::from_str(r["form"]["notification"].as_str().unwrap()).unwrap();
            (
                p["event_type"].as_str().unwrap().to_string(),
                p["match"]["bundle_version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(form.len(), 6, "{events:?}");
    let tombstones_of_b2: Vec<&(String, String)> = events[4..].iter().collect();
    assert_eq!(
        tombstones_of_b2,
        [
            &("TOMBSTONE".to_string(), V2.to_string()),
            &("TOMBSTONE".to_string(), V3.to_string())
        ]
    );
    assert_eq!(count(&recv, "/json"), 1, "one create matched, notified once");
    assert_eq!(count(&recv, "/never"), 0);

    // The owner's log shows the delivery.
    let log = env
        .req(
            "GET",
            &format!("/v1/subscriptions/{json_sub}/deliveries?replica=aws"),
            Some(&env.user()),
            "",
            &[],
        )
        .await;
    assert_eq!(log.status, 200);
    let log = log.json();
    let d = &log["deliveries"][0];
    assert_eq!(log["deliveries"].as_array().unwrap().len(), 1, "{log}");
    assert_eq!(
        (d["attempt"].clone(), d["status_code"].clone(), d["outcome"].clone()),
        (json!(1), json!(200), json!("delivered"))
    );
    assert_eq!(d["notification_id"], p["transaction_id"]);
    assert_eq!(
        (d["bundle_uuid"].as_str(), d["event_type"].as_str()),
        (Some(b.as_str()), Some("CREATE"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_subscriptions_match_the_index_document() {
    let recv = webhook_receiver(SECRET);
    let env = env();
    let body = json!({
        "es_query": {"query": {"bool": {"must": [{"match": {"files.a_json.kind": "x"}}]}}},
        "callback_url": recv.url("/es"),
        "hmac_secret_key": SECRET,
        "attachments": {"version": {"type": "jmespath", "expression": "manifest.version"}},
    });
    let r = put_sub(&env, &env.user(), body.clone()).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json().as_object().unwrap().len(), 1, "v1 answers only its uuid");
    let sub = r.json()["uuid"].as_str().unwrap().to_string();
    subscribe(
        &env,
        json!({"es_query": {"query": {"match": {"files.a_json.kind": "z"}}}, "callback_url": recv.url("/es-never")}),
    )
    .await;

    let (b, v) = bundle(&env, V2, "x", true, None).await;
    let got = wait(&recv, "/es", 1, 30);
    assert_signed(&got[0], &format!("hca-dss:{sub}"));
    let p = &got[0]["payload"];
    let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["transaction_id", "subscription_id", "es_query", "match", "attachments"]
    );
    assert_eq!(p["es_query"], body["es_query"]);
    assert_eq!(p["match"], json!({"bundle_uuid": b, "bundle_version": v}));
    assert_eq!(p["attachments"], json!({"version": v}));
    bundle(&env, V3, "other", true, None).await;
    env.jobs_completed("notify-match", 30).await;
    env.jobs_completed("notify", 30).await;
    assert_eq!(count(&recv, "/es"), 1);
    assert_eq!(count(&recv, "/es-never"), 0);

    // Owners: another user's v1 subscription is 403, as the original; v2 ones are 404.
    let other = env.token("other@example.org", Some("hca"));
    let r = as_(
        &env,
        "GET",
        &format!("/v1/subscriptions/{sub}?replica=aws&subscription_type=elasticsearch"),
        &other,
    )
    .await;
    r.expect_error(403, "Forbidden");
    let r = env
        .req(
            "GET",
            &format!("/v1/subscriptions/{sub}?replica=aws&subscription_type=elasticsearch"),
            Some(&env.user()),
            "",
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["es_query"], body["es_query"]);
    assert!(r.json().get("hmac_secret_key").is_none());
    // Asked as the other kind, it is not there.
    let r = env
        .req(
            "GET",
            &format!("/v1/subscriptions/{sub}?replica=aws"),
            Some(&env.user()),
            "",
            &[],
        )
        .await;
    r.expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_follow_the_schedule_and_the_log_shows_each() {
    let recv = webhook_receiver(SECRET);
    let env = env();
    let retried = subscribe(&env, json!({"callback_url": recv.url("/seq/500,500,200/r")})).await;
    let failing = subscribe(&env, json!({"callback_url": recv.url("/seq/503/f")})).await;
    let redirected = subscribe(&env, json!({"callback_url": recv.url("/redirect/x")})).await;
    bundle(&env, V2, "x", false, None).await;

    let got = wait(&recv, "/seq/500,500,200/r", 3, 30);
    let attempts: Vec<&str> = got
        .iter()
        .map(|r| r["headers"]["x-dss-notify-attempt"].as_str().unwrap())
        .collect();
    assert_eq!(attempts, ["0", "1", "2"]);
    let ids: Vec<&Value> = got.iter().map(|r| &r["payload"]["transaction_id"]).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "one notification, three attempts");
    let at: Vec<f64> = got.iter().map(|r| r["received_at"].as_f64().unwrap()).collect();
    assert!(
        at[1] - at[0] >= 0.9 && at[2] - at[1] >= 0.9,
        "the schedule's delays: {at:?}"
    );
    wait(&recv, "/seq/503/f", 3, 30);
    env.jobs_completed("notify-match", 30).await;
    // Every job has ended (completed, or failed after the last attempt).
    let t = std::time::Instant::now();
    while env.jobs("notify").await.iter().any(|j| {
        matches!(
            j.state,
            dss::jobs::queue::JobState::Queued | dss::jobs::queue::JobState::Running
        )
    }) {
        assert!(t.elapsed().as_secs() < 30);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&recv, "/seq/503/f"), 3, "no attempt after the last delay");
    assert_eq!(count(&recv, "/redirect/x"), 3, "a redirect is a failure");
    assert_eq!(count(&recv, "/elsewhere"), 0, "redirects are not followed");

    let log = |id: String| {
        let env = &env;
        async move {
            let r = env
                .req(
                    "GET",
                    &format!("/v1/subscriptions/{id}/deliveries?replica=aws"),
                    Some(&env.user()),
                    "",
                    &[],
                )
                .await;
            assert_eq!(r.status, 200);
            r.json()["deliveries"].as_array().unwrap().clone()
        }
    };
    let d = log(retried).await;
    let summary: Vec<(Value, Value, Value)> = d
        .iter()
        .map(|e| (e["attempt"].clone(), e["status_code"].clone(), e["outcome"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (json!(3), json!(200), json!("delivered")),
            (json!(2), json!(500), json!("retrying")),
            (json!(1), json!(500), json!("retrying")),
        ]
    );
    assert!(d[1]["next_attempt"].is_string() && d[0].get("next_attempt").is_none());
    assert_eq!(d[1]["error"], "the receiver answered 500");
    let d = log(failing).await;
    assert_eq!(d.len(), 3);
    assert_eq!(
        (d[0]["outcome"].clone(), d[0]["status_code"].clone()),
        (json!("failed"), json!(503))
    );
    assert!(d[0].get("next_attempt").is_none());
    let d = log(redirected).await;
    assert_eq!(d[0]["status_code"], 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_the_originals_rules() {
    let env = env();
    let user = env.user();
    let hook = "http://127.0.0.1:9/hook";
    // Validation, with the original's codes.
    for (body, code) in [
        (json!({}), "illegal_arguments"),
        (json!({"callback_url": hook, "unknown": 1}), "illegal_arguments"),
        (json!({"callback_url": hook, "method": "GET"}), "illegal_arguments"),
        (
            json!({"callback_url": hook, "jmespath_query": "a[?"}),
            "invalid_jmespath",
        ),
        (
            json!({"callback_url": hook, "attachments": {"_x": {"type": "jmespath", "expression": "a"}}}),
            "invalid_attachment_name",
        ),
        (
            json!({"callback_url": hook, "attachments": {"x": {"type": "jmespath", "expression": "a[?"}}}),
            "invalid_attachment_expression",
        ),
        (
            json!({"callback_url": hook, "es_query": {"query": {"percolate": {}}}}),
            "elasticsearch_bad_request",
        ),
    ] {
        put_sub(&env, &user, body).await.expect_error(400, code);
    }
    // Groups: hca and public may subscribe; others may not; a token is needed.
    let public = env.token("pub@example.org", Some("public"));
    assert_eq!(put_sub(&env, &public, json!({"callback_url": hook})).await.status, 201);
    put_sub(
        &env,
        &env.token("x@example.org", Some("other")),
        json!({"callback_url": hook}),
    )
    .await
    .expect_error(403, "Forbidden");
    let r = env
        .req(
            "PUT",
            "/v1/subscriptions?replica=aws",
            None,
            r#"{"callback_url": "http://x"}"#,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.status, 401);

    // The owner sees their own, without secrets; another owner's is 404.
    let body =
        json!({"callback_url": hook, "hmac_secret_key": "k", "hmac_key_id": "kid", "jmespath_query": "manifest"});
    let r = put_sub(&env, &user, body).await;
    assert_eq!(r.status, 201);
    let created = r.json();
    assert!(
        created.get("hmac_secret_key").is_none(),
        "the secret is not echoed: {created}"
    );
    let id = created["uuid"].as_str().unwrap().to_string();
    let mine = env
        .req("GET", "/v1/subscriptions?replica=aws", Some(&user), "", &[])
        .await
        .json();
    let mine = mine["subscriptions"].as_array().unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["uuid"], id.as_str());
    assert_eq!(mine[0]["owner"], "user@example.org");
    assert_eq!(mine[0]["replica"], "aws");
    assert_eq!(mine[0]["hmac_key_id"], "kid");
    assert!(mine[0].get("hmac_secret_key").is_none());
    let got = as_(&env, "GET", &format!("/v1/subscriptions/{id}?replica=aws"), &user).await;
    assert_eq!(got.json(), mine[0]);
    as_(&env, "GET", &format!("/v1/subscriptions/{id}?replica=aws"), &public)
        .await
        .expect_error(404, "not_found");
    as_(&env, "GET", &format!("/v1/subscriptions/{id}?replica=gcp"), &user)
        .await
        .expect_error(404, "not_found");
    as_(
        &env,
        "GET",
        &format!("/v1/subscriptions/{id}/deliveries?replica=aws"),
        &public,
    )
    .await
    .expect_error(404, "not_found");
    as_(&env, "DELETE", &format!("/v1/subscriptions/{id}?replica=aws"), &public)
        .await
        .expect_error(404, "not_found");
    let del = as_(&env, "DELETE", &format!("/v1/subscriptions/{id}?replica=aws"), &user).await;
    assert_eq!(del.status, 200);
    assert!(dss::model::DssVersion::parse(del.json()["timeDeleted"].as_str().unwrap()).is_ok());
    as_(&env, "GET", &format!("/v1/subscriptions/{id}?replica=aws"), &user)
        .await
        .expect_error(404, "not_found");

    // The limit: 100 per owner, replica and kind.
    for _ in 0..100 {
        assert_eq!(put_sub(&env, &user, json!({"callback_url": hook})).await.status, 201);
    }
    put_sub(&env, &user, json!({"callback_url": hook}))
        .await
        .expect_error(406, "not_acceptable");
    let es = json!({"callback_url": hook, "es_query": {"query": {"match_all": {}}}});
    assert_eq!(
        put_sub(&env, &user, es).await.status,
        201,
        "the other kind has its own limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_to_private_addresses_are_refused() {
    let env = Env::new();
    let user = env.user();
    for url in [
        "http://127.0.0.1/x",
        "https://127.0.0.1/x",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/",
        "https://[::1]/",
        "https://localhost/hook",
        "http://example.org/hook",
    ] {
        put_sub(&env, &user, json!({"callback_url": url}))
            .await
            .expect_error(400, "invalid_callback_url");
    }
}

/// `dss {args}` on the data dir `data`; its output.
fn cli(data: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dss"))
        .args(args)
        .env("DSS_DATA_DIR", data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dss {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn call(method: &str, url: &str, token: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_survives_kill_9_between_attempts() {
    let recv = webhook_receiver(SECRET);
    let data = tempfile::tempdir().unwrap();
    let start = || {
        binary::start_dss(data.path(), |cmd| {
            cmd.env("DSS_NOTIFY_ALLOW_PRIVATE", "1").env("DSS_NOTIFY_DELAYS", "0 3");
        })
    };
    let mut server = start();
    let token = cli(data.path(), &["token", "--email", "me@example.org", "--group", "hca"]);
    let u = server.url.clone();
    let hook = "/seq/500,200/k";
    let (status, sub) = call(
        "PUT",
        &format!("{u}/v1/subscriptions?replica=aws"),
        &token,
        json!({"callback_url": recv.url(hook), "hmac_secret_key": SECRET}),
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    let sub = sub["uuid"].as_str().unwrap().to_string();
    let meta = data.path().join("a.json");
    std::fs::write(&meta, br#"{"kind": "x"}"#).unwrap();
    let line = cli(data.path(), &["stage", meta.to_str().unwrap()]);
    let (fu, src) = line.split_once(' ').unwrap();
    let (status, _) = call(
        "PUT",
        &format!("{u}/v1/files/{fu}?version={V1}"),
        &token,
        json!({"source_url": src, "creator_uid": 0}),
    )
    .await;
    assert_eq!(status, 201);
    let b = uuid::Uuid::new_v4().to_string();
    let files = json!([{"uuid": fu, "version": V1, "name": "a.json", "indexed": true}]);
    let (status, _) = call(
        "PUT",
        &format!("{u}/v1/bundles/{b}?replica=aws&version={V2}"),
        &token,
        json!({"creator_uid": 0, "files": files}),
    )
    .await;
    assert_eq!(status, 201);

    // The first attempt fails and is recorded; the backend dies before the second is due.
    wait(&recv, hook, 1, 30);
    let t = std::time::Instant::now();
    loop {
        let log: Value = reqwest::Client::new()
            .get(format!("{u}/v1/subscriptions/{sub}/deliveries?replica=aws"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if log["deliveries"][0]["outcome"] == "retrying" {
            break;
        }
        assert!(t.elapsed().as_secs() < 30, "first attempt not recorded: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let server = start();
    let got = wait(&recv, hook, 2, 30);
    assert_eq!(got[1]["status"], 200);
    assert_eq!(
        got[1]["payload"]["match"],
        json!({"bundle_uuid": b, "bundle_version": V2})
    );
    assert_eq!(got[0]["payload"]["transaction_id"], got[1]["payload"]["transaction_id"]);
    assert_eq!(got[1]["signature_ok"], true);
    // The dev issuer is named by the server's URL, which has a new port.
    let token = cli(data.path(), &["token", "--email", "me@example.org", "--group", "hca"]);
    let log = reqwest::Client::new()
        .get(format!("{}/v1/subscriptions/{sub}/deliveries?replica=aws", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let outcomes: Vec<&str> = log["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("{log}"))
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["delivered", "retrying"], "{log}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(count(&recv, hook), 2, "delivered once, not again after the restart");
}

/// At delivery too: a subscription stored when private callbacks were allowed (or whose
/// name was public then) is not sent to a private address, the name resolved by the
/// webhook client's own resolver; the attempt fails without a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_to_private_addresses_are_refused_after_resolution() {
    use dss::jobs::notify::{NotifyJob, NotifySettings, Sent, Webhooks};
    use dss::model::notification::EventType;
    let recv = webhook_receiver(SECRET);
    let strict = Webhooks::new(NotifySettings::parse("0", 5.0, false).unwrap()).unwrap();
    let port = recv.url("").rsplit(':').next().unwrap().to_string();
    let job = NotifyJob {
        replica: "aws".into(),
        subscription: "s".into(),
        id: "n".into(),
        event_type: EventType::Create,
        bundle_uuid: "u".into(),
        bundle_version: V2.into(),
        payload: json!({}),
        attempt: 1,
    };
    for url in [
        format!("https://localhost:{port}/x"),
        format!("https://127.0.0.1:{port}/x"),
        format!("https://[::ffff:127.0.0.1]:{port}/x"),
    ] {
        let sub = dss::model::subscription::Subscription {
            uuid: "s".into(),
            owner: "o".into(),
            replica: "aws".into(),
            kind: dss::model::subscription::Kind::Jmespath,
            doc: json!({"callback_url": url}).as_object().unwrap().clone(),
        };
        match strict.send(&sub, &job, 1).await {
            Sent::Failed(e) => assert!(e.contains("not public"), "{url}: {e}"),
            Sent::Answered(s) => panic!("{url} was called: {s}"),
        }
        assert!(strict.check(&url).await.is_err(), "{url}");
    }
    assert!(recv.requests().is_empty(), "no request reached the receiver");
    // The same URL, private addresses allowed: it is called (over http).
    let open = Webhooks::new(NotifySettings::parse("0", 5.0, true).unwrap()).unwrap();
    assert!(open.check(&format!("http://localhost:{port}/x")).await.is_ok());
}
