//! Authentication: RS256 JWTs verified with jwt-compact against keys from an
//! OpenID provider's JWKS, Google service-account JWKS, a local trusted JWKS, or
//! the built-in dev issuer; then the original's claim policy (issuer, audience,
//! email, group).

pub mod dev;
pub mod jwks;

use crate::http::HttpClient;
use crate::model::Clock;
use jwks::KeySet;
use jwt_compact::alg::Rsa;
use jwt_compact::{AlgorithmExt, TimeOptions, UntrustedToken};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Authentication failures, each with the status and code the original answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401 `OAuthProblem`.
    #[error("No authorization token provided")]
    Missing,
    /// 401 `Unauthorized`.
    #[error("Failed to decode token.")]
    Undecodable,
    /// 401 `Unauthorized`: bad signature, expired, wrong audience, unknown key.
    #[error("Authorization token is invalid")]
    Invalid,
    /// 401 `Unauthorized`.
    #[error("Authorization token is missing email claims.")]
    MissingEmail,
    /// 403 `Forbidden`: issuer not trusted, or group not allowed.
    #[error("User is not authorized to access this resource")]
    Forbidden,
    /// 503: the key provider could not be reached.
    #[error("could not fetch signing keys: {0}")]
    KeysUnavailable(String),
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
        }
    }
}

/// The original's default audiences (the `hca` CLI sends the first).
pub const DEFAULT_AUDIENCES: &str = "https://dev.data.humancellatlas.org/,https://data.humancellatlas.org/";
/// The original's group claim.
pub const DEFAULT_GROUP_CLAIM: &str = "https://auth.data.humancellatlas.org/group";
/// The original's email claim.
pub const DEFAULT_EMAIL_CLAIM: &str = "https://auth.data.humancellatlas.org/email";

const TOKEN_CACHE_MAX: usize = 10_000;

/// Verifies bearer tokens. Verified tokens are cached (by a hash of the token,
/// until they expire) so a client's repeated requests pay for RSA once.
pub struct Authenticator<H> {
    config: AuthConfig,
    keys: KeySet<H>,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<[u8; 32], Identity>>,
}

fn str_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

impl<H: HttpClient> Authenticator<H> {
    /// An authenticator with `config`, trusting `keys`.
    pub fn new(config: AuthConfig, keys: KeySet<H>, clock: Arc<dyn Clock>) -> Self {
        Authenticator {
            config,
            keys,
            clock,
            cache: Mutex::new(HashMap::new()),
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
        if let Some(id) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&digest) {
            if id.expires > now {
                return Ok(id.clone());
            }
        }
        let id = self.verify(token).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= TOKEN_CACHE_MAX {
            cache.retain(|_, v| v.expires > now);
            if cache.len() >= TOKEN_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(digest, id.clone());
        Ok(id)
    }

    fn issuer_allowed(&self, iss: &str, sub: Option<&str>) -> bool {
        if self.config.openid_provider.as_deref() == Some(iss) || self.config.dev_issuer.as_deref() == Some(iss) {
            return true;
        }
        // Google-style service accounts: iss == sub == name@domain, domain authorised.
        match iss.rsplit_once('@') {
            Some((name, domain)) if !name.is_empty() && sub == Some(iss) => {
                self.config.authorized_domains.iter().any(|d| d == domain)
            }
            _ => false,
        }
    }

    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let untrusted = UntrustedToken::new(token).map_err(|_| AuthError::Undecodable)?;
        if untrusted.algorithm() != "RS256" {
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
        let kid = untrusted.header().key_id.clone();
        let key = self.keys.find(&iss, kid.as_deref()).await?;
        let clock = self.clock.clone();
        let time = TimeOptions::new(chrono::Duration::seconds(60), move || clock.now());
        let verified = Rsa::rs256()
            .validator::<Map<String, Value>>(&key)
            .validate(&untrusted)
            .map_err(|_| AuthError::Invalid)?;
        let claims = verified.claims();
        claims.validate_expiration(&time).map_err(|_| AuthError::Invalid)?;
        if claims.not_before.is_some() {
            claims.validate_maturity(&time).map_err(|_| AuthError::Invalid)?;
        }
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
