//! Test helpers: hex decoding, plain RTP packets, and a sender that seals with the session key
//! and IV this module derives (so these unit tests hold the receiver's own consistency; the
//! interop with libsrtp and str0m is rust/tests/srtp_rx_differential.rs's).

use aws_lc_rs::aead::{Aad, LessSafeKey};

use super::header::RtpHeader;
use super::{rtp_nonce, session_key_and_salt, GcmProfile, SALT_LEN};

pub(crate) fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

/// A plain RTP packet: PT 111, no marker, timestamp 960 * SEQ, then `payload`.
pub(super) fn rtp(ssrc: u32, sequence: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, 111];
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(&(u32::from(sequence) * 960).to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

pub(super) struct Sealer {
    key: LessSafeKey,
    salt: [u8; SALT_LEN],
}

impl Sealer {
    pub fn new(profile: GcmProfile, master_key: &[u8], master_salt: &[u8]) -> Self {
        let (key, salt) = session_key_and_salt(profile, master_key, master_salt).unwrap();
        Sealer { key, salt }
    }

    /// SRTP-protects the RTP packet `rtp` at packet index `index`.
    pub fn seal(&self, rtp: &[u8], index: u64) -> Vec<u8> {
        let header = RtpHeader::parse(rtp).unwrap();
        let (aad, payload) = rtp.split_at(header.header_len);
        let mut body = payload.to_vec();
        let nonce = rtp_nonce(&self.salt, header.ssrc, index);
        self.key.seal_in_place_append_tag(nonce, Aad::from(aad), &mut body).unwrap();
        [aad, &body].concat()
    }
}
