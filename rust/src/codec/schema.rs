//! Static descriptor tables generated from `protos/` by `rust/build.rs`.

/// Protobuf scalar or composite type of a field (descriptor.proto's `Type`, less groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Double,
    Float,
    Int64,
    Uint64,
    Int32,
    Fixed64,
    Fixed32,
    Bool,
    String,
    Message,
    Bytes,
    Uint32,
    Enum,
    Sfixed32,
    Sfixed64,
    Sint32,
    Sint64,
}

impl Kind {
    /// The wire type a non-packed value of this kind uses.
    pub fn wire_type(self) -> u8 {
        use super::wire::{WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT};
        match self {
            Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => WIRE_FIXED64,
            Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => WIRE_FIXED32,
            Kind::String | Kind::Bytes | Kind::Message => WIRE_LEN,
            _ => WIRE_VARINT,
        }
    }

    /// Scalars other than strings, bytes and messages can be packed.
    pub fn packable(self) -> bool {
        !matches!(self, Kind::String | Kind::Bytes | Kind::Message)
    }
}

/// One field of a message.
#[derive(Debug)]
pub struct FieldDesc {
    pub number: u32,
    pub name: &'static str,
    pub json_name: &'static str,
    pub kind: Kind,
    pub repeated: bool,
    /// proto3 `optional`: the field is emitted whenever it is set, even at its default.
    pub explicit_presence: bool,
    /// Index into the owning message's `oneofs`.
    pub oneof: Option<usize>,
    /// Index into `MESSAGES` (kind Message) or `ENUMS` (kind Enum).
    pub type_index: usize,
}

/// One message type; `fields` are sorted by number.
#[derive(Debug)]
pub struct MessageDesc {
    pub full_name: &'static str,
    pub map_entry: bool,
    pub oneofs: &'static [&'static str],
    /// Positions in `fields`, ordered by field name.
    pub by_name: &'static [usize],
    pub fields: &'static [FieldDesc],
}

/// One enum type.
#[derive(Debug)]
pub struct EnumDesc {
    pub full_name: &'static str,
    pub values: &'static [(i32, &'static str)],
}

include!(concat!(env!("OUT_DIR"), "/schema_tables.rs"));

/// The encoded `FileDescriptorSet` our tables were built from.
pub static FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/schema.fds"));

impl MessageDesc {
    /// Position in `fields` of the field with this number.
    #[inline]
    pub fn field_pos(&self, number: u32) -> Option<usize> {
        // Most messages number their fields 1..=n without gaps.
        let guess = number as usize;
        if guess >= 1 && guess <= self.fields.len() && self.fields[guess - 1].number == number {
            return Some(guess - 1);
        }
        self.fields.binary_search_by_key(&number, |f| f.number).ok()
    }

    /// Position of the field with this proto name.
    #[inline]
    pub fn field_by_name(&self, name: &str) -> Option<usize> {
        self.by_name.binary_search_by(|&pos| self.fields[pos].name.cmp(name)).ok().map(|i| self.by_name[i])
    }

    /// Position of the field with this proto name or JSON name.
    pub fn field_by_any_name(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name || f.json_name == name)
    }

    pub fn message(&self, field: &FieldDesc) -> &'static MessageDesc {
        &MESSAGES[field.type_index]
    }
}

impl EnumDesc {
    /// The name JSON uses for `number`: the first value declared with it.
    pub fn name_of(&self, number: i32) -> Option<&'static str> {
        self.values.iter().find(|v| v.0 == number).map(|v| v.1)
    }

    pub fn number_of(&self, name: &str) -> Option<i32> {
        self.values.iter().find(|v| v.1 == name).map(|v| v.0)
    }
}

/// The SignalRequest descriptor.
pub fn signal_request() -> &'static MessageDesc {
    &MESSAGES[SIGNAL_REQUEST]
}

/// The SignalResponse descriptor.
pub fn signal_response() -> &'static MessageDesc {
    &MESSAGES[SIGNAL_RESPONSE]
}

/// Looks a message type up by its full name (`livekit.ParticipantInfo`).
pub fn message_by_name(full_name: &str) -> Option<&'static MessageDesc> {
    MESSAGES.iter().find(|m| m.full_name == full_name)
}
