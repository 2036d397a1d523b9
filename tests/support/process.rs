//! [`Process`]: the real `leadscore` binary, no `LEADSCORE_*` variable
//! inherited (only those a test gives), its standard output and error in a
//! log file; killed on drop.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{RULES, WAIT, client, leadscore};

pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    /// The log (and store) folder when the process made its own.
    _dir: Option<TempDir>,
}

impl Process {
    /// Starts `leadscore <args>`, which the test expects to listen on
    /// `addr`, its output in `log`. Does not wait: see
    /// [`Process::wait_healthy`].
    pub fn spawn(args: &[String], env: &[(&str, &str)], addr: SocketAddr, log: &Path) -> Self {
        let out = File::create(log).expect("create the log file");
        let err = out.try_clone().expect("clone the log file");
        let child = leadscore()
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the binary starts");
        Self {
            child,
            addr,
            log: log.to_path_buf(),
            _dir: None,
        }
    }

    /// Starts `leadscore serve --listen 127.0.0.1:0 --rules rules/ --store
    /// <a fresh SQLite file> <args>` and waits for the address it logs.
    pub fn serve(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let log = dir.path().join("leadscore.log");
        let store = format!("sqlite://{}", dir.path().join("leadscore.db").display());
        let mut all: Vec<String> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rules",
            RULES,
            "--store",
            &store,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let unknown: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut process = Self::spawn(&all, env, unknown, &log);
        process._dir = Some(dir);
        let deadline = Instant::now() + Duration::from_secs(20);
        process.addr = loop {
            let text = process.log_text();
            if let Some(addr) = listening_addr(&text) {
                break addr;
            }
            if let Some(status) = process.child.try_wait().expect("try_wait") {
                panic!("leadscore exited with {status} before listening:\n{text}");
            }
            if Instant::now() > deadline {
                panic!("leadscore did not log its address within 20 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        process
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Waits until `/healthz` answers 200; fails if the process exits first.
    pub async fn wait_healthy(&mut self) {
        self.wait_for_200("/healthz", WAIT).await;
    }

    /// Waits until `/readyz` answers 200 (the store is reachable).
    pub async fn wait_ready(&mut self, timeout: Duration) {
        self.wait_for_200("/readyz", timeout).await;
    }

    async fn wait_for_200(&mut self, path: &str, timeout: Duration) {
        let client = client();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "leadscore exited with {status} before {path} answered:\n{}",
                    self.log_text()
                );
            }
            if let Ok(reply) = client.get(self.url(path)).send().await
                && reply.status() == 200
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!("leadscore's {path} did not answer 200:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for the process to exit; kills it and fails after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("leadscore did not exit within {timeout:?}:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`, `KILL`) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", name, &self.pid()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// `kill -9`, and reaps the process.
    pub fn kill_hard(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address of the "listening; point iClosed's webhook at http://…" line.
fn listening_addr(log: &str) -> Option<SocketAddr> {
    let reader = BufReader::new(log.as_bytes());
    reader.lines().map_while(Result::ok).find_map(|line| {
        let rest = &line[line.find("webhook at http://")? + "webhook at http://".len()..];
        rest[..rest.find('/')?].parse().ok()
    })
}
