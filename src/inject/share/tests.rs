//! The share's policy through dav-server's handler: reads and writes
//! inside the folder work, nothing outside is reached, read-only shares
//! change nothing, an interrupted PUT leaves nothing behind.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request};

use super::*;

struct Bed {
    _tmp: tempfile::TempDir,
    share: PathBuf,
    outside: PathBuf,
}

/// `share/` with `hello.txt`, `sub/inner.txt`, a symlink `out` to the
/// sibling folder `outside/` (holding `secret.txt`) and a symlink
/// `secret-link` to that file.
fn bed() -> Bed {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(share.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(share.join("hello.txt"), b"hello from the share\n").unwrap();
    std::fs::write(share.join("sub/inner.txt"), b"inner").unwrap();
    std::fs::write(outside.join("secret.txt"), b"SECRET").unwrap();
    std::os::unix::fs::symlink(&outside, share.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), share.join("secret-link")).unwrap();
    Bed { _tmp: tmp, share, outside }
}

/// Every file under `dir` (symlinks not followed) with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_symlink() {
                out.insert(e.path(), std::fs::read_link(e.path()).unwrap().into_os_string().into_encoded_bytes());
            } else {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

async fn call(h: &DavHandler, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut req = Request::builder().method(Method::from_bytes(method.as_bytes()).unwrap()).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = h.handle(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap()).await;
    let status = resp.status().as_u16();
    let body = BodyExt::collect(resp.into_body()).await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    (status, body)
}

fn handler(b: &Bed, read_only: bool) -> DavHandler {
    ShareConfig { dir: b.share.clone(), read_only, password: None }.handler().unwrap()
}

#[tokio::test]
async fn reads_and_writes_inside_the_folder_work() {
    let b = bed();
    let h = handler(&b, false);
    let (s, body) = call(&h, "GET", "/hello.txt", &[], b"").await;
    assert_eq!((s, body.as_slice()), (200, &b"hello from the share\n"[..]));
    let (s, body) = call(&h, "PROPFIND", "/", &[("Depth", "1")], b"").await;
    let listing = String::from_utf8_lossy(&body);
    assert_eq!(s, 207, "{listing}");
    assert!(listing.contains("hello.txt") && listing.contains("sub/"), "{listing}");
    assert!(!listing.contains("out") && !listing.contains("secret"), "links outside are not listed: {listing}");
    let (s, _) = call(&h, "PUT", "/new.txt", &[], b"new bytes").await;
    assert_eq!(s, 201);
    assert_eq!(std::fs::read(b.share.join("new.txt")).unwrap(), b"new bytes");
    let (s, _) = call(&h, "PUT", "/new.txt", &[], b"replaced").await;
    assert_eq!(s, 204);
    assert_eq!(std::fs::read(b.share.join("new.txt")).unwrap(), b"replaced");
    assert_eq!(call(&h, "MKCOL", "/made", &[], b"").await.0, 201);
    let dest = [("Destination", "http://localhost/made/moved.txt")];
    assert_eq!(call(&h, "MOVE", "/new.txt", &dest, b"").await.0, 201);
    assert_eq!(std::fs::read(b.share.join("made/moved.txt")).unwrap(), b"replaced");
    assert_eq!(call(&h, "DELETE", "/made/moved.txt", &[], b"").await.0, 204);
    let names: Vec<_> = std::fs::read_dir(&b.share).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!names.iter().any(|n| n.to_string_lossy().starts_with(TEMP_PREFIX)), "{names:?}");
}

#[tokio::test]
async fn nothing_outside_the_folder_is_read_listed_or_written() {
    let b = bed();
    let h = handler(&b, false);
    let before_outside = tree(&b.outside);
    let parent = b.share.parent().unwrap().to_path_buf();
    let before_parent: Vec<_> = std::fs::read_dir(&parent).unwrap().map(|e| e.unwrap().file_name()).collect();
    for uri in [
        "/../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E/outside/secret.txt",
        "/sub/../../outside/secret.txt",
        "/..%2foutside%2fsecret.txt",
        "/out/secret.txt",
        "/secret-link",
        "/out/",
    ] {
        for method in ["GET", "PROPFIND"] {
            let (s, body) = call(&h, method, uri, &[("Depth", "1")], b"").await;
            assert!(!(200..300).contains(&s), "{method} {uri}: {s}");
            assert!(!String::from_utf8_lossy(&body).contains("SECRET"), "{method} {uri}");
        }
    }
    for uri in ["/../escaped.txt", "/%2e%2e/escaped.txt", "/out/escaped.txt", "/out/sub/escaped.txt"] {
        let (s, _) = call(&h, "PUT", uri, &[], b"escaped").await;
        assert!(!(200..300).contains(&s), "PUT {uri}: {s}");
        assert!(call(&h, "MKCOL", &uri.replace(".txt", ""), &[], b"").await.0 >= 400, "MKCOL {uri}");
    }
    // Copy and move out of the folder, or of the secret into it.
    let out_dest = [("Destination", "http://localhost/out/copied.txt")];
    assert!(call(&h, "COPY", "/hello.txt", &out_dest, b"").await.0 >= 400);
    let in_dest = [("Destination", "http://localhost/stolen.txt")];
    assert!(call(&h, "COPY", "/out/secret.txt", &in_dest, b"").await.0 >= 400);
    assert!(call(&h, "MOVE", "/secret-link", &in_dest, b"").await.0 >= 400);
    assert!(call(&h, "DELETE", "/out/secret.txt", &[], b"").await.0 >= 400);
    assert!(!b.share.join("stolen.txt").exists());
    assert_eq!(tree(&b.outside), before_outside, "the outside folder is unchanged");
    let after_parent: Vec<_> = std::fs::read_dir(&parent).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(after_parent, before_parent, "nothing created next to the share");
}

#[tokio::test]
async fn a_read_only_share_changes_nothing() {
    let b = bed();
    let h = handler(&b, true);
    let before = tree(&b.share);
    assert_eq!(call(&h, "GET", "/hello.txt", &[], b"").await.0, 200);
    assert_eq!(call(&h, "PROPFIND", "/", &[("Depth", "1")], b"").await.0, 207);
    assert_eq!(call(&h, "OPTIONS", "/", &[], b"").await.0, 200);
    assert_eq!(call(&h, "HEAD", "/hello.txt", &[], b"").await.0, 200);
    let dest = [("Destination", "http://localhost/moved.txt")];
    for (method, uri, headers) in [
        ("PUT", "/hello.txt", &[][..]),
        ("PUT", "/new.txt", &[][..]),
        ("MKCOL", "/dir", &[][..]),
        ("DELETE", "/hello.txt", &[][..]),
        ("MOVE", "/hello.txt", &dest[..]),
        ("COPY", "/hello.txt", &dest[..]),
        ("PROPPATCH", "/hello.txt", &[][..]),
        ("LOCK", "/hello.txt", &[][..]),
    ] {
        let (s, _) = call(&h, method, uri, headers, b"x").await;
        assert!(s == 403 || s == 405, "{method} {uri}: {s}");
    }
    assert_eq!(tree(&b.share), before);
}

#[tokio::test]
async fn an_interrupted_put_leaves_nothing_behind() {
    let b = bed();
    let h = handler(&b, false);
    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
        Ok(Frame::data(Bytes::from_static(b"the first part of a body"))),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "guest went away")),
    ];
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let req = Request::builder().method("PUT").uri("/partial.txt").body(body).unwrap();
    let status = h.handle(req).await.status().as_u16();
    assert!(status >= 400, "{status}");
    let names: Vec<_> = std::fs::read_dir(&b.share).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!b.share.join("partial.txt").exists(), "{names:?}");
    assert!(!names.iter().any(|n| n.to_string_lossy().starts_with(TEMP_PREFIX)), "{names:?}");
    // And replacing an existing file keeps the old bytes until the end.
    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> =
        vec![Ok(Frame::data(Bytes::from_static(b"new"))), Err(std::io::Error::other("cut"))];
    let req = Request::builder()
        .method("PUT")
        .uri("/hello.txt")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    assert!(h.handle(req).await.status().as_u16() >= 400);
    assert_eq!(std::fs::read(b.share.join("hello.txt")).unwrap(), b"hello from the share\n");
    // Temporary names cannot be reached.
    assert!(call(&h, "GET", &format!("/{TEMP_PREFIX}0000000000000000"), &[], b"").await.0 >= 400);
    assert!(call(&h, "PUT", "/x.txt", &[("Content-Range", "bytes 0-0/1")], b"x").await.0 >= 400);
}
