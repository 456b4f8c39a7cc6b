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
    ///
    /// Creation is atomic, so that `dss serve` and `dss token` started together agree
    /// on one key: each writes its own private temp file and links it into place
    /// create-only; the loser reads the winner's key. A reader never sees a half-written
    /// file, since the name appears only once the bytes are synced.
    pub fn load_or_create(dir: &std::path::Path, issuer: &str) -> Result<Self, DevIssuerError> {
        let path = dir.join("key.pem");
        let parse = |pem: &str| RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| DevIssuerError::Key(e.to_string()));
        let key = match std::fs::read_to_string(&path) {
            Ok(pem) => parse(&pem)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                let key =
                    RsaPrivateKey::new(&mut rand_core::OsRng, 2048).map_err(|e| DevIssuerError::Key(e.to_string()))?;
                let pem = key
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| DevIssuerError::Key(e.to_string()))?;
                if create_private_atomically(&path, pem.as_bytes())? {
                    key
                } else {
                    tracing::debug!(path = %path.display(), "dev issuer key created concurrently; using that one");
                    parse(&std::fs::read_to_string(&path)?)?
                }
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

/// Create `path` holding `data`, readable by its owner only, if no file is there yet:
/// the bytes go to a private temp file beside it, are synced, and the temp file is then
/// hard-linked to `path` (which fails if `path` exists, whoever made it meanwhile).
/// Returns whether this call created `path`; if not, the existing file is left as it is.
pub fn create_private_atomically(path: &std::path::Path, data: &[u8]) -> std::io::Result<bool> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    write_private(&tmp, data)?;
    let linked = std::fs::hard_link(&tmp, path);
    // The temp name is ours alone; a failure to remove it leaves only litter.
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(path)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Make a new directory entry durable (on Unix, by syncing the directory).
fn sync_parent(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Write the dev issuer's name to `dir/issuer` atomically (temp file, sync, rename),
/// so that `dss token` never reads a half-written name.
pub fn write_issuer_name(dir: &std::path::Path, issuer: &str) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join("issuer");
    let tmp = dir.join(format!(".issuer.{}.tmp", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(issuer.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_parent(&path)
}

/// The dev issuer's name from `dir/issuer`, as `dss serve` last wrote it, if any.
pub fn read_issuer_name(dir: &std::path::Path) -> Option<String> {
    let name = std::fs::read_to_string(dir.join("issuer")).ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn concurrent_creators_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("dev-issuer");
        let n = 6;
        let start = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (dir, start) = (keys_dir.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    DevIssuer::load_or_create(&dir, "http://127.0.0.1:5000/").map(|d| d.public_key())
                })
            })
            .collect();
        let keys: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().unwrap().expect("every caller gets the key"))
            .collect();
        assert!(keys.iter().all(|k| k.kid == keys[0].kid && k.key == keys[0].key));
        // What a later run loads is that key, and no temp file is left behind.
        let again = DevIssuer::load_or_create(&keys_dir, "http://127.0.0.1:5000/").unwrap();
        assert_eq!(again.public_key().key, keys[0].key);
        let names: Vec<_> = std::fs::read_dir(&keys_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["key.pem"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(keys_dir.join("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn an_existing_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert!(create_private_atomically(&path, b"first").unwrap());
        assert!(!create_private_atomically(&path, b"second").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
    }

    #[test]
    fn issuer_name_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_issuer_name(dir.path()), None);
        std::fs::write(dir.path().join("issuer"), "").unwrap();
        assert_eq!(read_issuer_name(dir.path()), None, "an empty file names no issuer");
        write_issuer_name(dir.path(), "http://127.0.0.1:5001/").unwrap();
        write_issuer_name(dir.path(), "http://127.0.0.1:5002/").unwrap();
        assert_eq!(read_issuer_name(dir.path()).as_deref(), Some("http://127.0.0.1:5002/"));
    }
}
