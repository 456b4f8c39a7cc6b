//! The DSS API's error type, its one mapping to the DSS error JSON
//! (`application/problem+json`, `{"status","code","title","stacktrace"}`), and the
//! [`RenderError`] trait through which every API renders its errors (the DSS v1 API
//! now; GA4GH DRS, with its own error shape, later).
//!
//! Titles never carry internals: storage and upstream texts, bucket names, keys and
//! URLs go to the log (under the request id, which the client gets in `X-Request-Id`);
//! the client gets a plain title.

use crate::auth::AuthError;
use crate::model::{ChecksumError, IdError};
use crate::storage::StoreError;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};

/// Everything a request can fail with. Each variant knows its status and code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `illegal_arguments`: a parameter or body failed validation.
    #[error("{0}")]
    IllegalArguments(String),
    /// 400 `illegal_version`.
    #[error("{0}")]
    IllegalVersion(IdError),
    /// 400 `unknown_source_schema`.
    #[error("source_url schema {0} not supported")]
    UnknownSourceSchema(String),
    /// 400 `illegal_source_url`: a `source_url` we cannot or may not read.
    #[error("{0}")]
    IllegalSourceUrl(String),
    /// 400 `only_one_urltype`.
    #[error("only enable one of `directurls` or `presignedurls`")]
    OnlyOneUrlType,
    /// 400 `directurls_unavailable`: the replica has no cloud bucket to point at.
    #[error("directurls needs a cloud-backed replica; replica {0} is a local directory (use presignedurls)")]
    DirectUrlsUnavailable(String),
    /// 400 `illegal_token`.
    #[error("Could not understand token")]
    IllegalToken,
    /// 400 `duplicate_filename`.
    #[error("Duplicate file name detected: {0}. This test fails on the first occurance. Please check bundle layout to ensure no duplicated file names are present.")]
    DuplicateFilename(String),
    /// 400 `file_missing`.
    #[error("Could not find file {0}.")]
    FileMissing(String),
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists but not with this method.
    #[error("Method not allowed")]
    MethodNotAllowed,
    /// 409 `file_already_exists`.
    #[error("file with UUID {0} and version {1} already exists")]
    FileAlreadyExists(String, String),
    /// 409 `bundle_already_exists`.
    #[error("bundle with UUID {0} and version {1} already exists")]
    BundleAlreadyExists(String, String),
    /// 409 `bundle_tombstone_already_exists`.
    #[error("bundle tombstone with UUID {0} and version {1} already exists")]
    TombstoneAlreadyExists(String, String),
    /// 409 `collection_already_exists`: that version of the collection holds other content.
    #[error("collection with UUID {0} and version {1} already exists")]
    CollectionAlreadyExists(String, String),
    /// 409 `collection_tombstone_already_exists`.
    #[error("collection tombstone with UUID {0} already exists")]
    CollectionTombstoneAlreadyExists(String),
    /// A collection request that failed (its status and code are its kind's).
    #[error("{0}")]
    Collection(#[from] crate::model::collection::CollectionError),
    /// 413 `payload_too_large`.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415 `unsupported_media_type`: a body that is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 408 `request_timeout`: the client did not send its body in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// 414 `uri_too_long`.
    #[error("request URI too long")]
    UriTooLong,
    /// 431 `request_header_fields_too_large`.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// 400 `bad_request`: parameters that contradict each other (`from_date` after
    /// `to_date`).
    #[error("{0}")]
    BadRequest(String),
    /// 400 `bad_request`: a request that is not HTTP/1.1 as it must be (answered before
    /// any route is known).
    #[error("malformed HTTP request")]
    MalformedRequest,
    /// 416: the `Range` cannot be served.
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable(u64),
    /// 422 `missing_checksum` / `invalid_checksum`.
    #[error("{0}")]
    Checksum(ChecksumError),
    /// 422 `checksum_mismatch`: the bytes do not match the checksums given for them.
    #[error("{0}")]
    ChecksumMismatch(String),
    /// 401/403/503 from authentication.
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// 403 `Forbidden` with a specific message.
    #[error("{0}")]
    Forbidden(String),
    /// 403 on a download URL that is forged or expired.
    #[error("{0}")]
    BadDownloadUrl(String),
    /// 503 `read_only`.
    #[error("The DSS is currently read-only")]
    ReadOnly,
    /// 503 `service_unavailable`, with a title of our own words (no upstream text).
    #[error("{0}")]
    Unavailable(String),
    /// 501 `not_implemented`: this server was configured without the capability (a
    /// retry cannot help, so no `Retry-After`).
    #[error("{0}")]
    NotImplemented(String),
    /// 503 `service_unavailable`: storage is down or refusing; the detail is logged only.
    #[error("storage unavailable: {0}")]
    StorageUnavailable(String),
    /// 504 `timed_out`: the work did not finish within its deadline (or a client asked
    /// for a simulated timeout with `DSS_FAKE_504_PROBABILITY`).
    #[error("{0}")]
    TimedOut(String),
    /// 500 `unhandled_exception`.
    #[error("{0}")]
    Internal(String),
    /// 500 `checkout_error`: the checkout copy a download waits for failed.
    #[error("{0}")]
    CheckoutFailed(String),
    /// Only the backend can answer this (a checkout copy must be made first): the edge
    /// forwards the request when its own router says so; the backend never does.
    #[error("this request must be answered by the backend")]
    NeedsBackend,
    /// 500 `misconfigured`: a setting of this deployment is missing or invalid; the title
    /// names the setting (an operator's fix, nothing secret).
    #[error("{0}")]
    Misconfigured(String),
    /// 400 `elasticsearch_bad_request`: a search query that is malformed or not supported.
    #[error("Invalid Elasticsearch query was received: {0}")]
    SearchBadRequest(String),
    /// 500 `internal_server_error`: the search engine failed.
    #[error("Search engine error: {0}")]
    SearchInternal(String),
    /// A subscription request that failed (its status and code are its own).
    #[error("{0}")]
    Subscription(#[from] crate::model::subscription::SubscriptionError),
    /// An error recorded earlier (a background job's), answered again as it was.
    #[error("{title}")]
    Recorded {
        /// Its status.
        status: u16,
        /// Its code.
        code: String,
        /// Its message.
        title: String,
    },
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => ApiError::StorageUnavailable(m),
            StoreError::InvalidKey(k) => ApiError::IllegalArguments(format!("invalid key {k}")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::bucket::BucketError> for ApiError {
    fn from(e: crate::bucket::BucketError) -> Self {
        use crate::bucket::{BucketError, Doc};
        match e {
            BucketError::Store(e) => e.into(),
            e @ BucketError::Corrupt { .. } => ApiError::Internal(e.to_string()),
            BucketError::Conflict { doc, uuid, version } => {
                let version = version.unwrap_or_else(|| "None".into());
                match doc {
                    Doc::File => ApiError::FileAlreadyExists(uuid, version),
                    Doc::Bundle => ApiError::BundleAlreadyExists(uuid, version),
                    Doc::Tombstone => ApiError::TombstoneAlreadyExists(uuid, version),
                    Doc::Collection => ApiError::CollectionAlreadyExists(uuid, version),
                    Doc::CollectionTombstone => ApiError::CollectionTombstoneAlreadyExists(uuid),
                }
            }
            BucketError::FollowUp(_) => ApiError::Unavailable(
                "stored, but the work that must follow it could not be recorded; repeat the request".into(),
            ),
            BucketError::Source(m) => ApiError::IllegalSourceUrl(m),
            BucketError::UnknownScheme(s) => ApiError::UnknownSourceSchema(s),
            BucketError::ChecksumMismatch(m) => ApiError::ChecksumMismatch(m),
        }
    }
}

impl From<&ApiError> for crate::bucket::followup::JobFailure {
    fn from(e: &ApiError) -> Self {
        crate::bucket::followup::JobFailure {
            status: e.status().as_u16(),
            code: e.code().to_string(),
            // It is answered to clients later: the public title, never the internal detail.
            title: e.title(),
        }
    }
}

impl ApiError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            IllegalArguments(_)
            | IllegalVersion(_)
            | UnknownSourceSchema(_)
            | IllegalSourceUrl(_)
            | OnlyOneUrlType
            | DirectUrlsUnavailable(_)
            | IllegalToken
            | DuplicateFilename(_)
            | FileMissing(_)
            | MalformedRequest
            | BadRequest(_)
            | SearchBadRequest(_) => StatusCode::BAD_REQUEST,
            NotFound(_) => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            FileAlreadyExists(..)
            | BundleAlreadyExists(..)
            | TombstoneAlreadyExists(..)
            | CollectionAlreadyExists(..)
            | CollectionTombstoneAlreadyExists(_) => StatusCode::CONFLICT,
            Collection(e) => {
                use crate::model::collection::CollectionError as C;
                match e {
                    C::Invalid(_) | C::Version(_) => StatusCode::BAD_REQUEST,
                    C::InvalidLink(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    C::Forbidden => StatusCode::FORBIDDEN,
                }
            }
            PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            UriTooLong => StatusCode::URI_TOO_LONG,
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Checksum(_) | ChecksumMismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Auth(AuthError::Forbidden) | Forbidden(_) | BadDownloadUrl(_) => StatusCode::FORBIDDEN,
            Auth(AuthError::KeysUnavailable(_)) | ReadOnly | Unavailable(_) | StorageUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Auth(_) => StatusCode::UNAUTHORIZED,
            Internal(_) | SearchInternal(_) | Misconfigured(_) | CheckoutFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            NeedsBackend => StatusCode::SERVICE_UNAVAILABLE,
            TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            Recorded { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Subscription(e) => {
                use crate::model::subscription::SubscriptionError as S;
                match e {
                    S::Limit => StatusCode::NOT_ACCEPTABLE,
                    S::NotFound => StatusCode::NOT_FOUND,
                    S::Forbidden => StatusCode::FORBIDDEN,
                    S::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                    S::Invalid(_)
                    | S::InvalidJmespath
                    | S::AttachmentName(_)
                    | S::AttachmentExpression(_)
                    | S::InvalidQuery(_)
                    | S::CallbackUrl(_) => StatusCode::BAD_REQUEST,
                }
            }
        }
    }

    /// The DSS error `code`.
    pub fn code(&self) -> &str {
        use ApiError::*;
        match self {
            IllegalArguments(_) => "illegal_arguments",
            IllegalVersion(_) => "illegal_version",
            UnknownSourceSchema(_) => "unknown_source_schema",
            IllegalSourceUrl(_) => "illegal_source_url",
            OnlyOneUrlType => "only_one_urltype",
            DirectUrlsUnavailable(_) => "directurls_unavailable",
            IllegalToken => "illegal_token",
            DuplicateFilename(_) => "duplicate_filename",
            FileMissing(_) => "file_missing",
            NotFound(_) => "not_found",
            MethodNotAllowed => "method_not_allowed",
            FileAlreadyExists(..) => "file_already_exists",
            BundleAlreadyExists(..) => "bundle_already_exists",
            TombstoneAlreadyExists(..) => "bundle_tombstone_already_exists",
            CollectionAlreadyExists(..) => "collection_already_exists",
            CollectionTombstoneAlreadyExists(_) => "collection_tombstone_already_exists",
            Collection(e) => {
                use crate::model::collection::CollectionError as C;
                match e {
                    C::Invalid(_) => "illegal_arguments",
                    C::Version(_) => "illegal_version",
                    C::InvalidLink(_) => "invalid_link",
                    C::Forbidden => "forbidden",
                }
            }
            PayloadTooLarge(_) => "payload_too_large",
            UnsupportedMediaType(_) => "unsupported_media_type",
            RequestTimeout(_) => "request_timeout",
            UriTooLong => "uri_too_long",
            HeadersTooLarge => "request_header_fields_too_large",
            MalformedRequest | BadRequest(_) => "bad_request",
            RangeNotSatisfiable(_) => "range_not_satisfiable",
            Checksum(ChecksumError::Missing(_)) => "missing_checksum",
            Checksum(ChecksumError::Malformed(_)) => "invalid_checksum",
            ChecksumMismatch(_) => "checksum_mismatch",
            Auth(AuthError::Missing) => "OAuthProblem",
            Auth(AuthError::Forbidden) | Forbidden(_) => "Forbidden",
            Auth(AuthError::KeysUnavailable(_)) => "service_unavailable",
            Auth(_) => "Unauthorized",
            BadDownloadUrl(_) => "forbidden",
            ReadOnly => "read_only",
            Unavailable(_) | StorageUnavailable(_) => "service_unavailable",
            NotImplemented(_) => "not_implemented",
            Internal(_) => "unhandled_exception",
            CheckoutFailed(_) => "checkout_error",
            NeedsBackend => "service_unavailable",
            Misconfigured(_) => "misconfigured",
            TimedOut(_) => "timed_out",
            SearchBadRequest(_) => "elasticsearch_bad_request",
            SearchInternal(_) => "internal_server_error",
            Recorded { code, .. } => code,
            Subscription(e) => {
                use crate::model::subscription::SubscriptionError as S;
                match e {
                    S::Invalid(_) => "illegal_arguments",
                    S::InvalidJmespath => "invalid_jmespath",
                    S::AttachmentName(_) => "invalid_attachment_name",
                    S::AttachmentExpression(_) => "invalid_attachment_expression",
                    S::InvalidQuery(_) => "elasticsearch_bad_request",
                    S::CallbackUrl(_) => "invalid_callback_url",
                    S::Limit => "not_acceptable",
                    S::NotFound => "not_found",
                    S::Forbidden => "Forbidden",
                    S::Unavailable(_) => "service_unavailable",
                }
            }
        }
    }

    /// The title the client sees: the message itself, except where it would carry
    /// internals (storage and upstream failures, unexpected errors), which get a plain
    /// title; their detail is in the log under the request id.
    pub fn title(&self) -> String {
        use ApiError::*;
        match self {
            Internal(_) => "Internal server error; the server log has the details under this request's id".into(),
            StorageUnavailable(_) => "Storage is unavailable; try again later".into(),
            Subscription(crate::model::subscription::SubscriptionError::Unavailable(_)) => {
                "Subscriptions are unavailable; try again later".into()
            }
            SearchInternal(_) => "Search engine error; the server log has the details under this request's id".into(),
            Auth(AuthError::KeysUnavailable(_)) => {
                "Could not fetch the keys to verify the token; try again later".into()
            }
            other => other.to_string(),
        }
    }

    /// The response: problem JSON, plus the original's `Retry-After` rules.
    pub fn into_response(self, method: &http::Method, path: &str) -> http::Response<super::Body> {
        self.render(method, path)
    }
}

/// An API's error, rendered as an HTTP answer: each API (the DSS v1 API, later GA4GH DRS)
/// has its own error type and shape, and every one is logged and rendered the same way.
pub trait RenderError: std::error::Error + Sized {
    /// HTTP status.
    fn status(&self) -> StatusCode;
    /// A short machine-readable code, for the log line.
    fn code(&self) -> &str;
    /// `Content-Type` of the body.
    fn content_type(&self) -> &'static str;
    /// The body.
    fn body(&self) -> Bytes;
    /// Headers beyond the content type (`Retry-After`, `Content-Range`, ...).
    fn add_headers(&self, headers: &mut http::HeaderMap, method: &http::Method, path: &str);

    /// Log the error (full detail, inside the request's span, which names its id) and
    /// build the response.
    fn render(self, method: &http::Method, path: &str) -> http::Response<super::Body> {
        let status = self.status();
        // Messages may quote what a client sent: escaped, so no input forges a log line.
        let message = self.to_string();
        let message = message.escape_debug();
        if status.is_server_error() {
            tracing::error!(code = self.code(), status = status.as_u16(), "{message}");
        } else {
            tracing::debug!(code = self.code(), status = status.as_u16(), "{message}");
        }
        let mut resp = http::Response::new(super::Body::Full(self.body()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type()),
        );
        self.add_headers(h, method, path);
        resp
    }
}

impl RenderError for ApiError {
    fn status(&self) -> StatusCode {
        ApiError::status(self)
    }

    fn code(&self) -> &str {
        ApiError::code(self)
    }

    fn content_type(&self) -> &'static str {
        "application/problem+json"
    }

    fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "status": self.status().as_u16(),
            "code": self.code(),
            "title": self.title(),
            // The original sent a Python traceback; we never leak internals.
            "stacktrace": "",
        });
        Bytes::from(body.to_string())
    }

    fn add_headers(&self, h: &mut http::HeaderMap, method: &http::Method, path: &str) {
        if let ApiError::RangeNotSatisfiable(size) = self {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                h.insert(http::header::CONTENT_RANGE, v);
            }
        }
        if matches!(self, ApiError::NeedsBackend) {
            h.insert(NEEDS_BACKEND, HeaderValue::from_static("checkout"));
        }
        if matches!(self, ApiError::ReadOnly) {
            // One value for every method (the original's generic rule overwrote it with 10
            // for PUT and DELETE only): read-only mode is maintenance, minutes long.
            h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("600"));
        } else if retry_after_applies(self.status(), method, path) {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("10"));
        }
        if matches!(
            self,
            ApiError::RequestTimeout(_) | ApiError::UriTooLong | ApiError::HeadersTooLarge | ApiError::MalformedRequest
        ) {
            // The rest of what the client sent cannot be trusted to frame a next request.
            h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
}

/// Marks an answer of the edge's own router that the backend must give instead (the
/// edge forwards the request and never sends this on).
pub const NEEDS_BACKEND: &str = "x-dss-needs-backend";

/// The original added `Retry-After: 10` to 500/502/503/504 answers of idempotent
/// methods and of searches.
fn retry_after_applies(status: StatusCode, method: &http::Method, path: &str) -> bool {
    let codes = [500u16, 502, 503, 504];
    let idempotent = matches!(method.as_str(), "HEAD" | "GET" | "PUT" | "DELETE" | "OPTIONS" | "TRACE");
    codes.contains(&status.as_u16()) && (idempotent || (method == http::Method::POST && path.contains("search")))
}
