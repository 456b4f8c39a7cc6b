//! The original's tombstone rule, stated once: an unversioned tombstone
//! (`bundles/{uuid}.dead`) hides every version of the bundle, a versioned one
//! (`bundles/{uuid}.{version}.dead`) hides its version, and "latest" is the greatest
//! version without a tombstone. Reads of one bundle and the enumeration of
//! `/v1/bundles/all` both decide through [`Visibility`].

use super::keys::{parse_bundle_key, BundleKey};
use std::collections::HashSet;

/// What one uuid's keys say about which of its versions can be seen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Visibility {
    versions: Vec<String>,
    dead: HashSet<String>,
    dead_all: bool,
}

impl Visibility {
    /// From the bucket keys of one uuid (others, and keys that are not bundle keys, are
    /// ignored by the caller's choice of prefix and by the parser).
    pub fn of<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let mut v = Visibility::default();
        for k in keys {
            v.add(k);
        }
        v
    }

    /// Take one more key of the same uuid into account.
    pub fn add(&mut self, key: &str) {
        match parse_bundle_key(key) {
            Some(BundleKey::Manifest { version, .. }) => self.versions.push(version.to_string()),
            Some(BundleKey::VersionTombstone { version, .. }) => {
                self.dead.insert(version.to_string());
            }
            Some(BundleKey::Tombstone { .. }) => self.dead_all = true,
            None => {}
        }
    }

    /// Whether `version` exists and is not tombstoned.
    pub fn visible(&self, version: &str) -> bool {
        !self.dead_all && !self.dead.contains(version) && self.versions.iter().any(|v| v == version)
    }

    /// Whether a manifest of `version` is stored, tombstoned or not.
    pub fn stored(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// The tombstone that hides `version`, if one does: `Some(None)` for the bundle's
    /// unversioned tombstone (which wins), `Some(Some(version))` for the version's own.
    pub fn hidden_by<'v>(&self, version: &'v str) -> Option<Option<&'v str>> {
        if self.dead_all {
            Some(None)
        } else if self.dead.contains(version) {
            Some(Some(version))
        } else {
            None
        }
    }

    /// Whether `version` has a tombstone of its own.
    pub fn version_tombstoned(&self, version: &str) -> bool {
        self.dead.contains(version)
    }

    /// Every stored version, tombstoned or not, in key order.
    pub fn stored_versions(&self) -> impl Iterator<Item = &str> {
        self.versions.iter().map(String::as_str)
    }

    /// The greatest visible version.
    pub fn latest(&self) -> Option<&str> {
        self.visible_versions().max()
    }

    /// Every visible version, in key order.
    pub fn visible_versions(&self) -> impl Iterator<Item = &str> {
        let hidden = self.dead_all;
        self.versions
            .iter()
            .filter(move |v| !hidden && !self.dead.contains(v.as_str()))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "2017-06-16T193604.240704Z";
    const V2: &str = "2017-06-18T075702.020366Z";
    const U: &str = "011c7340-9b3c-4d62-bf49-090d79daf198";

    #[test]
    fn the_originals_rule() {
        let keys = [format!("bundles/{U}.{V1}"), format!("bundles/{U}.{V2}")];
        let v = Visibility::of(keys.iter().map(String::as_str));
        assert_eq!(v.latest(), Some(V2));
        assert!(v.visible(V1) && v.visible(V2));
        assert!(!v.visible("2019-01-01T000000.000000Z"), "a version that does not exist");

        let with_dead_v2 = [keys[0].clone(), keys[1].clone(), format!("bundles/{U}.{V2}.dead")];
        let v = Visibility::of(with_dead_v2.iter().map(String::as_str));
        assert_eq!(v.latest(), Some(V1), "latest skips a tombstoned version");
        assert!(!v.visible(V2));
        assert_eq!(v.visible_versions().collect::<Vec<_>>(), vec![V1]);

        let all_dead = [keys[0].clone(), keys[1].clone(), format!("bundles/{U}.dead")];
        let v = Visibility::of(all_dead.iter().map(String::as_str));
        assert_eq!(v.latest(), None);
        assert!(!v.visible(V1));
        assert_eq!(v.visible_versions().count(), 0);

        let odd = [format!("bundles/{U}.dead"), format!("files/{U}.{V1}"), "junk".into()];
        assert_eq!(Visibility::of(odd.iter().map(String::as_str)).latest(), None);
    }
}
