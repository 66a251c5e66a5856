//! The Redis server the measuring examples use: the one at a given URL, or
//! a throwaway `redis-server` on a free loopback port, stopped on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Redis to measure against: `.1` is its URL.
pub struct Redis(Option<Child>, pub String);

impl Redis {
    /// The server at `url`, or a throwaway one when `None`.
    pub fn start(url: Option<String>) -> Redis {
        if let Some(url) = url {
            return Redis(None, url);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/setup)");
        std::thread::sleep(Duration::from_millis(300));
        Redis(Some(child), format!("redis://127.0.0.1:{port}/"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
