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

#[path = "support/mod.rs"]
mod support;

use support::pg::{event, retention};
use support::pg_server::{PgServer, is_root};

/// Whether this machine has the server's programs `PgServer` runs.
fn has_postgres_server() -> bool {
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("bin/initdb").is_file())
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

/// The test's throwaway server (`PgServer`) with `ssl = on`, its
/// certificates in `certs/` of its folder, TLS connections only.
struct Server {
    pg: PgServer,
    certs: PathBuf,
}

impl Server {
    fn start() -> Self {
        let pg = PgServer::start_with(|dir| {
            let certs = dir.join("certs");
            std::fs::create_dir(&certs).map_err(|e| e.to_string())?;
            make_ca(&certs, "ca");
            make_ca(&certs, "other_ca");
            make_server_cert(&certs, "ca");
            // PostgreSQL refuses a key others may read.
            std::fs::set_permissions(
                certs.join("server.key"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .map_err(|e| e.to_string())?;
            let data = dir.join("data");
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .map_err(|e| e.to_string())?;
            writeln!(
                conf,
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'",
                certs.join("server.crt").display(),
                certs.join("server.key").display()
            )
            .map_err(|e| e.to_string())?;
            // TLS connections only: a plain one finds no pg_hba.conf entry.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .map_err(|e| e.to_string())
        })
        .unwrap_or_else(|e| panic!("the TLS test server does not start: {e}"));
        let certs = pg.path().join("certs");
        Self { pg, certs }
    }

    fn url(&self, host: &str, params: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/postgres?hostaddr=127.0.0.1&connect_timeout=10&{params}",
            self.pg.port
        )
    }

    fn cert(&self, name: &str) -> String {
        self.certs.join(name).display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_is_verified_as_sslmode_says() {
    if !has_postgres_server() {
        return support::skipped(
            "tls_to_postgres_is_verified_as_sslmode_says",
            "no initdb under /usr/lib/postgresql/*/bin (install the postgresql package)",
        );
    }
    if Command::new("openssl").arg("version").output().is_err() {
        return support::skipped(
            "tls_to_postgres_is_verified_as_sslmode_says",
            "no openssl command to make test certificates",
        );
    }
    if is_root() && Command::new("runuser").arg("--help").output().is_err() {
        return support::skipped(
            "tls_to_postgres_is_verified_as_sslmode_says",
            "running as root without runuser: initdb would refuse to run",
        );
    }
    let server = Server::start();
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
    let stored = store.enqueue(vec![event("evt_tls", 1, "k1")]).await.unwrap();
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
        e.contains("TLS handshake failed")
            && e.contains("sslmode=verify-full")
            && e.contains("not valid for name \"127.0.0.1\""),
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
