//! The route table's rules, enforced by the router for every route: groups and admins,
//! read-only mode, body types and sizes; and the hardening of issue 9 that lives in the
//! router: request ids and plain error titles, safe local downloads, strict names and
//! versions, `/internal/application_secrets`, and `DSS_FAKE_504_PROBABILITY`.

mod common;
use common::{local_part, Env, ADMIN, V1, V2};
use jwt_compact::alg::Rsa;
use jwt_compact::{AlgorithmExt, Claims, Header, TimeOptions};
use rsa::pkcs8::DecodePrivateKey;
use serde_json::{json, Value};

const GROUP_CLAIM: &str = "https://auth.data.humancellatlas.org/group";

/// A token from the dev issuer with `group` as the raw group claim (any JSON, or absent).
fn token_with_group(email: &str, group: Option<Value>) -> String {
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(common::test_key_pem()).unwrap();
    let issuer = dss::auth::dev::DevIssuer::from_key(key.clone(), "http://dss.test/");
    let kid = issuer.public_key().kid.unwrap();
    let mut c = serde_json::Map::new();
    c.insert("iss".into(), json!("http://dss.test/"));
    c.insert("sub".into(), json!(email));
    c.insert("aud".into(), json!("https://dev.data.humancellatlas.org/"));
    c.insert("email".into(), json!(email));
    if let Some(g) = group {
        c.insert(GROUP_CLAIM.into(), g);
    }
    let claims = Claims::new(c).set_duration_and_issuance(
        &TimeOptions::new(chrono::Duration::zero(), chrono::Utc::now),
        chrono::Duration::hours(1),
    );
    Rsa::rs256()
        .token(&Header::empty().with_key_id(kid), &claims, &key)
        .unwrap()
}

fn bundle_body(file: &str, name: &str) -> String {
    json!({"creator_uid": 1, "files": [{"uuid": file, "version": V1, "name": name, "indexed": false}]}).to_string()
}

#[tokio::test]
async fn bundle_writes_need_the_hca_group() {
    let env = Env::new();
    let f = env.file("a.txt", b"a").await;
    let b = uuid::Uuid::new_v4().to_string();
    env.put_bundle(&b, V1, &[("a.txt", &f, V1)], None).await;
    let put = format!("/v1/bundles/{}?version={V2}&replica=aws", uuid::Uuid::new_v4());
    let patch = format!("/v1/bundles/{b}?version={V1}&replica=aws");
    let delete = format!("/v1/bundles/{b}?replica=aws");
    for group in [
        None,
        Some(json!("public")),
        Some(json!("HCA")),
        Some(json!(["hca"])),
        Some(json!("")),
    ] {
        let t = token_with_group("user@example.org", group.clone());
        let r = env.req("PUT", &put, Some(&t), &bundle_body(&f, "a.txt"), &[]).await;
        r.expect_error(403, "Forbidden");
        let r = env.req("PATCH", &patch, Some(&t), r#"{"add_files": []}"#, &[]).await;
        r.expect_error(403, "Forbidden");
        // Even an admin needs the group.
        let t = token_with_group(ADMIN, group);
        let r = env.req("DELETE", &delete, Some(&t), r#"{"reason": "x"}"#, &[]).await;
        r.expect_error(403, "Forbidden");
    }
    // Nothing was written: the PUT's bundle does not exist, the PATCH made no version,
    // the DELETE no tombstone.
    let latest = env.get(&format!("/v1/bundles/{b}?replica=aws")).await;
    assert_eq!(latest.status, 200);
    assert_eq!(latest.json()["bundle"]["version"], V1);
    // The right group passes; a non-admin still cannot delete.
    let r = env
        .req("PATCH", &patch, Some(&env.user()), r#"{"add_files": []}"#, &[])
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = env
        .req("DELETE", &delete, Some(&env.user()), r#"{"reason": "x"}"#, &[])
        .await;
    r.expect_error(403, "Forbidden");
    let r = env
        .req("DELETE", &delete, Some(&env.admin()), r#"{"reason": "x"}"#, &[])
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn read_only_mode_allows_reads_including_head() {
    let env = Env::new();
    let f = env.file("a.txt", b"a").await;
    let b = uuid::Uuid::new_v4().to_string();
    env.put_bundle(&b, V1, &[("a.txt", &f, V1)], None).await;
    // The same data directory, served read-only.
    let ro = Env::in_dir(env.dir, |c| c.read_only_mode = Some("1".into()));
    let r = ro.head(&format!("/v1/files/{f}?replica=aws")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-dss-size"), Some("1"));
    let r = ro.head(&format!("/v1/bundles/{b}?replica=aws")).await;
    assert_eq!(r.status, 200);
    assert_eq!(ro.get(&format!("/v1/bundles/{b}?replica=aws")).await.status, 200);
    let r = ro
        .req("POST", "/v1/search?replica=aws", None, r#"{"es_query": {}}"#, &[])
        .await;
    assert_eq!(r.status, 200, "searches are reads");
    // Every write is refused, with one Retry-After whatever the method.
    let src = ro.stage("x", b"x");
    let writes = [
        (
            "PUT",
            format!("/v1/files/{f}?version={V2}"),
            format!(r#"{{"source_url": "{src}", "creator_uid": 0}}"#),
            ro.user(),
        ),
        (
            "PUT",
            format!("/v1/bundles/{b}?version={V2}&replica=aws"),
            bundle_body(&f, "a.txt"),
            ro.user(),
        ),
        (
            "PATCH",
            format!("/v1/bundles/{b}?version={V1}&replica=aws"),
            "{}".to_string(),
            ro.user(),
        ),
        (
            "DELETE",
            format!("/v1/bundles/{b}?replica=aws"),
            r#"{"reason": "x"}"#.to_string(),
            ro.admin(),
        ),
    ];
    for (m, uri, body, token) in writes {
        let r = ro.req(m, &uri, Some(&token), &body, &[]).await;
        r.expect_error(503, "read_only");
        assert_eq!(r.header("retry-after"), Some("600"), "{m} {uri}");
    }
}

#[tokio::test]
async fn json_bodies_must_be_json() {
    let env = Env::new();
    let f = env.file("a.txt", b"a").await;
    let body = bundle_body(&f, "a.txt");
    let put = |v: &str| format!("/v1/bundles/{}?version={v}&replica=aws", uuid::Uuid::new_v4());
    for ct in [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "application/json; charset=utf-16",
        "multipart/form-data; boundary=x",
    ] {
        let r = env
            .req("PUT", &put(V1), Some(&env.user()), &body, &[("content-type", ct)])
            .await;
        r.expect_error(415, "unsupported_media_type");
        let r = env
            .req(
                "POST",
                "/v1/search?replica=aws",
                None,
                r#"{"es_query": {}}"#,
                &[("content-type", ct)],
            )
            .await;
        r.expect_error(415, "unsupported_media_type");
    }
    for ct in [
        "application/json",
        "application/json; charset=UTF-8",
        "application/problem+json",
    ] {
        let r = env
            .req("PUT", &put(V1), Some(&env.user()), &body, &[("content-type", ct)])
            .await;
        assert_eq!(r.status, 201, "{ct}: {}", String::from_utf8_lossy(&r.body));
    }
    // No Content-Type at all is read as JSON (what curl -d and most scripts mean).
    let r = env.req("PUT", &put(V1), Some(&env.user()), &body, &[]).await;
    assert_eq!(r.status, 201);
    // Each route's own body limit, from the route table.
    let big = format!(r#"{{"reason": "{}"}}"#, "x".repeat(dss::api::routes::SMALL_BODY));
    let r = env
        .req(
            "DELETE",
            &format!("/v1/bundles/{f}?replica=aws"),
            Some(&env.admin()),
            &big,
            &[],
        )
        .await;
    r.expect_error(413, "payload_too_large");
}

#[tokio::test]
async fn local_downloads_are_never_rendered_by_a_browser() {
    let env = Env::new();
    let page = b"<html><script>alert(document.cookie)</script></html>";
    let u = uuid::Uuid::new_v4().to_string();
    let src = env.stage("page.html", page);
    assert_eq!(env.put_file(&u, V1, &src, None).await.status, 201);
    let g = env.get(&format!("/v1/files/{u}?replica=aws")).await;
    assert_eq!(g.status, 302);
    assert_eq!(g.header("x-dss-content-type"), Some("text/html"));
    let d = env.get(&local_part(g.header("location").unwrap())).await;
    assert_eq!(d.status, 200);
    assert_eq!(&d.body[..], page);
    assert_eq!(d.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(d.header("content-security-policy"), Some("sandbox"));
    assert_eq!(d.header("content-disposition"), Some("attachment"));
    // A disposition the client asked for is kept (still sandboxed, still nosniff).
    let g = env
        .get(&format!("/v1/files/{u}?replica=aws&content_disposition=inline"))
        .await;
    let d = env.get(&local_part(g.header("location").unwrap())).await;
    assert_eq!(d.header("content-disposition"), Some("inline"));
    assert_eq!(d.header("content-security-policy"), Some("sandbox"));
}

#[tokio::test]
async fn bad_names_and_year_zero_are_refused() {
    let env = Env::new();
    let f = env.file("a.txt", b"a").await;
    for name in ["a\nb", "a\rb", "a\u{0}b", "", "dir/", "tab\there", "\u{1b}[31mred"] {
        let r = env
            .req(
                "PUT",
                &format!("/v1/bundles/{}?version={V1}&replica=aws", uuid::Uuid::new_v4()),
                Some(&env.user()),
                &bundle_body(&f, name),
                &[],
            )
            .await;
        r.expect_error(400, "illegal_arguments");
    }
    let year0 = "0000-01-01T000000.000000Z";
    let r = env
        .req(
            "PUT",
            &format!("/v1/bundles/{}?version={year0}&replica=aws", uuid::Uuid::new_v4()),
            Some(&env.user()),
            &bundle_body(&f, "a.txt"),
            &[],
        )
        .await;
    r.expect_error(400, "illegal_version");
    let src = env.stage("b", b"b");
    let r = env.put_file(&uuid::Uuid::new_v4().to_string(), year0, &src, None).await;
    r.expect_error(400, "illegal_version");
}

#[tokio::test]
async fn errors_carry_a_request_id_and_no_internals() {
    let env = Env::new();
    // File metadata that is not JSON: an internal failure whose detail names the key.
    let u = uuid::Uuid::new_v4().to_string();
    let dir = env.main_dir("aws").join("files");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{u}.{V1}")), b"{not json").unwrap();
    let r = env.get(&format!("/v1/files/{u}?replica=aws")).await;
    r.expect_error(500, "unhandled_exception");
    let title = r.json()["title"].as_str().unwrap().to_string();
    assert!(!title.contains("files/"), "title leaks the key: {title}");
    assert!(!title.contains(&u), "title leaks the key: {title}");
    let id = r.header("x-request-id").expect("request id").to_string();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    // Every answer has one, and a well-formed id from a previous hop is kept.
    let ok = env.get("/version").await;
    assert!(ok.header("x-request-id").is_some());
    assert_ne!(ok.header("x-request-id"), Some(id.as_str()));
    let hop = env
        .req("GET", "/version", None, "", &[("x-request-id", "edge-1234abcd")])
        .await;
    assert_eq!(hop.header("x-request-id"), Some("edge-1234abcd"));
    let forged = env
        .req("GET", "/version", None, "", &[("x-request-id", "a b\tc;d=e")])
        .await;
    assert_ne!(forged.header("x-request-id"), Some("a b\tc;d=e"));
}

#[tokio::test]
async fn application_secrets_are_served() {
    // The dev issuer's default: a well-formed document naming this server.
    let env = Env::new();
    let r = env.get("/internal/application_secrets").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["installed"]["client_id"].is_string(), "{doc}");
    assert!(doc["installed"]["auth_uri"]
        .as_str()
        .unwrap()
        .starts_with("http://dss.test"));
    // Configured: a file, or the JSON itself, served as is.
    let secrets = json!({"installed": {"client_id": "c", "client_secret": "s", "auth_uri": "https://a", "token_uri": "https://t"}});
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), secrets.to_string()).unwrap();
    let path = file.path().to_string_lossy().into_owned();
    let env = Env::with(|c| c.application_secrets = Some(path));
    assert_eq!(env.get("/internal/application_secrets").await.json(), secrets);
    let inline = secrets.to_string();
    let env = Env::with(|c| c.application_secrets = Some(inline));
    assert_eq!(env.get("/internal/application_secrets").await.json(), secrets);
    // Without a dev issuer and without the setting: a clean 404, not something the hca
    // CLI would keep as its secrets.
    let env = Env::with(|c| c.dev_issuer = "off".into());
    env.get("/internal/application_secrets")
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn fake_timeouts_outside_prod_only() {
    let env = Env::new();
    let uri = "/v1/bundles/all?replica=aws";
    let h = [("DSS_FAKE_504_PROBABILITY", "1.0")];
    let r = env.req("GET", uri, None, "", &h).await;
    r.expect_error(504, "timed_out");
    assert_eq!(r.header("retry-after"), Some("10"));
    let r = env
        .req("GET", uri, None, "", &[("DSS_FAKE_504_PROBABILITY", "0")])
        .await;
    assert_eq!(r.status, 200);
    let prod = Env::with(|c| c.deployment_stage = "prod".into());
    assert_eq!(prod.req("GET", uri, None, "", &h).await.status, 200);
}
