//! The light media tier: one str0m WebRTC transport per PeerConnection, driven sans-I/O
//! by `peer`, and an I/O shell (`hub`) that owns the UDP sockets and a worker thread.

pub mod clip;
pub mod data;
pub mod deadline;
pub mod dtls;
pub mod hub;
pub mod lag;
pub mod peer;
mod prefetch;
mod publish;
pub mod recv;
mod rtp_sink;
pub mod rxstats;
pub mod sdp;
pub mod send;
pub mod srtp_rx;
mod transport;
pub mod types;

use str0m::config::DtlsCert;

/// One self-signed DTLS certificate for the whole process: generating one per
/// PeerConnection costs tens of milliseconds, reusing it is standard for servers and
/// safe here (DTLS uses ephemeral ECDHE keys; the certificate only authenticates).
pub fn shared_certificate() -> Result<DtlsCert, String> {
    use std::sync::OnceLock;
    static CERT: OnceLock<Result<DtlsCert, String>> = OnceLock::new();
    CERT.get_or_init(|| {
        dtls::crypto_provider()
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| "could not generate a DTLS certificate".to_string())
    })
    .clone()
}
