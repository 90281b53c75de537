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
    let bounded = &buf[..end];
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
            Kind::String if std::str::from_utf8(&buf[span.start..span.end]).is_err() => {
                return Err((span.start, DecodeReason::InvalidUtf8));
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

fn check_packed(buf: &[u8], kind: Kind, start: usize, end: usize) -> std::result::Result<(), Fail> {
    let width = match kind.wire_type() {
        super::wire::WIRE_FIXED32 => 4,
        super::wire::WIRE_FIXED64 => 8,
        _ => 0,
    };
    if width > 0 {
        if (end - start) % width != 0 {
            return Err((start, DecodeReason::BadPackedLength));
        }
        return Ok(());
    }
    let bounded = &buf[..end];
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
        let Ok((tag, after)) = read_tag(&buf[..stop], pos) else { break };
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
