//! Elasticsearch / OpenSearch over HTTP (`DSS_ES_ENDPOINT`), through the crate's
//! [`HttpClient`]. Each replica has an index `{prefix}-{replica}-docs` created with the
//! original's mapping (typeless, for Elasticsearch 7+ and OpenSearch). Queries are sent as
//! written, with the original's sort, `_source` and size; documents go in with `_bulk`.
//!
//! Answers are read up to a cap ([`MAX_SEARCH_ANSWER_BYTES`], [`MAX_ADMIN_ANSWER_BYTES`]),
//! so a broken or hostile upstream cannot exhaust memory. Error titles carry no upstream
//! text except Elasticsearch's reason for refusing a query (the client's own query, as the
//! original answered); everything else goes to the log.

use super::{BoxFuture, IndexOp, SearchEngine, SearchError, SearchHit, SearchPage, SearchRequest};
use crate::http::HttpClient;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Mutex;

/// Deepest JSON nesting forwarded to Elasticsearch.
pub const MAX_JSON_DEPTH: usize = 64;
/// Largest `_search` answer read: a raw page is 10 documents, a summary page at most 500
/// ids, so this leaves room for bundle documents of a few MiB each.
pub const MAX_SEARCH_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// Largest answer read to index creation, `_bulk` and `_delete_by_query` (a `_bulk`
/// answer of a batch of 512 documents is about 150 KiB).
pub const MAX_ADMIN_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// Longest reason of Elasticsearch's passed on in a 400's title.
const MAX_REASON_CHARS: usize = 500;

/// The original's mapping (`dss/index/es/mapping.json`) without its percolator type and
/// without mapping types, which Elasticsearch 7 removed.
pub fn mapping() -> Value {
    json!({
        "settings": {
            "analysis": {"normalizer": {"keyword_lowercase": {"type": "custom", "filter": ["lowercase"]}}}
        },
        "mappings": {
            "date_detection": true,
            "dynamic_date_formats": ["yyyy-MM-dd HH:mm:ss", "strict_date_optional_time"],
            "dynamic_templates": [
                {"dates": {"match_mapping_type": "date", "mapping": {"type": "date"}}},
                {"short_strings": {"match_mapping_type": "string", "mapping": {
                    "normalizer": "keyword_lowercase", "type": "keyword", "ignore_above": 256,
                    "fields": {"text": {"type": "text"}}}}}
            ],
            "properties": {
                "uuid": {"type": "keyword"},
                "manifest": {"properties": {"version": {"type": "keyword"}}}
            }
        }
    })
}

/// How deeply `v` nests.
pub fn json_depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(json_depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The Elasticsearch engine.
pub struct EsEngine<H> {
    http: H,
    endpoint: String,
    auth: Option<String>,
    prefix: String,
    created: Mutex<HashSet<String>>,
}

impl<H: HttpClient> EsEngine<H> {
    /// An engine on `endpoint` (`http(s)://[user:password@]host[:port][/path]`).
    pub fn new(http: H, endpoint: &str, prefix: &str) -> Result<Self, String> {
        let mut url = url::Url::parse(endpoint).map_err(|e| format!("{endpoint}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!("{endpoint}: must be an http(s) URL"));
        }
        let auth = (!url.username().is_empty()).then(|| {
            use base64::Engine;
            let user = percent_encoding::percent_decode_str(url.username())
                .decode_utf8_lossy()
                .to_string();
            let pass = url
                .password()
                .map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().to_string())
                .unwrap_or_default();
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            )
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "index prefix {prefix:?} must be lowercase letters, digits and '-'"
            ));
        }
        Ok(EsEngine {
            http,
            endpoint: url.as_str().trim_end_matches('/').to_string(),
            auth,
            prefix: prefix.to_string(),
            created: Mutex::new(HashSet::new()),
        })
    }

    /// The endpoint, without credentials.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn index_name(&self, replica: &str) -> String {
        format!("{}-{replica}-docs", self.prefix)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
        ndjson: bool,
        limit: usize,
    ) -> Result<(u16, Value), SearchError> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.endpoint))
            .header(
                "content-type",
                if ndjson {
                    "application/x-ndjson"
                } else {
                    "application/json"
                },
            );
        if let Some(a) = &self.auth {
            b = b.header("authorization", a);
        }
        let req = b.body(body).map_err(|e| SearchError::Internal(e.to_string()))?;
        let resp = match self.http.send_limited(req, limit).await {
            Ok(r) => r,
            Err(crate::http::HttpError::TooLarge(n)) => {
                tracing::error!(method, path, limit = n, "Elasticsearch answer too large");
                return Err(SearchError::Internal(format!(
                    "the Elasticsearch answer was larger than {n} bytes"
                )));
            }
            Err(e) => {
                // The transport's message names the endpoint: logged, not answered.
                tracing::warn!(method, path, "Elasticsearch unreachable: {e}");
                return Err(SearchError::Unavailable("Elasticsearch cannot be reached".into()));
            }
        };
        let status = resp.status().as_u16();
        let v = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
        Ok((status, v))
    }

    async fn ensure_index(&self, replica: &str) -> Result<String, SearchError> {
        let name = self.index_name(replica);
        if self.created.lock().unwrap_or_else(|e| e.into_inner()).contains(&name) {
            return Ok(name);
        }
        let (status, v) = self
            .call(
                "PUT",
                &format!("/{name}"),
                Bytes::from(mapping().to_string()),
                false,
                MAX_ADMIN_ANSWER_BYTES,
            )
            .await?;
        let exists = v["error"]["type"] == "resource_already_exists_exception";
        if !(200..300).contains(&status) && !exists {
            return Err(es_error(status, &v));
        }
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone());
        Ok(name)
    }

    async fn bulk(&self, replica: &str, ops: Vec<IndexOp>) -> Result<(), SearchError> {
        let name = self.ensure_index(replica).await?;
        let mut body = Vec::new();
        for op in ops {
            let IndexOp::Put { id, doc } = op;
            body.extend_from_slice(json!({"index": {"_index": name, "_id": id}}).to_string().as_bytes());
            body.push(b'\n');
            body.extend_from_slice(doc.to_string().as_bytes());
            body.push(b'\n');
        }
        // `wait_for`: a search after this returns sees the documents.
        let (status, v) = self
            .call(
                "POST",
                "/_bulk?refresh=wait_for",
                Bytes::from(body),
                true,
                MAX_ADMIN_ANSWER_BYTES,
            )
            .await?;
        if !(200..300).contains(&status) {
            return Err(es_error(status, &v));
        }
        if v["errors"] == true {
            let first = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|i| i["index"].get("error").cloned())
                .unwrap_or(Value::Null);
            tracing::error!(error = %first, "Elasticsearch refused a bulk index");
            let kind = first["type"].as_str().unwrap_or("unknown error");
            return Err(SearchError::BadRequest(format!("bulk indexing refused ({kind})")));
        }
        Ok(())
    }

    async fn run_search(&self, req: SearchRequest<'_>) -> Result<SearchPage, SearchError> {
        if json_depth(req.es_query) > MAX_JSON_DEPTH {
            return Err(SearchError::BadRequest(format!(
                "es_query nested deeper than {MAX_JSON_DEPTH} levels"
            )));
        }
        let mut body = req.es_query.clone();
        let Some(obj) = body.as_object_mut() else {
            return Err(SearchError::BadRequest("es_query must be a JSON object".into()));
        };
        if !req.with_source {
            obj.insert("_source".into(), json!(false));
        }
        obj.insert(
            "sort".into(),
            json!([{"uuid": {"order": "desc"}}, {"manifest.version": {"missing": "_last", "order": "desc"}}]),
        );
        obj.insert("size".into(), json!(req.per_page));
        obj.insert("track_total_hits".into(), json!(true));
        if let Some((u, v)) = &req.search_after {
            obj.insert("search_after".into(), json!([u, v]));
        }
        let name = self.index_name(req.replica);
        let (status, v) = self
            .call(
                "POST",
                &format!("/{name}/_search"),
                Bytes::from(body.to_string()),
                false,
                MAX_SEARCH_ANSWER_BYTES,
            )
            .await?;
        if status == 404 && v["error"]["type"] == "index_not_found_exception" {
            // Nothing indexed yet for this replica.
            return Ok(SearchPage {
                total: 0,
                hits: Vec::new(),
                partial: false,
            });
        }
        if !(200..300).contains(&status) {
            return Err(es_error(status, &v));
        }
        if v["_shards"]["failed"].as_u64().unwrap_or(0) != 0 {
            return Err(SearchError::Internal(format!(
                "{} of {} shards failed",
                v["_shards"]["failed"], v["_shards"]["total"]
            )));
        }
        let total = v["hits"]["total"]["value"]
            .as_u64()
            .or_else(|| v["hits"]["total"].as_u64())
            .unwrap_or(0);
        let mut hits = Vec::new();
        for h in v["hits"]["hits"].as_array().into_iter().flatten() {
            let Some(id) = h["_id"].as_str() else {
                continue;
            };
            let sort = match h["sort"].as_array().map(Vec::as_slice) {
                Some([Value::String(u), Value::String(v), ..]) => (u.clone(), v.clone()),
                _ => super::split_id(id),
            };
            hits.push(SearchHit {
                id: id.to_string(),
                score: h["_score"].as_f64(),
                sort,
                source: req.with_source.then(|| h["_source"].clone()),
            });
        }
        let partial = v["timed_out"].as_bool().unwrap_or(false);
        Ok(SearchPage { total, hits, partial })
    }
}

/// An Elasticsearch error answer, as the original mapped it: 400 is the query's fault,
/// answered with Elasticsearch's reason (about the client's own query); other answers
/// are logged and answered by status only.
fn es_error(status: u16, v: &Value) -> SearchError {
    let reason = v["error"]["root_cause"][0]["reason"]
        .as_str()
        .or_else(|| v["error"]["reason"].as_str());
    let logged: String = v.to_string().chars().take(4096).collect();
    tracing::warn!(status, answer = %logged, "Elasticsearch refused a request");
    match (status, reason) {
        (400, Some(r)) => SearchError::BadRequest(r.chars().take(MAX_REASON_CHARS).collect()),
        (400, None) => SearchError::BadRequest("Elasticsearch refused the query".into()),
        (502..=504, _) => SearchError::Unavailable(format!("Elasticsearch answered {status}")),
        _ => SearchError::Internal(format!("Elasticsearch answered {status}")),
    }
}

impl<H: HttpClient> SearchEngine for EsEngine<H> {
    fn index<'a>(&'a self, replica: &'a str, ops: Vec<IndexOp>) -> BoxFuture<'a, Result<(), SearchError>> {
        Box::pin(self.bulk(replica, ops))
    }

    fn clear<'a>(&'a self, replica: &'a str) -> BoxFuture<'a, Result<(), SearchError>> {
        Box::pin(async move {
            let name = self.ensure_index(replica).await?;
            let body = Bytes::from(json!({"query": {"match_all": {}}}).to_string());
            let (status, v) = self
                .call(
                    "POST",
                    &format!("/{name}/_delete_by_query?refresh=true"),
                    body,
                    false,
                    MAX_ADMIN_ANSWER_BYTES,
                )
                .await?;
            if (200..300).contains(&status) {
                Ok(())
            } else {
                Err(es_error(status, &v))
            }
        })
    }

    fn search<'a>(&'a self, req: SearchRequest<'a>) -> BoxFuture<'a, Result<SearchPage, SearchError>> {
        Box::pin(self.run_search(req))
    }

    fn name(&self) -> &'static str {
        "elasticsearch"
    }
}
