//! Service routes: `/version`, `/internal/health`, `/internal/application_secrets`,
//! `/v1/swagger.json`, and the dev issuer's OIDC discovery document and JWKS.

use super::*;
use serde_json::{json, Value};

/// `GET /version`.
pub fn version<S: Store, H: HttpClient, T: Sleeper>(app: &App<S, H, T>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"version_info": {"version": app.config.version}}),
    )
}

/// `GET /internal/health`: always 200; `Healthy` says whether every replica answers, and
/// `replicas` how each one did.
pub async fn health<S: Store, H: HttpClient, T: Sleeper>(app: &App<S, H, T>) -> Response {
    let mut healthy = true;
    let mut each = serde_json::Map::new();
    for r in app.replicas.iter() {
        let mut ok = true;
        for s in [&r.main, &r.checkout] {
            if let Err(e) = s.list(crate::bucket::keys::BUNDLES, None, 1).await {
                tracing::warn!(replica = %r.name, "health check failed: {e}");
                ok = false;
            }
        }
        healthy &= ok;
        each.insert(r.name.clone(), json!({"Healthy": ok}));
    }
    json_response(StatusCode::OK, &json!({"Healthy": healthy, "replicas": each}))
}

/// `GET /internal/replication`: per source → destination pair, copies pending and
/// failed (with reasons), the lag and the last key copied (see `jobs::replication`).
pub async fn replication<S: Store, H: HttpClient, T: Sleeper>(app: &App<S, H, T>) -> Result<Response, ApiError> {
    let Some(jobs) = app.jobs.as_ref() else {
        return Err(ApiError::Unavailable("this server keeps no job queue".into()));
    };
    let status = jobs.replication_status().await.map_err(|e| {
        tracing::warn!("replication status not read: {e}");
        ApiError::Unavailable("the job queue cannot be read now".into())
    })?;
    Ok(json_response(StatusCode::OK, &status))
}

/// `GET /v1/swagger.json`: the OpenAPI document, with `host` and `schemes` set to
/// how this request reached us (the `hca` CLI calls `{scheme}://{host}{basePath}`), and
/// every `replica` parameter offering this deployment's replicas (the CLI builds its
/// choices from them, so a replica added by `DSS_REPLICAS` can be named there).
pub fn swagger<S: Store, H: HttpClient, T: Sleeper>(app: &App<S, H, T>, ctx: &Ctx<'_>) -> Response {
    let mut doc = app.swagger.clone();
    offer_replicas(&mut doc, &app.replicas.names());
    let (scheme, host) = ctx.base_url.split_once("://").unwrap_or(("http", &ctx.base_url));
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("host".into(), Value::String(host.trim_end_matches('/').to_string()));
        obj.insert("schemes".into(), json!([scheme]));
    }
    json_response(StatusCode::OK, &doc)
}

/// Set the `enum` of every parameter named `replica` to `names` (its `default` too, when
/// that is not one of them).
fn offer_replicas(doc: &mut Value, names: &[&str]) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let params = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|ops| ops.values_mut())
        .filter_map(|op| op.get_mut("parameters").and_then(Value::as_array_mut))
        .flatten()
        .filter(|p| p.get("name").and_then(Value::as_str) == Some("replica"));
    for p in params {
        if p.get("enum").is_some() {
            p["enum"] = json!(names);
        }
        let default_ok = p
            .get("default")
            .and_then(Value::as_str)
            .is_none_or(|d| names.contains(&d));
        if !default_ok {
            if let Some(first) = names.first() {
                p["default"] = json!(first);
            }
        }
    }
}

/// `GET /.well-known/openid-configuration` for the dev issuer.
pub fn openid_configuration<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
) -> Result<Response, ApiError> {
    let (issuer, _) = app
        .dev_jwks
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("no dev issuer on this server".into()))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "issuer": issuer,
            "jwks_uri": format!("{}/.well-known/jwks.json", ctx.base_url),
            "id_token_signing_alg_values_supported": ["RS256"],
        }),
    ))
}

/// `GET /.well-known/jwks.json` for the dev issuer.
pub fn jwks<S: Store, H: HttpClient, T: Sleeper>(app: &App<S, H, T>) -> Result<Response, ApiError> {
    let (_, jwks) = app
        .dev_jwks
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("no dev issuer on this server".into()))?;
    Ok(json_response(StatusCode::OK, jwks))
}

/// `GET /internal/application_secrets`: the OAuth client secrets document
/// (`GOOGLE_APPLICATION_SECRETS`), as the original served it. The `hca` CLI fetches it on
/// a fresh install and keeps whatever it gets in its config, so a missing document is a
/// clean 404 in the DSS error shape, never something that looks like secrets.
pub fn application_secrets<S: Store, H: HttpClient, T: Sleeper>(app: &App<S, H, T>) -> Result<Response, ApiError> {
    let doc = app.config.application_secrets.as_ref().ok_or_else(|| {
        ApiError::NotFound("no application secrets are configured (GOOGLE_APPLICATION_SECRETS)".into())
    })?;
    Ok(json_response(StatusCode::OK, doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_parameters_offer_the_configured_replicas() {
        let mut doc: Value = serde_json::from_str(include_str!("../../schema/dss-api.json")).unwrap();
        offer_replicas(&mut doc, &["gcp", "spare"]);
        let mut seen = 0;
        for ops in doc["paths"].as_object().unwrap().values() {
            for op in ops.as_object().unwrap().values() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["name"] == "replica" {
                        seen += 1;
                        assert_eq!(p["enum"], json!(["gcp", "spare"]), "{p}");
                        if let Some(d) = p.get("default") {
                            assert_eq!(d, "gcp", "a default that is not offered is replaced: {p}");
                        }
                    }
                }
            }
        }
        assert!(seen >= 8, "{seen} replica parameters");
    }
}
