//! TLS to PostgreSQL (`sslmode`, `sslrootcert`) against a throwaway server
//! of the test's own: `initdb` + `pg_ctl` from the machine's PostgreSQL, on
//! a free port of 127.0.0.1, `ssl = on` with a certificate for "localhost"
//! signed by a CA the test makes (the `openssl` command), and a `pg_hba.conf`
//! that accepts TLS connections only. Skipped, with a visible `SKIPPED:`
//! line, where `initdb` or `openssl` is missing.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use leadscore::store::{self, Enqueued};

mod pg_support;

use pg_support::{event, retention};

/// The PostgreSQL server's programs (`initdb`, `pg_ctl`), newest version first.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: store_tls: {why}");
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a command (as `postgres` when we are root: initdb refuses root),
/// panicking with its output when it fails.
fn run(as_postgres: bool, program: &Path, args: &[&str]) {
    let mut command = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA (`<name>.crt`, `<name>.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=leadscore test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A server certificate for "localhost" (`server.crt`, `server.key`) signed by `ca`.
fn make_server_cert(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

/// A running throwaway server; stopped (and its folder removed) on drop.
struct Server {
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    port: u16,
    certs: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = running_as_root();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        make_ca(&certs, "ca");
        make_ca(&certs, "other_ca");
        make_server_cert(&certs, "ca");
        if as_postgres {
            run(
                false,
                Path::new("chown"),
                &["-R", "postgres", &dir.path().display().to_string()],
            );
        }
        run(
            false,
            Path::new("chmod"),
            &["0600", &certs.join("server.key").display().to_string()],
        );
        let data = dir.path().join("data");
        let data_arg = data.display().to_string();
        run(
            as_postgres,
            &bin.join("initdb"),
            &[
                "-D",
                &data_arg,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        writeln!(
            conf,
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\n",
            dir.path().display(),
            certs.join("server.crt").display(),
            certs.join("server.key").display()
        )
        .unwrap();
        // TLS connections only: a plain one finds no pg_hba.conf entry.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let log = dir.path().join("server.log").display().to_string();
        let server = Self {
            bin,
            data,
            as_postgres,
            port,
            certs,
            _dir: dir,
        };
        run(
            as_postgres,
            &server.bin.join("pg_ctl"),
            &["-D", &data_arg, "-l", &log, "-w", "-t", "60", "start"],
        );
        server
    }

    fn url(&self, host: &str, params: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/postgres?hostaddr=127.0.0.1&connect_timeout=10&{params}",
            self.port
        )
    }

    fn cert(&self, name: &str) -> String {
        self.certs.join(name).display().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = Command::new(if self.as_postgres { "runuser" } else { "true" })
            .args(if self.as_postgres {
                vec!["-u", "postgres", "--"]
            } else {
                vec![]
            })
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"])
            .stdin(Stdio::null())
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_is_verified_as_sslmode_says() {
    let Some(bin) = postgres_bin() else {
        return skip("no initdb under /usr/lib/postgresql/*/bin (install the postgresql package)");
    };
    if Command::new("openssl").arg("version").output().is_err() {
        return skip("no openssl command to make test certificates");
    }
    if running_as_root() && Command::new("runuser").arg("--help").output().is_err() {
        return skip("running as root without runuser: initdb would refuse to run");
    }
    let server = Server::start(bin);
    let ca = server.cert("ca.crt");
    let other_ca = server.cert("other_ca.crt");
    let open = |url: String| async move {
        tokio::time::timeout(Duration::from_secs(60), store::open(&url, retention()))
            .await
            .expect("open answers in time")
    };

    // require: encrypted, the certificate (of an unknown CA) not checked.
    open(server.url("127.0.0.1", "sslmode=require&schema=tls_require"))
        .await
        .unwrap_or_else(|e| panic!("sslmode=require: {e}"));

    // verify-full with the right CA and host name: connects, and the store works.
    let store = open(server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}&schema=tls_full"),
    ))
    .await
    .unwrap_or_else(|e| panic!("sslmode=verify-full: {e}"));
    let stored = store
        .enqueue(vec![event("evt_tls", 1, "k1")], true)
        .await
        .unwrap();
    assert!(
        matches!(&stored[0], Enqueued::Stored(s) if s.id == "evt_tls"),
        "{stored:?}"
    );
    assert_eq!(store.delivery_counts().await.unwrap().pending, 1);

    // verify-full against another CA: refused, naming the setting.
    let e = open(server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other_ca}&schema=tls_other"),
    ))
    .await
    .err()
    .expect("a server certificate of another CA must be refused")
    .to_string();
    assert!(
        e.contains("TLS handshake failed") && e.contains("sslmode=verify-full"),
        "{e}"
    );
    assert!(e.contains("UnknownIssuer"), "{e}");

    // require with sslrootcert checks the chain, as libpq does.
    let e = open(server.url(
        "localhost",
        &format!("sslmode=require&sslrootcert={other_ca}&schema=tls_other"),
    ))
    .await
    .err()
    .expect("require with a root file checks the chain")
    .to_string();
    assert!(e.contains("UnknownIssuer"), "{e}");

    // verify-full with a host name the certificate is not for: refused;
    // verify-ca checks the chain only, so it connects.
    let e = open(server.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}&schema=tls_name"),
    ))
    .await
    .err()
    .expect("a certificate for another host name must be refused")
    .to_string();
    assert!(
        e.contains("TLS handshake failed") && e.contains("NotValidForName"),
        "{e}"
    );
    open(server.url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca}&schema=tls_ca"),
    ))
    .await
    .unwrap_or_else(|e| panic!("sslmode=verify-ca: {e}"));

    // disable against a server that takes TLS connections only: refused by
    // the server (no pg_hba.conf entry without encryption).
    let e = open(server.url("127.0.0.1", "sslmode=disable&schema=tls_plain"))
        .await
        .err()
        .expect("a plain connection must be refused")
        .to_string();
    assert!(e.contains("no encryption") || e.contains("pg_hba.conf"), "{e}");

    // prefer (libpq's default) encrypts when the server offers it.
    open(server.url("127.0.0.1", "schema=tls_prefer"))
        .await
        .unwrap_or_else(|e| panic!("default sslmode: {e}"));
}
