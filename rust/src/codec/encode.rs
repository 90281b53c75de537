//! Hand-written encoders for the requests a participant sends all the time.
//! Each writes the same bytes as the reference serialiser: fields in number
//! order, implicit-presence defaults left out, map entries in the order upb's
//! deterministic mode writes them (see `upb_string_key_order`).

use std::cmp::Ordering;

use super::wire::{put_tag, put_varint, varint_len, WIRE_LEN, WIRE_VARINT};

/// The order in which upb's deterministic serialisation (protobuf 7's
/// `SerializeToString(deterministic=True)`) writes string map keys, as
/// observed: byte-wise ascending, except that when one key is a prefix of the
/// other the *longer* key comes first (`"ab"` before `"a"`, `""` last). upb
/// writes back to front and its comparator reverses the byte comparison but
/// not the length tie-break; we reproduce its bytes, not an order anyone chose.
pub fn upb_string_key_order(a: &[u8], b: &[u8]) -> Ordering {
    let common = a.len().min(b.len());
    match a[..common].cmp(&b[..common]) {
        Ordering::Equal => b.len().cmp(&a.len()),
        other => other,
    }
}

/// The order in which upb's deterministic serialisation writes integer (and
/// bool) map keys: descending, for the same back-to-front reason.
pub fn upb_int_key_order(a: i128, b: i128) -> Ordering {
    b.cmp(&a)
}

/// SignalRequest field numbers of the hot requests.
mod req {
    pub const OFFER: u32 = 1;
    pub const ANSWER: u32 = 2;
    pub const TRICKLE: u32 = 3;
    pub const ADD_TRACK: u32 = 4;
    pub const SUBSCRIPTION: u32 = 6;
    pub const LEAVE: u32 = 8;
    pub const UPDATE_METADATA: u32 = 15;
    pub const PING_REQ: u32 = 16;
}

/// Builds one message body; `finish` wraps it as a SignalRequest variant.
#[derive(Default)]
pub struct Body(Vec<u8>);

impl Body {
    pub fn new() -> Self {
        Self(Vec::with_capacity(64))
    }

    pub fn varint(&mut self, number: u32, v: u64) -> &mut Self {
        if v != 0 {
            put_tag(&mut self.0, number, WIRE_VARINT);
            put_varint(&mut self.0, v);
        }
        self
    }

    pub fn int(&mut self, number: u32, v: i64) -> &mut Self {
        self.varint(number, v as u64)
    }

    pub fn boolean(&mut self, number: u32, v: bool) -> &mut Self {
        self.varint(number, u64::from(v))
    }

    pub fn string(&mut self, number: u32, v: &str) -> &mut Self {
        if !v.is_empty() {
            self.bytes_always(number, v.as_bytes());
        }
        self
    }

    /// A length-delimited field written even when empty (sub-messages, repeated elements).
    pub fn bytes_always(&mut self, number: u32, v: &[u8]) -> &mut Self {
        put_tag(&mut self.0, number, WIRE_LEN);
        put_varint(&mut self.0, v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    /// Wraps the body as variant `number` of the envelope.
    pub fn finish(&self, number: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() + 6);
        put_tag(&mut out, number, WIRE_LEN);
        put_varint(&mut out, self.0.len() as u64);
        out.extend_from_slice(&self.0);
        out
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.0
    }
}

/// `ping_req{timestamp, rtt}`, written into a fixed array: this runs for every
/// participant every few seconds.
pub fn ping(timestamp_ms: i64, rtt_ms: i64) -> ([u8; 28], usize) {
    let mut out = [0u8; 28];
    let ts = timestamp_ms as u64;
    let rtt = rtt_ms as u64;
    let body_len = if ts != 0 { 1 + varint_len(ts) } else { 0 } + if rtt != 0 { 1 + varint_len(rtt) } else { 0 };
    let mut n = 0;
    let mut push = |b: u8| {
        out[n] = b;
        n += 1;
    };
    push(((req::PING_REQ << 3) as u8 | WIRE_LEN) | 0x80);
    push((req::PING_REQ >> 4) as u8);
    push(body_len as u8);
    for (number, v) in [(1u8, ts), (2u8, rtt)] {
        if v != 0 {
            push(number << 3);
            let mut rest = v;
            while rest >= 0x80 {
                push((rest as u8) | 0x80);
                rest >>= 7;
            }
            push(rest as u8);
        }
    }
    (out, n)
}

/// `leave{can_reconnect, reason, action}`.
pub fn leave(reason: i32, action: i32, can_reconnect: bool) -> Vec<u8> {
    Body::new().boolean(1, can_reconnect).int(2, i64::from(reason)).int(3, i64::from(action)).finish(req::LEAVE)
}

/// `trickle{candidateInit, target, final}`.
pub fn trickle(candidate_init: &str, target: i32, is_final: bool) -> Vec<u8> {
    Body::new().string(1, candidate_init).int(2, i64::from(target)).boolean(3, is_final).finish(req::TRICKLE)
}

fn session_description(kind: &str, sdp: &str, id: u32, variant: u32) -> Vec<u8> {
    Body::new().string(1, kind).string(2, sdp).varint(3, u64::from(id)).finish(variant)
}

/// `offer{type: "offer", sdp, id}`.
pub fn offer(sdp: &str, id: u32) -> Vec<u8> {
    session_description("offer", sdp, id, req::OFFER)
}

/// `answer{type: "answer", sdp, id}`.
pub fn answer(sdp: &str, id: u32) -> Vec<u8> {
    session_description("answer", sdp, id, req::ANSWER)
}

/// One simulcast layer of an `add_track` request.
#[derive(Debug, Clone, Copy)]
pub struct Layer {
    pub quality: i32,
    pub width: u32,
    pub height: u32,
    pub bitrate: u32,
}

/// The fields of `add_track` a load generator sets.
#[derive(Debug, Clone, Default)]
pub struct AddTrack<'a> {
    pub cid: &'a str,
    pub name: &'a str,
    pub track_type: i32,
    pub width: u32,
    pub height: u32,
    pub muted: bool,
    pub disable_dtx: bool,
    pub source: i32,
    pub layers: Vec<Layer>,
    pub stereo: bool,
    pub disable_red: bool,
    pub stream: &'a str,
}

/// `add_track{...}`.
pub fn add_track(t: &AddTrack<'_>) -> Vec<u8> {
    let mut body = Body::new();
    body.string(1, t.cid)
        .string(2, t.name)
        .int(3, i64::from(t.track_type))
        .varint(4, u64::from(t.width))
        .varint(5, u64::from(t.height))
        .boolean(6, t.muted)
        .boolean(7, t.disable_dtx)
        .int(8, i64::from(t.source));
    for layer in &t.layers {
        let mut l = Body::new();
        l.int(1, i64::from(layer.quality))
            .varint(2, u64::from(layer.width))
            .varint(3, u64::from(layer.height))
            .varint(4, u64::from(layer.bitrate));
        body.bytes_always(9, &l.into_inner());
    }
    body.boolean(12, t.stereo).boolean(13, t.disable_red).string(15, t.stream);
    body.finish(req::ADD_TRACK)
}

/// `subscription{track_sids, subscribe}`.
pub fn subscription(track_sids: &[&str], subscribe: bool) -> Vec<u8> {
    let mut body = Body::new();
    for sid in track_sids {
        body.bytes_always(1, sid.as_bytes());
    }
    body.boolean(2, subscribe);
    body.finish(req::SUBSCRIPTION)
}

/// `update_metadata{metadata, name, attributes, request_id}`; attributes are
/// written in upb's deterministic key order.
pub fn update_metadata(metadata: &str, name: &str, attributes: &[(&str, &str)], request_id: u32) -> Vec<u8> {
    let mut body = Body::new();
    body.string(1, metadata).string(2, name);
    let mut sorted: Vec<_> = attributes.to_vec();
    sorted.sort_by(|a, b| upb_string_key_order(a.0.as_bytes(), b.0.as_bytes()));
    for (k, v) in sorted {
        let mut entry = Body::new();
        entry.bytes_always(1, k.as_bytes()).bytes_always(2, v.as_bytes());
        body.bytes_always(3, &entry.into_inner());
    }
    body.varint(4, u64::from(request_id));
    body.finish(req::UPDATE_METADATA)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Golden vectors produced by the reference serialiser (livekit-server notes §1).
    #[test]
    fn ping_matches_reference() {
        let (buf, n) = ping(1_700_000_000_000, 12);
        assert_eq!(&buf[..n], &[0x82, 0x01, 0x09, 0x08, 0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31, 0x10, 0x0c]);
        let (buf, n) = ping(0, 0);
        assert_eq!(&buf[..n], &[0x82, 0x01, 0x00]);
        let (buf, n) = ping(-1, -1);
        assert_eq!(n, 3 + 22);
        assert_eq!(buf[2], 22);
    }

    #[test]
    fn leave_matches_reference() {
        assert_eq!(leave(1, 0, false), vec![0x42, 0x02, 0x10, 0x01]);
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;

    #[test]
    fn string_keys_in_upb_deterministic_order() {
        let mut keys = vec!["b", "a", "ab", "", "B", "é", "z"];
        keys.sort_by(|a, b| upb_string_key_order(a.as_bytes(), b.as_bytes()));
        // What SerializeToString(deterministic=True) writes under protobuf 7 (upb).
        assert_eq!(keys, vec!["B", "ab", "a", "b", "z", "é", ""]);
    }

    #[test]
    fn update_metadata_matches_reference() {
        // UpdateParticipantMetadata{attributes: {"a": "1", "ab": "2"}} from the reference (deterministic).
        let out = update_metadata("", "", &[("a", "1"), ("ab", "2")], 0);
        let expected = [
            0x7a, 0x11, 0x1a, 0x07, 0x0a, 0x02, b'a', b'b', 0x12, 0x01, b'2', 0x1a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01,
            b'1',
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn integer_keys_descend() {
        let mut keys = vec![5i128, 1, 300, 2, 4_000_000_000, 7];
        keys.sort_by(|a, b| upb_int_key_order(*a, *b));
        assert_eq!(keys, vec![4_000_000_000, 300, 7, 5, 2, 1]);
    }
}
