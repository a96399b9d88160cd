//! TLS to the servers compute_ctl reads from (an upstream PostgreSQL server, Neon's
//! pageserver): libpq's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert`, with libpq's meaning.
//!
//! The `postgres` crate's own parser knows `sslmode` up to `require` and no `sslrootcert`,
//! so a connection string is split here: the TLS options are taken out and the rest goes to
//! `postgres::Config`. The handshake is rustls's (through `tokio-postgres-rustls` for the
//! `postgres` crate, directly for the pageserver's wire client): a maintained, pure-Rust TLS
//! stack that needs no system library, and whose `ring` provider the build already has.
//! `pg_basebackup` and the standby's WAL receiver are libpq's: they get the options as given.
//!
//! libpq's rules, kept: `require` with an `sslrootcert` verifies the chain as `verify-ca`
//! does; `verify-ca` checks the chain only; `verify-full` also checks that the certificate
//! names the host. Unlike libpq, `verify-ca` and `verify-full` need `sslrootcert` named
//! (libpq falls back to `~/.postgresql/root.crt` of whoever runs it, a file nobody here
//! manages).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            // libpq's `allow` tries without TLS first; without is what it gets here.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// The TLS options of a connection string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// `prefer` when the string names none (libpq's default).
    pub mode: SslMode,
    /// `sslrootcert`: the CA certificates (PEM) the server's chain must end in.
    pub root_cert: Option<PathBuf>,
}

impl Default for Tls {
    /// libpq's default: `prefer`, no root certificate.
    fn default() -> Tls {
        Tls {
            mode: SslMode::Prefer,
            root_cert: None,
        }
    }
}

impl Tls {
    /// Whether the server's certificate chain is checked against `root_cert`.
    pub fn verifies_chain(&self) -> bool {
        match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require => self.root_cert.is_some(),
            SslMode::Disable | SslMode::Prefer => false,
        }
    }

    /// The libpq `key='value'` options that say the same, for `pg_basebackup` and
    /// `primary_conninfo` (`prefer`, libpq's default, is left out).
    pub fn libpq_options(&self) -> Vec<(&'static str, String)> {
        let mut options = Vec::new();
        if self.mode != SslMode::Prefer {
            options.push(("sslmode", self.mode.as_str().to_string()));
        }
        if let Some(root) = &self.root_cert {
            options.push(("sslrootcert", root.to_string_lossy().into_owned()));
        }
        options
    }
}

/// A connection string split: what the `postgres` crate reads, and the TLS options.
#[derive(Clone, Debug)]
pub struct ConnString {
    /// Its `ssl_mode` is `require` for `require`, `verify-ca` and `verify-full`.
    pub config: postgres::Config,
    pub tls: Tls,
}

/// Parses a connection string (a `postgresql://` URL or `key=value` pairs). Errors name the
/// option, never a value (a password may be one).
pub fn parse(text: &str) -> Result<ConnString, String> {
    let (rest, taken) = take_tls_options(text)?;
    let mut tls = Tls::default();
    for (key, value) in taken {
        match key.as_str() {
            "sslmode" => {
                tls.mode = SslMode::parse(&value).ok_or_else(|| {
                    "invalid sslmode: one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                        .to_string()
                })?;
            }
            _ => {
                if !Path::new(&value).is_absolute() {
                    // pg_basebackup and the WAL receiver run in PGDATA, compute_ctl elsewhere.
                    return Err("sslrootcert must be an absolute path".to_string());
                }
                tls.root_cert = Some(PathBuf::from(value));
            }
        }
    }
    if matches!(tls.mode, SslMode::VerifyCa | SslMode::VerifyFull) && tls.root_cert.is_none() {
        return Err(format!(
            "sslmode={} needs sslrootcert (the file of CA certificates to verify the server \
             with)",
            tls.mode.as_str()
        ));
    }
    let mut config: postgres::Config = rest.parse().map_err(|e: postgres::Error| {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            reason.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        reason
    })?;
    config.ssl_mode(match tls.mode {
        SslMode::Disable => postgres::config::SslMode::Disable,
        SslMode::Prefer => postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            postgres::config::SslMode::Require
        }
    });
    Ok(ConnString { config, tls })
}

/// The options rustls handles, taken out of `text`; the rest, rebuilt in the same form.
fn take_tls_options(text: &str) -> Result<(String, Vec<(String, String)>), String> {
    const TAKEN: [&str; 2] = ["sslmode", "sslrootcert"];
    let trimmed = text.trim();
    let mut taken = Vec::new();
    if trimmed.starts_with("postgresql://") || trimmed.starts_with("postgres://") {
        let Some((base, query)) = trimmed.split_once('?') else {
            return Ok((trimmed.to_string(), taken));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key_text = percent_decode(key)?;
            if TAKEN.contains(&key_text.as_str()) {
                taken.push((key_text, percent_decode(value)?));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, taken));
    }
    let mut kept = String::new();
    for (key, value) in key_value_pairs(trimmed)? {
        if TAKEN.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            if !kept.is_empty() {
                kept.push(' ');
            }
            kept.push_str(&key);
            kept.push_str("='");
            for c in value.chars() {
                if c == '\'' || c == '\\' {
                    kept.push('\\');
                }
                kept.push(c);
            }
            kept.push('\'');
        }
    }
    Ok((kept, taken))
}

/// libpq's `key = value` pairs: values bare or single-quoted, `\` escaping the next character.
fn key_value_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!(
                "missing \"=\" after {key:?} in the connection string"
            ));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(format!("unterminated quoted value of {key:?}")),
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value of {key:?}")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a bad percent escape in the connection string".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the connection string is not UTF-8".to_string())
}

/// Why a TLS client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read sslrootcert {path}: {source}")]
    RootCert {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sslrootcert {path} holds no usable certificate: {reason}")]
    NoCertificate { path: PathBuf, reason: String },
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// The rustls client configuration `tls` asks for.
pub fn client_config(tls: &Tls) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (&tls.root_cert, tls.verifies_chain()) {
        (Some(path), true) => {
            let roots = load_roots(path)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
            Arc::new(Verify {
                inner: webpki,
                check_name: tls.mode == SslMode::VerifyFull,
            })
        }
        _ => Arc::new(Encrypt { provider }),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The `postgres` crate's TLS connector for `tls`.
pub fn connector(tls: &Tls) -> Result<tokio_postgres_rustls::MakeRustlsConnect, TlsError> {
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
        client_config(tls)?,
    ))
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::RootCert {
        path: path.to_path_buf(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| TlsError::NoCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::NoCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
            reason: "no PEM certificate in it".into(),
        });
    }
    Ok(roots)
}

/// `verify-ca` and `verify-full`: the chain must end in a root of `sslrootcert`; the host
/// name is checked only for `verify-full`.
#[derive(Debug)]
struct Verify {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verify {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // webpki checks the chain before the name: a name error means the chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `require` without a root certificate, and `prefer`: encrypted, the server not
/// authenticated (libpq's meaning); the handshake's signatures are still checked.
#[derive(Debug)]
struct Encrypt {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Encrypt {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A word on a TLS failure, added to the client's own description: what the check found.
pub fn explain(message: &str) -> Option<&'static str> {
    if message.contains("UnknownIssuer") {
        Some("the server's certificate is not signed by a CA in sslrootcert")
    } else if message.contains("NotValidForName") || message.contains("not valid for name") {
        Some("the server's certificate does not name the host connected to (verify-full)")
    } else if message.contains("Expired") {
        Some("the server's certificate has expired")
    } else if message.contains("server does not support TLS") {
        Some("the server does not accept TLS (ssl = off) and sslmode asks for it")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn takes_the_tls_options_out_of_a_url_and_key_value_pairs() {
        let parsed =
            parse("postgresql://rep:pw@db:5433/postgres?sslmode=verify-full&sslrootcert=%2Fca%20dir%2Froot.pem&application_name=x")
                .unwrap();
        assert_eq!(parsed.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            parsed.tls.root_cert,
            Some(PathBuf::from("/ca dir/root.pem"))
        );
        assert_eq!(parsed.config.get_application_name(), Some("x"));
        assert_eq!(
            parsed.config.get_ssl_mode(),
            postgres::config::SslMode::Require
        );
        let parsed = parse(
            "host=db user='it''s' sslmode=verify-ca sslrootcert='/a b/ca.pem' password=p\\ q",
        )
        .unwrap_err();
        assert!(parsed.contains("missing"), "{parsed}");
        let parsed = parse(
            "host=db user='o\\'k' sslmode=verify-ca sslrootcert='/a b/ca.pem' password=p\\ q",
        )
        .unwrap();
        assert_eq!(parsed.tls.mode, SslMode::VerifyCa);
        assert_eq!(parsed.tls.root_cert, Some(PathBuf::from("/a b/ca.pem")));
        assert_eq!(parsed.config.get_user(), Some("o'k"));
        assert_eq!(parsed.config.get_password(), Some(&b"p q"[..]));
        let plain = parse("postgresql://rep@db/postgres").unwrap();
        assert_eq!(plain.tls.mode, SslMode::Prefer);
        assert!(plain.tls.libpq_options().is_empty());
    }

    #[test]
    fn refuses_verification_without_a_root_and_unknown_modes() {
        let error = parse("postgresql://db/postgres?sslmode=verify-full").unwrap_err();
        assert!(error.contains("needs sslrootcert"), "{error}");
        let error = parse("host=db sslmode=paranoid").unwrap_err();
        assert!(error.contains("invalid sslmode"), "{error}");
        assert!(!error.contains("paranoid"));
    }

    #[test]
    fn require_with_a_root_verifies_the_chain_as_libpq_does() {
        let tls = parse("host=db sslmode=require sslrootcert=/ca.pem")
            .unwrap()
            .tls;
        assert!(tls.verifies_chain());
        assert_eq!(
            tls.libpq_options(),
            [
                ("sslmode", "require".to_string()),
                ("sslrootcert", "/ca.pem".to_string())
            ]
        );
        assert!(!parse("host=db sslmode=require")
            .unwrap()
            .tls
            .verifies_chain());
    }
}
