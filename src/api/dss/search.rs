//! `POST /v1/search`: an Elasticsearch query over the bundle metadata index, answered in
//! the original's shape (`dss/api/search.py`): results sorted by `uuid` then
//! `manifest.version` descending, 206 + `Link: <…>; rel="next"` while a page is full,
//! `search_after` as the last hit's sort values.

use crate::api::*;
use crate::search::budget::Budget;
use crate::search::{SearchError, SearchRequest};
use serde_json::{json, Value};

/// `per_page` of `output_format=raw`, whatever was asked for (as the original).
pub const RAW_PER_PAGE: usize = 10;

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::BadRequest(m) => ApiError::SearchBadRequest(m),
            SearchError::Unavailable(m) => ApiError::Unavailable(m),
            SearchError::TimedOut(m) => ApiError::TimedOut(m),
            SearchError::Internal(m) => ApiError::SearchInternal(m),
        }
    }
}

/// `POST /v1/search?replica&output_format&per_page&search_after`.
pub async fn post<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
) -> Result<Response, ApiError> {
    let replica = app.replica_param(&ctx.query)?;
    let output_format = ctx.query.get("output_format").unwrap_or("summary");
    let raw = match output_format {
        "summary" => false,
        "raw" => true,
        other => {
            return Err(ApiError::IllegalArguments(format!(
                "'{other}' is not one of ['summary', 'raw']"
            )))
        }
    };
    let per_page = ctx.query.int_in("per_page", 10, 500, 100)? as usize;
    let per_page = if raw { RAW_PER_PAGE } else { per_page };
    let search_after = match ctx.query.get("search_after") {
        None => None,
        Some(s) => match s.split_once(',') {
            Some((u, v)) if !u.is_empty() && !v.contains(',') => Some((u.to_string(), v.to_string())),
            _ => {
                return Err(ApiError::SearchBadRequest(format!(
                    "search_after [{s}] must be the last hit's sort values, uuid,version"
                )))
            }
        },
    };
    // One budget for the whole request: its body's values are counted before the body is
    // parsed (16 MiB of `[1,1,…]` would take hundreds of MiB as JSON values).
    let mut budget = Budget::new();
    budget
        .json_values(ctx.body)
        .map_err(|e| ApiError::SearchBadRequest(e.to_string()))?;
    let body = params::json_body(ctx.body)?;
    let es_query = body
        .get("es_query")
        .ok_or_else(|| ApiError::IllegalArguments("'es_query' is a required property".into()))?;
    if !es_query.is_object() {
        return Err(ApiError::IllegalArguments(format!(
            "{es_query} is not of type 'object' (es_query)"
        )));
    }
    let engine = app
        .search
        .as_ref()
        .ok_or_else(|| ApiError::NotImplemented("search is turned off on this server (DSS_SEARCH=off)".into()))?;
    let page = engine
        .search(SearchRequest {
            replica: &replica.name,
            es_query,
            per_page,
            search_after,
            with_source: raw,
            budget,
        })
        .await?;

    let full = page.hits.len() >= per_page;
    let next = page.hits.last().map(|h| format!("{},{}", h.sort.0, h.sort.1));
    let results: Vec<Value> = page
        .hits
        .into_iter()
        .map(|h| {
            let (uuid, version) = crate::search::split_id(&h.id);
            let mut r = json!({
                "bundle_fqid": h.id,
                "bundle_url": format!(
                    "{}/v1/bundles/{uuid}?version={}&replica={}",
                    ctx.base_url,
                    enc(&version),
                    replica.name
                ),
                "search_score": h.score,
            });
            if raw {
                r["metadata"] = h.source.unwrap_or(Value::Null);
            }
            r
        })
        .collect();
    let out = json!({"es_query": es_query, "results": results, "total_hits": page.total});
    let mut r = json_response(
        if full {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        },
        &out,
    );
    match next.filter(|_| full) {
        Some(after) => {
            let link = format!(
                "{}/v1/search?per_page={per_page}&replica={}&search_after={}&output_format={output_format}",
                ctx.base_url,
                replica.name,
                enc(&after)
            );
            set_header(&mut r, "link", &format!("<{link}>; rel=\"next\""));
            set_header(&mut r, "X-OpenAPI-Pagination", "true");
        }
        None => set_header(&mut r, "X-OpenAPI-Pagination", "false"),
    }
    set_header(&mut r, "X-OpenAPI-Paginated-Content-Key", "results");
    if page.partial {
        set_header(&mut r, crate::api::edge::SEARCH_PARTIAL_HEADER, "true");
    }
    Ok(r)
}

/// Everything but RFC 3986's unreserved characters is escaped.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}
