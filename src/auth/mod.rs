//! Authentication: RS256 JWTs verified with jwt-compact against keys from an
//! OpenID provider's JWKS, Google service-account JWKS, a local trusted JWKS, or
//! the built-in dev issuer; then the original's claim policy (issuer, audience,
//! email, group).

pub mod dev;
pub mod jwks;
#[cfg(test)]
mod testing;

use crate::http::HttpClient;
use crate::model::Clock;
use jwks::KeySet;
use jwt_compact::alg::Rsa;
use jwt_compact::{AlgorithmExt, Claims, TimeOptions, UntrustedToken};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Authentication failures, each with the status and code the original answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401 `OAuthProblem`.
    #[error("No authorization token provided")]
    Missing,
    /// 401 `Unauthorized`.
    #[error("Failed to decode token.")]
    Undecodable,
    /// 401 `Unauthorized`: bad signature, expired, too long-lived, issued in the future,
    /// a critical header extension, wrong audience, unknown key.
    #[error("Authorization token is invalid")]
    Invalid,
    /// 401 `Unauthorized`.
    #[error("Authorization token is missing email claims.")]
    MissingEmail,
    /// 403 `Forbidden`: issuer not trusted, or group not allowed.
    #[error("User is not authorized to access this resource")]
    Forbidden,
    /// 503 `service_unavailable` (with `Retry-After`): the token's signing keys could not
    /// be had now. The upstream's own error goes to the log, not to the client.
    #[error("Could not fetch signing keys: {0}")]
    KeysUnavailable(KeysUnavailable),
}

/// Why signing keys could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeysUnavailable {
    /// The issuer's key server failed (or failed within the last
    /// [`jwks::FAILURE_TTL`] seconds, and is not asked again yet).
    #[error("the key server did not answer")]
    Upstream,
    /// The global cap on key fetches ([`AuthLimits::key_fetches_per_minute`]) is used up.
    #[error("too many new signing keys asked for; try again later")]
    RateLimited,
}

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
pub const CLOCK_LEEWAY_SECS: i64 = 60;

/// Default of `DSS_MAX_TOKEN_LIFETIME` (seconds): the longest a token may live, both
/// from its `iat` to its `exp` and from now to its `exp`. One day accepts Google
/// service-account tokens (1 h), the usual OIDC ID and access tokens (Auth0's default
/// access token lives 24 h) and `dss token` (1 h by default), and refuses tokens made
/// to live for years.
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 3600;

/// Memory and outbound-call limits of an [`Authenticator`], one set per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    /// Byte budget of the verified-token cache (hash of the token to the identity).
    pub token_cache_bytes: u64,
    /// Byte budget of the per-issuer cache of fetched signing keys.
    pub key_cache_bytes: u64,
    /// Key fetches (discovery and JWKS, or one service account's JWKS) allowed per
    /// minute across all issuers, refilled evenly. Past it a token whose keys are not
    /// cached is answered 503 without a fetch.
    pub key_fetches_per_minute: u32,
    /// Key fetches allowed at once after a quiet spell (the bucket's size).
    pub key_fetch_burst: u32,
}

impl AuthLimits {
    /// The native backend's: tens of thousands of cached tokens.
    pub const NATIVE: AuthLimits = AuthLimits {
        token_cache_bytes: 16 << 20,
        key_cache_bytes: 4 << 20,
        key_fetches_per_minute: 60,
        key_fetch_burst: 20,
    };
    /// The edge's: a Workers isolate has 128 MB for everything, so a few MiB at most.
    /// The fetch cap is per isolate.
    pub const EDGE: AuthLimits = AuthLimits {
        token_cache_bytes: 2 << 20,
        key_cache_bytes: 512 << 10,
        key_fetches_per_minute: 60,
        key_fetch_burst: 20,
    };
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits::NATIVE
    }
}

/// Who made a request, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The email claim.
    pub email: String,
    /// The group claim's value, if a string.
    pub group: Option<String>,
    /// Token expiry (unix seconds), for caching.
    pub expires: i64,
}

impl Identity {
    /// The original's `authorized_group_required`: the group claim must equal one of `allowed`.
    pub fn require_group(&self, allowed: &[&str]) -> Result<(), AuthError> {
        match &self.group {
            Some(g) if allowed.contains(&g.as_str()) => Ok(()),
            _ => Err(AuthError::Forbidden),
        }
    }
}

/// Policy settings, named after the original's environment variables.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `OPENID_PROVIDER`: trusted issuer whose JWKS is found by OIDC discovery.
    pub openid_provider: Option<String>,
    /// `OIDC_AUDIENCE` (comma list): `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// `OIDC_GROUP_CLAIM`.
    pub group_claim: String,
    /// `OIDC_EMAIL_CLAIM` (falls back to `email`).
    pub email_claim: String,
    /// `DSS_AUTHORIZED_DOMAINS`: service-account issuers `name@domain` with `iss == sub`.
    pub authorized_domains: Vec<String>,
    /// Extra issuer trusted by its key alone (the dev issuer).
    pub dev_issuer: Option<String>,
    /// `DSS_MAX_TOKEN_LIFETIME`: the longest a token may live (see
    /// [`DEFAULT_MAX_TOKEN_LIFETIME_SECS`]).
    pub max_token_lifetime: Duration,
    /// Cache budgets and the key-fetch cap, for the token cache and the key set alike.
    pub limits: AuthLimits,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            openid_provider: None,
            audiences: DEFAULT_AUDIENCES.split(',').map(str::to_string).collect(),
            group_claim: DEFAULT_GROUP_CLAIM.into(),
            email_claim: DEFAULT_EMAIL_CLAIM.into(),
            authorized_domains: Vec::new(),
            dev_issuer: None,
            max_token_lifetime: Duration::from_secs(DEFAULT_MAX_TOKEN_LIFETIME_SECS),
            limits: AuthLimits::default(),
        }
    }
}

/// The original's default audiences (the `hca` CLI sends the first).
pub const DEFAULT_AUDIENCES: &str = "https://dev.data.humancellatlas.org/,https://data.humancellatlas.org/";
/// The original's group claim.
pub const DEFAULT_GROUP_CLAIM: &str = "https://auth.data.humancellatlas.org/group";
/// The original's email claim.
pub const DEFAULT_EMAIL_CLAIM: &str = "https://auth.data.humancellatlas.org/email";

/// If `iss` is a service-account issuer in its plain form `name@domain`, its domain.
///
/// The issuer becomes a path segment of the key URL, so only the plain form passes:
/// exactly one `@`; a local part of 1 to 64 ASCII letters, digits, `.`, `_`, `+`, `-`;
/// a domain that is a plain host name (dot-separated labels of letters, digits and
/// inner `-`). Everything else, in particular `?`, `#`, `/`, `%`, whitespace and control
/// characters, is refused.
pub fn service_account_domain(iss: &str) -> Option<&str> {
    let (local, domain) = iss.split_once('@')?;
    let local_ok = (1..=64).contains(&local.len())
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let domain_ok = domain.len() <= 253 && domain.split('.').all(label_ok);
    (local_ok && domain_ok).then_some(domain)
}

/// What the token cache charges for an entry besides its strings (key, struct, and
/// the cache's own bookkeeping, roughly).
const TOKEN_ENTRY_OVERHEAD: u64 = 128;

/// Weighs a cached identity by the bytes it holds.
#[derive(Debug, Clone, Copy)]
struct IdentityWeight;

impl quick_cache::Weighter<[u8; 32], Identity> for IdentityWeight {
    fn weight(&self, _key: &[u8; 32], id: &Identity) -> u64 {
        let strings = id.email.len() + id.group.as_ref().map_or(0, String::len);
        TOKEN_ENTRY_OVERHEAD + strings as u64
    }
}

/// Verifies bearer tokens. Verified tokens are cached (by a hash of the token,
/// until they expire, within [`AuthLimits::token_cache_bytes`]) so a client's repeated
/// requests pay for RSA once.
pub struct Authenticator<H> {
    config: AuthConfig,
    keys: KeySet<H>,
    clock: Arc<dyn Clock>,
    cache: quick_cache::sync::Cache<[u8; 32], Identity, IdentityWeight>,
}

fn str_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

impl<H: HttpClient> Authenticator<H> {
    /// An authenticator with `config`, trusting `keys` (which take `config.limits`).
    pub fn new(config: AuthConfig, keys: KeySet<H>, clock: Arc<dyn Clock>) -> Self {
        let budget = config.limits.token_cache_bytes.max(1);
        let cache = quick_cache::sync::Cache::with_weighter(
            (budget / (TOKEN_ENTRY_OVERHEAD + 32)).max(1) as usize,
            budget,
            IdentityWeight,
        );
        Authenticator {
            keys: keys.with_limits(&config.limits),
            config,
            clock,
            cache,
        }
    }

    /// The policy in force.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Verify an `Authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        let token = header
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = self.clock.now().timestamp();
        if let Some(id) = self.cache.get(&digest) {
            if id.expires > now {
                return Ok(id);
            }
            self.cache.remove(&digest);
        }
        let id = self.verify(token).await?;
        self.cache.insert(digest, id.clone());
        Ok(id)
    }

    fn issuer_allowed(&self, iss: &str, sub: Option<&str>) -> bool {
        if self.config.openid_provider.as_deref() == Some(iss) || self.config.dev_issuer.as_deref() == Some(iss) {
            return true;
        }
        // Google-style service accounts: iss == sub == name@domain, in its plain form,
        // domain authorised.
        match service_account_domain(iss) {
            Some(domain) if sub == Some(iss) => self
                .config
                .authorized_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain)),
            _ => false,
        }
    }

    /// `exp` (required), `nbf`, `iat` and the lifetime cap, with [`CLOCK_LEEWAY_SECS`].
    fn check_times(&self, claims: &Claims<Map<String, Value>>) -> Result<(), AuthError> {
        let clock = self.clock.clone();
        let time = TimeOptions::new(chrono::Duration::seconds(CLOCK_LEEWAY_SECS), move || clock.now());
        claims.validate_expiration(&time).map_err(|_| AuthError::Invalid)?;
        if claims.not_before.is_some() {
            claims.validate_maturity(&time).map_err(|_| AuthError::Invalid)?;
        }
        let now = self.clock.now().timestamp();
        let cap = i64::try_from(self.config.max_token_lifetime.as_secs()).unwrap_or(i64::MAX);
        let exp = claims.expiration.map_or(i64::MAX, |e| e.timestamp());
        if exp.saturating_sub(now) > cap.saturating_add(CLOCK_LEEWAY_SECS) {
            return Err(AuthError::Invalid);
        }
        if let Some(iat) = claims.issued_at.map(|t| t.timestamp()) {
            if iat > now.saturating_add(CLOCK_LEEWAY_SECS) || exp.saturating_sub(iat) > cap {
                return Err(AuthError::Invalid);
            }
        }
        Ok(())
    }

    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        // The header's other fields are kept to see `crit`.
        let untrusted = UntrustedToken::<Map<String, Value>>::try_from(token).map_err(|_| AuthError::Undecodable)?;
        if untrusted.algorithm() != "RS256" {
            return Err(AuthError::Invalid);
        }
        // RFC 7515 4.1.11: a recipient must refuse extensions it does not understand; we
        // implement none, so any `crit` is refused.
        if untrusted.header().other_fields.contains_key("crit") {
            return Err(AuthError::Invalid);
        }
        let unverified = untrusted
            .deserialize_claims_unchecked::<Map<String, Value>>()
            .map_err(|_| AuthError::Undecodable)?;
        let iss = str_claim(&unverified.custom, "iss")
            .ok_or(AuthError::Forbidden)?
            .to_string();
        if !self.issuer_allowed(&iss, str_claim(&unverified.custom, "sub")) {
            return Err(AuthError::Forbidden);
        }
        // Times are checked before the keys are looked up, so that a token that would fail
        // anyway costs no key fetch; the signature check below covers these same bytes.
        self.check_times(&unverified)?;
        let kid = untrusted.header().key_id.clone();
        let key = self.keys.find(&iss, kid.as_deref()).await?;
        let verified = Rsa::rs256()
            .validator::<Map<String, Value>>(&key)
            .validate(&untrusted)
            .map_err(|_| AuthError::Invalid)?;
        let claims = verified.claims();
        let c = &claims.custom;
        let aud_ok = match c.get("aud") {
            Some(Value::String(a)) => self.config.audiences.iter().any(|x| x == a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| self.config.audiences.iter().any(|x| x == a)),
            _ => false,
        };
        if !aud_ok {
            return Err(AuthError::Invalid);
        }
        let email = str_claim(c, &self.config.email_claim)
            .or_else(|| str_claim(c, "email"))
            .ok_or(AuthError::MissingEmail)?
            .to_string();
        let expires = claims.expiration.map(|e| e.timestamp()).unwrap_or(i64::MAX);
        Ok(Identity {
            email,
            group: str_claim(c, &self.config.group_claim).map(str::to_string),
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::jwks::{to_jwks, NamedKey, GOOGLE_SERVICE_ACCOUNT_JWKS};
    use super::testing::{FakeKeyServer, ManualClock};
    use super::*;
    use jwt_compact::Header;
    use serde_json::json;

    const AUD: &str = "https://dev.data.humancellatlas.org/";

    fn sign(
        key: &rsa::RsaPrivateKey,
        header: Header<Map<String, Value>>,
        claims: Value,
        clock: &ManualClock,
    ) -> String {
        let custom = claims.as_object().unwrap().clone();
        let claims = Claims::new(custom).set_duration_and_issuance(
            &TimeOptions::new(chrono::Duration::zero(), || clock.now()),
            chrono::Duration::hours(1),
        );
        Rsa::rs256().token(&header, &claims, key).unwrap()
    }

    fn sa_claims(iss: &str) -> Value {
        json!({"iss": iss, "sub": iss, "aud": AUD, "email": iss})
    }

    fn kid(k: &str) -> Header<Map<String, Value>> {
        Header::new(Map::new()).with_key_id(k)
    }

    /// Trusts service accounts of `auth.example`, fetching their keys from `server`.
    fn authenticator(server: &FakeKeyServer, clock: Arc<ManualClock>) -> Authenticator<&FakeKeyServer> {
        let config = AuthConfig {
            authorized_domains: vec!["auth.example".into()],
            ..AuthConfig::default()
        };
        let keys = KeySet::new(Some(server), vec![], None, clock.clone());
        Authenticator::new(config, keys, clock)
    }

    #[tokio::test]
    async fn smuggled_service_account_issuers_are_refused_without_a_fetch() {
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let jwks = to_jwks(&[NamedKey {
            kid: Some("k1".into()),
            key: key.to_public_key(),
        }]);
        let server = FakeKeyServer::default();
        // The attacker's own service account publishes the attacker's key.
        server.answer(
            &format!("{GOOGLE_SERVICE_ACCOUNT_JWKS}me@my-proj.iam.gserviceaccount.com"),
            200,
            jwks.to_string(),
        );
        let legit = "uploader@auth.example";
        server.answer(&format!("{GOOGLE_SERVICE_ACCOUNT_JWKS}{legit}"), 200, jwks.to_string());
        let clock = ManualClock::new();
        let auth = authenticator(&server, clock.clone());
        for iss in [
            "me@my-proj.iam.gserviceaccount.com?@auth.example",
            "me@my-proj.iam.gserviceaccount.com#@auth.example",
            "me@my-proj.iam.gserviceaccount.com/@auth.example",
            "../../../v1/jwk/me@my-proj.iam.gserviceaccount.com%2F..@auth.example",
            "me%2F..@auth.example",
            "me /x@auth.example",
            "me@x@auth.example",
            " me@auth.example",
            "me@auth.example ",
            "me\n@auth.example",
            "@auth.example",
        ] {
            let mut claims = sa_claims(iss);
            claims["email"] = json!("admin@example.org");
            let token = sign(&key, kid("k1"), claims, &clock);
            let err = auth.authenticate(Some(&format!("Bearer {token}"))).await.unwrap_err();
            assert_eq!(err, AuthError::Forbidden, "{iss:?}");
            assert_eq!(crate::api::ApiError::from(err).status(), 403);
        }
        assert_eq!(server.urls(), Vec::<String>::new(), "no key fetch for a refused issuer");
        // The plain form of an authorised domain is fetched, at exactly its own URL.
        let token = sign(&key, kid("k1"), sa_claims(legit), &clock);
        let id = auth.authenticate(Some(&format!("Bearer {token}"))).await.unwrap();
        assert_eq!(id.email, legit);
        assert_eq!(server.urls(), [format!("{GOOGLE_SERVICE_ACCOUNT_JWKS}{legit}")]);
    }

    #[tokio::test]
    async fn critical_header_extensions_are_refused_before_any_fetch() {
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let server = FakeKeyServer::default();
        let clock = ManualClock::new();
        let auth = authenticator(&server, clock.clone());
        let mut fields = Map::new();
        fields.insert("crit".into(), json!(["exp"]));
        let header = Header::new(fields).with_key_id("k1");
        let token = sign(&key, header, sa_claims("uploader@auth.example"), &clock);
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {token}"))).await,
            Err(AuthError::Invalid)
        );
        assert_eq!(server.calls(), 0);
    }

    #[tokio::test]
    async fn the_token_cache_is_bounded_by_bytes_and_honours_expiry() {
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let server = FakeKeyServer::default();
        let clock = ManualClock::new();
        let budget = 8 * 1024;
        let static_key = NamedKey {
            kid: Some("k1".into()),
            key: key.to_public_key(),
        };
        let config = AuthConfig {
            dev_issuer: Some("http://dss.test/".into()),
            limits: AuthLimits {
                token_cache_bytes: budget,
                ..AuthLimits::NATIVE
            },
            ..AuthConfig::default()
        };
        let keys = KeySet::new(Some(&server), vec![static_key], None, clock.clone());
        let auth = Authenticator::new(config, keys, clock.clone());
        let claims = |email: &str| json!({"iss": "http://dss.test/", "sub": email, "aud": AUD, "email": email});
        for i in 0..300 {
            let t = sign(&key, kid("k1"), claims(&format!("user{i}@example.org")), &clock);
            auth.authenticate(Some(&format!("Bearer {t}"))).await.unwrap();
        }
        assert!(auth.cache.weight() <= budget, "{} bytes", auth.cache.weight());
        assert!(auth.cache.len() < 300);
        // A cached identity is not served once its token has expired.
        let t = format!("Bearer {}", sign(&key, kid("k1"), claims("late@example.org"), &clock));
        assert!(auth.authenticate(Some(&t)).await.is_ok());
        clock.advance(3600 + CLOCK_LEEWAY_SECS + 1);
        assert_eq!(auth.authenticate(Some(&t)).await, Err(AuthError::Invalid));
    }
}
