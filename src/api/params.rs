//! Query-string and body validation with the original's 400 messages.

use super::ApiError;
use crate::model::{DssVersion, ObjectUuid};
use serde_json::Value;

/// Query parameters in order. Repeated names are tolerated (the `hca` CLI repeats
/// parameters when following `Link` URLs); the first occurrence wins.
#[derive(Debug, Clone, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parse an `application/x-www-form-urlencoded` query string.
    pub fn parse(q: &str) -> Self {
        Query(url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
    }

    /// First value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A required parameter.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::IllegalArguments(format!("Missing query parameter '{name}'")))
    }

    /// Replace every occurrence of `name` by one `value` (or remove it).
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        self.0.retain(|(k, _)| k != name);
        if let Some(v) = value {
            self.0.push((name.to_string(), v.to_string()));
        }
    }

    /// Encode back into a query string.
    pub fn encode(&self) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            s.append_pair(k, v);
        }
        s.finish()
    }

    /// An optional integer within `[min, max]`, `default` when absent.
    pub fn int_in(&self, name: &str, min: i64, max: i64, default: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => {
                let n: i64 = v.parse().map_err(|_| {
                    ApiError::IllegalArguments(format!("Wrong type, expected 'integer' for query parameter '{name}'"))
                })?;
                if n < min {
                    return Err(ApiError::IllegalArguments(format!(
                        "{n} is less than the minimum of {min}"
                    )));
                }
                if n > max {
                    return Err(ApiError::IllegalArguments(format!(
                        "{n} is greater than the maximum of {max}"
                    )));
                }
                Ok(n)
            }
        }
    }

    /// An optional boolean (`true`/`false`, any case; also `1`/`0`).
    pub fn bool(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(_) => Err(ApiError::IllegalArguments(format!(
                "Wrong type, expected 'boolean' for query parameter '{name}'"
            ))),
        }
    }

    /// A required DSS_VERSION parameter.
    pub fn required_version(&self, name: &str) -> Result<DssVersion, ApiError> {
        self.version(name)?
            .ok_or_else(|| ApiError::IllegalArguments(format!("Missing query parameter '{name}'")))
    }

    /// An optional DSS_VERSION parameter (400 `illegal_version` if malformed).
    pub fn version(&self, name: &str) -> Result<Option<DssVersion>, ApiError> {
        self.get(name)
            .map(|v| DssVersion::parse(v).map_err(ApiError::IllegalVersion))
            .transpose()
    }
}

/// A path uuid.
pub fn uuid(s: &str) -> Result<ObjectUuid, ApiError> {
    let decoded = percent_encoding::percent_decode_str(s).decode_utf8_lossy();
    ObjectUuid::parse(&decoded).map_err(|e| ApiError::IllegalArguments(e.to_string()))
}

/// Parse a JSON object body.
pub fn json_body(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::IllegalArguments("Request body is missing".into()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::IllegalArguments("Request body must be a JSON object".into())),
        Err(e) => Err(ApiError::IllegalArguments(format!(
            "Request body is not valid JSON: {e}"
        ))),
    }
}

/// A required string field.
pub fn str_field<'a>(m: &'a serde_json::Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    match m.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::IllegalArguments(format!("'{name}' must be a string"))),
        None => Err(ApiError::IllegalArguments(format!("'{name}' is a required property"))),
    }
}

/// A required integer field.
pub fn int_field(m: &serde_json::Map<String, Value>, name: &str) -> Result<i64, ApiError> {
    match m.get(name) {
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().unwrap_or_default()),
        Some(_) => Err(ApiError::IllegalArguments(format!("'{name}' must be an integer"))),
        None => Err(ApiError::IllegalArguments(format!("'{name}' is a required property"))),
    }
}

/// A comma-separated setting as its trimmed, non-empty items (`ADMIN_USER_EMAILS`,
/// `OIDC_AUDIENCE`, …), read the same way by the backend and the edge.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}
