//! The four checksums the DSS keeps for every blob, their text formats, and a
//! streaming hasher that computes all four in one pass.

use md5::{Digest as _, Md5};
use sha1::Sha1;
use sha2::Sha256;

/// Size of one S3 multipart part as the `hca` CLI and the original chose it (64 MiB).
pub const S3_MIN_CHUNK_SIZE: u64 = 64 * 1024 * 1024;
const S3_MAX_PARTS: u64 = 10_000;
const MIB: u64 = 1024 * 1024;

/// Why a checksum was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// A required checksum is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A checksum has the wrong form.
    #[error("malformed checksum {0}")]
    Malformed(&'static str),
}

/// sha256, sha1, s3_etag and crc32c of one blob, lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Checksums {
    /// 64 characters.
    pub sha256: String,
    /// 40 characters.
    pub sha1: String,
    /// 32 characters, optionally `-N` (multipart, N in 2..=10000).
    pub s3_etag: String,
    /// 8 characters.
    pub crc32c: String,
}

fn alnum_len(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The original's `s3_etag` format: 32 lowercase alphanumerics, optionally `-N`, 2 <= N <= 10000.
pub fn valid_s3_etag(s: &str) -> bool {
    match s.split_once('-') {
        None => alnum_len(s, 32),
        Some((md5, parts)) => {
            alnum_len(md5, 32)
                && !parts.is_empty()
                && parts.len() <= 5
                && parts.bytes().all(|b| b.is_ascii_digit())
                && !parts.starts_with('0')
                && parts.parse::<u32>().map(|n| (2..=10_000).contains(&n)).unwrap_or(false)
        }
    }
}

/// The content-addressed blob key of these checksums (the one place it is spelled).
pub fn blob_key(sha256: &str, sha1: &str, s3_etag: &str, crc32c: &str) -> String {
    format!("blobs/{sha256}.{sha1}.{s3_etag}.{crc32c}")
}

impl Checksums {
    /// Build from staging metadata values (any case), checking each format.
    /// Arguments are `(name, value)` lookups by the `hca-dss-*` keys.
    pub fn from_staging(get: impl Fn(&str) -> Option<String>) -> Result<Self, ChecksumError> {
        let fetch = |k: &'static str| get(k).map(|v| v.to_ascii_lowercase()).ok_or(ChecksumError::Missing(k));
        let c = Checksums {
            sha256: fetch("hca-dss-sha256")?,
            sha1: fetch("hca-dss-sha1")?,
            s3_etag: fetch("hca-dss-s3_etag")?,
            crc32c: fetch("hca-dss-crc32c")?,
        };
        c.validate()?;
        Ok(c)
    }

    /// Check every format (the original's `blob_checksum_format`).
    pub fn validate(&self) -> Result<(), ChecksumError> {
        if !alnum_len(&self.crc32c, 8) {
            return Err(ChecksumError::Malformed("hca-dss-crc32c"));
        }
        if !valid_s3_etag(&self.s3_etag) {
            return Err(ChecksumError::Malformed("hca-dss-s3_etag"));
        }
        if !alnum_len(&self.sha1, 40) {
            return Err(ChecksumError::Malformed("hca-dss-sha1"));
        }
        if !alnum_len(&self.sha256, 64) {
            return Err(ChecksumError::Malformed("hca-dss-sha256"));
        }
        Ok(())
    }

    /// Whether bytes whose store computed `etag` (S3) or `crc32c` (GCS) can be these:
    /// `Some(false)` when they cannot, `None` when the store's checksum cannot tell (a
    /// multipart ETag of another part layout).
    pub fn agree_with_store(&self, etag: Option<&str>, crc32c: Option<&str>) -> Option<bool> {
        if let Some(c) = crc32c {
            return Some(c.eq_ignore_ascii_case(&self.crc32c));
        }
        let e = etag?;
        if e.eq_ignore_ascii_case(&self.s3_etag) {
            return Some(true);
        }
        // Two single-part ETags are both the MD5 of the bytes.
        (!e.contains('-') && !self.s3_etag.contains('-')).then_some(false)
    }

    /// The content-addressed blob key: `blobs/{sha256}.{sha1}.{s3_etag}.{crc32c}`.
    pub fn blob_key(&self) -> String {
        blob_key(&self.sha256, &self.sha1, &self.s3_etag, &self.crc32c)
    }

    /// Parse a blob key back into checksums (the original's `BLOB_KEY_REGEX`).
    pub fn from_blob_key(key: &str) -> Option<Self> {
        let rest = key.strip_prefix("blobs/")?;
        let mut it = rest.split('.');
        let c = Checksums {
            sha256: it.next()?.to_string(),
            sha1: it.next()?.to_string(),
            s3_etag: it.next()?.to_string(),
            crc32c: it.next()?.to_string(),
        };
        if it.next().is_some() || c.validate().is_err() {
            return None;
        }
        Some(c)
    }
}

/// The part size the `hca` CLI (dcplib) uses for a file of `size` bytes: 64 MiB, or
/// larger (rounded up to whole MiB) when 64 MiB parts would exceed 10,000.
pub fn s3_multipart_chunk_size(size: u64) -> u64 {
    if size <= S3_MAX_PARTS * S3_MIN_CHUNK_SIZE {
        S3_MIN_CHUNK_SIZE
    } else {
        let div = size.div_ceil(S3_MAX_PARTS);
        div.div_ceil(MIB) * MIB
    }
}

/// The S3 ETag half of the checksums: MD5 per part, as S3 computes multipart ETags.
pub struct EtagHasher {
    part_size: u64,
    part: Md5,
    part_filled: u64,
    part_digests: Vec<u8>,
}

impl EtagHasher {
    /// For a stream of `total_size` bytes (the part size depends on it).
    pub fn new(total_size: u64) -> Self {
        EtagHasher {
            part_size: s3_multipart_chunk_size(total_size),
            part: Md5::new(),
            part_filled: 0,
            part_digests: Vec::new(),
        }
    }

    /// Feed bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (self.part_size - self.part_filled) as usize;
            let n = room.min(data.len());
            self.part.update(&data[..n]);
            self.part_filled += n as u64;
            data = &data[n..];
            if self.part_filled == self.part_size {
                let d = std::mem::take(&mut self.part).finalize();
                self.part_digests.extend_from_slice(&d);
                self.part_filled = 0;
            }
        }
    }

    /// The ETag: plain MD5 for one part, `md5(part md5s)-N` for several.
    pub fn finish(mut self) -> String {
        if self.part_filled > 0 || self.part_digests.is_empty() {
            let d = std::mem::take(&mut self.part).finalize();
            self.part_digests.extend_from_slice(&d);
        }
        let parts = self.part_digests.len() / 16;
        if parts == 1 {
            hex::encode(&self.part_digests)
        } else {
            format!("{}-{}", hex::encode(Md5::digest(&self.part_digests)), parts)
        }
    }
}

/// The other half: sha256, sha1 and crc32c, and the byte count.
#[derive(Default)]
pub struct ShaHasher {
    sha256: Sha256,
    sha1: Sha1,
    crc32c: u32,
    size: u64,
}

impl ShaHasher {
    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        self.sha1.update(data);
        self.crc32c = crc32c::crc32c_append(self.crc32c, data);
        self.size += data.len() as u64;
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The checksums, with `s3_etag` from the other half.
    pub fn finish(self, s3_etag: String) -> Checksums {
        Checksums {
            sha256: hex::encode(self.sha256.finalize()),
            sha1: hex::encode(self.sha1.finalize()),
            s3_etag,
            crc32c: format!("{:08x}", self.crc32c),
        }
    }
}

/// Computes the four checksums of a byte stream in one pass.
///
/// `s3_etag` follows S3's multipart rule for the part size the `hca` CLI uses,
/// so a blob key computed here equals the one a client computes. The two halves can
/// also run on two threads (see `storage::verify::ParallelHasher`).
pub struct ChecksumHasher {
    etag: EtagHasher,
    sha: ShaHasher,
}

impl ChecksumHasher {
    /// A hasher for a stream of `total_size` bytes (needed to choose the part size).
    pub fn new(total_size: u64) -> Self {
        ChecksumHasher {
            etag: EtagHasher::new(total_size),
            sha: ShaHasher::default(),
        }
    }

    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.etag.update(data);
    }

    /// Number of bytes fed so far.
    pub fn size(&self) -> u64 {
        self.sha.size()
    }

    /// Finish and return the checksums.
    pub fn finish(self) -> Checksums {
        self.sha.finish(self.etag.finish())
    }

    /// The two halves, to run apart.
    pub fn into_parts(self) -> (EtagHasher, ShaHasher) {
        (self.etag, self.sha)
    }
}

/// The four checksums of an in-memory buffer.
pub fn checksums_of(data: &[u8]) -> Checksums {
    let mut h = ChecksumHasher::new(data.len() as u64);
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_checksums_agree_or_cannot_tell() {
        let c = checksums_of(b"hello");
        assert_eq!(c.agree_with_store(None, Some(&c.crc32c)), Some(true));
        assert_eq!(c.agree_with_store(None, Some("00000000")), Some(false));
        assert_eq!(c.agree_with_store(Some(&c.s3_etag), None), Some(true));
        assert_eq!(
            c.agree_with_store(Some("0123456789abcdef0123456789abcdef"), None),
            Some(false)
        );
        assert_eq!(
            c.agree_with_store(Some("0123456789abcdef0123456789abcdef-3"), None),
            None
        );
        assert_eq!(c.agree_with_store(None, None), None);
    }

    #[test]
    fn known_values() {
        let c = checksums_of(b"hello world");
        assert_eq!(
            c.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(c.sha1, "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed");
        assert_eq!(c.s3_etag, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(c.crc32c, "c99465aa");
        assert_eq!(
            c.blob_key(),
            "blobs/b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9.2aae6c35c94fcfb415dbe95f408b9ce91ee846ed.5eb63bbbe01eeed093cb22bb8f5acdc3.c99465aa"
        );
        assert_eq!(Checksums::from_blob_key(&c.blob_key()), Some(c));
    }

    #[test]
    fn multipart_etag() {
        // Two parts: 64 MiB of zeros then one byte. md5 of the two part digests, "-2".
        let size = S3_MIN_CHUNK_SIZE + 1;
        let mut h = ChecksumHasher::new(size);
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..64 {
            h.update(&chunk);
        }
        h.update(b"x");
        let c = h.finish();
        let mut digests = Md5::digest(vec![0u8; S3_MIN_CHUNK_SIZE as usize]).to_vec();
        digests.extend_from_slice(&Md5::digest(b"x"));
        assert_eq!(c.s3_etag, format!("{}-2", hex::encode(Md5::digest(&digests))));
        // Exactly one part keeps the plain md5.
        let mut h = ChecksumHasher::new(S3_MIN_CHUNK_SIZE);
        for _ in 0..64 {
            h.update(&chunk);
        }
        assert_eq!(
            h.finish().s3_etag,
            hex::encode(Md5::digest(vec![0u8; S3_MIN_CHUNK_SIZE as usize]))
        );
    }

    #[test]
    fn formats() {
        assert!(valid_s3_etag("3b83ef96387f14655fc854ddc3c6bd57"));
        assert!(valid_s3_etag("3b83ef96387f14655fc854ddc3c6bd57-2"));
        assert!(valid_s3_etag("3b83ef96387f14655fc854ddc3c6bd57-10000"));
        for bad in [
            "3b83ef96387f14655fc854ddc3c6bd57-1",
            "3b83ef96387f14655fc854ddc3c6bd57-10001",
            "3b83ef96387f14655fc854ddc3c6bd57-",
            "3b83ef96387f14655fc854ddc3c6bd5",
            "3b83ef96387f14655fc854ddc3c6bd57-02",
        ] {
            assert!(!valid_s3_etag(bad), "{bad}");
        }
        let get = |k: &str| match k {
            "hca-dss-sha256" => Some("CFC7749B96F63BD31C3C42B5C471BF756814053E847C10F3EB003417BC523D30".into()),
            "hca-dss-sha1" => Some("2b8b815229aa8a61e483fb4ba0588b8b6c491890".into()),
            "hca-dss-s3_etag" => Some("3b83ef96387f14655fc854ddc3c6bd57".into()),
            "hca-dss-crc32c" => Some("e16e07b9".into()),
            _ => None,
        };
        let c = Checksums::from_staging(get).unwrap();
        assert_eq!(
            c.sha256,
            "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
        );
        assert_eq!(
            Checksums::from_staging(|_| None),
            Err(ChecksumError::Missing("hca-dss-sha256"))
        );
        assert_eq!(
            Checksums::from_staging(|k| if k == "hca-dss-crc32c" {
                Some("xyz".into())
            } else {
                get(k)
            }),
            Err(ChecksumError::Malformed("hca-dss-crc32c"))
        );
    }
}
