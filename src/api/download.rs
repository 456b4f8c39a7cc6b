//! `GET /blob/{store}/{key}?expires&sig`: serves a blob of a local replica to the
//! holder of a URL signed by [`crate::storage::signer::Signer`] (the local stand-in
//! for an S3/GCS presigned URL), with `Range` support.

use super::*;
use crate::storage::{ByteRange, StoreError};

/// Parse a single-range `Range` header. Anything else (multiple ranges, other units,
/// junk) is ignored and the whole object served, as RFC 9110 allows.
pub fn parse_range(h: Option<&str>) -> Option<ByteRange> {
    let spec = h?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), b.is_empty()) {
        (true, false) => b.parse().ok().map(ByteRange::Suffix),
        (false, true) => a.parse().ok().map(ByteRange::From),
        (false, false) => match (a.parse(), b.parse()) {
            (Ok(x), Ok(y)) if x <= y => Some(ByteRange::FromTo(x, y)),
            _ => None,
        },
        (true, true) => None,
    }
}

/// Serve a signed download.
pub async fn serve<S: Store, H: HttpClient, T: Sleeper>(
    app: &App<S, H, T>,
    ctx: &Ctx<'_>,
) -> Result<Response, ApiError> {
    let signer = app
        .signer
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("no local downloads on this server".into()))?;
    let raw_query = ctx.query.encode();
    let grant = signer
        .verify(ctx.path, &raw_query)
        .map_err(|e| ApiError::BadDownloadUrl(e.to_string()))?;
    // Local stores are named after their replica, and `{replica}-checkout`.
    let name = grant.store.as_str();
    let store = app
        .replicas
        .iter()
        .find_map(|r| {
            if r.name == name {
                Some(&r.main)
            } else {
                name.strip_suffix("-checkout")
                    .filter(|n| *n == r.name)
                    .map(|_| &r.checkout)
            }
        })
        .ok_or_else(|| ApiError::NotFound(format!("no store {name}")))?;
    let range = parse_range(ctx.header("range"));
    let (meta, (start, end), stream) = match store.get_range(&grant.key, range).await {
        Ok(v) => v,
        Err(StoreError::NotFound(_)) => return Err(ApiError::NotFound("Cannot find file!".into())),
        Err(StoreError::RangeNotSatisfiable) => {
            let size = store.head(&grant.key).await.map(|m| m.size).unwrap_or(0);
            return Err(ApiError::RangeNotSatisfiable(size));
        }
        Err(e) => return Err(e.into()),
    };
    let mut r = http::Response::new(Body::Stream(stream));
    if range.is_some() {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        set_header(
            &mut r,
            "content-range",
            &format!("bytes {}-{}/{}", start, end.saturating_sub(1), meta.size),
        );
    }
    set_header(&mut r, "content-length", &(end - start).to_string());
    set_header(&mut r, "accept-ranges", "bytes");
    let ct = grant
        .content_type
        .or(meta.content_type)
        .unwrap_or_else(|| "application/octet-stream".into());
    set_header(&mut r, "content-type", &ct);
    // Uploaded bytes are served from the API's own origin: never let a browser run them
    // (stored XSS). Downloaded as a file unless the URL asked for another disposition;
    // no type sniffing; and a sandbox even if a page is opened inline.
    let disposition = grant.content_disposition.unwrap_or_else(|| "attachment".into());
    set_header(&mut r, "content-disposition", &disposition);
    set_header(&mut r, "x-content-type-options", "nosniff");
    set_header(&mut r, "content-security-policy", "sandbox");
    // Blob keys are content addresses: the bytes behind a URL never change.
    set_header(&mut r, "cache-control", "private, max-age=3600, immutable");
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(Some("bytes=0-")), Some(ByteRange::From(0)));
        assert_eq!(parse_range(Some("bytes=5-9")), Some(ByteRange::FromTo(5, 9)));
        assert_eq!(parse_range(Some("bytes=-3")), Some(ByteRange::Suffix(3)));
        for junk in ["bytes=9-5", "bytes=0-1,3-4", "items=0-1", "bytes=-", "bytes=a-b", ""] {
            assert_eq!(parse_range(Some(junk)), None, "{junk}");
        }
    }
}
