//! TLS to Postgres, the same for the replication and the query connection, with libpq's
//! `sslmode` meanings: `disable`, `prefer` (the default: TLS when the server offers it,
//! unverified), `require` (TLS, unverified — or `verify-ca` when a root certificate is given,
//! as libpq does), `verify-ca` (chain to `sslrootcert`) and `verify-full` (chain and host name).
//!
//! The crypto provider is aws-lc-rs, passed explicitly to every config: nothing installs a
//! process-wide default, so the AWS SDK's TLS stack and ours cannot disagree about it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::error::ReplicationError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(value: &str) -> Result<Self, ReplicationError> {
        Ok(match value {
            "disable" => Self::Disable,
            // `allow` tries plain text first; we never prefer plain text, so it behaves like prefer.
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(ReplicationError::Config(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether a server that refuses TLS must be refused in turn.
    pub fn tls_required(self) -> bool {
        !matches!(self, Self::Disable | Self::Prefer)
    }
}

/// What `sslmode` and `sslrootcert` asked for, resolved into a rustls config.
#[derive(Clone)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
    config: Option<Arc<ClientConfig>>,
}

impl TlsSettings {
    pub fn new(mode: SslMode, root_cert: Option<PathBuf>) -> Result<Self, ReplicationError> {
        // libpq: with a root certificate, `require` verifies the chain like `verify-ca`.
        let mode = match (mode, &root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        };
        let config = match mode {
            SslMode::Disable => None,
            SslMode::Prefer | SslMode::Require => Some(unverified_config()?),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let path = root_cert.as_deref().ok_or_else(|| {
                    ReplicationError::Config(format!(
                        "sslmode={} needs the CA certificate: add sslrootcert=/path/to/ca.pem to the URL \
                         (or set PGSSLROOTCERT)",
                        mode.as_str()
                    ))
                })?;
                Some(verified_config(path, mode == SslMode::VerifyFull)?)
            }
        };
        Ok(Self {
            mode,
            root_cert,
            config: config.map(Arc::new),
        })
    }

    /// The rustls config, or `None` when TLS is disabled.
    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.config.clone()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, ReplicationError> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ReplicationError::Config(format!("TLS set-up: {e}")))
}

fn unverified_config() -> Result<ClientConfig, ReplicationError> {
    Ok(builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
        .with_no_client_auth())
}

fn verified_config(ca_file: &Path, check_host: bool) -> Result<ClientConfig, ReplicationError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        ReplicationError::Config(format!("cannot read sslrootcert {}: {e}", ca_file.display()))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| unreadable(&e))? {
        roots
            .add(cert.map_err(|e| unreadable(&e))?)
            .map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"no certificate in the file"));
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| ReplicationError::Config(format!("TLS set-up: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if check_host {
        webpki
    } else {
        Arc::new(ChainOnly(webpki))
    };
    Ok(builder()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `prefer` / `require`: encryption without authentication of the server, as libpq does. The
/// handshake signatures are still checked, so the session keys belong to whoever holds the key.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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

/// `verify-ca`: the chain must lead to the CA; the host name is not compared. webpki checks the
/// name only after the chain has verified, so a name mismatch here means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libpq_modes_and_names_a_bad_one() {
        assert_eq!(SslMode::parse("verify-full").unwrap(), SslMode::VerifyFull);
        assert_eq!(SslMode::parse("allow").unwrap(), SslMode::Prefer);
        let err = SslMode::parse("verify_full").unwrap_err().to_string();
        assert!(err.contains("verify_full"), "{err}");
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        let err = TlsSettings::new(SslMode::VerifyFull, None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("sslrootcert"), "{err}");
    }

    #[test]
    fn require_with_a_root_certificate_verifies_the_chain() {
        let err = TlsSettings::new(SslMode::Require, Some("/nonexistent/ca.pem".into()))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
