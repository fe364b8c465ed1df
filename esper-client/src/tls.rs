//! TLS to Esper: the rustls client configuration of a client profile
//! (`esper_ssl_verify`, `esper_ssl_trusted_certificate`, `esper_http2`).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::profile::{ClientProfile, Http2};

/// The client configuration of `profile`. Certificates come from
/// `esper_ssl_trusted_certificate` only, or else from the system's store
/// (which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`).
pub fn client_config(profile: &ClientProfile) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let mut config = if profile.verify {
        builder.with_root_certificates(roots(profile)?).with_no_client_auth()
    } else {
        // No certificate is checked, so no trust store is loaded: one that
        // is missing or unusable does not stop the calls.
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    // `auto` offers both and takes the server's choice (h2 first: preferred).
    config.alpn_protocols = match profile.http2 {
        Http2::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Http2::On => vec![b"h2".to_vec()],
        Http2::Off => vec![b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

fn roots(profile: &ClientProfile) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if let Some(certs) = &profile.ca_certs {
        for cert in certs.iter() {
            roots.add(cert.clone()).map_err(|e| format!("TLS: trusted certificate: {e}"))?;
        }
        return Ok(roots);
    }
    let native = rustls_native_certs::load_native_certs();
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 && (ignored > 0 || !native.errors.is_empty()) {
        let mut reason =
            format!("TLS: no usable certificate in the system's trust store ({ignored} unusable)");
        for error in &native.errors {
            reason.push_str(&format!("; {error}"));
        }
        return Err(reason);
    }
    Ok(roots)
}

/// `esper_ssl_verify off`: any certificate is accepted, but the handshake's
/// signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
