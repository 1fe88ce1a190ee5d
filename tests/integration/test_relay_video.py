"""The callee's H.264 reaches the RTMP server unchanged: measured from nginx's recording and
compared with the RTP the callee sent, captured independently on the loopback interface.

The capture is read by tests/support/reference_rtp.py, written from RFC 6184 and RFC 7741,
never by the relay's own depacketizers: a bug shared by both sides would hide itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from sip2rtmp.lab import Lab, account
from sip2rtmp.lab.recording import decode_audio, dominant_frequency, read_recording, tone_seconds
from sip2rtmp.media.slate import DEFAULT_FPS
from sip2rtmp.relay.media import CALLEE_SLATE_SIZE
from tests.support.pcap import CaptureUnavailable, UdpCapture, UdpDatagram, read_udp
from tests.support.reference_rtp import (
    NAL_PPS,
    NAL_SPS,
    H264AccessUnit,
    feedback_requests,
    h264_access_units,
    in_order,
    is_rtcp,
    parse_avcc,
    vp8_frames,
)

pytestmark = pytest.mark.lab

FPS = 25
"""The lab's video callees send 25 frames a second (docs/lab.md)."""


@dataclass
class CapturedCall:
    """A finished call to a lab video callee and the UDP that crossed its RTP ports."""

    run: Any
    datagrams: list[UdpDatagram]

    @property
    def video_port(self) -> int:
        media = next(e for e in self.run.events if e["event"] == "media" and e["kind"] == "video")
        return int(media["remote"].rsplit(":", 1)[1])

    def sent_video(self) -> list[bytes]:
        """Every datagram the callee sent from its video port, in capture order."""
        return [d.payload for d in self.datagrams if d.source_port == self.video_port]

    def sent_access_units(self) -> list[H264AccessUnit]:
        return h264_access_units(in_order(self.sent_video()))

    def keyframe_requests(self) -> int:
        """PLI/FIR the callee received on its video RTP or RTCP port."""
        ports = (self.video_port, self.video_port + 1)
        return feedback_requests(
            d.payload for d in self.datagrams if d.destination_port in ports and is_rtcp(d.payload)
        )


@pytest.fixture
def capture(start_call: Any, tmp_path: Path) -> Iterator[Callable[..., CapturedCall]]:
    """Factory: a call to a lab video callee with the UDP on the callee's RTP ports captured,
    ended well with ``codec`` agreed. A capture that cannot start fails the test: the claims
    here are about bytes on the wire and nothing else can prove them."""
    started: list[UdpCapture] = []

    def call(callee: str, codec: str, *args: str) -> CapturedCall:
        low, high = account(callee).rtp_ports or (0, 0)
        try:
            tcpdump = UdpCapture.start(
                tmp_path / f"{callee}.pcap",
                f"udp and (src portrange {low}-{high} or dst portrange {low}-{high})",
            )
        except CaptureUnavailable as exc:
            pytest.fail(f"cannot capture the callee's RTP on loopback: {exc}", pytrace=False)
        started.append(tcpdump)
        run = start_call(callee, *args).wait(40)
        time.sleep(0.2)
        tcpdump.stop()
        assert run.returncode == 0, run.stderr
        established = next(e for e in run.events if e.get("status") == "ESTABLISHED")
        assert established["video"]["codec"] == codec
        return CapturedCall(run, list(read_udp(tcpdump.path)))

    yield call
    for tcpdump in started:
        tcpdump.stop()


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


def frames_between(recording_dts: list[float]) -> float:
    """How many frames the callee's 25 fps give over the recording's video timeline."""
    return (recording_dts[-1] - recording_dts[0]) * FPS + 1


def transcoded_recording(
    lab: Lab, run: Any, size: tuple[int, int], seconds: float, interval: float = 2.0
) -> Path:
    """The one recording of a transcoded call, checked: H.264 + AAC at ``size``, opening on
    an IDR, the encoder's keyframes every ``interval`` (never more often), DTS strictly
    increasing, all of the callee's 25 fps kept, every packet decodable."""
    paths = lab.recordings(run.stream_key)
    assert len(paths) == 1, paths
    recording = read_recording(paths[0])
    assert [(s.kind, s.codec) for s in recording.streams] == [("video", "h264"), ("audio", "aac")]
    video = recording.kinds("video")[0]
    assert (video.width, video.height) == size
    assert recording.video_keyframes[0] == recording.video_dts[0], "the stream opens on an IDR"
    gaps = np.diff(recording.video_keyframes)
    assert len(gaps) >= (recording.video_dts[-1] - recording.video_dts[0]) // interval, gaps
    assert recording.max_keyframe_gap <= interval + 0.1, gaps
    assert np.all(gaps >= interval - 0.1), f"keyframes every {interval} s, not more often: {gaps}"
    assert np.all(np.diff(recording.video_dts) > 0), "video DTS must strictly increase"
    assert recording.duration >= seconds - 2.5, recording.describe()
    expected = frames_between(recording.video_dts)
    assert len(recording.video_dts) >= 0.97 * expected, (len(recording.video_dts), expected)
    with av.open(str(paths[0])) as container:
        pictures = list(container.decode(video=0))
    assert len(pictures) == len(recording.video_dts), "every packet decodes to a picture"
    stats = run.last("stats")["video"]
    assert stats["mode"] == "transcode"
    assert stats["frames"] == len(recording.video_dts)
    return paths[0]


def assert_asked_for_keyframes(call: CapturedCall, interval: float) -> None:
    """The callee was asked for keyframes (PLI/FIR on the wire, as many as the stats count) at
    the pace that keeps them ``interval`` apart: a request 0.4 of the interval (at most 0.8 s)
    before it runs out, so at the default 2 s about every 1.2 s; a retry 0.3 s after a request
    the callee let pass now and then, never a flood."""
    requests = call.keyframe_requests()
    assert call.run.last("stats")["video"]["keyframe_requests"] == requests, (
        "every request counted went out"
    )
    period = interval - min(0.8, 0.4 * interval)
    expected = call.run.last("status")["duration"] / period
    assert expected - 2 <= requests <= 1.5 * expected, (requests, expected)


def h264_call(capture: Callable[..., CapturedCall], mode: str, *args: str) -> CapturedCall:
    """A captured call to the lab's H.264 callee, relayed in ``mode`` at its 640x480."""
    call = capture("video", "H264", *args)
    chosen = call.run.last("video")
    assert (chosen["mode"], chosen["width"], chosen["height"]) == (mode, 640, 480)
    return call


def test_h264_passes_through_unchanged_with_2s_keyframes(
    capture: Callable[..., CapturedCall], lab: Lab
) -> None:
    call = h264_call(capture, "passthrough", "--max-duration", "12")
    run = call.run
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

    samples = decode_audio(paths[0])[48000:]
    assert abs(dominant_frequency(samples, 48000) - (account("video").tone_hz or 0)) < 5
    assert tone_seconds(samples, 48000, account("video").tone_hz or 0).mean() >= 0.9

    sent = call.sent_access_units()
    extradata, packets = flv_video(paths[0])
    samples_sent = [unit.sample for unit in sent]
    first = samples_sent.index(packets[0][0])
    assert [data for data, _ in packets] == samples_sent[first : first + len(packets)], (
        "every access unit in the recording is byte-identical to one the callee sent, in order"
    )
    assert [key for _, key in packets] == [unit.keyframe for unit in sent[first:][: len(packets)]]
    assert sent[first].keyframe and not any(unit.keyframe for unit in sent[:first]), (
        "the recording opens on the callee's first keyframe"
    )
    assert len(sent) - first - len(packets) <= FPS // 2, "at most half a second cut at hang-up"
    config = parse_avcc(extradata)
    sps = next(nal for unit in sent for nal in unit.nals if nal[0] & 0x1F == NAL_SPS)
    pps = next(nal for unit in sent for nal in unit.nals if nal[0] & 0x1F == NAL_PPS)
    assert (config.sps, config.pps) == ((sps,), (pps,)), "the callee's own parameter sets"
    assert (config.profile, config.length_size) == (sps[1:4], 4)

    assert run.last("stats")["video"]["mode"] == "passthrough"
    assert_asked_for_keyframes(call, 2.0)


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
    capture: Callable[..., CapturedCall], lab: Lab
) -> None:
    call = capture("vp8", "VP8", "--max-duration", "10")
    frames = vp8_frames(in_order(call.sent_video()))
    size = next(frame.size for frame in frames if frame.keyframe)
    chosen = call.run.last("video")
    assert (chosen["mode"], chosen["width"], chosen["height"]) == ("transcode", *size)

    path = transcoded_recording(lab, call.run, size, 10)
    samples = decode_audio(path)[48000:]
    assert abs(dominant_frequency(samples, 48000) - (account("vp8").tone_hz or 0)) < 5
    assert tone_seconds(samples, 48000, account("vp8").tone_hz or 0).mean() >= 0.9


def test_h264_is_re_encoded_with_transcode(capture: Callable[..., CapturedCall], lab: Lab) -> None:
    """`--transcode`: the callee's H.264 is decoded and encoded again, at its own size, with
    the encoder's keyframes exactly every 2 s rather than the callee's (asked for about every
    1.2 s when it passes through)."""
    call = h264_call(capture, "transcode", "--transcode", "--max-duration", "8")
    path = transcoded_recording(lab, call.run, (640, 480), 8)

    sent = call.sent_access_units()
    extradata, packets = flv_video(path)
    assert len(sent) >= len(packets)
    callee_sps = next(nal for unit in sent for nal in unit.nals if nal[0] & 0x1F == NAL_SPS)
    assert parse_avcc(extradata).sps != (callee_sps,), "the encoder's own SPS, not the callee's"
    assert not {unit.sample for unit in sent} & {data for data, _ in packets}, (
        "no access unit passed through"
    )
    samples = decode_audio(path)[48000:]
    assert tone_seconds(samples, 48000, account("video").tone_hz or 0).mean() >= 0.9


def test_vp8_keyframes_follow_the_keyframe_interval(start_call: Any, lab: Lab) -> None:
    """`--keyframe-interval 1`: the transcoder forces a keyframe every second."""
    run = start_call("vp8", "--keyframe-interval", "1", "--max-duration", "8").wait(40)
    assert run.returncode == 0, run.stderr
    size = (run.last("video")["width"], run.last("video")["height"])
    transcoded_recording(lab, run, size, 8, interval=1.0)


def test_a_passed_through_callee_is_asked_for_keyframes_within_the_interval(
    capture: Callable[..., CapturedCall], lab: Lab
) -> None:
    """`--keyframe-interval 1`: the callee's H.264 passes through and the callee is asked for a
    keyframe before each second runs out (at the default 2 s, about every 1.2 s)."""
    call = h264_call(capture, "passthrough", "--keyframe-interval", "1", "--max-duration", "8")
    paths = lab.recordings(call.run.stream_key)
    assert len(paths) == 1, paths
    recording = read_recording(paths[0])
    assert recording.video_keyframes[0] == recording.video_dts[0], "the stream opens on an IDR"
    gaps = np.diff(recording.video_keyframes)
    span = recording.video_dts[-1] - recording.video_dts[0]
    assert len(gaps) >= span // 1.0, gaps
    assert recording.max_keyframe_gap <= 1.1, gaps
    assert np.all(np.diff(recording.video_dts) > 0), "video DTS must strictly increase"
    assert call.run.last("stats")["video"]["mode"] == "passthrough"
    assert_asked_for_keyframes(call, 1.0)


def test_slate_reaches_the_h264_callee(start_call: Any, lab: Lab) -> None:
    """The callee receives and decodes the slate sent toward it (baresip logs both)."""
    log_before = len(lab.callee_log("video"))
    run = start_call("video", "--max-duration", "6").wait(30)
    assert run.returncode == 0, run.stderr
    log = lab.callee_log("video")[log_before:]
    assert "incoming rtp for 'video' established" in log, log[-2000:]
    width, height = CALLEE_SLATE_SIZE
    assert f"video: receiving with resolution {width} x {height}" in log, log[-2000:]
    sent, duration = run.last("stats")["video"]["sent"], run.last("status")["duration"]
    assert sent >= 0.9 * DEFAULT_FPS * duration, f"{sent} frames of slate in {duration} s"
