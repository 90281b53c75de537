//! Answers to RPC calls made to a simulated participant (LiveKit's `performRpc`).
//!
//! Theory of operation
//! -------------------
//! A caller (an SDK, an agent) sends `DataPacket{rpc_request: RpcRequest{id, method, payload,
//! response_timeout_ms, version}}` to one identity over the reliable channel, then waits for an
//! `RpcAck` (the SDKs give up after about 7 s: "connection timeout") and for an `RpcResponse`.
//! By default our participants register no methods, so they answer as an SDK participant that
//! registered none: an ack at once, then `RpcError{code 1400, "Method not supported at
//! destination"}` (1404, "Unsupported RPC version", for a version other than 1). Unanswered, every
//! call to one of ours cost its caller a timeout and read as our failure. With `Answer::Echo`
//! (`--rpc-echo`) every method is registered and returns its request's payload, so a caller (an
//! agent under load) measures whole round trips.
//!
//! `rpc_answers` reads the request and writes both replies, each a `DataPacket` addressed to the
//! caller (`destination_identities`), kind reliable; the server stamps the sender's identity.
//! Field numbers are those of protos/livekit/models.proto; the tests compare the bytes with
//! livekit-protocol's. A request that does not parse gets no answer (there is no id to answer)
//! and is counted as malformed by the caller of this module.

use super::packet::{put_bytes, put_varint, Reader, Value};

/// `RpcError.code` for a method with no handler (the SDKs' `UNSUPPORTED_METHOD`).
pub const UNSUPPORTED_METHOD: u32 = 1400;
/// `RpcError.code` for an RPC version other than ours (`UNSUPPORTED_VERSION`).
pub const UNSUPPORTED_VERSION: u32 = 1404;
/// `RpcError.code` of a response whose payload is over `MAX_PAYLOAD_BYTES` (`RESPONSE_PAYLOAD_TOO_LARGE`).
pub const RESPONSE_PAYLOAD_TOO_LARGE: u32 = 1504;
/// The SDKs' limit on an RPC payload, either way (client-sdk-js `rpc/utils.ts`): an echo of more is
/// answered as an SDK handler returning it would be, with `RESPONSE_PAYLOAD_TOO_LARGE`.
pub const MAX_PAYLOAD_BYTES: usize = 15_360;
/// The RPC protocol version the SDKs speak.
const RPC_VERSION: u64 = 1;

/// How our participants answer RPC calls of RPC version 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Answer {
    /// As an SDK participant with no methods registered: `UNSUPPORTED_METHOD`.
    #[default]
    Unsupported,
    /// Every method returns the request's payload.
    Echo,
}

/// What an `RpcRequest` says that its answer needs.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    id: &'a [u8],
    payload: &'a [u8],
    version: u64,
}

fn parse_request(buf: &[u8]) -> Result<Request<'_>, String> {
    let mut request = Request { id: &[], payload: &[], version: 0 };
    let mut reader = Reader::new(buf);
    while let Some((field, value)) = reader.next()? {
        match (field, value) {
            (1, Value::Bytes(id)) => request.id = id,
            (3, Value::Bytes(payload)) => request.payload = payload,
            (5, Value::Varint(version)) => request.version = version,
            (1 | 3 | 5, _) => return Err(format!("RpcRequest field {field}: wrong wire type")),
            _ => {}
        }
    }
    if request.id.is_empty() {
        return Err("RpcRequest without an id".into());
    }
    Ok(request)
}

/// Writes `DataPacket{destination_identities: [caller], <field>: <message>}` into `out`.
fn packet(out: &mut Vec<u8>, caller: &str, field: u32, message: &[u8]) {
    out.clear();
    // In field-number order, as protobuf encoders write them.
    put_bytes(out, 5, caller.as_bytes());
    put_bytes(out, field, message);
}

/// The two messages that answer the `RpcRequest` (the bytes of DataPacket field 10) that `caller`
/// sent: an ack, then the response `answer` says (see the module doc); or an error if it does not
/// parse.
pub fn rpc_answers(caller: &str, request: &[u8], answer: Answer) -> Result<[Vec<u8>; 2], String> {
    if caller.is_empty() {
        return Err("RpcRequest from no identity: nobody to answer".into());
    }
    let request = parse_request(request)?;
    let mut ack_body = Vec::with_capacity(request.id.len() + 2);
    put_bytes(&mut ack_body, 1, request.id);
    let mut ack = Vec::with_capacity(ack_body.len() + caller.len() + 6);
    packet(&mut ack, caller, 11, &ack_body);

    let mut response_body = Vec::with_capacity(request.id.len() + request.payload.len() + 48);
    put_bytes(&mut response_body, 1, request.id);
    let echo = request.version == RPC_VERSION && answer == Answer::Echo;
    if echo && request.payload.len() <= MAX_PAYLOAD_BYTES {
        // RpcResponse.payload, a oneof member: written even when empty, so the caller reads a payload.
        put_bytes(&mut response_body, 2, request.payload);
    } else {
        let (code, message) = if echo {
            (RESPONSE_PAYLOAD_TOO_LARGE, "Response payload too large")
        } else if request.version == RPC_VERSION {
            (UNSUPPORTED_METHOD, "Method not supported at destination")
        } else {
            (UNSUPPORTED_VERSION, "Unsupported RPC version")
        };
        let mut error = Vec::with_capacity(message.len() + 6);
        put_varint(&mut error, 1 << 3);
        put_varint(&mut error, u64::from(code));
        put_bytes(&mut error, 2, message.as_bytes());
        put_bytes(&mut response_body, 3, &error);
    }
    let mut response = Vec::with_capacity(response_body.len() + caller.len() + 6);
    packet(&mut response, caller, 12, &response_body);
    Ok([ack, response])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `RpcRequest(id="r-1", method="greet", payload="hi", response_timeout_ms=10000, version=1)`.
    const REQUEST: &[u8] = b"\x0a\x03r-1\x12\x05greet\x1a\x02hi\x20\x90\x4e\x28\x01";

    /// From livekit-protocol 1.1.29: `DataPacket(destination_identities=["caller"],
    /// rpc_ack=RpcAck(request_id="r-1")).SerializeToString(deterministic=True)` and the same with
    /// `rpc_response=RpcResponse(request_id="r-1", error=RpcError(code=1400, message="Method not
    /// supported at destination"))`.
    const ACK_HEX: &str = "2a0663616c6c65725a050a03722d31";
    const RESPONSE_HEX: &str = "2a0663616c6c6572622f0a03722d311a2808f80a12234d6574686f64206e6f7420737570706f7274\
        65642061742064657374696e6174696f6e";

    #[test]
    fn answers_like_an_sdk_without_handlers() {
        let [ack, response] = rpc_answers("caller", REQUEST, Answer::Unsupported).unwrap();
        assert_eq!(hex(&ack), ACK_HEX);
        let expected: String = RESPONSE_HEX.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(hex(&response), expected);
    }

    /// From livekit-protocol 1.1.29: `DataPacket(destination_identities=["caller"],
    /// rpc_response=RpcResponse(request_id="r-1", payload="hi"))`, and with `payload=""`.
    const ECHO_HEX: &str = "2a0663616c6c657262090a03722d3112026869";
    const EMPTY_ECHO_HEX: &str = "2a0663616c6c657262070a03722d311200";

    #[test]
    fn an_echo_returns_the_payload_even_an_empty_one() {
        let [ack, response] = rpc_answers("caller", REQUEST, Answer::Echo).unwrap();
        assert_eq!((hex(&ack).as_str(), hex(&response).as_str()), (ACK_HEX, ECHO_HEX));
        let without_payload = b"\x0a\x03r-1\x12\x05greet\x28\x01";
        let [_, response] = rpc_answers("caller", without_payload, Answer::Echo).unwrap();
        assert_eq!(hex(&response), EMPTY_ECHO_HEX);
    }

    #[test]
    fn an_echo_of_more_than_an_sdk_may_return_is_refused_as_an_sdk_would() {
        let mut request = b"\x0a\x03r-9\x1a\x81\x78".to_vec(); // payload: 15,361 bytes
        request.extend_from_slice(&[b'x'; MAX_PAYLOAD_BYTES + 1]);
        request.extend_from_slice(b"\x28\x01");
        let [_, response] = rpc_answers("caller", &request, Answer::Echo).unwrap();
        let text = String::from_utf8_lossy(&response);
        assert!(text.contains("Response payload too large") && response.len() < 100, "{text}");
    }

    #[test]
    fn another_version_is_refused_as_such() {
        let request = b"\x0a\x03r-2\x28\x02";
        for answer in [Answer::Unsupported, Answer::Echo] {
            let [_, response] = rpc_answers("caller", request, answer).unwrap();
            let text = String::from_utf8_lossy(&response);
            assert!(text.contains("Unsupported RPC version"), "{text}");
        }
    }

    #[test]
    fn what_cannot_be_answered_is_an_error_not_a_panic() {
        for answer in [Answer::Unsupported, Answer::Echo] {
            assert!(rpc_answers("", REQUEST, answer).is_err());
            assert!(rpc_answers("caller", b"\x12\x05greet", answer).is_err()); // no id
            assert!(rpc_answers("caller", b"\x08\x01", answer).is_err()); // id with the wrong wire type
            assert!(rpc_answers("caller", b"\x0a\x01r\x18\x01", answer).is_err()); // payload as a varint
            for cut in 0..REQUEST.len() {
                let _ = rpc_answers("caller", &REQUEST[..cut], answer);
            }
        }
    }
}
