//! A real `redis-server` for tests, on a free loopback port, without persistence.
//! Killed on drop; `stop`, `restart` (same port), `freeze` and `thaw` let tests
//! simulate an outage or a stalled server.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary (Debian's `redis-server` package).
const BINARY: &str = "redis-server";
/// Readiness probes before giving up, and the pause between two of them.
const READY_ATTEMPTS: u32 = 200;
const READY_INTERVAL: Duration = Duration::from_millis(25);
/// Fresh ports tried when another process takes the chosen one first.
const START_ATTEMPTS: u32 = 5;

/// A running (or stopped) redis-server.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut server = Self { port, child: None };
            if server.spawn().is_ok() {
                return server;
            }
        }
        panic!("redis-server did not start (is the redis-server package installed?)");
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port, kept across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (connections drop; the port refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen server still dies on SIGKILL.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Same as [`RedisServer::stop`].
    pub fn kill(&mut self) {
        self.stop();
    }

    /// Suspends the server (SIGSTOP): connections stay open but nothing answers, as
    /// with an overloaded Redis.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts a new, empty server on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn()
            .unwrap_or_else(|reason| panic!("redis-server restart on {}: {reason}", self.port));
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new(BINARY)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {BINARY}: {e}"))?;
        self.child = Some(child);
        for _ in 0..READY_ATTEMPTS {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("exited early with {status}"));
            }
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(READY_INTERVAL);
        }
        self.stop();
        Err("no PONG in time".to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port the OS just handed out (there is a small window before redis takes it;
/// `start` retries on another port if it loses).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Whether a server on `port` answers PING with PONG.
fn ping(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
