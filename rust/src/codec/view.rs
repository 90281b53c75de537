//! Read-only views over validated frames.
//!
//! Theory of operation: decoding a frame validates it and indexes every
//! message in it in one pass (`index.rs`): each message instance becomes a
//! slice of an arena of occurrences (field, wire type, value span, child
//! message). A `MessageView` is a shared handle on that frame plus the message
//! instance (or instances) it stands for. Protobuf merges a singular
//! sub-message that appears several times, and a message concatenated with
//! another; a view of several instances gives exactly that: scalars take the
//! last occurrence across them all, and a sub-message view collects the
//! instances of all its occurrences. Reading a field scans the message's
//! occurrences, never the bytes; nothing is copied out of the buffer until a
//! value is read.

use std::borrow::Cow;
use std::sync::Arc;

use super::index::{index_frame, FrameIndex, Occurrence};
use super::schema::{FieldDesc, Kind, MessageDesc, MESSAGES};
use super::wire::{read_varint, unzigzag, WIRE_LEN};
use crate::error::{DecodeReason, Error, Result};

/// Where a frame's bytes live; the Python layer keeps the exporting object alive.
pub trait Source: Send + Sync {
    fn bytes(&self) -> &[u8];

    /// Whether the bytes can never change after decoding (a `bytes` object, yes; a `bytearray`,
    /// no). Strings of an immutable frame were checked once, at decode, and are not checked again.
    fn immutable(&self) -> bool {
        false
    }
}

impl Source for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }

    fn immutable(&self) -> bool {
        true
    }
}

/// A validated frame: its bytes and the index of every message in it.
struct Frame {
    src: Arc<dyn Source>,
    immutable: bool,
    index: FrameIndex,
}

/// The message instances a view stands for (several when occurrences merge).
#[derive(Clone, Debug)]
enum Instances {
    Empty,
    One(u32),
    Many(Arc<[u32]>),
}

/// A read-only view of one message.
#[derive(Clone)]
pub struct MessageView {
    frame: Arc<Frame>,
    instances: Instances,
    desc: &'static MessageDesc,
}

/// A scalar value read from the wire. Floats stay `f32` so JSON can print
/// them the way the reference does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Enum(i32),
    Str(&'a str),
    Bytes(&'a [u8]),
}

/// A map value: a scalar or a message.
pub enum MapValue<'a> {
    Scalar(Scalar<'a>),
    Message(MessageView),
}

/// The value of one field.
pub enum FieldValue<'a> {
    Scalar(Scalar<'a>),
    /// A singular sub-message; `present` is false for an unset field (read as an empty message).
    Message {
        view: MessageView,
        present: bool,
    },
    List(Vec<Scalar<'a>>),
    Messages(Vec<MessageView>),
    /// Entries in wire order; later duplicates of a key win.
    Map(Vec<(Scalar<'a>, MapValue<'a>)>),
}

impl MessageView {
    /// Validates `src` as `desc` (rejecting exactly what upb rejects) and returns a view of it.
    pub fn decode(src: Arc<dyn Source>, desc: &'static MessageDesc) -> Result<MessageView> {
        let index = match index_frame(src.bytes(), desc) {
            Ok(index) => index,
            Err((offset, reason)) => {
                // The fast walk keeps no path and checks in another order: report what the checking
                // walk finds first, with its path (the fuzz test holds both to the same verdict).
                super::validate::validate(src.bytes(), desc)?;
                return Err(Error::Decode { offset, path: String::new(), reason });
            }
        };
        let root = index.root();
        let immutable = src.immutable();
        Ok(MessageView { frame: Arc::new(Frame { src, immutable, index }), instances: Instances::One(root), desc })
    }

    /// A view of a whole buffer that `validate` accepted for `desc`.
    ///
    /// # Panics
    /// If `validate` would reject the buffer.
    pub fn root(src: Arc<dyn Source>, desc: &'static MessageDesc) -> Self {
        match Self::decode(src, desc) {
            Ok(view) => view,
            Err(error) => panic!("MessageView::root of a buffer that does not validate: {error}"),
        }
    }

    pub fn desc(&self) -> &'static MessageDesc {
        self.desc
    }

    fn bytes(&self) -> &[u8] {
        self.frame.src.bytes()
    }

    fn occurrences(&self) -> Cow<'_, [Occurrence]> {
        let index = &self.frame.index;
        match &self.instances {
            Instances::Empty => Cow::Borrowed(&[]),
            Instances::One(id) => Cow::Borrowed(index.occurrences_of(*id)),
            Instances::Many(ids) => Cow::Owned(ids.iter().flat_map(|id| index.occurrences_of(*id)).copied().collect()),
        }
    }

    /// The occurrences that make up the field's current value, honouring oneof
    /// semantics (a later member of the same oneof clears earlier ones).
    fn effective(&self, pos: usize) -> Vec<Occurrence> {
        let occ = self.occurrences();
        let field = &self.desc.fields[pos];
        let from = match field.oneof {
            None => 0,
            Some(o) => {
                let fields = self.desc.fields;
                match occ.iter().rposition(|x| fields[x.field_pos as usize].oneof == Some(o)) {
                    None => return Vec::new(),
                    Some(last) if occ[last].field_pos as usize != pos => return Vec::new(),
                    Some(last) => occ[..last]
                        .iter()
                        .rposition(|x| fields[x.field_pos as usize].oneof == Some(o) && x.field_pos as usize != pos)
                        .map_or(0, |i| i + 1),
                }
            }
        };
        occ[from..].iter().filter(|x| x.field_pos as usize == pos).copied().collect()
    }

    /// Whether the field is present on the wire (for oneofs: whether it is the
    /// chosen member; for repeated fields and maps: whether they hold anything).
    pub fn has(&self, pos: usize) -> Result<bool> {
        if self.desc.fields[pos].repeated {
            return Ok(match self.get(pos)? {
                FieldValue::List(v) => !v.is_empty(),
                FieldValue::Messages(v) => !v.is_empty(),
                FieldValue::Map(v) => !v.is_empty(),
                FieldValue::Scalar(_) | FieldValue::Message { .. } => true,
            });
        }
        Ok(!self.effective(pos).is_empty())
    }

    /// The chosen member of oneof number `oneof`, as a field position.
    pub fn which_oneof(&self, oneof: usize) -> Result<Option<usize>> {
        let fields = self.desc.fields;
        Ok(self
            .occurrences()
            .iter()
            .rev()
            .find(|x| fields[x.field_pos as usize].oneof == Some(oneof))
            .map(|x| x.field_pos as usize))
    }

    /// Reads field `pos` when it is a plain scalar (not repeated, not a message, in no oneof): the
    /// last occurrence, or the default. None for any other field (read those with `get`).
    #[inline]
    pub fn scalar(&self, pos: usize) -> Option<Result<Scalar<'_>>> {
        let field = &self.desc.fields[pos];
        if field.oneof.is_some() || field.repeated || field.kind == Kind::Message {
            return None;
        }
        let last = self.occurrences().iter().rev().find(|x| x.field_pos as usize == pos).copied();
        Some(match last {
            None => Ok(default_scalar(field.kind)),
            Some(o) => self.read_one(field.kind, &o),
        })
    }

    /// Reads field `pos` (a position in `desc().fields`).
    pub fn get(&self, pos: usize) -> Result<FieldValue<'_>> {
        let field = &self.desc.fields[pos];
        if field.oneof.is_none() && !field.repeated && field.kind != Kind::Message {
            // The common read: the last occurrence wins, nothing to collect.
            let last = self.occurrences().iter().rev().find(|x| x.field_pos as usize == pos).copied();
            return match last {
                None => Ok(FieldValue::Scalar(default_scalar(field.kind))),
                Some(o) => self.read_one(field.kind, &o).map(FieldValue::Scalar),
            };
        }
        if field.kind == Kind::Message {
            let sub = &MESSAGES[field.type_index];
            if field.repeated && sub.map_entry {
                let occ = self.effective(pos);
                let mut entries = Vec::with_capacity(occ.len());
                for o in &occ {
                    if let Some(entry) = self.map_entry(sub, o)? {
                        entries.push(entry);
                    }
                }
                return Ok(FieldValue::Map(entries));
            }
            if field.repeated {
                return Ok(FieldValue::Messages(self.children(pos)));
            }
            let occ = self.effective(pos);
            let present = !occ.is_empty();
            let instances = instances_of(occ.iter().map(Occurrence::child));
            return Ok(FieldValue::Message { view: self.view_of(sub, instances), present });
        }
        let occ = self.effective(pos);
        if field.repeated {
            let mut values = Vec::with_capacity(occ.len());
            for o in &occ {
                if o.wire == WIRE_LEN && field.kind.packable() {
                    self.read_packed(field, o, &mut values)?;
                } else {
                    values.push(self.read_one(field.kind, o)?);
                }
            }
            return Ok(FieldValue::List(values));
        }
        match occ.last() {
            None => Ok(FieldValue::Scalar(default_scalar(field.kind))),
            Some(o) => self.read_one(field.kind, o).map(FieldValue::Scalar),
        }
    }

    /// The elements of repeated message field `pos`, one view per occurrence.
    fn children(&self, pos: usize) -> Vec<MessageView> {
        let mut views = Vec::new();
        self.for_each_element(pos, |view| views.push(view));
        views
    }

    /// Calls `f` with a view of each element of repeated message field `pos` (not a map), in
    /// wire order; returns false (calling nothing) when `pos` is not such a field.
    pub fn for_each_element(&self, pos: usize, mut f: impl FnMut(MessageView)) -> bool {
        if !self.is_message_list(pos) {
            return false;
        }
        let field = &self.desc.fields[pos];
        let sub = &MESSAGES[field.type_index];
        for o in self.occurrences().iter().filter(|o| o.field_pos as usize == pos) {
            f(self.view_of(sub, Instances::One(o.child())));
        }
        true
    }

    /// Whether field `pos` is a repeated message field that is not a map.
    #[inline]
    pub fn is_message_list(&self, pos: usize) -> bool {
        let field = &self.desc.fields[pos];
        field.repeated && field.kind == Kind::Message && !MESSAGES[field.type_index].map_entry
    }

    /// How many elements repeated message field `pos` has (see `for_each_element`).
    pub fn element_count(&self, pos: usize) -> usize {
        self.occurrences().iter().filter(|o| o.field_pos as usize == pos).count()
    }

    fn view_of(&self, desc: &'static MessageDesc, instances: Instances) -> MessageView {
        MessageView { frame: self.frame.clone(), instances, desc }
    }

    #[inline]
    fn read_one(&self, kind: Kind, o: &Occurrence) -> Result<Scalar<'_>> {
        let buf = self.bytes();
        let (s, e) = (o.start as usize, o.end() as usize);
        match kind {
            Kind::String => {
                let text = buf.get(s..e).ok_or(mutated(s))?;
                if self.frame.immutable {
                    // SAFETY: decoding checked this span as UTF-8 (every string occurrence the index
                    // records was), and an immutable source cannot have changed since.
                    return Ok(Scalar::Str(unsafe { std::str::from_utf8_unchecked(text) }));
                }
                std::str::from_utf8(text).map(Scalar::Str).map_err(|_| Error::Decode {
                    offset: s,
                    path: String::new(),
                    reason: DecodeReason::InvalidUtf8,
                })
            }
            Kind::Bytes => buf.get(s..e).map(Scalar::Bytes).ok_or(mutated(s)),
            _ => self.read_scalar(kind, s),
        }
    }

    fn read_scalar(&self, kind: Kind, pos: usize) -> Result<Scalar<'_>> {
        let buf = self.bytes();
        let fixed4 =
            || -> Result<[u8; 4]> { buf.get(pos..pos + 4).and_then(|b| b.try_into().ok()).ok_or(mutated(pos)) };
        let fixed8 =
            || -> Result<[u8; 8]> { buf.get(pos..pos + 8).and_then(|b| b.try_into().ok()).ok_or(mutated(pos)) };
        let varint = || -> Result<u64> { read_varint(buf, pos).map(|v| v.0).map_err(|_| mutated(pos)) };
        Ok(match kind {
            Kind::Double => Scalar::F64(f64::from_le_bytes(fixed8()?)),
            Kind::Float => Scalar::F32(f32::from_le_bytes(fixed4()?)),
            Kind::Int64 => Scalar::I64(varint()? as i64),
            Kind::Uint64 => Scalar::U64(varint()?),
            Kind::Int32 => Scalar::I64(i64::from(varint()? as i32)),
            Kind::Fixed64 => Scalar::U64(u64::from_le_bytes(fixed8()?)),
            Kind::Fixed32 => Scalar::U64(u64::from(u32::from_le_bytes(fixed4()?))),
            Kind::Bool => Scalar::Bool(varint()? != 0),
            Kind::Uint32 => Scalar::U64(u64::from(varint()? as u32)),
            Kind::Enum => Scalar::Enum(varint()? as i32),
            Kind::Sfixed32 => Scalar::I64(i64::from(i32::from_le_bytes(fixed4()?))),
            Kind::Sfixed64 => Scalar::I64(i64::from_le_bytes(fixed8()?)),
            Kind::Sint32 => Scalar::I64(i64::from(unzigzag(u64::from(varint()? as u32)) as i32)),
            Kind::Sint64 => Scalar::I64(unzigzag(varint()?)),
            Kind::String | Kind::Bytes | Kind::Message => return Err(mutated(pos)),
        })
    }

    fn read_packed<'s>(&'s self, field: &FieldDesc, o: &Occurrence, out: &mut Vec<Scalar<'s>>) -> Result<()> {
        let buf = self.bytes();
        let (mut p, end) = (o.start as usize, o.end() as usize);
        while p < end {
            out.push(self.read_scalar(field.kind, p)?);
            p = match field.kind.wire_type() {
                super::wire::WIRE_FIXED32 => p + 4,
                super::wire::WIRE_FIXED64 => p + 8,
                _ => read_varint(buf.get(..end).ok_or(mutated(p))?, p).map_err(|_| mutated(p))?.1,
            };
        }
        Ok(())
    }

    /// Reads one map entry; `None` for an entry that upb drops from the map.
    ///
    /// upb moves a map entry that carries any field other than its key and
    /// value (an unknown number, or the key or value with the wrong wire type)
    /// to the parent's unknown fields, so the map does not contain it.
    fn map_entry(&self, entry: &'static MessageDesc, o: &Occurrence) -> Result<Option<(Scalar<'_>, MapValue<'_>)>> {
        let index = &self.frame.index;
        if index.messages[o.child() as usize].has_unknown {
            return Ok(None);
        }
        let occ = index.occurrences_of(o.child());
        let key_field = &entry.fields[0];
        let value_field = &entry.fields[1];
        let last = |pos: u16| occ.iter().rev().find(|x| x.field_pos == pos).copied();
        let key = match last(0) {
            Some(k) => self.read_one(key_field.kind, &k)?,
            None => default_scalar(key_field.kind),
        };
        let value = if value_field.kind == Kind::Message {
            let sub = &MESSAGES[value_field.type_index];
            let instances = instances_of(occ.iter().filter(|x| x.field_pos == 1).map(Occurrence::child));
            MapValue::Message(self.view_of(sub, instances))
        } else {
            MapValue::Scalar(match last(1) {
                Some(v) => self.read_one(value_field.kind, &v)?,
                None => default_scalar(value_field.kind),
            })
        };
        Ok(Some((key, value)))
    }
}

/// The instances of a (possibly merged) sub-message, from its occurrences' children.
fn instances_of(children: impl Iterator<Item = u32>) -> Instances {
    let ids: Vec<u32> = children.collect();
    match ids.as_slice() {
        [] => Instances::Empty,
        [one] => Instances::One(*one),
        _ => Instances::Many(ids.into()),
    }
}

/// The value an unset scalar field reads as.
pub fn default_scalar(kind: Kind) -> Scalar<'static> {
    match kind {
        Kind::Double => Scalar::F64(0.0),
        Kind::Float => Scalar::F32(0.0),
        Kind::Int64 | Kind::Int32 | Kind::Sfixed32 | Kind::Sfixed64 | Kind::Sint32 | Kind::Sint64 => Scalar::I64(0),
        Kind::Uint64 | Kind::Fixed64 | Kind::Fixed32 | Kind::Uint32 => Scalar::U64(0),
        Kind::Bool => Scalar::Bool(false),
        Kind::Enum => Scalar::Enum(0),
        Kind::String => Scalar::Str(""),
        Kind::Bytes | Kind::Message => Scalar::Bytes(&[]),
    }
}

/// A buffer that changed after validation (a bytearray mutated in place).
fn mutated(offset: usize) -> Error {
    Error::Decode { offset, path: String::new(), reason: DecodeReason::Truncated }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::schema::{signal_request, signal_response};
    use crate::codec::validate::validate;

    fn root(buf: &[u8], desc: &'static MessageDesc) -> MessageView {
        validate(buf, desc).unwrap();
        MessageView::decode(Arc::new(buf.to_vec()), desc).unwrap()
    }

    fn pos(desc: &MessageDesc, name: &str) -> usize {
        desc.field_by_name(name).unwrap()
    }

    fn sub(view: &MessageView, name: &str) -> MessageView {
        match view.get(pos(view.desc(), name)).unwrap() {
            FieldValue::Message { view, .. } => view,
            _ => panic!("{name} is not a message"),
        }
    }

    fn scalar<'a>(view: &'a MessageView, name: &str) -> Scalar<'a> {
        match view.get(pos(view.desc(), name)).unwrap() {
            FieldValue::Scalar(s) => s,
            _ => panic!("{name} is not a scalar"),
        }
    }

    #[test]
    fn reads_golden_ping() {
        let view = root(&[0x82, 0x01, 0x09, 0x08, 0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31, 0x10, 0x0c], signal_request());
        assert_eq!(view.which_oneof(0).unwrap(), Some(pos(signal_request(), "ping_req")));
        let ping = sub(&view, "ping_req");
        assert_eq!(scalar(&ping, "timestamp"), Scalar::I64(1_700_000_000_000));
        assert_eq!(scalar(&ping, "rtt"), Scalar::I64(12));
    }

    #[test]
    fn unset_fields_read_as_defaults() {
        let view = root(&[], signal_response());
        assert_eq!(view.which_oneof(0).unwrap(), None);
        match view.get(pos(signal_response(), "join")).unwrap() {
            FieldValue::Message { view: join, present } => {
                assert!(!present);
                let room = sub(&join, "room");
                assert_eq!(scalar(&room, "name"), Scalar::Str(""));
                assert_eq!(scalar(&room, "num_participants"), Scalar::U64(0));
            }
            _ => panic!("join is a message"),
        }
        assert_eq!(scalar(&view, "pong"), Scalar::I64(0));
    }

    #[test]
    fn last_scalar_wins_and_messages_merge() {
        // pong: 1, then pong: 2.
        let view = root(&[0x90, 0x01, 0x01, 0x90, 0x01, 0x02], signal_response());
        assert_eq!(scalar(&view, "pong"), Scalar::I64(2));
        // track_published{cid:"c", track{sid:"T"}} then track_published{track{name:"n"}}.
        let frame = [
            0x32, 0x08, 0x0a, 0x01, b'c', 0x12, 0x03, 0x0a, 0x01, b'T', // first
            0x32, 0x05, 0x12, 0x03, 0x1a, 0x01, b'n', // second
        ];
        let view = root(&frame, signal_response());
        let published = sub(&view, "track_published");
        let track = sub(&published, "track");
        assert_eq!(scalar(&published, "cid"), Scalar::Str("c"));
        assert_eq!(scalar(&track, "sid"), Scalar::Str("T"));
        assert_eq!(scalar(&track, "name"), Scalar::Str("n"));
    }

    #[test]
    fn a_later_oneof_member_clears_the_earlier_one() {
        // mute{sid:"A"}, pong: 1, mute{muted: true}: mute holds only the last occurrence.
        let frame = [0x4a, 0x03, 0x0a, 0x01, b'A', 0x90, 0x01, 0x01, 0x4a, 0x02, 0x10, 0x01];
        let view = root(&frame, signal_response());
        assert_eq!(view.which_oneof(0).unwrap(), Some(pos(signal_response(), "mute")));
        assert!(!view.has(pos(signal_response(), "pong")).unwrap());
        let mute = sub(&view, "mute");
        assert_eq!(scalar(&mute, "sid"), Scalar::Str(""));
        assert_eq!(scalar(&mute, "muted"), Scalar::Bool(true));
    }

    #[test]
    fn packed_and_unpacked_elements_concatenate() {
        // update_audio_track{features: packed [1, 2], then 300 unpacked}
        let frame = [0x8a, 0x01, 0x07, 0x12, 0x02, 0x01, 0x02, 0x10, 0xac, 0x02];
        let view = root(&frame, signal_request());
        let track = sub(&view, "update_audio_track");
        match track.get(pos(track.desc(), "features")).unwrap() {
            FieldValue::List(v) => assert_eq!(v, vec![Scalar::Enum(1), Scalar::Enum(2), Scalar::Enum(300)]),
            _ => panic!("features is repeated"),
        }
    }

    #[test]
    fn map_entries_with_unknown_fields_are_dropped() {
        // update_metadata{attributes: {"a": "b" + unknown field 3}, {"z": "y"}, {"k" with value as varint}}
        let frame = [
            0x7a, 0x19, //
            0x1a, 0x08, 0x0a, 0x01, b'a', 0x12, 0x01, b'b', 0x18, 0x01, // dropped: field 3
            0x1a, 0x06, 0x0a, 0x01, b'z', 0x12, 0x01, b'y', // kept
            0x1a, 0x05, 0x0a, 0x01, b'k', 0x10, 0x01, // dropped: value with the wrong wire type
        ];
        let view = root(&frame, signal_request());
        let meta = sub(&view, "update_metadata");
        match meta.get(pos(meta.desc(), "attributes")).unwrap() {
            FieldValue::Map(entries) => {
                assert_eq!(entries.len(), 1);
                assert_eq!(entries[0].0, Scalar::Str("z"));
                assert!(matches!(entries[0].1, MapValue::Scalar(Scalar::Str("y"))));
            }
            _ => panic!("attributes is a map"),
        }
        // Entries missing their key or value read them as defaults.
        let frame = [0x7a, 0x05, 0x1a, 0x03, 0x12, 0x01, b'v'];
        let view = root(&frame, signal_request());
        let meta = sub(&view, "update_metadata");
        match meta.get(pos(meta.desc(), "attributes")).unwrap() {
            FieldValue::Map(entries) => assert_eq!(entries[0].0, Scalar::Str("")),
            _ => panic!("attributes is a map"),
        }
    }

    #[test]
    fn integer_reads_truncate_like_upb() {
        // room_update.room.num_participants (uint32) sent as a 64-bit varint: the low 32 bits are kept.
        let body = [0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        let room = [&[0x0a, body.len() as u8][..], &body].concat();
        let frame = [&[0x5a, room.len() as u8][..], &room].concat();
        let view = root(&frame, signal_response());
        let room = sub(&sub(&view, "room_update"), "room");
        assert_eq!(scalar(&room, "num_participants"), Scalar::U64(u64::from(u32::MAX)));
        // A bool is true for any non-zero varint.
        let view = root(&[0x4a, 0x06, 0x10, 0x80, 0x80, 0x80, 0x80, 0x10], signal_response());
        assert_eq!(scalar(&sub(&view, "mute"), "muted"), Scalar::Bool(true));
    }
}
