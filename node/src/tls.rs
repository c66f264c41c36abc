//! TLS for the peer API (rustls, ring): the server configuration from a
//! PEM certificate chain and key, the client side for `wss://` (trusting the
//! certificates in `ZEROMESH_CA_CERT`), and self-signed pairs for testing.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The variable naming a PEM file of certificates a client trusts for `wss://`.
pub const CA_CERT_ENV: &str = "ZEROMESH_CA_CERT";
/// Largest certificate or key file read, in bytes.
const MAX_PEM_FILE_BYTES: usize = 256 * 1024;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(setting: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    crate::files::read_limited(path, MAX_PEM_FILE_BYTES, &format!("setting `{setting}`"))
}

fn certificates(setting: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem(setting, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow::anyhow!("setting `{setting}`: {} is not PEM certificates: {error}", path.display()))?;
    if certificates.is_empty() {
        bail!("setting `{setting}`: {} holds no certificate", path.display());
    }
    Ok(certificates)
}

/// The API's TLS configuration from a certificate chain and its key.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = certificates("tls_cert", cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read_pem("tls_key", key)?)
        .map_err(|error| anyhow::anyhow!("setting `tls_key`: {} is not a PEM private key: {error}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| anyhow::anyhow!("settings `tls_cert` and `tls_key` do not make a TLS identity: {error}"))?;
    Ok(Arc::new(config))
}

/// A client configuration trusting the certificates in `ca_pem`.
pub fn client_config(ca_pem: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(certificate.context("not a PEM certificate")?).context("not a usable certificate")?;
    }
    if roots.is_empty() {
        bail!("no certificate to trust");
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opens a TLS connection to `host:port`, verifying the server against
/// `config` under the name `host`.
pub async fn connect(
    host: &str,
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_owned())?;
    Ok(tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?)
}

/// A self-signed certificate and key (PEM) for these DNS names or IPs.
pub fn self_signed(names: &[String]) -> anyhow::Result<(String, String)> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
    Ok((certified.cert.pem(), certified.key_pair.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_pair_makes_a_server_and_a_client_that_trusts_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), &key).unwrap();
        server_config(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).expect("a server identity");
        client_config(cert.as_bytes()).expect("a client trusting it");
        let wrong = server_config(&dir.path().join("key.pem"), &dir.path().join("cert.pem")).unwrap_err();
        assert!(wrong.to_string().contains("tls_cert"), "{wrong}");
        assert!(client_config(b"not pem").is_err());
    }
}
