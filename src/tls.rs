//! TLS for clients: the server's certificate and key, and optionally the CA that client certificates must be
//! signed by (Redis: tls-cert-file, tls-key-file, tls-ca-cert-file with tls-auth-clients yes).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{self, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or held nothing of the expected kind.
    #[error("cannot read {what} from {path}: {reason}")]
    Read {
        /// Certificate, key or CA.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the certificates or key.
    #[error("invalid TLS settings: {0}")]
    Invalid(String),
}

/// Accepts TLS connections with one certificate; built once at start-up.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    /// Whether clients must present a certificate.
    pub client_auth: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("client_auth", &self.client_auth).finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the certificate chain and key (PEM); with `client_ca`, clients must present a certificate signed by
    /// one of its certificates.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Tls, TlsError> {
        let (chain, key_der) = read_pair(cert, key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
        let builder = match client_ca {
            Some(ca) => {
                let read = |reason: String| TlsError::Read { what: "CA certificates", path: ca.into(), reason };
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(ca)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| read(e.to_string()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(read("no usable certificate in it".into()));
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| TlsError::Invalid(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(chain, key_der).map_err(|e| TlsError::Invalid(e.to_string()))?;
        Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(config)), client_auth: client_ca.is_some() })
    }

    /// The acceptor that runs the handshake on a new connection.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// Reads a certificate chain and its private key (PEM).
fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let read = |what: &'static str, path: &Path, reason: String| TlsError::Read { what, path: path.into(), reason };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| read("certificates", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(read("certificates", cert, "no certificate in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| read("a private key", key, e.to_string()))?;
    Ok((chain, key_der))
}

/// The client side of `rediscover --ping` on a TLS port: it trusts exactly the certificate the server was given
/// (the same files), whatever name or CA it has, and presents it as its own when clients must have one.
pub fn self_check_client(cert: &Path, key: &Path, present_cert: bool) -> Result<ClientConfig, TlsError> {
    let (chain, key_der) = read_pair(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned = Pinned { cert: chain[0].clone(), algorithms: provider.signature_verification_algorithms };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned));
    if present_cert {
        builder.with_client_auth_cert(chain, key_der).map_err(|e| TlsError::Invalid(e.to_string()))
    } else {
        Ok(builder.with_no_client_auth())
    }
}

/// Trusts one certificate, byte for byte; signatures are still checked against its key.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("the server presented another certificate than --tls-cert".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
