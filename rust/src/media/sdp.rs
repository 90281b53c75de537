//! The little SDP reading str0m does not expose: which track each m-line carries, and livekit's
//! trickle candidates.

use str0m::change::SdpOffer;
use str0m::Candidate;

/// `(mid, track id)` for every m-section with an `a=msid:<stream> <track>` line.
///
/// livekit-server names its down-tracks `a=msid:<participant sid>|<track sid> <track sid>`,
/// so the track id is the published track's sid, which is how the signaling side knows it.
pub fn msid_tracks_by_mid(sdp: &str) -> Vec<(String, String)> {
    let mut tracks = Vec::new();
    let mut mid: Option<&str> = None;
    let mut track: Option<&str> = None;
    let mut flush = |mid: &mut Option<&str>, track: &mut Option<&str>| {
        if let (Some(m), Some(t)) = (mid.take(), track.take()) {
            tracks.push((m.to_string(), t.to_string()));
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            flush(&mut mid, &mut track);
        } else if let Some(value) = line.strip_prefix("a=mid:") {
            mid = Some(value.trim());
        } else if let Some(value) = line.strip_prefix("a=msid:") {
            let mut parts = value.split_whitespace();
            let stream = parts.next();
            track = parts.next().or(stream);
        }
    }
    flush(&mut mid, &mut track);
    tracks
}

/// Our offer as we send it: str0m's SDP without `a=msid` in sections that do not send.
///
/// JSEP (RFC 8829 §5.2.1) writes `a=msid` only for a transceiver that sends; str0m writes it for
/// every section. livekit-server reads a publisher offer's sections it has not answered yet as
/// candidate track sections: one with an `a=msid` whose track id matches no pending track is
/// taken for the first pending track of its kind (`getPendingTrack`'s fallback), which points the
/// track's SDP cid at that recvonly section, and then reads the section's (absent) simulcast rids
/// over the real ones. Every rid then maps to spatial layer 0, so subscribers get one of the
/// three simulcast streams at random instead of the one the allocator chose. A single-PC offer
/// has recvonly sections, so it hit this on every simulcast publish.
pub fn offer_sdp_string(offer: &SdpOffer) -> String {
    without_unsent_msid(&offer.to_sdp_string())
}

/// `offer` without `a=msid` lines in m-sections that neither send nor send and receive.
fn without_unsent_msid(offer: &str) -> String {
    let mut out = String::with_capacity(offer.len());
    let mut section: Vec<&str> = Vec::new();
    for line in offer.split_inclusive('\n') {
        if line.starts_with("m=") {
            push_section(&mut section, &mut out);
        }
        section.push(line);
    }
    push_section(&mut section, &mut out);
    out
}

/// Appends one section's lines (the session part, or an m-section) to `out`, leaving out `a=msid`
/// where an m-section does not send.
fn push_section(section: &mut Vec<&str>, out: &mut String) {
    let is_media = section.first().is_some_and(|line| line.starts_with("m="));
    let sends = section.iter().any(|line| matches!(line.trim_end(), "a=sendrecv" | "a=sendonly"));
    for line in section.drain(..) {
        if !(is_media && !sends && line.starts_with("a=msid:")) {
            out.push_str(line);
        }
    }
}

/// Parses livekit's trickle `candidateInit` JSON; `Ok(None)` for end-of-candidates.
pub fn candidate_from_init(candidate_init: &str) -> Result<Option<Candidate>, String> {
    let value: serde_json::Value =
        serde_json::from_str(candidate_init).map_err(|e| format!("candidateInit is not JSON: {e}"))?;
    let text = value.get("candidate").and_then(|c| c.as_str()).unwrap_or("");
    let text = text.trim().trim_start_matches("a=");
    if text.is_empty() {
        return Ok(None);
    }
    Candidate::from_sdp_string(text).map(Some).map_err(|e| format!("bad candidate {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_track_ids_per_mid() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:PA_1|TR_a TR_a\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:PA_1|TR_v TR_v\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        assert_eq!(msid_tracks_by_mid(sdp), vec![("0".into(), "TR_a".into()), ("1".into(), "TR_v".into())]);
    }

    #[test]
    fn an_offer_keeps_msid_only_where_it_sends() {
        let offer = "v=0\r\na=msid-semantic: WMS s\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\na=msid:s cam\r\na=rid:q send\r\n\
                     m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=recvonly\r\na=msid:x y\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=inactive\r\na=msid:z w\r\n\
                     m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:3\r\na=sendrecv\r\na=msid:s mic\r\n\
                     m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:4\r\n";
        let sent = without_unsent_msid(offer);
        assert_eq!(msid_tracks_by_mid(&sent), vec![("0".into(), "cam".into()), ("3".into(), "mic".into())]);
        assert_eq!(sent.replace("a=msid:x y\r\n", "").len(), sent.len(), "{sent}");
        let expected = offer.replace("a=msid:x y\r\n", "").replace("a=msid:z w\r\n", "");
        assert_eq!(sent, expected, "everything else is kept, byte for byte");
    }
}
