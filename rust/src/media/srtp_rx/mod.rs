//! An SRTP receive path of our own, for RTP streams str0m has already set up.
//!
//! # Theory of operation
//!
//! str0m decrypts every received SRTP packet through its whole receive machinery. For a stream
//! it already knows, the crypto and the SRTP bookkeeping are a small, fixed part of that, so the
//! media tier can do them here and tell str0m only the result. Per packet, `SrtpReceiver::open`:
//!
//! 1. parses the RTP header (V=2, CSRCs, an RFC 8285 extension block) by bounds-checked reads;
//! 2. finds the SSRC's state in a short `Vec` (a subscriber has a handful of SSRCs);
//! 3. estimates the 48-bit packet index from SEQ and the highest authenticated index
//!    (RFC 3711 §3.3.1, Appendix A) and checks it against a 128-packet replay window (§3.3.2,
//!    libsrtp's default size), before any AES, as RFC 3711 §3.3 orders it;
//! 4. opens AES-GCM (RFC 7714): AAD = the header, tag = the last 16 octets,
//!    IV = session salt XOR (0x0000 || SSRC || ROC || SEQ) (§8.1), decrypting from the packet
//!    straight into the caller's reusable buffer (no allocation once it has grown);
//! 5. only then moves s_l, the ROC and the window: a forged packet changes nothing.
//!
//! The session key and salt come from the master key and salt by RFC 3711 §4.3's KDF with AES-CM
//! as the PRF (RFC 6188 for 256-bit keys). Every AES operation is aws-lc-rs's (AES-GCM open, AES-CTR
//! for the PRF); the protocol logic around them is ours, held against libsrtp and str0m by
//! rust/tests/srtp_rx_differential.rs.
//!
//! # What it refuses, and why
//!
//! - Profiles other than AEAD_AES_128_GCM and AEAD_AES_256_GCM: str0m prefers AEAD_AES_256_GCM and
//!   livekit-server agrees to it, so AES_CM_128_HMAC_SHA1_80 would be a second code path for a
//!   session that does not arise; should one, str0m keeps decrypting it.
//! - A key derivation rate other than 0, and MKIs: DTLS-SRTP's profiles derive at rate 0
//!   (RFC 5764) and WebRTC negotiates no MKI, so neither can occur on this path.
//! - SRTCP, and SSRCs it was not told to `track`: learning a stream (RTX and simulcast mapping,
//!   the first packet's index) is str0m's; an unknown SSRC goes back to the caller, which hands
//!   the packet to str0m.
//! - Encrypted header extensions (RFC 6904, cryptex): not negotiated, so the whole header is AAD.
//! - Anything not RTP by RFC 7983/5761 demux, headers whose lengths run past the packet, and an
//!   authenticated packet whose RTP padding count exceeds its payload: `Malformed`. Extension
//!   profiles other than RFC 8285's are accepted as RFC 3550 and libsrtp accept them (str0m drops
//!   them); only their transport-wide-cc value is not looked for.

mod header;
mod kdf;
mod replay;

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

use crate::media::prefetch::prefetch;

pub use header::peek_ssrc;
use header::{unpadded_len, RtpHeader};
use replay::StreamState;

/// The authentication tag of both RFC 7714 AEAD profiles: 16 octets.
const TAG_LEN: usize = 16;
/// The master and session salt of both RFC 7714 AEAD profiles: 96 bits.
const SALT_LEN: usize = 12;

/// The SRTP protection profiles this path handles (RFC 7714's DTLS-SRTP profiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcmProfile {
    /// SRTP_AEAD_AES_128_GCM: 16-byte master key.
    Aes128,
    /// SRTP_AEAD_AES_256_GCM: 32-byte master key.
    Aes256,
}

impl GcmProfile {
    /// Master and session key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            GcmProfile::Aes128 => 16,
            GcmProfile::Aes256 => 32,
        }
    }
}

/// Why `open` refused a packet. Only `open`'s `Ok` moved any state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpRxError {
    /// Not an RTP packet, a header or RTP padding past the packet's end, or no room for the tag.
    Malformed,
    /// An SSRC this receiver was not told to `track`.
    UnknownSsrc,
    /// Its index was already received (a replay, or a duplicate the network made).
    Replayed,
    /// Its index is older than the 128-packet replay window: it cannot be told from a replay, so it
    /// is dropped unopened, as libsrtp drops it (`srtp_err_status_replay_old`); on a real network a
    /// packet this late is reordering, not an attack.
    TooOld,
    /// Its index is older than the packet the stream was tracked from (see `track`).
    BeforeFirst,
    /// The AEAD tag did not verify (forged, corrupted, or under another key or index).
    AuthFailed,
    /// Key or salt of the wrong length for the profile, or the 2^48-packet index space is spent.
    BadKey,
}

impl fmt::Display for SrtpRxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SrtpRxError::Malformed => "malformed RTP packet",
            SrtpRxError::UnknownSsrc => "SSRC not tracked",
            SrtpRxError::Replayed => "replayed",
            SrtpRxError::TooOld => "older than the replay window",
            SrtpRxError::BeforeFirst => "older than the stream's first packet",
            SrtpRxError::AuthFailed => "SRTP authentication failed",
            SrtpRxError::BadKey => "unusable SRTP key",
        })
    }
}

impl std::error::Error for SrtpRxError {}

/// What `open` learned from an authenticated packet. The decrypted packet is in the caller's
/// buffer: header at `..header_len`, payload at `header_len..header_len + payload_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedRtp {
    pub ssrc: u32,
    /// The 48-bit SRTP packet index, ROC << 16 | SEQ: str0m's extended sequence number.
    pub index: u64,
    pub sequence: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    pub header_len: usize,
    /// Payload bytes after RTP padding (the P bit) is removed.
    pub payload_len: usize,
    /// The transport-wide-cc sequence number, when the caller named its extension id and the
    /// packet carries it.
    pub transport_cc: Option<u16>,
}

/// SRTP receive state for one DTLS-SRTP session's inbound direction.
pub struct SrtpReceiver {
    key: LessSafeKey,
    salt: [u8; SALT_LEN],
    streams: Vec<StreamState>,
}

impl fmt::Debug for SrtpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key and salt never go to logs.
        let ssrcs: Vec<u32> = self.streams.iter().map(|s| s.ssrc).collect();
        f.debug_struct("SrtpReceiver").field("ssrcs", &ssrcs).finish_non_exhaustive()
    }
}

impl SrtpReceiver {
    /// `master_key` of the profile's length, `master_salt` of 12 bytes; derives the SRTP session
    /// encryption key and salt (labels 0x00 and 0x02) at key derivation rate 0.
    pub fn new(profile: GcmProfile, master_key: &[u8], master_salt: &[u8]) -> Result<Self, SrtpRxError> {
        if master_key.len() != profile.key_len() || master_salt.len() != SALT_LEN {
            return Err(SrtpRxError::BadKey);
        }
        let (key, salt) = session_key_and_salt(profile, master_key, master_salt)?;
        Ok(SrtpReceiver { key, salt, streams: Vec::new() })
    }

    /// Starts accepting `ssrc`, whose packet with index `received_index` (ROC << 16 | SEQ) was
    /// already received and authenticated elsewhere (str0m): s_l and the ROC start there and that
    /// index counts as seen. Packets older than it are refused (`BeforeFirst`), as str0m's receive
    /// register refuses them: libsrtp would take one still inside the window, but a packet str0m
    /// will not account must not be counted here. Tracking a tracked SSRC marks `received_index`
    /// as seen, moving the window up to it when it is newer.
    pub fn track(&mut self, ssrc: u32, received_index: u64) {
        match self.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            Some(existing) => existing.mark_received(received_index),
            None => self.streams.push(StreamState::new(ssrc, received_index)),
        }
    }

    pub fn forget(&mut self, ssrc: u32) {
        self.streams.retain(|s| s.ssrc != ssrc);
    }

    /// Prefetches the stream table a packet's lookup walks (`media::prefetch`): its first and
    /// last entries, which span it for the few streams a subscriber has.
    pub(crate) fn prefetch_streams(&self) {
        if let (Some(first), Some(last)) = (self.streams.first(), self.streams.last()) {
            prefetch(first);
            prefetch(last);
        }
    }

    pub fn is_tracked(&self, ssrc: u32) -> bool {
        self.streams.iter().any(|s| s.ssrc == ssrc)
    }

    /// Authenticates and decrypts one SRTP packet into `plaintext` (cleared first, left empty on
    /// error): the RTP header, then the payload with any RTP padding, what libsrtp's unprotect
    /// returns. `twcc_ext_id`: the negotiated RFC 8285 id of transport-wide-cc, whose value is
    /// returned. Only a packet that authenticates moves the stream's index and replay window
    /// (RFC 3711 §3.3); one whose padding count then proves bad still counts as received.
    pub fn open(
        &mut self,
        packet: &[u8],
        plaintext: &mut Vec<u8>,
        twcc_ext_id: Option<u8>,
    ) -> Result<OpenedRtp, SrtpRxError> {
        plaintext.clear();
        let header = RtpHeader::parse(packet).ok_or(SrtpRxError::Malformed)?;
        let body_len = packet.len().checked_sub(header.header_len + TAG_LEN).ok_or(SrtpRxError::Malformed)?;
        let (aad, rest) = packet.split_at_checked(header.header_len).ok_or(SrtpRxError::Malformed)?;
        let (ciphertext, tag) = rest.split_at_checked(body_len).ok_or(SrtpRxError::Malformed)?;

        let stream = self.streams.iter_mut().find(|s| s.ssrc == header.ssrc).ok_or(SrtpRxError::UnknownSsrc)?;
        let candidate = stream.check(header.sequence)?;

        plaintext.extend_from_slice(aad);
        plaintext.resize(header.header_len + body_len, 0);
        let body = plaintext.get_mut(header.header_len..).ok_or(SrtpRxError::Malformed)?;
        let nonce = rtp_nonce(&self.salt, header.ssrc, candidate.index);
        if self.key.open_separate_gather(nonce, Aad::from(aad), ciphertext, tag, body).is_err() {
            plaintext.clear();
            return Err(SrtpRxError::AuthFailed);
        }
        stream.accept(candidate);

        let payload = plaintext.get(header.header_len..).unwrap_or_default();
        let Some(payload_len) = unpadded_len(payload, header.padding) else {
            plaintext.clear();
            return Err(SrtpRxError::Malformed);
        };
        Ok(OpenedRtp {
            ssrc: header.ssrc,
            index: candidate.index,
            sequence: header.sequence,
            timestamp: header.timestamp,
            payload_type: header.payload_type,
            marker: header.marker,
            header_len: header.header_len,
            payload_len,
            transport_cc: twcc_ext_id.and_then(|id| header.extension_u16(packet, id)),
        })
    }
}

/// The SRTP session encryption key (as an aws-lc-rs AEAD key) and the session salt.
fn session_key_and_salt(
    profile: GcmProfile,
    master_key: &[u8],
    master_salt: &[u8],
) -> Result<(LessSafeKey, [u8; SALT_LEN]), SrtpRxError> {
    let mut session_key = [0u8; 32];
    let session_key = session_key.get_mut(..profile.key_len()).ok_or(SrtpRxError::BadKey)?;
    let mut salt = [0u8; SALT_LEN];
    kdf::aes_cm_prf(master_key, master_salt, kdf::LABEL_RTP_ENCRYPTION, session_key)
        .and_then(|()| kdf::aes_cm_prf(master_key, master_salt, kdf::LABEL_RTP_SALT, &mut salt))
        .map_err(|_| SrtpRxError::BadKey)?;
    let algorithm = match profile {
        GcmProfile::Aes128 => &AES_128_GCM,
        GcmProfile::Aes256 => &AES_256_GCM,
    };
    let key = UnboundKey::new(algorithm, session_key).map_err(|_| SrtpRxError::BadKey)?;
    Ok((LessSafeKey::new(key), salt))
}

/// RFC 7714 §8.1: IV = (0x0000 || SSRC || ROC || SEQ) XOR salt; ROC || SEQ is the 48-bit index.
fn rtp_nonce(salt: &[u8; SALT_LEN], ssrc: u32, index: u64) -> Nonce {
    let mut iv = [0u8; SALT_LEN];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..].copy_from_slice(&index.to_be_bytes()[2..]);
    for (byte, salt_byte) in iv.iter_mut().zip(salt) {
        *byte ^= salt_byte;
    }
    Nonce::assume_unique_for_key(iv)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;
