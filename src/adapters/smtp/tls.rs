//! The TLS client configuration: rustls with an explicit ring provider, never the
//! process-wide default, so the host may link any other provider (or none).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;

/// Parses root certificates given as DER or PEM.
pub(crate) fn parse_roots(inputs: &[Vec<u8>]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut roots = Vec::new();
    for (n, input) in inputs.iter().enumerate() {
        let is_pem = input
            .windows(b"-----BEGIN".len())
            .any(|w| w == b"-----BEGIN");
        if is_pem {
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(input) {
                let cert =
                    cert.map_err(|e| format!("root certificate {} is not valid PEM: {e}", n + 1))?;
                roots.push(cert.into_owned());
                found += 1;
            }
            if found == 0 {
                return Err(format!(
                    "root certificate {} is PEM without a CERTIFICATE block",
                    n + 1
                ));
            }
        } else {
            roots.push(CertificateDer::from(input.clone()));
        }
    }
    Ok(roots)
}

/// Builds the connector: the platform's roots plus `roots`, or no verification at
/// all when `accept_invalid` (tests only).
pub(crate) fn connector(
    roots: Vec<CertificateDer<'static>>,
    accept_invalid: bool,
) -> Result<TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = if accept_invalid {
        Arc::new(AcceptAnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        })
    } else {
        Arc::new(
            rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider)
                .map_err(|e| format!("TLS root certificates: {e}"))?,
        )
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Checks that the host is something a certificate can be checked against.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| format!("`{host}` is not a valid TLS server name"))
}

/// Accepts any certificate (`with_accept_invalid_certs(true)`), but still checks
/// that the handshake was signed by the key in the certificate presented.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
