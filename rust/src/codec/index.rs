//! One pass over a received frame that both validates it and indexes every message in it.
//!
//! Theory of operation: `validate` decides what a frame may be; this walk
//! applies the same checks (so it accepts and rejects exactly the same bytes)
//! and, on the way, records each message instance's known fields as
//! `Occurrence`s in one arena per frame. The walk is breadth-first: a message's
//! fields are appended to the arena as they are read, and each sub-message it
//! holds is queued (with its entry number, so the parent's occurrence can name
//! it) and walked after the parent ends. Every message's occurrences are thus
//! one contiguous slice, written once, never copied. Views (`view.rs`) read
//! fields by scanning that slice, never the bytes again. Checks run in another
//! order than `validate`'s depth-first walk, so when a frame is rejected the
//! first failure found may differ; `MessageView::decode` then reports what
//! `validate` reports (with the field path), and the fuzz test holds both walks
//! to the same verdict on every input.

use std::sync::OnceLock;

use super::schema::{FieldDesc, Kind, MessageDesc, MESSAGES};
use super::validate::check_packed;
use super::wire::{read_tag, skip_value, Tag, MAX_DEPTH, MAX_VARINT_LEN, WIRE_END_GROUP, WIRE_LEN, WIRE_VARINT};
use crate::error::DecodeReason;

/// One known field of one message instance, as it appears on the wire: 12 bytes.
#[derive(Clone, Copy, Debug)]
pub struct Occurrence {
    pub field_pos: u16,
    pub wire: u8,
    pub start: u32,
    /// The end of the value's span; for a sub-message, which is never read as bytes, the entry
    /// (in `FrameIndex::messages`) of the message it holds instead. See `end` and `child`.
    end_or_child: u32,
}

impl Occurrence {
    /// End of the value (scalars, strings, bytes and packed runs).
    #[inline]
    pub fn end(&self) -> u32 {
        self.end_or_child
    }

    /// The sub-message's entry (message-typed fields only).
    #[inline]
    pub fn child(&self) -> u32 {
        self.end_or_child
    }
}

/// One message instance: where its occurrences lie in the arena.
#[derive(Clone, Copy, Debug)]
pub struct MessageEntry {
    pub first: u32,
    pub len: u32,
    /// It also holds unknown fields, or known ones with the wrong wire type (upb keeps those aside).
    pub has_unknown: bool,
}

/// Every message instance of one frame; the root is the first entry.
#[derive(Debug, Default)]
pub struct FrameIndex {
    pub occurrences: Vec<Occurrence>,
    pub messages: Vec<MessageEntry>,
}

impl FrameIndex {
    pub fn root(&self) -> u32 {
        0
    }

    pub fn occurrences_of(&self, message: u32) -> &[Occurrence] {
        let entry = self.messages[message as usize];
        &self.occurrences[entry.first as usize..(entry.first + entry.len) as usize]
    }
}

type Fail = (usize, DecodeReason);

/// The end of the varint at `pos` (of at most 10 bytes, all inside `buf`), or None to let
/// `skip_value` report what is wrong with it.
#[inline]
fn varint_end(buf: &[u8], pos: usize) -> Option<usize> {
    let window = buf.get(pos..)?;
    let window = &window[..window.len().min(MAX_VARINT_LEN as usize)];
    window.iter().position(|&b| b < 0x80).map(|i| pos + i + 1)
}

/// Validates `buf` as `desc` and indexes it; on failure, some offset and reason that make it invalid.
pub fn index_frame(buf: &[u8], desc: &'static MessageDesc) -> Result<FrameIndex, Fail> {
    if u32::try_from(buf.len()).is_err() {
        return Err((0, DecodeReason::TooLarge));
    }
    // About one field per 5 bytes, one message per 25, in LiveKit's frames; room for one per 4
    // bytes, so the arena is not copied to grow.
    let mut index = FrameIndex {
        occurrences: Vec::with_capacity(buf.len() / 4 + 8),
        messages: Vec::with_capacity(buf.len() / 25 + 2),
    };
    let mut queue = Vec::with_capacity(buf.len() / 25 + 2);
    index.messages.push(MessageEntry { first: 0, len: 0, has_unknown: false });
    let Some(message) = message_number(desc) else {
        return Err((0, DecodeReason::Truncated)); // not a type of our schema: cannot happen
    };
    queue.push(Pending { start: 0, end: buf.len() as u32, message, depth: 0 });
    let mut next = 0;
    while let Some(&pending) = queue.get(next) {
        walk_message(buf, pending, next, &mut index, &mut queue)?;
        next += 1;
    }
    Ok(index)
}

/// A sub-message waiting to be walked; its entry number is its place in the queue.
#[derive(Clone, Copy)]
struct Pending {
    start: u32,
    end: u32,
    /// Index into `MESSAGES` (and `fast_tables()`).
    message: u32,
    depth: u32,
}

/// What the walk needs of one field, packed small and indexed by field number.
#[derive(Clone, Copy)]
struct FastField {
    /// Position in the message's `fields`; `ABSENT` for a number the message does not have.
    pos: u16,
    wire: u8,
    shape: Shape,
    type_index: u16,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Plain,
    String,
    Message,
    /// A repeated scalar, which may also come packed.
    Packable,
}

const ABSENT: u16 = u16::MAX;
/// Field numbers below this are looked up in a table; higher ones (rare) through `field_pos`.
/// 32 entries of 6 bytes for each of the schema's types keep all tables inside L1.
const TABLE_NUMBERS: usize = 32;

/// Per message type, `TABLE_NUMBERS` entries: built once from the schema.
fn fast_tables() -> &'static [[FastField; TABLE_NUMBERS]] {
    static TABLES: OnceLock<Vec<[FastField; TABLE_NUMBERS]>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let absent = FastField { pos: ABSENT, wire: 0, shape: Shape::Plain, type_index: 0 };
        MESSAGES
            .iter()
            .map(|desc| {
                let mut table = [absent; TABLE_NUMBERS];
                for (pos, field) in desc.fields.iter().enumerate() {
                    if (field.number as usize) < TABLE_NUMBERS {
                        table[field.number as usize] = fast_field(pos, field);
                    }
                }
                table
            })
            .collect()
    })
}

fn fast_field(pos: usize, field: &FieldDesc) -> FastField {
    let shape = match field.kind {
        Kind::String => Shape::String,
        Kind::Message => Shape::Message,
        _ if field.repeated && field.kind.packable() => Shape::Packable,
        _ => Shape::Plain,
    };
    FastField { pos: pos as u16, wire: field.kind.wire_type(), shape, type_index: field.type_index as u16 }
}

fn message_number(desc: &'static MessageDesc) -> Option<u32> {
    MESSAGES.iter().position(|m| std::ptr::eq(m, desc)).map(|i| i as u32)
}

fn walk_message(
    buf: &[u8],
    message: Pending,
    entry: usize,
    index: &mut FrameIndex,
    queue: &mut Vec<Pending>,
) -> Result<(), Fail> {
    let (start, end, depth) = (message.start as usize, message.end as usize, message.depth);
    let desc = &MESSAGES[message.message as usize];
    let table = &fast_tables()[message.message as usize];
    if depth > MAX_DEPTH {
        return Err((start, DecodeReason::TooDeep));
    }
    let bounded = buf.get(..end).ok_or((start, DecodeReason::Truncated))?;
    let first = index.occurrences.len();
    let mut has_unknown = false;
    let mut pos = start;
    while pos < end {
        // Tags and lengths of one byte are nearly all of them: decode those inline.
        let (number, wire, after_tag) = match bounded[pos] {
            b if (8..0x80).contains(&b) && b & 7 != WIRE_END_GROUP && b & 7 < 6 => (u32::from(b >> 3), b & 7, pos + 1),
            _ => {
                let (tag, after) = read_tag(bounded, pos)?;
                if tag.wire == WIRE_END_GROUP {
                    return Err((pos, DecodeReason::InvalidWireType(WIRE_END_GROUP)));
                }
                (tag.number, tag.wire, after)
            }
        };
        let slow = || -> Result<(usize, usize, usize), Fail> {
            let (span, next) = skip_value(buf, Tag { number, wire }, after_tag, end, depth)?;
            Ok((span.start, span.end, next))
        };
        let (span_start, span_end, next) = match (wire, bounded.get(after_tag)) {
            (WIRE_LEN, Some(&len)) if len < 0x80 => {
                let stop = after_tag + 1 + usize::from(len);
                if stop > end {
                    return Err((after_tag, DecodeReason::LengthOverrun { length: u64::from(len) }));
                }
                (after_tag + 1, stop, stop)
            }
            (WIRE_VARINT, Some(&byte)) if byte < 0x80 => (after_tag, after_tag + 1, after_tag + 1),
            // Two-byte lengths (128 B to 16 KiB: participants, tracks, SDP) and multi-byte varints
            // (timestamps, versions) come next; keep them out of `skip_value` too.
            (WIRE_LEN, Some(&low)) => match bounded.get(after_tag + 1) {
                Some(&high) if high < 0x80 => {
                    let len = usize::from(low & 0x7f) | usize::from(high) << 7;
                    let stop = after_tag + 2 + len;
                    if stop > end {
                        return Err((after_tag, DecodeReason::LengthOverrun { length: len as u64 }));
                    }
                    (after_tag + 2, stop, stop)
                }
                _ => slow()?,
            },
            (WIRE_VARINT, Some(_)) => match varint_end(bounded, after_tag) {
                Some(last) => (after_tag, last, last),
                None => slow()?,
            },
            _ => slow()?,
        };
        pos = next;
        let field = match table.get(number as usize) {
            Some(field) => *field,
            None => match desc.field_pos(number) {
                Some(p) => fast_field(p, &desc.fields[p]),
                None => table[0], // number 0 is never a field: absent
            },
        };
        if field.pos == ABSENT {
            has_unknown = true;
            continue;
        }
        let mut end_or_child = span_end as u32;
        if wire == field.wire {
            // Two tests, not a `match`: its jump table was the walk's costliest instruction
            // (an indirect branch the predictor misses as field shapes alternate).
            if field.shape == Shape::String {
                let text = buf.get(span_start..span_end).ok_or((span_start, DecodeReason::Truncated))?;
                if !text.is_ascii() && std::str::from_utf8(text).is_err() {
                    return Err((span_start, DecodeReason::InvalidUtf8));
                }
            } else if field.shape == Shape::Message {
                end_or_child = index.messages.len() as u32;
                index.messages.push(MessageEntry { first: 0, len: 0, has_unknown: false });
                let (start, end) = (span_start as u32, span_end as u32);
                queue.push(Pending { start, end, message: u32::from(field.type_index), depth: depth + 1 });
            }
        } else if field.shape == Shape::Packable && wire == WIRE_LEN {
            check_packed(buf, desc.fields[field.pos as usize].kind, span_start, span_end)?;
        } else {
            has_unknown = true;
            continue;
        }
        index.occurrences.push(Occurrence { field_pos: field.pos, wire, start: span_start as u32, end_or_child });
    }
    let len = index.occurrences.len() - first;
    index.messages[entry] = MessageEntry { first: first as u32, len: len as u32, has_unknown };
    Ok(())
}
