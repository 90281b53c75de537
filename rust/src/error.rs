//! The one error type of the core crate. `py/errors.rs` maps it to Python
//! exceptions in a single place.

use std::fmt;

/// Why a byte sequence is not a valid protobuf message of the expected type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeReason {
    /// The buffer ends inside a tag, varint, fixed-width value or length-delimited value.
    Truncated,
    /// A varint longer than the reference reads: 10 bytes for values, 5 for tags and lengths.
    VarintTooLong,
    /// Wire type 6 or 7, or an end-group tag with no matching start.
    InvalidWireType(u8),
    /// Field number 0 or above 2^29-1.
    InvalidFieldNumber(u64),
    /// A length prefix points past the end of its enclosing message.
    LengthOverrun { length: u64 },
    /// A string field holds bytes that are not UTF-8.
    InvalidUtf8,
    /// A packed fixed-width field whose length is not a multiple of its element size.
    BadPackedLength,
    /// Sub-messages nested deeper than the decoder's limit.
    TooDeep,
    /// A group that is never closed, or closed with another field number.
    UnterminatedGroup,
    /// A frame of 4 GiB or more (views address bytes with 32-bit offsets).
    TooLarge,
}

impl fmt::Display for DecodeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated input"),
            Self::VarintTooLong => f.write_str("varint too long"),
            Self::InvalidWireType(w) => write!(f, "invalid wire type {w}"),
            Self::InvalidFieldNumber(n) => write!(f, "invalid field number {n}"),
            Self::LengthOverrun { length } => write!(f, "length {length} runs past the end of the buffer"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8 in string field"),
            Self::BadPackedLength => f.write_str("packed field length is not a multiple of its element size"),
            Self::TooDeep => f.write_str("message nested too deeply"),
            Self::UnterminatedGroup => f.write_str("unterminated group"),
            Self::TooLarge => f.write_str("frame of 4 GiB or more"),
        }
    }
}

/// Every failure the core can report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Malformed wire bytes: `offset` is the byte where the problem starts and
    /// `path` the field path to it (`update.participants[3].tracks[0].sid`).
    Decode { offset: usize, path: String, reason: DecodeReason },
    /// A mapping or JSON text that does not fit the schema.
    Encode { path: String, reason: String },
    /// The media tier refused a request (bad SDP, unknown peer, no socket, ...).
    Media { reason: String },
}

impl Error {
    pub(crate) fn encode(path: &str, reason: impl Into<String>) -> Self {
        Self::Encode { path: path.to_string(), reason: reason.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode { offset, path, reason } => {
                let at = if path.is_empty() { "<root>" } else { path };
                write!(f, "malformed message at byte {offset} ({at}): {reason}")
            }
            Self::Encode { path, reason } => {
                let at = if path.is_empty() { "<root>" } else { path };
                write!(f, "cannot encode {at}: {reason}")
            }
            Self::Media { reason } => f.write_str(reason),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    pub(crate) fn media(reason: impl Into<String>) -> Self {
        Self::Media { reason: reason.into() }
    }
}

/// Result alias of the core crate.
pub type Result<T> = std::result::Result<T, Error>;
