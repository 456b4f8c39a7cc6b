//! OAuth2 access tokens for a service account: the JWT-bearer grant (RS256) exchanged at
//! the key's `token_uri`, and the store's token cache.
//!
//! A token is used until [`TOKEN_MARGIN_SECS`] before it expires. Refreshes are single
//! flight: when concurrent requests find no usable token, the first to take the refresh
//! lock exchanges the key, and the others wait for that exchange and take its result
//! (its token, or its failure) instead of making their own. A 401 forgets the token that
//! was refused (only that one: a newer token another request already fetched is kept) and
//! refreshes once, through the same single flight.
//!
//! The lock is `futures::lock::Mutex`, which needs no runtime, so this works on wasm32.

use super::*;
use std::sync::{Mutex, MutexGuard};

/// The OAuth2 scope requested for the access token.
pub const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Tokens are refreshed this long before they expire.
const TOKEN_MARGIN_SECS: i64 = 300;

#[derive(Clone)]
struct CachedToken {
    token: String,
    expires_at: DateTime<Utc>,
}

impl CachedToken {
    /// Still good for more than the margin: worth handing to a new request.
    fn fresh(&self, now: DateTime<Utc>) -> bool {
        now + chrono::Duration::seconds(TOKEN_MARGIN_SECS) < self.expires_at
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// One store's access token, and the single flight of its refreshes.
#[derive(Default)]
pub(super) struct TokenCache {
    state: Mutex<TokenState>,
    /// Held for the whole of an exchange: whoever holds it is the one refreshing, and
    /// everyone else who needs a token queues on it.
    refresh: futures::lock::Mutex<()>,
}

#[derive(Default)]
struct TokenState {
    token: Option<CachedToken>,
    /// Exchanges finished so far, successful or not. A waiter notes it before queueing:
    /// if it changed by the time the waiter holds the lock, an exchange finished while
    /// it waited, and that exchange's result is the waiter's.
    finished: u64,
    /// The failure of the last finished exchange (`None` if it succeeded).
    failure: Option<StoreError>,
}

/// What a waiter finds once it holds the refresh lock.
enum AfterWait {
    Token(String),
    Failed(StoreError),
    /// No exchange finished meanwhile (or its token is gone again): exchange now.
    Exchange,
}

impl TokenCache {
    fn state(&self) -> MutexGuard<'_, TokenState> {
        // The state is replaced whole under the lock; a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached token if it is fresh, else the count of finished exchanges (for
    /// [`Self::after_wait`]).
    fn fresh(&self, now: DateTime<Utc>) -> Result<String, u64> {
        let st = self.state();
        match &st.token {
            Some(t) if t.fresh(now) => Ok(t.token.clone()),
            _ => Err(st.finished),
        }
    }

    /// Called with the refresh lock held, by a request that saw `seen` finished exchanges
    /// before it queued.
    fn after_wait(&self, now: DateTime<Utc>, seen: u64) -> AfterWait {
        let st = self.state();
        if let Some(t) = st.token.as_ref().filter(|t| t.fresh(now)) {
            return AfterWait::Token(t.token.clone());
        }
        if st.finished != seen {
            // The exchange we waited for failed: report its failure rather than try again
            // at once. It has already been retried under the retry policy (transport
            // errors and 5xx, within the time budget), or it was refused outright (a bad
            // key, a revoked account), so an immediate repeat by every waiter would only
            // multiply the load on a failing token endpoint, one after another, and make
            // the last waiter wait for all of them. A request that arrives after the
            // failure starts a new exchange.
            if let Some(e) = &st.failure {
                return AfterWait::Failed(duplicate(e));
            }
            // It succeeded with a token too short-lived to be "fresh": still ours to use
            // while it lasts, or every waiter would exchange in turn.
            if let Some(t) = st.token.as_ref().filter(|t| now < t.expires_at) {
                return AfterWait::Token(t.token.clone());
            }
        }
        AfterWait::Exchange
    }

    /// Record the outcome of an exchange (made with the refresh lock held).
    fn finish(&self, outcome: &StoreResult<CachedToken>) {
        let mut st = self.state();
        st.finished += 1;
        match outcome {
            Ok(t) => {
                st.token = Some(t.clone());
                st.failure = None;
            }
            Err(e) => st.failure = Some(duplicate(e)),
        }
    }

    /// Drop the cached token if it is `rejected` (a newer one stays).
    fn forget(&self, rejected: &str) {
        let mut st = self.state();
        if st.token.as_ref().is_some_and(|t| t.token == rejected) {
            st.token = None;
        }
    }
}

/// A copy of `e` for another waiter (`StoreError` is not `Clone`).
fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound(s) => StoreError::NotFound(s.clone()),
        StoreError::AlreadyExists(s) => StoreError::AlreadyExists(s.clone()),
        StoreError::InvalidKey(s) => StoreError::InvalidKey(s.clone()),
        StoreError::RangeNotSatisfiable => StoreError::RangeNotSatisfiable,
        StoreError::TooLarge { key, limit } => StoreError::TooLarge {
            key: key.clone(),
            limit: *limit,
        },
        StoreError::Unavailable(s) => StoreError::Unavailable(s.clone()),
        StoreError::Other(s) => StoreError::Other(s.clone()),
    }
}

impl ServiceAccountKey {
    /// The signed JWT-bearer assertion for the token exchange, valid for one hour from `now`.
    fn assertion(&self, now: DateTime<Utc>) -> StoreResult<String> {
        use jwt_compact::{alg::Rsa, AlgorithmExt, Claims, Header};
        #[derive(serde::Serialize)]
        struct Grant<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
        }
        let mut claims = Claims::new(Grant {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
        });
        claims.issued_at = Some(now);
        claims.expiration = Some(now + chrono::Duration::hours(1));
        let mut header = Header::empty().with_token_type("JWT");
        if !self.private_key_id.is_empty() {
            header = header.with_key_id(self.private_key_id.clone());
        }
        Rsa::rs256()
            .token(&header, &claims, &self.key)
            .map_err(|e| StoreError::Other(format!("signing the token request: {e}")))
    }
}

impl<H: HttpClient, T: Sleeper> GcsStore<H, T> {
    /// A valid access token, exchanging the service-account key for one when the cached
    /// token is missing or within five minutes of expiry (one exchange at a time, shared
    /// by everyone waiting for it). `None` without credentials.
    pub(super) async fn access_token(&self) -> StoreResult<Option<String>> {
        let Some(sa) = &self.credentials else { return Ok(None) };
        let seen = match self.tokens.fresh(self.clock.now()) {
            Ok(t) => return Ok(Some(t)),
            Err(seen) => seen,
        };
        // If the holder is dropped half way (its request cancelled), the guard goes with
        // it and nothing is recorded: the next waiter finds no finished exchange and makes
        // its own.
        let _refreshing = self.tokens.refresh.lock().await;
        let now = self.clock.now();
        match self.tokens.after_wait(now, seen) {
            AfterWait::Token(t) => return Ok(Some(t)),
            AfterWait::Failed(e) => return Err(e),
            AfterWait::Exchange => {}
        }
        let outcome = self.exchange_key(sa, now).await;
        self.tokens.finish(&outcome);
        outcome.map(|t| Some(t.token))
    }

    /// Forget `rejected` (answered with 401), so the next [`Self::access_token`] refreshes.
    pub(super) fn forget_token(&self, rejected: &str) {
        self.tokens.forget(rejected);
    }

    /// One token exchange (retried under the retry policy).
    async fn exchange_key(&self, sa: &ServiceAccountKey, now: DateTime<Utc>) -> StoreResult<CachedToken> {
        let assertion = sa.assertion(now)?;
        let form = format!("grant_type={}&assertion={}", enc(JWT_BEARER), enc(&assertion));
        let req = Req::new(Method::POST, sa.token_uri.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")?
            .body(form);
        let resp = self.send_retrying(&req, None).await?;
        if !resp.status().is_success() {
            let e = format!("token exchange answered {}: {}", resp.status(), text(resp.body()));
            return Err(if retryable(resp.status()) {
                StoreError::Unavailable(e)
            } else {
                StoreError::Other(e)
            });
        }
        let t: TokenResponse = serde_json::from_slice(resp.body())
            .map_err(|e| StoreError::Other(format!("token exchange response: {e}")))?;
        // Clamped: a token answer cannot make the expiry arithmetic overflow.
        let expires_at = now + chrono::Duration::seconds(t.expires_in.unwrap_or(3600).clamp(0, 24 * 3600));
        Ok(CachedToken {
            token: t.access_token,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[tokio::test]
    async fn token_exchange_is_cached_until_near_expiry() {
        use jwt_compact::{alg::Rsa, AlgorithmExt, UntrustedToken};
        let key = rsa_key();
        let public = key.to_public_key();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let file = serde_json::json!({
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": "kid-1",
            "private_key": pem,
            "client_email": "dss@proj.iam.gserviceaccount.com",
            "token_uri": TOKEN_URI,
        });
        let sa = ServiceAccountKey::from_json(&file.to_string()).unwrap();
        assert_eq!(sa.project_id.as_deref(), Some("proj"));
        assert!(!format!("{sa:?}").contains("PRIVATE"), "Debug hides the key");

        let exchanges = Arc::new(AtomicUsize::new(0));
        let n = exchanges.clone();
        let fake = Fake::new(move |s| {
            if s.url == TOKEN_URI {
                let i = n.fetch_add(1, Ordering::SeqCst) + 1;
                return reply(
                    200,
                    serde_json::json!({"access_token": format!("tok{i}"), "expires_in": 3600, "token_type": "Bearer"})
                        .to_string(),
                );
            }
            match s.header("authorization") {
                // The second token is revoked early: the store must fetch another.
                Some("Bearer tok2") => reply(401, "expired"),
                Some(_) => reply(200, object_json(3)),
                None => reply(403, "no auth"),
            }
        });
        let clock = Arc::new(ManualClock::at(t0()));
        let (s, _) = store(&fake, Some(sa), clock.clone());

        let meta = s.head("files/a").await.unwrap();
        assert_eq!(meta.size, 3);
        assert_eq!(meta.content_type.as_deref(), Some("application/json"));
        assert_eq!(meta.metadata.get("hca-dss-sha256").map(String::as_str), Some("abc"));
        assert_eq!(
            meta.last_modified,
            "2024-01-02T03:04:05.678Z".parse::<DateTime<Utc>>().unwrap()
        );
        {
            let seen = fake.seen.lock().unwrap();
            assert_eq!(seen.len(), 2);
            let ex = &seen[0];
            assert_eq!(ex.method, Method::POST);
            assert_eq!(ex.header("content-type"), Some("application/x-www-form-urlencoded"));
            assert!(ex.header("authorization").is_none());
            let form: BTreeMap<String, String> = url::form_urlencoded::parse(&ex.body).into_owned().collect();
            assert_eq!(form["grant_type"], JWT_BEARER);
            let token = UntrustedToken::new(&form["assertion"]).unwrap();
            assert_eq!(token.header().key_id.as_deref(), Some("kid-1"));
            let claims = Rsa::rs256()
                .validator::<serde_json::Value>(&public)
                .validate(&token)
                .expect("assertion signed by the service-account key");
            let claims = claims.claims();
            assert_eq!(claims.custom["iss"], "dss@proj.iam.gserviceaccount.com");
            assert_eq!(claims.custom["scope"], SCOPE);
            assert_eq!(claims.custom["aud"], TOKEN_URI);
            assert_eq!(claims.issued_at, Some(t0()));
            assert_eq!(claims.expiration, Some(t0() + chrono::Duration::hours(1)));
            let get = &seen[1];
            assert_eq!(get.url, "https://gcs.example/storage/v1/b/bkt/o/files%2Fa");
            assert_eq!(get.header("authorization"), Some("Bearer tok1"));
        }

        // Cached while more than five minutes remain.
        clock.advance(chrono::Duration::minutes(54));
        s.head("files/a").await.unwrap();
        assert_eq!(exchanges.load(Ordering::SeqCst), 1);
        // Refreshed within five minutes of expiry; a 401 on the new token refreshes again.
        clock.advance(chrono::Duration::minutes(2));
        s.head("files/a").await.unwrap();
        assert_eq!(exchanges.load(Ordering::SeqCst), 3);
        let seen = fake.seen.lock().unwrap();
        assert_eq!(seen.last().unwrap().header("authorization"), Some("Bearer tok3"));
    }

    #[tokio::test]
    async fn a_refused_exchange_is_an_error_not_a_retry() {
        let fake = Fake::new(|_| reply(400, r#"{"error":"invalid_grant"}"#));
        let sa = ServiceAccountKey::new("a@b", "k", TOKEN_URI, rsa_key());
        let (s, sleeps) = store(&fake, Some(sa), Arc::new(ManualClock::at(t0())));
        match s.head("files/a").await {
            Err(StoreError::Other(m)) => assert!(m.contains("invalid_grant"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(fake.count(|_| true), 1);
        assert!(sleeps.0.lock().unwrap().is_empty());
    }

    /// A token server numbering its tokens (`tok1`, `tok2`, …) that answers after
    /// yielding a few times, so that concurrent requests pile up behind the exchange; an
    /// object server that accepts any token for which `valid` says yes.
    fn token_and_object_server(valid: impl Fn(&str) -> bool + Send + Sync + 'static) -> Fake {
        let issued = AtomicUsize::new(0);
        Fake::new(move |s| {
            if s.url == TOKEN_URI {
                let i = issued.fetch_add(1, Ordering::SeqCst) + 1;
                let body = serde_json::json!({"access_token": format!("tok{i}"), "expires_in": 3600});
                return reply(200, body.to_string());
            }
            match s.header("authorization").and_then(|a| a.strip_prefix("Bearer ")) {
                Some(t) if valid(t) => reply(200, object_json(3)),
                Some(_) => reply(401, "token refused"),
                None => reply(403, "no auth"),
            }
        })
    }

    fn is_exchange(s: &Seen) -> bool {
        s.url == TOKEN_URI
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_token_exchange() {
        let fake = token_and_object_server(|_| true).delayed(|s| if is_exchange(s) { 5 } else { 1 });
        let sa = ServiceAccountKey::new("a@b", "k", TOKEN_URI, rsa_key());
        let clock = Arc::new(ManualClock::at(t0()));
        let (s, _) = store(&fake, Some(sa), clock.clone());

        // No token yet: twenty heads at once, one exchange.
        let all = futures::future::join_all((0..20).map(|_| s.head("files/a"))).await;
        assert!(all.iter().all(|r| r.as_ref().is_ok_and(|m| m.size == 3)));
        assert_eq!(fake.count(is_exchange), 1);
        assert_eq!(fake.count(|s| s.header("authorization") == Some("Bearer tok1")), 20);

        // The token expired: again one exchange for all of them.
        clock.advance(chrono::Duration::hours(2));
        let all = futures::future::join_all((0..20).map(|_| s.head("files/a"))).await;
        assert!(all.iter().all(|r| r.is_ok()));
        assert_eq!(fake.count(is_exchange), 2);
        assert_eq!(fake.count(|s| s.header("authorization") == Some("Bearer tok2")), 20);
    }

    #[tokio::test]
    async fn a_failed_exchange_is_reported_to_everyone_who_waited_for_it() {
        let exchanges = Arc::new(AtomicUsize::new(0));
        let n = exchanges.clone();
        let fake = Fake::new(move |s| {
            if s.url == TOKEN_URI {
                n.fetch_add(1, Ordering::SeqCst);
                return reply(400, r#"{"error":"invalid_grant"}"#);
            }
            reply(200, object_json(3))
        })
        .delayed(|s| if is_exchange(s) { 5 } else { 1 });
        let sa = ServiceAccountKey::new("a@b", "k", TOKEN_URI, rsa_key());
        let (s, _) = store(&fake, Some(sa), Arc::new(ManualClock::at(t0())));
        let all = futures::future::join_all((0..20).map(|_| s.head("files/a"))).await;
        for r in &all {
            assert!(
                matches!(r, Err(StoreError::Other(m)) if m.contains("invalid_grant")),
                "{r:?}"
            );
        }
        assert_eq!(exchanges.load(Ordering::SeqCst), 1, "one exchange, its failure shared");
        assert_eq!(fake.count(|_| true), 1, "no object request without a token");

        // A request that comes after the failure tries again.
        assert!(s.head("files/a").await.is_err());
        assert_eq!(exchanges.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_401_refreshes_once_however_many_requests_it_refuses() {
        let revoked = Arc::new(AtomicBool::new(false));
        let r = revoked.clone();
        let answered = AtomicUsize::new(0);
        // Object answers come back staggered (the n-th after n yields), so some requests
        // learn that tok1 is refused only after others have already fetched tok2.
        let fake = token_and_object_server(move |t| !(t == "tok1" && r.load(Ordering::SeqCst))).delayed(move |s| {
            if is_exchange(s) {
                1
            } else {
                answered.fetch_add(1, Ordering::SeqCst) as u32
            }
        });
        let sa = ServiceAccountKey::new("a@b", "k", TOKEN_URI, rsa_key());
        let (s, _) = store(&fake, Some(sa), Arc::new(ManualClock::at(t0())));
        s.head("files/a").await.unwrap();
        assert_eq!(fake.count(is_exchange), 1);

        revoked.store(true, Ordering::SeqCst);
        let all = futures::future::join_all((0..20).map(|_| s.head("files/a"))).await;
        assert!(all.iter().all(|r| r.is_ok()), "{all:?}");
        assert_eq!(fake.count(|s| s.header("authorization") == Some("Bearer tok1")), 21);
        assert_eq!(fake.count(|s| s.header("authorization") == Some("Bearer tok2")), 20);
        assert_eq!(fake.count(is_exchange), 2, "tok2 was kept, not forgotten by late 401s");
    }
}
