//! The server under test: where it listens, how its WebSocket URLs look,
//! its pid (for CPU and memory), and — when the bench started it itself —
//! the command to kill and restart it.
//!
//! A server command is a shell line with `{port}` and `{data}` placeholders,
//! run as `sh -c "exec env <line>"` (leading `VAR=value` words allowed) so that the child pid is the server's own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server the bench can talk to.
pub struct Target {
    /// Label in reports ("tandem", "reference", or what the user named it).
    pub name: String,
    /// `host:port` of the HTTP/WebSocket listener.
    pub addr: String,
    /// Path before the document id in WebSocket URLs ("/ws/" for Tandem, "/" for y-websocket).
    pub ws_prefix: String,
    /// HTTP path that answers 200 once the server serves.
    pub health_path: String,
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
        ws_prefix: &str,
        pid: Option<u32>,
        persistent: bool,
    ) -> Target {
        Target {
            name: name.to_string(),
            addr: addr.to_string(),
            ws_prefix: ws_prefix.to_string(),
            health_path: "/healthz".to_string(),
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
        ws_prefix: &str,
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
            ws_prefix: ws_prefix.to_string(),
            health_path: "/healthz".to_string(),
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

    /// WebSocket URL of document `doc`.
    pub fn url(&self, doc: &str) -> String {
        format!("ws://{}{}{}", self.addr, self.ws_prefix, doc)
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
        let s = self
            .spawned
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("{} was not started by the bench", self.name))?;
        s.child.kill()?;
        s.child.wait()?;
        let at = Instant::now();
        s.child = start(&s.line)?;
        self.pid = Some(s.child.id());
        Ok(at)
    }

    /// Asks the server to stop (SIGTERM, SIGKILL after 10 s), starts it again
    /// on the same port and data dir, and waits until it serves.
    pub async fn stop_gracefully_and_restart(&mut self) -> anyhow::Result<()> {
        let s = self
            .spawned
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("{} was not started by the bench", self.name))?;
        let _ = Command::new("kill")
            .arg("-TERM")
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
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let m = s.read(&mut buf[n..]).await.ok()?;
            if m == 0 {
                break;
            }
            n += m;
        }
        Some(buf[..n].starts_with(b"HTTP/1.1 200") || buf[..n].starts_with(b"HTTP/1.0 200"))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
