//! Optional (`DSS_INDEX_SCHEMA_SCRUB=on`; off by default): the original's
//! `scrub_index_data` (`dss/index/es/validator.py`). Each metadata file's JSON schema is
//! fetched from its `describedBy` (or the legacy `core.schema_url`), and properties the
//! schema does not allow (`additionalProperties: false`) are removed before indexing. As in
//! the original, a file with no schema reference, or whose schema cannot be fetched, is left
//! out of the document. Off by default so that indexing never depends on a schema server.
//!
//! The subset of JSON Schema followed: `$ref` (relative URLs and `#/` pointers),
//! `properties`, `additionalProperties: false`, `items`; schemas are cached by URL.

use super::BoxFuture;
use crate::http::HttpClient;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Deepest `$ref`/property nesting followed.
const MAX_DEPTH: usize = 32;
/// Largest schema document accepted.
const MAX_SCHEMA_BYTES: usize = 4 * 1024 * 1024;

/// Fetches schemas (cached) and scrubs metadata files with them.
pub struct SchemaScrubber<H> {
    http: H,
    cache: Mutex<HashMap<String, Arc<Value>>>,
}

/// A schema node with the document it came from (for `#/` pointers) and its URL.
#[derive(Clone)]
struct Node {
    doc: Arc<Value>,
    url: String,
    pointer: String,
}

impl Node {
    fn value(&self) -> Option<&Value> {
        self.doc.pointer(&self.pointer)
    }
    fn child(&self, path: &[&str]) -> Node {
        let mut pointer = self.pointer.clone();
        for p in path {
            pointer.push('/');
            pointer.push_str(&p.replace('~', "~0").replace('/', "~1"));
        }
        Node {
            doc: self.doc.clone(),
            url: self.url.clone(),
            pointer,
        }
    }
}

impl<H: HttpClient> SchemaScrubber<H> {
    /// A scrubber fetching schemas with `http`.
    pub fn new(http: H) -> Self {
        SchemaScrubber {
            http,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn fetch(&self, url: &str) -> Option<Arc<Value>> {
        if let Some(v) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(url) {
            return Some(v.clone());
        }
        let parsed = url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))?;
        let req = http::Request::get(parsed.as_str()).body(bytes::Bytes::new()).ok()?;
        let resp = match self.http.send(req).await {
            Ok(r) if r.status().is_success() && r.body().len() <= MAX_SCHEMA_BYTES => r,
            Ok(r) => {
                tracing::warn!(url, status = r.status().as_u16(), "schema not fetched");
                return None;
            }
            Err(e) => {
                tracing::warn!(url, "schema not fetched: {e}");
                return None;
            }
        };
        let v: Value = serde_json::from_slice(resp.body()).ok()?;
        let v = Arc::new(v);
        // Failures are not cached: the next bundle tries again.
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(url.to_string(), v.clone());
        Some(v)
    }

    /// Follow `$ref`s from `node` to a schema that is not a reference.
    async fn resolve(&self, mut node: Node) -> Option<Node> {
        for _ in 0..MAX_DEPTH {
            let Some(r) = node.value().and_then(|v| v.get("$ref")).and_then(Value::as_str) else {
                return Some(node);
            };
            let r = r.to_string();
            let (target, fragment) = match r.split_once('#') {
                Some((t, f)) => (t.to_string(), f.to_string()),
                None => (r.clone(), String::new()),
            };
            node = if target.is_empty() {
                Node {
                    pointer: fragment,
                    ..node
                }
            } else {
                let url = url::Url::parse(&node.url).ok()?.join(&target).ok()?.to_string();
                Node {
                    doc: self.fetch(&url).await?,
                    url,
                    pointer: fragment,
                }
            };
        }
        None
    }

    /// The files to index: each scrubbed by its schema; files without one are left out.
    pub async fn scrub_files(&self, files: Vec<(String, Value)>) -> Vec<(String, Value)> {
        let mut out = Vec::with_capacity(files.len());
        for (name, mut v) in files {
            let reference = v
                .get("describedBy")
                .and_then(Value::as_str)
                .or_else(|| v.get("core").and_then(|c| c.get("schema_url")).and_then(Value::as_str))
                .map(str::to_string);
            let Some(url) = reference else {
                tracing::warn!(file = %name, "no schema reference: left out of the index (schema scrubbing is on)");
                continue;
            };
            let Some(doc) = self.fetch(&url).await else {
                tracing::warn!(file = %name, %url, "schema unavailable: left out of the index");
                continue;
            };
            let root = Node {
                doc,
                url,
                pointer: String::new(),
            };
            self.scrub(&mut v, root, 0).await;
            out.push((name, v));
        }
        out
    }

    fn scrub<'a>(&'a self, v: &'a mut Value, node: Node, depth: usize) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if depth >= MAX_DEPTH {
                return;
            }
            let Some(node) = self.resolve(node).await else {
                return;
            };
            let Some(schema) = node.value().cloned() else {
                return;
            };
            match v {
                Value::Object(obj) => {
                    let props = schema.get("properties").and_then(Value::as_object);
                    if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
                        obj.retain(|k, _| props.is_some_and(|p| p.contains_key(k)));
                    }
                    if props.is_some() {
                        for (k, child) in obj.iter_mut() {
                            if props.is_some_and(|p| p.contains_key(k)) {
                                self.scrub(child, node.child(&["properties", k]), depth + 1).await;
                            }
                        }
                    }
                }
                Value::Array(items) if schema.get("items").is_some_and(Value::is_object) => {
                    for item in items.iter_mut() {
                        self.scrub(item, node.child(&["items"]), depth + 1).await;
                    }
                }
                _ => {}
            }
        })
    }
}
