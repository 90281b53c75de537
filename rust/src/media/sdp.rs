//! The little SDP reading str0m does not expose: which track each m-line carries, and livekit's
//! trickle candidates.

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
}
