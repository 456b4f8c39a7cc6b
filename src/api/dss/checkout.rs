//! `/v1/bundles/{uuid}/checkout` and `/v1/bundles/checkout/{id}`: bundle checkout, as
//! a job ([`crate::bucket::checkout`]), and its status.

use crate::api::params::{json_body, uuid};
use crate::api::*;
use crate::bucket::checkout::{read_status, write_status, CheckoutJob, CheckoutStatus};
use serde_json::{json, Value};

/// Checkouts to a user's bucket or with an email (each its own copy) that may wait or
/// run at once; more are refused with 503 until some end.
const MAX_PENDING_CHECKOUTS: usize = 64;

/// An optional string field of the body.
fn opt_str<'a>(body: &'a serde_json::Map<String, Value>, name: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::IllegalArguments(format!("'{name}' must be a string"))),
    }
}

/// An email address as far as it matters here: one `@`, no spaces or control
/// characters, within the RFC's length (the mail library checks the rest when it sends).
fn plausible_email(s: &str) -> bool {
    s.len() <= 254
        && s.split('@').count() == 2
        && !s.starts_with('@')
        && !s.ends_with('@')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `POST /v1/bundles/{uuid}/checkout?replica[&version]`, body `{destination?, email?}`:
/// start copying the bundle to the replica's checkout bucket (or `destination`, a bucket
/// of the replica's cloud); `{checkout_job_id}`.
pub async fn post<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let id = uuid(id)?;
    let replica = app.replica_param(&ctx.query)?;
    let version = ctx.query.version("version")?;
    let body = if ctx.body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        json_body(ctx.body)?
    };
    let destination = opt_str(&body, "destination")?;
    if let Some(d) = destination {
        if d.contains('/') {
            return Err(ApiError::IllegalArguments(
                "the destination is a bucket name, without '/'".into(),
            ));
        }
        if d.is_empty() {
            return Err(ApiError::IllegalArguments("the destination is empty".into()));
        }
    }
    let email = opt_str(&body, "email")?;
    if email.is_some_and(|e| !plausible_email(e)) {
        return Err(ApiError::IllegalArguments("'email' is not an email address".into()));
    }
    let version = version.as_ref().map(|v| v.as_str());
    let manifest = app
        .bucket(replica)
        .manifest(id.as_str(), version, app.clock.now())
        .await?
        .ok_or_else(|| ApiError::NotFound("Cannot find bundle!".into()))?;
    let job = CheckoutJob {
        id: uuid::Uuid::new_v4().to_string(),
        replica: replica.name.clone(),
        uuid: id.as_str().to_string(),
        version: manifest.version.clone(),
        destination: destination.map(str::to_string),
        email: email.map(str::to_string),
    };
    let job_id = start(app, replica, job).await?;
    Ok(json_response(StatusCode::OK, &json!({ "checkout_job_id": job_id })))
}

/// Start checkout `job`: its status RUNNING (before the job exists, so that a status
/// asked for at once is found), then the job queued; its id. A checkout into the
/// replica's own checkout bucket without an email joins the one of the same bundle
/// version already queued or running, if any (one copy at a time, however many ask).
pub async fn start<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    replica: &Replica<S>,
    job: CheckoutJob,
) -> Result<String, ApiError> {
    let Some(jobs) = app.jobs.as_ref() else {
        return Err(ApiError::NeedsBackend);
    };
    if job.shared() {
        if let Some(id) = jobs.pending_checkout(&job.replica, &job.uuid, &job.version).await {
            return Ok(id);
        }
    } else if jobs.checkouts_pending(MAX_PENDING_CHECKOUTS).await >= MAX_PENDING_CHECKOUTS {
        // The route is public, as the original's: anyone may ask, but not without bound.
        return Err(ApiError::Unavailable(format!(
            "{MAX_PENDING_CHECKOUTS} checkouts are waiting or running; try again later"
        )));
    }
    write_status(&replica.checkout, &job.id, &CheckoutStatus::running(None)).await?;
    let id = job.id.clone();
    tracing::info!(uuid = %job.uuid, version = %job.version, checkout = %id, "checkout started");
    jobs.submit_checkout(job)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the checkout could not be queued: {e}")))?;
    Ok(id)
}

/// `GET /v1/bundles/checkout/{id}?replica`: the checkout's status document.
pub async fn get<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let replica = app.replica_param(&ctx.query)?;
    let id = uuid(id)?;
    let status = read_status(&replica.checkout, id.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Cannot find checkout with execution id {id}")))?;
    let status = serde_json::to_value(status).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(StatusCode::OK, &status))
}
