//! The app's static files, from one directory (`CAREMESH_WEB_ROOT`).
//!
//! - A path maps to a file under the root only if every segment (after percent-decoding) is a
//!   plain name: `..`, `.`, backslashes, NUL and other control characters are refused with 400,
//!   names starting with `.` (dotfiles) are 404, and the resolved file (symlinks followed) must
//!   still lie inside the root, else 404. Nothing outside the root is ever read.
//! - `/` and app routes (a path whose last segment has no extension, e.g. `/inbox/42`) that are no
//!   file get `index.html`; a missing file with an extension is 404.
//! - Content types by extension; caching: `/assets/*` (hashed file names) is
//!   `public, max-age=31536000, immutable`, everything else (`index.html`, the service worker,
//!   the manifest) `no-cache`.
//! - Files are streamed, never read whole into memory.
//! - If the root does not exist, a small built-in page (no script, no style: it passes the CSP)
//!   says the app is not built and how to build it.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures::TryStreamExt;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{Full, StreamBody};
use tonic::body::Body;

/// The page served when the app is not built.
pub const NOT_BUILT_PAGE: &str = "<!doctype html>
<html lang=\"en\">
<head><meta charset=\"utf-8\"><title>caremesh: web app not built</title></head>
<body>
<h1>The caremesh web app is not built</h1>
<p>This is the caremesh web origin. The gRPC-Web endpoints are up, but the app's files are not
in the web root (<code>CAREMESH_WEB_ROOT</code>, default <code>web/dist</code> relative to the
directory <code>caremesh</code> runs in).</p>
<p>Build it with <code>npm --prefix web ci &amp;&amp; npm --prefix web run build</code>, or
point <code>CAREMESH_WEB_ROOT</code> at a built copy, then reload this page.</p>
</body>
</html>
";

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const NO_CACHE: &str = "no-cache";

/// The static side of the origin.
#[derive(Debug)]
pub struct StaticFiles {
    /// The root, canonicalized; `None` if it does not exist.
    root: Option<PathBuf>,
}

/// Why a path does not map to a file.
#[derive(Debug, PartialEq, Eq)]
enum Rejected {
    /// Traversal or otherwise malformed: 400.
    BadPath,
    /// Hidden: 404.
    Hidden,
}

impl StaticFiles {
    pub fn new(root: &Path) -> Self {
        Self {
            root: std::fs::canonicalize(root).ok().filter(|root| root.is_dir()),
        }
    }

    /// Whether the app's directory exists.
    pub fn is_built(&self) -> bool {
        self.root.is_some()
    }

    /// Answers a GET or HEAD of `path`.
    pub async fn respond(&self, method: &Method, path: &str) -> Response<Body> {
        let head = method == Method::HEAD;
        let segments = match segments(path) {
            Ok(segments) => segments,
            Err(Rejected::BadPath) => return text(StatusCode::BAD_REQUEST, "bad path\n", head),
            Err(Rejected::Hidden) => return text(StatusCode::NOT_FOUND, "not found\n", head),
        };
        let is_asset = segments.first().is_some_and(|first| first == "assets");
        let is_route = segments.last().is_none_or(|last| !last.contains('.'));
        let Some(root) = &self.root else {
            return if is_route && !is_asset {
                let mut response = bytes(StatusCode::OK, Bytes::from_static(NOT_BUILT_PAGE.as_bytes()), head);
                set(&mut response, header::CONTENT_TYPE, "text/html; charset=utf-8");
                set(&mut response, header::CACHE_CONTROL, NO_CACHE);
                response
            } else {
                text(StatusCode::NOT_FOUND, "not found\n", head)
            };
        };
        let mut candidate = root.clone();
        candidate.extend(&segments);
        if let Some(response) = file(root, &candidate, is_asset, head).await {
            return response;
        }
        if is_route
            && !is_asset
            && let Some(response) = file(root, &root.join("index.html"), false, head).await
        {
            return response;
        }
        text(StatusCode::NOT_FOUND, "not found\n", head)
    }
}

/// The decoded segments of `path`, each a plain file name.
fn segments(path: &str) -> Result<Vec<String>, Rejected> {
    let mut out = Vec::new();
    for raw in path.split('/').filter(|segment| !segment.is_empty()) {
        let segment = percent_decode(raw).ok_or(Rejected::BadPath)?;
        if segment == "." || segment == ".." {
            return Err(Rejected::BadPath);
        }
        if segment
            .chars()
            .any(|character| character == '/' || character == '\\' || character == ':' || character.is_control())
        {
            return Err(Rejected::BadPath);
        }
        // What the platform makes of it must be one normal component.
        let mut components = Path::new(&segment).components();
        if !matches!(
            (components.next(), components.next()),
            (Some(Component::Normal(_)), None)
        ) {
            return Err(Rejected::BadPath);
        }
        if segment.starts_with('.') {
            return Err(Rejected::Hidden);
        }
        out.push(segment);
    }
    Ok(out)
}

/// `%XX` decoding; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let high = bytes.get(index + 1).and_then(|digit| (*digit as char).to_digit(16))?;
            let low = bytes.get(index + 2).and_then(|digit| (*digit as char).to_digit(16))?;
            out.push(u8::try_from(high * 16 + low).ok()?);
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The file at `candidate` if it is a regular file inside `root` (after resolving symlinks).
async fn file(root: &Path, candidate: &Path, is_asset: bool, head: bool) -> Option<Response<Body>> {
    let resolved = tokio::fs::canonicalize(candidate).await.ok()?;
    if !resolved.starts_with(root) {
        return None;
    }
    let file = tokio::fs::File::open(&resolved).await.ok()?;
    let metadata = file.metadata().await.ok()?;
    if !metadata.is_file() {
        return None;
    }
    let body = if head {
        Body::empty()
    } else {
        let stream = tokio_util::io::ReaderStream::new(file).map_ok(http_body::Frame::data);
        Body::new(StreamBody::new(stream))
    };
    let mut response = Response::new(body);
    set(&mut response, header::CONTENT_TYPE, content_type(&resolved));
    set(
        &mut response,
        header::CACHE_CONTROL,
        if is_asset { IMMUTABLE } else { NO_CACHE },
    );
    if let Ok(length) = HeaderValue::try_from(metadata.len().to_string()) {
        response.headers_mut().insert(header::CONTENT_LENGTH, length);
    }
    Some(response)
}

/// The content type of a file, by its extension.
pub fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("wasm") => "application/wasm",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("avif") => "image/avif",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("ttf") => "font/ttf",
        Some("txt") => "text/plain; charset=utf-8",
        Some("xml") => "application/xml",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

fn set(response: &mut Response<Body>, name: header::HeaderName, value: &'static str) {
    response.headers_mut().insert(name, HeaderValue::from_static(value));
}

fn bytes(status: StatusCode, content: Bytes, head: bool) -> Response<Body> {
    let length = content.len();
    let body = if head {
        Body::empty()
    } else {
        Body::new(Full::new(content))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(length) = HeaderValue::try_from(length.to_string()) {
        response.headers_mut().insert(header::CONTENT_LENGTH, length);
    }
    response
}

fn text(status: StatusCode, content: &'static str, head: bool) -> Response<Body> {
    let mut response = bytes(status, Bytes::from_static(content.as_bytes()), head);
    set(&mut response, header::CONTENT_TYPE, "text/plain; charset=utf-8");
    set(&mut response, header::CACHE_CONTROL, NO_CACHE);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_hidden_files_are_refused() {
        for bad in [
            "/../etc/passwd",
            "/assets/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/a/%2e%2e/%2e%2e/b",
            "/..%5c..%5cwindows",
            "/a%00b",
            "/%zz",
            "/%c0%ae%c0%ae/x",
            "/c:/x",
            "/./index.html",
        ] {
            assert_eq!(segments(bad), Err(Rejected::BadPath), "{bad}");
        }
        assert_eq!(segments("/.env"), Err(Rejected::Hidden));
        assert_eq!(segments("/.git/config"), Err(Rejected::Hidden));
        assert_eq!(
            segments("/assets//app-1a2b.js"),
            Ok(vec!["assets".to_owned(), "app-1a2b.js".to_owned()])
        );
        assert_eq!(segments("/"), Ok(Vec::new()));
        assert_eq!(segments("/a%20b.txt"), Ok(vec!["a b.txt".to_owned()]));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("a/index.html")), "text/html; charset=utf-8");
        assert_eq!(content_type(Path::new("app.JS")), "text/javascript; charset=utf-8");
        assert_eq!(content_type(Path::new("m.webmanifest")), "application/manifest+json");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}
