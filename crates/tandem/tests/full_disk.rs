//! The real binary on a real full disk (a small tmpfs): writes fail,
//! `/healthz` answers 503 with the reason (GET and HEAD), reads keep
//! working, new WebSocket joins are refused with 1013 (try again later),
//! and once space is freed the server recovers by itself with
//! every acknowledged write there. Skipped where mounting is not permitted.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio_tungstenite::tungstenite::{self, Message, stream::MaybeTlsStream};

use common::{TIMEOUT, start, wait_for};

struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn full_disk_turns_healthz_503_and_the_server_recovers_without_restart() {
    let mount = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(mount.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and mount permission)");
        return;
    }
    let _unmount = Unmount(mount.path());
    let server = start(&mount.path().join("data"), &[]);
    assert_eq!(server.request("GET", "/healthz", b"").unwrap().0, 200);

    let filler = mount.path().join("filler");
    let mut fill = std::fs::File::create(&filler).unwrap();
    while std::io::Write::write_all(&mut fill, &[0u8; 1 << 20]).is_ok() {}
    fill.set_len(fill.metadata().unwrap().len().saturating_sub(2 << 20))
        .unwrap();
    drop(fill);

    let body = "p".repeat(8000);
    let mut acked = Vec::new();
    let refused = wait_for(TIMEOUT, || {
        let doc = format!("doc-{}", acked.len());
        let (status, _) = server
            .request("PUT", &format!("/api/docs/{doc}/text"), body.as_bytes())
            .unwrap();
        if status == 204 {
            acked.push(doc);
            None
        } else {
            Some(status)
        }
    })
    .expect("the disk never filled");
    assert_eq!(refused / 100, 5, "a write on a full disk fails");

    let (status, reason) = server.request("GET", "/healthz", b"").unwrap();
    let reason = String::from_utf8_lossy(&reason).into_owned();
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("store cannot write"), "{reason}");
    assert_eq!(server.request("HEAD", "/healthz", b"").unwrap().0, 503);
    assert_eq!(
        join_close_code(server.addr, "joiner"),
        Some(1013),
        "a join while the store cannot write is told to try later"
    );

    std::fs::remove_file(&filler).unwrap();
    let healthy = wait_for(TIMEOUT, || {
        (server.request("GET", "/healthz", b"").ok()?.0 == 200).then_some(())
    });
    assert!(healthy.is_some(), "/healthz never recovered");
    let (status, _) = server
        .request("PUT", "/api/docs/after/text", b"recovered")
        .unwrap();
    assert_eq!(status, 204, "writes work again without a restart");
    assert_eq!(
        join_close_code(server.addr, "joiner"),
        None,
        "joins are admitted again once the store recovered"
    );
    for doc in &acked {
        let (status, got) = server
            .request("GET", &format!("/api/docs/{doc}/text"), b"")
            .unwrap();
        assert_eq!((status, got.len()), (200, body.len()), "acknowledged {doc}");
    }
}

/// Joins `doc` over a real WebSocket; the close code the server sends
/// within 5 s, or `None` if it keeps the connection open (admitted).
fn join_close_code(addr: SocketAddr, doc: &str) -> Option<u16> {
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/ws/{doc}")).unwrap();
    if let MaybeTlsStream::Plain(tcp) = ws.get_mut() {
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => return Some(frame.code.into()),
            Ok(Message::Close(None)) => return Some(1005),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(e) => panic!("joining {doc}: {e}"),
        }
    }
}
