//! The dev issuer of the embedded default: an RSA key pair kept in the data dir,
//! whose tokens the local server trusts and `dss token` mints.

use super::jwks::NamedKey;
use super::{DEFAULT_EMAIL_CLAIM, DEFAULT_GROUP_CLAIM};
use jwt_compact::alg::Rsa;
use jwt_compact::{AlgorithmExt, Claims, Header, TimeOptions};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::{traits::PublicKeyParts, RsaPrivateKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Failures of the dev issuer.
#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    /// Key file could not be read or written.
    #[error("dev issuer key: {0}")]
    Io(#[from] std::io::Error),
    /// Key file is not a PKCS#8 RSA key, or signing failed.
    #[error("dev issuer key: {0}")]
    Key(String),
}

/// A signing key and the issuer name its tokens carry.
pub struct DevIssuer {
    /// `iss` of minted tokens: the server's public URL with a trailing slash.
    pub issuer: String,
    key: RsaPrivateKey,
    kid: String,
}

impl DevIssuer {
    /// Load the key from `dir/key.pem`, creating it (2048-bit) if absent.
    pub fn load_or_create(dir: &std::path::Path, issuer: &str) -> Result<Self, DevIssuerError> {
        let path = dir.join("key.pem");
        let key = match std::fs::read_to_string(&path) {
            Ok(pem) => RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|e| DevIssuerError::Key(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                let key =
                    RsaPrivateKey::new(&mut rand_core::OsRng, 2048).map_err(|e| DevIssuerError::Key(e.to_string()))?;
                let pem = key
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| DevIssuerError::Key(e.to_string()))?;
                write_private(&path, pem.as_bytes())?;
                key
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Self::from_key(key, issuer))
    }

    /// A dev issuer over an existing key.
    pub fn from_key(key: RsaPrivateKey, issuer: &str) -> Self {
        let kid = hex::encode(&Sha256::digest(key.n().to_bytes_be())[..8]);
        DevIssuer {
            issuer: issuer.to_string(),
            key,
            kid,
        }
    }

    /// The public half, as published in the JWKS.
    pub fn public_key(&self) -> NamedKey {
        NamedKey {
            kid: Some(self.kid.clone()),
            key: self.key.to_public_key(),
        }
    }

    /// Mint a token for `email` in `group`, valid for `ttl`, for audience `aud`.
    pub fn mint(
        &self,
        email: &str,
        group: Option<&str>,
        aud: &str,
        ttl: chrono::Duration,
    ) -> Result<String, DevIssuerError> {
        let mut custom = Map::new();
        custom.insert("iss".into(), Value::String(self.issuer.clone()));
        custom.insert("sub".into(), Value::String(email.to_string()));
        custom.insert("aud".into(), Value::String(aud.to_string()));
        custom.insert("email".into(), Value::String(email.to_string()));
        custom.insert(DEFAULT_EMAIL_CLAIM.into(), Value::String(email.to_string()));
        if let Some(g) = group {
            custom.insert(DEFAULT_GROUP_CLAIM.into(), Value::String(g.to_string()));
        }
        let claims = Claims::new(custom)
            .set_duration_and_issuance(&TimeOptions::new(chrono::Duration::zero(), chrono::Utc::now), ttl);
        Rsa::rs256()
            .token(&Header::empty().with_key_id(self.kid.clone()), &claims, &self.key)
            .map_err(|e| DevIssuerError::Key(e.to_string()))
    }
}

/// Create `path` (which must not exist) readable by its owner only, from the first byte.
pub fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}
