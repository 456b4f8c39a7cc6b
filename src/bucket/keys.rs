//! How a replica's bucket names things, spelled in one place: file metadata
//! `files/{uuid}.{version}`, manifests `bundles/{uuid}.{version}`, tombstones
//! `bundles/{uuid}.dead` and `bundles/{uuid}.{version}.dead`, and the prefixes that list
//! one uuid's keys. (Blob keys come from [`crate::model::Checksums::blob_key`].)

/// Key suffix of tombstones; sorts after any version string.
pub const TOMBSTONE_SUFFIX: &str = "dead";
/// Where every bundle key lies.
pub const BUNDLES: &str = "bundles/";
/// Where every file metadata key lies.
pub const FILES: &str = "files/";

/// Whether the object at `key` can never change once it exists: file metadata,
/// manifests, collections and tombstones are written create-only, so a document once read stays what
/// it is (whether a tombstone exists is a listing's question, not a read's).
pub fn immutable_document(key: &str) -> bool {
    let rest = key
        .strip_prefix(FILES)
        .or_else(|| key.strip_prefix(BUNDLES))
        .or_else(|| key.strip_prefix(COLLECTIONS));
    rest.is_some_and(|r| r.contains('.') && !r.contains('/'))
}

/// The prefix whose listing a write of `key` changes: its uuid's, for file metadata and
/// bundle keys; `None` for other keys (blobs), which are never listed for a read.
pub fn listing_of(key: &str) -> Option<String> {
    if let Some(k) = parse_bundle_key(key) {
        return Some(bundle_prefix(k.uuid()));
    }
    let rest = key.strip_prefix(FILES)?;
    let (uuid, _) = rest.split_once('.')?;
    Some(file_prefix(uuid))
}

/// The prefix of every key of file `uuid` (its versions).
pub fn file_prefix(uuid: &str) -> String {
    format!("{FILES}{uuid}.")
}

/// The prefix of the keys of every bundle whose uuid starts with `uuid_prefix`.
pub fn bundles_under(uuid_prefix: &str) -> String {
    format!("{BUNDLES}{uuid_prefix}")
}

/// The prefix of every key of bundle `uuid` (its versions and tombstones).
pub fn bundle_prefix(uuid: &str) -> String {
    format!("{BUNDLES}{uuid}.")
}

/// Key of a file metadata document.
pub fn file_key(uuid: &str, version: &str) -> String {
    format!("{FILES}{uuid}.{version}")
}

/// Key of a bundle manifest.
pub fn bundle_key(uuid: &str, version: &str) -> String {
    format!("{BUNDLES}{uuid}.{version}")
}

/// Key of a bundle tombstone: versioned when `version` is given.
pub fn tombstone_key(uuid: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{BUNDLES}{uuid}.{v}.{TOMBSTONE_SUFFIX}"),
        None => format!("{BUNDLES}{uuid}.{TOMBSTONE_SUFFIX}"),
    }
}

/// What a key under `bundles/` denotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleKey<'a> {
    /// `bundles/{uuid}.{version}`
    Manifest {
        /// The bundle.
        uuid: &'a str,
        /// Its version.
        version: &'a str,
    },
    /// `bundles/{uuid}.{version}.dead`
    VersionTombstone {
        /// The bundle.
        uuid: &'a str,
        /// The tombstoned version.
        version: &'a str,
    },
    /// `bundles/{uuid}.dead`
    Tombstone {
        /// The bundle, all of whose versions are hidden.
        uuid: &'a str,
    },
}

impl<'a> BundleKey<'a> {
    /// The bundle the key is about.
    pub fn uuid(&self) -> &'a str {
        match self {
            BundleKey::Manifest { uuid, .. }
            | BundleKey::VersionTombstone { uuid, .. }
            | BundleKey::Tombstone { uuid } => uuid,
        }
    }

    /// The version the key names (`None`: the tombstone of every version).
    pub fn version(&self) -> Option<&'a str> {
        match self {
            BundleKey::Manifest { version, .. } | BundleKey::VersionTombstone { version, .. } => Some(version),
            BundleKey::Tombstone { .. } => None,
        }
    }
}

/// `(uuid, version)` of a `files/{uuid}.{version}` key; `None` for keys of other shapes.
pub fn parse_file_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(FILES)?;
    let (uuid, version) = rest.split_at_checked(36)?;
    crate::model::ids::ObjectUuid::parse(uuid).ok()?;
    let version = version.strip_prefix('.')?;
    crate::model::ids::looks_like_version(version).then_some((uuid, version))
}

/// Where every collection key lies.
pub const COLLECTIONS: &str = "collections/";

/// Key of a collection version.
pub fn collection_key(uuid: &str, version: &str) -> String {
    format!("{COLLECTIONS}{uuid}.{version}")
}

/// Key of a collection's tombstone (the original wrote only this one, for every version).
pub fn collection_tombstone_key(uuid: &str) -> String {
    format!("{COLLECTIONS}{uuid}.{TOMBSTONE_SUFFIX}")
}

/// The prefix of every key of collection `uuid` (its versions and tombstone).
pub fn collection_prefix(uuid: &str) -> String {
    format!("{COLLECTIONS}{uuid}.")
}

/// Where the event journal lies: `events/streams/{journal}` (the events' documents back
/// to back) and `events/journals/{journal}` (its manifest). Each replica keeps its own;
/// nothing under it is replicated.
pub const EVENTS: &str = "events/";

/// Key of journal `journal`'s stream object.
pub fn event_stream_key(journal: &str) -> String {
    format!("{EVENTS}streams/{journal}")
}

/// Key of journal `journal`'s manifest.
pub fn event_manifest_key(journal: &str) -> String {
    format!("{EVENTS}journals/{journal}")
}

/// What a key under `collections/` denotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectionKey<'a> {
    /// `collections/{uuid}.{version}`
    Version {
        /// The collection.
        uuid: &'a str,
        /// Its version.
        version: &'a str,
    },
    /// `collections/{uuid}.dead`
    Tombstone {
        /// The collection, every version of which is gone.
        uuid: &'a str,
    },
}

/// Classify a `collections/` key; `None` for keys of no known shape.
pub fn parse_collection_key(key: &str) -> Option<CollectionKey<'_>> {
    let (uuid, tail) = lowercase_uuid_then(key.strip_prefix(COLLECTIONS)?)?;
    match tail.strip_prefix('.')? {
        TOMBSTONE_SUFFIX => Some(CollectionKey::Tombstone { uuid }),
        version => crate::model::ids::looks_like_version(version).then_some(CollectionKey::Version { uuid, version }),
    }
}

/// Where every blob key lies.
pub const BLOBS: &str = "blobs/";

/// Whether a key is one of the documents and blobs a replica holds, the keys that are
/// copied between replicas (not `incoming/` copies, checkout objects or stray files).
pub fn replicated(key: &str) -> bool {
    parse_bundle_key(key).is_some()
        || parse_file_key(key).is_some()
        || parse_collection_key(key).is_some()
        || crate::model::Checksums::from_blob_key(key).is_some()
}

/// `rest` split after its leading uuid, which must be in lower case (as every key the
/// original wrote); `None` otherwise.
fn lowercase_uuid_then(rest: &str) -> Option<(&str, &str)> {
    let (uuid, tail) = rest.split_at_checked(36)?;
    crate::model::ids::ObjectUuid::parse(uuid).ok()?;
    (!uuid.bytes().any(|b| b.is_ascii_uppercase())).then_some((uuid, tail))
}

/// Classify a `bundles/` key; `None` for keys of no known shape.
pub fn parse_bundle_key(key: &str) -> Option<BundleKey<'_>> {
    let (uuid, tail) = lowercase_uuid_then(key.strip_prefix(BUNDLES)?)?;
    let tail = tail.strip_prefix('.')?;
    if tail == TOMBSTONE_SUFFIX {
        return Some(BundleKey::Tombstone { uuid });
    }
    if let Some(version) = tail.strip_suffix(".dead") {
        return crate::model::ids::looks_like_version(version).then_some(BundleKey::VersionTombstone { uuid, version });
    }
    crate::model::ids::looks_like_version(tail).then_some(BundleKey::Manifest { uuid, version: tail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_keys() {
        let u = "deadbeef-0001-4a6b-8f0d-a7d2105c23be";
        let v = "2017-12-05T235850.950361Z";
        assert_eq!(collection_key(u, v), format!("collections/{u}.{v}"));
        assert_eq!(
            parse_collection_key(&collection_key(u, v)),
            Some(CollectionKey::Version { uuid: u, version: v })
        );
        assert_eq!(
            parse_collection_key(&collection_tombstone_key(u)),
            Some(CollectionKey::Tombstone { uuid: u })
        );
        assert!(collection_prefix(u).ends_with('.'));
        for bad in [
            format!("collections/{u}.x"),
            format!("collections/{}.{v}", u.to_uppercase()),
            format!("collections/{u}"),
            format!("bundles/{u}.{v}"),
        ] {
            assert_eq!(parse_collection_key(&bad), None, "{bad}");
        }
    }

    #[test]
    fn bundle_keys() {
        let u = "deadbeef-0001-4a6b-8f0d-a7d2105c23be";
        assert_eq!(
            parse_bundle_key(&format!("bundles/{u}.2017-12-05T235850.950361Z.dead")),
            Some(BundleKey::VersionTombstone {
                uuid: u,
                version: "2017-12-05T235850.950361Z"
            })
        );
        assert_eq!(
            parse_bundle_key(&format!("bundles/{u}.dead")),
            Some(BundleKey::Tombstone { uuid: u })
        );
        assert_eq!(
            parse_bundle_key(&format!("bundles/{u}.2017-12-05T235850.950361Z")),
            Some(BundleKey::Manifest {
                uuid: u,
                version: "2017-12-05T235850.950361Z"
            })
        );
        assert_eq!(parse_bundle_key("bundles/x"), None);
        let v = "2017-12-05T235850.950361Z";
        assert_eq!(listing_of(&tombstone_key(u, Some(v))), Some(bundle_prefix(u)));
        assert_eq!(listing_of(&bundle_key(u, v)), Some(bundle_prefix(u)));
        assert_eq!(listing_of(&file_key(u, v)), Some(file_prefix(u)));
        assert_eq!(listing_of("blobs/a.b.c.d"), None);
        assert_eq!(parse_bundle_key(&format!("bundles/{u}.junk")), None);
        assert_eq!(parse_file_key(&file_key(u, v)), Some((u, v)));
        assert_eq!(parse_file_key(&format!("files/{u}.junk")), None);
        assert!(replicated(&file_key(u, v)) && replicated(&tombstone_key(u, None)));
        assert!(!replicated("incoming/x") && !replicated("blobs/a.b.c.d"));
    }
}
