//! `GET /api/docs` pages with `?limit=&after=&prefix=` and a `Link` cursor,
//! refuses limits outside 1..=1000, and `tandem list` pages the same way.

mod common;

use std::process::Command;

use common::start;

fn ids(body: &[u8]) -> Vec<String> {
    let rows: serde_json::Value = serde_json::from_slice(body).expect("JSON array");
    rows.as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn docs_listing_pages_follow_the_link_cursor_and_filter_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, &[]);
    for name in ["a-1", "a-2", "a-3", "b-1", "b-2"] {
        let (status, _) = server
            .request("PUT", &format!("/api/docs/{name}/text"), name.as_bytes())
            .unwrap();
        assert_eq!(status, 204);
    }
    let mut path = "/api/docs?limit=2".to_string();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = server.exchange("GET", &path, b"").unwrap();
        assert_eq!(page.status, 200, "{path}");
        let page_ids = ids(&page.body);
        assert!(page_ids.len() <= 2);
        seen.extend(page_ids);
        pages += 1;
        match page.header("link") {
            Some(link) => {
                let url = link.trim_start_matches('<');
                path = url[..url.find('>').expect("link target")].to_string();
                assert!(link.ends_with("rel=\"next\""), "{link}");
            }
            None => break,
        }
    }
    assert_eq!(seen, ["a-1", "a-2", "a-3", "b-1", "b-2"]);
    assert_eq!(pages, 3);

    let page = server.exchange("GET", "/api/docs?prefix=b-", b"").unwrap();
    assert_eq!(ids(&page.body), ["b-1", "b-2"]);
    assert!(page.header("link").is_none());
    let page = server.exchange("GET", "/api/docs?after=a-3", b"").unwrap();
    assert_eq!(ids(&page.body), ["b-1", "b-2"]);
    for bad in ["limit=0", "limit=1001", "after=no%2Fslash", "prefix=a/b"] {
        let page = server
            .exchange("GET", &format!("/api/docs?{bad}"), b"")
            .unwrap();
        assert_eq!(page.status, 400, "{bad}");
    }
    drop(server);

    let list = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("list")
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let names: Vec<String> = stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        (names, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // The killed server's lock went with its process.
    let (names, _) = list(&[]);
    assert_eq!(names, ["a-1", "a-2", "a-3", "b-1", "b-2"]);
    let (names, more) = list(&["--limit", "2", "--after", "a-1"]);
    assert_eq!(names, ["a-2", "a-3"]);
    assert!(more.contains("tandem list --after a-3"), "{more}");
    assert_eq!(list(&["--prefix", "b"]).0, ["b-1", "b-2"]);
}
