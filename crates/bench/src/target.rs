//! The server under test: where it listens, which [`Flavor`] of server it
//! is (URL scheme, framing, health path, document creation), its pid (for
//! CPU and memory), and — when the bench started it itself — the command to
//! kill and restart it.
//!
//! A server command is a shell line with `{port}` and `{data}` placeholders,
//! run as `sh -c "exec env <line>"` (leading `VAR=value` words allowed) so that the child pid is the server's own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dialect::{Dialect, Endpoint};

/// What kind of server a target is: everything about it that differs
/// between Tandem and its peers except how it is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flavor {
    /// y-websocket URLs (`ws://addr<prefix><doc>`, "/ws/" for Tandem, "/"
    /// for `@y/websocket-server`), bare frames, `GET /healthz` (the
    /// reference server answers 200 on any path).
    YWebsocket {
        /// Path before the document id.
        prefix: String,
    },
    /// Hocuspocus: one URL for every document (`ws://addr/`), the document
    /// named inside every frame ([`Dialect::Hocuspocus`]); answers 200 on any
    /// HTTP path.
    Hocuspocus,
    /// y-sweet 0.9 (`y-sweet serve <store> --host --port`), read from its
    /// `server.rs`: the WebSocket route is `/d/:doc_id/ws/:doc_id2` with the
    /// id twice ("for Yjs compatibility", the provider appends the room name
    /// to the base URL; both must match), bare y-websocket frames; `GET
    /// /ready` answers `{"ok":true}`. Ids allow only `A-Z a-z 0-9 - _`.
    /// Documents are made with `POST /doc/new {"docId": ..}`: without an auth
    /// key the socket route would also create a missing one, but it checks
    /// `docs.contains_key` before `load_doc` without a lock, so clients that
    /// open a new document at the same moment can each load their own copy
    /// and split the room. The bench creates every document first
    /// ([`Target::prepare`]), as a y-sweet app does from its backend.
    YSweet,
}

/// A server the bench can talk to.
pub struct Target {
    /// Label in reports ("tandem", "reference", or what the user named it).
    pub name: String,
    /// `host:port` of the HTTP/WebSocket listener.
    pub addr: String,
    /// URL scheme, framing, document creation.
    pub flavor: Flavor,
    /// HTTP path that answers 200 once the server serves.
    pub health_path: String,
    /// A Prometheus counter (on `GET /metrics`) of update records stored,
    /// when the server exposes one (Tandem: `tandem_updates_applied_total`).
    pub stored_metric: Option<String>,
    /// The server's pid, for `/proc` CPU and RSS.
    pub pid: Option<u32>,
    /// Whether documents survive a restart (the reference server keeps none).
    pub persistent: bool,
    /// Set when the bench spawned the server and may restart it.
    spawned: Option<Spawned>,
}

struct Spawned {
    /// The command line, placeholders already filled in.
    line: String,
    /// The running child.
    child: Child,
    /// Temp data dir the bench created (removed on drop).
    data_dir: Option<PathBuf>,
}

impl Target {
    /// A server someone else runs.
    pub fn external(
        name: &str,
        addr: &str,
        flavor: Flavor,
        pid: Option<u32>,
        persistent: bool,
    ) -> Target {
        Target {
            name: name.to_string(),
            addr: addr.to_string(),
            health_path: flavor.health_path().to_string(),
            flavor,
            stored_metric: None,
            pid,
            persistent,
            spawned: None,
        }
    }

    /// Starts `cmd` on a free port (and a fresh temp data dir when the line
    /// mentions `{data}`), then waits until it answers HTTP.
    pub async fn spawn(
        name: &str,
        cmd: &str,
        flavor: Flavor,
        persistent: bool,
    ) -> anyhow::Result<Target> {
        let port = free_port()?;
        let data_dir = if cmd.contains("{data}") {
            let dir = std::env::temp_dir()
                .join(format!("tandem-bench-{name}-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            Some(dir)
        } else {
            None
        };
        let data = data_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let line = cmd
            .replace("{port}", &port.to_string())
            .replace("{data}", &data);
        let child = start(&line)?;
        let mut target = Target {
            name: name.to_string(),
            addr: format!("127.0.0.1:{port}"),
            health_path: flavor.health_path().to_string(),
            flavor,
            stored_metric: None,
            pid: Some(child.id()),
            persistent,
            spawned: Some(Spawned {
                line,
                child,
                data_dir,
            }),
        };
        target.wait_healthy(Duration::from_secs(30)).await?;
        Ok(target)
    }

    /// Where a client of document `doc` connects, and how it frames messages.
    pub fn endpoint(&self, doc: &str) -> Endpoint {
        let (url, dialect) = match &self.flavor {
            Flavor::YWebsocket { prefix } => (
                format!("ws://{}{prefix}{doc}", self.addr),
                Dialect::YWebsocket,
            ),
            Flavor::Hocuspocus => (
                format!("ws://{}/", self.addr),
                Dialect::Hocuspocus {
                    doc: doc.to_string(),
                },
            ),
            Flavor::YSweet => (
                format!("ws://{}/d/{doc}/ws/{doc}", self.addr),
                Dialect::YWebsocket,
            ),
        };
        Endpoint { url, dialect }
    }

    /// Makes sure documents `docs` exist before clients connect (y-sweet
    /// only; see [`Flavor::YSweet`]). 32 requests in flight at a time.
    pub async fn prepare<S: AsRef<str>>(&self, docs: &[S]) -> anyhow::Result<()> {
        if self.flavor != Flavor::YSweet {
            return Ok(());
        }
        for chunk in docs.chunks(32) {
            let made = futures_util::future::join_all(chunk.iter().map(|doc| async move {
                let doc = doc.as_ref();
                let body = serde_json::json!({ "docId": doc }).to_string();
                http(&self.addr, "POST", "/doc/new", body.as_bytes()).await
            }))
            .await;
            for (doc, r) in chunk.iter().zip(made) {
                let doc = doc.as_ref();
                let (status, body) = r?;
                anyhow::ensure!(
                    status == 200,
                    "{}: POST /doc/new for {doc} answered {status}: {}",
                    self.name,
                    String::from_utf8_lossy(&body)
                );
            }
        }
        Ok(())
    }

    /// The current value of counter `name` on `GET /metrics`, if the server has it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (status, body) = http(&self.addr, "GET", "/metrics", b"").await.ok()?;
        if status != 200 {
            return None;
        }
        let text = String::from_utf8_lossy(&body);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Records stored so far according to [`Target::stored_metric`].
    pub async fn stored_records(&self) -> Option<f64> {
        let name = self.stored_metric.as_deref()?;
        self.metric(name).await
    }

    /// Whether the bench controls the process (kill/restart possible).
    pub fn restartable(&self) -> bool {
        self.spawned.is_some()
    }

    /// Polls the health path every millisecond until it answers 200.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if health_ok(&self.addr, &self.health_path).await {
                return Ok(start.elapsed());
            }
            if let Some(s) = self.spawned.as_mut()
                && let Some(status) = s.child.try_wait()?
            {
                anyhow::bail!(
                    "{} exited with {status} before serving ({})",
                    self.name,
                    s.line
                );
            }
            if start.elapsed() > timeout {
                anyhow::bail!(
                    "{} did not answer GET {} within {timeout:?}",
                    self.name,
                    self.health_path
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// SIGKILLs the server and starts the same command again on the same
    /// port and data dir. Returns the instant of the new spawn.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<Instant> {
        self.kill()?;
        let at = Instant::now();
        self.start_again()?;
        Ok(at)
    }

    /// SIGKILLs the server (no chance to flush anything) and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let s = self
            .spawned
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("{} was not started by the bench", self.name))?;
        s.child.kill()?;
        s.child.wait()?;
        Ok(())
    }

    /// Starts the same command again (same port, same data dir); pair with
    /// [`Target::wait_healthy`].
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let s = self
            .spawned
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("{} was not started by the bench", self.name))?;
        s.child = start(&s.line)?;
        self.pid = Some(s.child.id());
        Ok(())
    }

    /// Asks the server to stop ([`Flavor::stop_signal`], SIGKILL after 10 s), starts it again
    /// on the same port and data dir, and waits until it serves.
    pub async fn stop_gracefully_and_restart(&mut self) -> anyhow::Result<()> {
        let s = self
            .spawned
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("{} was not started by the bench", self.name))?;
        let _ = Command::new("kill")
            .arg(format!("-{}", self.flavor.stop_signal()))
            .arg(s.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                s.child.kill()?;
                s.child.wait()?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s.child = start(&s.line)?;
        self.pid = Some(s.child.id());
        self.wait_healthy(Duration::from_secs(30)).await?;
        Ok(())
    }

    /// Stops a spawned server (SIGKILL) and removes its temp data dir.
    pub fn shutdown(&mut self) {
        if let Some(mut s) = self.spawned.take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
            if let Some(dir) = s.data_dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn start(line: &str) -> anyhow::Result<Child> {
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec env {line}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(child)
}

/// A port that was free a moment ago (bind :0, read, release).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// One `GET path` over a fresh connection; true on a 200 status line.
pub async fn health_ok(addr: &str, path: &str) -> bool {
    let attempt = tokio::time::timeout(Duration::from_secs(1), http(addr, "GET", path, b""));
    matches!(attempt.await, Ok(Ok((200, _))))
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`):
/// the status code and the body (read to EOF; no chunked decoding, which
/// the status and the Prometheus text the bench reads do not need).
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut resp)).await??;
    let text_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |p| p + 4);
    let status = std::str::from_utf8(&resp[..text_end.min(resp.len())])
        .ok()
        .and_then(|h| h.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no HTTP status line from {addr}{path}"))?;
    Ok((status, resp[text_end..].to_vec()))
}

impl Flavor {
    /// The signal that makes the server save and stop. y-sweet 0.9's `serve`
    /// waits only for Ctrl-C (`tokio::signal::ctrl_c` in `main.rs`): a
    /// SIGTERM ends it at once, without the save it makes on SIGINT.
    pub fn stop_signal(&self) -> &'static str {
        match self {
            Flavor::YSweet => "INT",
            _ => "TERM",
        }
    }

    /// The path that answers 200 once the server serves.
    pub fn health_path(&self) -> &'static str {
        match self {
            Flavor::YSweet => "/ready",
            _ => "/healthz",
        }
    }
}
