"""`--room NAME` against the real livekit-server: the load lands in a room someone already uses."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import assert_outcomes_reconcile, run_cli
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials, mint_token

pytestmark = pytest.mark.integration


def test_a_named_room_takes_the_load_beside_the_apps_own_participant(
    livekit_server: LocalServer, credentials: Credentials, tmp_path: Path
) -> None:
    """An app's room with an SDK participant already publishing in it, and a hidden one (a recorder, say):
    `lkswarm run --room` joins that very room (no run tag in its name), our subscribers receive the app's
    track beside ours, the room check passes with participants that are not ours (the hidden one is listed
    by the server but announced to nobody), and the app's participant sees every one of ours."""
    from livekit import rtc

    room_name = f"app-room-{os.getpid()}"
    seen: set[str] = set()

    async def main() -> tuple[int, dict[str, Any], str]:
        room = rtc.Room()
        room.on("participant_connected", lambda participant: seen.add(participant.identity))
        await room.connect(livekit_server.url, mint_token(credentials, identity="app-user", room=room_name))
        recorder = rtc.Room()
        hidden = mint_token(credentials, identity="app-recorder", room=room_name, hidden=True, can_publish=False)
        await recorder.connect(livekit_server.url, hidden)
        audio = rtc.AudioSource(48_000, 1)
        microphone = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(rtc.LocalAudioTrack.create_audio_track("mic", audio), microphone)
        args = ["--url", livekit_server.url, "--room", room_name, "--participants", "3", "--audio-publishers", "1"]
        args += ["--rate", "10", "--duration", "12s"]
        run = asyncio.create_task(asyncio.to_thread(run_cli, args, credentials, tmp_path))
        counter, started = 0, time.perf_counter()
        while not run.done():
            # 10 ms of a quiet tone: enough for the server to forward packets to every subscriber
            await audio.capture_frame(rtc.AudioFrame(bytes([counter % 7, 0]) * 480, 48_000, 1, 480))
            counter += 1
            await asyncio.sleep(max(0.0, started + counter * 0.01 - time.perf_counter()))
        await room.disconnect()
        await recorder.disconnect()
        return await run

    code, report, stderr = asyncio.run(main())
    assert code == 0, stderr[-2000:]
    assert_outcomes_reconcile(report)
    assert report["participants"]["outcomes"]["completed"] == 3
    assert [row["room"] for row in report["rooms"]] == [room_name]
    assert report["config"]["room"] == room_name
    assert report["room_check"]["mismatched"] == 0, report["room_check"]
    media = report["media"]
    # each of ours receives the app's track; the two who do not publish, ours too: 3 + 2
    assert media["tracks_received"] == 5 and media["tracks_missing"] == 0, media
    assert media["loss_ratio"] is not None and media["loss_ratio"] < 0.01
    # identities keep the run tag: the app sees three of ours, each once
    ours = {identity for identity in seen if identity != "app-user"}
    tag = report["config"]["run_tag"]
    assert len(ours) == 3 and all(identity.endswith(tag) for identity in ours), seen
