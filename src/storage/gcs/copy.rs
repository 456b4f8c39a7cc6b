//! Server-side copies: `objects.rewrite`, called again with its `rewriteToken` until done
//! (large objects, or copies across locations or storage classes, take several calls).

use super::upload::resource_json;
use super::*;

/// A rewrite that needs more calls than this is abandoned.
const MAX_REWRITE_CALLS: u32 = 10_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RewriteResponse {
    #[serde(default)]
    done: bool,
    #[serde(default)]
    rewrite_token: Option<String>,
}

impl<H: HttpClient, T: Sleeper> GcsStore<H, T> {
    /// `objects.rewrite` from `src_bucket/src_key` to `dst_key` here, following rewrite
    /// tokens. `resource` replaces the destination's object resource (content type,
    /// metadata); without it the source's are kept.
    pub(super) async fn rewrite(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_key: &str,
        if_absent: bool,
        resource: Option<String>,
    ) -> StoreResult<()> {
        let base = format!(
            "{}/storage/v1/b/{}/o/{}/rewriteTo/b/{}/o/{}",
            self.endpoint,
            enc(src_bucket),
            enc(src_key),
            enc(&self.bucket),
            enc(dst_key)
        );
        let mut token: Option<String> = None;
        for _ in 0..MAX_REWRITE_CALLS {
            let mut params = Vec::new();
            if if_absent {
                params.push("ifGenerationMatch=0".to_string());
            }
            if let Some(t) = &token {
                params.push(format!("rewriteToken={}", enc(t)));
            }
            let url = if params.is_empty() {
                base.clone()
            } else {
                format!("{base}?{}", params.join("&"))
            };
            let mut req = Req::new(Method::POST, url);
            if let Some(r) = &resource {
                req = req.header(header::CONTENT_TYPE, "application/json")?.body(r.clone());
            }
            let resp = self.call(&req).await?;
            if !resp.status().is_success() {
                // 404 may be either object: report the one the caller asked about.
                let key = if resp.status() == StatusCode::NOT_FOUND {
                    src_key
                } else {
                    dst_key
                };
                return Err(status_error(key, resp.status(), resp.body()));
            }
            let r: RewriteResponse = serde_json::from_slice(resp.body())
                .map_err(|e| StoreError::Other(format!("rewrite of {src_key}: {e}")))?;
            if r.done {
                return Ok(());
            }
            token = r.rewrite_token.filter(|t| !t.is_empty());
            if token.is_none() {
                return Err(StoreError::Other(format!(
                    "rewrite of {src_key}: not done and no token"
                )));
            }
        }
        Err(StoreError::Unavailable(format!("rewrite of {src_key} did not finish")))
    }

    /// `copy_from`: `src_key` of `src`'s bucket to `dst_key` here, with `opts` (the keys
    /// are checked by the caller).
    pub(super) async fn copy_across(
        &self,
        src: &Self,
        src_key: &str,
        dst_key: &str,
        opts: PutOptions,
    ) -> StoreResult<()> {
        if opts.if_absent {
            self.refuse_existing(dst_key).await?;
        }
        // Without overrides the rewrite keeps the source's content type and metadata.
        // With one, the destination resource is spelled out whole, the rest from the source.
        let resource = if opts.content_type.is_some() || !opts.metadata.is_empty() || opts.expiring {
            let m = src.head(src_key).await?;
            let ct = opts.content_type.or(m.content_type);
            let md = if opts.metadata.is_empty() {
                m.metadata
            } else {
                opts.metadata
            };
            Some(resource_json(None, ct.as_deref(), &md, opts.expiring))
        } else {
            None
        };
        self.rewrite(&src.bucket, src_key, dst_key, opts.if_absent, resource)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[tokio::test]
    async fn rewrites_follow_their_tokens_and_spell_out_overrides() {
        let fake = Fake::new(|s| {
            if s.method == Method::GET {
                return reply(200, object_json(3));
            }
            if s.url.contains("rewriteToken=t%2F2") {
                return reply(200, r#"{"done": true}"#);
            }
            reply(200, r#"{"done": false, "rewriteToken": "t/2"}"#)
        });
        let (s, _) = store(&fake, None, Arc::new(ManualClock::at(t0())));
        s.copy("files/a", "files/b").await.unwrap();
        {
            let seen = fake.seen.lock().unwrap();
            let base = "https://gcs.example/storage/v1/b/bkt/o/files%2Fa/rewriteTo/b/bkt/o/files%2Fb";
            let urls: Vec<&str> = seen.iter().map(|s| s.url.as_str()).collect();
            assert_eq!(urls, [base.to_string(), format!("{base}?rewriteToken=t%2F2")]);
            assert!(seen.iter().all(|s| s.body.is_empty()), "no overrides, no resource");
        }

        // Create-only with a new content type: the destination is checked first (found, so
        // refused) ...
        let opts = PutOptions {
            if_absent: true,
            content_type: Some("text/plain".into()),
            metadata: BTreeMap::new(),
            expiring: false,
        };
        assert!(matches!(
            s.copy_from(&s, "files/a", "files/b", opts.clone()).await,
            Err(StoreError::AlreadyExists(_))
        ));
        // ... and an overwrite spells out the resource: the new type, the source's metadata.
        let before = fake.count(|_| true);
        let opts = PutOptions {
            if_absent: false,
            ..opts
        };
        s.copy_from(&s, "files/a", "files/c", opts).await.unwrap();
        let seen = fake.seen.lock().unwrap();
        let post = &seen[before + 1];
        assert_eq!(post.method, Method::POST);
        let resource: serde_json::Value = serde_json::from_slice(&post.body).unwrap();
        assert_eq!(
            resource,
            serde_json::json!({"contentType": "text/plain", "metadata": {"hca-dss-sha256": "abc"}})
        );
    }
}
