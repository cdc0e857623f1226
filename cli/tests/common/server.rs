//! A real `detvm serve` process on a free loopback port, stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Server {
    pub url: String,
    child: Child,
}

impl Server {
    /// `detvm serve --listen 127.0.0.1:0 ARGS` with `home` as `DETVM_HOME`; returns once
    /// it printed the address it listens on.
    pub fn start(home: &Path, args: &[&str]) -> Server {
        Server::start_with(home, args, &[])
    }

    /// [`Server::start`] with these environment variables too.
    pub fn start_with(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(super::cli::detvm())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .env("DETVM_HOME", home)
            .current_dir(super::engine::repo_root())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start detvm serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("detvm serve ended before it listened")
                .unwrap();
            if let Some(rest) = line.split(" on http://").nth(1) {
                let addr = rest.split('/').next().unwrap();
                break format!("http://{addr}");
            }
        };
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { url, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
