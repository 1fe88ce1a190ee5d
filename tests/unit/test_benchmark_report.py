"""The relay benchmark's report and its reading of a capture, without the lab.

The report is what docs/performance.md keeps: its rows must read the same from one run of the
benchmark to the next, and rewriting one case's block must leave the rest of the file alone.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from benchmarks.relay.calls import Run
from benchmarks.relay.probes.capture import Frame, is_media, rtmp_messages, tcp_stream
from benchmarks.relay.probes.process import Usage
from benchmarks.relay.probes.wire import Wire
from benchmarks.relay.report import (
    DOCUMENT,
    details,
    markers,
    srtp_verdicts,
    verdicts,
    write_results,
)

RTMP_PORT = 1935
CLIENT_PORT = 50_000


def _run(
    label: str,
    cpu_s: float,
    steady_cpu_s: float,
    rss_kb: int,
    delays: list[float],
    first_media_at: float,
    video_codec: str | None,
) -> Run:
    """A 60 s call with a 57.5 s steady window, answered at t=10 s and live 86 ms later."""
    usage = Usage(cpu_s, rss_kb, steady_cpu_s, 57.5, [("main", 0.67), ("thread 5", 0.54)])
    wire = Wire(ok_at=10.0, connect_at=10.086, first_media_at=first_media_at, delays=delays)
    return Run(label, "opus", 60.0, usage, wire, "3 onsets", [], 0.782, video_codec)


def _pair(video_codec: str | None = None) -> tuple[Run, Run]:
    """Figures of a measured audio call: sip2rtmp with a 40 ms jitter buffer, and ffmpeg."""
    ours = _run("sip2rtmp", 1.88, 1.28, 89_293, [0.264, 0.366, 0.446], 10.307, video_codec)
    ours.depth_ms = [40.0]
    delays = [0.190, 0.245, 0.292]
    return ours, _run("ffmpeg baseline", 3.82, 3.58, 179_670, delays, 10.291, video_codec)


def test_verdict_rows_read_as_the_performance_document_has_them() -> None:
    rows = [" | ".join(row) for row in verdicts(*_pair())]
    assert rows == [
        "CPU at most 50% of the baseline (whole process) | 1.88 CPU-s/min (49% of baseline)"
        " | 3.82 CPU-s/min | met",
        "CPU at most 50% of the baseline (steady call) | 1.34 CPU-s/min (36% of baseline)"
        " | 3.74 CPU-s/min | met",
        "added audio delay at most 100 ms beyond the jitter buffer"
        " | 326 ms (median delay 366 ms minus depth 40 ms) | median delay 245 ms | **missed**",
        "first FLV media packet within 300 ms of the 200 OK | 307 ms | 291 ms | **missed**",
        "peak RSS under 120 MB | 87 MB | 175 MB | met",
    ]


def test_only_an_h264_passthrough_call_is_held_to_the_core_share_target() -> None:
    targets = [row[0] for row in verdicts(*_pair("H264/0"))]
    assert targets[2] == (
        "H.264 passthrough call at most 5% of one core (3 CPU-s/min, whole process)"
    )
    assert not any("one core" in row[0] for row in verdicts(*_pair("VP8")))


def test_an_srtp_call_is_held_to_ten_percent_over_the_same_plain_call() -> None:
    plain, _ = _pair()
    srtp = _run("sip2rtmp SRTP", 2.05, 1.40, 90_000, [], 10.3, None)
    rows = [" | ".join(row) for row in srtp_verdicts(srtp, plain)]
    assert rows == [
        "SRTP call's CPU within 10% of the same plain call (whole process)"
        " | 2.05 CPU-s/min (+9.0%) | 1.88 CPU-s/min | met",
        "SRTP call's CPU within 10% of the same plain call (steady call)"
        " | 1.46 CPU-s/min (+9.4%) | 1.34 CPU-s/min | met",
        "peak RSS under 120 MB | 88 MB | 87 MB | met",
    ]
    srtp.usage = Usage(2.10, 90_000, 1.40, 57.5, [])
    assert srtp_verdicts(srtp, plain)[0][1:] == (
        "2.10 CPU-s/min (+11.7%)",
        "1.88 CPU-s/min",
        "**missed**",
    )


def test_a_run_without_a_capture_is_not_measured_rather_than_failed() -> None:
    ours, baseline = _pair()
    ours.wire = baseline.wire = None
    ours.depth_ms = []
    rows = {row[0]: row for row in verdicts(ours, baseline)}
    delay = rows["added audio delay at most 100 ms beyond the jitter buffer"]
    assert delay[1:] == (
        "n/a (median delay n/a minus depth n/a)",
        "median delay n/a",
        "not measured",
    )
    first = rows["first FLV media packet within 300 ms of the 200 OK"]
    assert first[1:] == ("n/a", "n/a", "not measured")


def test_details_give_the_numbers_behind_each_verdict() -> None:
    lines = details(*_pair())
    assert lines[:3] == [
        "- sip2rtmp (opus from the callee): 1.88 CPU-s over the whole process for a 60 s call;"
        " 1.28 CPU-s in the steady 57.5 s window; peak RSS 87.2 MB.",
        "  - after the 200 OK: RTMP connection opened at 86 ms, first media packet at 307 ms.",
        "  - audio delay RTP in → FLV out (3 onsets): 3 onsets, min 264 ms, median 366 ms,"
        " max 446 ms.",
    ]
    assert lines[-1] == (
        "- sip2rtmp CPU by thread in the steady window: main 0.67 s, thread 5 0.54 s."
    )


def test_writing_a_case_replaces_only_its_own_block(tmp_path: Path) -> None:
    audio_start, audio_end = markers("audio")
    g711_start, g711_end = markers("g711")
    document = tmp_path / "performance.md"
    document.write_text(
        f"# Performance\n\nintro\n\n{audio_start}\nold audio\n{audio_end}\n\nbetween\n\n"
        f"{g711_start}\nold g711\n{g711_end}\n\nafter\n"
    )
    write_results(document, "new audio", "audio")
    write_results(document, "first h264", "h264")
    h264_start, h264_end = markers("h264")
    assert document.read_text() == (
        f"# Performance\n\nintro\n\n{audio_start}\nnew audio\n{audio_end}\n\nbetween\n\n"
        f"{g711_start}\nold g711\n{g711_end}\n\nafter\n\n{h264_start}\nfirst h264\n{h264_end}\n"
    )


def test_a_new_results_file_starts_with_how_to_rerun_it(tmp_path: Path) -> None:
    document = tmp_path / "performance.md"
    write_results(document, "figures", "vp8")
    start, end = markers("vp8")
    assert document.read_text() == f"{DOCUMENT.rstrip()}\n\n{start}\nfigures\n{end}\n"


def _chunks(csid: int, type_id: int, payload: bytes, chunk_size: int) -> bytes:
    """One RTMP message as a type-0 chunk and type-3 continuations (RTMP 1.0 §5.3.1)."""
    header = bytes([csid]) + bytes(3) + len(payload).to_bytes(3, "big") + bytes([type_id])
    out = header + bytes(4) + payload[:chunk_size]
    for offset in range(chunk_size, len(payload), chunk_size):
        out += bytes([0xC0 | csid]) + payload[offset : offset + chunk_size]
    return out


def test_an_rtmp_message_is_timed_by_the_segment_that_carried_its_last_byte() -> None:
    sequence_header = b"\xaf\x00\x11\x90"
    media = b"\xaf\x01" + bytes(range(256)) * 2
    stream = (
        bytes(1 + 1536 + 1536)
        + _chunks(2, 1, (200).to_bytes(4, "big"), 128)
        + _chunks(4, 8, sequence_header, 200)
        + _chunks(4, 8, media, 200)
    )
    cuts = [0, 3000, 3089, 3300, 3500, len(stream)]  # 3089: where the first message ends
    segments = [
        Frame(float(index), True, CLIENT_PORT, RTMP_PORT, 1000 + start, stream[start:end])
        for index, (start, end) in enumerate(itertools.pairwise(cuts))
    ]
    # A retransmission of bytes already seen, and the server's side of the connection.
    segments.insert(3, Frame(9.0, True, CLIENT_PORT, RTMP_PORT, 1000 + 3050, stream[3050:3200]))
    segments.append(Frame(9.5, True, RTMP_PORT, CLIENT_PORT, 7, b"server"))

    received, carried = tcp_stream(segments, CLIENT_PORT, RTMP_PORT)
    messages = rtmp_messages(received, carried)

    assert received == stream
    assert [(m.type_id, m.payload) for m in messages] == [
        (1, (200).to_bytes(4, "big")),
        (8, sequence_header),
        (8, media),
    ]
    assert [is_media(m) for m in messages] == [False, False, True]
    assert [m.time for m in messages] == [1.0, 2.0, 4.0]
