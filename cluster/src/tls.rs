//! TLS for a throwaway cluster: a CA made for it, a server certificate for
//! `localhost` and `127.0.0.1` signed by that CA, and a pg_hba.conf that takes TCP
//! connections only over TLS with a SCRAM password.

use std::path::Path;

use crate::{io, Error, Result};

/// The CA's certificate, in the cluster's directory.
pub(crate) const CA_FILE: &str = "ca.crt";

/// The role that logs in with the client certificate, and its files.
pub const CERT_USER: &str = "relaysync_cert";
pub(crate) const CLIENT_CERT: (&str, &str) = ("client.crt", "client.key");

/// postgresql.conf lines of a TLS cluster.
pub(crate) const SETTINGS: &str =
    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
     ssl_ca_file = 'ca.crt'\npassword_encryption = 'scram-sha-256'\n";

const HBA: &str = "local all all trust\n\
     hostssl all relaysync_cert 127.0.0.1/32 cert\n\
     hostssl all all 127.0.0.1/32 scram-sha-256\n\
     hostssl all all ::1/128 scram-sha-256\n";

fn cert_error(e: rcgen::Error) -> Error {
    Error::Setup(format!("generating the cluster's certificates: {e}"))
}

/// How the server's certificate names the server.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ServerCert {
    /// subjectAltNames `localhost` and `127.0.0.1`.
    AltNames,
    /// Only its subject's CN, `localhost`.
    CommonName,
}

/// Writes the certificates, the server's key, a client certificate for
/// [`CERT_USER`] and pg_hba.conf into `dir`.
pub(crate) fn prepare(dir: &Path, user: Option<(u32, u32)>, cert: ServerCert) -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().map_err(cert_error)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "relaysync throwaway CA");
    let ca_cert = ca.self_signed(&ca_key).map_err(cert_error)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().map_err(cert_error)?;
    let server = match cert {
        ServerCert::AltNames => {
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
                .map_err(cert_error)?
        }
        ServerCert::CommonName => {
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
            params
                .distinguished_name
                .push(DnType::CommonName, "localhost");
            params
        }
    };
    let server_cert = server.signed_by(&server_key, &issuer).map_err(cert_error)?;
    let client_key = KeyPair::generate().map_err(cert_error)?;
    let mut client = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    client
        .distinguished_name
        .push(DnType::CommonName, CERT_USER);
    let client_cert = client.signed_by(&client_key, &issuer).map_err(cert_error)?;
    for (name, text, private) in [
        (CLIENT_CERT.0, client_cert.pem(), false),
        (CLIENT_CERT.1, client_key.serialize_pem(), true),
        (CA_FILE, ca_cert.pem(), false),
        ("server.crt", server_cert.pem(), false),
        ("server.key", server_key.serialize_pem(), true),
        ("pg_hba.conf", HBA.to_string(), false),
    ] {
        write(&dir.join(name), &text, private, user)?;
    }
    Ok(())
}

fn write(path: &Path, text: &str, private: bool, user: Option<(u32, u32)>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let context = format!("writing {}", path.display());
    std::fs::write(path, text).map_err(io(context.clone()))?;
    let mode = if private { 0o600 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(context.clone()))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io(context))?;
    }
    Ok(())
}
