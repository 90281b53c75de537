//! LiveKit signaling codec: schema tables, validation, lazy views, JSON and encoders.

pub mod encode;
pub mod index;
pub mod json;
pub mod schema;
pub mod validate;
pub mod view;
pub mod wire;

pub use schema::{signal_request, signal_response, FieldDesc, Kind, MessageDesc};
pub use validate::{peek, validate};
pub use view::{FieldValue, MapValue, MessageView, Scalar, Source};
