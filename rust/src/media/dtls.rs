//! str0m's aws-lc DTLS backend, with one dimpl `Config` for the whole process.
//!
//! str0m-aws-lc-rs builds a fresh `dimpl::Config` for every PeerConnection, and
//! `Config::build` self-tests the crypto provider each time: a full ECDH exchange
//! on X25519, P-256 and P-384. Only one of those groups is then used by the
//! handshake, and P-384 alone was about 5 % of the generator's CPU while
//! participants joined. dimpl shares a `Config` behind an `Arc` by design, so
//! this provider builds it once (per MTU) and otherwise only wraps dimpl's
//! `Dtls`, which does all the DTLS work. The other crypto providers (SRTP,
//! hashes) stay aws-lc's, from `str0m::crypto::from_feature_flags`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::crypto::CryptoProvider;
use str0m_proto::crypto::dtls::{DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, ProtocolVersion};
use str0m_proto::crypto::{CryptoError, DtlsVersion};

/// The process's str0m crypto provider: aws-lc throughout, DTLS configured once.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            static DTLS: SharedConfigDtls =
                SharedConfigDtls { configs: Mutex::new(Vec::new()), aws_lc: OnceLock::new() };
            let mut provider = str0m::crypto::from_feature_flags();
            DTLS.aws_lc.get_or_init(|| provider.dtls_provider);
            provider.dtls_provider = &DTLS;
            Arc::new(provider)
        })
        .clone()
}

struct SharedConfigDtls {
    /// dimpl configs by MTU: str0m passes the same one for every PeerConnection, so this holds one.
    configs: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>>,
    /// str0m-aws-lc-rs's own provider, which still generates certificates.
    aws_lc: OnceLock<&'static dyn DtlsProvider>,
}

impl std::fmt::Debug for SharedConfigDtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConfigDtls").finish()
    }
}

impl SharedConfigDtls {
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        let mut configs = self.configs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, config)) = configs.iter().find(|(m, _)| *m == mtu) {
            return Ok(Arc::clone(config));
        }
        // As str0m-aws-lc-rs configures it: ICE has proven return routability before DTLS
        // starts, so the server cookie exchange would only add a round trip.
        let mut builder = dimpl::Config::builder().use_server_cookie(false);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(builder.build().map_err(|e| CryptoError::Other(format!("DTLS config: {e}")))?);
        configs.push((mtu, Arc::clone(&config)));
        Ok(config)
    }
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.aws_lc.get().and_then(|provider| provider.generate_certificate())
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert = cert.clone();
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => return Err(CryptoError::Other(format!("unsupported DTLS version {other}"))),
        };
        Ok(Box::new(SharedConfigInstance { dtls }))
    }
}

/// One PeerConnection's DTLS: dimpl's state machine, unchanged.
struct SharedConfigInstance {
    dtls: dimpl::Dtls,
}

impl std::fmt::Debug for SharedConfigInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConfigInstance").finish()
    }
}

impl DtlsInstance for SharedConfigInstance {
    fn set_active(&mut self, active: bool) {
        self.dtls.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.dtls.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.dtls.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.dtls.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.dtls.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.dtls.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.dtls.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.dtls.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.dtls.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.dtls.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_connection_shares_one_config_per_mtu() {
        let dtls = SharedConfigDtls { configs: Mutex::new(Vec::new()), aws_lc: OnceLock::new() };
        let first = dtls.config(None).unwrap();
        assert!(Arc::ptr_eq(&first, &dtls.config(None).unwrap()));
        let small = dtls.config(Some(1_150)).unwrap();
        assert!(!Arc::ptr_eq(&first, &small));
        assert!(Arc::ptr_eq(&small, &dtls.config(Some(1_150)).unwrap()));
    }

    #[test]
    fn the_provider_still_generates_certificates_and_keeps_aws_lc_for_srtp() {
        let provider = crypto_provider();
        assert!(provider.dtls_provider.generate_certificate().is_some());
        assert!(Arc::ptr_eq(&provider, &crypto_provider()));
    }
}
