//! `/v1/events`: the event journal ([`crate::model::event`]): one document per bundle
//! version written, listed as streams with presigned URLs, or read one at a time. Both
//! routes are public, as in the original.

use crate::api::*;
use crate::model::event::{self as ev, Cursor, EventJournal};
use serde_json::{json, Value};

fn journal<S, H, T>(app: &App<S, H, T>) -> Result<&dyn EventJournal, ApiError> {
    app.events.as_deref().ok_or(ApiError::NeedsBackend)
}

fn index_down(e: String) -> ApiError {
    ApiError::StorageUnavailable(format!("event journal: {e}"))
}

/// A date parameter: absent is `None`; anything but a DSS_VERSION, an RFC 3339 time or a
/// day is 400 (not echoed).
fn date(ctx: &Ctx<'_>, name: &str) -> Result<Option<String>, ApiError> {
    ctx.query
        .get(name)
        .map(|s| {
            ev::parse_date(s).ok_or_else(|| {
                ApiError::IllegalArguments(format!(
                    "{name} must be a DSS_VERSION (2019-01-31T120000.000000Z), an RFC 3339 time or a date"
                ))
            })
        })
        .transpose()
}

/// `GET /v1/events?replica&from_date&to_date&per_page&token`: the event streams of the
/// events recorded from `from_date` (inclusive) to `to_date` (exclusive), `per_page`
/// (1–10, default 1) at a time; 206 + `Link` while more follow.
pub async fn list<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
) -> Result<Response, ApiError> {
    let replica = app.replica_param(&ctx.query)?;
    let per_page = usize::try_from(ctx.query.int_in("per_page", 1, ev::PER_PAGE_MAX as i64, 1)?).unwrap_or(1);
    let to = date(ctx, "to_date")?;
    // A token names where the next page starts, and overrides `from_date` (as the
    // original's did); the original's own tokens, plain dates, are taken too.
    let from = match ctx.query.get("token") {
        Some(t) => Cursor::from_token(t)
            .or_else(|| ev::parse_date(t).map(|d| Cursor::at(&d)))
            .ok_or(ApiError::IllegalToken)?,
        None => Cursor::at(&date(ctx, "from_date")?.unwrap_or_default()),
    };
    if to.as_deref().is_some_and(|to| from.timestamp.as_str() > to) {
        return Err(ApiError::BadRequest("to_date must be greater than from_date".into()));
    }
    // Read as few entries as the page needs: one per stream while journals hold one event
    // (before compaction), more only when a stream turns out longer.
    let mut limit = ev::entries_next(per_page, 0);
    let page = loop {
        let entries = journal(app)?
            .entries(&replica.name, &from, to.as_deref(), limit)
            .await
            .map_err(index_down)?;
        let all_read = entries.len() < limit || limit >= ev::entries_for(per_page);
        let page = ev::page(entries, per_page);
        // The page is sure once the stream after it has begun, or nothing more is there.
        if page.next.is_some() || all_read {
            break page;
        }
        limit = ev::entries_next(per_page, limit);
    };
    let bucket = app.bucket(replica);
    let mut streams = Vec::with_capacity(page.streams.len());
    for s in page.streams {
        let url = bucket.presign_journal(&s.journal_id, app.config.presigned_ttl).await?;
        let mut v = serde_json::to_value(&s).map_err(|e| ApiError::Internal(e.to_string()))?;
        if let Value::Object(m) = &mut v {
            m.insert("stream_url".into(), Value::String(url));
        }
        streams.push(v);
    }
    let next = page.next.map(|c| ctx.url_with(&[("token", Some(&c.token()))]));
    Ok(page_response(
        json_response(StatusCode::OK, &json!({ "event_streams": streams })),
        next,
        "event_streams",
    ))
}

/// `GET /v1/events/{uuid}?version&replica`: the event of bundle `uuid` at `version` (its
/// metadata document, as the journal holds it); 404 if there is none (never recorded, or
/// deleted by a tombstone).
pub async fn get<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
    uuid: &str,
) -> Result<Response, ApiError> {
    let replica = app.replica_param(&ctx.query)?;
    let version = ctx.query.required("version")?;
    let not_found = || ApiError::NotFound("Cannot find event!".into());
    let id = ev::event_id(uuid, version);
    if ev::parse_event_id(&id).is_none() {
        return Err(not_found());
    }
    let entry = journal(app)?
        .entry(&replica.name, &id)
        .await
        .map_err(index_down)?
        .ok_or_else(not_found)?;
    let doc = app
        .bucket(replica)
        .journal_slice(&entry.journal, entry.offset, entry.size)
        .await?;
    Ok(json_bytes(StatusCode::OK, doc.to_vec()))
}
