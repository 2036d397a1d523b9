//! A throwaway PostgreSQL server of a test's own (initdb + pg_ctl from the
//! machine's PostgreSQL binaries) on a free loopback port, for tests that
//! must stop or restart the database. Runs as the `postgres` user when the
//! tests run as root (initdb refuses root). Stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl PgServer {
    /// Starts a new server; `None` (with the reason) when this machine
    /// cannot: no PostgreSQL binaries, or no way to run them.
    pub fn start() -> Result<Self, String> {
        Self::start_with(|_| Ok(()))
    }

    /// Starts a new server after `configure` has adjusted it: it runs after
    /// `initdb`, before the first start, and may write files into the
    /// server's folder ([`Self::path`]; the data folder is `data` in it),
    /// such as lines appended to `data/postgresql.conf`, a `data/pg_hba.conf`
    /// or certificates. Those files are handed to the `postgres` user too.
    pub fn start_with(configure: impl FnOnce(&Path) -> Result<(), String>) -> Result<Self, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no PostgreSQL binaries in /usr/lib/postgresql ({e})"))?
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").is_file())
            .ok_or("no initdb under /usr/lib/postgresql/*/bin")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let server = Self { dir, bin, port };
        server.chown_to_postgres()?;
        server.run(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        configure(server.dir.path())?;
        server.chown_to_postgres()?;
        server.ctl("start")?;
        Ok(server)
    }

    /// When the tests run as root, the server runs as `postgres`: its folder
    /// must be that user's.
    fn chown_to_postgres(&self) -> Result<(), String> {
        if !is_root() {
            return Ok(());
        }
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(self.dir.path())
            .status()
            .map_err(|e| e.to_string())?;
        if chown.success() {
            Ok(())
        } else {
            Err("cannot hand the data folder to the postgres user".into())
        }
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// `postgres://…` of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server and starts it again (`pg_ctl restart -m fast`):
    /// every connection is cut.
    pub fn restart(&self) -> Result<(), String> {
        self.ctl("restart")
    }

    fn ctl(&self, action: &str) -> Result<(), String> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-m",
                "fast",
                "-w",
                "-t",
                "30",
                action,
            ],
        )
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let output = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .current_dir(self.dir.path())
                .output()
        } else {
            Command::new(&path)
                .args(args)
                .current_dir(self.dir.path())
                .output()
        }
        .map_err(|e| format!("{program}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
