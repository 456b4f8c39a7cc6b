//! Search from the command line, against the real binary: `dss reindex` rebuilds the
//! index from a bucket written by the original, and the unmodified `hca` CLI's
//! `post-search` finds a bundle uploaded through the API.

mod common;
use common::binary::{self, hca_bin, Server};
use common::fixtures;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn dss() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dss"));
    c.env("RUST_LOG", "warn").env_remove("DSS_ES_ENDPOINT");
    c
}

fn start(data: &Path) -> Server {
    binary::start_dss(data, |_| {})
}

fn search(http: &reqwest::blocking::Client, url: &str, q: Value) -> Value {
    let r = http
        .post(format!("{url}/v1/search?replica=aws"))
        .json(&json!({ "es_query": q }))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().unwrap()
}

#[test]
fn reindex_from_the_bucket_and_hca_post_search() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::copy_tree(&fixtures().join("original-bucket"), &data.join("aws/main"));

    // Rebuild from the original's objects: six bundle versions, three under tombstones.
    let out = dss()
        .args(["reindex", "--replica", "aws"])
        .env("DSS_DATA_DIR", &data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("aws: reindexed 6 bundles (6 documents)"), "{stdout}");
    assert!(
        stderr.contains("aws: 6 bundles, 6 documents indexed"),
        "progress: {stderr}"
    );

    let server = start(&data);
    let http = reqwest::blocking::Client::new();
    let all = search(&http, &server.url, json!({}));
    assert_eq!(all["total_hits"], 6);
    let dead = search(&http, &server.url, json!({"query": {"term": {"reason": "test"}}}));
    let mut ids: Vec<&str> = dead["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["bundle_fqid"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![
            "deadbeef-0000-4a6b-8f0d-a7d2105c23be.2017-12-05T235728.441373Z",
            "deadbeef-0000-4a6b-8f0d-a7d2105c23be.2017-12-05T235850.950361Z",
            "deadbeef-0001-4a6b-8f0d-a7d2105c23be.2017-12-05T235850.950361Z",
        ]
    );

    // Upload the example bundle through the API (files staged with `dss stage`).
    let token = String::from_utf8(
        dss()
            .args(["token", "--email", "me@example.org"])
            .env("DSS_DATA_DIR", &data)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let dir = fixtures().join("example_bundle");
    let version = "2018-07-23T000000.000000Z";
    let mut files = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let out = dss().arg("stage").arg(&p).env("DSS_DATA_DIR", &data).output().unwrap();
        let line = String::from_utf8(out.stdout).unwrap();
        let (fu, src) = line.trim().split_once(' ').unwrap();
        let r = http
            .put(format!("{}/v1/files/{fu}?version={version}", server.url))
            .bearer_auth(token.trim())
            .json(&json!({"source_url": src, "creator_uid": 0}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        let name = p.file_name().unwrap().to_str().unwrap();
        files.push(json!({"uuid": fu, "version": version, "name": name, "indexed": true}));
    }
    let bundle = "0b1d5e7a-0000-4000-8000-00000000abcd";
    let r = http
        .put(format!(
            "{}/v1/bundles/{bundle}?version={version}&replica=aws",
            server.url
        ))
        .bearer_auth(token.trim())
        .json(&json!({"creator_uid": 0, "files": files}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let query = json!({"query": {"bool": {"must": [
        {"match": {"files.donor_organism_json.medical_history.smoking_history": "yes"}},
        {"match": {"files.specimen_from_organism_json.genus_species.text": "Homo sapiens"}},
        {"match": {"files.specimen_from_organism_json.organ.text": "brain"}}]}}});
    let fqid = format!("{bundle}.{version}");
    let mut found = false;
    for _ in 0..100 {
        if search(&http, &server.url, query.clone())["total_hits"] == 1 {
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(found, "indexed within 10 s of the PUT");

    // The unmodified CLI, pointed at a copy of the server's spec that names the http server.
    let mut spec: Value = reqwest::blocking::get(format!("{}/v1/swagger.json", server.url))
        .unwrap()
        .json()
        .unwrap();
    spec["openapi"] = json!("3.0.0");
    spec["servers"] = json!([{"url": format!("{}/v1", server.url)}]);
    let spec_path = tmp.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let swagger_url = format!("{}/v1/swagger.json", server.url);
    let cfg = json!({"swagger_filename": spec_path, "DSSClient": {"swagger_url": swagger_url},
        "AuthClient": {"swagger_url": swagger_url}});
    let cfg_path = tmp.path().join("hca-config.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let xdg = tmp.path().join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    let out = Command::new(hca_bin())
        .args([
            "dss",
            "post-search",
            "--replica",
            "aws",
            "--es-query",
            &query.to_string(),
        ])
        .env("HCA_CONFIG_FILE", &cfg_path)
        .env("XDG_CONFIG_HOME", &xdg)
        .env("OAUTHLIB_INSECURE_TRANSPORT", "1")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hca post-search failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{answer}");
    assert_eq!(results[0]["bundle_fqid"], fqid.as_str());
    assert_eq!(answer["total_hits"], 1);
}
