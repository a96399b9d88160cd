//! Test certificates, made by the `openssl` command in a temp dir for one test: a CA, a
//! server certificate it signs (for the names given), and a second CA that signs nothing the
//! server shows. Readable by the Postgres OS user (the server's key is its own, mode 0600),
//! as `pg_basebackup` and the WAL receiver read the CA file as that user.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::compute::traversable_tempdir;
use super::postgres::give_to_run_as;

/// The files of [`TestCerts::make`].
#[derive(Debug)]
pub struct TestCerts {
    /// The CA that signed the server's certificate (PEM): a good `sslrootcert`.
    pub ca: PathBuf,
    /// A CA that signed nothing the server shows: a wrong `sslrootcert`.
    pub other_ca: PathBuf,
    /// The server's certificate and key (`ssl_cert_file`, `ssl_key_file`).
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    _dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (install it: apt-get install -y openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A self-signed CA `name` in `dir`: `<name>.crt`, `<name>.key`.
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
            "-days",
            "2",
            "-subj",
            &format!("/CN=compute_ctl test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

impl TestCerts {
    /// A CA and a server certificate for `names` (`DNS:localhost`, `IP:127.0.0.1`).
    pub fn make(names: &[&str]) -> TestCerts {
        let dir = traversable_tempdir();
        let path = dir.path();
        make_ca(path, "ca");
        make_ca(path, "other_ca");
        openssl(
            path,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=compute_ctl test server",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(
            path.join("server.ext"),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth\n",
                names.join(",")
            ),
        )
        .unwrap();
        openssl(
            path,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
        );
        use std::os::unix::fs::PermissionsExt;
        let key = path.join("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        give_to_run_as(&key);
        for file in ["ca.crt", "other_ca.crt", "server.crt"] {
            std::fs::set_permissions(path.join(file), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        TestCerts {
            ca: path.join("ca.crt"),
            other_ca: path.join("other_ca.crt"),
            server_cert: path.join("server.crt"),
            server_key: key,
            _dir: dir,
        }
    }
}
