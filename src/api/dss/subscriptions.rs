//! `/v1/subscriptions`: users' subscriptions to bundle events (kept by the backend's
//! [`crate::model::subscription::SubscriptionService`]; matched and delivered by jobs,
//! `crate::jobs::notify`), and `/v1/subscriptions/{uuid}/deliveries`, the delivery log
//! the original lacked.

use crate::api::params::{json_body, uuid};
use crate::api::*;
use crate::model::subscription::{self as sub, Kind, Subscription, SubscriptionError, SubscriptionService};
use serde_json::{json, Value};

fn service<S, H, T>(app: &App<S, H, T>) -> Result<&dyn SubscriptionService, ApiError> {
    app.subscriptions.as_deref().ok_or(ApiError::NeedsBackend)
}

fn kind_param(ctx: &Ctx<'_>) -> Result<Kind, ApiError> {
    Ok(Kind::parse(ctx.query.get("subscription_type"))?)
}

/// `PUT /v1/subscriptions?replica`: a new subscription owned by the caller; 201 with its
/// `uuid` (and, for JMESPath ones, the stored document without its secret).
pub async fn put<S: Store, H: HttpClient, T: Sleeper>(app: &App<S, H, T>, ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let replica = app.replica_param(&ctx.query)?;
    let subs = service(app)?;
    let owner = ctx.caller()?.email.clone();
    let body = json_body(ctx.body)?;
    let kind = sub::validate(&body)?;
    if let (Kind::Elasticsearch, Some(q)) = (kind, body.get("es_query")) {
        // The query must be one the evaluator runs, within a search's budget.
        let mut parsed =
            crate::search::dsl::parse_body(q).map_err(|e| SubscriptionError::InvalidQuery(e.to_string()))?;
        crate::search::eval::Checked::new(&mut parsed).map_err(|e| SubscriptionError::InvalidQuery(e.to_string()))?;
    }
    let url = body.get("callback_url").and_then(Value::as_str).unwrap_or_default();
    subs.check_callback(url).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let mut doc = body;
    doc.insert("owner".into(), json!(owner));
    doc.insert("uuid".into(), json!(id));
    doc.insert("replica".into(), json!(replica.name));
    let s = Subscription {
        uuid: id.clone(),
        owner,
        replica: replica.name.clone(),
        kind,
        doc,
    };
    let answer = match kind {
        Kind::Jmespath => s.public_doc(),
        Kind::Elasticsearch => json!({ "uuid": id }),
    };
    subs.put(s).await?;
    tracing::info!(subscription = %id, kind = kind.as_str(), replica = %replica.name, "subscription created");
    Ok(json_response(StatusCode::CREATED, &answer))
}

/// `GET /v1/subscriptions?replica&subscription_type`: the caller's subscriptions of a kind.
pub async fn find<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
) -> Result<Response, ApiError> {
    let replica = app.replica_param(&ctx.query)?;
    let kind = kind_param(ctx)?;
    let owner = &ctx.caller()?.email;
    let found = service(app)?.list(&replica.name, owner, kind).await?;
    let docs: Vec<Value> = found.iter().map(Subscription::public_doc).collect();
    Ok(json_response(StatusCode::OK, &json!({ "subscriptions": docs })))
}

/// The caller's subscription `id` of the kind asked: another owner's is 404 for JMESPath
/// ones and 403 for Elasticsearch ones (the original's answers).
async fn owned<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Subscription, ApiError> {
    let replica = app.replica_param(&ctx.query)?;
    let kind = kind_param(ctx)?;
    let id = uuid(id)?;
    let owner = &ctx.caller()?.email;
    let found = service(app)?
        .get(&replica.name, id.as_str())
        .await?
        .filter(|s| s.kind == kind)
        .ok_or(SubscriptionError::NotFound)?;
    if &found.owner != owner {
        return Err(match kind {
            Kind::Jmespath => SubscriptionError::NotFound,
            Kind::Elasticsearch => SubscriptionError::Forbidden,
        }
        .into());
    }
    Ok(found)
}

/// `GET /v1/subscriptions/{uuid}?replica&subscription_type`: the subscription, without
/// its secret.
pub async fn get<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let s = owned(app, ctx, id).await?;
    Ok(json_response(StatusCode::OK, &s.public_doc()))
}

/// `DELETE /v1/subscriptions/{uuid}?replica&subscription_type`: `{timeDeleted}`.
pub async fn delete<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let s = owned(app, ctx, id).await?;
    if !service(app)?.delete(&s.replica, &s.uuid).await? {
        return Err(SubscriptionError::NotFound.into());
    }
    tracing::info!(subscription = %s.uuid, "subscription deleted");
    let deleted = crate::model::DssVersion::from_datetime(app.clock.now());
    Ok(json_response(
        StatusCode::OK,
        &json!({ "timeDeleted": deleted.as_str() }),
    ))
}

/// `GET /v1/subscriptions/{uuid}/deliveries?replica&subscription_type`: the newest
/// delivery attempts of the caller's subscription.
pub async fn deliveries<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let s = owned(app, ctx, id).await?;
    let log = service(app)?.deliveries(&s.replica, &s.uuid).await?;
    let log = serde_json::to_value(log).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(StatusCode::OK, &json!({ "deliveries": log })))
}
