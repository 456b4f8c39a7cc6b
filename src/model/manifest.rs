//! The JSON documents stored in a replica: file metadata (`files/{uuid}.{version}`),
//! bundle manifests (`bundles/{uuid}.{version}`) and tombstones (`….dead`).
//!
//! Field order matters: documents are written with [`super::pyjson::dumps`] in the
//! order the original built its dicts, so re-PUTs compare equal byte for byte.

use super::checksum::Checksums;
use super::pyjson;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `format` written into new file metadata.
pub const FILE_FORMAT_VERSION: &str = "0.0.4";
/// `format` written into new bundle manifests.
pub const BUNDLE_FORMAT_VERSION: &str = "0.0.1";

/// `files/{uuid}.{version}`. Older formats carry extra keys (`bundle_uuid` in 0.0.3):
/// they are kept in `extra` and ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMetadata {
    /// Document format, `0.0.4` for new documents.
    pub format: String,
    /// Uploader's numeric id.
    pub creator_uid: i64,
    /// DSS_VERSION of this file version.
    pub version: String,
    /// MIME type.
    #[serde(rename = "content-type")]
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// crc32c, 8 hex chars.
    pub crc32c: String,
    /// S3 ETag.
    #[serde(rename = "s3-etag")]
    pub s3_etag: String,
    /// sha1 hex.
    pub sha1: String,
    /// sha256 hex.
    pub sha256: String,
}

impl FileMetadata {
    /// A new document in the current format.
    pub fn new(creator_uid: i64, version: &str, content_type: &str, size: u64, c: &Checksums) -> Self {
        FileMetadata {
            format: FILE_FORMAT_VERSION.to_string(),
            creator_uid,
            version: version.to_string(),
            content_type: content_type.to_string(),
            size,
            crc32c: c.crc32c.clone(),
            s3_etag: c.s3_etag.clone(),
            sha1: c.sha1.clone(),
            sha256: c.sha256.clone(),
        }
    }

    /// The checksums of the blob this metadata points at.
    pub fn checksums(&self) -> Checksums {
        Checksums {
            sha256: self.sha256.clone(),
            sha1: self.sha1.clone(),
            s3_etag: self.s3_etag.clone(),
            crc32c: self.crc32c.clone(),
        }
    }

    /// Bytes as the original wrote them (`json.dumps`).
    pub fn to_bytes(&self) -> Vec<u8> {
        to_py_bytes(self)
    }
}

/// One file entry of a stored bundle manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// File name within the bundle.
    pub name: String,
    /// File uuid.
    pub uuid: String,
    /// File version.
    pub version: String,
    /// MIME type.
    #[serde(rename = "content-type")]
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Whether the file is metadata to index.
    pub indexed: bool,
    /// crc32c.
    pub crc32c: String,
    /// S3 ETag (stored as `s3-etag`, served as `s3_etag`).
    #[serde(rename = "s3-etag")]
    pub s3_etag: String,
    /// sha1.
    pub sha1: String,
    /// sha256.
    pub sha256: String,
}

impl BundleFile {
    /// The entry for `name`, pointing at the file `meta` of `uuid`.
    pub fn new(name: &str, uuid: &str, version: &str, indexed: bool, meta: &FileMetadata) -> Self {
        BundleFile {
            name: name.to_string(),
            uuid: uuid.to_string(),
            version: version.to_string(),
            content_type: meta.content_type.clone(),
            size: meta.size,
            indexed,
            crc32c: meta.crc32c.clone(),
            s3_etag: meta.s3_etag.clone(),
            sha1: meta.sha1.clone(),
            sha256: meta.sha256.clone(),
        }
    }

    /// The key of this file's blob.
    pub fn blob_key(&self) -> String {
        super::checksum::blob_key(&self.sha256, &self.sha1, &self.s3_etag, &self.crc32c)
    }

    /// The checksums of this file's blob.
    pub fn checksums(&self) -> Checksums {
        Checksums {
            sha256: self.sha256.clone(),
            sha1: self.sha1.clone(),
            s3_etag: self.s3_etag.clone(),
            crc32c: self.crc32c.clone(),
        }
    }
}

/// `bundles/{uuid}.{version}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleManifest {
    /// Document format.
    pub format: String,
    /// DSS_VERSION of this bundle version.
    pub version: String,
    /// The files, in the order given at PUT.
    pub files: Vec<BundleFile>,
    /// Uploader's numeric id.
    pub creator_uid: i64,
}

impl BundleManifest {
    /// A new manifest in the current format.
    pub fn new(version: &str, files: Vec<BundleFile>, creator_uid: i64) -> Self {
        BundleManifest {
            format: BUNDLE_FORMAT_VERSION.to_string(),
            version: version.to_string(),
            files,
            creator_uid,
        }
    }

    /// Bytes as the original wrote them (`json.dumps`), written entry by entry
    /// ([`ManifestWriter`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let capacity = self.files.iter().map(BundleFile::text_len).sum();
        let mut w = ManifestWriter::new(&self.format, &self.version, capacity);
        for f in &self.files {
            w.push(f);
        }
        w.finish(self.creator_uid)
    }
}

impl BundleFile {
    /// About the length of this entry's text in a manifest: its strings, plus about 140
    /// bytes of field names, quotes and punctuation and up to 25 of numbers and booleans
    /// (escapes make it longer; rare).
    pub fn text_len(&self) -> usize {
        [
            &self.name,
            &self.uuid,
            &self.version,
            &self.content_type,
            &self.crc32c,
            &self.s3_etag,
            &self.sha1,
            &self.sha256,
        ]
        .iter()
        .map(|s| s.len())
        .sum::<usize>()
            + 166
    }
}

/// The bytes of a manifest (as [`BundleManifest::to_bytes`]) written one file entry at a
/// time, so a large manifest need not exist as a list of entries and as text at once.
/// A `serde_json::Value` of the whole manifest, the obvious route to `pyjson`, would take
/// several times the memory of the text.
pub struct ManifestWriter {
    out: String,
    files: usize,
}

impl ManifestWriter {
    /// A manifest of `format` and `version`, its buffer sized for `capacity` bytes of
    /// entries (see [`BundleFile::text_len`]): a buffer that grows by doubling holds up
    /// to three times the text while it grows.
    pub fn new(format: &str, version: &str, capacity: usize) -> Self {
        let s = |v: &str| pyjson::dumps(&Value::String(v.to_string()));
        let mut out = String::with_capacity(capacity.saturating_add(128));
        out.push_str("{\"format\": ");
        out.push_str(&s(format));
        out.push_str(", \"version\": ");
        out.push_str(&s(version));
        out.push_str(", \"files\": [");
        ManifestWriter { out, files: 0 }
    }

    /// Append the next file entry.
    pub fn push(&mut self, f: &BundleFile) {
        if self.files > 0 {
            self.out.push_str(", ");
        }
        self.files += 1;
        self.out
            .push_str(&pyjson::dumps(&serde_json::to_value(f).unwrap_or(Value::Null)));
    }

    /// The finished document.
    pub fn finish(mut self, creator_uid: i64) -> Vec<u8> {
        self.out.push_str("], \"creator_uid\": ");
        self.out.push_str(&creator_uid.to_string());
        self.out.push('}');
        self.out.into_bytes()
    }
}

/// A bundle tombstone: `bundles/{uuid}.dead` (all versions) or `bundles/{uuid}.{version}.dead`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Who deleted it.
    pub email: String,
    /// Why (may be null in JSON).
    pub reason: Option<String>,
    /// Always true for API deletions.
    pub admin_deleted: bool,
    /// The version, for a versioned tombstone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Tombstone {
    /// Bytes as the original wrote them (`json.dumps`).
    pub fn to_bytes(&self) -> Vec<u8> {
        to_py_bytes(self)
    }
}

fn to_py_bytes<T: Serialize>(doc: &T) -> Vec<u8> {
    // Serialising plain structs to a Value cannot fail (no maps with non-string keys).
    let v = serde_json::to_value(doc).unwrap_or(Value::Null);
    pyjson::dumps(&v).into_bytes()
}

/// The original's bundle file-name rule (no leading `/` or `~/`, no `./`, `/.` or `\`
/// anywhere, not `.` or `..`), tightened: not empty, no control characters (the original
/// refused LF and CR; NUL and the rest are no better in a file name), and no trailing
/// `/` (a name is a file, never a directory).
pub fn valid_file_name(name: &str) -> bool {
    !(name.is_empty()
        || name.ends_with('/')
        || name.chars().any(char::is_control)
        || name.starts_with('/')
        || name.starts_with("~/")
        || name.contains("./")
        || name.contains("/.")
        || name.contains('\\')
        || name == "."
        || name == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE_MANIFEST: &str = r#"{"format": "0.0.2", "version": "2017-06-20T214506.766634Z", "files": [{"name": "LICENSE", "uuid": "ce55fd51-7833-469b-be0b-5da88ebebfcd", "version": "2017-06-16T193604.240704Z", "content-type": "text/plain", "size": 11358, "indexed": false, "crc32c": "e16e07b9", "s3-etag": "3b83ef96387f14655fc854ddc3c6bd57", "sha1": "2b8b815229aa8a61e483fb4ba0588b8b6c491890", "sha256": "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"}], "creator_uid": 12345}"#;

    #[test]
    fn manifests_written_entry_by_entry_equal_the_whole_document() {
        let c = Checksums {
            sha256: "a".repeat(64),
            sha1: "b".repeat(40),
            s3_etag: "c".repeat(32) + "-2",
            crc32c: "d".repeat(8),
        };
        let meta = FileMetadata::new(7, "2017-06-16T193604.240704Z", "text/plain; x=\"y\"", 3, &c);
        let names = ["a.json", "caf\u{e9}/\u{1f600}\t\"q\".txt", "\u{7f}back\\slash"];
        for n in 0..=names.len() {
            let files = names[..n]
                .iter()
                .enumerate()
                .map(|(i, name)| BundleFile::new(name, "ce55fd51-7833-469b-be0b-5da88ebebfcd", "v", i % 2 == 0, &meta))
                .collect();
            let m = BundleManifest::new("2018-01-01T000000.000000Z", files, -3);
            assert_eq!(
                String::from_utf8(m.to_bytes()).unwrap(),
                String::from_utf8(to_py_bytes(&m)).unwrap()
            );
        }
    }

    #[test]
    fn manifest_round_trips_original_bytes() {
        // Bytes written by the original (fixtures/original-bucket): parse and re-serialise unchanged.
        let m: BundleManifest = serde_json::from_str(FIXTURE_MANIFEST).unwrap();
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), FIXTURE_MANIFEST);
    }

    #[test]
    fn new_manifest_bytes_follow_python_rules() {
        // Expected text written by hand from the original's dict order and json.dumps rules.
        let meta = FileMetadata::new(
            0,
            "2017-06-16T193604.240704Z",
            "application/json; dcp-type=\"metadata/biomaterial\"",
            430,
            &Checksums {
                sha256: "a".repeat(64),
                sha1: "b".repeat(40),
                s3_etag: "c".repeat(32),
                crc32c: "d".repeat(8),
            },
        );
        let m = BundleManifest::new(
            "2018-01-01T000000.000000Z",
            vec![BundleFile::new(
                "cell_suspension_0.json",
                "ce55fd51-7833-469b-be0b-5da88ebebfcd",
                &meta.version,
                true,
                &meta,
            )],
            0,
        );
        let expected = format!(
            r#"{{"format": "0.0.1", "version": "2018-01-01T000000.000000Z", "files": [{{"name": "cell_suspension_0.json", "uuid": "ce55fd51-7833-469b-be0b-5da88ebebfcd", "version": "2017-06-16T193604.240704Z", "content-type": "application/json; dcp-type=\"metadata/biomaterial\"", "size": 430, "indexed": true, "crc32c": "{}", "s3-etag": "{}", "sha1": "{}", "sha256": "{}"}}], "creator_uid": 0}}"#,
            "d".repeat(8),
            "c".repeat(32),
            "b".repeat(40),
            "a".repeat(64)
        );
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), expected);
        assert_eq!(
            String::from_utf8(meta.to_bytes()).unwrap(),
            format!(
                r#"{{"format": "0.0.4", "creator_uid": 0, "version": "2017-06-16T193604.240704Z", "content-type": "application/json; dcp-type=\"metadata/biomaterial\"", "size": 430, "crc32c": "{}", "s3-etag": "{}", "sha1": "{}", "sha256": "{}"}}"#,
                "d".repeat(8),
                "c".repeat(32),
                "b".repeat(40),
                "a".repeat(64)
            )
        );
    }

    #[test]
    fn tombstone_bytes() {
        let t = Tombstone {
            email: "a@b.org".into(),
            reason: Some("bad data".into()),
            admin_deleted: true,
            version: None,
        };
        assert_eq!(
            t.to_bytes(),
            br#"{"email": "a@b.org", "reason": "bad data", "admin_deleted": true}"#
        );
        let t = Tombstone {
            version: Some("2017-06-16T193604.240704Z".into()),
            reason: None,
            ..t
        };
        assert_eq!(
            t.to_bytes(),
            br#"{"email": "a@b.org", "reason": null, "admin_deleted": true, "version": "2017-06-16T193604.240704Z"}"#
        );
    }

    #[test]
    fn old_file_metadata_parses() {
        let doc = r#"{"format": "0.0.3", "bundle_uuid": "f325f679-9ac9-459c-97e3-92d79db18db8", "creator_uid": 4321, "version": "2017-06-16T193604.240704Z", "content-type": "text/plain", "size": 11358, "crc32c": "e16e07b9", "s3-etag": "3b83ef96387f14655fc854ddc3c6bd57", "sha1": "2b8b815229aa8a61e483fb4ba0588b8b6c491890", "sha256": "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"}"#;
        let m: FileMetadata = serde_json::from_str(doc).unwrap();
        assert_eq!(m.size, 11358);
        assert_eq!(m.checksums().blob_key(), "blobs/cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30.2b8b815229aa8a61e483fb4ba0588b8b6c491890.3b83ef96387f14655fc854ddc3c6bd57.e16e07b9");
    }

    #[test]
    fn file_names() {
        for ok in ["a.json", "dir/a.json", "a..b", "~a", ".hidden"] {
            assert!(valid_file_name(ok), "{ok}");
        }
        for bad in [
            "/a",
            "./a",
            "a/./b",
            "a/.b",
            "~/a",
            "a\\b",
            ".",
            "..",
            "a/../b",
            "",
            "a/",
            "a\nb",
            "a\rb",
            "a\0b",
            "\u{7f}x",
            "tab\there",
        ] {
            assert!(!valid_file_name(bad), "{bad}");
        }
    }
}
