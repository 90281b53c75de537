//! Theory of operation: a received frame is checked once, in full, before any
//! view of it is handed out. The check walks every field recursively with the
//! schema and rejects exactly what the reference (upb) decoder rejects:
//! truncation, overlong varints, bad wire types and field numbers, lengths
//! past the enclosing message, invalid UTF-8 in strings and bad packed
//! lengths. Unknown fields, and known fields with an unexpected wire type,
//! are skipped (upb keeps them as unknown fields). After the check, views can
//! read lazily without any further failure on valid buffers.
//!
//! `peek` is the opposite trade: it reads only the top-level tags and skips
//! bodies, to name the oneof variant of a frame without decoding it.

use super::schema::{FieldDesc, Kind, MessageDesc};
use super::wire::{read_tag, read_varint, skip_value, Tag, MAX_DEPTH, WIRE_END_GROUP, WIRE_LEN};
use crate::error::{DecodeReason, Error, Result};

/// One level of the field path, kept to name the field of an error.
struct PathElem {
    desc: &'static MessageDesc,
    field_pos: usize,
    msg_start: usize,
    tag_offset: usize,
}

type Fail = (usize, DecodeReason);

/// Checks that `buf` is a valid encoding of `desc`.
pub fn validate(buf: &[u8], desc: &'static MessageDesc) -> Result<()> {
    if u32::try_from(buf.len()).is_err() {
        return Err(Error::Decode { offset: 0, path: String::new(), reason: DecodeReason::TooLarge });
    }
    let mut path = Vec::new();
    check_message(buf, 0, buf.len(), desc, 0, &mut path).map_err(|(offset, reason)| Error::Decode {
        offset,
        path: render_path(buf, &path),
        reason,
    })
}

fn check_message(
    buf: &[u8],
    start: usize,
    end: usize,
    desc: &'static MessageDesc,
    depth: u32,
    path: &mut Vec<PathElem>,
) -> std::result::Result<(), Fail> {
    if depth > MAX_DEPTH {
        return Err((start, DecodeReason::TooDeep));
    }
    let bounded = buf.get(..end).ok_or((start, DecodeReason::Truncated))?;
    let mut pos = start;
    while pos < end {
        let tag_offset = pos;
        let (tag, after_tag) = read_tag(bounded, pos)?;
        if tag.wire == WIRE_END_GROUP {
            return Err((tag_offset, DecodeReason::InvalidWireType(WIRE_END_GROUP)));
        }
        let Some(field_pos) = desc.field_pos(tag.number) else {
            pos = skip_value(buf, tag, after_tag, end, depth)?.1;
            continue;
        };
        let field = &desc.fields[field_pos];
        path.push(PathElem { desc, field_pos, msg_start: start, tag_offset });
        pos = check_field(buf, field, tag, after_tag, end, depth, path)?;
        path.pop();
    }
    Ok(())
}

fn check_field(
    buf: &[u8],
    field: &FieldDesc,
    tag: Tag,
    after_tag: usize,
    end: usize,
    depth: u32,
    path: &mut Vec<PathElem>,
) -> std::result::Result<usize, Fail> {
    let (span, next) = skip_value(buf, tag, after_tag, end, depth)?;
    if tag.wire == field.kind.wire_type() {
        match field.kind {
            Kind::String => {
                let text = buf.get(span.start..span.end).ok_or((span.start, DecodeReason::Truncated))?;
                if std::str::from_utf8(text).is_err() {
                    return Err((span.start, DecodeReason::InvalidUtf8));
                }
            }
            Kind::Message => {
                let sub = &super::schema::MESSAGES[field.type_index];
                check_message(buf, span.start, span.end, sub, depth + 1, path)?;
            }
            _ => {}
        }
    } else if field.repeated && field.kind.packable() && tag.wire == WIRE_LEN {
        check_packed(buf, field.kind, span.start, span.end)?;
    }
    // Any other wire type: the reference keeps it as an unknown field.
    Ok(next)
}

pub(crate) fn check_packed(buf: &[u8], kind: Kind, start: usize, end: usize) -> std::result::Result<(), Fail> {
    let width = match kind.wire_type() {
        super::wire::WIRE_FIXED32 => 4,
        super::wire::WIRE_FIXED64 => 8,
        _ => 0,
    };
    if width > 0 {
        if !(end - start).is_multiple_of(width) {
            return Err((start, DecodeReason::BadPackedLength));
        }
        return Ok(());
    }
    let bounded = buf.get(..end).ok_or((start, DecodeReason::Truncated))?;
    let mut p = start;
    while p < end {
        p = read_varint(bounded, p)?.1;
    }
    Ok(())
}

fn render_path(buf: &[u8], path: &[PathElem]) -> String {
    let mut out = String::new();
    for elem in path {
        let field = &elem.desc.fields[elem.field_pos];
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(field.name);
        if field.repeated {
            let index = count_occurrences(buf, elem.msg_start, elem.tag_offset, field.number);
            out.push_str(&format!("[{index}]"));
        }
    }
    out
}

/// Occurrences of `number` between `start` and `stop`; that range was
/// already validated, so a failure here only ends the count.
fn count_occurrences(buf: &[u8], start: usize, stop: usize, number: u32) -> usize {
    let mut count = 0;
    let mut pos = start;
    while pos < stop {
        let Some(bounded) = buf.get(..stop) else { break };
        let Ok((tag, after)) = read_tag(bounded, pos) else { break };
        let Ok((_, next)) = skip_value(buf, tag, after, stop, 0) else { break };
        if tag.number == number {
            count += 1;
        }
        pos = next;
    }
    count
}

/// Names the oneof variant of a top-level frame without decoding bodies:
/// the last member of the message's first oneof that appears wins, as in a
/// full parse. Returns the field's position in `desc.fields`.
pub fn peek(buf: &[u8], desc: &'static MessageDesc) -> Result<Option<usize>> {
    let mut pos = 0;
    let mut last = None;
    let end = buf.len();
    while pos < end {
        let (tag, after) = read_tag(buf, pos).map_err(|(offset, reason)| decode_err(offset, reason))?;
        if tag.wire == WIRE_END_GROUP {
            return Err(decode_err(pos, DecodeReason::InvalidWireType(WIRE_END_GROUP)));
        }
        let (_, next) = skip_value(buf, tag, after, end, 0).map_err(|(offset, reason)| decode_err(offset, reason))?;
        if let Some(fp) = desc.field_pos(tag.number) {
            let f = &desc.fields[fp];
            if f.oneof == Some(0) && tag.wire == f.kind.wire_type() {
                last = Some(fp);
            }
        }
        pos = next;
    }
    Ok(last)
}

fn decode_err(offset: usize, reason: DecodeReason) -> Error {
    Error::Decode { offset, path: String::new(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::schema::{signal_request, signal_response};

    /// `ping_req{timestamp: 1700000000000, rtt: 12}` as the reference writes it.
    const PING: &[u8] = &[0x82, 0x01, 0x09, 0x08, 0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31, 0x10, 0x0c];

    fn reject(buf: &[u8], desc: &'static MessageDesc) -> (usize, String, DecodeReason) {
        match validate(buf, desc) {
            Err(Error::Decode { offset, path, reason }) => (offset, path, reason),
            other => panic!("expected a decode error for {buf:02x?}, got {other:?}"),
        }
    }

    /// A varint of exactly `width` bytes (redundant continuation bytes).
    fn padded(mut v: u64, width: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        while out.len() < width {
            *out.last_mut().unwrap() |= 0x80;
            out.push(0);
        }
        out
    }

    #[test]
    fn accepts_golden_frames() {
        validate(PING, signal_request()).unwrap();
        validate(&[0x42, 0x02, 0x10, 0x01], signal_request()).unwrap();
        validate(&[], signal_request()).unwrap();
        // Concatenated frames are one merged frame.
        validate(&[PING, PING].concat(), signal_request()).unwrap();
    }

    #[test]
    fn rejects_truncation_with_offset_and_path() {
        assert_eq!(
            reject(&PING[..8], signal_request()),
            (2, "ping_req".to_string(), DecodeReason::LengthOverrun { length: 9 })
        );
        assert_eq!(reject(&PING[..1], signal_request()), (0, String::new(), DecodeReason::Truncated));
        // The length says 9 but the body ends inside the timestamp varint.
        let mut cut = PING.to_vec();
        cut[2] = 4;
        cut.truncate(7);
        assert_eq!(reject(&cut, signal_request()), (4, "ping_req.timestamp".to_string(), DecodeReason::Truncated));
    }

    #[test]
    fn varint_and_tag_lengths_follow_upb() {
        // Values: up to 10 bytes.
        for width in 1..=10 {
            let mut body = vec![0x08];
            body.extend(padded(5, width));
            let frame = [vec![0x82, 0x01, body.len() as u8], body].concat();
            validate(&frame, signal_request()).unwrap();
        }
        let mut body = vec![0x08];
        body.extend(padded(5, 11));
        let frame = [vec![0x82, 0x01, body.len() as u8], body].concat();
        assert_eq!(reject(&frame, signal_request()).2, DecodeReason::VarintTooLong);
        // Tags and length prefixes: up to 5 bytes, even when the rest is padding.
        for width in 1..=5 {
            validate(&[padded(16 << 3 | 2, width), vec![0x00]].concat(), signal_request()).unwrap();
            validate(&[vec![0x82, 0x01], padded(0, width)].concat(), signal_request()).unwrap();
        }
        for width in 6..=10 {
            assert_eq!(
                reject(&[padded(16 << 3 | 2, width), vec![0x00]].concat(), signal_request()),
                (0, String::new(), DecodeReason::VarintTooLong)
            );
            assert_eq!(
                reject(&[vec![0x82, 0x01], padded(0, width)].concat(), signal_request()),
                (2, "ping_req".to_string(), DecodeReason::VarintTooLong)
            );
        }
        // A five-byte tag whose value passes 2^32 names no valid field.
        assert!(matches!(
            reject(&[0xf8, 0xff, 0xff, 0xff, 0x1f, 0x00], signal_request()).2,
            DecodeReason::InvalidFieldNumber(_)
        ));
        validate(&[0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00], signal_request()).unwrap();
    }

    #[test]
    fn rejects_bad_tags() {
        assert_eq!(reject(&[0x00, 0x01], signal_request()).2, DecodeReason::InvalidFieldNumber(0));
        assert_eq!(reject(&[0x0e], signal_request()).2, DecodeReason::InvalidWireType(6));
        assert_eq!(reject(&[0x0f], signal_request()).2, DecodeReason::InvalidWireType(7));
        // A stray end-group tag, at the top and inside a sub-message.
        assert_eq!(reject(&[0x0c], signal_request()).2, DecodeReason::InvalidWireType(4));
        assert_eq!(reject(&[0x0a, 0x01, 0x0c], signal_request()).1, "offer");
        // A group closed with another number.
        assert_eq!(reject(&[0xfb, 0x07, 0x84, 0x08], signal_request()).2, DecodeReason::UnterminatedGroup);
        assert_eq!(reject(&[0xfb, 0x07], signal_request()).2, DecodeReason::UnterminatedGroup);
    }

    #[test]
    fn skips_unknown_fields_and_wrong_wire_types() {
        // field 127: a group, a varint, a fixed64, a fixed32 and a length-delimited value.
        let unknown = [
            &[0xfb, 0x07, 0xf8, 0x07, 0x01, 0xfc, 0x07][..],
            &[0xf8, 0x07, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            &[0xf9, 0x07, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0xfd, 0x07, 1, 2, 3, 4],
            &[0xfa, 0x07, 0x02, 0xff, 0xff],
        ]
        .concat();
        validate(&[&unknown[..], PING, &unknown].concat(), signal_request()).unwrap();
        // A string field sent as a varint is an unknown field, not a bad string.
        validate(&[0x2a, 0x02, 0x08, 0x01], signal_request()).unwrap();
        // A message field sent as a group is skipped whole.
        validate(&[0x0b, 0x12, 0x02, 0xff, 0xff, 0x0c], signal_request()).unwrap();
    }

    #[test]
    fn group_depth_matches_upb() {
        let nest = |n: usize| [[0xfb, 0x07].repeat(n), [0xfc, 0x07].repeat(n)].concat();
        validate(&nest(100), signal_request()).unwrap();
        assert_eq!(reject(&nest(101), signal_request()).2, DecodeReason::TooDeep);
        // Inside a sub-message the budget is one level smaller.
        let inside = |n: usize| {
            let body = nest(n);
            [vec![0x0a], padded(body.len() as u64, 0), body].concat()
        };
        validate(&inside(99), signal_request()).unwrap();
        assert_eq!(reject(&inside(100), signal_request()).2, DecodeReason::TooDeep);
    }

    #[test]
    fn rejects_invalid_utf8_with_path() {
        // update_metadata{attributes{key: "\xff", value: "v"}}
        let frame = [0x7a, 0x08, 0x1a, 0x06, 0x0a, 0x01, 0xff, 0x12, 0x01, b'v'];
        assert_eq!(
            reject(&frame, signal_request()),
            (6, "update_metadata.attributes[0].key".to_string(), DecodeReason::InvalidUtf8)
        );
        // An overlong encoding and a surrogate.
        for bad in [&[0xc0, 0x80][..], &[0xed, 0xa0, 0x80]] {
            let frame = [&[0x7a, bad.len() as u8 + 2, 0x0a, bad.len() as u8][..], bad].concat();
            assert_eq!(reject(&frame, signal_request()).1, "update_metadata.metadata");
        }
        // Bytes fields are not checked.
        validate(&[0xb2, 0x01, 0x06, 0x12, 0x04, 0x12, 0x02, 0xff, 0xfe], signal_request()).unwrap();
    }

    #[test]
    fn names_repeated_elements_in_paths() {
        // update{participants[0]{sid:"A"}, participants[1]{tracks[0]{sid:"\xff"}}}
        let track = [0x0a, 0x01, 0xff];
        let p1 = [&[0x22, track.len() as u8][..], &track].concat();
        let body = [&[0x0a, 0x03, 0x0a, 0x01, b'A', 0x0a, p1.len() as u8][..], &p1].concat();
        let frame = [&[0x2a, body.len() as u8][..], &body].concat();
        let (offset, path, reason) = reject(&frame, signal_response());
        assert_eq!((path.as_str(), reason), ("update.participants[1].tracks[0].sid", DecodeReason::InvalidUtf8));
        assert_eq!(frame[offset], 0xff);
    }

    #[test]
    fn packed_fields() {
        // update_audio_track{features: [1, 2]} packed, unpacked, and a packed run cut mid-varint.
        validate(&[0x8a, 0x01, 0x04, 0x12, 0x02, 0x01, 0x02], signal_request()).unwrap();
        validate(&[0x8a, 0x01, 0x04, 0x10, 0x01, 0x10, 0x02], signal_request()).unwrap();
        assert_eq!(reject(&[0x8a, 0x01, 0x04, 0x12, 0x02, 0x01, 0x80], signal_request()).2, DecodeReason::Truncated);
    }

    #[test]
    fn peek_reads_only_top_level_tags() {
        assert_eq!(peek(PING, signal_request()).unwrap(), signal_request().field_by_name("ping_req"));
        assert_eq!(peek(&[], signal_request()).unwrap(), None);
        // The last member wins; a member with the wrong wire type does not count.
        let both = [&[0x42, 0x02, 0x10, 0x01][..], PING, &[0x40, 0x01]].concat();
        assert_eq!(peek(&both, signal_request()).unwrap(), signal_request().field_by_name("ping_req"));
        // Bodies are not checked: a bad string inside still peeks.
        assert_eq!(
            peek(&[0x2a, 0x03, 0x0a, 0x01, 0xff], signal_request()).unwrap(),
            signal_request().field_by_name("mute")
        );
        assert!(peek(&[0x2a, 0x05], signal_request()).is_err());
    }
}
