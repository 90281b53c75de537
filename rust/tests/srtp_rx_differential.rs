//! Our SRTP receive path (`media::srtp_rx`) against two others, packet by packet:
//!
//! - libsrtp: tests/vectors/srtp_gcm.json holds a packet sequence (the wrap, reordering, replays,
//!   packets late past the window, forgeries, header variants, two SSRCs) and what a libsrtp
//!   receiver made of each, in order (tests/tools/srtp_vectors.py writes it with pylibsrtp;
//!   tests/media/test_srtp_vectors.py proves the file is libsrtp's behaviour);
//! - str0m: its own SRTP sender (`TestSrtp`, with str0m's key-half selection) protects packets
//!   across a rollover, which ours must open.
//!
//! The open cost against aws-lc-rs's bare AES-GCM open is an ignored test:
//! `cargo test --release --test srtp_rx_differential -- --ignored --nocapture`.

use std::collections::HashSet;
use std::time::Instant;

use lkswarm_core::media::srtp_rx::{peek_ssrc, GcmProfile, OpenedRtp, SrtpReceiver, SrtpRxError};
use serde_json::Value;
use str0m::_internal_test_exports::TestSrtp;
use str0m::config::KeyingMaterial;
use str0m::crypto::dtls::SrtpProfile;
use str0m::media::ExtensionValues;
use str0m::rtp::{ExtensionMap, RtpHeader};

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

fn field<'a>(packet: &'a Value, name: &str) -> &'a Value {
    packet.get(name).unwrap_or_else(|| panic!("vector without {name}: {packet}"))
}

fn number(packet: &Value, name: &str) -> u64 {
    field(packet, name).as_u64().unwrap_or_else(|| panic!("{name} is not a number: {packet}"))
}

fn text<'a>(packet: &'a Value, name: &str) -> &'a str {
    field(packet, name).as_str().unwrap_or_else(|| panic!("{name} is not a string: {packet}"))
}

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/srtp_gcm.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("tests/vectors/srtp_gcm.json")).expect("valid JSON")
}

/// What libsrtp's receiver did with one packet, checked against what ours does. Returns whether
/// the packet was compared (each SSRC's first packet is not; see below).
fn check_packet(receiver: &mut SrtpReceiver, seen: &mut HashSet<u32>, packet: &Value, twcc_id: u8) -> bool {
    let srtp = hex(text(packet, "srtp"));
    let ssrc = number(packet, "ssrc") as u32;
    let index = number(packet, "index");
    let libsrtp = text(packet, "libsrtp");
    let mut plaintext = Vec::new();
    if seen.insert(ssrc) {
        // libsrtp (ssrc_any_inbound) learns an SSRC from its first authenticated packet; ours is
        // told by str0m, which authenticated that packet: `track` with its index, after which the
        // packet counts as received.
        assert_eq!(libsrtp, "ok", "a first packet libsrtp refused: {packet}");
        receiver.track(ssrc, index);
        assert_eq!(receiver.open(&srtp, &mut plaintext, Some(twcc_id)), Err(SrtpRxError::Replayed));
        return false;
    }
    let ours = receiver.open(&srtp, &mut plaintext, Some(twcc_id));
    let expected = match libsrtp {
        "ok" => return check_opened(ours, &plaintext, packet),
        "replay" => SrtpRxError::Replayed,
        "replay_old" => SrtpRxError::TooOld,
        "auth" => SrtpRxError::AuthFailed,
        "malformed" => SrtpRxError::Malformed,
        other => panic!("unknown libsrtp outcome {other}"),
    };
    assert_eq!(ours, Err(expected), "libsrtp: {libsrtp}, packet {packet}");
    assert!(plaintext.is_empty(), "a refused packet leaves no plaintext");
    true
}

/// libsrtp returns header and payload (with any RTP padding), what ours leaves in the buffer; the
/// fields ours reports must be the ones in that header, and what the sender built.
fn check_opened(ours: Result<OpenedRtp, SrtpRxError>, plaintext: &[u8], packet: &Value) -> bool {
    let opened = ours.unwrap_or_else(|e| panic!("libsrtp opened it, ours: {e:?}; packet {packet}"));
    assert_eq!(plaintext, hex(text(packet, "plaintext")), "plaintext of {packet}");
    let header = |at: usize| plaintext[at];
    assert_eq!(opened.sequence, u16::from_be_bytes([header(2), header(3)]));
    assert_eq!(opened.timestamp, u32::from_be_bytes([header(4), header(5), header(6), header(7)]));
    assert_eq!((opened.payload_type, opened.marker), (header(1) & 0x7f, header(1) & 0x80 != 0));
    assert_eq!(opened.ssrc as u64, number(packet, "ssrc"));
    assert_eq!(opened.index, number(packet, "index"), "index of {packet}");
    assert_eq!(opened.header_len as u64, number(packet, "header_len"));
    assert_eq!(opened.payload_len as u64, number(packet, "payload_len"), "payload of {packet}");
    assert_eq!(opened.transport_cc.map(u64::from), field(packet, "transport_cc").as_u64(), "twcc of {packet}");
    true
}

#[test]
fn agrees_with_libsrtp_packet_by_packet() {
    let doc = vectors();
    let twcc_id = u8::try_from(number(&doc, "twcc_ext_id")).unwrap();
    assert_eq!(number(&doc, "window_packets"), 128, "libsrtp's window, and ours");
    let profiles = field(&doc, "profiles").as_array().unwrap();
    assert_eq!(profiles.len(), 2);
    for profile in profiles {
        let gcm = match text(profile, "profile") {
            "AEAD_AES_128_GCM" => GcmProfile::Aes128,
            "AEAD_AES_256_GCM" => GcmProfile::Aes256,
            other => panic!("unknown profile {other}"),
        };
        let (key, salt) = (hex(text(profile, "master_key")), hex(text(profile, "master_salt")));
        let mut receiver = SrtpReceiver::new(gcm, &key, &salt).unwrap();
        let mut seen = HashSet::new();
        let packets = field(profile, "packets").as_array().unwrap();
        for packet in packets {
            let srtp = hex(text(packet, "srtp"));
            if text(packet, "libsrtp") != "malformed" {
                assert_eq!(peek_ssrc(&srtp).map(u64::from), Some(number(packet, "ssrc")));
            }
        }
        let compared = packets.iter().filter(|p| check_packet(&mut receiver, &mut seen, p, twcc_id)).count();
        assert_eq!(compared, packets.len() - 2, "all but each SSRC's first packet");
    }
}

const STR0M_SSRC: u32 = 0x0a0b_0c0d;
const TWCC_ID: u8 = 3; // ExtensionMap::standard()'s transport-wide-cc

/// str0m's SRTP sender for `profile`, and the master key and salt its receiving side would use.
/// str0m's `SrtpKey::new(mat, left)` reads DTLS-exported material as [key_a, key_b, salt_a,
/// salt_b] (RFC 5764 §4.2); `TestSrtp` takes the left halves, key_a and salt_a.
fn str0m_sender(profile: SrtpProfile, key_len: usize) -> (TestSrtp, Vec<u8>, Vec<u8>) {
    let key_a: Vec<u8> = (0..key_len as u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    let key_b = vec![0xee; key_len];
    let (salt_a, salt_b) = (vec![0x5a; 12], vec![0xa5; 12]);
    let mat = KeyingMaterial::new(&[key_a.clone(), key_b, salt_a.clone(), salt_b].concat());
    (TestSrtp::new(&str0m::crypto::from_feature_flags(), profile, &mat), key_a, salt_a)
}

/// RTP payload of `len` bytes for index `index`; with `padding`, its last 3 bytes are RTP padding.
fn payload(index: u64, len: usize, padding: bool) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..len).map(|i| (index as usize + i) as u8).collect();
    if padding {
        bytes.extend_from_slice(&[0, 0, 3]);
    }
    bytes
}

fn str0m_protect(sender: &mut TestSrtp, index: u64, padding: bool) -> Vec<u8> {
    let exts = ExtensionMap::standard();
    let mut header = RtpHeader {
        has_padding: padding,
        marker: index.is_multiple_of(5),
        payload_type: 111.into(),
        sequence_number: index as u16,
        timestamp: (index as u32).wrapping_mul(960),
        ssrc: STR0M_SSRC.into(),
        ext_vals: ExtensionValues::default(),
        ..RtpHeader::default()
    };
    header.ext_vals.transport_cc = Some(index as u16 ^ 0x5555);
    sender.protect(header, index, &payload(index, (index % 120) as usize, padding), &exts)
}

#[test]
fn opens_what_str0m_protects_across_a_rollover() {
    for (profile, gcm, key_len) in [
        (SrtpProfile::AEAD_AES_128_GCM, GcmProfile::Aes128, 16),
        (SrtpProfile::AEAD_AES_256_GCM, GcmProfile::Aes256, 32),
    ] {
        let (mut sender, key, salt) = str0m_sender(profile, key_len);
        let mut receiver = SrtpReceiver::new(gcm, &key, &salt).unwrap();
        let first: u64 = (3 << 16) + 65_520; // ROC 3, 16 packets before the next rollover
        let sealed: Vec<(u64, Vec<u8>)> =
            (first..first + 60).map(|i| (i, str0m_protect(&mut sender, i, i.is_multiple_of(7)))).collect();
        receiver.track(STR0M_SSRC, first);
        // In order, but for a swap across the rollover (65535 after 0 of the next ROC).
        let mut order: Vec<usize> = (1..sealed.len()).collect();
        let wrap = order.iter().position(|&n| sealed[n].0 & 0xffff == 0).unwrap();
        order.swap(wrap - 1, wrap);
        let mut plaintext = Vec::new();
        for n in order {
            let (index, packet) = &sealed[n];
            let opened =
                receiver.open(packet, &mut plaintext, Some(TWCC_ID)).unwrap_or_else(|e| panic!("{index}: {e}"));
            assert_eq!((opened.ssrc, opened.index, opened.sequence), (STR0M_SSRC, *index, *index as u16));
            assert_eq!(opened.transport_cc, Some(*index as u16 ^ 0x5555));
            let body = &plaintext[opened.header_len..opened.header_len + opened.payload_len];
            assert_eq!(body, payload(*index, (*index % 120) as usize, false), "payload of {index}");
            assert_eq!(receiver.open(packet, &mut plaintext, Some(TWCC_ID)), Err(SrtpRxError::Replayed));
        }
    }
}

/// Ours per packet against aws-lc-rs's AES-256-GCM open alone on packets of the same shape: a
/// 100-byte Opus-like payload behind a 20-byte header (one-byte extension: transport-wide-cc).
/// Both the bare-open variants are measured: copy + `open_in_place` (what str0m and the media
/// bench's floor do) and `open_separate_gather` into a buffer (what `open` uses).
#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn open_cost_per_packet() {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

    const DISTINCT: u64 = 1_000;
    let rounds: u64 = std::env::var("LKSWARM_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let (mut sender, key, salt) = str0m_sender(SrtpProfile::AEAD_AES_256_GCM, 32);
    let exts = ExtensionMap::standard();
    let sealed: Vec<Vec<u8>> = (1..=DISTINCT)
        .map(|i| {
            let mut header = RtpHeader { sequence_number: i as u16, ssrc: STR0M_SSRC.into(), ..RtpHeader::default() };
            header.ext_vals.transport_cc = Some(i as u16);
            sender.protect(header, i, &[0x42; 100], &exts)
        })
        .collect();
    let header_len = sealed[0].len() - 100 - 16;
    assert_eq!(header_len, 20);

    let mut receiver = SrtpReceiver::new(GcmProfile::Aes256, &key, &salt).unwrap();
    let mut plaintext = Vec::with_capacity(1_500);
    let ours = time_per_packet(rounds, DISTINCT, |i| {
        if i == 0 {
            // Start the indexes over, or the window refuses the repeats; one call per 1,000 packets.
            receiver.track(STR0M_SSRC, 0);
        }
        let opened = receiver.open(&sealed[i], &mut plaintext, Some(TWCC_ID)).unwrap();
        std::hint::black_box(opened);
    });

    let raw_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
    let nonce = |i: usize| {
        let mut iv = [0u8; 12];
        iv[8..].copy_from_slice(&(i as u32).to_be_bytes());
        Nonce::assume_unique_for_key(iv)
    };
    let raw_sealed: Vec<Vec<u8>> = sealed
        .iter()
        .enumerate()
        .map(|(i, packet)| {
            let (header, _) = packet.split_at(header_len);
            let mut body = vec![0x42; 100];
            raw_key.seal_in_place_append_tag(nonce(i), Aad::from(header), &mut body).unwrap();
            [header, &body].concat()
        })
        .collect();
    let mut work = vec![0u8; 1_500];
    let in_place = time_per_packet(rounds, DISTINCT, |i| {
        let packet = &raw_sealed[i];
        let buffer = &mut work[..packet.len()];
        buffer.copy_from_slice(packet);
        let (header, body) = buffer.split_at_mut(header_len);
        std::hint::black_box(raw_key.open_in_place(nonce(i), Aad::from(&*header), body).unwrap());
    });
    let gather = time_per_packet(rounds, DISTINCT, |i| {
        let (header, rest) = raw_sealed[i].split_at(header_len);
        let (ciphertext, tag) = rest.split_at(rest.len() - 16);
        let out = &mut work[..ciphertext.len()];
        raw_key.open_separate_gather(nonce(i), Aad::from(header), ciphertext, tag, out).unwrap();
        std::hint::black_box(out);
    });
    let packets = rounds * DISTINCT;
    eprintln!(
        "srtp_rx_bench: packets={packets} ours_open_ns={:.1} aws_lc_open_in_place_ns={:.1} \
         aws_lc_open_separate_gather_ns={:.1}",
        ours, in_place, gather
    );
}

/// Nanoseconds per call of `each`, over `rounds` passes of packets `0..distinct`.
fn time_per_packet(rounds: u64, distinct: u64, mut each: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for _ in 0..rounds {
        for i in 0..distinct as usize {
            each(i);
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * distinct) as f64
}
