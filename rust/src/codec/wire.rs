//! Protobuf wire-format primitives: varints, tags and skipping.
//! Positions are byte offsets into one buffer so errors can name them.

use crate::error::DecodeReason;

pub const WIRE_VARINT: u8 = 0;
pub const WIRE_FIXED64: u8 = 1;
pub const WIRE_LEN: u8 = 2;
pub const WIRE_START_GROUP: u8 = 3;
pub const WIRE_END_GROUP: u8 = 4;
pub const WIRE_FIXED32: u8 = 5;

/// Reads a varint at `pos`; returns the value and the position after it.
/// Like upb, bits beyond the 64th in a 10-byte varint are dropped, and an
/// 11th byte is an error.
#[inline]
pub fn read_varint(buf: &[u8], pos: usize) -> Result<(u64, usize), (usize, DecodeReason)> {
    read_varint_max(buf, pos, MAX_VARINT_LEN)
}

/// Longest varint upb reads for a value.
pub const MAX_VARINT_LEN: u32 = 10;
/// Longest varint upb reads for a tag or a length prefix: it decodes those as
/// 32-bit quantities and rejects a sixth byte even when it only pads zeros.
pub const MAX_TAG_OR_LENGTH_LEN: u32 = 5;

/// Reads a varint of at most `max_len` bytes at `pos`.
#[inline]
pub fn read_varint_max(buf: &[u8], pos: usize, max_len: u32) -> Result<(u64, usize), (usize, DecodeReason)> {
    // Most tags, lengths and small values are one byte.
    if let Some(&b) = buf.get(pos) {
        if b < 0x80 {
            return Ok((u64::from(b), pos + 1));
        }
    }
    let mut value: u64 = 0;
    let mut i = pos;
    for shift in 0..max_len {
        let Some(&b) = buf.get(i) else { return Err((pos, DecodeReason::Truncated)) };
        i += 1;
        value |= u64::from(b & 0x7f).wrapping_shl(7 * shift);
        if b & 0x80 == 0 {
            return Ok((value, i));
        }
    }
    Err((pos, DecodeReason::VarintTooLong))
}

/// A decoded tag: field number and wire type.
#[derive(Debug, Clone, Copy)]
pub struct Tag {
    pub number: u32,
    pub wire: u8,
}

/// Reads the tag of a message field: field number 0 is an error.
#[inline]
pub fn read_tag(buf: &[u8], pos: usize) -> Result<(Tag, usize), (usize, DecodeReason)> {
    let (tag, next) = read_group_tag(buf, pos)?;
    if tag.number == 0 {
        return Err((pos, DecodeReason::InvalidFieldNumber(0)));
    }
    Ok((tag, next))
}

/// Reads a tag inside an unknown group. upb skips a group's contents by wire
/// type alone, so there (and only there) field number 0 passes; the tag must
/// still fit 32 bits in at most five bytes.
#[inline]
pub fn read_group_tag(buf: &[u8], pos: usize) -> Result<(Tag, usize), (usize, DecodeReason)> {
    let (raw, next) = read_varint_max(buf, pos, MAX_TAG_OR_LENGTH_LEN)?;
    let wire = (raw & 7) as u8;
    let number = raw >> 3;
    if number > (1 << 29) - 1 {
        return Err((pos, DecodeReason::InvalidFieldNumber(number)));
    }
    if wire > 5 {
        return Err((pos, DecodeReason::InvalidWireType(wire)));
    }
    Ok((Tag { number: number as u32, wire }, next))
}

/// Where a field's value lies: `start..end` is the payload (varint bytes,
/// fixed bytes, or the inside of a length-delimited value).
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// Skips the value of a field whose tag has just been read; `end` bounds it.
/// Groups are skipped recursively up to their matching end tag.
pub fn skip_value(
    buf: &[u8],
    tag: Tag,
    pos: usize,
    end: usize,
    depth: u32,
) -> Result<(Span, usize), (usize, DecodeReason)> {
    let bounded = buf.get(..end).ok_or((pos, DecodeReason::Truncated))?;
    match tag.wire {
        WIRE_VARINT => {
            let (_, next) = read_varint(bounded, pos)?;
            Ok((Span { start: pos, end: next }, next))
        }
        WIRE_FIXED64 => fixed(bounded, pos, 8),
        WIRE_FIXED32 => fixed(bounded, pos, 4),
        WIRE_LEN => {
            let (len, start) = read_varint_max(bounded, pos, MAX_TAG_OR_LENGTH_LEN)?;
            if len > (end - start) as u64 {
                return Err((pos, DecodeReason::LengthOverrun { length: len }));
            }
            let stop = start + len as usize;
            Ok((Span { start, end: stop }, stop))
        }
        WIRE_START_GROUP => {
            if depth >= MAX_DEPTH {
                return Err((pos, DecodeReason::TooDeep));
            }
            let mut p = pos;
            loop {
                if p >= end {
                    return Err((pos, DecodeReason::UnterminatedGroup));
                }
                let (inner, next) = read_group_tag(bounded, p)?;
                if inner.wire == WIRE_END_GROUP {
                    if inner.number != tag.number {
                        return Err((p, DecodeReason::UnterminatedGroup));
                    }
                    return Ok((Span { start: pos, end: p }, next));
                }
                let (_, after) = skip_value(buf, inner, next, end, depth + 1)?;
                p = after;
            }
        }
        w => Err((pos, DecodeReason::InvalidWireType(w))),
    }
}

#[inline]
fn fixed(buf: &[u8], pos: usize, width: usize) -> Result<(Span, usize), (usize, DecodeReason)> {
    if buf.len() < pos + width {
        return Err((pos, DecodeReason::Truncated));
    }
    Ok((Span { start: pos, end: pos + width }, pos + width))
}

/// upb's default recursion limit.
pub const MAX_DEPTH: u32 = 100;

/// Appends a varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Number of bytes `put_varint` writes for `v`.
#[inline]
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
pub fn put_tag(out: &mut Vec<u8>, number: u32, wire: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire));
}

/// Zigzag encoding of signed integers (sint32/sint64).
#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(read_varint(&out, 0).unwrap(), (v, out.len()));
        }
    }

    #[test]
    fn varint_limits() {
        assert_eq!(read_varint(&[0x80; 10], 0).unwrap_err().1, DecodeReason::VarintTooLong);
        assert_eq!(read_varint(&[0x80, 0x80], 0).unwrap_err().1, DecodeReason::Truncated);
        // Ten bytes whose last byte carries bits past 64 are accepted; the bits are dropped.
        let mut ten = vec![0xff; 9];
        ten.push(0x7f);
        assert_eq!(read_varint(&ten, 0).unwrap(), (u64::MAX, 10));
    }

    #[test]
    fn zigzag_round_trip() {
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -64] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }

    #[test]
    fn tag_rejects_bad_numbers_and_wire_types() {
        assert!(matches!(read_tag(&[0x00], 0), Err((0, DecodeReason::InvalidFieldNumber(0)))));
        assert!(matches!(read_tag(&[0x0e], 0), Err((0, DecodeReason::InvalidWireType(6)))));
        // Tags are at most five bytes, even when the extra bytes only pad zeros.
        assert!(read_tag(&[0x88, 0x80, 0x80, 0x80, 0x00], 0).is_ok());
        assert!(matches!(read_tag(&[0x88, 0x80, 0x80, 0x80, 0x80, 0x00], 0), Err((0, DecodeReason::VarintTooLong))));
    }

    #[test]
    fn groups_skip_by_wire_type_only() {
        // Field 99 group holding field-0 values (a varint, and an empty group): upb accepts it.
        let group = [0x9b, 0x06, 0x00, 0x00, 0x03, 0x04, 0x9c, 0x06];
        let tag = read_tag(&group, 0).unwrap();
        assert_eq!(skip_value(&group, tag.0, tag.1, group.len(), 0).unwrap().1, group.len());
        // Wire types 6 and 7 are still errors inside.
        let bad = [0x9b, 0x06, 0x0e, 0x9c, 0x06];
        let tag = read_tag(&bad, 0).unwrap();
        assert!(skip_value(&bad, tag.0, tag.1, bad.len(), 0).is_err());
    }
}
