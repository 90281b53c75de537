//! The RTP header as the SRTP receive path needs it (RFC 3550 §5.1, RFC 8285): its length (the
//! AEAD's associated data), SSRC and SEQ (the IV and the index), and the fields the caller asks
//! for. Every read goes through `get`, so a malformed length yields `None`, never a panic.

use std::ops::Range;

/// RTP's fixed header: V/P/X/CC, M/PT, SEQ, timestamp, SSRC (RFC 3550 §5.1).
const FIXED_HEADER_LEN: usize = 12;
/// RFC 8285 §4.2: the one-byte-header form's "defined by profile" value.
const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// RFC 8285 §4.3: the two-byte-header form is 0x100 followed by four application bits.
const TWO_BYTE_PROFILE: u16 = 0x1000;
const TWO_BYTE_PROFILE_MASK: u16 = 0xFFF0;
/// RFC 8285 §4.2: in the one-byte form, ID 15 ends the element list.
const ONE_BYTE_STOP_ID: u8 = 15;

/// RTP, not RTCP or another protocol sharing the port, by RFC 7983's first-byte ranges (RTP and
/// RTCP: 128..=191) and RFC 5761 §4's payload-type split (RTCP's packet types 200..=204 read as
/// marker + PT 72..=76, inside the 64..=95 that RTP must not use); then the SSRC, octets 8..12.
/// Costs a few comparisons, so the caller can route a datagram before doing any work.
pub fn peek_ssrc(packet: &[u8]) -> Option<u32> {
    let (&first, &second) = (packet.first()?, packet.get(1)?);
    if !(128..=191).contains(&first) || (64..=95).contains(&(second & 0x7f)) {
        return None;
    }
    read_u32(packet, 8)
}

/// A parsed RTP header. Offsets are into the packet it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RtpHeader {
    pub padding: bool,
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Fixed header, CSRCs and the extension block: everything GCM authenticates but does not
    /// encrypt (RFC 7714 §8.2).
    pub header_len: usize,
    /// The extension block's "defined by profile" value and the range of its element bytes.
    pub extension: Option<(u16, Range<usize>)>,
}

impl RtpHeader {
    /// Parses the header of an RTP packet, or `None` if it is not RTP (see `peek_ssrc`), is not
    /// version 2, or its CSRC list or extension block runs past the end of `packet`. An extension
    /// profile other than RFC 8285's is accepted (RFC 3550 allows any; libsrtp accepts it), its
    /// elements just are not looked at.
    pub fn parse(packet: &[u8]) -> Option<Self> {
        let ssrc = peek_ssrc(packet)?;
        let (&first, &second) = (packet.first()?, packet.get(1)?);
        let csrc_len = 4 * usize::from(first & 0x0f);
        let mut header_len = FIXED_HEADER_LEN + csrc_len;
        let extension = if first & 0x10 != 0 {
            let profile = read_u16(packet, header_len)?;
            let elements_len = 4 * usize::from(read_u16(packet, header_len + 2)?);
            let elements = header_len + 4..header_len + 4 + elements_len;
            header_len = elements.end;
            Some((profile, elements))
        } else {
            None
        };
        if packet.len() < header_len {
            return None;
        }
        Some(RtpHeader {
            padding: first & 0x20 != 0,
            marker: second & 0x80 != 0,
            payload_type: second & 0x7f,
            sequence: read_u16(packet, 2)?,
            timestamp: read_u32(packet, 4)?,
            ssrc,
            header_len,
            extension,
        })
    }

    /// The 16-bit big-endian value of the RFC 8285 element `id` (transport-wide-cc's shape), from
    /// the packet this header was parsed from. `None` when absent, of another length, or when the
    /// element list is malformed before it: a broken element list is the RTP layer's concern, the
    /// SRTP layer authenticated the block as a whole (libsrtp does not look inside either).
    pub fn extension_u16(&self, packet: &[u8], id: u8) -> Option<u16> {
        let (profile, elements) = self.extension.clone()?;
        let block = packet.get(elements)?;
        let data = if profile == ONE_BYTE_PROFILE {
            one_byte_element(block, id)
        } else if profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE {
            two_byte_element(block, id)
        } else {
            None
        }?;
        Some(u16::from_be_bytes(data.try_into().ok()?))
    }
}

/// RFC 8285 §4.2: ID (4 bits) and length - 1 (4 bits), then 1..=16 data bytes. A zero byte is
/// padding between elements; ID 15 stops the walk.
fn one_byte_element(block: &[u8], wanted: u8) -> Option<&[u8]> {
    let mut at = 0;
    while let Some(&byte) = block.get(at) {
        let id = byte >> 4;
        if id == 0 {
            at += 1;
            continue;
        }
        if id == ONE_BYTE_STOP_ID {
            return None;
        }
        let len = usize::from(byte & 0x0f) + 1;
        let data = block.get(at + 1..at + 1 + len)?;
        if id == wanted {
            return Some(data);
        }
        at += 1 + len;
    }
    None
}

/// RFC 8285 §4.3: ID (8 bits), length (8 bits), then 0..=255 data bytes; a zero ID byte is padding.
fn two_byte_element(block: &[u8], wanted: u8) -> Option<&[u8]> {
    let mut at = 0;
    while let Some(&id) = block.get(at) {
        if id == 0 {
            at += 1;
            continue;
        }
        let len = usize::from(*block.get(at + 1)?);
        let data = block.get(at + 2..at + 2 + len)?;
        if id == wanted {
            return Some(data);
        }
        at += 2 + len;
    }
    None
}

/// The payload length once RTP padding is removed (RFC 3550 §5.1: with P set, the last octet
/// counts the padding octets, itself included). `None` when the count exceeds the payload. A
/// count of 0 removes nothing, and a P bit on an empty payload is no padding, both as str0m
/// reads them, so this path drops no packet str0m would keep.
pub(super) fn unpadded_len(payload: &[u8], padding: bool) -> Option<usize> {
    match payload.last() {
        Some(&count) if padding => payload.len().checked_sub(usize::from(count)),
        _ => Some(payload.len()),
    }
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSRC: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

    fn fixed(first: u8, second: u8) -> Vec<u8> {
        let mut packet = vec![first, second, 0xff, 0xfe, 0, 0, 0x12, 0x34];
        packet.extend_from_slice(&SSRC);
        packet
    }

    #[test]
    fn demux_keeps_rtp_and_drops_rtcp_stun_and_dtls() {
        assert_eq!(peek_ssrc(&fixed(0x80, 111)), Some(0x1122_3344));
        assert_eq!(peek_ssrc(&fixed(0x80, 0x80 | 96)), Some(0x1122_3344), "marker set");
        assert_eq!(peek_ssrc(&fixed(0x80, 200)), None, "RTCP sender report");
        assert_eq!(peek_ssrc(&fixed(0x81, 201)), None, "RTCP receiver report");
        assert_eq!(peek_ssrc(&fixed(0x00, 1)), None, "STUN");
        assert_eq!(peek_ssrc(&fixed(22, 0xfe)), None, "DTLS handshake");
        assert_eq!(peek_ssrc(&fixed(0x80, 111)[..11]), None, "shorter than the fixed header");
    }

    #[test]
    fn header_with_csrcs_and_one_byte_extension() {
        let mut packet = fixed(0x80 | 0x10 | 2, 0x80 | 111);
        // Two CSRCs; then audio level (id 1, 1 byte), a padding byte, transport-cc (id 3, 2 bytes)
        // and 2 padding bytes.
        packet.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        packet.extend_from_slice(&[0xBE, 0xDE, 0, 2, 0x10, 0x7f, 0x00, 0x31, 0xab, 0xcd, 0, 0]);
        packet.extend_from_slice(b"payload");
        let header = RtpHeader::parse(&packet).unwrap();
        assert_eq!((header.header_len, header.sequence, header.timestamp), (32, 0xfffe, 0x1234));
        assert!(header.marker && !header.padding);
        assert_eq!(header.payload_type, 111);
        assert_eq!(header.extension_u16(&packet, 3), Some(0xabcd));
        assert_eq!(header.extension_u16(&packet, 1), None, "one byte long, not a u16");
        assert_eq!(header.extension_u16(&packet, 5), None, "absent");
    }

    #[test]
    fn two_byte_extension_with_app_bits() {
        let mut packet = fixed(0x90, 96);
        packet.extend_from_slice(&[0x10, 0x07, 0, 2, 0, 7, 0, 3, 2, 0x12, 0x34, 0]);
        let header = RtpHeader::parse(&packet).unwrap();
        assert_eq!(header.extension_u16(&packet, 3), Some(0x1234));
        assert_eq!(header.extension_u16(&packet, 7), None, "zero-length element");
    }

    #[test]
    fn lengths_past_the_end_are_refused() {
        let mut csrcs = fixed(0x83, 96);
        csrcs.extend_from_slice(&[0; 8]);
        assert_eq!(RtpHeader::parse(&csrcs), None, "three CSRCs announced, two present");
        let mut extension = fixed(0x90, 96);
        extension.extend_from_slice(&[0xBE, 0xDE, 0, 2, 0x31, 0, 0, 0]);
        assert_eq!(RtpHeader::parse(&extension), None, "two words announced, one present");
        assert_eq!(RtpHeader::parse(&fixed(0x90, 96)), None, "X set, no extension header");
        assert_eq!(RtpHeader::parse(&fixed(0x40, 96)), None, "version 1");
    }

    #[test]
    fn element_overrunning_its_block_yields_no_value() {
        let mut packet = fixed(0x90, 96);
        packet.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x3f, 0, 0, 0]); // id 3 claims 16 bytes
        let header = RtpHeader::parse(&packet).unwrap();
        assert_eq!(header.extension_u16(&packet, 3), None);
    }

    #[test]
    fn padding_count() {
        assert_eq!(unpadded_len(&[1, 2, 0, 0, 3], true), Some(2));
        assert_eq!(unpadded_len(&[1, 2, 0, 0, 3], false), Some(5));
        assert_eq!(unpadded_len(&[4, 4, 4, 4], true), Some(0), "all padding: a probe packet");
        assert_eq!(unpadded_len(&[1, 0], true), Some(2), "count 0 removes nothing, as str0m reads it");
        assert_eq!(unpadded_len(&[], true), Some(0));
        assert_eq!(unpadded_len(&[1, 9], true), None, "count past the payload");
    }

    /// Header parsing and the extension walk on arbitrary bytes: no panic, and a parsed header
    /// always lies within the packet.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let len = (next() % 64) as usize;
            let mut packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(first) = packet.first_mut() {
                *first = 0x80 | (*first & 0x3f); // mostly version 2, to get past the first check
            }
            if let Some(header) = RtpHeader::parse(&packet) {
                assert!(header.header_len <= packet.len());
                for id in [0, 1, 3, 14, 15, 255] {
                    let _ = header.extension_u16(&packet, id);
                }
                let _ = unpadded_len(&packet[header.header_len..], header.padding);
            }
        }
    }
}
