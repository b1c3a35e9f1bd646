//! Starting, stopping and inspecting a real `tandem serve` process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::TIMEOUT;

/// A running `tandem serve` on 127.0.0.1 with its own data directory.
pub struct TestServer {
    child: Option<Child>,
    /// Address it listens on.
    pub addr: SocketAddr,
    /// Data directory (kept across restarts).
    data: TempDir,
    /// Extra flags it was started with (reused on restart).
    args: Vec<String>,
    /// Server log (stderr), for assertions on log lines.
    log_path: PathBuf,
}

/// The `tandem` binary: `TANDEM_BIN`, else `$CARGO_TARGET_DIR/debug/tandem`,
/// else `<workspace>/target/debug/tandem`.
pub fn tandem_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("TANDEM_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/tandem");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --workspace --bins` first or set TANDEM_BIN",
        bin.display()
    );
    bin
}

impl TestServer {
    /// Starts a server with test-friendly defaults and `extra` flags.
    pub fn start(extra: &[&str]) -> TestServer {
        let data = tempfile::tempdir().expect("temp dir");
        let args = extra.iter().map(|s| s.to_string()).collect();
        let log_path = data.path().join("server.log");
        let mut server = TestServer {
            child: None,
            addr: "127.0.0.1:0".parse().expect("addr"),
            data,
            args,
            log_path,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let mut child = Command::new(tandem_bin())
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.data.path().join("data"))
            .arg("--log")
            .arg("info,tandem_gateway=debug")
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn tandem");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("tandem listening on http://") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(TIMEOUT) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; log:\n{}", self.log());
            }
        };
        self.addr = addr.parse().expect("listening address");
        self.child = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        while self.get("/healthz").0 != 200 {
            assert!(Instant::now() < deadline, "healthz never became 200");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `ws://ADDR/ws/<doc>`.
    pub fn ws_url(&self, doc: &str) -> String {
        format!("ws://{}/ws/{}", self.addr, doc)
    }

    /// The server's peak resident memory so far (Linux `VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("server running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A plain HTTP/1.1 GET: (status, body).
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        self.request("GET", path, &[])
    }

    /// A plain HTTP/1.1 request with a body: (status, body).
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, TIMEOUT) else {
            return (0, Vec::new());
        };
        let _ = s.set_read_timeout(Some(TIMEOUT));
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        if s.write_all(req.as_bytes()).is_err() || s.write_all(body).is_err() {
            return (0, Vec::new());
        }
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            return (0, Vec::new());
        };
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut body = raw[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        (status, body)
    }

    /// GET as text.
    pub fn get_text(&self, path: &str) -> (u16, String) {
        let (status, body) = self.get(path);
        (status, String::from_utf8_lossy(&body).to_string())
    }

    /// The value of a metric line `name` (no labels) or `name{labels}`.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get_text("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        wait_exit(&mut child)
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub fn sigkill(&mut self) {
        let mut child = self.child.take().expect("server running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the server again on the same data directory (new port).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        self.spawn();
    }

    /// Runs a `tandem` operator subcommand on this server's data dir (server stopped).
    pub fn run_cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(tandem_bin())
            .args(args)
            .arg("--data-dir")
            .arg(self.data.path().join("data"))
            .output()
            .expect("run tandem")
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT * 2;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("server did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&body[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&body[start..(start + size).min(body.len())]);
        body = &body[(start + size + 2).min(body.len())..];
    }
    out
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
