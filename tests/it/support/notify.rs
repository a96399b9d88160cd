//! A stand-in for systemd's end of `NOTIFY_SOCKET`: a datagram socket owned by the test (an
//! abstract one, `@name`, like systemd's own), and every message received with its arrival time.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One datagram: when it arrived and its lines.
#[derive(Clone, Debug)]
pub struct Message {
    pub at: Instant,
    pub text: String,
}

impl Message {
    pub fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    /// The value of `KEY=` in this message.
    pub fn value(&self, key: &str) -> Option<String> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    }
}

/// The socket and what it received so far.
#[derive(Debug)]
pub struct NotifySocket {
    /// The value for `NOTIFY_SOCKET`.
    pub address: String,
    messages: Arc<Mutex<Vec<Message>>>,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("compute_ctl-it-{}-{n}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                sink.lock().unwrap().push(Message {
                    at: Instant::now(),
                    text,
                });
            }
        });
        NotifySocket {
            address: format!("@{name}"),
            messages,
        }
    }

    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until a message has `line`; returns it (panics after `timeout`).
    pub fn wait_for(&self, line: &str, timeout: Duration) -> Message {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.messages().into_iter().find(|m| m.has(line)) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no {line:?} within {timeout:?}; received {:#?}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The arrival times of `WATCHDOG=1` in `[from, to)`.
    pub fn watchdogs(&self, from: Instant, to: Instant) -> Vec<Instant> {
        self.messages()
            .into_iter()
            .filter(|m| m.has("WATCHDOG=1") && m.at >= from && m.at < to)
            .map(|m| m.at)
            .collect()
    }
}
