"""The callee's H.264 reaches the RTMP server unchanged: measured from nginx's recording and
compared with the RTP the callee sent, captured independently on the loopback interface."""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from sip2rtmp.lab import Lab, account
from sip2rtmp.lab.recording import decode_audio, dominant_frequency, read_recording, tone_seconds
from sip2rtmp.relay.runner import CALLEE_SLATE_SIZE
from sip2rtmp.rtp.h264 import (
    AccessUnit,
    H264Depacketizer,
    avc_decoder_configuration_record,
    to_avcc,
)
from sip2rtmp.rtp.packet import RtpPacket, is_rtcp
from sip2rtmp.rtp.vp8 import Vp8Depacketizer

pytestmark = pytest.mark.lab

_ETHERNET = 1  # pcap link type of Linux loopback captures
_IPV4 = 0x0800
_UDP = 17


def udp_payloads(pcap: Path) -> list[tuple[int, bytes]]:
    """(source port, payload) of every IPv4 UDP datagram in a classic pcap file."""
    data = pcap.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    assert struct.unpack_from(order + "I", data, 20)[0] == _ETHERNET
    datagrams = []
    offset = 24
    while offset + 16 <= len(data):
        captured = struct.unpack_from(order + "I", data, offset + 8)[0]
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        if len(frame) < 42 or struct.unpack_from("!H", frame, 12)[0] != _IPV4:
            continue
        ip = frame[14:]
        header = (ip[0] & 0x0F) * 4
        if ip[9] != _UDP:
            continue
        source_port, _, length = struct.unpack_from("!HHH", ip, header)
        datagrams.append((source_port, ip[header + 8 : header + length]))
    return datagrams


def sent_access_units(pcap: Path, port: int) -> list[AccessUnit]:
    """What the callee sent from its video RTP port, reassembled by our own depacketizer."""
    depacketizer = H264Depacketizer(wait_for_keyframe=False)
    units: list[AccessUnit] = []
    for source_port, payload in udp_payloads(pcap):
        if source_port == port and not is_rtcp(payload):
            units.extend(depacketizer.push(RtpPacket.parse(payload)))
    return units


def flv_video(path: Path) -> tuple[bytes, list[tuple[bytes, bool]]]:
    """The FLV's AVC sequence header (avcC) and its video packets' bytes and keyframe flags."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        packets = [
            (bytes(packet), bool(packet.is_keyframe))
            for packet in container.demux(stream)
            if packet.size
        ]
    return extradata, packets


def _tcpdump(tmp_path: Path, callee: str) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """tcpdump on loopback, limited to datagrams sent from one lab callee's RTP ports."""
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed")
    low, high = account(callee).rtp_ports or (0, 0)
    pcap = tmp_path / "callee.pcap"
    process = subprocess.Popen(
        [
            "tcpdump",
            "-i",
            "lo",
            "--immediate-mode",
            "-U",
            "-n",
            "-w",
            str(pcap),
            f"udp and src portrange {low}-{high}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    if "listening" not in line:
        process.kill()
        pytest.skip(f"tcpdump cannot capture here: {line.strip()}")
    yield pcap, process
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """What the `video` callee sends."""
    yield from _tcpdump(tmp_path, "video")


@pytest.fixture
def vp8_capture(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """What the `vp8` callee sends."""
    yield from _tcpdump(tmp_path, "vp8")


def transcoded_recording(
    lab: Lab, run: Any, size: tuple[int, int], seconds: float, interval: float = 2.0
) -> Path:
    """The one recording of a transcoded call, checked: H.264 + AAC at ``size``, opening on
    an IDR, the encoder's keyframes every ``interval`` (never more often), DTS strictly
    increasing, most of the callee's 25 fps for ``seconds``, every packet decodable."""
    paths = lab.recordings(run.stream_key)
    assert len(paths) == 1, paths
    recording = read_recording(paths[0])
    assert [(s.kind, s.codec) for s in recording.streams] == [("video", "h264"), ("audio", "aac")]
    video = recording.kinds("video")[0]
    assert (video.width, video.height) == size
    assert recording.video_keyframes[0] == recording.video_dts[0], "the stream opens on an IDR"
    gaps = np.diff(recording.video_keyframes)
    assert len(gaps) >= seconds // interval - 1, gaps
    assert recording.max_keyframe_gap <= interval + 0.1, gaps
    assert np.all(gaps >= interval - 0.1), f"keyframes every {interval} s, not more often: {gaps}"
    assert np.all(np.diff(recording.video_dts) > 0), "video DTS must strictly increase"
    assert len(recording.video_dts) >= seconds * 8, "most of the callee's frames"
    with av.open(str(paths[0])) as container:
        pictures = list(container.decode(video=0))
    assert len(pictures) == len(recording.video_dts), "every packet decodes to a picture"
    stats = run.last("stats")["video"]
    assert stats["mode"] == "transcode"
    assert stats["frames"] == len(recording.video_dts)
    return paths[0]


def captured_call(
    start_call: Any,
    capture: tuple[Path, subprocess.Popen[str]],
    callee: str,
    codec: str,
    *args: str,
) -> tuple[Path, Any]:
    """A call to a lab video callee with its RTP captured, ended well with ``codec`` agreed.
    Returns the capture and the run."""
    pcap, tcpdump = capture
    run = start_call(callee, *args).wait(40)
    time.sleep(0.2)
    tcpdump.terminate()
    tcpdump.wait(5)
    assert run.returncode == 0, run.stderr
    established = next(e for e in run.events if e.get("status") == "ESTABLISHED")
    assert established["video"]["codec"] == codec
    return pcap, run


def captured_h264_call(
    start_call: Any, capture: tuple[Path, subprocess.Popen[str]], mode: str, *args: str
) -> tuple[Path, Any]:
    """``captured_call`` to the lab's H.264 callee, relayed in ``mode`` at its 640x480."""
    pcap, run = captured_call(start_call, capture, "video", "H264", *args)
    chosen = run.last("video")
    assert (chosen["mode"], chosen["width"], chosen["height"]) == (mode, 640, 480)
    return pcap, run


def test_h264_passes_through_unchanged_with_2s_keyframes(
    start_call: Any, lab: Lab, capture: tuple[Path, subprocess.Popen[str]]
) -> None:
    pcap, run = captured_h264_call(start_call, capture, "passthrough", "--max-duration", "12")
    paths = lab.recordings(run.stream_key)
    assert len(paths) == 1, paths
    recording = read_recording(paths[0])

    assert [(s.kind, s.codec) for s in recording.streams] == [("video", "h264"), ("audio", "aac")]
    video = recording.kinds("video")[0]
    assert (video.width, video.height) == (640, 480)
    assert recording.video_keyframes[0] == recording.video_dts[0], "the stream opens on an IDR"
    assert recording.max_keyframe_gap <= 2.1, np.diff(recording.video_keyframes)
    assert np.all(np.diff(recording.video_dts) > 0), "video DTS must strictly increase"
    assert abs(recording.duration - run.last("status")["duration"]) <= 1.0
    assert len(recording.video_dts) >= 20 * 10, "about 25 fps from the callee for 12 s"

    samples = decode_audio(paths[0])[48000:]
    assert abs(dominant_frequency(samples, 48000) - (account("video").tone_hz or 0)) < 5
    assert tone_seconds(samples, 48000, account("video").tone_hz or 0).mean() >= 0.9

    media = next(e for e in run.events if e["event"] == "media" and e["kind"] == "video")
    sent = sent_access_units(pcap, int(media["remote"].rsplit(":", 1)[1]))
    extradata, packets = flv_video(paths[0])
    sent_bytes = [to_avcc(unit.nals) for unit in sent]
    first = sent_bytes.index(packets[0][0])
    assert [data for data, _ in packets] == sent_bytes[first : first + len(packets)], (
        "every access unit in the recording is byte-identical to one the callee sent, in order"
    )
    assert [key for _, key in packets] == [unit.keyframe for unit in sent[first:][: len(packets)]]
    sps = next(nal for unit in sent for nal in unit.nals if nal[0] & 0x1F == 7)
    pps = next(nal for unit in sent for nal in unit.nals if nal[0] & 0x1F == 8)
    assert extradata == avc_decoder_configuration_record([sps], [pps])
    stats = run.last("stats")["video"]
    assert stats["mode"] == "passthrough"
    assert stats["keyframe_requests"] >= 2


def test_a_g711_call_with_h264_video(start_call: Any, lab: Lab) -> None:
    """`--audio-codecs` narrows the offer: the H.264 callee answers with PCMU, which a PBX
    that only speaks G.711 would do, and its video still passes through beside it."""
    run = start_call("video", "--audio-codecs", "pcmu,PCMA", "--max-duration", "6").wait(30)
    assert run.returncode == 0, run.stderr
    established = next(e for e in run.events if e.get("status") == "ESTABLISHED")
    assert (established["audio"]["codec"], established["video"]["codec"]) == ("PCMU", "H264")
    assert run.last("video")["mode"] == "passthrough"
    paths = lab.recordings(run.stream_key)
    assert len(paths) == 1, paths
    recording = read_recording(paths[0])
    assert [(s.kind, s.codec) for s in recording.streams] == [("video", "h264"), ("audio", "aac")]
    samples = decode_audio(paths[0])[48000:]
    assert tone_seconds(samples, 48000, account("video").tone_hz or 0).mean() >= 0.9


def test_vp8_is_transcoded_to_h264_at_the_callees_size(
    start_call: Any, lab: Lab, vp8_capture: tuple[Path, subprocess.Popen[str]]
) -> None:
    pcap, run = captured_call(start_call, vp8_capture, "vp8", "VP8", "--max-duration", "10")

    media = next(e for e in run.events if e["event"] == "media" and e["kind"] == "video")
    port = int(media["remote"].rsplit(":", 1)[1])
    depacketizer = Vp8Depacketizer()
    sent = [
        frame
        for source_port, payload in udp_payloads(pcap)
        if source_port == port and not is_rtcp(payload)
        for frame in depacketizer.push(RtpPacket.parse(payload))
    ]
    size = (sent[0].width, sent[0].height)  # the first frame out is the first keyframe
    chosen = run.last("video")
    assert (chosen["mode"], chosen["width"], chosen["height"]) == ("transcode", *size)

    path = transcoded_recording(lab, run, size, 10)
    samples = decode_audio(path)[48000:]
    assert abs(dominant_frequency(samples, 48000) - (account("vp8").tone_hz or 0)) < 5
    assert tone_seconds(samples, 48000, account("vp8").tone_hz or 0).mean() >= 0.9


def test_h264_is_re_encoded_with_transcode(
    start_call: Any, lab: Lab, capture: tuple[Path, subprocess.Popen[str]]
) -> None:
    """`--transcode`: the callee's H.264 is decoded and encoded again, at its own size, with
    the encoder's keyframes exactly every 2 s rather than the callee's (asked for about every
    1.2 s when it passes through)."""
    pcap, run = captured_h264_call(
        start_call, capture, "transcode", "--transcode", "--max-duration", "8"
    )
    path = transcoded_recording(lab, run, (640, 480), 8)

    media = next(e for e in run.events if e["event"] == "media" and e["kind"] == "video")
    sent = sent_access_units(pcap, int(media["remote"].rsplit(":", 1)[1]))
    extradata, packets = flv_video(path)
    assert len(sent) >= len(packets)
    callee_sps = next(nal for unit in sent for nal in unit.nals if nal[0] & 0x1F == 7)
    assert callee_sps not in extradata, "the encoder's own SPS, not the callee's"
    sent_bytes = {to_avcc(unit.nals) for unit in sent}
    assert not sent_bytes & {data for data, _ in packets}, "no access unit passed through"
    samples = decode_audio(path)[48000:]
    assert tone_seconds(samples, 48000, account("video").tone_hz or 0).mean() >= 0.9


def test_vp8_keyframes_follow_the_keyframe_interval(start_call: Any, lab: Lab) -> None:
    """`--keyframe-interval 1`: the transcoder forces a keyframe every second."""
    run = start_call("vp8", "--keyframe-interval", "1", "--max-duration", "8").wait(40)
    assert run.returncode == 0, run.stderr
    size = (run.last("video")["width"], run.last("video")["height"])
    transcoded_recording(lab, run, size, 8, interval=1.0)


def test_a_passed_through_callee_is_asked_for_keyframes_within_the_interval(
    start_call: Any, lab: Lab
) -> None:
    """`--keyframe-interval 1`: the callee's H.264 passes through and the callee is asked for a
    keyframe before each second runs out (at the default 2 s, about every 1.2 s)."""
    run = start_call("video", "--keyframe-interval", "1", "--max-duration", "8").wait(40)
    assert run.returncode == 0, run.stderr
    assert run.last("video")["mode"] == "passthrough"
    paths = lab.recordings(run.stream_key)
    assert len(paths) == 1, paths
    recording = read_recording(paths[0])
    assert recording.video_keyframes[0] == recording.video_dts[0], "the stream opens on an IDR"
    gaps = np.diff(recording.video_keyframes)
    assert len(gaps) >= 6, gaps
    assert recording.max_keyframe_gap <= 1.1, gaps
    assert np.all(np.diff(recording.video_dts) > 0), "video DTS must strictly increase"


def test_slate_reaches_the_h264_callee(start_call: Any, lab: Lab) -> None:
    """The callee receives and decodes the slate sent toward it (baresip logs both)."""
    log_before = len(lab.callee_log("video"))
    run = start_call("video", "--max-duration", "6").wait(30)
    assert run.returncode == 0, run.stderr
    log = lab.callee_log("video")[log_before:]
    assert "incoming rtp for 'video' established" in log, log[-2000:]
    width, height = CALLEE_SLATE_SIZE
    assert f"video: receiving with resolution {width} x {height}" in log, log[-2000:]
    assert run.last("stats")["video"]["sent"] >= 50, "10 fps for about 6 s"
