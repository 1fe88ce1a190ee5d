"""The relay benchmark's report and its reading of a capture, without the lab.

The report is what docs/performance.md keeps: its rows must read the same from one run of the
benchmark to the next, and rewriting one case's block must leave the rest of the file alone.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.relay.calls import Run
from benchmarks.relay.probes.capture import Frame, is_media, rtmp_messages, tcp_stream
from benchmarks.relay.probes.process import (
    Usage,
    Watched,
    children,
    machine_cpu_s,
    memory_kb,
    rss_kb,
)
from benchmarks.relay.probes.wire import Wire
from benchmarks.relay.report import (
    DOCUMENT,
    details,
    markers,
    median_run,
    results_markdown,
    srtp_verdicts,
    verdicts,
    write_results,
)
from benchmarks.relay.runner import CASES
from benchmarks.relay.served import Served
from benchmarks.relay_benchmark import parse_args
from benchmarks.serve import report as serve_report
from benchmarks.serve.report import (
    AAC_FRAME_S,
    CallFigures,
    LoadRun,
    RtpCounters,
    audio_dropouts,
    audio_gaps,
    load_markdown,
    saturation,
)
from benchmarks.startup_benchmark import Startup, measure_stack_floor
from benchmarks.startup_benchmark import results_markdown as startup_markdown
from benchmarks.wakeup_benchmark import Rate, run_cpu_s
from benchmarks.wakeup_benchmark import results_markdown as wakeup_markdown

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
        "CPU at most 35% of the baseline (whole process) | 1.88 CPU-s/min (49% of baseline)"
        " | 3.82 CPU-s/min | **missed**",
        "CPU at most 35% of the baseline (steady call) | 1.34 CPU-s/min (36% of baseline)"
        " | 3.74 CPU-s/min | **missed**",
        "added audio delay at most 100 ms beyond the jitter buffer"
        " | 326 ms (median delay 366 ms minus depth 40 ms) | median delay 245 ms | **missed**",
        "first FLV media packet within 200 ms of the 200 OK | 307 ms | 291 ms | **missed**",
        "peak RSS under 120 MB | 87 MB | 175 MB | met",
    ]


def test_each_kind_of_call_is_held_to_its_share_of_the_baseline() -> None:
    """Audio only: a third of ffmpeg encoding a slate live; H.264 passed through: no more than
    `ffmpeg -c:v copy`; VP8 transcoded: half."""
    shares = {
        video: {row[0] for row in verdicts(*_pair(video)) if row[0].startswith("CPU at most")}
        for video in (None, "H264/0", "VP8")
    }
    assert shares == {
        video: {
            f"CPU at most {share} of the baseline (whole process)",
            f"CPU at most {share} of the baseline (steady call)",
        }
        for video, share in ((None, "35%"), ("H264/0", "100%"), ("VP8", "50%"))
    }
    ours, ffmpeg = _pair("H264/0")
    assert verdicts(ours, ffmpeg)[0][3] == "met", "1.88 against 3.82 is at or below the copy"


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
    first = rows["first FLV media packet within 200 ms of the 200 OK"]
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


def test_rounds_are_compared_by_each_sides_median_run_and_all_are_listed() -> None:
    def served(cpu_s: float) -> Served:
        return Served("sip2rtmp serve", 60.0, cpu_s, 64_000, 0.2, "max duration reached")

    busy, _ = _pair()  # 1.88 CPU-s
    median = _run("sip2rtmp", 1.24, 0.93, 95_000, [], 10.2, None)
    quiet = _run("sip2rtmp", 1.10, 0.80, 90_000, [], 10.2, None)
    assert median_run([busy, quiet, median]) is median
    assert median_run([busy, quiet]) is quiet  # of two, the lower middle one
    assert median_run([served(1.3), served(0.9), served(1.1)]).cpu_s == 1.1
    ffmpeg = _pair()[1]
    spread = [("sip2rtmp", [1.88, 1.10, 1.24]), ("ffmpeg baseline", [3.82, 3.35, 3.60])]
    block = results_markdown(median, ffmpeg, 60.0, CASES["audio"], spread=spread)
    assert block.splitlines()[-1] == (
        "- 3 rounds, one after the other, each running the sides in turn; whole-process"
        " CPU-s/min by round: sip2rtmp 1.88, 1.10, 1.24; ffmpeg baseline 3.82, 3.35, 3.60."
        " The table and the lines above are each side's median round."
    )
    assert "1.24 CPU-s/min (32% of baseline)" in block
    assert "rounds" not in results_markdown(median, ffmpeg, 60.0, CASES["audio"])


@pytest.mark.parametrize("rounds", ["0", "-1", "two"])
def test_a_count_of_rounds_below_one_is_refused_before_any_call(
    rounds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ended:
        parse_args(["--rounds", rounds])
    assert ended.value.code == 2
    assert "whole number of rounds" in capsys.readouterr().err
    assert parse_args(["--rounds", "3"]).rounds == 3


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


def test_a_results_block_of_another_benchmark_is_its_own(tmp_path: Path) -> None:
    audio_start, audio_end = markers("audio")
    document = tmp_path / "performance.md"
    document.write_text(f"# Performance\n\n{audio_start}\naudio\n{audio_end}\n")
    write_results(document, "load figures", "load", benchmark="serve-benchmark")
    write_results(document, "new load figures", "load", benchmark="serve-benchmark")
    load_start, load_end = markers("load", "serve-benchmark")
    assert load_start == "<!-- serve-benchmark load results: start -->"
    assert document.read_text() == (
        f"# Performance\n\n{audio_start}\naudio\n{audio_end}\n\n"
        f"{load_start}\nnew load figures\n{load_end}\n"
    )


def test_the_start_up_table_sets_the_stacks_floor_beside_the_command() -> None:
    runs = [Startup(0.117, cpu) for cpu in (0.10, 0.11, 0.10)]
    floor = [Startup(0.070, cpu) for cpu in (0.09, 0.10, 0.09)]
    table = startup_markdown(runs, [], floor)
    assert "| start-up CPU at most 0.2 s | 0.100 CPU-s | 0.100-0.110 s | met |" in table
    assert "| exec to first REGISTER (wall) | 117 ms | 117-117 ms | |" in table
    floor_row = "| the stack alone: Python, asyncio, PyAV and numpy imported | 0.090 CPU-s | "
    assert f"{floor_row}0.090-0.100 s | |" in table


def test_the_stacks_floor_is_read_once_its_imports_are_done() -> None:
    """A real interpreter: it loaded PyAV and numpy, which take more than its bare start."""
    floor = measure_stack_floor()
    assert 0.0 < floor.wall_s < 10.0
    assert floor.cpu_s >= 0.02


def test_the_wakeup_table_gives_each_rates_cost_a_minute_and_a_wakeup() -> None:
    rates = [Rate(12.5, [0.12, 0.15, 0.09]), Rate(50.0, [0.18])]
    table = wakeup_markdown(rates, 20.0)
    assert "3 runs of 20 s a rate." in table
    assert "| 12.5 | 0.120 | 0.090-0.150 | 160 µs |" in table
    assert "| 50 | 0.180 | 0.180-0.180 | 60 µs |" in table


def test_an_idle_loop_woken_more_often_ends_on_time_and_is_measured() -> None:
    """The idle loop ends after its wake-ups: 25 in half a second, not 25 seconds."""
    assert 0.0 < run_cpu_s(50.0, 0.5) < 5.0


def _frames(start: float, count: int) -> list[float]:
    """Audio timestamps as FLV keeps them: one AAC frame apart, in whole milliseconds."""
    return [round(start + i * AAC_FRAME_S, 3) for i in range(count)]


def test_an_audio_gap_is_a_step_longer_than_one_frame_beyond_flv_rounding() -> None:
    assert audio_gaps(_frames(0.0, 3000)) == []
    dts = [*_frames(0.0, 100), *_frames(100 * AAC_FRAME_S + 0.060, 100)]
    gaps = audio_gaps(dts)
    assert len(gaps) == 1
    at, missing = gaps[0]
    assert at == dts[99]
    assert abs(missing - 0.060) <= 0.001
    one_frame_lost = [*_frames(0.0, 10), *_frames(11 * AAC_FRAME_S, 10)]
    (_, missing_frame), *more = audio_gaps(one_frame_lost)
    assert not more
    assert abs(missing_frame - AAC_FRAME_S) <= 0.001


def test_a_dropout_is_a_stretch_of_the_hold_without_the_tone() -> None:
    rate = 48000
    seconds = np.arange(10 * rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32)
    assert audio_dropouts(tone, rate, (1.0, 9.0)) == []
    tone[int(4.0 * rate) : int(4.04 * rate)] = 0.0  # two 20 ms packets sent as silence
    tone[int(0.5 * rate) : int(0.6 * rate)] = 0.0  # before the hold: not counted
    (at, length), *more = audio_dropouts(tone, rate, (1.0, 9.0))
    assert not more
    assert abs(at - 4.0) <= 0.005
    assert abs(length - 0.040) <= 0.005
    assert audio_dropouts(tone, rate, (0.0, 0.004)) == []


def test_rtp_counters_of_the_hold_are_the_growth_between_two_stats() -> None:
    before = {"duration": 20.0, "rtp": {"received": 1000, "lost": 2, "late": 1}}
    after = {"rtp": {"received": 4000, "lost": 5, "late": 1, "timeline_resyncs": 2}}
    grown = RtpCounters.from_stats(after) - RtpCounters.from_stats(before)
    assert grown == RtpCounters(received=3000, lost=3, late=0, resyncs=2)
    assert RtpCounters.from_stats(None) == RtpCounters()
    assert grown + grown == RtpCounters(6000, 6, 0, 4)


def _call(
    index: int, *, late: int = 0, gaps: list[tuple[float, float]] | None = None
) -> CallFigures:
    return CallFigures(
        call_id=f"bench-{index:03d}",
        callee="tone",
        status="FINISH",
        reason="hangup",
        held=True,
        rtp_hold=RtpCounters(received=3000, late=late),
        rtp_total=RtpCounters(received=3500, late=late),
        recorded_s=95.0,
        gaps=gaps or [],
        hold_span=(20.0, 80.0),
    )


def _load(calls: list[CallFigures], busy: float = 0.6) -> LoadRun:
    """A load held 60 s; its workers used 1.2 CPU-s each, as a steady audio call does."""
    return LoadRun(
        calls=len(calls),
        hold_s=60.0,
        ramp_s=len(calls) / 1.0,
        figures=calls,
        workers=len(calls),
        worker_cpu_s=1.2 * len(calls),
        server_cpu_s=0.3,
        lab_cpu_s=6.0,
        machine_busy=busy,
        machine_cpu_s=busy * 120.0,
        rss_kb=90 * 1024 * len(calls),
        pss_kb=60 * 1024 * len(calls),
        lifetime_worker_cpu_s=2.5 * len(calls),
    )


def test_only_gaps_inside_the_hold_count_against_it() -> None:
    call = _call(0, gaps=[(3.0, 0.2), (50.0, 0.04), (90.0, 0.5)])
    assert call.hold_gaps == [(50.0, 0.04)]
    assert _load([call, _call(1)]).hold_gaps == 1


def test_the_smallest_load_that_misses_the_goal_is_where_it_saturates() -> None:
    clean = _load([_call(i) for i in range(10)])
    late = _load([_call(i, late=3 if i == 7 else 0) for i in range(25)])
    busy = _load([_call(i) for i in range(50)], busy=0.97)
    assert saturation([busy, late, clean]) == (
        "Saturates at 25 calls: 3 late and 0 lost RTP packets."
    )
    assert saturation([clean, busy]) == "Saturates at 50 calls: both CPUs 97% busy."
    dropped = _load([_call(i) for i in range(10)])
    dropped.figures[4].held = False
    dropped.figures[5].recorded_s = 0.0
    assert dropped.problems() == [
        "1 of 10 calls not up for the hold",
        "1 of 10 calls without a recording",
    ]
    assert saturation([clean]) == (
        "No saturation up to 10 calls: every call held, nothing late, lost or missing."
    )


def test_a_load_row_gives_cost_per_call_and_what_the_streams_show(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serve_report, "machine", lambda: {"CPU": "test CPU"})
    calls = [_call(i, gaps=[(30.0, 0.1)] if i < 2 else None) for i in range(10)]
    calls[3].dropouts = [(41.0, 0.06)]
    block = load_markdown([_load(calls)], ["tone", "opus"]).splitlines()
    assert "- CPU: test CPU" in block
    row = next(line for line in block if line.startswith("| 10 |"))
    assert row == (
        "| 10 | 10 | 1.20 CPU-s/min (2.0% of a core) | 0.30 CPU-s/min | 6.0 CPU-s/min | 60%"
        " | 900 MB (600 MB PSS) | 0 / 0 | 0 / 0 | 2 in 2 recordings | 1 in 1 recordings, 60 ms |"
    )
    assert "Saturates at 10 calls: 2 AAC gaps; 1 audio dropouts." in block
    assert "  - audio dropouts in the hold, longest first: bench-003 60 ms at 41.0 s." in block
    assert any("bench-001 100 ms at 30.0 s" in line for line in block)
    assert "  - 10 recordings, their audio 95.0-95.0 s long." in block
    # 72 CPU-s busy in the hold: 12 the workers', 0.3 the server's, 6 the lab's.
    assert (
        "  - the rest of the machine (the benchmark itself, other work): 53.7 CPU-s/min"
        " in the hold." in block
    )
    quiet = _load(calls, busy=0.16)  # 19.2 CPU-s busy: 0.9 more than the processes measured
    assert (
        "  - the rest of the machine (the benchmark itself, other work): nothing measurable"
        " in the hold." in load_markdown([quiet], ["tone"]).splitlines()
    )


def test_process_probes_read_this_machine() -> None:
    rss, pss = memory_kb(os.getpid())
    assert rss >= pss > 0
    assert abs(rss_kb(os.getpid()) - rss) <= rss // 10  # two readings of one counter
    busy, total = machine_cpu_s()
    assert 0 < busy < total
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert child.pid in children(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert child.pid not in children(os.getpid())


def test_a_watched_process_peaks_at_its_own_rss_not_at_the_benchmarks() -> None:
    """Linux hands a child's ``ru_maxrss`` the high-water mark of the memory it was forked
    with: after a benchmark had read a large capture, every later run seemed to peak there."""
    ballast = b"\x01" * (256 << 20)  # written, so resident: this process's RSS passes 256 MB
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    usage = Watched(child).reap(timeout=10)
    assert len(ballast) and 0 < usage.max_rss_kb < 64 << 10, usage.max_rss_kb


def test_a_call_through_serve_gets_its_own_whole_worker_row_against_the_same_baseline() -> None:
    ours, ffmpeg = _pair("H264/0")
    served = Served("sip2rtmp serve", 60.0, 1.30, 88_000, 0.23, "max duration reached")
    rows = {row[0]: row for row in verdicts(ours, ffmpeg, served)}
    row = rows["CPU at most 100% of the baseline (whole worker, the call through `sip2rtmp serve`)"]
    assert row[1:] == ("1.30 CPU-s/min (34% of baseline)", "3.82 CPU-s/min", "met")
    assert list(rows)[:3] == [
        "CPU at most 100% of the baseline (whole process)",
        row[0],
        "CPU at most 100% of the baseline (steady call)",
    ]
    assert not any("serve" in row[0] for row in verdicts(ours, ffmpeg))
    lines = details(ours, ffmpeg, served=served)
    assert any(line.startswith("- sip2rtmp serve") and "1.30 CPU-s over the worker" in line
               for line in lines)  # fmt: skip
