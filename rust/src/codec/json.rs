//! The canonical proto3 JSON mapping, both ways.
//!
//! `to_json` gives what `google.protobuf.json_format.MessageToDict` gives with
//! default options: lowerCamelCase keys, 64-bit integers as strings, enums by
//! name (unknown numbers as ints), bytes as base64, implicit-presence fields
//! omitted at their default, floats printed the shortest way that survives
//! float32. `encode_json` follows `ParseDict`: it accepts proto or JSON
//! names, numbers or strings for integers, names or numbers for enums, and
//! writes wire bytes in field-number order, as upb serialises.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::encode::{upb_int_key_order, upb_string_key_order};
use super::schema::{FieldDesc, Kind, MessageDesc, ENUMS, MESSAGES};
use super::view::{FieldValue, MapValue, MessageView, Scalar};
use super::wire::{put_tag, put_varint, zigzag, WIRE_LEN};
use crate::error::{Error, Result};

/// The canonical JSON object of a message view.
pub fn to_json(view: &MessageView) -> Result<Value> {
    let desc = view.desc();
    let mut out = Map::new();
    for (pos, field) in desc.fields.iter().enumerate() {
        let value = match view.get(pos)? {
            FieldValue::Scalar(s) => {
                let emit =
                    if field.oneof.is_some() || field.explicit_presence { view.has(pos)? } else { !is_default(s) };
                if !emit {
                    continue;
                }
                scalar_json(field, s)
            }
            FieldValue::Message { view: sub, present } => {
                if !present {
                    continue;
                }
                to_json(&sub)?
            }
            FieldValue::List(values) => {
                if values.is_empty() {
                    continue;
                }
                Value::Array(values.into_iter().map(|s| scalar_json(field, s)).collect())
            }
            FieldValue::Messages(views) => {
                if views.is_empty() {
                    continue;
                }
                Value::Array(views.iter().map(to_json).collect::<Result<_>>()?)
            }
            FieldValue::Map(entries) => {
                if entries.is_empty() {
                    continue;
                }
                let entry = &MESSAGES[field.type_index];
                let mut obj = Map::new();
                for (k, v) in entries {
                    let value = match v {
                        MapValue::Scalar(s) => scalar_json(&entry.fields[1], s),
                        MapValue::Message(m) => to_json(&m)?,
                    };
                    obj.insert(map_key_string(k), value);
                }
                Value::Object(obj)
            }
        };
        out.insert(field.json_name.to_string(), value);
    }
    Ok(Value::Object(out))
}

fn is_default(s: Scalar<'_>) -> bool {
    match s {
        Scalar::I64(v) => v == 0,
        Scalar::U64(v) => v == 0,
        Scalar::F32(v) => v.to_bits() == 0,
        Scalar::F64(v) => v.to_bits() == 0,
        Scalar::Bool(v) => !v,
        Scalar::Enum(v) => v == 0,
        Scalar::Str(v) => v.is_empty(),
        Scalar::Bytes(v) => v.is_empty(),
    }
}

fn map_key_string(k: Scalar<'_>) -> String {
    match k {
        Scalar::Str(s) => s.to_string(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::I64(v) => v.to_string(),
        Scalar::U64(v) => v.to_string(),
        other => format!("{other:?}"),
    }
}

fn scalar_json(field: &FieldDesc, s: Scalar<'_>) -> Value {
    match s {
        Scalar::I64(v) => match field.kind {
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::String(v.to_string()),
            _ => Value::Number(v.into()),
        },
        Scalar::U64(v) => match field.kind {
            Kind::Uint64 | Kind::Fixed64 => Value::String(v.to_string()),
            _ => Value::Number(v.into()),
        },
        Scalar::F32(v) => float_json(shortest_f32(v)),
        Scalar::F64(v) => float_json(v),
        Scalar::Bool(v) => Value::Bool(v),
        Scalar::Enum(v) => match ENUMS[field.type_index].name_of(v) {
            Some(name) => Value::String(name.to_string()),
            None => Value::Number(v.into()),
        },
        Scalar::Str(v) => Value::String(v.to_string()),
        Scalar::Bytes(v) => Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
    }
}

fn float_json(v: f64) -> Value {
    if v.is_nan() {
        Value::String("NaN".into())
    } else if v.is_infinite() {
        Value::String(if v > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// The reference's `ToShortestFloat`: the fewest significant digits (at
/// least 6) that still round-trip through float32, read back as a double.
pub fn shortest_f32(v: f32) -> f64 {
    if !v.is_finite() {
        return f64::from(v);
    }
    for precision in 6..=9 {
        let text = format!("{:.*e}", precision - 1, f64::from(v));
        if let Ok(r) = text.parse::<f64>() {
            if r as f32 == v {
                return r;
            }
        }
    }
    f64::from(v)
}

/// Encodes a JSON object (proto or JSON field names) as wire bytes of `desc`.
pub fn encode_json(value: &Value, desc: &'static MessageDesc) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let obj =
        value.as_object().ok_or_else(|| Error::encode("", format!("expected an object for {}", desc.full_name)))?;
    encode_object(obj, desc, &mut out, "")?;
    Ok(out)
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn encode_object(obj: &Map<String, Value>, desc: &'static MessageDesc, out: &mut Vec<u8>, path: &str) -> Result<()> {
    let mut chosen: Vec<(usize, &Value)> = Vec::with_capacity(obj.len());
    for (key, value) in obj {
        let pos = desc.field_by_any_name(key).ok_or_else(|| {
            Error::encode(path, format!("message type {} has no field named {key:?}", desc.full_name))
        })?;
        if value.is_null() {
            continue;
        }
        if chosen.iter().any(|(p, _)| *p == pos) {
            return Err(Error::encode(path, format!("field {key:?} is given more than once")));
        }
        let field = &desc.fields[pos];
        if let Some(o) = field.oneof {
            if chosen.iter().any(|(p, _)| desc.fields[*p].oneof == Some(o)) {
                return Err(Error::encode(path, format!("oneof {:?} is given more than one value", desc.oneofs[o])));
            }
        }
        chosen.push((pos, value));
    }
    chosen.sort_by_key(|(pos, _)| desc.fields[*pos].number);
    for (pos, value) in chosen {
        let field = &desc.fields[pos];
        let fpath = child_path(path, field.name);
        encode_field(field, value, out, &fpath)?;
    }
    Ok(())
}

fn encode_field(field: &FieldDesc, value: &Value, out: &mut Vec<u8>, path: &str) -> Result<()> {
    if field.kind == Kind::Message && MESSAGES[field.type_index].map_entry {
        return encode_map(field, value, out, path);
    }
    if field.repeated {
        let items = value.as_array().ok_or_else(|| Error::encode(path, "expected a list"))?;
        if items.is_empty() {
            return Ok(());
        }
        if field.kind.packable() {
            let mut packed = Vec::new();
            for (i, item) in items.iter().enumerate() {
                put_scalar_payload(field, item, &mut packed, &format!("{path}[{i}]"))?;
            }
            put_tag(out, field.number, WIRE_LEN);
            put_varint(out, packed.len() as u64);
            out.extend_from_slice(&packed);
        } else {
            for (i, item) in items.iter().enumerate() {
                encode_single(field, item, out, &format!("{path}[{i}]"), true)?;
            }
        }
        return Ok(());
    }
    let always = field.oneof.is_some() || field.explicit_presence;
    encode_single(field, value, out, path, always)
}

/// Writes one tagged value; implicit-presence defaults are skipped unless `always`.
fn encode_single(field: &FieldDesc, value: &Value, out: &mut Vec<u8>, path: &str, always: bool) -> Result<()> {
    if value.is_null() {
        return Err(Error::encode(path, "null is not a valid value here"));
    }
    if field.kind == Kind::Message {
        let obj = value.as_object().ok_or_else(|| Error::encode(path, "expected an object"))?;
        let mut body = Vec::new();
        encode_object(obj, &MESSAGES[field.type_index], &mut body, path)?;
        put_tag(out, field.number, WIRE_LEN);
        put_varint(out, body.len() as u64);
        out.extend_from_slice(&body);
        return Ok(());
    }
    let mut payload = Vec::new();
    put_scalar_payload(field, value, &mut payload, path)?;
    let is_default = match field.kind {
        Kind::String | Kind::Bytes => payload.len() == varint_prefix_of_zero(),
        Kind::Float | Kind::Double | Kind::Fixed32 | Kind::Fixed64 | Kind::Sfixed32 | Kind::Sfixed64 => {
            payload.iter().all(|b| *b == 0)
        }
        _ => payload == [0],
    };
    if is_default && !always {
        return Ok(());
    }
    put_tag(out, field.number, field.kind.wire_type());
    out.extend_from_slice(&payload);
    Ok(())
}

/// A length-delimited empty value is the single byte 0.
fn varint_prefix_of_zero() -> usize {
    1
}

fn encode_map(field: &FieldDesc, value: &Value, out: &mut Vec<u8>, path: &str) -> Result<()> {
    let obj = value.as_object().ok_or_else(|| Error::encode(path, "expected an object for a map"))?;
    let entry = &MESSAGES[field.type_index];
    let (key_field, value_field) = (&entry.fields[0], &entry.fields[1]);
    let mut entries = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        let epath = format!("{path}[{k:?}]");
        let key_value = map_key_value(key_field, k, &epath)?;
        let mut body = Vec::new();
        // upb writes both key and value of every entry, defaults included.
        encode_single(key_field, &key_value, &mut body, &epath, true)?;
        encode_single(value_field, v, &mut body, &epath, true)?;
        let order = match key_value {
            Value::String(s) if key_field.kind != Kind::String => {
                MapKeyOrder::Int(int_text(&s).ok_or_else(|| Error::encode(&epath, "invalid map key"))?)
            }
            Value::Bool(b) => MapKeyOrder::Int(i128::from(b)),
            _ => MapKeyOrder::Str(k.as_str()),
        };
        entries.push((order, body));
    }
    // The bytes of upb's deterministic mode, whatever order the mapping had.
    entries.sort_by(|a, b| match (&a.0, &b.0) {
        (MapKeyOrder::Int(x), MapKeyOrder::Int(y)) => upb_int_key_order(*x, *y),
        (MapKeyOrder::Str(x), MapKeyOrder::Str(y)) => upb_string_key_order(x.as_bytes(), y.as_bytes()),
        (MapKeyOrder::Int(_), MapKeyOrder::Str(_)) => std::cmp::Ordering::Less,
        (MapKeyOrder::Str(_), MapKeyOrder::Int(_)) => std::cmp::Ordering::Greater,
    });
    for (_, body) in entries {
        put_tag(out, field.number, WIRE_LEN);
        put_varint(out, body.len() as u64);
        out.extend_from_slice(&body);
    }
    Ok(())
}

/// What a map entry sorts by.
enum MapKeyOrder<'a> {
    Int(i128),
    Str(&'a str),
}

fn map_key_value(key_field: &FieldDesc, key: &str, path: &str) -> Result<Value> {
    Ok(match key_field.kind {
        Kind::String => Value::String(key.to_string()),
        Kind::Bool => match key {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(Error::encode(path, format!("invalid bool map key {key:?}"))),
        },
        _ => Value::String(key.to_string()),
    })
}

/// Writes the value bytes (no tag) of a scalar field.
fn put_scalar_payload(field: &FieldDesc, value: &Value, out: &mut Vec<u8>, path: &str) -> Result<()> {
    match field.kind {
        Kind::String => {
            let s = value.as_str().ok_or_else(|| Error::encode(path, "expected a string"))?;
            put_varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Kind::Bytes => {
            let s = value.as_str().ok_or_else(|| Error::encode(path, "expected a base64 string"))?;
            let bytes = decode_base64(s).ok_or_else(|| Error::encode(path, "invalid base64"))?;
            put_varint(out, bytes.len() as u64);
            out.extend_from_slice(&bytes);
        }
        Kind::Bool => {
            let b = value.as_bool().ok_or_else(|| Error::encode(path, "expected a bool"))?;
            out.push(u8::from(b));
        }
        Kind::Float => {
            let v = json_float(value, path)?;
            // ParseDict rejects an out-of-range number but converts a quoted one
            // ("1e39") to infinity, as float32 assignment does.
            if value.is_number() && v.is_finite() && (v as f32).is_infinite() {
                return Err(Error::encode(path, "float out of range"));
            }
            out.extend_from_slice(&(v as f32).to_le_bytes());
        }
        Kind::Double => out.extend_from_slice(&json_float(value, path)?.to_le_bytes()),
        Kind::Enum => {
            let number = match value {
                Value::String(name) => ENUMS[field.type_index]
                    .number_of(name)
                    .ok_or_else(|| Error::encode(path, format!("unknown enum value {name:?}")))?,
                _ => json_int(value, i64::from(i32::MIN), i64::from(i32::MAX), path)? as i32,
            };
            put_varint(out, i64::from(number) as u64);
        }
        Kind::Int32 => put_varint(out, json_int(value, i64::from(i32::MIN), i64::from(i32::MAX), path)? as u64),
        Kind::Sint32 => {
            put_varint(out, zigzag(json_int(value, i64::from(i32::MIN), i64::from(i32::MAX), path)?) & 0xffff_ffff);
        }
        Kind::Sfixed32 => {
            let v = json_int(value, i64::from(i32::MIN), i64::from(i32::MAX), path)? as i32;
            out.extend_from_slice(&v.to_le_bytes());
        }
        Kind::Uint32 => put_varint(out, json_int(value, 0, i64::from(u32::MAX), path)? as u64),
        Kind::Fixed32 => out.extend_from_slice(&(json_int(value, 0, i64::from(u32::MAX), path)? as u32).to_le_bytes()),
        Kind::Int64 => put_varint(out, json_int(value, i64::MIN, i64::MAX, path)? as u64),
        Kind::Sint64 => put_varint(out, zigzag(json_int(value, i64::MIN, i64::MAX, path)?)),
        Kind::Sfixed64 => out.extend_from_slice(&json_int(value, i64::MIN, i64::MAX, path)?.to_le_bytes()),
        Kind::Uint64 => put_varint(out, json_uint(value, path)?),
        Kind::Fixed64 => out.extend_from_slice(&json_uint(value, path)?.to_le_bytes()),
        Kind::Message => return Err(Error::encode(path, "a message cannot be packed")),
    }
    Ok(())
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE.decode(s))
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .ok()
}

fn json_float(value: &Value, path: &str) -> Result<f64> {
    match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| Error::encode(path, "expected a number")),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other.parse::<f64>().map_err(|_| Error::encode(path, format!("invalid number {other:?}"))),
        },
        _ => Err(Error::encode(path, "expected a number")),
    }
}

fn json_int(value: &Value, min: i64, max: i64, path: &str) -> Result<i64> {
    let v: i128 = match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i128::from(i)
            } else if let Some(u) = n.as_u64() {
                i128::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 || !f.is_finite() {
                    return Err(Error::encode(path, format!("expected an integer, got {f}")));
                }
                f as i128
            }
        }
        Value::String(s) => int_text(s).ok_or_else(|| Error::encode(path, format!("invalid integer {s:?}")))?,
        _ => return Err(Error::encode(path, "expected an integer")),
    };
    if v < i128::from(min) || v > i128::from(max) {
        return Err(Error::encode(path, format!("integer {v} out of range")));
    }
    Ok(v as i64)
}

/// An integer written as a JSON string: decimal digits, or (as protojson and
/// the reference allow) any number that happens to be integral, e.g. `"1e3"`.
fn int_text(s: &str) -> Option<i128> {
    if let Ok(v) = s.parse::<i128>() {
        return Some(v);
    }
    let f = s.parse::<f64>().ok()?;
    // Rust reads "inf" and "nan" too; neither is integral, so both are refused here.
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1e38).then_some(f as i128)
}

fn json_uint(value: &Value, path: &str) -> Result<u64> {
    let v: i128 = match value {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => i128::from(u),
            (None, Some(i)) => i128::from(i),
            _ => return Err(Error::encode(path, "expected an integer")),
        },
        Value::String(s) => int_text(s).ok_or_else(|| Error::encode(path, format!("invalid integer {s:?}")))?,
        _ => return Err(Error::encode(path, "expected an integer")),
    };
    u64::try_from(v).map_err(|_| Error::encode(path, format!("integer {v} out of range")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::codec::schema::{signal_request, signal_response};
    use crate::codec::validate::validate;

    fn decode_json(buf: &[u8], desc: &'static MessageDesc) -> Value {
        validate(buf, desc).unwrap();
        to_json(&MessageView::root(Arc::new(buf.to_vec()), desc)).unwrap()
    }

    const PING: &[u8] = &[0x82, 0x01, 0x09, 0x08, 0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31, 0x10, 0x0c];

    #[test]
    fn golden_ping_both_ways() {
        let value = json!({"pingReq": {"timestamp": "1700000000000", "rtt": "12"}});
        assert_eq!(decode_json(PING, signal_request()), value);
        assert_eq!(encode_json(&value, signal_request()).unwrap(), PING);
        // Proto names and numbers are accepted too.
        let loose = json!({"ping_req": {"timestamp": 1_700_000_000_000_i64, "rtt": 12}});
        assert_eq!(encode_json(&loose, signal_request()).unwrap(), PING);
    }

    #[test]
    fn enums_defaults_and_unknown_numbers() {
        // leave{reason: CLIENT_INITIATED}; leave{reason: 99}; an empty leave.
        assert_eq!(
            decode_json(&[0x42, 0x02, 0x10, 0x01], signal_request()),
            json!({"leave": {"reason": "CLIENT_INITIATED"}})
        );
        assert_eq!(decode_json(&[0x42, 0x02, 0x10, 0x63], signal_request()), json!({"leave": {"reason": 99}}));
        assert_eq!(decode_json(&[0x42, 0x00], signal_request()), json!({"leave": {}}));
        // Implicit-presence defaults on the wire are still omitted.
        assert_eq!(decode_json(&[0x42, 0x02, 0x10, 0x00], signal_request()), json!({"leave": {}}));
    }

    #[test]
    fn floats_print_like_to_shortest_float() {
        // Values from google.protobuf.internal.type_checkers.ToShortestFloat.
        for (bits, expected) in [
            (0x3f80_0000_u32, 1.0),
            (0x3dcc_cccd, 0.1),
            (0x0000_0001, 1.4013e-45),
            (0x7f7f_ffff, 3.4028235e38),
            (0x3eaa_aaab, 0.333_333_34),
            (0x4b18_9680, 10_000_000.0),
        ] {
            assert_eq!(shortest_f32(f32::from_bits(bits)), expected, "{bits:#x}");
        }
        assert!(shortest_f32(-0.0).is_sign_negative());
    }

    #[test]
    fn integer_map_keys_and_upb_order() {
        // data_track_subscriber_handles{sub_handles: {1: {track_sid: "a"}, 300: {}}}, as the reference
        // writes it with deterministic=True: keys descending.
        let wire = [
            0xea, 0x01, 0x10, 0x0a, 0x05, 0x08, 0xac, 0x02, 0x12, 0x00, 0x0a, 0x07, 0x08, 0x01, 0x12, 0x03, 0x1a, 0x01,
            b'a',
        ];
        let value = json!({"dataTrackSubscriberHandles": {"subHandles": {"1": {"trackSid": "a"}, "300": {}}}});
        assert_eq!(decode_json(&wire, signal_response()), value);
        assert_eq!(encode_json(&value, signal_response()).unwrap(), wire);
    }

    #[test]
    fn integers_as_strings() {
        let ping = |v: Value| encode_json(&json!({"pingReq": {"timestamp": v}}), signal_request());
        assert_eq!(ping(json!("1e3")).unwrap(), ping(json!(1000)).unwrap());
        assert_eq!(ping(json!("-0")).unwrap(), ping(json!(0)).unwrap());
        for bad in ["1.5", "inf", "NaN", " 1", "0x10", "", "1e40"] {
            assert!(ping(json!(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn encode_errors_name_the_field() {
        let err = encode_json(&json!({"pingReq": {"timestamp": "soon"}}), signal_request()).unwrap_err();
        assert!(matches!(&err, Error::Encode { path, .. } if path == "ping_req.timestamp"), "{err}");
        let err = encode_json(&json!({"leave": {}, "pingReq": {}}), signal_request()).unwrap_err();
        assert!(err.to_string().contains("oneof"), "{err}");
        assert!(encode_json(&json!([]), signal_request()).is_err());
    }
}
