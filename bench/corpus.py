"""Realistic SignalResponse/SignalRequest frames, built with the reference classes (livekit-protocol)."""

from __future__ import annotations

from livekit.protocol import models, rtc


def participant(i: int, tracks: int = 2) -> models.ParticipantInfo:
    p = models.ParticipantInfo(
        sid=f"PA_{i:012d}abcd",
        identity=f"participant-{i}",
        name=f"Participant {i}",
        state=models.ParticipantInfo.State.ACTIVE,
        joined_at=1_700_000_000 + i,
        version=i,
        permission=models.ParticipantPermission(can_subscribe=True, can_publish=True, can_publish_data=True),
        region="local",
        is_publisher=tracks > 0,
        kind=models.ParticipantInfo.Kind.STANDARD,
    )
    p.attributes["role"] = "load"
    for t in range(tracks):
        video = t % 2 == 1
        track = p.tracks.add(
            sid=f"TR_{i:08d}{t:04d}",
            type=models.TrackType.VIDEO if video else models.TrackType.AUDIO,
            name="camera" if video else "microphone",
            source=models.TrackSource.CAMERA if video else models.TrackSource.MICROPHONE,
            mime_type="video/VP8" if video else "audio/opus",
            mid=str(t),
            stream="camera" if video else "microphone",
            version=models.TimedVersion(unix_micro=1_700_000_000_000_000 + i, ticks=t),
        )
        if video:
            track.width, track.height, track.simulcast = 1280, 720, True
            for q, (w, h, b) in enumerate([(320, 180, 150_000), (640, 360, 400_000), (1280, 720, 2_000_000)]):
                track.layers.add(quality=q, width=w, height=h, bitrate=b, ssrc=1000 + q)
            codec = track.codecs.add(mime_type="video/VP8", mid=str(t), cid=f"cid-{t}")
            codec.layers.extend(track.layers)
    return p


def response_corpus() -> dict[str, bytes]:
    """The mixed corpus of server frames named by the codec issue."""
    corpus: dict[str, bytes] = {}
    corpus["pong_resp"] = rtc.SignalResponse(
        pong_resp=rtc.Pong(last_ping_timestamp=1_700_000_000_000, timestamp=1_700_000_000_012)
    ).SerializeToString()
    corpus["update_1"] = rtc.SignalResponse(
        update=rtc.ParticipantUpdate(participants=[participant(1)])
    ).SerializeToString()
    corpus["update_50"] = update_50()
    corpus["speakers_changed"] = rtc.SignalResponse(
        speakers_changed=rtc.SpeakersChanged(
            speakers=[models.SpeakerInfo(sid=f"PA_{i:012d}abcd", level=0.1 * i, active=True) for i in range(3)]
        )
    ).SerializeToString()
    good = models.ConnectionQuality.GOOD
    corpus["connection_quality_20"] = rtc.SignalResponse(
        connection_quality=rtc.ConnectionQualityUpdate(
            updates=[
                rtc.ConnectionQualityInfo(participant_sid=f"PA_{i:012d}abcd", quality=good, score=4.2)
                for i in range(20)
            ]
        )
    ).SerializeToString()
    join = rtc.JoinResponse(
        room=models.Room(sid="RM_abcdef123456", name="load-room", empty_timeout=300, creation_time=1_700_000_000),
        participant=participant(0),
        other_participants=[participant(i) for i in range(1, 21)],
        server_version="1.13.5",
        ice_servers=[rtc.ICEServer(urls=["stun:stun.example.org:3478"]), rtc.ICEServer(urls=["turn:t:3478"])],
        subscriber_primary=True,
        ping_timeout=15,
        ping_interval=5,
        server_info=models.ServerInfo(version="1.13.5", protocol=17, node_id="ND_1"),
    )
    corpus["join_20"] = rtc.SignalResponse(join=join).SerializeToString()
    corpus["trickle"] = rtc.SignalResponse(
        trickle=rtc.TrickleRequest(
            candidateInit='{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host",'
            '"sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}',
            target=rtc.SignalTarget.SUBSCRIBER,
        )
    ).SerializeToString()
    corpus["offer_3k"] = rtc.SignalResponse(
        offer=rtc.SessionDescription(
            type="offer", sdp=("a=candidate:x 1 udp 1 127.0.0.1 7882 typ host\r\n" * 64)[:3000], id=7
        )
    ).SerializeToString()
    return corpus


def update_50() -> bytes:
    return rtc.SignalResponse(
        update=rtc.ParticipantUpdate(participants=[participant(i) for i in range(50)])
    ).SerializeToString()
