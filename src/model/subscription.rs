//! Subscriptions: what a user registers to be told of bundle events (inventory §5), the
//! validation of a `PUT /v1/subscriptions` body with the original's rules and codes, the
//! delivery log's records, and [`SubscriptionService`], the seam through which the API
//! reaches the backend that keeps them.
//!
//! A subscription is stored as the document its owner sent, plus `owner`, `uuid` and
//! `replica` (as the original's v2 table kept it); its secret is never shown again.

use super::{BoxFuture, MaybeSend, MaybeSync};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Subscriptions an owner may keep per replica and type (the original's documented limit).
pub const SUBSCRIPTION_LIMIT: usize = 100;
/// Deliveries kept per subscription in its log.
pub const DELIVERIES_KEPT: usize = 100;
/// Most attachments of one subscription.
pub const MAX_ATTACHMENTS: usize = 64;

/// The two kinds of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// v2: a JMESPath query over the bundle's metadata document (the default).
    Jmespath,
    /// v1: an Elasticsearch query over the bundle's index document.
    Elasticsearch,
}

impl Kind {
    /// The name used in `subscription_type` and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Jmespath => "jmespath",
            Kind::Elasticsearch => "elasticsearch",
        }
    }

    /// `subscription_type` as given (absent: `jmespath`).
    pub fn parse(s: Option<&str>) -> Result<Kind, SubscriptionError> {
        match s {
            None | Some("jmespath") => Ok(Kind::Jmespath),
            Some("elasticsearch") => Ok(Kind::Elasticsearch),
            Some(_) => Err(SubscriptionError::Invalid(
                "subscription_type must be 'elasticsearch' or 'jmespath'".into(),
            )),
        }
    }
}

/// Why a subscription request failed (mapped to a status and DSS error code by the API's
/// error type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// 400 `illegal_arguments`: the body does not follow the schema.
    #[error("{0}")]
    Invalid(String),
    /// 400 `invalid_jmespath`.
    #[error("JMESPath query is invalid")]
    InvalidJmespath,
    /// 400 `invalid_attachment_name`.
    #[error("Attachment names must not start with underscore ({0})")]
    AttachmentName(String),
    /// 400 `invalid_attachment_expression`.
    #[error("Unable to compile JMESPath expression for attachment {0}")]
    AttachmentExpression(String),
    /// 400 `elasticsearch_bad_request`: an `es_query` the evaluator cannot run.
    #[error("Invalid Elasticsearch query was received: {0}")]
    InvalidQuery(String),
    /// 400 `invalid_callback_url`: a scheme or address notifications may not go to.
    #[error("{0}")]
    CallbackUrl(String),
    /// 406 `not_acceptable`.
    #[error("Users cannot exceed {SUBSCRIPTION_LIMIT} subscriptions!")]
    Limit,
    /// 404 `not_found`.
    #[error("Cannot find subscription!")]
    NotFound,
    /// 403 `Forbidden`: another owner's Elasticsearch subscription (the original's answer).
    #[error("Your credentials can't access this subscription!")]
    Forbidden,
    /// 503 `service_unavailable`: where subscriptions are kept cannot be reached.
    #[error("subscriptions unavailable: {0}")]
    Unavailable(String),
}

/// How a notification's body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The payload as the JSON body.
    Json,
    /// `form_fields` plus the payload (as JSON text) in `payload_form_field`.
    Multipart,
}

/// A stored subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Its id.
    pub uuid: String,
    /// The email of the token that made it.
    pub owner: String,
    /// The replica whose events it follows.
    pub replica: String,
    /// v1 or v2.
    pub kind: Kind,
    /// The document as stored: the owner's body plus `owner`, `uuid`, `replica`.
    pub doc: Map<String, Value>,
}

impl Subscription {
    fn str_field(&self, name: &str) -> Option<&str> {
        self.doc.get(name).and_then(Value::as_str)
    }

    /// The document shown to its owner: everything but the secret.
    pub fn public_doc(&self) -> Value {
        let mut d = self.doc.clone();
        d.remove("hmac_secret_key");
        Value::Object(d)
    }

    /// Where notifications go.
    pub fn callback_url(&self) -> &str {
        self.str_field("callback_url").unwrap_or_default()
    }

    /// `POST` (default) or `PUT`.
    pub fn method(&self) -> &str {
        self.str_field("method").unwrap_or("POST")
    }

    /// The body's encoding (default JSON).
    pub fn encoding(&self) -> Encoding {
        match self.str_field("encoding") {
            Some("multipart/form-data") => Encoding::Multipart,
            _ => Encoding::Json,
        }
    }

    /// Static form fields of multipart bodies, in the order given.
    pub fn form_fields(&self) -> Vec<(String, String)> {
        self.doc
            .get("form_fields")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The form field that carries the payload (default `payload`).
    pub fn payload_form_field(&self) -> &str {
        self.str_field("payload_form_field").unwrap_or("payload")
    }

    /// The signing key and its id (default `hca-dss:{uuid}`), when requests are signed.
    pub fn hmac(&self) -> Option<(Vec<u8>, String)> {
        let key = self.str_field("hmac_secret_key").filter(|k| !k.is_empty())?;
        let id = self
            .str_field("hmac_key_id")
            .map(str::to_string)
            .unwrap_or_else(|| format!("hca-dss:{}", self.uuid));
        Some((key.as_bytes().to_vec(), id))
    }

    /// The attachment definitions, if any.
    pub fn attachments(&self) -> Option<&Map<String, Value>> {
        self.doc.get("attachments").and_then(Value::as_object)
    }

    /// The v2 query (none: every event matches).
    pub fn jmespath_query(&self) -> Option<&str> {
        self.str_field("jmespath_query")
    }

    /// The v1 query.
    pub fn es_query(&self) -> Option<&Value> {
        self.doc.get("es_query")
    }
}

/// The fields a `PUT /v1/subscriptions` body may have.
const FIELDS: [&str; 10] = [
    "es_query",
    "jmespath_query",
    "callback_url",
    "method",
    "encoding",
    "form_fields",
    "payload_form_field",
    "hmac_secret_key",
    "hmac_key_id",
    "attachments",
];

/// The kind a body asks for: a non-empty `es_query` object makes an Elasticsearch
/// subscription (the original tested the value's truth), anything else a JMESPath one.
pub fn kind_of(body: &Map<String, Value>) -> Kind {
    match body.get("es_query") {
        Some(Value::Object(o)) if !o.is_empty() => Kind::Elasticsearch,
        _ => Kind::Jmespath,
    }
}

fn want_str<'a>(body: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, SubscriptionError> {
    match body.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(SubscriptionError::Invalid(format!("'{name}' must be a string"))),
    }
}

/// Check a `PUT /v1/subscriptions` body against the original's schema and rules (the
/// `es_query` itself is checked by the caller, which knows the query language; the
/// callback's addresses by the backend, which can resolve names); its kind.
pub fn validate(body: &Map<String, Value>) -> Result<Kind, SubscriptionError> {
    if let Some(k) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(SubscriptionError::Invalid(format!(
            "Additional properties are not allowed ('{}' was unexpected)",
            k.chars().take(64).collect::<String>()
        )));
    }
    let url = want_str(body, "callback_url")?
        .ok_or_else(|| SubscriptionError::Invalid("'callback_url' is a required property".into()))?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(SubscriptionError::Invalid(
            "'callback_url' must be an http(s) URL".into(),
        ));
    }
    // Credentials in the URL would go out as a second Authorization header beside the
    // signature; the original's client replaced them. Neither is worth keeping.
    if url::Url::parse(url).is_ok_and(|u| !u.username().is_empty() || u.password().is_some()) {
        return Err(SubscriptionError::CallbackUrl(
            "the callback URL may not hold a user name or password".into(),
        ));
    }
    if let Some(m) = want_str(body, "method")? {
        if m != "POST" && m != "PUT" {
            return Err(SubscriptionError::Invalid("'method' must be POST or PUT".into()));
        }
    }
    if let Some(e) = want_str(body, "encoding")? {
        if e != "application/json" && e != "multipart/form-data" {
            return Err(SubscriptionError::Invalid(
                "'encoding' must be application/json or multipart/form-data".into(),
            ));
        }
    }
    match body.get("form_fields") {
        None => {}
        Some(Value::Object(m)) if m.values().all(Value::is_string) => {}
        Some(_) => {
            return Err(SubscriptionError::Invalid(
                "'form_fields' must be an object of strings".into(),
            ))
        }
    }
    for name in ["payload_form_field", "hmac_secret_key", "hmac_key_id"] {
        want_str(body, name)?;
    }
    if let Some(q) = want_str(body, "jmespath_query")? {
        super::notification::compile(q).map_err(|_| SubscriptionError::InvalidJmespath)?;
    }
    match body.get("attachments") {
        None => {}
        Some(Value::Object(defs)) => {
            if defs.len() > MAX_ATTACHMENTS {
                return Err(SubscriptionError::Invalid(format!(
                    "at most {MAX_ATTACHMENTS} attachments"
                )));
            }
            for (name, def) in defs {
                let name: String = name.chars().take(64).collect();
                if name.starts_with('_') {
                    return Err(SubscriptionError::AttachmentName(name));
                }
                let def = def
                    .as_object()
                    .ok_or_else(|| SubscriptionError::Invalid(format!("attachment {name} must be an object")))?;
                match def.get("type") {
                    Some(Value::String(t)) if t == "jmespath" => {}
                    _ => {
                        return Err(SubscriptionError::Invalid(format!(
                            "attachment {name}: 'type' must be 'jmespath'"
                        )))
                    }
                }
                let expr = def.get("expression").and_then(Value::as_str).ok_or_else(|| {
                    SubscriptionError::Invalid(format!("attachment {name}: 'expression' is a required string"))
                })?;
                super::notification::compile(expr)
                    .map_err(|_| SubscriptionError::AttachmentExpression(name.clone()))?;
            }
        }
        Some(_) => return Err(SubscriptionError::Invalid("'attachments' must be an object".into())),
    }
    match body.get("es_query") {
        None | Some(Value::Object(_)) => {}
        Some(_) => return Err(SubscriptionError::Invalid("'es_query' must be an object".into())),
    }
    Ok(kind_of(body))
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered,
    /// It did not; another attempt is scheduled.
    Retrying,
    /// It did not, and that was the last attempt.
    Failed,
}

/// One attempt to deliver a notification, as its owner sees it in the delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The payload's `transaction_id` (the same for every attempt of one notification).
    pub notification_id: String,
    /// `CREATE`, `TOMBSTONE` or `DELETE`.
    pub event_type: String,
    /// The bundle.
    pub bundle_uuid: String,
    /// Its version.
    pub bundle_version: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When the attempt was made (RFC 3339).
    pub time: String,
    /// The receiver's status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status_code: Option<u16>,
    /// What went wrong, unless delivered.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// When the next attempt is due, if one is scheduled (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_attempt: Option<String>,
    /// How long the attempt took.
    pub duration_ms: u64,
}

/// Where the backend keeps subscriptions and their delivery logs (beside its job queue,
/// so that every backend sharing the queue sees the same ones). The edge has none: it
/// forwards subscription routes.
pub trait SubscriptionService: MaybeSend + MaybeSync {
    /// Whether notifications may go to `url`: its scheme, and every address its host
    /// resolves to (`CallbackUrl` when not).
    fn check_callback<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<(), SubscriptionError>>;
    /// Store a new subscription, unless its owner already has [`SUBSCRIPTION_LIMIT`] of
    /// its kind in its replica (`Limit`).
    fn put(&self, sub: Subscription) -> BoxFuture<'_, Result<(), SubscriptionError>>;
    /// One subscription of `replica`.
    fn get<'a>(
        &'a self,
        replica: &'a str,
        uuid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Subscription>, SubscriptionError>>;
    /// The subscriptions of `owner` in `replica` of `kind`.
    fn list<'a>(
        &'a self,
        replica: &'a str,
        owner: &'a str,
        kind: Kind,
    ) -> BoxFuture<'a, Result<Vec<Subscription>, SubscriptionError>>;
    /// Remove a subscription and its log; whether it was there.
    fn delete<'a>(&'a self, replica: &'a str, uuid: &'a str) -> BoxFuture<'a, Result<bool, SubscriptionError>>;
    /// The most recent deliveries of a subscription, newest first.
    fn deliveries<'a>(
        &'a self,
        replica: &'a str,
        uuid: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, SubscriptionError>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(body: Value) -> Result<Kind, SubscriptionError> {
        validate(body.as_object().unwrap())
    }

    #[test]
    fn bodies_are_checked_as_the_original_checked_them() {
        use SubscriptionError as E;
        let ok = json!({"callback_url": "https://example.org/hook"});
        assert_eq!(v(ok), Ok(Kind::Jmespath));
        assert_eq!(
            v(json!({"callback_url": "https://e.org", "es_query": {"query": {"match_all": {}}}})),
            Ok(Kind::Elasticsearch)
        );
        // An empty es_query is false to Python: a JMESPath subscription.
        assert_eq!(
            v(json!({"callback_url": "https://e.org", "es_query": {}})),
            Ok(Kind::Jmespath)
        );
        for bad in [
            json!({}),
            json!({"callback_url": "ftp://x"}),
            json!({"callback_url": "https://e.org", "extra": 1}),
            json!({"callback_url": "https://e.org", "method": "GET"}),
            json!({"callback_url": "https://e.org", "encoding": "text/plain"}),
            json!({"callback_url": "https://e.org", "form_fields": {"a": 1}}),
            json!({"callback_url": "https://e.org", "attachments": {"x": {"type": "xpath", "expression": "a"}}}),
        ] {
            assert!(matches!(v(bad.clone()), Err(E::Invalid(_))), "{bad}");
        }
        let q = |q: &str| json!({"callback_url": "https://e.org", "jmespath_query": q});
        assert_eq!(v(q("a[?")), Err(E::InvalidJmespath));
        assert_eq!(
            v(q(&"(".repeat(10_000))),
            Err(E::InvalidJmespath),
            "bounded before parsing"
        );
        let a = |name: &str, expr: &str| json!({"callback_url": "https://e.org", "attachments": {name: {"type": "jmespath", "expression": expr}}});
        assert_eq!(v(a("_x", "a")), Err(E::AttachmentName("_x".into())));
        assert_eq!(v(a("x", "a[?")), Err(E::AttachmentExpression("x".into())));
        assert!(matches!(
            v(json!({"callback_url": "https://u:p@e.org/"})),
            Err(E::CallbackUrl(_))
        ));
        let many: Map<String, Value> = (0..=MAX_ATTACHMENTS)
            .map(|i| (format!("a{i}"), json!({"type": "jmespath", "expression": "a"})))
            .collect();
        assert!(matches!(
            v(json!({"callback_url": "https://e.org", "attachments": many})),
            Err(E::Invalid(_))
        ));
    }

    #[test]
    fn the_secret_is_never_shown_and_key_ids_default() {
        let doc = json!({"callback_url": "https://e.org", "hmac_secret_key": "s", "owner": "a@b", "uuid": "u"});
        let s = Subscription {
            uuid: "u".into(),
            owner: "a@b".into(),
            replica: "aws".into(),
            kind: Kind::Jmespath,
            doc: doc.as_object().unwrap().clone(),
        };
        assert!(s.public_doc().get("hmac_secret_key").is_none());
        assert_eq!(s.hmac(), Some((b"s".to_vec(), "hca-dss:u".to_string())));
        assert_eq!(s.method(), "POST");
        assert_eq!(s.encoding(), Encoding::Json);
        assert_eq!(s.payload_form_field(), "payload");
    }
}
