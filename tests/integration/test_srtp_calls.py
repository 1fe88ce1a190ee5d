"""SDES-SRTP against the lab's `srtp` callee, which answers anything but RTP/SAVP with 488
(docs/lab.md): measured from nginx's recording, from the callee's own log, and from what
crossed the loopback interface (the RTP payloads, the SDP's keys), never from our own logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.lab import Lab, LabAccount, account
from tests.integration.test_relay_media import assert_tone, recording_of
from tests.support.pcap import CaptureUnavailable, UdpCapture, read_udp
from tests.support.rtp_audio import RtpPacket, audio_stream, rtp_packets, silent_share, tonal_share
from tests.support.sip_wire import SipCapture, WireMessage, read_sip

pytestmark = pytest.mark.lab

SRTP_CALLEE = account("srtp")
PLAIN_CALLEE = account("tone")
SUITES = {"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"}
"""What `--srtp` offers (RFC 4568 §6.2, RFC 7714 §14.2); the answer picks one."""
NOISE_SHARE = 0.02
"""Ciphertext decoded as audio: at most this share of packets may pass for the tone or for
silence (measured: none for the tone, under 1 % for silence when decoded as Opus), where the
same measure finds them in over 90 % of a plain call's packets."""
SIP_FAILURE_EXIT = 10
"""docs/exit-codes.md: the call failed for another SIP reason (a 488 among them)."""
INLINE_KEY = re.compile(r"inline:([A-Za-z0-9+/]+={0,2})")
PACKET_INTERVAL = 0.02


@contextmanager
def rtp_capture(directory: Path, callee: LabAccount) -> Iterator[Path]:
    """Capture the RTP and RTCP of `callee`'s media ports, both directions, into a pcap file."""
    assert callee.rtp_ports is not None
    low, high = callee.rtp_ports
    path = directory / f"rtp-{callee.user}.pcap"
    try:
        capture = UdpCapture.start(path, f"udp portrange {low}-{high}")
    except CaptureUnavailable as exc:
        pytest.fail(f"cannot capture RTP on loopback: {exc}", pytrace=False)
    try:
        yield path
    finally:
        capture.stop()


def directions(path: Path, callee: LabAccount) -> tuple[list[RtpPacket], list[RtpPacket]]:
    """The captured audio stream from the callee and the one toward it."""
    assert callee.rtp_ports is not None
    low, high = callee.rtp_ports
    packets = rtp_packets(read_udp(path))
    from_callee = audio_stream(p for p in packets if low <= p.source_port <= high)
    to_callee = audio_stream(p for p in packets if low <= p.destination_port <= high)
    return from_callee, to_callee


def keys_in(messages: list[WireMessage]) -> set[str]:
    """The SDES inline keys (base64 master key || salt) of the messages' SDP, as tshark read it."""
    return {
        key
        for message in messages
        for values in message.fields.values()
        for key in INLINE_KEY.findall(" ".join(values))
    }


def established(run: Any) -> dict[str, Any]:
    return next(e for e in run.events if e.get("status") == "ESTABLISHED")


def test_required_srtp_call_records_the_tone_and_the_wire_carries_only_noise(
    start_call: Any, lab: Lab, tmp_path: Path
) -> None:
    """`--srtp required` to the SRTP-only callee: the call is answered and streamed (the tone
    in >= 90 % of 100 ms windows); both directions' payloads on the wire decode, as every codec
    the relay speaks, to neither the callee's tone nor our silence; our RFC 4733 DTMF, also
    encrypted, reaches the callee; and neither master key of the SDP (ours in the INVITE, the
    callee's in the 200) appears in the events, stderr or the `-vv` log file."""
    hz = SRTP_CALLEE.tone_hz or 0
    log_before = lab.callee_log(SRTP_CALLEE.user)
    sip = SipCapture(tmp_path)
    try:
        with rtp_capture(tmp_path, SRTP_CALLEE) as pcap:
            call = start_call(
                SRTP_CALLEE.user, "--no-video", "--srtp", "required", "-vv",
                "--dtmf", "wait:1 5 wait:0.5 9#", "--max-duration", "15",
            )  # fmt: skip
            run = call.wait(60)
    finally:
        sip.stop()
    assert run.returncode == 0, run.stderr

    suite = established(run).get("srtp")
    assert suite in SUITES, f"the ESTABLISHED event names no SRTP suite: {established(run)}"
    assert_tone(recording_of(lab, run.stream_key), hz, share=0.9)

    from_callee, to_callee = directions(pcap, SRTP_CALLEE)
    expected = 0.8 * run.last("status")["duration"] / PACKET_INTERVAL
    assert len(from_callee) >= expected and len(to_callee) >= expected, (
        f"captured {len(from_callee)} packets from the callee and {len(to_callee)} toward it"
    )
    heard = tonal_share(from_callee, hz)
    assert max(heard.values()) <= NOISE_SHARE, f"the callee's tone is audible on the wire: {heard}"
    silent = silent_share(to_callee)
    assert silent <= NOISE_SHARE, f"{silent:.0%} of our packets decode as silence"

    received = re.findall(
        r"received event: '(.)' \(end=1\)", lab.callee_log(SRTP_CALLEE.user)[len(log_before) :]
    )
    # Other runs may call the shared callee meanwhile: ours must be among what it decrypted.
    decrypted = iter(received)
    assert all(digit in decrypted for digit in "59#"), f"the callee decrypted: {received}"

    # Our dialog is the one whose Call-ID the -vv log shows; the capture holds other runs' too.
    wire = [m for m in read_sip(sip.pcap) if m.call_id and m.call_id in run.log]
    offers = [m for m in wire if m.direction == "sent" and m.method == "INVITE"]
    answers = [m for m in wire if m.direction == "received" and m.cseq[1] == "INVITE"]
    ours, theirs = keys_in(offers), keys_in(answers)
    assert ours and theirs, "the SDP on the wire carries our key and the callee's"
    assert "inline:***" in run.log, "the -vv log shows the SDP, keys masked"
    leaked = [key for key in ours | theirs if key in run.everything]
    assert not leaked, f"SRTP master keys in the output or the log: {leaked}"
    assert re.search(r"clear text over SIP/udp.*--sip-transport tls", run.stderr, re.I), (
        f"no warning that SDES keys travel in clear over UDP: {run.stderr}"
    )


def test_optional_srtp_reaches_the_srtp_only_callee(start_call: Any, lab: Lab) -> None:
    """`--srtp optional` to a callee that demands SRTP: answered, encrypted, the tone streamed."""
    run = start_call(
        SRTP_CALLEE.user, "--no-video", "--srtp", "optional", "--max-duration", "5"
    ).wait(40)
    assert run.returncode == 0, run.stderr
    assert established(run).get("srtp") in SUITES, established(run)
    assert_tone(recording_of(lab, run.stream_key), SRTP_CALLEE.tone_hz or 0, share=0.9)


def test_optional_srtp_to_a_plain_callee_is_plain_rtp_that_carries_audio(
    start_call: Any, lab: Lab, tmp_path: Path
) -> None:
    """`--srtp optional` to a callee without SRTP: the call is plain RTP (the event says so)
    and streams the tone. Its capture is the control for the measure above: unencrypted, the
    callee's payloads decode to its tone and ours to silence."""
    hz = PLAIN_CALLEE.tone_hz or 0
    with rtp_capture(tmp_path, PLAIN_CALLEE) as pcap:
        run = start_call(
            PLAIN_CALLEE.user, "--no-video", "--srtp", "optional", "--max-duration", "5"
        ).wait(40)
    assert run.returncode == 0, run.stderr
    assert "srtp" in established(run) and established(run)["srtp"] is None, established(run)
    assert_tone(recording_of(lab, run.stream_key), hz, share=0.9)

    from_callee, to_callee = directions(pcap, PLAIN_CALLEE)
    heard = tonal_share(from_callee, hz)
    assert max(heard.values()) >= 0.9, f"the measure misses a plain tone: {heard}"
    silent = silent_share(to_callee)
    assert silent >= 0.9, f"the measure misses our plain silence: {silent:.0%}"


def test_plain_offer_to_the_srtp_only_callee_fails_with_the_hint(start_call: Any) -> None:
    """`--srtp off`: the callee's 488 ends the run with the SIP failure's exit code and one line
    that says encryption may be what is missing."""
    run = start_call(SRTP_CALLEE.user, "--no-video", "--srtp", "off", "--max-duration", "5").wait(
        30
    )
    assert run.returncode == SIP_FAILURE_EXIT, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, f"not one line on stderr: {run.stderr}"
    assert "488" in lines[0] and "--srtp required" in lines[0], lines[0]
    assert "Traceback" not in run.everything
