use aws_lc_rs::aead::{Aad, LessSafeKey, UnboundKey, AES_128_GCM};

use super::testutil::{hex, rtp, Sealer};
use super::*;

const SSRC: u32 = 0x1122_3344;
const KEY_128: [u8; 16] = [7; 16];
const KEY_256: [u8; 32] = [9; 32];
const SALT: [u8; 12] = [3; 12];
const ROC_1: u64 = 1 << 16;

fn pair(profile: GcmProfile) -> (SrtpReceiver, Sealer) {
    let key: &[u8] = if profile == GcmProfile::Aes128 { &KEY_128 } else { &KEY_256 };
    (SrtpReceiver::new(profile, key, &SALT).unwrap(), Sealer::new(profile, key, &SALT))
}

/// Opens SSRC's packet `sequence`, sealed at `index`, returning the index `open` reports.
fn open_at(receiver: &mut SrtpReceiver, sealer: &Sealer, sequence: u16, index: u64) -> Result<u64, SrtpRxError> {
    let mut plaintext = Vec::new();
    let packet = sealer.seal(&rtp(SSRC, sequence, b"opus"), index);
    receiver.open(&packet, &mut plaintext, None).map(|opened| opened.index)
}

/// RFC 7714 §16.1.1: the IV formation and AAD against the RFC's own packet (its PT 64 is in
/// RFC 5761's RTCP range, so the packet goes through the IV and the AEAD here, not `open`).
#[test]
fn rfc7714_16_1_1_rtp_packet() {
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &hex("000102030405060708090a0b0c0d0e0f")).unwrap());
    let salt: [u8; 12] = hex("517569642070726f2071756f").try_into().unwrap();
    let mut packet = hex("8040f17b8041f8d35501a0b2
         f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b
         36de3adf8833899d7f27beb16a9152cf765ee4390cce");
    let (header, body) = packet.split_at_mut(12);
    let opened = key.open_in_place(rtp_nonce(&salt, 0x5501_a0b2, 0xf17b), Aad::from(&*header), body).unwrap();
    assert_eq!(opened, b"Gallia est omnis divisa in partes tres");
}

#[test]
fn new_refuses_keys_and_salts_of_the_wrong_length() {
    assert_eq!(SrtpReceiver::new(GcmProfile::Aes128, &KEY_256, &SALT).err(), Some(SrtpRxError::BadKey));
    assert_eq!(SrtpReceiver::new(GcmProfile::Aes256, &KEY_128, &SALT).err(), Some(SrtpRxError::BadKey));
    assert_eq!(SrtpReceiver::new(GcmProfile::Aes128, &KEY_128, &[3; 14]).err(), Some(SrtpRxError::BadKey));
}

#[test]
fn opens_both_profiles_and_reports_the_header() {
    for profile in [GcmProfile::Aes128, GcmProfile::Aes256] {
        let (mut receiver, sealer) = pair(profile);
        receiver.track(SSRC, 99);
        let mut plain = rtp(SSRC, 100, &[]);
        plain[0] |= 0x10; // X: one-byte extension, transport-cc at id 5
        plain[1] |= 0x80;
        plain.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x51, 0x01, 0x02, 0]);
        plain.extend_from_slice(&[0xaa; 100]);
        let mut plaintext = Vec::new();
        let opened = receiver.open(&sealer.seal(&plain, 100), &mut plaintext, Some(5)).unwrap();
        assert_eq!(plaintext, plain, "header and payload, as libsrtp returns them");
        let expected = OpenedRtp {
            ssrc: SSRC,
            index: 100,
            sequence: 100,
            timestamp: 96_000,
            payload_type: 111,
            marker: true,
            header_len: 20,
            payload_len: 100,
            transport_cc: Some(0x0102),
        };
        assert_eq!(opened, expected);
    }
}

#[test]
fn index_follows_the_wrap_and_a_late_packet_takes_the_previous_roc() {
    let (mut receiver, sealer) = pair(GcmProfile::Aes128);
    receiver.track(SSRC, 65_534);
    assert_eq!(open_at(&mut receiver, &sealer, 0, ROC_1), Ok(ROC_1), "65534, then 0: ROC 1");
    assert_eq!(open_at(&mut receiver, &sealer, 65_535, 65_535), Ok(65_535), "late 65535: ROC 0");
    assert_eq!(open_at(&mut receiver, &sealer, 1, ROC_1 + 1), Ok(ROC_1 + 1));
    assert_eq!(open_at(&mut receiver, &sealer, 65_535, ROC_1 + 65_535), Err(SrtpRxError::Replayed));
}

#[test]
fn a_wrong_roc_guess_fails_authentication() {
    let (mut receiver, sealer) = pair(GcmProfile::Aes128);
    receiver.track(SSRC, 65_534);
    // Sealed at ROC 0 but arriving after the wrap estimate says ROC 1: the IV differs.
    assert_eq!(open_at(&mut receiver, &sealer, 3, 3), Err(SrtpRxError::AuthFailed));
}

#[test]
fn replays_and_packets_older_than_the_window_are_refused() {
    let (mut receiver, sealer) = pair(GcmProfile::Aes256);
    receiver.track(SSRC, 1_000);
    assert_eq!(open_at(&mut receiver, &sealer, 1_000, 1_000), Err(SrtpRxError::Replayed), "the tracked one");
    assert_eq!(open_at(&mut receiver, &sealer, 1_001, 1_001), Ok(1_001));
    assert_eq!(open_at(&mut receiver, &sealer, 1_001, 1_001), Err(SrtpRxError::Replayed));
    assert_eq!(open_at(&mut receiver, &sealer, 1_200, 1_200), Ok(1_200));
    assert_eq!(open_at(&mut receiver, &sealer, 1_072, 1_072), Err(SrtpRxError::TooOld), "128 back");
    assert_eq!(open_at(&mut receiver, &sealer, 1_073, 1_073), Ok(1_073), "127 back, unseen");
}

#[test]
fn a_forged_packet_moves_nothing() {
    let (mut receiver, sealer) = pair(GcmProfile::Aes128);
    receiver.track(SSRC, 5);
    assert_eq!(open_at(&mut receiver, &sealer, 10, 10), Ok(10));
    let mut plaintext = Vec::new();
    let mut tag_flipped = sealer.seal(&rtp(SSRC, 11, b"opus"), 11);
    *tag_flipped.last_mut().unwrap() ^= 1;
    assert_eq!(receiver.open(&tag_flipped, &mut plaintext, None), Err(SrtpRxError::AuthFailed));
    assert!(plaintext.is_empty(), "no unauthenticated bytes reach the caller");
    let mut header_flipped = sealer.seal(&rtp(SSRC, 11, b"opus"), 11);
    header_flipped[5] ^= 0x40; // timestamp
    assert_eq!(receiver.open(&header_flipped, &mut plaintext, None), Err(SrtpRxError::AuthFailed));
    // A forgery far ahead (it would clear the window and move s_l) is refused and forgotten.
    let mut far_ahead = sealer.seal(&rtp(SSRC, 30_000, b"opus"), 30_000);
    far_ahead[20] ^= 1;
    assert_eq!(receiver.open(&far_ahead, &mut plaintext, None), Err(SrtpRxError::AuthFailed));
    assert_eq!(open_at(&mut receiver, &sealer, 11, 11), Ok(11), "the genuine packet still opens");
    assert_eq!(open_at(&mut receiver, &sealer, 9, 9), Ok(9), "the window did not move");
}

#[test]
fn truncated_packets() {
    let (mut receiver, sealer) = pair(GcmProfile::Aes128);
    receiver.track(SSRC, 10);
    let packet = sealer.seal(&rtp(SSRC, 11, b"opus"), 11);
    let mut plaintext = Vec::new();
    assert_eq!(receiver.open(&packet[..11], &mut plaintext, None), Err(SrtpRxError::Malformed));
    assert_eq!(
        receiver.open(&packet[..12 + 15], &mut plaintext, None),
        Err(SrtpRxError::Malformed),
        "no room for a tag"
    );
    assert_eq!(receiver.open(&packet[..packet.len() - 1], &mut plaintext, None), Err(SrtpRxError::AuthFailed));
    assert_eq!(receiver.open(&[], &mut plaintext, None), Err(SrtpRxError::Malformed));
    assert_eq!(open_at(&mut receiver, &sealer, 11, 11), Ok(11));
}

#[test]
fn an_empty_payload_opens() {
    let (mut receiver, sealer) = pair(GcmProfile::Aes128);
    receiver.track(SSRC, 10);
    let mut plaintext = Vec::new();
    let opened = receiver.open(&sealer.seal(&rtp(SSRC, 11, &[]), 11), &mut plaintext, None).unwrap();
    assert_eq!((opened.header_len, opened.payload_len, plaintext.len()), (12, 0, 12));
}

#[test]
fn padding_is_removed_and_a_bad_count_is_malformed_but_received() {
    let (mut receiver, sealer) = pair(GcmProfile::Aes128);
    receiver.track(SSRC, 10);
    let mut plaintext = Vec::new();
    let mut padded = rtp(SSRC, 11, &[1, 2, 3, 0, 0, 3]);
    padded[0] |= 0x20;
    let opened = receiver.open(&sealer.seal(&padded, 11), &mut plaintext, None).unwrap();
    assert_eq!(opened.payload_len, 3);
    assert_eq!(plaintext, padded, "the padding stays in the buffer, as libsrtp leaves it");
    let mut bad = rtp(SSRC, 12, &[1, 2, 9]);
    bad[0] |= 0x20;
    let sealed = sealer.seal(&bad, 12);
    assert_eq!(receiver.open(&sealed, &mut plaintext, None), Err(SrtpRxError::Malformed));
    assert_eq!(receiver.open(&sealed, &mut plaintext, None), Err(SrtpRxError::Replayed), "it authenticated");
}

#[test]
fn ssrcs_are_tracked_forgotten_and_retracked() {
    let (mut receiver, sealer) = pair(GcmProfile::Aes128);
    assert_eq!(open_at(&mut receiver, &sealer, 1, 1), Err(SrtpRxError::UnknownSsrc));
    receiver.track(SSRC, 0);
    receiver.track(0x5566_7788, 40_000);
    assert!(receiver.is_tracked(SSRC) && receiver.is_tracked(0x5566_7788));
    assert_eq!(open_at(&mut receiver, &sealer, 1, 1), Ok(1));
    receiver.track(SSRC, ROC_1 + 5);
    assert_eq!(open_at(&mut receiver, &sealer, 6, ROC_1 + 6), Ok(ROC_1 + 6), "re-tracking moves the window up");
    receiver.track(SSRC, ROC_1 + 4);
    assert_eq!(open_at(&mut receiver, &sealer, 4, ROC_1 + 4), Err(SrtpRxError::Replayed), "and marks what it names");
    assert_eq!(open_at(&mut receiver, &sealer, 3, ROC_1 + 3), Ok(ROC_1 + 3));
    receiver.forget(SSRC);
    assert!(!receiver.is_tracked(SSRC) && receiver.is_tracked(0x5566_7788));
    assert_eq!(open_at(&mut receiver, &sealer, 7, ROC_1 + 7), Err(SrtpRxError::UnknownSsrc));
}

#[test]
fn another_key_fails_authentication() {
    let (_, sealer) = pair(GcmProfile::Aes128);
    let mut receiver = SrtpReceiver::new(GcmProfile::Aes128, &[8; 16], &SALT).unwrap();
    receiver.track(SSRC, 0);
    assert_eq!(open_at(&mut receiver, &sealer, 1, 1), Err(SrtpRxError::AuthFailed));
}

#[test]
fn the_buffer_is_reused_once_grown() {
    let (mut receiver, sealer) = pair(GcmProfile::Aes128);
    receiver.track(SSRC, 0);
    let mut plaintext = Vec::with_capacity(1_500);
    let at = plaintext.as_ptr();
    for sequence in 1..100u16 {
        let packet = sealer.seal(&rtp(SSRC, sequence, &[0x55; 1_000]), u64::from(sequence));
        receiver.open(&packet, &mut plaintext, None).unwrap();
    }
    assert_eq!(plaintext.as_ptr(), at);
}

#[test]
fn debug_output_shows_no_key() {
    let (mut receiver, _) = pair(GcmProfile::Aes128);
    receiver.track(SSRC, 0);
    assert_eq!(format!("{receiver:?}"), "SrtpReceiver { ssrcs: [287454020], .. }");
}
