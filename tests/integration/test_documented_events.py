"""docs/events.md, docs/cli.md and docs/usage.md, field by field, on real lab calls.

One video call carries most of the claims at once, so the minute they cost is spent once: the
events it prints are compared with what nginx recorded, what the callee logged and what the
process did when it was signalled. The lab's own commands (`demo`, `down`) are run as a user
runs them.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sip2rtmp.lab import RELAY_ACCOUNT, SIP_DOMAIN, SIP_HOST, SIP_PORT, Lab
from sip2rtmp.lab.lab import KAMAILIO, NGINX
from sip2rtmp.lab.recording import decode_audio, dominant_frequency, read_recording
from tests.integration.conftest import SIP2RTMP, CallRun
from tests.integration.test_call_claims import frame_at
from tests.unit.cli.test_contract import clean_env, run

pytestmark = pytest.mark.lab

URL_PASSWORD = "Url-Pw-Gannet-5521"
URL_TOKEN = "Tok-Vole-80317"
DEAD_OUTPUT = "rtmp://127.0.0.1:1/live"
"""Nothing listens on port 1: the connection is refused at once, an output that fails for good."""
TONE_RMS_DBFS = 20 * math.log10(0.3 / math.sqrt(2))
"""The lab tone's level: a sine of amplitude 0.3 (docs/lab.md), about -13.5 dBFS."""

STATS_FIELDS = {
    "rtp": {
        "received",
        "lost",
        "late",
        "duplicate",
        "reordered",
        "loss_pct",
        "jitter_ms",
        "depth_ms",
        "timeline_resyncs",
        "early",
        "malformed",
        "rejected_source",
        "rejected_ssrc",
        "rejected_payload_type",
        "rejected_rtcp",
        "rejected_srtp",
        "source_changes",
    },
    "video": {
        "mode",
        "frames",
        "keyframes",
        "dropped",
        "slate_switches",
        "keyframe_requests",
        "received",
        "lost",
        "jitter_ms",
        "depth_ms",
        "early",
        "malformed",
        "rejected_source",
        "rejected_ssrc",
        "rejected_payload_type",
        "rejected_rtcp",
        "rejected_srtp",
        "source_changes",
        "av_skew_ms",
    },
    "outputs": {"target", "state", "bitrate", "bytes", "reconnects"},
}
"""Every `stats` field docs/events.md lists, by the object that holds it."""


def ffprobe_profiles(path: Path) -> dict[str, str]:
    """codec → profile of each stream, as FFmpeg's own prober reads the file."""
    if shutil.which("ffprobe") is None:
        pytest.fail("ffprobe is needed (Debian package ffmpeg, a lab package)", pytrace=False)
    done = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,profile",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return dict(line.split(",", 1) for line in done.stdout.splitlines() if line)


MALFORMED = 3
"""Datagrams sent to the relay's audio port mid-call that are neither RTP nor RTCP."""


def send_from_a_stranger(log: str) -> int:
    """Send `MALFORMED` datagrams to the relay's audio RTP port, which anyone may reach (they
    are counted as `rtp.malformed`), and an OPTIONS to its SIP port from an address that is not
    the server's. The ports are read from the debug log (`--log-file`): our offer's `m=audio`
    and our requests' Via. Returns the stranger's port, to look for in the log."""
    audio = re.search(r"^m=audio (\d+) ", log, re.MULTILINE)
    via = re.search(r"^Via: SIP/2\.0/UDP 127\.0\.0\.1:(\d+);", log, re.MULTILINE)
    assert audio and via, "the debug log shows our offer and our Via"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        for _ in range(MALFORMED):
            stranger.sendto(b"\x00 neither RTP nor RTCP", ("127.0.0.1", int(audio.group(1))))
        port = int(stranger.getsockname()[1])
        options = (
            f"OPTIONS sip:{RELAY_ACCOUNT.user}@127.0.0.1:{via.group(1)} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-stranger\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:stranger@127.0.0.1:{port}>;tag=s1\r\n"
            f"To: <sip:{RELAY_ACCOUNT.user}@127.0.0.1>\r\n"
            "Call-ID: stranger-options\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        stranger.sendto(options.encode(), ("127.0.0.1", int(via.group(1))))
        stranger.settimeout(1.0)
        with contextlib.suppress(TimeoutError):
            reply = stranger.recv(4096)
            pytest.fail(f"the relay answered a stranger: {reply[:80]!r}", pytrace=False)
    return port


def of(run: CallRun, event: str) -> list[dict[str, Any]]:
    return [e for e in run.events if e["event"] == event]


def test_a_video_call_reports_every_documented_field(start_call: Any, lab: Lab) -> None:
    """One call to the H.264 callee, with `--call-id`, `-vv`, an RTMP URL holding a password
    and a token, a second output that is refused, a DTMF digit from the callee, and SIGTERM.

    Proves: the id in every event (docs/cli.md); each status's and each event's fields
    (docs/events.md), `unregistered` last; `dtmf` received from the callee; the `stats` fields
    against nginx's recording (frames, keyframes, bytes) and the tone's level; one output
    failing leaves the run at exit 0 (docs/usage.md); SIGTERM ends the call and the stream at
    the signal (docs/cli.md); AAC-LC in the stream (README); digest values and URL secrets
    masked in every output, `rtp.malformed` counting what anyone sends to the RTP port, and
    the SIP socket deaf to all but the server (docs/security.md).
    """
    call_id = "documented-events-1"
    call = start_call(
        "video",
        "--call-id",
        call_id,
        "--audio-codecs",
        "PCMU",  # the callee's DTMF uses telephone-event/8000 (RFC 4733 §2.1: the audio clock)
        "-vv",
        "--rtmp-url",
        DEAD_OUTPUT,
        rtmp_url=f"rtmp://relay:{URL_PASSWORD}@127.0.0.1:1935/live?token={URL_TOKEN}",
    )
    answered = call.started + call.wait_for_status("ESTABLISHED", 15)
    callee_log_before = len(lab.callee_log("video"))
    time.sleep(2.5)
    lab.callee_command("video", "sndcode", "7")
    stranger_port = send_from_a_stranger(call.log_file.read_text())
    time.sleep(2.5)
    signalled = time.monotonic()
    call.signal(signal.SIGTERM)
    run = call.wait(20)
    exited = time.monotonic()
    assert run.returncode == 0, run.stderr
    assert exited - signalled < 5, f"the run ended {exited - signalled:.1f} s after SIGTERM"

    # Every event carries the given id: read_events holds the run to it (CallProcess reads it).
    assert {e["callId"] for e in run.events} == {call_id}

    registering, registered = of(run, "registering"), of(run, "registered")
    assert [(e["server"], e["transport"]) for e in registering] == [
        (f"{SIP_HOST}:{SIP_PORT}", "udp")
    ], registering
    assert len(registered) == 1 and registered[0]["expires"] > 0, registered
    assert run.events[-1]["event"] == "unregistered", run.events[-3:]

    statuses = {e["status"]: e for e in of(run, "status")}
    assert list(statuses) == ["TRYING", "RING", "ESTABLISHED", "FINISH"], list(statuses)
    assert statuses["TRYING"]["callee"] == f"sip:video@{SIP_DOMAIN}"
    assert (statuses["RING"]["code"], statuses["RING"]["reason"]) == (180, "Ringing")
    established = statuses["ESTABLISHED"]
    assert (established["code"], established["reason"]) == (200, "OK"), established
    assert established["audio"] == {"codec": "PCMU", "rate": 8000}, established
    assert established["video"]["codec"] == "H264", established
    finish = statuses["FINISH"]
    assert finish["reason"] == "SIGTERM", finish
    assert finish["duration"] <= signalled - answered + 0.5, (finish, signalled - answered)

    dtmf = of(run, "dtmf")
    assert [(e["digit"], e["direction"], e["method"]) for e in dtmf] == [
        ("7", "received", "rfc4733")
    ], dtmf
    assert "send DTMF digit: '7'" in lab.callee_log("video")[callee_log_before:]

    outputs = of(run, "output")
    dead = [e for e in outputs if e["target"].startswith("rtmp://127.0.0.1:1/")]
    live = [e for e in outputs if e["target"].startswith("rtmp://127.0.0.1:1935/live/")]
    # States are polled, so a short `connecting` may pass unreported; the order may not change.
    assert [e["state"] for e in dead] in (["connecting", "failed"], ["failed"]), dead
    assert dead[-1]["error"], dead
    assert [e["state"] for e in live] in (["connecting", "live", "closed"], ["live", "closed"])

    [path] = lab.recordings(run.stream_key)
    recording = read_recording(path)
    # The stream ran up to the signal and stopped there (docs/cli.md: "a clean end of the
    # stream"): nginx's file is as long as the call, which lasted until the signal.
    assert abs(recording.duration - finish["duration"]) <= 0.5, (recording.describe(), finish)
    assert recording.duration >= signalled - answered - 1.0, (recording.describe(), finish)
    assert ffprobe_profiles(path).get("aac") == "LC", ffprobe_profiles(path)

    stats = of(run, "stats")
    assert len(stats) >= 2, "every few seconds, and once more at the end"
    final = stats[-1]
    for group, fields in STATS_FIELDS.items():
        held = final[group][0] if group == "outputs" else final[group]
        assert fields <= set(held), f"{group} lacks {sorted(fields - set(held))}: {held}"
    assert {"duration", "level_dbfs"} <= set(final), final
    assert abs(final["level_dbfs"] - TONE_RMS_DBFS) <= 3, final["level_dbfs"]
    assert (final["rtp"]["malformed"], final["video"]["malformed"]) == (MALFORMED, 0), final
    # security.md: the SIP socket is connected to the server, so the kernel drops what others
    # send; the user agent logs every message that reaches it, so nothing reached it.
    assert f"received 127.0.0.1:{stranger_port}" not in run.log, "a stranger's OPTIONS got in"
    assert final["rtp"]["rejected_payload_type"] == 0, "the callee's DTMF was negotiated"
    video = final["video"]
    assert video["frames"] == len(recording.video_dts), (video, recording.describe())
    assert video["keyframes"] == len(recording.video_keyframes), (video, recording.describe())
    # Loopback under load loses the odd packet: a frame or two may be dropped as incomplete.
    assert 0 <= video["dropped"] <= 2 and video["received"] > video["frames"], video
    assert 0 <= video["jitter_ms"] < 50 and 0 <= video["depth_ms"] <= 500, video
    by_target = {o["target"]: o for o in final["outputs"]}
    [streamed] = [o for t, o in by_target.items() if t.startswith("rtmp://127.0.0.1:1935/")]
    [refused] = [o for t, o in by_target.items() if t.startswith("rtmp://127.0.0.1:1/")]
    size = path.stat().st_size
    # FLV adds 11 bytes of tag header, 4 of back pointer and a codec header to each packet.
    assert 0.85 * size <= streamed["bytes"] <= size, (streamed, size)
    assert streamed["bitrate"] > 0 and streamed["reconnects"] == 0, streamed
    assert (refused["state"], refused["bytes"], refused["reconnects"]) == ("failed", 0, 0)

    digest_lines = [line for line in run.stderr.splitlines() if "Authorization: Digest" in line]
    assert digest_lines, "-vv logs the SIP messages, credentials included, on stderr"
    for line in digest_lines:
        for name in ("response", "nonce", "cnonce"):
            assert f'{name}="***"' in line, line
    assert not re.search(r'response="[0-9a-f]{32}"', run.everything), "a digest response shown"
    for secret in (URL_PASSWORD, URL_TOKEN, run.stream_key):
        assert secret not in run.everything, f"{secret!r} is shown"


def title_glyphs(frame: npt.NDArray[np.uint8]) -> list[npt.NDArray[np.bool_]]:
    """The card's title, read from a decoded frame without the project's font: the bright
    band above the centre, cut into glyphs at the blank columns between them, each sampled
    at its font pixels' centres (the band is 7 of them high)."""
    ink = frame[: frame.shape[0] // 2].min(axis=2) > 128
    rows = np.flatnonzero(ink.any(axis=1))
    assert rows.size, "no text above the card's centre"
    band = ink[rows[0] : rows[-1] + 1]
    pixel = band.shape[0] / 7
    columns = np.flatnonzero(band.any(axis=0))
    starts = columns[np.r_[True, np.diff(columns) > 1]]
    ends = columns[np.r_[np.diff(columns) > 1, True]] + 1
    glyphs = []
    for start, end in zip(starts, ends, strict=True):
        width = max(round((end - start) / pixel), 1)
        sample_rows = ((np.arange(7) + 0.5) * pixel).astype(int)
        sample_columns = start + ((np.arange(width) + 0.5) * pixel).astype(int)
        glyphs.append(band[np.ix_(sample_rows, sample_columns)])
    return glyphs


def test_no_audio_streams_silence_and_exit_8_needs_every_output_dead(
    start_call: Any, lab: Lab
) -> None:
    """docs/cli.md: with `--no-audio`, silence is streamed; docs/usage.md: exit code 8 only
    when every output failed for good (one of two is the other test's exit 0). Both run at
    once, to different callees."""
    silent = start_call("tone", "--no-audio", "--max-duration", "4")
    both_dead = start_call(
        "pcmu", "--no-video", "--rtmp-url", "rtmp://127.0.0.1:2/live", rtmp_url=DEAD_OUTPUT
    )

    dead_run = both_dead.wait(30)
    assert dead_run.returncode == 8, dead_run.stderr
    assert dead_run.last("status")["exitCode"] == 8
    failed = [e for e in of(dead_run, "output") if e["state"] == "failed"]
    assert len({e["target"] for e in failed}) == 2 and all(e["error"] for e in failed), failed
    assert len(dead_run.stderr.strip().splitlines()) == 1, dead_run.stderr

    run = silent.wait(30)
    assert run.returncode == 0, run.stderr
    [path] = lab.recordings(run.stream_key)
    recording = read_recording(path)
    assert [s.codec for s in recording.kinds("audio")] == ["aac"], recording.describe()
    assert recording.duration >= 3.5, recording.describe()
    audio = decode_audio(path)
    assert audio.size >= (recording.duration - 0.5) * 48000, (audio.size, recording.describe())
    peak = float(np.max(np.abs(audio)))
    assert peak < 10 ** (-60 / 20), f"the callee's tone leaks: peak {20 * math.log10(peak):.1f}"

    # docs/usage.md: without the callee's video, "a generated card naming the callee". Read
    # without the font, the title has as many glyphs as the callee's address, and the same
    # glyph exactly where the address repeats a character.
    title = f"tone@{SIP_DOMAIN}"
    glyphs = title_glyphs(frame_at(path, 1.0))
    assert len(glyphs) == len(title), f"{len(glyphs)} glyphs, not the {len(title)} of {title}"
    for i, j in itertools.combinations(range(len(title)), 2):
        same = glyphs[i].shape == glyphs[j].shape and bool((glyphs[i] == glyphs[j]).all())
        assert same == (title[i].upper() == title[j].upper()), (title[i], title[j], i, j)


def test_lab_demo_relays_about_20_s_and_prints_the_recording(lab: Lab) -> None:
    """README: `sip2rtmp lab demo` relays about 20 seconds and prints what the server recorded
    (the recording's path, its tracks and the callee's tone as measured)."""
    env = clean_env()
    done = subprocess.run(
        [SIP2RTMP, "lab", "demo"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    printed = re.findall(r"^nginx recorded (\S+\.flv):$", done.stdout, re.MULTILINE)
    assert len(printed) == 1, done.stdout
    path = Path(printed[0])
    recording = read_recording(path)
    assert abs(recording.duration - 20) <= 1.0, recording.describe()
    assert f"  {recording.describe()}" in done.stdout.splitlines(), done.stdout
    tone = dominant_frequency(decode_audio(path)[48000:], 48000)
    assert abs(tone - 660) < 5, tone
    assert re.search(r"strongest audio frequency 66\d Hz \(the callee sends 660 Hz\)", done.stdout)


@pytest.fixture
def decoys(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes `lab down` might mistake for the lab's; killed (by PID) at the end."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_lab_down_stops_exactly_the_recorded_pids(
    lab: Lab, tmp_path: Path, decoys: list[subprocess.Popen[bytes]]
) -> None:
    """docs/lab.md: `lab down` stops exactly the PIDs the lab recorded. A run directory of its
    own, so the shared lab stays up: the recorded kamailio goes; its twin that was never
    recorded, and a stale PID file's process that is not the lab's, are left alone."""
    run_dir = tmp_path / "lab"
    private = Lab(run_dir)
    private.pids_dir.mkdir(parents=True)

    def decoy(name: str, *words: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [name, "-c", "import time; time.sleep(120)", *words], executable=sys.executable
        )
        decoys.append(process)
        return process

    recorded = decoy("kamailio", str(run_dir))
    twin = decoy("kamailio", str(run_dir))
    stranger = decoy("nginx")
    private.pid_path(KAMAILIO).write_text(f"{recorded.pid}\n")
    private.pid_path(NGINX).write_text(f"{stranger.pid}\n")
    time.sleep(0.2)  # each decoy has exec'd: /proc shows its command line

    done = run("lab", "--run-dir", str(run_dir), "down")
    assert done.returncode == 0, done.stderr
    assert recorded.wait(5) == -signal.SIGTERM, "the recorded process got SIGTERM"
    assert twin.poll() is None, "a process the lab did not record was stopped"
    assert stranger.poll() is None, "a stale PID file's unrelated process was stopped"
    assert not private.pid_path(KAMAILIO).exists()
    assert lab.status().all_running, "the shared lab was touched"
