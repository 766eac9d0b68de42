//! TLS with libpq's meanings: a URL's `sslmode` (disable, prefer, require,
//! verify-ca, verify-full), `sslrootcert` (a PEM file, or `system` for the
//! well-known roots), `sslcert` and `sslkey` (a client certificate). The same
//! settings and the same verifier serve the ordinary connections
//! (tokio-postgres with rustls) and the replication connection (see
//! `bridge`).
//!
//! tokio-postgres knows only disable/prefer/require and none of the file
//! options, so they are taken out of the URL here before it parses the rest.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::error::{Error, Result};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SslMode {
    Disable,
    /// libpq's default: TLS if the server offers it, unverified.
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A connection's TLS settings, from its URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tls {
    pub(crate) mode: SslMode,
    /// `sslrootcert`: a PEM file of CA certificates; None with `system`.
    pub(crate) root_cert: Option<PathBuf>,
    /// `sslrootcert=system`: the well-known public roots.
    pub(crate) system_roots: bool,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
}

const KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Parses `url` (a `postgres://` URL or `key=value` pairs) into what
/// tokio-postgres takes and the TLS settings.
pub(crate) fn parse(section: &str, url: &str) -> Result<(tokio_postgres::Config, Tls)> {
    let bad = |why: String| {
        Error::Config(format!(
            "[{section}] url is not a PostgreSQL URL ({why}); write it as postgres://user:password@host:port/database?sslmode=verify-full&sslrootcert=/path/ca.crt"
        ))
    };
    let (rest, pairs) = split_options(url);
    let (tcp, pairs): (Vec<_>, Vec<_>) = pairs
        .into_iter()
        .partition(|(k, _)| super::TCP_KEYS.contains(&k.as_str()));
    let mut tls = Tls::default();
    for (key, value) in pairs {
        match key.as_str() {
            "sslmode" => {
                tls.mode = match value.as_str() {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(bad(format!("sslmode '{other}' is not one of disable, prefer, require, verify-ca, verify-full"))),
                }
            }
            "sslrootcert" if value == "system" => tls.system_roots = true,
            "sslrootcert" => tls.root_cert = Some(PathBuf::from(value)),
            "sslcert" => tls.cert = Some(PathBuf::from(value)),
            _ => tls.key = Some(PathBuf::from(value)),
        }
    }
    // libpq: with a root certificate given, require verifies the chain.
    if tls.mode == SslMode::Require && (tls.root_cert.is_some() || tls.system_roots) {
        tls.mode = SslMode::VerifyCa;
    }
    if tls.cert.is_some() != tls.key.is_some() {
        return Err(bad("sslcert and sslkey go together".into()));
    }
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| bad(e.to_string()))?;
    super::tcp_settings(&mut config, &tcp).map_err(bad)?;
    config.ssl_mode(match tls.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    Ok((config, tls))
}

fn taken_key(key: &str) -> bool {
    KEYS.contains(&key) || super::TCP_KEYS.contains(&key)
}

/// Takes the TLS and TCP options out of `url`: the URL without them, and them
/// (values percent-decoded).
fn split_options(url: &str) -> (String, Vec<(String, String)>) {
    let mut taken = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), taken);
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some((k, v)) if taken_key(k) => taken.push((k.to_string(), decode(v))),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, taken);
    }
    // key=value pairs: values of the TLS keys are taken whole (quoted or not).
    let mut kept = Vec::new();
    for token in url.split_whitespace() {
        match token.split_once('=') {
            Some((k, v)) if taken_key(k) => {
                taken.push((k.to_string(), v.trim_matches('\'').to_string()))
            }
            _ => kept.push(token),
        }
    }
    (kept.join(" "), taken)
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::Config(format!(
        "cannot read {what} {} ({e}); fix the path in the url",
        path.display()
    ))
}

impl Tls {
    /// The CA certificates to verify the server with.
    fn roots(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        if self.system_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if let Some(path) = &self.root_cert {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| file_error("sslrootcert", path, e))?
            {
                let cert = cert.map_err(|e| file_error("sslrootcert", path, e))?;
                roots
                    .add(cert)
                    .map_err(|e| file_error("sslrootcert", path, e))?;
            }
        }
        if roots.is_empty() {
            return Err(Error::Config(
                "sslmode verify-ca and verify-full need the CA that signed the server's certificate; add sslrootcert=/path/ca.crt (or sslrootcert=system) to the url".into(),
            ));
        }
        Ok(roots)
    }

    /// The rustls configuration for the ordinary connections.
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig> {
        let provider = provider();
        let chain = match self.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => None,
            SslMode::VerifyCa | SslMode::VerifyFull => Some(
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(self.roots()?),
                    provider.clone(),
                )
                .build()
                .map_err(|e| Error::Config(format!("sslrootcert: {e}; fix the url")))?,
            ),
        };
        let verifier = Arc::new(Verifier {
            provider: provider.clone(),
            chain,
            check_name: self.mode == SslMode::VerifyFull,
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let certs = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| file_error("sslcert", cert, e))?;
                let key =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("sslkey", key, e))?;
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    Error::Config(format!(
                        "sslcert and sslkey do not go together ({e}); fix the url"
                    ))
                })
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }
}

/// The server's certificate, checked as the mode says: `require` and
/// `prefer` take any (encrypted, the server not verified: libpq's
/// meaning); `verify-ca` checks the chain against the roots, `verify-full`
/// the host name too. Handshake signatures are always checked.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    /// None: any certificate.
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
}

impl Verifier {
    fn algorithms(&self) -> &rustls::crypto::WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // The chain is verified before the name.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name || common_name_matches(end_entity, server_name) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

/// libpq's last resort for a certificate that names no host or address in
/// a subjectAltName: its subject's CN is the server's name (a `*.` first
/// label matches one label).
fn common_name_matches(cert: &CertificateDer<'_>, server_name: &ServerName<'_>) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    let names_a_host = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, GeneralName::DNSName(_) | GeneralName::IPAddress(_)))
        });
    if names_a_host {
        return false;
    }
    let wanted = server_name.to_str().to_ascii_lowercase();
    let names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_ascii_lowercase)
        .collect();
    names.iter().any(|cn| match cn.strip_prefix("*.") {
        Some(rest) => wanted
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => *cn == wanted,
    })
}

/// What a failed connection's TLS trouble asks the user to change, if
/// TLS is why it failed.
pub(crate) fn fix_for(section: &str, error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let text = crate::error::chain(error);
    let fix = if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        "the server's certificate is not signed by a CA in sslrootcert; set sslrootcert to the CA that signed it"
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        "the server's certificate does not name the host in the url; connect by the name on the certificate, or use sslmode=verify-ca"
    } else if text.contains("no encryption") {
        "the server accepts only TLS connections; set sslmode=verify-full and sslrootcert in the url"
    } else if text.contains("server does not support TLS") || text.contains("SSLRequest rejected") {
        "the server does not offer TLS; turn ssl on at the server, or lower sslmode in the url"
    } else if text.contains("UnsupportedCertVersion") {
        "the server's certificate is an X.509 v1 certificate, which relaysync cannot verify; reissue it as v3 (a certificate with a subjectAltName is one)"
    } else if text.contains("Expired") || text.contains("certificate expired") {
        "the server's certificate has expired; renew it"
    } else {
        return None;
    };
    Some(format!("{fix} ([{section}] url)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_taken_out_of_urls() {
        let (c, tls) = parse(
            "relay",
            "postgres://u:p@db.example:6432/relay?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.crt&application_name=x",
        )
        .unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca.crt")));
        assert_eq!(c.get_application_name(), Some("x"));
        let (_, tls) = parse("ho", "host=h dbname=d sslmode=require sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            tls.mode,
            SslMode::VerifyCa,
            "require with a CA verifies it, as libpq"
        );
        let (_, tls) = parse("ho", "postgres://h/d").unwrap();
        assert_eq!(tls.mode, SslMode::Prefer);
        assert!(parse("ho", "postgres://h/d?sslmode=sometimes").is_err());
        assert!(parse("ho", "postgres://h/d?sslcert=/c.pem").is_err());
    }
}
