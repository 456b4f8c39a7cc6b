//! Collections (inventory §7): a user's named list of files, bundles, collections and
//! fragments of metadata files. Pure: the document a `PUT` stores (the body as sent, its
//! `owner` last, bytes as Python's `json.dumps`), the checks of a `PUT` or `PATCH` body,
//! de-duplication as the original did it, a `PATCH` applied to a stored document, the
//! tombstone's bytes, and fragment pointers resolved as python-jsonpointer resolved them.
//! Whether the items exist is the bucket's question (the API asks it).

use super::ids::{DssVersion, ObjectUuid};
use super::{BoxFuture, MaybeSend, MaybeSync};
use serde_json::{Map, Value};

/// Most items a `PUT` may hold, and a `PATCH` may add or remove (each).
pub const MAX_ITEMS: usize = 1000;
/// Most items a collection may hold after any number of `PATCH`es.
pub const MAX_CONTENTS: usize = 10_000;
/// Item types that name a document of their own (`{type}s/{uuid}.{version}`); any other
/// type is a fragment of a JSON file and needs a `fragment` pointer.
pub const DOCUMENT_TYPES: [&str; 3] = ["file", "bundle", "collection"];

/// Why a collection request is refused (the API maps each to its status and code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectionError {
    /// 400 `illegal_arguments`: the body does not follow the schema.
    #[error("{0}")]
    Invalid(String),
    /// 400 `illegal_version`: an item's version is not a DSS_VERSION.
    #[error("{0}")]
    Version(String),
    /// 422 `invalid_link`: an item that does not resolve.
    #[error("{0}")]
    InvalidLink(String),
    /// 403 `forbidden`: another owner's collection (the original's lower-case code).
    #[error("Collection access denied")]
    Forbidden,
}

/// Which collection versions each owner has: kept by the backend beside its job queue
/// (so listing needs no scan of a bucket, and several backends agree); the edge has none
/// and forwards collection routes.
pub trait CollectionOwners: MaybeSend + MaybeSync {
    /// Record that `owner` has `uuid` at `version`.
    fn add<'a>(&'a self, owner: &'a str, uuid: &'a str, version: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Claim `uuid` for `owner` unless someone has it already: who has it (`owner` once
    /// claimed). Atomic: of two users making the same new uuid at once, one gets it.
    fn claim<'a>(&'a self, uuid: &'a str, owner: &'a str) -> BoxFuture<'a, Result<String, String>>;
    /// `owner`'s `(uuid, version)`s, descending by `{uuid}.{version}` as the original listed.
    fn list<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<Vec<(String, String)>, String>>;
    /// Forget collection `uuid` (deleted).
    fn remove<'a>(&'a self, uuid: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

fn invalid(msg: impl Into<String>) -> CollectionError {
    CollectionError::Invalid(msg.into())
}

/// Check one content item: `type`, `uuid` and `version` (a DSS_VERSION), and for a
/// fragment type a `fragment` string.
pub fn check_item(item: &Value) -> Result<(), CollectionError> {
    let obj = item
        .as_object()
        .ok_or_else(|| invalid("every item of 'contents' must be an object"))?;
    let field = |name: &str| -> Result<&str, CollectionError> {
        obj.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("every item needs a string '{name}'")))
    };
    let kind = field("type")?;
    // Not echoed: a client's strings may be long.
    ObjectUuid::parse(field("uuid")?).map_err(|_| invalid("the 'uuid' of an item is not a UUID"))?;
    DssVersion::parse(field("version")?)
        .map_err(|_| CollectionError::Version("the 'version' of an item is not a DSS_VERSION".into()))?;
    if !DOCUMENT_TYPES.contains(&kind) {
        match obj.get("fragment") {
            Some(Value::String(_)) => {}
            Some(_) => return Err(invalid("'fragment' must be a string")),
            None => {
                return Err(CollectionError::InvalidLink(format!(
                    "an item of type {:?} needs a 'fragment' pointer into its file",
                    kind.chars().take(64).collect::<String>()
                )))
            }
        }
    }
    Ok(())
}

fn items<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a [Value], CollectionError> {
    match body.get(name) {
        None => Ok(&[]),
        Some(Value::Array(a)) if a.len() <= MAX_ITEMS => {
            if name == "remove_contents" {
                // Removals are matched, not resolved: any object will do, as in the original.
                if a.iter().all(Value::is_object) {
                    return Ok(a);
                }
                return Err(invalid("every item of 'remove_contents' must be an object"));
            }
            a.iter().try_for_each(check_item)?;
            Ok(a)
        }
        Some(Value::Array(_)) => Err(invalid(format!("'{name}' holds more than {MAX_ITEMS} items"))),
        Some(_) => Err(invalid(format!("'{name}' must be an array"))),
    }
}

fn check_fields(body: &Map<String, Value>, required: bool) -> Result<(), CollectionError> {
    for name in ["name", "description"] {
        match body.get(name) {
            Some(Value::String(_)) => {}
            None if !required => {}
            None => return Err(invalid(format!("'{name}' is a required property"))),
            Some(_) => return Err(invalid(format!("'{name}' must be a string"))),
        }
    }
    match body.get("details") {
        Some(Value::Object(_)) => Ok(()),
        None if !required => Ok(()),
        None => Err(invalid("'details' is a required property")),
        Some(_) => Err(invalid("'details' must be an object")),
    }
}

/// The document a `PUT` by `owner` stores: the body's fields in the order sent (other
/// properties kept, as the original kept them), `contents` checked (at most
/// [`MAX_ITEMS`]) and de-duplicated, `owner` last (or where the client put one, which it
/// replaces).
pub fn put_document(body: &Map<String, Value>, owner: &str) -> Result<Map<String, Value>, CollectionError> {
    check_fields(body, true)?;
    if !body.contains_key("contents") {
        return Err(invalid("'contents' is a required property"));
    }
    let contents = dedupe(items(body, "contents")?.to_vec());
    let mut doc = body.clone();
    doc.insert("contents".into(), Value::Array(contents));
    doc.insert("owner".into(), Value::String(owner.to_string()));
    Ok(doc)
}

/// The items a `PATCH` body adds (checked; to be verified by the caller before
/// [`apply_patch`]).
pub fn patch_additions(body: &Map<String, Value>) -> Result<&[Value], CollectionError> {
    // Other properties are ignored, as the original's schema ignored them.
    check_fields(body, false)?;
    items(body, "remove_contents")?;
    items(body, "add_contents")
}

/// `doc` with a checked `PATCH` body applied, as the original did: `name`, `description`
/// and `details` replaced in place; items equal to one of `remove_contents` removed;
/// `add_contents` appended; the whole de-duplicated.
pub fn apply_patch(doc: &Map<String, Value>, body: &Map<String, Value>) -> Result<Map<String, Value>, CollectionError> {
    let mut out = doc.clone();
    for name in ["name", "description", "details"] {
        if let Some(v) = body.get(name) {
            out.insert(name.into(), v.clone());
        }
    }
    let remove: std::collections::HashSet<String> = body
        .get("remove_contents")
        .and_then(Value::as_array)
        .map(|r| r.iter().map(canonical).collect())
        .unwrap_or_default();
    let mut contents: Vec<Value> = doc
        .get("contents")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter(|i| !remove.contains(&canonical(i))).cloned().collect())
        .unwrap_or_default();
    if let Some(add) = body.get("add_contents").and_then(Value::as_array) {
        contents.extend(add.iter().cloned());
    }
    let contents = dedupe(contents);
    if contents.len() > MAX_CONTENTS {
        return Err(invalid(format!("a collection holds at most {MAX_CONTENTS} items")));
    }
    out.insert("contents".into(), Value::Array(contents));
    Ok(out)
}

/// Items equal as objects (whatever their keys' order) kept once: at the first one's
/// place, with the last one's value (the original's `OrderedDict` keyed by the sorted
/// items did exactly that).
pub fn dedupe(contents: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(contents.len());
    // Items are small and at most a few thousand: compared by their canonical text.
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for item in contents {
        let canonical = canonical(&item);
        match seen.get(&canonical) {
            Some(&at) => out[at] = item,
            None => {
                seen.insert(canonical, out.len());
                out.push(item);
            }
        }
    }
    out
}

/// A value's text with object keys sorted, so equal objects give equal text.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// The stored bytes of a collection document (Python's `json.dumps`).
pub fn to_bytes(doc: &Map<String, Value>) -> Vec<u8> {
    super::pyjson::dumps(&Value::Object(doc.clone())).into_bytes()
}

/// The version a `PATCH` at `now` writes when the latest version is `latest`: `now`, or
/// a microsecond after `latest` if that is not earlier (a version in the future).
pub fn next_version(now: chrono::DateTime<chrono::Utc>, latest: &str) -> super::DssVersion {
    let after = super::DssVersion::parse(latest)
        .ok()
        .map(|v| v.datetime() + chrono::Duration::microseconds(1));
    super::DssVersion::from_datetime(after.filter(|a| *a > now).unwrap_or(now))
}

/// The bytes of a collection's tombstone, naming who deleted it.
pub fn tombstone_bytes(email: &str) -> Vec<u8> {
    super::pyjson::dumps(&serde_json::json!({ "email": email })).into_bytes()
}

/// The value `pointer` (RFC 6901, as python-jsonpointer read it: `""` is the whole
/// document, anything else starts with `/`) names inside `doc`.
pub fn resolve_fragment<'a>(doc: &'a Value, pointer: &str) -> Result<&'a Value, String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err("Location must start with /".into());
    }
    doc.pointer(pointer)
        .ok_or_else(|| format!("{:?} does not resolve", pointer.chars().take(256).collect::<String>()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const U: &str = "0b0e7c1e-0000-4000-8000-000000000000";
    const V: &str = "2019-01-01T000000.000000Z";

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_put_keeps_the_body_as_sent_with_its_owner_last() {
        let body = obj(json!({"name": "n", "description": "d", "details": {}, "extra": 1,
            "contents": [{"type": "file", "uuid": U, "version": V}, {"uuid": U, "type": "file", "version": V}]}));
        let doc = put_document(&body, "me@example.org").unwrap();
        let keys: Vec<&str> = doc.keys().map(String::as_str).collect();
        assert_eq!(keys, ["name", "description", "details", "extra", "contents", "owner"]);
        assert_eq!(doc["contents"].as_array().unwrap().len(), 1, "duplicates collapse");
        // The second spelling (keys in another order) wins, at the first one's place.
        assert_eq!(doc["contents"][0].as_object().unwrap().keys().next().unwrap(), "uuid");
        let bytes = String::from_utf8(to_bytes(&doc)).unwrap();
        assert!(
            bytes.starts_with(r#"{"name": "n", "description": "d", "details": {}, "extra": 1, "contents": [{"uuid": "#)
        );
        assert!(bytes.ends_with(r#""owner": "me@example.org"}"#), "{bytes}");
        // A client's owner is replaced where it stands.
        let body = obj(json!({"owner": "x", "name": "n", "description": "d", "details": {}, "contents": []}));
        assert_eq!(put_document(&body, "me").unwrap().keys().next().unwrap(), "owner");
        assert_eq!(put_document(&body, "me").unwrap()["owner"], "me");
    }

    #[test]
    fn a_patch_is_after_the_latest_version() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            next_version(now, "2019-01-01T000000.000000Z").as_str(),
            "2026-12-01T120000.000000Z"
        );
        assert_eq!(
            next_version(now, "2030-01-01T000000.999999Z").as_str(),
            "2030-01-01T000001.000000Z"
        );
    }

    #[test]
    fn bodies_and_items_are_checked() {
        let ok = json!({"name": "n", "description": "d", "details": {}, "contents": []});
        assert!(put_document(&obj(ok.clone()), "o").is_ok());
        for missing in ["name", "description", "details", "contents"] {
            let mut b = obj(ok.clone());
            b.remove(missing);
            assert!(
                matches!(put_document(&b, "o"), Err(CollectionError::Invalid(_))),
                "{missing}"
            );
        }
        let item = |v: Value| {
            let mut b = obj(ok.clone());
            b.insert("contents".into(), json!([v]));
            put_document(&b, "o")
        };
        assert!(matches!(
            item(json!({"type": "file", "uuid": "x", "version": V})),
            Err(CollectionError::Invalid(_))
        ));
        assert!(matches!(
            item(json!({"type": "file", "uuid": U, "version": "v"})),
            Err(CollectionError::Version(_))
        ));
        assert!(matches!(
            item(json!({"type": "foo", "uuid": U, "version": V})),
            Err(CollectionError::InvalidLink(_))
        ));
        assert!(item(json!({"type": "foo", "uuid": U, "version": V, "fragment": "/a"})).is_ok());
        let many: Vec<Value> = (0..=MAX_ITEMS)
            .map(|i| json!({"type": "foo", "uuid": U, "version": V, "fragment": format!("/{i}")}))
            .collect();
        let mut b = obj(ok);
        b.insert("contents".into(), Value::Array(many));
        assert!(matches!(put_document(&b, "o"), Err(CollectionError::Invalid(_))));
    }

    #[test]
    fn a_patch_replaces_removes_appends_and_dedupes() {
        let a = json!({"type": "file", "uuid": U, "version": V});
        let b = json!({"type": "foo", "uuid": U, "version": V, "fragment": "/x"});
        let doc = obj(
            json!({"name": "n", "description": "d", "details": {"k": 1}, "contents": [a.clone(), b.clone()], "owner": "o"}),
        );
        let patch = obj(
            json!({"name": "m", "details": {"1": 2}, "remove_contents": [b.clone()], "add_contents": [a.clone(), a.clone()]}),
        );
        assert_eq!(patch_additions(&patch).unwrap().len(), 2);
        let out = apply_patch(&doc, &patch).unwrap();
        assert_eq!(
            Value::Object(out.clone()),
            json!({"name": "m", "description": "d", "details": {"1": 2}, "contents": [a], "owner": "o"})
        );
        assert_eq!(out.keys().next_back().unwrap(), "owner", "fields stay in place");
        assert!(
            patch_additions(&obj(json!({"owner": "x"}))).is_ok(),
            "other properties are ignored"
        );
        assert_eq!(
            apply_patch(&doc, &obj(json!({}))).unwrap(),
            doc,
            "an empty patch changes nothing but the version"
        );
    }

    #[test]
    fn fragments_resolve_as_json_pointers() {
        let doc = json!({"foo": 1, "a/b": [10, 20], "m~n": {"0": "zero"}});
        assert_eq!(resolve_fragment(&doc, "").unwrap(), &doc);
        assert_eq!(resolve_fragment(&doc, "/foo").unwrap(), &json!(1));
        assert_eq!(resolve_fragment(&doc, "/a~1b/1").unwrap(), &json!(20));
        assert_eq!(resolve_fragment(&doc, "/m~0n/0").unwrap(), &json!("zero"));
        for bad in ["/xyz", "/a~1b/01", "/a~1b/2", "foo"] {
            assert!(resolve_fragment(&doc, bad).is_err(), "{bad}");
        }
        assert_eq!(tombstone_bytes("me@x"), br#"{"email": "me@x"}"#.to_vec());
    }
}
