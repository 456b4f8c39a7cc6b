//! Synthetic bundle documents for tests and the search benchmark: a real bundle's metadata
//! (the fixtures' example bundle) with values varied per bundle, deterministically.

use super::document::bundle_document;
use crate::model::manifest::{BundleFile, BundleManifest};
use serde_json::{json, Value};

const ORGANS: &[&str] = &[
    "brain", "heart", "liver", "kidney", "lung", "spleen", "pancreas", "skin",
];
const DISEASES: &[&str] = &["glioblastoma", "normal", "carcinoma", "fibrosis", "diabetes"];
const SPECIES: &[(&str, i64)] = &[("Homo sapiens", 9606), ("Mus musculus", 10090)];
const SEXES: &[&str] = &["male", "female", "unknown", "mixed"];

/// A small deterministic generator (splitmix64), so every run builds the same bundles
/// (and the benchmarks the same data).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// One of `xs` (which must not be empty).
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    /// `chars` random hex digits.
    pub fn hex(&mut self, chars: usize) -> String {
        let mut s = String::with_capacity(chars + 16);
        while s.len() < chars {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(chars);
        s
    }
    /// A random (version 4) uuid.
    pub fn uuid(&mut self) -> String {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(b).into_uuid().to_string()
    }
}

fn set(v: &mut Value, path: &[&str], new: Value) {
    let mut cur = v;
    for p in &path[..path.len() - 1] {
        cur = match cur.get_mut(*p) {
            Some(c) => c,
            None => return,
        };
    }
    if let Some(o) = cur.as_object_mut() {
        o.insert(path[path.len() - 1].to_string(), new);
    }
}

/// The uuid of synthetic bundle `i`.
pub fn uuid_of(i: u64) -> String {
    let mut r = Rng(i ^ 0xD55_5EA2C4);
    let (a, b) = (r.next_u64(), r.next_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFF,
        b >> 52,
        b & 0xFFFF_FFFF_FFFF
    )
}

/// The version of synthetic bundle `i`: one per minute from 2018-01-01.
pub fn version_of(i: u64) -> String {
    let t = chrono::DateTime::from_timestamp(1_514_764_800 + (i as i64 % 1_000_000) * 60, 0).unwrap_or_default();
    crate::model::DssVersion::from_datetime(t).as_str().to_string()
}

/// Builds synthetic bundles from a template bundle's `(file name, JSON)` pairs.
pub struct Generator {
    files: Vec<(String, Value)>,
}

impl Generator {
    /// A generator over these metadata files (names as in a bundle: `donor_organism_0.json`).
    pub fn new(files: Vec<(String, Value)>) -> Self {
        Generator { files }
    }

    /// Bundle `i`: `(uuid, version, document)`, its donor, specimen and project varied.
    pub fn bundle(&self, i: u64) -> (String, String, Value) {
        let mut r = Rng(i);
        let uuid = uuid_of(i);
        let version = version_of(i);
        let (species, taxon) = *r.pick(SPECIES);
        let organ = *r.pick(ORGANS);
        let disease = *r.pick(DISEASES);
        let sex = *r.pick(SEXES);
        let smoking = if r.next_u64() % 3 == 0 { "yes" } else { "no" };
        let day = r.next_u64() % 1000;
        let date = (chrono::NaiveDate::from_ymd_opt(2017, 1, 1).unwrap_or_default() + chrono::Days::new(day))
            .format("%Y-%m-%d")
            .to_string();
        let mut files = Vec::with_capacity(self.files.len());
        let mut entries = Vec::with_capacity(self.files.len());
        for (n, (name, v)) in self.files.iter().enumerate() {
            let mut v = v.clone();
            let stem = name.split('_').next().unwrap_or_default();
            set(&mut v, &["provenance", "document_id"], json!(format!("{uuid}-{n}")));
            set(
                &mut v,
                &["provenance", "submission_date"],
                json!(format!("{date}T12:00:{:02}.000Z", n % 60)),
            );
            set(&mut v, &["biomaterial_core", "ncbi_taxon_id"], json!([taxon]));
            set(
                &mut v,
                &["biomaterial_core", "biomaterial_id"],
                json!(format!("{stem}-{i}")),
            );
            if name.starts_with("donor_organism") {
                set(&mut v, &["genus_species"], json!([{"text": species}]));
                set(&mut v, &["biological_sex"], json!(sex));
                set(&mut v, &["medical_history", "smoking_history"], json!(smoking));
                set(&mut v, &["is_living"], json!(r.next_u64() % 2 == 0));
            }
            if name.starts_with("specimen_from_organism") {
                set(&mut v, &["genus_species"], json!([{"text": species}]));
                set(&mut v, &["organ"], json!({"text": organ}));
                set(&mut v, &["disease"], json!([{"text": disease}]));
                set(&mut v, &["collection_time"], json!(date));
            }
            if name.starts_with("project") {
                set(
                    &mut v,
                    &["project_core", "project_shortname"],
                    json!(format!("project-{}", i % 97)),
                );
            }
            entries.push(BundleFile {
                name: name.clone(),
                uuid: uuid_of(i.wrapping_mul(31).wrapping_add(n as u64 + 1)),
                version: version.clone(),
                content_type: "application/json".into(),
                size: 1000,
                indexed: true,
                crc32c: "00000000".into(),
                s3_etag: "0".repeat(32),
                sha1: "0".repeat(40),
                sha256: "0".repeat(64),
            });
            files.push((name.clone(), v));
        }
        let manifest = BundleManifest::new(&version, entries, 0);
        let doc = bundle_document(&uuid, &manifest, &files).unwrap_or_else(|_| json!({"uuid": uuid}));
        (uuid, version, doc)
    }
}
