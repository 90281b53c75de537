//! The wire form of one data-channel message: a binary protobuf `livekit.DataPacket` whose
//! `user` variant carries our probe payload.
//!
//! Theory of operation
//! -------------------
//! Writing is hand-encoded into a reusable buffer (`encode_user_packet`): the message has a
//! handful of fields, so a direct encoder costs a few hundred nanoseconds and no allocation once
//! the buffer has grown, where the JSON-mapping encoder would build a tree per message. Field
//! numbers are those of protos/livekit/models.proto (checked there against livekit-protocol).
//!
//! Reading (`parse_data_packet`) is a small borrowing wire reader: it picks the few fields the
//! receive accounting needs and skips everything else, so packets from newer senders (other
//! oneof variants, unknown fields) parse; anything truncated or mistyped is an error string,
//! never a panic.
//!
//! The probe payload (`PROBE_MAGIC`, send time, counter, filler) lets a receiver measure one-way
//! latency (both ends on one host clock, or NTP-synced hosts) and loss per sender and channel.

/// The first bytes of every payload lkswarm sends; anything else is someone else's ("foreign").
pub const PROBE_MAGIC: &[u8; 4] = b"LKSW";
/// Magic, send time (µs since the UNIX epoch, big-endian u64) and counter (big-endian u64).
pub const PROBE_HEADER_BYTES: usize = 4 + 8 + 8;
/// `DataPacket.rpc_request`'s field number.
pub const RPC_REQUEST_FIELD: u64 = 10;
/// The largest serialized DataPacket the server reads whole (notes §A: 64,000 B like the JS SDK).
pub const MAX_PACKET_BYTES: usize = 64_000;

/// `DataPacket.Kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Reliable = 0,
    Lossy = 1,
}

/// What a sender puts in one message besides the payload.
pub struct UserFields<'a> {
    pub kind: Kind,
    pub identity: &'a str,
    pub topic: &'a str,
    pub destinations: &'a [String],
    /// 0 = none (lossy); reliable packets count from 1.
    pub sequence: u32,
    pub nonce: &'a [u8; 16],
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

pub(super) fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn bytes_len(field: u32, len: usize) -> usize {
    varint_len(u64::from(field << 3 | 2)) + varint_len(len as u64) + len
}

/// Clears `out` and writes `DataPacket{kind, user: UserPacket{...}, participant_identity,
/// destination_identities, sequence}` into it, with the payload produced in place by `fill`
/// (it gets a zeroed slice of `payload_len` bytes), so the payload is never copied.
pub fn encode_user_packet(out: &mut Vec<u8>, fields: &UserFields, payload_len: usize, fill: impl FnOnce(&mut [u8])) {
    out.clear();
    // UserPacket's length first: its fields in field-number order (2 payload, 4 topic,
    // 5 identity, 6 destinations, 11 nonce), as protobuf encoders write them.
    let mut user_len = bytes_len(2, payload_len) + bytes_len(11, fields.nonce.len());
    if !fields.topic.is_empty() {
        user_len += bytes_len(4, fields.topic.len());
    }
    if !fields.identity.is_empty() {
        user_len += bytes_len(5, fields.identity.len());
    }
    user_len += fields.destinations.iter().map(|d| bytes_len(6, d.len())).sum::<usize>();

    if fields.kind != Kind::Reliable {
        put_varint(out, 1 << 3);
        put_varint(out, fields.kind as u64);
    }
    put_varint(out, 2 << 3 | 2);
    put_varint(out, user_len as u64);
    put_varint(out, 2 << 3 | 2);
    put_varint(out, payload_len as u64);
    let payload_at = out.len();
    out.resize(payload_at + payload_len, 0);
    fill(&mut out[payload_at..]);
    if !fields.topic.is_empty() {
        put_bytes(out, 4, fields.topic.as_bytes());
    }
    if !fields.identity.is_empty() {
        put_bytes(out, 5, fields.identity.as_bytes());
    }
    for destination in fields.destinations {
        put_bytes(out, 6, destination.as_bytes());
    }
    put_bytes(out, 11, fields.nonce);
    if !fields.identity.is_empty() {
        put_bytes(out, 4, fields.identity.as_bytes());
    }
    for destination in fields.destinations {
        put_bytes(out, 5, destination.as_bytes());
    }
    if fields.sequence != 0 {
        put_varint(out, 16 << 3);
        put_varint(out, u64::from(fields.sequence));
    }
}

/// Writes the probe header into a zeroed payload of at least `PROBE_HEADER_BYTES`.
pub fn fill_probe(payload: &mut [u8], sent_at_us: u64, counter: u64) {
    payload[..4].copy_from_slice(PROBE_MAGIC);
    payload[4..12].copy_from_slice(&sent_at_us.to_be_bytes());
    payload[12..20].copy_from_slice(&counter.to_be_bytes());
}

/// The probe header of a payload, if it is one of ours: (send time µs, counter).
pub fn read_probe(payload: &[u8]) -> Option<(u64, u64)> {
    if payload.len() < PROBE_HEADER_BYTES || &payload[..4] != PROBE_MAGIC {
        return None;
    }
    let sent_at_us = u64::from_be_bytes(payload[4..12].try_into().ok()?);
    let counter = u64::from_be_bytes(payload[12..20].try_into().ok()?);
    Some((sent_at_us, counter))
}

/// The fields of a received DataPacket that the accounting reads, borrowed from the message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PacketView<'a> {
    pub kind: u64,
    pub sequence: u64,
    /// `DataPacket.participant_identity` (the server fills it when forwarding).
    pub identity: &'a str,
    /// `UserPacket.participant_identity`, the sender's own claim.
    pub user_identity: &'a str,
    /// Some when the `user` variant is present (its payload, maybe empty).
    pub user_payload: Option<&'a [u8]>,
    /// Another oneof variant (2..=18 but not `user`): counted as "other".
    /// The DataPacket field number of another `value` variant than `user` (chat, RPC, streams, ...).
    pub other_variant: Option<u8>,
    /// The `rpc_request` variant's bytes (an `RpcRequest`), for `rpc::rpc_answers`.
    pub rpc_request: Option<&'a [u8]>,
}

impl PacketView<'_> {
    /// Who sent it: the server's stamp, else the sender's own.
    pub fn sender(&self) -> &str {
        if self.identity.is_empty() {
            self.user_identity
        } else {
            self.identity
        }
    }
}

/// A borrowing protobuf wire reader (also `rpc`'s).
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

pub(super) enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.at).ok_or("truncated varint")?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(len).filter(|&end| end <= self.buf.len()).ok_or("truncated field")?;
        let bytes = &self.buf[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    /// The next (field number, value), or None at the end.
    pub(super) fn next(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.at >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (field, wire_type) = (key >> 3, key & 7);
        if field == 0 {
            return Err("field number 0".into());
        }
        let value = match wire_type {
            0 => Value::Varint(self.varint()?),
            1 => self.take(8).map(|_| Value::Fixed)?,
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
                Value::Bytes(self.take(len)?)
            }
            5 => self.take(4).map(|_| Value::Fixed)?,
            other => return Err(format!("field {field}: unsupported wire type {other}")),
        };
        Ok(Some((field, value)))
    }
}

fn utf8<'a>(field: &str, bytes: &'a [u8]) -> Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|_| format!("{field}: not UTF-8"))
}

/// Reads a binary `DataPacket`; see the module doc.
pub fn parse_data_packet(buf: &[u8]) -> Result<PacketView<'_>, String> {
    let mut view = PacketView::default();
    let mut reader = Reader { buf, at: 0 };
    while let Some((field, value)) = reader.next()? {
        match (field, value) {
            (1, Value::Varint(kind)) => view.kind = kind,
            (16, Value::Varint(sequence)) => view.sequence = sequence,
            (4, Value::Bytes(bytes)) => view.identity = utf8("participant_identity", bytes)?,
            (2, Value::Bytes(bytes)) => {
                let (payload, identity) = parse_user_packet(bytes)?;
                view.user_payload = Some(payload);
                view.user_identity = identity;
                view.other_variant = None;
                view.rpc_request = None;
            }
            (3 | 6..=15 | 18, Value::Bytes(bytes)) => {
                view.other_variant = Some(field as u8); // the match bounds it to 18
                view.user_payload = None;
                view.rpc_request = (field == RPC_REQUEST_FIELD).then_some(bytes);
            }
            (1 | 16, _) | (2 | 4, _) => return Err(format!("DataPacket field {field}: wrong wire type")),
            _ => {}
        }
    }
    Ok(view)
}

/// (payload, participant_identity) of a `UserPacket`.
fn parse_user_packet(buf: &[u8]) -> Result<(&[u8], &str), String> {
    let (mut payload, mut identity): (&[u8], &str) = (&[], "");
    let mut reader = Reader { buf, at: 0 };
    while let Some((field, value)) = reader.next()? {
        match (field, value) {
            (2, Value::Bytes(bytes)) => payload = bytes,
            (5, Value::Bytes(bytes)) => identity = utf8("user.participant_identity", bytes)?,
            (2 | 5, _) => return Err(format!("UserPacket field {field}: wrong wire type")),
            _ => {}
        }
    }
    Ok((payload, identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(kind: Kind, sequence: u32, destinations: &[String]) -> Vec<u8> {
        let nonce = [7u8; 16];
        let fields = UserFields { kind, identity: "pub-1", topic: "load", destinations, sequence, nonce: &nonce };
        let mut out = Vec::new();
        encode_user_packet(&mut out, &fields, 32, |p| fill_probe(p, 1_700_000_000_000_000, 5));
        out
    }

    /// Bytes from livekit-protocol 1.1.29: `DataPacket(kind=RELIABLE, participant_identity="pub-1",
    /// destination_identities=["sub-1"], sequence=3, user=UserPacket(participant_identity="pub-1",
    /// payload=<probe: t=1_700_000_000_000_000, counter 5, 32 B>, topic="load", nonce=bytes([7]*16),
    /// destination_identities=["sub-1"])).SerializeToString(deterministic=True)`.
    const REFERENCE_HEX: &str = "124812204c4b535700060a24181e4000000000000000000500000000000000000000000022046c6f\
        61642a057075622d3132057375622d315a100707070707070707070707070707070722057075622d312a057375622d31800103";

    #[test]
    fn encodes_like_livekit_protocol() {
        let hex: String = REFERENCE_HEX.chars().filter(|c| !c.is_whitespace()).collect();
        let reference: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        assert_eq!(encoded(Kind::Reliable, 3, &["sub-1".to_string()]), reference);
    }

    #[test]
    fn round_trips_through_the_reader() {
        let bytes = encoded(Kind::Lossy, 0, &[]);
        let view = parse_data_packet(&bytes).unwrap();
        assert_eq!((view.kind, view.sequence, view.identity, view.user_identity), (1, 0, "pub-1", "pub-1"));
        let payload = view.user_payload.unwrap();
        assert_eq!(payload.len(), 32);
        assert_eq!(read_probe(payload), Some((1_700_000_000_000_000, 5)));
        assert!(payload[20..].iter().all(|&b| b == 0));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let bytes = encoded(Kind::Reliable, 9, &["a".into()]);
        for cut in 1..bytes.len() {
            let _ = parse_data_packet(&bytes[..cut]);
        }
        assert!(parse_data_packet(&bytes[..bytes.len() - 4]).is_err());
        assert!(parse_data_packet(&[0x12, 0x05, 0x01]).is_err());
        assert!(parse_data_packet(&[0xff; 12]).is_err());
        assert_eq!(parse_data_packet(&[]).unwrap(), PacketView::default());
    }

    #[test]
    fn other_variants_are_flagged() {
        // chat_message = 9 with an empty body, then an unknown field 99.
        let view = parse_data_packet(&[0x4a, 0x00, 0x98, 0x06, 0x01]).unwrap();
        assert!(view.other_variant == Some(9) && view.user_payload.is_none());
    }
}
