//! The index document of a bundle (and of a tombstone), as the original DSS built it:
//! `{manifest, state: "new", files: {<transformed name>: [json, …]}, uuid, shape_descriptor}`.

use crate::model::manifest::{BundleManifest, Tombstone};
use serde_json::{json, Map, Value};

/// Manifests with more files than this are indexed with an empty file list
/// (`DSS_BUNDLE_MANIFEST_INDEX_LIMIT` of the original).
pub const MANIFEST_INDEX_LIMIT: usize = 20_000;

/// The original's `prepare_filename`: dots become underscores, and a `_json` name loses
/// its last `_segment` (`cell_suspension_0.json` -> `cell_suspension_json`,
/// `links.json` -> `links_json`, `foo_bar.json` -> `foo_json`).
pub fn prepare_filename(name: &str) -> String {
    let name = name.replace('.', "_");
    match name.strip_suffix("_json") {
        Some(stem) => {
            let stem = match stem.rsplit_once('_') {
                Some((head, _)) => head,
                None => stem,
            };
            format!("{stem}_json")
        }
        None => name,
    }
}

/// The original's metadata document of a bundle (what v2 subscriptions and the event
/// journal see): its manifest and every JSON file (indexed or not), grouped under their
/// names as [`prepare_filename`] turns them.
pub fn metadata_document(uuid: &str, version: &str, manifest: &Value, files: Vec<(String, Value)>) -> Value {
    let mut grouped: Map<String, Value> = Map::new();
    for (name, json) in files {
        match grouped
            .entry(prepare_filename(&name))
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(a) => a.push(json),
            other => *other = Value::Array(vec![json]),
        }
    }
    serde_json::json!({
        "event_type": "CREATE",
        "bundle_info": {"uuid": uuid, "version": version},
        "manifest": manifest,
        "files": grouped,
    })
}

/// Schema type and major version named by a metadata file (`describedBy`, or the legacy `core`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SchemaInfo {
    /// Schema name (`donor_organism`).
    pub schema_type: String,
    /// Major version (`5`).
    pub version: String,
}

/// Why a bundle's shape could not be described (the original refused to index it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub String);

impl SchemaInfo {
    /// The schema a file's JSON declares, if any.
    pub fn from_json(data: &Value) -> Result<Option<Self>, ShapeError> {
        if let Some(url) = data
            .get("describedBy")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
        {
            let path = url::Url::parse(url)
                .map(|u| u.path().to_string())
                .unwrap_or_else(|_| url.to_string());
            let parts: Vec<&str> = path.split('/').collect();
            let last = parts.last().copied().unwrap_or_default();
            let schema_type = last.strip_suffix(".json").unwrap_or(last);
            if schema_type.is_empty() {
                return Err(ShapeError(format!("Schema type can't be empty in schema URL '{url}'")));
            }
            let mut version = None;
            for p in &parts[..parts.len().saturating_sub(1)] {
                let nums: Vec<&str> = p.split('.').collect();
                if nums.len() == 3
                    && nums
                        .iter()
                        .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                {
                    if version.is_some() {
                        return Err(ShapeError(format!(
                            "Found more than one version designator in schema URL '{url}'"
                        )));
                    }
                    version = Some(nums[0].to_string());
                }
            }
            let version = version.ok_or_else(|| ShapeError(format!("No version designator in schema URL '{url}'")))?;
            return Ok(Some(SchemaInfo {
                schema_type: schema_type.to_string(),
                version,
            }));
        }
        if let Some(core) = data.get("core").filter(|c| !c.is_null()) {
            let schema_type = core.get("type").and_then(Value::as_str).unwrap_or_default();
            let version = core.get("schema_version").and_then(Value::as_str).unwrap_or_default();
            let major = version.split('.').next().unwrap_or_default();
            return Ok(Some(SchemaInfo {
                schema_type: schema_type.to_string(),
                version: major.to_string(),
            }));
        }
        Ok(None)
    }
}

/// The original's shape descriptor: `"v5"` when every file uses the same major version of
/// the schema it is named after, else `"v.<file>[.<schema>].<major>…"`; `None` when no
/// file declares a schema (stored as the string `"None"`, as the original did).
pub fn shape_descriptor(files: &Map<String, Value>) -> Result<Option<String>, ShapeError> {
    let mut seen = std::collections::BTreeSet::new();
    for (name, list) in files {
        for content in list.as_array().into_iter().flatten() {
            if let Some(schema) = SchemaInfo::from_json(content)? {
                let file = name.strip_suffix("_json").unwrap_or(name);
                let reject = |bad: bool, msg: String| if bad { Err(ShapeError(msg)) } else { Ok(()) };
                reject(
                    file.contains('.'),
                    format!("A metadata file name must not contain '.' characters: {file}"),
                )?;
                reject(
                    is_decimal(file),
                    format!("A metadata file name must contain at least one non-digit: {file}"),
                )?;
                reject(
                    schema.schema_type.contains('.'),
                    format!("A schema name must not contain '.' characters: {}", schema.schema_type),
                )?;
                reject(
                    is_decimal(&schema.schema_type),
                    format!(
                        "A schema name must contain at least one non-digit: {}",
                        schema.schema_type
                    ),
                )?;
                reject(
                    !is_decimal(&schema.version),
                    format!("A schema version must consist of digits only: {}", schema.version),
                )?;
                seen.insert((file.to_string(), schema));
            }
        }
    }
    if seen.is_empty() {
        return Ok(None);
    }
    let versions: std::collections::BTreeSet<&str> = seen.iter().map(|(_, s)| s.version.as_str()).collect();
    let same_names = seen.iter().all(|(f, s)| *f == s.schema_type);
    if versions.len() == 1 && same_names {
        return Ok(Some(format!(
            "v{}",
            versions.iter().next().copied().unwrap_or_default()
        )));
    }
    let entries: Vec<String> = seen
        .iter()
        .map(|(f, s)| {
            if *f == s.schema_type {
                format!("{f}.{}", s.version)
            } else {
                format!("{f}.{}.{}", s.schema_type, s.version)
            }
        })
        .collect();
    Ok(Some(format!("v.{}", entries.join("."))))
}

fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The index document of a bundle, from its manifest and its indexed JSON files
/// (`(name, parsed JSON)`, in manifest order; the caller skips unparsable files).
pub fn bundle_document(uuid: &str, manifest: &BundleManifest, files: &[(String, Value)]) -> Result<Value, ShapeError> {
    let mut manifest_json = serde_json::to_value(manifest).unwrap_or(Value::Null);
    if manifest.files.len() > MANIFEST_INDEX_LIMIT {
        manifest_json["files"] = json!([]);
    }
    let mut by_name: Map<String, Value> = Map::new();
    for (name, content) in files {
        let entry = by_name.entry(prepare_filename(name)).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(content.clone());
        }
    }
    let shape = shape_descriptor(&by_name)?;
    Ok(json!({
        "manifest": manifest_json,
        "state": "new",
        "files": by_name,
        "uuid": uuid,
        "shape_descriptor": shape.unwrap_or_else(|| "None".to_string()),
    }))
}

/// The index document that replaces a tombstoned bundle's: the tombstone's JSON plus
/// `uuid` and `manifest: {version}`.
pub fn tombstone_document(uuid: &str, version: &str, tombstone: &Tombstone) -> Value {
    tombstone_document_json(
        uuid,
        version,
        &serde_json::to_value(tombstone).unwrap_or_else(|_| json!({})),
    )
}

/// [`tombstone_document`] from the tombstone's stored JSON as it is (the original's older
/// tombstones, such as `{"creator_uid": …, "reason": …}`, have other fields).
pub fn tombstone_document_json(uuid: &str, version: &str, tombstone: &Value) -> Value {
    let mut doc = match tombstone {
        Value::Object(_) => tombstone.clone(),
        _ => json!({}),
    };
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("uuid".into(), json!(uuid));
        obj.insert("manifest".into(), json!({"version": version}));
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_as_the_original_transforms_them() {
        for (name, want) in [
            ("cell_suspension_0.json", "cell_suspension_json"),
            ("foo_bar.json", "foo_json"),
            ("links.json", "links_json"),
            ("a.b.json", "a_json"),
            ("reads.fastq", "reads_fastq"),
            ("project_0.json", "project_json"),
            ("_x.json", "_json"),
        ] {
            assert_eq!(prepare_filename(name), want, "{name}");
        }
    }

    #[test]
    fn schema_info_and_shapes() {
        let v = |url: &str| json!({"describedBy": url});
        assert_eq!(
            SchemaInfo::from_json(&v(
                "https://schema.humancellatlas.org/type/biomaterial/5.2.1/donor_organism"
            ))
            .unwrap(),
            Some(SchemaInfo {
                schema_type: "donor_organism".into(),
                version: "5".into()
            })
        );
        assert_eq!(
            SchemaInfo::from_json(&v(
                "https://raw.githubusercontent.com/HumanCellAtlas/metadata-schema/4.6.0/json_schema/assay.json"
            ))
            .unwrap(),
            Some(SchemaInfo {
                schema_type: "assay".into(),
                version: "4".into()
            })
        );
        assert!(SchemaInfo::from_json(&v("https://x/no/version/here")).is_err());
        assert!(SchemaInfo::from_json(&v("https://x/1.0.0/2.0.0/t")).is_err());
        assert_eq!(SchemaInfo::from_json(&json!({"a": 1})).unwrap(), None);
        assert_eq!(
            SchemaInfo::from_json(&json!({"core": {"type": "sample", "schema_version": "3.1.0"}})).unwrap(),
            Some(SchemaInfo {
                schema_type: "sample".into(),
                version: "3".into()
            })
        );

        let files = |pairs: &[(&str, &str)]| -> Map<String, Value> {
            pairs
                .iter()
                .map(|(n, u)| (n.to_string(), json!([{"describedBy": u}])))
                .collect()
        };
        let same = files(&[("a_json", "https://s/t/5.0.0/a"), ("b_json", "https://s/t/5.1.0/b")]);
        assert_eq!(shape_descriptor(&same).unwrap().as_deref(), Some("v5"));
        let mixed = files(&[("a_json", "https://s/t/5.0.0/a"), ("foo_json", "https://s/t/6.0.0/b")]);
        assert_eq!(shape_descriptor(&mixed).unwrap().as_deref(), Some("v.a.5.foo.b.6"));
        assert_eq!(shape_descriptor(&Map::new()).unwrap(), None);
    }

    #[test]
    fn example_bundle_document() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/example_bundle");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let files: Vec<(String, Value)> = names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    serde_json::from_slice(&std::fs::read(dir.join(n)).unwrap()).unwrap(),
                )
            })
            .collect();
        let manifest = BundleManifest::new("2018-01-01T000000.000000Z", vec![], 0);
        let doc = bundle_document("ce55fd51-7833-469b-be0b-5da88ebebfcd", &manifest, &files).unwrap();
        let keys: Vec<&String> = doc["files"].as_object().unwrap().keys().collect();
        for k in [
            "cell_suspension_json",
            "donor_organism_json",
            "links_json",
            "process_json",
            "sequence_file_json",
            "project_json",
        ] {
            assert!(keys.iter().any(|x| x.as_str() == k), "{k} in {keys:?}");
        }
        // Three process_N.json files land in one list, as in the original.
        assert_eq!(doc["files"]["process_json"].as_array().unwrap().len(), 3);
        assert_eq!(doc["state"], "new");
        assert_eq!(doc["uuid"], "ce55fd51-7833-469b-be0b-5da88ebebfcd");
        assert!(doc["shape_descriptor"].as_str().unwrap().starts_with('v'));
    }

    #[test]
    fn tombstone_documents() {
        let t = Tombstone {
            email: "a@b.org".into(),
            reason: Some("bad".into()),
            admin_deleted: true,
            version: None,
        };
        let d = tombstone_document("u", "2018-01-01T000000.000000Z", &t);
        assert_eq!(
            d,
            json!({"email": "a@b.org", "reason": "bad", "admin_deleted": true, "uuid": "u", "manifest": {"version": "2018-01-01T000000.000000Z"}})
        );
    }
}
