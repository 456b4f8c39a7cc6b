//! The replica set from configuration, read the same way by the backend and the edge
//! worker (each from its own variables).
//!
//! `DSS_REPLICAS` names the replicas (default `aws,gcp`). Each is stored on S3 (or any
//! S3-compatible service), on GCS, or in the data directory:
//!
//! - `aws` and `gcp` keep the original's variables: `DSS_S3_BUCKET` /
//!   `DSS_S3_CHECKOUT_BUCKET` put `aws` on S3, `DSS_GS_BUCKET` / `DSS_GS_CHECKOUT_BUCKET`
//!   put `gcp` on GCS; unset, each lives in `DATA_DIR/{name}/`.
//! - Any replica (these two included) may be set with `DSS_REPLICA_{NAME}_STORE`
//!   (`s3`, `gs` or `local`), `DSS_REPLICA_{NAME}_BUCKET` and
//!   `DSS_REPLICA_{NAME}_CHECKOUT_BUCKET` (`NAME` upper-cased, `-` as `_`).
//! - A cloud store's own variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `GOOGLE_APPLICATION_CREDENTIALS`,
//!   `GCS_ENDPOINT_URL`, …) are read as `DSS_REPLICA_{NAME}_{VARIABLE}` first, then as
//!   themselves: a third replica on MinIO gets its own endpoint and keys that way.

/// A replica setting that cannot be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReplicaConfigError(pub String);

/// Where one replica's buckets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// S3 or an S3-compatible service.
    S3,
    /// Google Cloud Storage.
    Gs,
    /// The data directory.
    Local,
}

/// One replica as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSpec {
    /// API name.
    pub name: String,
    /// Where its buckets are.
    pub kind: StoreKind,
    /// Main bucket (cloud kinds).
    pub bucket: Option<String>,
    /// Checkout bucket (cloud kinds; unset: a directory of the data dir).
    pub checkout: Option<String>,
}

impl ReplicaSpec {
    /// The prefix of this replica's own variables.
    pub fn var_prefix(&self) -> String {
        var_prefix(&self.name)
    }
}

fn var_prefix(name: &str) -> String {
    format!("DSS_REPLICA_{}_", name.to_ascii_uppercase().replace('-', "_"))
}

/// Whether `name` may name a replica: lowercase letters, digits and `-`, starting with a
/// letter, at most 32 long; not `all` (a CLI word) nor ending in `-checkout` (the
/// checkout bucket's store name).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name != "all"
        && !name.ends_with("-checkout")
}

/// The replicas that `names` (the `DSS_REPLICAS` list) and the environment `env` describe;
/// `s3`/`gs` are the original's buckets of `aws`/`gcp` (main, checkout).
pub fn specs(
    names: &[String],
    s3: (&Option<String>, &Option<String>),
    gs: (&Option<String>, &Option<String>),
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ReplicaSpec>, ReplicaConfigError> {
    if names.is_empty() {
        return Err(ReplicaConfigError("DSS_REPLICAS names no replica".into()));
    }
    let mut out: Vec<ReplicaSpec> = Vec::new();
    for name in names {
        if !valid_name(name) {
            return Err(ReplicaConfigError(format!(
                "DSS_REPLICAS: {name:?} is not a replica name (lowercase letters, digits and '-', \
                 starting with a letter, at most 32; not 'all' nor ending in '-checkout')"
            )));
        }
        if out.iter().any(|s| &s.name == name) {
            return Err(ReplicaConfigError(format!("DSS_REPLICAS names {name} twice")));
        }
        let prefix = var_prefix(name);
        let own = |v: &str| env(&format!("{prefix}{v}")).filter(|s| !s.is_empty());
        let (default_kind, bucket, checkout) = match name.as_str() {
            "aws" => (StoreKind::S3, s3.0.clone(), s3.1.clone()),
            "gcp" => (StoreKind::Gs, gs.0.clone(), gs.1.clone()),
            _ => (StoreKind::Local, None, None),
        };
        let bucket = own("BUCKET").or(bucket);
        let checkout = own("CHECKOUT_BUCKET").or(checkout);
        let kind = match own("STORE").as_deref() {
            Some("s3") => StoreKind::S3,
            Some("gs") => StoreKind::Gs,
            Some("local") => StoreKind::Local,
            Some(other) => {
                return Err(ReplicaConfigError(format!(
                    "{prefix}STORE: {other:?} is not one of s3, gs, local"
                )))
            }
            // The original's variables: a bucket puts the replica in its cloud.
            None if bucket.is_some() => default_kind,
            None => StoreKind::Local,
        };
        if kind != StoreKind::Local && bucket.is_none() {
            return Err(ReplicaConfigError(format!(
                "replica {name} is stored on {} but has no bucket: set {prefix}BUCKET",
                if kind == StoreKind::S3 { "S3" } else { "GCS" }
            )));
        }
        out.push(ReplicaSpec {
            name: name.clone(),
            kind,
            bucket: if kind == StoreKind::Local { None } else { bucket },
            checkout: if kind == StoreKind::Local { None } else { checkout },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    fn names(s: &str) -> Vec<String> {
        s.split(',').map(str::to_string).collect()
    }

    #[test]
    fn the_originals_variables_keep_working() {
        let none = None;
        let (b, c) = (Some("main".to_string()), Some("co".to_string()));
        let got = specs(&names("aws,gcp"), (&b, &c), (&none, &none), &env(&[])).expect("specs");
        assert_eq!(got[0].kind, StoreKind::S3);
        assert_eq!(got[0].bucket.as_deref(), Some("main"));
        assert_eq!(got[0].checkout.as_deref(), Some("co"));
        assert_eq!(got[1].kind, StoreKind::Local);
        assert_eq!(got[1].bucket, None);
    }

    #[test]
    fn a_third_replica_is_configuration_only() {
        let none = None;
        let e = env(&[
            ("DSS_REPLICA_MINIO_STORE", "s3"),
            ("DSS_REPLICA_MINIO_BUCKET", "dss-minio"),
            ("DSS_REPLICA_EU_WEST_STORE", "gs"),
            ("DSS_REPLICA_EU_WEST_BUCKET", "dss-eu"),
        ]);
        let got = specs(
            &names("aws,gcp,minio,eu-west,spare"),
            (&none, &none),
            (&none, &none),
            &e,
        )
        .expect("specs");
        assert_eq!(got.len(), 5);
        assert_eq!(
            (got[2].kind, got[2].bucket.as_deref()),
            (StoreKind::S3, Some("dss-minio"))
        );
        assert_eq!((got[3].kind, got[3].bucket.as_deref()), (StoreKind::Gs, Some("dss-eu")));
        assert_eq!(got[4].kind, StoreKind::Local);
        assert_eq!(got[3].var_prefix(), "DSS_REPLICA_EU_WEST_");
    }

    #[test]
    fn bad_configurations_are_refused_with_their_variable() {
        let none = None;
        let no = env(&[]);
        for bad in ["", "AWS", "all", "x-checkout", "1a", "a b", &"a".repeat(33)] {
            assert!(
                specs(&[bad.to_string()], (&none, &none), (&none, &none), &no).is_err(),
                "{bad:?}"
            );
        }
        assert!(specs(&names("aws,aws"), (&none, &none), (&none, &none), &no).is_err());
        assert!(specs(&[], (&none, &none), (&none, &none), &no).is_err());
        let e = env(&[("DSS_REPLICA_MINIO_STORE", "s3")]);
        let err = specs(&names("minio"), (&none, &none), (&none, &none), &e).expect_err("no bucket");
        assert!(err.to_string().contains("DSS_REPLICA_MINIO_BUCKET"), "{err}");
        let e = env(&[("DSS_REPLICA_MINIO_STORE", "ftp")]);
        let err = specs(&names("minio"), (&none, &none), (&none, &none), &e).expect_err("bad store");
        assert!(err.to_string().contains("DSS_REPLICA_MINIO_STORE"), "{err}");
    }
}
