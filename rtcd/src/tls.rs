//! TLS for the HTTP API: PEM certificate chain and key into a rustls server configuration
//! (TLS 1.2+, ring provider), with errors that name the file.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Reads a PEM certificate chain.
pub fn load_certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    std::fs::metadata(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(certs)
}

/// Builds the server configuration from the two files, checking that the key matches.
pub fn server_config(cert_file: &str, key_file: &str) -> Result<rustls::ServerConfig, String> {
    let certs = load_certificates(cert_file)?;
    std::fs::metadata(key_file).map_err(|e| format!("cannot read {key_file}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("cannot read a PEM private key from {key_file}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{key_file} does not match {cert_file}: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
