//! TLS for the pool's connections: libpq's `sslmode` and `sslrootcert`, read
//! from the connection URL, and the connector that carries them out.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, rejects
//! `verify-ca` and `verify-full`, and has no `sslrootcert`, so
//! [`DatabaseConfig::from_url`](crate::DatabaseConfig::from_url) takes both
//! parameters out of the URL before tokio-postgres parses the rest, and the
//! certificate checks live here, in a rustls verifier.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio_postgres::error::SqlState;

use crate::error::{Error, Result};

/// How a connection uses TLS: the `sslmode` parameter of a connection URL,
/// with libpq's meanings. Part of [`TlsConfig`].
///
/// | mode | encrypted | server's certificate checked |
/// | --- | --- | --- |
/// | `disable` | never | - |
/// | `prefer` (the default) | if the server offers TLS | no (its chain, with `sslrootcert`) |
/// | `require` | always | no (its chain, with `sslrootcert`) |
/// | `verify-ca` | always | chains to a CA in `sslrootcert` |
/// | `verify-full` | always | chains to a CA in `sslrootcert` and names the host |
///
/// Only `verify-full` stops an attacker who can intercept the connection
/// from posing as the server; `require` only stops one who can just listen.
///
/// ```
/// use orm_core::SslMode;
///
/// let mode: SslMode = "verify-full".parse()?;
/// assert_eq!(mode, SslMode::VerifyFull);
/// assert_eq!(mode.to_string(), "verify-full");
/// assert_eq!(SslMode::default(), SslMode::Prefer); // as libpq's
/// assert!("allow".parse::<SslMode>().is_err()); // libpq's, not supported
/// # Ok::<(), orm_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SslMode {
    /// Plain TCP, never TLS. A server whose `pg_hba.conf` only accepts the
    /// database over TLS (`hostssl` entries) refuses the connection.
    Disable,
    /// TLS if the server offers it, plain TCP if it does not. The server's
    /// certificate is not checked (without `sslrootcert`), so this stops
    /// eavesdropping but not an attacker in the middle. A TLS handshake
    /// that fails is an error, not a retry in plain text (libpq retries).
    #[default]
    Prefer,
    /// TLS, or no connection. Without `sslrootcert` any certificate is
    /// accepted (the handshake's signatures are still checked); with one,
    /// it must chain to a CA there, as libpq does, which makes this
    /// [`VerifyCa`](Self::VerifyCa).
    Require,
    /// TLS, and the server's certificate must chain to a CA in
    /// `sslrootcert`; the host name it names is not checked. For servers
    /// reached under names their certificate does not list.
    VerifyCa,
    /// As [`VerifyCa`](Self::VerifyCa), and the certificate must name the
    /// host connected to: a DNS name for a host name, an IP address entry
    /// for an IP address (rustls, unlike libpq, never takes the common name).
    VerifyFull,
}

impl SslMode {
    /// The mode's name in a connection URL: `"disable"`, ..., `"verify-full"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The mode tokio-postgres negotiates with: it only needs to know
    /// whether TLS is off, optional or required; the checks are ours.
    fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = Error;

    /// A mode by its name in a connection URL. libpq's `allow` (plain TCP
    /// first, TLS if the server refuses that) is an [`Error::Config`]:
    /// tokio-postgres cannot retry that way.
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(Error::Config("sslmode=allow is not supported: use prefer (or disable)".into())),
            other => Err(Error::Config(format!(
                "invalid sslmode {other:?}: expected disable, prefer, require, verify-ca or verify-full"
            ))),
        }
    }
}

/// Whether and how the pool's connections use TLS:
/// [`DatabaseConfig::tls`](crate::DatabaseConfig::tls), read from the URL's
/// `sslmode` and `sslrootcert` parameters (in `postgres://...?sslmode=...`
/// and in `key=value` form alike) with libpq's meanings (see [`SslMode`]).
///
/// TLS comes from rustls (with its *ring* cryptography), through
/// tokio-postgres-rustls: pure Rust, so neither building nor running needs
/// OpenSSL on the system. It is orm-core's `tls-rustls` feature, on by
/// default; without it, [`Database::with_config`](crate::Database::with_config)
/// refuses a configuration that asks for TLS with an [`Error::Config`], and
/// `prefer` connects without.
///
/// The CA file is read when the pool is built: a missing or unreadable
/// file, or one without a PEM certificate, is an [`Error::Config`] then,
/// not at the first connection. Unlike libpq, there is no default
/// `~/.postgresql/root.crt`: `verify-ca` and `verify-full` need
/// `sslrootcert`.
///
/// ```
/// use std::path::Path;
/// use orm_core::{Database, DatabaseConfig, ErrorKind, SslMode};
///
/// let url = "postgres://app@db.example.com/shop?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem";
/// let config = DatabaseConfig::from_url(url)?;
/// assert_eq!(config.tls.mode, SslMode::VerifyFull);
/// assert_eq!(config.tls.root_cert.as_deref(), Some(Path::new("/etc/ssl/db-ca.pem")));
/// assert_eq!(config.postgres.get_dbname(), Some("shop")); // the rest as tokio-postgres reads it
///
/// // The same in key=value form; a URL without sslmode prefers TLS.
/// let config = DatabaseConfig::from_url("host=db.example.com user=app sslmode=require")?;
/// assert_eq!((config.tls.mode, config.tls.root_cert), (SslMode::Require, None));
/// assert_eq!(DatabaseConfig::from_url("postgres://db.example.com")?.tls.mode, SslMode::Prefer);
///
/// // The CA file is read when the pool is built.
/// let mut config = DatabaseConfig::from_url(url)?;
/// config.tls.root_cert = Some("/no/such/ca.pem".into());
/// let error = Database::with_config(config).err().unwrap();
/// assert_eq!(error.kind(), ErrorKind::Config);
/// assert!(error.to_string().contains("cannot read sslrootcert /no/such/ca.pem"), "{error}");
/// # Ok::<(), orm_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// Whether to use TLS and how far to check the server's certificate.
    /// Default: [`SslMode::Prefer`].
    pub mode: SslMode,
    /// A PEM file of the CA certificates the server's certificate must
    /// chain to (`sslrootcert`). Default: none.
    pub root_cert: Option<PathBuf>,
}

/// What a connection checks of the server's certificate: libpq's rules
/// for a mode and a CA file.
enum Check<'a> {
    /// Plain TCP.
    Nothing,
    /// TLS without checking the certificate.
    Encryption,
    /// The certificate chains to a CA in this file.
    Chain(&'a Path),
    /// It chains to a CA in this file and names the host.
    ChainAndHost(&'a Path),
}

impl TlsConfig {
    fn check(&self) -> Result<Check<'_>> {
        match (self.mode, self.root_cert.as_deref()) {
            (SslMode::Disable, _) => Ok(Check::Nothing),
            (SslMode::Prefer | SslMode::Require, None) => Ok(Check::Encryption),
            (SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, Some(path)) => Ok(Check::Chain(path)),
            (SslMode::VerifyFull, Some(path)) => Ok(Check::ChainAndHost(path)),
            (mode @ (SslMode::VerifyCa | SslMode::VerifyFull), None) => Err(Error::Config(format!(
                "sslmode={mode} needs sslrootcert: the path of a PEM file with the CA certificate(s) that signed the server's certificate"
            ))),
        }
    }

    /// The mode tokio-postgres is configured with.
    pub(crate) fn negotiation(&self) -> tokio_postgres::config::SslMode {
        self.mode.negotiation()
    }

    /// The connector that makes the checks of this configuration, also for
    /// the cancel requests of the pool's connections.
    #[cfg(feature = "tls-rustls")]
    pub(crate) fn connector(&self) -> Result<Connector> {
        use std::sync::Arc;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let verifier = match self.check()? {
            Check::Nothing | Check::Encryption => Verifier { roots: None, check_host: false, algorithms },
            Check::Chain(path) => Verifier { roots: Some(Arc::new(load_roots(path)?)), check_host: false, algorithms },
            Check::ChainAndHost(path) => {
                Verifier { roots: Some(Arc::new(load_roots(path)?)), check_host: true, algorithms }
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Connector::new(config))
    }

    /// Without TLS support, only plain TCP: `prefer` then means that.
    #[cfg(not(feature = "tls-rustls"))]
    pub(crate) fn connector(&self) -> Result<Connector> {
        let with_root_cert = match self.check()? {
            Check::Nothing => return Ok(tokio_postgres::NoTls),
            Check::Encryption if self.mode == SslMode::Prefer => return Ok(tokio_postgres::NoTls),
            Check::Encryption => String::new(),
            Check::Chain(path) | Check::ChainAndHost(path) => format!(" with sslrootcert {}", path.display()),
        };
        Err(Error::Config(format!(
            "sslmode={}{with_root_cert} asks for TLS, which this build of orm-core leaves out: enable its `tls-rustls` feature",
            self.mode
        )))
    }

    /// Why a connection failed, in terms of this configuration, when TLS
    /// had a part in it: the server's certificate failed a check, or the
    /// server wants TLS and the connection had none.
    pub(crate) fn explain(&self, error: &tokio_postgres::Error) -> Option<String> {
        if let Some(db) = error.as_db_error() {
            // PostgreSQL's words when no pg_hba.conf entry matches: "...,
            // no encryption" (or "SSL encryption", "GSS encryption").
            let wants_tls = *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && db.message().starts_with("no pg_hba.conf entry")
                && db.message().ends_with("no encryption");
            return wants_tls.then(|| {
                let cure = if cfg!(feature = "tls-rustls") {
                    "use sslmode=require or stronger"
                } else {
                    "enable orm-core's `tls-rustls` feature and use sslmode=require or stronger"
                };
                format!(
                    "server requires TLS: pg_hba.conf has no entry for this connection without encryption, and sslmode={} sent none; {cure} ({} (SQLSTATE {}))",
                    self.mode,
                    db.message(),
                    db.code().code()
                )
            });
        }
        #[cfg(feature = "tls-rustls")]
        if let Some(tls_error) = rustls_error(error) {
            return Some(self.explain_rustls(tls_error));
        }
        None
    }

    #[cfg(feature = "tls-rustls")]
    fn explain_rustls(&self, error: &rustls::Error) -> String {
        use rustls::CertificateError;

        let mismatch = |host: &str| {
            format!(
                "host name mismatch: the server's certificate does not name {host}, and sslmode=verify-full requires it to; connect by a name the certificate lists ({error})"
            )
        };
        let root_cert = self.root_cert.as_deref().map_or_else(String::new, |path| path.display().to_string());
        let rustls::Error::InvalidCertificate(certificate) = error else {
            return format!("TLS handshake failed (sslmode={}): {error}", self.mode);
        };
        match certificate {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "certificate not trusted by sslrootcert {root_cert}: the server's certificate does not chain to a CA there (sslmode={}; {error})",
                self.mode
            ),
            CertificateError::NotValidForNameContext { expected, .. } => mismatch(&expected.to_str()),
            CertificateError::NotValidForName => mismatch("the host connected to"),
            _ => format!("the server's certificate was refused (sslmode={}): {error}", self.mode),
        }
    }
}

/// What tokio-postgres connects with: rustls, with the checks of a
/// [`TlsConfig`].
#[cfg(feature = "tls-rustls")]
pub(crate) type Connector = tokio_postgres_rustls::MakeRustlsConnect;

/// What tokio-postgres connects with: plain TCP only.
#[cfg(not(feature = "tls-rustls"))]
pub(crate) type Connector = tokio_postgres::NoTls;

/// The rustls error behind a failed handshake. tokio-rustls wraps it in an
/// `io::Error`, whose `source()` skips the error it wraps.
#[cfg(feature = "tls-rustls")]
fn rustls_error(error: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut cause = std::error::Error::source(error);
    while let Some(current) = cause {
        if let Some(found) = current.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        cause = current.source();
    }
    None
}

/// The CA certificates of an `sslrootcert` file.
#[cfg(feature = "tls-rustls")]
fn load_roots(path: &Path) -> Result<rustls::RootCertStore> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let unreadable = |e: &dyn fmt::Display| Error::Config(format!("cannot read sslrootcert {}: {e}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
        let certificate = certificate.map_err(|e| unreadable(&e))?;
        roots.add(certificate).map_err(|e| {
            Error::Config(format!("sslrootcert {}: a certificate there is not usable as a CA: {e}", path.display()))
        })?;
    }
    if roots.is_empty() {
        return Err(Error::Config(format!(
            "sslrootcert {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(roots)
}

/// The checks of libpq's modes, which rustls's own verifier cannot make:
/// it always checks the host name (`verify-ca` must not), and never accepts
/// a certificate unchecked (`require` without a CA file must).
#[cfg(feature = "tls-rustls")]
#[derive(Debug)]
struct Verifier {
    /// The CAs the certificate must chain to; `None` accepts any certificate.
    roots: Option<std::sync::Arc<rustls::RootCertStore>>,
    /// Whether the certificate must also name the host.
    check_host: bool,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

#[cfg(feature = "tls-rustls")]
impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let certificate = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &certificate,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
            if self.check_host {
                rustls::client::verify_server_name(&certificate, server_name)?;
            }
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    // The handshake's signatures are checked in every mode: they prove the
    // server holds the key of the certificate it sent.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &rustls::pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &rustls::pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Takes `sslmode` and `sslrootcert` out of a connection string, in URL or
/// `key=value` form, for tokio-postgres to parse the rest. When a parameter
/// repeats, the last one counts, as in libpq. A string tokio-postgres
/// cannot parse is returned as it is, for tokio-postgres to say why.
pub(crate) fn take_from_url(url: &str) -> Result<(Cow<'_, str>, TlsConfig)> {
    let mut tls = TlsConfig::default();
    let mut take = |key: &str, value: Cow<'_, str>| -> Result<bool> {
        match key {
            "sslmode" => tls.mode = value.parse()?,
            "sslrootcert" if value == "system" => {
                return Err(Error::Config(
                    "sslrootcert=system (the operating system's CAs) is not supported: give the path of a PEM file of CA certificates".into(),
                ))
            }
            "sslrootcert" => tls.root_cert = Some(PathBuf::from(value.into_owned())),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if let Some(after_scheme) =
        ["postgres://", "postgresql://"].iter().find_map(|scheme| url.strip_prefix(scheme))
    {
        let Some((main, query)) = after_scheme.split_once('?') else { return Ok((Cow::Borrowed(url), tls)) };
        let mut kept = Vec::new();
        for param in query.split('&') {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
            if !take(&key, percent_encoding::percent_decode_str(value).decode_utf8_lossy())? {
                kept.push(param);
            }
        }
        let main = &url[..url.len() - after_scheme.len() + main.len()];
        if kept.is_empty() {
            Cow::Borrowed(main)
        } else {
            Cow::Owned(format!("{main}?{}", kept.join("&")))
        }
    } else {
        let Some(params) = key_value_params(url) else { return Ok((Cow::Borrowed(url), tls)) };
        let mut rest = String::with_capacity(url.len());
        let mut copied = 0;
        for (span, key, value) in params {
            if take(key, value)? {
                rest.push_str(&url[copied..span.start]);
                copied = span.end;
            }
        }
        rest.push_str(&url[copied..]);
        Cow::Owned(rest)
    };
    Ok((rest, tls))
}

/// A parameter of a `key=value` connection string: the span it takes up,
/// its keyword and its value.
type KeyValue<'a> = (Range<usize>, &'a str, Cow<'a, str>);

/// The parameters of a `key=value` connection string, read as tokio-postgres
/// reads them: values may be quoted in `'...'`, and a backslash escapes the
/// next character. `None` if the string is malformed.
fn key_value_params(s: &str) -> Option<Vec<KeyValue<'_>>> {
    let mut params = Vec::new();
    let mut at = 0;
    loop {
        at += s[at..].len() - s[at..].trim_start().len();
        if at == s.len() {
            return Some(params);
        }
        let start = at;
        let key_len = s[at..].find(|c: char| c.is_whitespace() || c == '=').unwrap_or(s.len() - at);
        let key = &s[at..at + key_len];
        at += key_len;
        at += s[at..].len() - s[at..].trim_start().len();
        at += s[at..].strip_prefix('=').map(|_| 1)?;
        at += s[at..].len() - s[at..].trim_start().len();
        let quoted = s[at..].starts_with('\'');
        if quoted {
            at += 1;
        }
        let mut value = String::new();
        let mut chars = s[at..].char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '\'')) if quoted => break at + i + 1,
                Some((i, c)) if !quoted && c.is_whitespace() => break at + i,
                Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                Some((_, c)) => value.push(c),
                None if quoted => return None,
                None => break s.len(),
            }
        };
        if key.is_empty() || (!quoted && value.is_empty()) {
            return None;
        }
        params.push((start..end, key, Cow::Owned(value)));
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(url: &str) -> (String, TlsConfig) {
        let (rest, tls) = take_from_url(url).unwrap();
        (rest.into_owned(), tls)
    }

    fn tls(mode: SslMode, root_cert: Option<&str>) -> TlsConfig {
        TlsConfig { mode, root_cert: root_cert.map(PathBuf::from) }
    }

    #[test]
    fn takes_the_tls_parameters_out_of_a_url() {
        assert_eq!(
            take("postgres://u:p@h:5/db?sslmode=verify-full&connect_timeout=3&sslrootcert=%2Fca%20dir%2Fca.pem"),
            ("postgres://u:p@h:5/db?connect_timeout=3".into(), tls(SslMode::VerifyFull, Some("/ca dir/ca.pem")))
        );
        assert_eq!(
            take("postgresql://h/db?sslmode=disable"),
            ("postgresql://h/db".into(), tls(SslMode::Disable, None))
        );
        assert_eq!(take("postgres://h/db"), ("postgres://h/db".into(), TlsConfig::default()));
        // The last of a repeated parameter counts.
        assert_eq!(take("postgres://h?sslmode=require&sslmode=verify-ca").1.mode, SslMode::VerifyCa);
        // What tokio-postgres rejects, it still sees.
        assert_eq!(take("postgres://h?nonsense").0, "postgres://h?nonsense");
    }

    #[test]
    fn takes_the_tls_parameters_out_of_key_value_form() {
        assert_eq!(
            take("host=h sslmode = verify-ca  user=u sslrootcert='/a \\'b\\'/ca.pem' dbname=d"),
            ("host=h   user=u  dbname=d".into(), tls(SslMode::VerifyCa, Some("/a 'b'/ca.pem")))
        );
        assert_eq!(take("sslrootcert=/x\\ y.pem"), (String::new(), tls(SslMode::Prefer, Some("/x y.pem"))));
        assert_eq!(take("host=h password='a b'"), ("host=h password='a b'".into(), TlsConfig::default()));
        // Malformed: left for tokio-postgres to report.
        assert_eq!(take("host=h sslmode"), ("host=h sslmode".into(), TlsConfig::default()));
        assert_eq!(take("host='h sslmode=require"), ("host='h sslmode=require".into(), TlsConfig::default()));
    }

    #[test]
    fn refuses_unknown_modes_and_the_system_store() {
        for url in ["postgres://h?sslmode=verify_full", "sslmode=allow", "postgres://h?sslrootcert=system"] {
            let error = take_from_url(url).unwrap_err();
            assert!(matches!(error, Error::Config(_)), "{url}: {error}");
        }
    }

    #[test]
    fn checks_follow_libpq() {
        let ca = Some("/ca.pem");
        assert!(matches!(tls(SslMode::Disable, ca).check(), Ok(Check::Nothing)));
        assert!(matches!(tls(SslMode::Prefer, None).check(), Ok(Check::Encryption)));
        assert!(matches!(tls(SslMode::Require, None).check(), Ok(Check::Encryption)));
        // With a CA file, require checks the chain, as verify-ca does.
        assert!(matches!(tls(SslMode::Require, ca).check(), Ok(Check::Chain(_))));
        assert!(matches!(tls(SslMode::VerifyCa, ca).check(), Ok(Check::Chain(_))));
        assert!(matches!(tls(SslMode::VerifyFull, ca).check(), Ok(Check::ChainAndHost(_))));
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let Err(Error::Config(message)) = tls(mode, None).check() else { panic!("{mode} without a CA file") };
            assert!(message.contains("needs sslrootcert"), "{message}");
        }
    }

    #[cfg(not(feature = "tls-rustls"))]
    #[test]
    fn without_tls_support_only_plain_connections_are_configured() {
        assert!(tls(SslMode::Disable, None).connector().is_ok());
        assert!(tls(SslMode::Prefer, None).connector().is_ok());
        for config in [tls(SslMode::Require, None), tls(SslMode::Prefer, Some("/ca.pem"))] {
            let Err(Error::Config(message)) = config.connector() else { panic!("{config:?} connected") };
            assert!(message.contains("enable its `tls-rustls` feature"), "{message}");
        }
    }
}
