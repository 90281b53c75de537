//! Mutation fuzzing of the codec: no input may panic. Seeds are real-shaped
//! frames; each case applies random mutations (bit flips, truncation,
//! insertion, duplication, splicing, overlong varints) and runs validation,
//! lazy views, JSON and peek over the result. The SRTP receive path gets the
//! same treatment from RTP-shaped seeds (`srtp_open_never_panics`).
//!
//! `cargo test` runs a short pass; the bench job runs 10^6 cases:
//! `LKSWARM_FUZZ_CASES=1000000 cargo test --release --test fuzz_no_panic -- --ignored --nocapture`.

// The long pass prints its summary line for `make bench` to record.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use lkswarm_core::codec::index::index_frame;
use lkswarm_core::codec::json::{encode_json, to_json};
use lkswarm_core::codec::{peek, signal_request, signal_response, validate, MessageView};
use lkswarm_core::media::srtp_rx::{peek_ssrc, GcmProfile, SrtpReceiver, SrtpRxError};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let participant = |i: u32| {
        serde_json::json!({
            "sid": format!("PA_{i}"), "identity": format!("p{i}"), "state": "ACTIVE", "joinedAt": "1700000000",
            "attributes": {"role": "load", "k": "v"},
            "tracks": [{"sid": format!("TR_{i}"), "type": "VIDEO", "width": 1280, "height": 720, "simulcast": true,
                        "layers": [{"quality": "LOW", "width": 320, "height": 180, "bitrate": 150000}]}],
        })
    };
    let responses = [
        serde_json::json!({"join": {"room": {"sid": "RM_1", "name": "r"}, "participant": participant(0),
            "otherParticipants": [participant(1), participant(2)], "serverVersion": "1.13.5", "pingInterval": 5,
            "pingTimeout": 15, "sifTrailer": "AQID", "iceServers": [{"urls": ["stun:a", "stun:b"]}]}}),
        serde_json::json!({"update": {"participants": [participant(3), participant(4)]}}),
        serde_json::json!({"speakersChanged": {"speakers": [{"sid": "PA_1", "level": 0.5, "active": true}]}}),
        serde_json::json!({"connectionQuality": {"updates": [{"participantSid": "PA_1", "quality": "GOOD", "score": 4.5}]}}),
        serde_json::json!({"offer": {"type": "offer", "sdp": "v=0\r\na=x\r\n", "id": 3, "midToTrackId": {"0": "TR_1"}}}),
        serde_json::json!({"trickle": {"candidateInit": "{}", "target": "SUBSCRIBER", "final": true}}),
        serde_json::json!({"pongResp": {"lastPingTimestamp": "1700000000000", "timestamp": "-5"}}),
        serde_json::json!({"dataTrackSubscriberHandles": {"subHandles": {"7": {"publisherSid": "PA_9"}}}}),
        serde_json::json!({"leave": {"reason": "JOIN_FAILURE", "action": "RESUME"}}),
    ];
    let mut out: Vec<Vec<u8>> =
        responses.iter().map(|v| encode_json(v, signal_response()).expect("seed encodes")).collect();
    out.push(
        encode_json(&serde_json::json!({"pingReq": {"timestamp": "5", "rtt": "1"}}), signal_request())
            .expect("seed encodes"),
    );
    out
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.truncate(rng.below(data.len() + 1)),
            2 => {
                let i = rng.below(data.len() + 1);
                data.insert(i, rng.next() as u8);
            }
            3 if !data.is_empty() => {
                let a = rng.below(data.len());
                let b = (a + rng.below(16)).min(data.len());
                let chunk = data[a..b].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, chunk);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                data.extend_from_slice(&other[..rng.below(other.len() + 1)]);
            }
            5 => {
                let i = rng.below(data.len() + 1);
                data.splice(i..i, [0x80u8; 10]);
            }
            _ if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            _ => {}
        }
    }
    data
}

fn run(cases: usize) -> (usize, usize) {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..cases {
        let data = mutate(&mut rng, &seeds);
        for desc in [signal_response(), signal_request()] {
            let _ = peek(&data, desc);
            // The fast indexing walk must accept and reject exactly what the checking walk does.
            let checked = validate(&data, desc);
            let indexed = index_frame(&data, desc);
            assert_eq!(
                checked.is_ok(),
                indexed.is_ok(),
                "walks disagree on {data:02x?}: {checked:?} vs {:?}",
                indexed.as_ref().err()
            );
            if checked.is_ok() {
                accepted += 1;
                let view = MessageView::root(Arc::new(data.clone()), desc);
                let json = to_json(&view).expect("a validated frame converts to JSON");
                let again = encode_json(&json, desc).expect("canonical JSON encodes");
                assert!(validate(&again, desc).is_ok(), "re-encoded JSON must validate");
            } else {
                rejected += 1;
            }
        }
    }
    (accepted, rejected)
}

#[test]
fn short_fuzz_pass() {
    let (accepted, rejected) = run(3_000);
    assert!(accepted > 0 && rejected > 0, "mutations should produce both valid and invalid frames");
}

#[test]
#[ignore = "long; run by `make bench`"]
fn long_fuzz_pass() {
    let cases: usize = std::env::var("LKSWARM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let (accepted, rejected) = run(cases);
    println!("fuzz: {cases} inputs, {accepted} accepted, {rejected} rejected, 0 panics");
}

/// RTP-shaped seeds for the SRTP receive path: CSRCs, one- and two-byte extensions, padding, a
/// 16-byte "tag". Their SSRC is tracked, so mutations reach the index, replay and AEAD stages.
fn srtp_seeds() -> Vec<Vec<u8>> {
    let header = |first: u8, seq: u16| {
        let mut packet = vec![first, 111];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&[0, 0, 3, 192, 0x11, 0x22, 0x33, 0x44]);
        packet
    };
    let tail = |mut packet: Vec<u8>| {
        packet.extend_from_slice(&[0x42; 30]);
        packet
    };
    let mut csrcs = header(0x82, 2);
    csrcs.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
    let mut one_byte = header(0x90, 3);
    one_byte.extend_from_slice(&[0xBE, 0xDE, 0, 2, 0x10, 0x7f, 0x31, 0x12, 0x34, 0, 0, 0]);
    let mut two_byte = header(0x90, 4);
    two_byte.extend_from_slice(&[0x10, 0x00, 0, 1, 3, 2, 0x12, 0x34]);
    vec![tail(header(0x80, 1)), tail(csrcs), tail(one_byte), tail(two_byte), tail(header(0xa0, 5))]
}

#[test]
fn srtp_open_never_panics() {
    let seeds = srtp_seeds();
    let mut rng = Rng(0x0bad_5eed_0f5a_1700);
    let mut receiver = SrtpReceiver::new(GcmProfile::Aes128, &[7; 16], &[3; 12]).expect("valid key");
    let mut plaintext = Vec::new();
    for case in 0..20_000u64 {
        if case % 1_000 == 0 {
            receiver.track(0x1122_3344, case << 4); // indexes old and new relative to the seeds'
        }
        let data = mutate(&mut rng, &seeds);
        let _ = peek_ssrc(&data);
        let result = receiver.open(&data, &mut plaintext, Some(3));
        // Nothing forged can authenticate; every other outcome is fine.
        assert_ne!(result.map(|_| ()), Ok(()), "opened a forgery: {data:02x?}");
        assert!(result.is_err_and(|e| e != SrtpRxError::BadKey) && plaintext.is_empty());
    }
}
