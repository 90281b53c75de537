//! The RPC answers of one participant waiting to be written (`rpc`): bounded in bytes, written in
//! order as the reliable channel's buffer has room.
//!
//! Theory of operation
//! -------------------
//! Each request queues two messages, an ack and a response; the request counts as answered once
//! its response is written. A write the channel's buffer cannot take (str0m keeps at most
//! 128 KiB in flight) stops the pass: the rest waits for the next service, when the server's
//! SACKs have made room. An echo of a 15 KB payload (`--rpc-echo`) is as large as that budget
//! allows eight of, so answers no longer fit in one pass the way ~100 B refusals did. A write
//! that fails drops what is left of that request (counted refused by the caller), so the queue
//! moves on to the next one; answers that wait too long are dropped by the caller
//! (`peer::data::write_rpc_answers`), a request whose ack went out among them.
//!
//! ```text
//! push (ack, response) ──> write: Ok(true) pops; Ok(false) stops the pass; Err drops the request
//! ```

use std::collections::VecDeque;

use super::rpc::{rpc_answers, Answer};

/// Bytes of answers one participant may hold waiting: requests whose answers would go past it are
/// not queued (`RpcCounts::over_limit`). Some 30 echoes of 15 KB payloads, or thousands of ~100 B
/// refusals.
pub const MAX_PENDING_RPC_ANSWER_BYTES: usize = 512 * 1024;
/// The largest answer message written: livekit-server's and the SDKs' data-channel message limit
/// (64 KiB), well under str0m's 128 KiB send buffer, which a larger one could never enter. Only an
/// id of tens of kilobytes makes one (payloads over `rpc::MAX_PAYLOAD_BYTES` are not echoed).
pub const MAX_ANSWER_MESSAGE_BYTES: usize = 64 * 1024;

/// One encoded message, and whether it is its request's last (the response).
#[derive(Debug)]
struct Message {
    bytes: Vec<u8>,
    ends_request: bool,
}

/// What one request came to in `RpcQueue::push`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Yes,
    /// Its answers would take the queue past `MAX_PENDING_RPC_ANSWER_BYTES`.
    OverLimit,
    /// An answer of it is over `MAX_ANSWER_MESSAGE_BYTES`: no channel would take it.
    TooLarge,
}

/// What a `RpcQueue::write` pass did: messages written, requests whose response was written, and
/// requests dropped because a write of theirs failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub messages: u64,
    pub answered: u64,
    pub refused: u64,
}

#[derive(Debug, Default)]
pub struct RpcQueue {
    messages: VecDeque<Message>,
    bytes: usize,
}

impl RpcQueue {
    /// Encodes and queues the answers to `caller`'s request; an error when the request does not
    /// parse (nothing to answer).
    pub fn push(&mut self, caller: &str, request: &[u8], answer: Answer) -> Result<Queued, String> {
        // Encoded first, so a malformed request reads as such whatever the queue holds; the answers of
        // one request are at most an incoming message's size, so building them to count them is bounded.
        let [ack, response] = rpc_answers(caller, request, answer)?;
        if ack.len().max(response.len()) > MAX_ANSWER_MESSAGE_BYTES {
            return Ok(Queued::TooLarge);
        }
        if self.bytes + ack.len() + response.len() > MAX_PENDING_RPC_ANSWER_BYTES {
            return Ok(Queued::OverLimit);
        }
        self.bytes += ack.len() + response.len();
        self.messages.push_back(Message { bytes: ack, ends_request: false });
        self.messages.push_back(Message { bytes: response, ends_request: true });
        Ok(Queued::Yes)
    }

    /// Writes the waiting messages in order through `write` until one does not fit (`Ok(false)`).
    pub fn write(&mut self, mut write: impl FnMut(&[u8]) -> Result<bool, String>) -> Written {
        let mut written = Written::default();
        while let Some(message) = self.messages.front() {
            match write(&message.bytes) {
                Ok(true) => {
                    let message = self.pop().expect("the front message");
                    written.messages += 1;
                    written.answered += u64::from(message.ends_request);
                }
                Ok(false) => break,
                Err(_) => {
                    while let Some(message) = self.pop() {
                        if message.ends_request {
                            break;
                        }
                    }
                    written.refused += 1;
                }
            }
        }
        written
    }

    /// Drops every waiting answer; returns how many requests they answered.
    pub fn clear(&mut self) -> u64 {
        let requests = self.pending_requests();
        self.messages.clear();
        self.bytes = 0;
        requests
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Requests whose response is still waiting.
    pub fn pending_requests(&self) -> u64 {
        self.messages.iter().filter(|message| message.ends_request).count() as u64
    }

    fn pop(&mut self) -> Option<Message> {
        let message = self.messages.pop_front()?;
        self.bytes -= message.bytes.len();
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `RpcRequest(id=id, method="m", payload=payload, version=1)`.
    fn request(id: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x0a, id.len() as u8];
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\x12\x01m\x1a");
        let mut length = payload.len();
        while length >= 0x80 {
            out.push((length as u8 & 0x7f) | 0x80);
            length >>= 7;
        }
        out.push(length as u8);
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\x28\x01");
        out
    }

    #[test]
    fn a_full_buffer_stops_the_pass_and_the_rest_is_written_in_order_later() {
        let mut queue = RpcQueue::default();
        for id in ["a", "b", "c"] {
            assert_eq!(queue.push("agent", &request(id, &[7; 15_000]), Answer::Echo), Ok(Queued::Yes));
        }
        let mut room = 40_000; // bytes the channel's buffer takes in this pass
        let mut sent = Vec::new();
        let written = queue.write(|message| {
            if message.len() > room {
                return Ok(false);
            }
            room -= message.len();
            sent.push(message.len());
            Ok(true)
        });
        // a's ack and response, b's ack and response, c's ack: c's response does not fit
        assert_eq!((written, sent.len()), (Written { messages: 5, answered: 2, refused: 0 }, 5));
        assert_eq!(queue.pending_requests(), 1);
        let written = queue.write(|_| Ok(true));
        assert_eq!(written, Written { messages: 1, answered: 1, refused: 0 });
        assert!(queue.is_empty() && queue.bytes == 0);
    }

    #[test]
    fn a_failed_write_drops_the_rest_of_its_request_only() {
        let mut queue = RpcQueue::default();
        for id in ["a", "b"] {
            queue.push("agent", &request(id, b"hi"), Answer::Echo).unwrap();
        }
        let mut calls = 0;
        let written = queue.write(|_| {
            calls += 1;
            if calls == 2 {
                Err("closed".into())
            } else {
                Ok(true)
            }
        });
        // a's ack written, a's response failed (a refused), b answered
        assert_eq!(written, Written { messages: 3, answered: 1, refused: 1 });
        assert!(queue.is_empty());
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_before_anything_is_encoded() {
        let mut queue = RpcQueue::default();
        let big = request("x", &[1; 15_000]);
        let mut queued = 0;
        while queue.push("agent", &big, Answer::Echo) == Ok(Queued::Yes) {
            queued += 1;
        }
        assert!((30..=35).contains(&queued), "{queued}");
        assert!(queue.bytes <= MAX_PENDING_RPC_ANSWER_BYTES);
        // a small refusal still fits where an echo no longer does
        assert_eq!(queue.push("agent", &request("y", b""), Answer::Unsupported), Ok(Queued::Yes));
        assert_eq!(queue.clear(), queued + 1);
        assert_eq!((queue.bytes, queue.pending_requests()), (0, 0));
        assert!(queue.push("agent", b"\x12\x01m", Answer::Echo).is_err()); // no id, whatever the queue holds
        let huge_id = [b"\x0a\x80\x80\x05".as_slice(), &[b'i'; 80 * 1024], b"\x28\x01"].concat();
        assert_eq!(queue.push("agent", &huge_id, Answer::Unsupported), Ok(Queued::TooLarge));
        assert!(queue.is_empty());
    }
}
