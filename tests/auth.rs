//! Token verification: issuers, audiences, expiry, claims, JWKS sources.

mod common;
use common::*;
use jwt_compact::alg::Rsa;
use jwt_compact::{AlgorithmExt, Claims, Header, TimeOptions};
use rsa::pkcs8::DecodePrivateKey;
use serde_json::{json, Map, Value};

fn sign(key: &rsa::RsaPrivateKey, kid: Option<&str>, claims: Value, ttl_secs: i64) -> String {
    let custom: Map<String, Value> = claims.as_object().unwrap().clone();
    let claims = Claims::new(custom).set_duration_and_issuance(
        &TimeOptions::new(chrono::Duration::zero(), chrono::Utc::now),
        chrono::Duration::seconds(ttl_secs),
    );
    let mut h = Header::empty();
    if let Some(k) = kid {
        h = h.with_key_id(k);
    }
    Rsa::rs256().token(&h, &claims, key).unwrap()
}

fn test_key() -> rsa::RsaPrivateKey {
    rsa::RsaPrivateKey::from_pkcs8_pem(test_key_pem()).unwrap()
}

const AUD: &str = "https://dev.data.humancellatlas.org/";
const GROUP: &str = "https://auth.data.humancellatlas.org/group";

async fn put_with(env: &Env, token: &str) -> Resp {
    let src = env.stage("f.txt", b"auth test");
    let u = uuid::Uuid::new_v4();
    env.req(
        "PUT",
        &format!("/v1/files/{u}?version={V1}"),
        Some(token),
        &format!(r#"{{"source_url": "{src}", "creator_uid": 0}}"#),
        &[],
    )
    .await
}

#[tokio::test]
async fn dev_issuer_tokens_and_their_failures() {
    let env = Env::new();
    let kid = env.issuer.public_key().kid.unwrap();
    let key = test_key();
    let good = json!({"iss": "http://dss.test/", "sub": "u", "aud": AUD, "email": "u@example.org", GROUP: "hca"});
    assert_eq!(
        put_with(&env, &sign(&key, Some(&kid), good.clone(), 600)).await.status,
        201
    );
    // Audience as a list.
    let mut list_aud = good.clone();
    list_aud["aud"] = json!(["other", AUD]);
    assert_eq!(put_with(&env, &sign(&key, Some(&kid), list_aud, 600)).await.status, 201);
    // Expired.
    put_with(&env, &sign(&key, Some(&kid), good.clone(), -3600))
        .await
        .expect_error(401, "Unauthorized");
    // Not valid yet (nbf an hour ahead).
    let mut early = good.clone();
    early["nbf"] = json!(chrono::Utc::now().timestamp() + 3600);
    put_with(&env, &sign(&key, Some(&kid), early, 7200))
        .await
        .expect_error(401, "Unauthorized");
    // Wrong audience.
    let mut bad_aud = good.clone();
    bad_aud["aud"] = json!("https://elsewhere/");
    put_with(&env, &sign(&key, Some(&kid), bad_aud, 600))
        .await
        .expect_error(401, "Unauthorized");
    // No email claim.
    let mut no_email = good.clone();
    no_email.as_object_mut().unwrap().remove("email");
    let r = put_with(&env, &sign(&key, Some(&kid), no_email, 600)).await;
    r.expect_error(401, "Unauthorized");
    assert_eq!(r.json()["title"], "Authorization token is missing email claims.");
    // Untrusted issuer.
    let mut other_iss = good.clone();
    other_iss["iss"] = json!("https://evil.example/");
    put_with(&env, &sign(&key, Some(&kid), other_iss, 600))
        .await
        .expect_error(403, "Forbidden");
    // Right issuer, signed by another key under the same kid.
    let other_key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    put_with(&env, &sign(&other_key, Some(&kid), good.clone(), 600))
        .await
        .expect_error(401, "Unauthorized");
    // Unknown kid.
    put_with(&env, &sign(&key, Some("nope"), good.clone(), 600))
        .await
        .expect_error(401, "Unauthorized");
    // A tampered payload.
    let t = sign(&key, Some(&kid), good.clone(), 600);
    let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
    payload["email"] = json!("admin@example.org");
    parts[1] = b64.encode(payload.to_string());
    put_with(&env, &parts.join(".")).await.expect_error(401, "Unauthorized");
    // HS256 with the public key as secret (algorithm confusion) is refused.
    let hs = format!(
        "{}.{}.{}",
        b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        parts[1],
        b64.encode("sig")
    );
    put_with(&env, &hs).await.expect_error(401, "Unauthorized");
    put_with(&env, "a.b").await.expect_error(401, "Unauthorized");
    env.req(
        "PUT",
        &format!("/v1/files/{}?version={V1}", uuid::Uuid::new_v4()),
        None,
        "{}",
        &[("authorization", "Basic abc")],
    )
    .await
    .expect_error(401, "OAuthProblem");
}

/// A token with exactly these header fields (besides `alg`, `kid`) and claims: no `exp`
/// or `iat` is added.
fn sign_raw(key: &rsa::RsaPrivateKey, kid: &str, header_fields: Value, claims: Value) -> String {
    let fields: Map<String, Value> = header_fields.as_object().unwrap().clone();
    let claims = Claims::new(claims.as_object().unwrap().clone());
    Rsa::rs256()
        .token(&Header::new(fields).with_key_id(kid), &claims, key)
        .unwrap()
}

#[tokio::test]
async fn token_times_lifetimes_and_critical_headers() {
    let env = Env::new();
    let kid = env.issuer.public_key().kid.unwrap();
    let key = test_key();
    let now = chrono::Utc::now().timestamp();
    let good = json!({"iss": "http://dss.test/", "sub": "u", "aud": AUD, "email": "u@example.org", GROUP: "hca"});
    let with_times = |iat: Option<i64>, exp: i64| {
        let mut c = good.clone();
        c["exp"] = json!(exp);
        if let Some(iat) = iat {
            c["iat"] = json!(iat);
        }
        sign_raw(&key, &kid, json!({}), c)
    };
    let day = 24 * 3600;
    assert_eq!(put_with(&env, &with_times(Some(now), now + 600)).await.status, 201);
    // The default cap (one day) accepts a day-long token, with or without iat ...
    assert_eq!(put_with(&env, &with_times(Some(now), now + day)).await.status, 201);
    assert_eq!(put_with(&env, &with_times(None, now + day)).await.status, 201);
    // ... and refuses longer ones: exp far ahead (year 9999), or exp - iat above the cap.
    let year_9999 = 253_402_300_000;
    for token in [
        with_times(Some(now), year_9999),
        with_times(None, year_9999),
        with_times(Some(now), now + day + 3600),
        with_times(Some(now - 2 * day), now + 600),
    ] {
        put_with(&env, &token).await.expect_error(401, "Unauthorized");
    }
    // Issued in the future (beyond the minute of leeway).
    put_with(&env, &with_times(Some(now + 3600), now + 7200))
        .await
        .expect_error(401, "Unauthorized");
    assert_eq!(put_with(&env, &with_times(Some(now + 30), now + 600)).await.status, 201);
    // A critical header extension: we implement none, so every one is refused.
    let mut c = good.clone();
    c["exp"] = json!(now + 600);
    for crit in [json!(["exp"]), json!(["b64"]), json!([])] {
        let token = sign_raw(&key, &kid, json!({ "crit": crit }), c.clone());
        put_with(&env, &token).await.expect_error(401, "Unauthorized");
    }
    let other_header = sign_raw(&key, &kid, json!({"x-ignored": 1}), c.clone());
    assert_eq!(put_with(&env, &other_header).await.status, 201);
}

#[tokio::test]
async fn token_lifetime_cap_is_configurable() {
    let env = Env::with(|c| c.max_token_lifetime = 600);
    let kid = env.issuer.public_key().kid.unwrap();
    let good = json!({"iss": "http://dss.test/", "sub": "u", "aud": AUD, "email": "u@example.org", GROUP: "hca"});
    assert_eq!(
        put_with(&env, &sign(&test_key(), Some(&kid), good.clone(), 600))
            .await
            .status,
        201
    );
    put_with(&env, &sign(&test_key(), Some(&kid), good, 601))
        .await
        .expect_error(401, "Unauthorized");
    // Including the dev issuer's own hour-long tokens.
    put_with(&env, &env.user()).await.expect_error(401, "Unauthorized");
}

#[tokio::test]
async fn service_account_issuers_must_be_plain() {
    // The issuer names an authorised domain only after a `?`, `#` or `/`, or with two
    // `@`: were it accepted, its key URL would point at the attacker's own account.
    let env = Env::with(|c| c.authorized_domains = Some("auth.example".into()));
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    for iss in [
        "me@my-proj.iam.gserviceaccount.com?@auth.example",
        "me@my-proj.iam.gserviceaccount.com#@auth.example",
        "me@my-proj.iam.gserviceaccount.com/@auth.example",
        "me%2F..%2Fme@my-proj.iam.gserviceaccount.com@auth.example",
        "me%40my-proj.iam.gserviceaccount.com@auth.example",
        "me @auth.example",
        "me@x@auth.example",
    ] {
        let claims = json!({"iss": iss, "sub": iss, "aud": AUD, "email": ADMIN, GROUP: "hca"});
        let r = put_with(&env, &sign(&key, Some("k1"), claims, 600)).await;
        r.expect_error(403, "Forbidden");
    }
}

#[tokio::test]
async fn service_account_keys_from_trusted_jwks() {
    let sa_key = test_key();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dss::auth::jwks::to_jwks(&[dss::auth::jwks::NamedKey {
        kid: Some("sa-key-1".into()),
        key: sa_key.to_public_key(),
    }]);
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    let env = Env::with(|c| {
        c.trusted_jwks = Some(path.clone());
        c.authorized_domains = Some("iam.example.com".into());
        c.dev_issuer = "off".into();
    });
    let sa = "uploader@iam.example.com";
    // The hca CLI's service-account token: iss == sub == email, the CLI's audience.
    let claims = json!({"iss": sa, "sub": sa, "aud": AUD, "email": sa, GROUP: "hca", "https://auth.data.humancellatlas.org/email": sa});
    assert_eq!(
        put_with(&env, &sign(&sa_key, Some("sa-key-1"), claims.clone(), 600))
            .await
            .status,
        201
    );
    let mut not_self = claims.clone();
    not_self["sub"] = json!("someone-else");
    put_with(&env, &sign(&sa_key, Some("sa-key-1"), not_self, 600))
        .await
        .expect_error(403, "Forbidden");
    let other = "uploader@elsewhere.com";
    let foreign = json!({"iss": other, "sub": other, "aud": AUD, "email": other, GROUP: "hca"});
    put_with(&env, &sign(&sa_key, Some("sa-key-1"), foreign, 600))
        .await
        .expect_error(403, "Forbidden");
    // With the dev issuer off, its tokens are not trusted and it publishes nothing.
    put_with(&env, &env.user()).await.expect_error(403, "Forbidden");
    env.get("/.well-known/jwks.json").await.expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_provider_keys_by_discovery() {
    // Server A's dev issuer acts as the OIDC provider of server B: B finds A's JWKS
    // through A's discovery document, over real HTTP.
    let a_dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut a_cfg = dss::server::ServeConfig::for_dir(a_dir.path());
    a_cfg.public_url_opt = Some(format!("http://127.0.0.1:{port}"));
    let a = dss::server::build_app(&a_cfg).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dss::server::serve(a.clone(), listener, async {
        let _ = stop_rx.await;
    }));
    let a_issuer = format!("http://127.0.0.1:{port}/");
    let disco: Value = serde_json::from_slice(
        &reqwest::get(format!("{a_issuer}.well-known/openid-configuration"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(disco["issuer"], a_issuer.as_str());

    let b = Env::with(|c| c.openid_provider = Some(a_issuer.clone()));
    let a_dev =
        dss::auth::dev::DevIssuer::load_or_create(&dss::server::dev_issuer_dir(a_dir.path()), &a_issuer).unwrap();
    let token = a_dev
        .mint("oidc-user@example.org", Some("hca"), AUD, chrono::Duration::minutes(5))
        .unwrap();
    assert_eq!(put_with(&b, &token).await.status, 201);
    // Cached: the second request verifies without refetching (A is gone).
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    assert_eq!(put_with(&b, &token).await.status, 201);
}
