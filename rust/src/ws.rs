//! WebSocket framing (RFC 6455 §5.2) for the client side: masked frames out,
//! unmasked server frames in. Pure byte work; the state machine stays in
//! Python (`lkswarm/ws.py`).

/// One parsed frame: `payload` is `start..end` of the parsed buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    /// Servers must not mask; the caller treats a masked frame as a protocol error.
    pub masked: bool,
    pub start: usize,
    pub end: usize,
}

/// Why the incoming byte stream is not valid server framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A frame longer than the configured limit.
    TooBig { length: u64, limit: u64 },
    /// Reserved bits set (no extension was negotiated).
    ReservedBits,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooBig { length, limit } => write!(f, "frame of {length} bytes exceeds {limit}"),
            Self::ReservedBits => f.write_str("reserved bits set without a negotiated extension"),
        }
    }
}

/// Parses as many complete frames from `buf` as it holds; returns how many
/// bytes they used.
pub fn parse_frames(buf: &[u8], max_len: u64, out: &mut Vec<Frame>) -> Result<usize, FrameError> {
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        if rest.len() < 2 {
            return Ok(pos);
        }
        let (b0, b1) = (rest[0], rest[1]);
        if b0 & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let mut header = 2usize;
        let mut length = u64::from(b1 & 0x7f);
        if length == 126 {
            let Some(b) = rest.get(2..4) else { return Ok(pos) };
            length = u64::from(u16::from_be_bytes([b[0], b[1]]));
            header = 4;
        } else if length == 127 {
            let Some(b) = rest.get(2..10) else { return Ok(pos) };
            length = u64::from_be_bytes(b.try_into().unwrap_or([0xff; 8]));
            header = 10;
        }
        if b1 & 0x80 != 0 {
            header += 4;
        }
        if length > max_len {
            return Err(FrameError::TooBig { length, limit: max_len });
        }
        // A caller's `max_len` near u64::MAX lets a declared length through whose frame cannot exist in
        // memory: refused like any frame over the limit, rather than wrapping the sum.
        let Some(total) = usize::try_from(length).ok().and_then(|length| length.checked_add(header)) else {
            return Err(FrameError::TooBig { length, limit: max_len });
        };
        if rest.len() < total {
            return Ok(pos);
        }
        out.push(Frame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            masked: b1 & 0x80 != 0,
            start: pos + header,
            end: pos + total,
        });
        pos += total;
    }
}

/// XORs `data` with the 4-byte `mask`, starting at mask offset 0.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().unwrap_or([0; 8])) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Length of the masked client frame `encode_client_frame` writes for `payload_len` bytes.
pub fn client_frame_len(payload_len: usize) -> usize {
    let header = match payload_len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    header + 4 + payload_len
}

/// Writes one final, masked client frame into `out` (exactly `client_frame_len` bytes).
pub fn encode_client_frame(opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut [u8]) {
    let n = payload.len();
    out[0] = 0x80 | (opcode & 0x0f);
    let mut p = match n {
        0..=125 => {
            out[1] = 0x80 | n as u8;
            2
        }
        126..=65535 => {
            out[1] = 0x80 | 126;
            out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = 0x80 | 127;
            out[2..10].copy_from_slice(&(n as u64).to_be_bytes());
            10
        }
    };
    out[p..p + 4].copy_from_slice(&mask);
    p += 4;
    out[p..p + n].copy_from_slice(payload);
    apply_mask(&mut out[p..p + n], mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_rfc_example_masked_hello() {
        // RFC 6455 §5.7: a masked "Hello" with key 37 fa 21 3d.
        let mut out = vec![0; client_frame_len(5)];
        encode_client_frame(1, b"Hello", [0x37, 0xfa, 0x21, 0x3d], &mut out);
        assert_eq!(out, [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn parses_length_classes_and_partial_frames() {
        let mut buf = vec![0x82, 0x03, 1, 2, 3];
        buf.extend([0x82, 126, 0x01, 0x00]);
        buf.extend(vec![7u8; 256]);
        buf.extend([0x01, 0x05, b'h']); // unfinished, not final
        let mut frames = Vec::new();
        let used = parse_frames(&buf, 1 << 20, &mut frames).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], Frame { fin: true, opcode: 2, masked: false, start: 2, end: 5 });
        assert_eq!(frames[1].end - frames[1].start, 256);
        assert_eq!(used, 5 + 4 + 256);
    }

    #[test]
    fn rejects_oversized_and_reserved() {
        let mut frames = Vec::new();
        assert_eq!(
            parse_frames(&[0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0], 1000, &mut frames),
            Err(FrameError::TooBig { length: 1 << 32, limit: 1000 })
        );
        assert_eq!(parse_frames(&[0xc2, 0], 1000, &mut frames), Err(FrameError::ReservedBits));
    }

    #[test]
    fn a_length_that_would_wrap_is_too_big_even_under_an_unbounded_limit() {
        // Masked, so the header is 14 bytes and 2^64 - 2 + 14 wraps; unmasked 2^64 - 10 + 10 wraps to 0.
        for (b1, length) in [(0xff_u8, u64::MAX - 1), (0x7f, u64::MAX - 9)] {
            let mut frame = vec![0x82, b1];
            frame.extend_from_slice(&length.to_be_bytes());
            frame.extend_from_slice(&[0; 3]);
            let mut frames = Vec::new();
            assert_eq!(
                parse_frames(&frame, u64::MAX, &mut frames),
                Err(FrameError::TooBig { length, limit: u64::MAX })
            );
            assert!(frames.is_empty());
        }
    }

    #[test]
    fn mask_is_an_involution_at_every_length() {
        for n in 0..40 {
            let data: Vec<u8> = (0..n as u8).collect();
            let mut masked = data.clone();
            apply_mask(&mut masked, [1, 2, 3, 4]);
            apply_mask(&mut masked, [1, 2, 3, 4]);
            assert_eq!(masked, data);
        }
    }
}
