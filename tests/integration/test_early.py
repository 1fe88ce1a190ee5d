"""What happens before the answer and who the caller says it is, measured on real calls.

Each test runs `sip2rtmp call --no-register` against a scripted callee on loopback
(tests/support/early_peer.py) and reads what happened from the far end's record of what it
received (INVITE headers, PRACKs, telephone-events, INFO) and from the recording (`--record`):
reliable provisional responses (RFC 3262), early media from a 183, caller identity (RFC 3325)
and a 403 after authentication, and RFC 4733 events at a clock other than the codec's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from sip2rtmp.lab.recording import decode_audio, tone_seconds
from sip2rtmp.sip.message import Request, parse_name_addr, parse_uri
from tests.integration.test_network_faults import (
    RATE,
    CallResult,
    assert_one_timeline,
    run_call,
)
from tests.support.early_peer import (
    ChallengingPeer,
    OpusEventPeer,
    ProgressPeer,
    RecordingPeer,
    TelephoneEvent,
)
from tests.support.sip_peer import PTIME

LOGIN = "relay"
PASSWORD = "s3cret-carrier"
WINDOW = 0.1
"""`tone_seconds` looks at 100 ms windows."""
REFUSED = "the server refused the call after authentication: caller ID or permissions (403)"


@pytest.fixture
def peers() -> Iterator[list[RecordingPeer]]:
    """Peers started by a test, stopped after it whatever happened."""
    started: list[RecordingPeer] = []
    yield started
    for peer in started:
        peer.stop()


def call(
    peer: RecordingPeer,
    peers: list[RecordingPeer],
    record: Path,
    *extra: str,
    max_duration: float = 4.0,
) -> CallResult:
    peer.start()
    peers.append(peer)
    return run_call(peer.uri, record, max_duration, extra=["--sip-login", LOGIN, *extra])


def explain(result: CallResult) -> str:
    return f"exit {result.returncode}, statuses {result.statuses()}\n{result.stderr[-2000:]}"


def only_invite(peer: RecordingPeer, result: CallResult) -> Request:
    invites = peer.received("INVITE")
    assert invites, f"no INVITE reached the peer; {explain(result)}"
    return invites[0]


def tones(
    record: Path, early_hz: float, answer_hz: float
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Per 100 ms window of the recording: is the early tone there, is the answer's?"""
    samples = decode_audio(record, RATE)
    return tone_seconds(samples, RATE, early_hz), tone_seconds(samples, RATE, answer_hz)


# RFC 3262: reliable provisional responses -------------------------------------------------


@pytest.mark.parametrize("answer_in_ok", [True, False], ids=["sdp-in-200", "no-sdp-in-200"])
def test_a_reliable_183_is_pracked_in_its_early_dialog(
    answer_in_ok: bool, peers: list[RecordingPeer], tmp_path: Path
) -> None:
    """RFC 3262 §4, §7.1-7.2: the INVITE says `Supported: 100rel`; the reliable 183 gets a
    PRACK with `RAck: 1 <INVITE CSeq> INVITE`, sent in the 183's early dialog (its Contact as
    Request-URI, its To tag, its Record-Route as Route); the peer's 200 OK to it lets the
    call be answered. Without --early-media the 183's tone stays out of the stream."""
    peer = ProgressPeer(answer_in_ok=answer_in_ok)
    record = tmp_path / "call.flv"
    result = call(peer, peers, record)
    invite = only_invite(peer, result)
    supported = [value.lower() for value in invite.headers.get_all("Supported")]
    assert "100rel" in supported, f"Supported in the INVITE: {supported}"
    pracks = peer.received("PRACK")
    assert pracks, (
        f"no PRACK for the reliable 183 ({peer.progress_retransmissions} retransmissions, "
        f"peer gave up: {peer.gave_up}); {explain(result)}"
    )
    prack = pracks[0]
    invite_cseq = invite.cseq[0]
    assert prack.uri == peer.contact_uri, "the PRACK goes to the 183's Contact"
    assert prack.call_id == invite.call_id
    assert prack.from_.tag == invite.from_.tag
    assert prack.to.tag == peer.tag, "the PRACK is in the early dialog of the 183"
    number, method = prack.cseq
    assert method == "PRACK" and number > invite_cseq, prack.headers.get("CSeq")
    assert " ".join((prack.headers.get("RAck") or "").split()) == f"1 {invite_cseq} INVITE"
    assert prack.headers.get_all("Route") == [f"<{peer.route_uri}>"]
    assert peer.prack_answered_at is not None, "the peer never took a PRACK as matching"

    assert result.returncode == 0, explain(result)
    statuses = result.statuses()
    assert "SESSION_PROGRESS" in statuses and "ESTABLISHED" in statuses, statuses
    assert statuses.index("SESSION_PROGRESS") < statuses.index("ESTABLISHED"), statuses
    assert peer.seen.ack_at is not None, "the 200 OK was never acknowledged"
    acks = peer.received("ACK")
    assert acks[0].uri == peer.contact_uri and acks[0].headers.get_all("Route") == [
        f"<{peer.route_uri}>"
    ]
    early, answered = tones(record, peer.early_hz, peer.answer_hz)
    assert answered.sum() * WINDOW >= 2.0, f"{answered.sum() * WINDOW:.1f} s of the answer tone"
    assert early.sum() <= 2, f"{early.sum() * WINDOW:.1f} s of early media without --early-media"


def test_a_lost_prack_is_retransmitted_and_the_repeated_183_not_pracked_again(
    peers: list[RecordingPeer], tmp_path: Path
) -> None:
    """PRACKs are lost for 1.2 s: the PRACK transaction retransmits (RFC 3261 §17.1.2: at
    0.5 s, then 1.5 s) while the 183 is retransmitted (RFC 3262 §3, at 0.5 s); a repeated
    183 with the same RSeq is not acknowledged by a new PRACK (RFC 3262 §4), so every PRACK
    is the same request."""
    peer = ProgressPeer(lose_pracks_for=1.2)
    result = call(peer, peers, tmp_path / "call.flv")
    pracks = peer.received("PRACK")
    assert len(pracks) >= 3, f"{len(pracks)} PRACK(s) reached the peer; {explain(result)}"
    assert peer.progress_retransmissions >= 1, "the 183 was never retransmitted"
    assert {p.cseq for p in pracks} == {pracks[0].cseq}, [p.cseq for p in pracks]
    assert {p.top_via.branch for p in pracks} == {pracks[0].top_via.branch}
    assert peer.prack_answered_at is not None
    assert result.returncode == 0, explain(result)
    assert "ESTABLISHED" in result.statuses()


# Early media ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reliable", "provisional", "status"),
    [
        (True, (183, "Session Progress"), "SESSION_PROGRESS"),
        (False, (183, "Session Progress"), "SESSION_PROGRESS"),
        (False, (180, "Ringing"), "RING_MEDIA"),
    ],
    ids=["183-100rel", "183", "180"],
)
def test_early_media_leads_the_stream_on_one_timeline(
    reliable: bool,
    provisional: tuple[int, str],
    status: str,
    peers: list[RecordingPeer],
    tmp_path: Path,
) -> None:
    """--early-media: the tone of a 183 (or 180) with SDP starts the stream, the answer's
    tone follows it on the same AAC timeline; the early part lasts as long as the peer played
    it (± 0.3 s) and no more than 0.3 s of neither tone lies between the two."""
    peer = ProgressPeer(reliable=reliable, provisional=provisional, answer_after=2.5)
    record = tmp_path / "early.flv"
    result = call(peer, peers, record, "--early-media", max_duration=5)
    assert result.returncode == 0, explain(result)
    assert peer.seen.ok_sent_at is not None, "the peer never answered"
    statuses = result.statuses()
    assert status in statuses and "ESTABLISHED" in statuses, statuses
    assert statuses.index(status) < statuses.index("ESTABLISHED"), statuses
    assert_one_timeline(record)
    early, answered = tones(record, peer.early_hz, peer.answer_hz)
    assert early.any(), "no early tone in the recording"
    assert answered.any(), "no answer tone in the recording"
    last_early = int(np.flatnonzero(early)[-1])
    first_answered = int(np.flatnonzero(answered)[0])
    assert last_early < first_answered, "the early tone is not before the answer's"
    played = peer.early_packets * PTIME
    heard = float(early.sum()) * WINDOW
    assert abs(heard - played) <= 0.3, f"early tone {heard:.1f} s, the peer played {played:.1f} s"
    between = (first_answered - last_early - 1) * WINDOW
    assert between <= 0.3, f"{between:.1f} s without either tone at the answer"
    after = answered[first_answered:]
    assert float(after.mean()) >= 0.9, f"the answer tone in only {after.mean():.0%} after it began"


# Caller identity and 403 ------------------------------------------------------------------

IDENTITY = ("--display-name", "Studio A", "--caller-id", "4930123")
ASSERTED = ("--asserted-identity", "sip:+4930123@carrier.test")
PAI, PPI = "P-Asserted-Identity", "P-Preferred-Identity"


@pytest.mark.parametrize(
    ("flags", "header", "absent"),
    [
        ((*IDENTITY, *ASSERTED, "--identity-header", "pai"), PAI, PPI),
        ((*IDENTITY, *ASSERTED), PPI, PAI),
    ],
    ids=["pai", "ppi-default"],
)
def test_the_invite_carries_the_identity_asked_for(
    flags: tuple[str, ...], header: str, absent: str, peers: list[RecordingPeer], tmp_path: Path
) -> None:
    """RFC 3261 §8.1.1.3: From has the display name and the caller ID as user part; RFC 3325
    §9.1/§9.2: the asserted identity in the header chosen, and only that one."""
    peer = RecordingPeer()
    result = call(peer, peers, tmp_path / "call.flv", *flags, max_duration=2)
    invite = only_invite(peer, result)
    sender = invite.from_
    assert sender.display_name == "Studio A", invite.headers.get("From")
    assert parse_uri(sender.uri).user == "4930123", invite.headers.get("From")
    identities = invite.headers.get_fields(header)
    assert len(identities) == 1, f"{header}: {identities}; {explain(result)}"
    assert parse_name_addr(identities[0], require_brackets=True).uri == (
        "sip:+4930123@carrier.test"
    ), identities[0]
    assert absent not in invite.headers
    assert result.returncode == 0, explain(result)


def test_without_identity_flags_from_is_the_login_and_nothing_is_asserted(
    peers: list[RecordingPeer], tmp_path: Path
) -> None:
    peer = RecordingPeer()
    result = call(peer, peers, tmp_path / "call.flv", max_duration=2)
    invite = only_invite(peer, result)
    assert parse_uri(invite.from_.uri).user == LOGIN
    assert invite.from_.display_name is None, invite.headers.get("From")
    assert PAI not in invite.headers and PPI not in invite.headers


@pytest.mark.parametrize(
    ("challenge", "flags", "code", "message"),
    [(True, IDENTITY, 12, REFUSED), (False, (), 3, "authentication failed (SIP 403)")],
    ids=["after-auth", "unauthenticated"],
)
def test_a_403_after_authentication_refuses_the_caller_not_the_password(
    challenge: bool,
    flags: tuple[str, ...],
    code: int,
    message: str,
    peers: list[RecordingPeer],
    tmp_path: Path,
) -> None:
    """A 403 to the INVITE that carried valid credentials is exit 12 with its own line; a
    403 to an INVITE that carried none stays an authentication failure (exit 3). The digest
    uses the login, whatever --caller-id says, and a 403 is not retried."""
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    peer = ChallengingPeer(PASSWORD, challenge=challenge)
    result = call(
        peer, peers, tmp_path / "call.flv", *flags, "--sip-password-file", str(password_file)
    )
    only_invite(peer, result)
    if challenge:
        assert peer.digests, f"no INVITE with credentials reached the peer; {explain(result)}"
        assert peer.digest_valid == [True], peer.digests
        assert peer.digests[0].get("username") == LOGIN
        assert len(peer.received("INVITE")) == 2, "the 403 was answered by another INVITE"
    else:
        assert peer.digests == []
    assert result.returncode == code, explain(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    final = result.events[-1]
    assert (final["status"], final["exitCode"]) == ("FAILED", code), final
    assert final["reason"] == message


# RFC 4733 at another clock ----------------------------------------------------------------


def key_presses(events: list[TelephoneEvent]) -> list[list[TelephoneEvent]]:
    """The packets of each key press, which share an RTP timestamp (RFC 4733 §2.5.1)."""
    presses: dict[int, list[TelephoneEvent]] = {}
    for event in events:
        presses.setdefault(event.timestamp, []).append(event)
    return list(presses.values())


def test_opus_with_only_telephone_event_8000_sends_rfc4733_events(
    peers: list[RecordingPeer], tmp_path: Path
) -> None:
    """An Opus answer whose only event format is `telephone-event/8000`: the digits go as RFC
    4733 events with that payload type (not the 48 kHz one offered), durations counted at
    8 kHz (RFC 4733 §2.3.5), and no SIP INFO."""
    peer = OpusEventPeer()
    result = call(peer, peers, tmp_path / "call.flv", "--dtmf", "12#", max_duration=4)
    assert peer.event_pt is not None and peer.opus_pt is not None, peer.seen.offer
    assert result.returncode == 0, explain(result)
    assert peer.received("INFO") == [], "DTMF went as SIP INFO"
    presses = key_presses(peer.events)
    assert [press[0].event for press in presses] == [1, 2, 11], peer.events
    for press in presses:
        assert press[0].marker, f"the first packet of event {press[0].event} has no marker"
        ends = [packet for packet in press if packet.end]
        assert ends, f"event {press[0].event} never ended"
        assert len({packet.duration for packet in ends}) == 1
        updates = [packet.duration for packet in press if not packet.end]
        assert updates == sorted(updates) and all(d < ends[0].duration for d in updates)
        # The first packet covers one packet time; the first end comes when the tone is over.
        wire = ends[0].at - press[0].at + PTIME
        counted = ends[0].duration / 8000
        assert abs(counted - wire) <= 0.08, (
            f"event {press[0].event}: duration {ends[0].duration} is {counted * 1000:.0f} ms "
            f"at 8 kHz, the packets spanned {wire * 1000:.0f} ms"
        )
    assert peer.seen.payload_types <= {peer.opus_pt, peer.event_pt}, peer.seen.payload_types
    sent = [e for e in result.events if e["event"] == "dtmf" and e["direction"] == "sent"]
    assert [(e["digit"], e["method"]) for e in sent] == [(d, "rfc4733") for d in "12#"]


def test_an_answer_without_telephone_event_gets_the_digits_as_sip_info(
    peers: list[RecordingPeer], tmp_path: Path
) -> None:
    """The fallback: no telephone-event in the answer, so each digit is an INFO with an
    `application/dtmf-relay` body, and no RFC 4733 packet is sent."""
    peer = OpusEventPeer(with_events=False)
    result = call(peer, peers, tmp_path / "call.flv", "--dtmf", "12#", max_duration=4)
    assert result.returncode == 0, explain(result)
    infos = peer.received("INFO")
    signals = [re.search(rb"Signal=(\S+)", info.body) for info in infos]
    assert [match.group(1) for match in signals if match] == [b"1", b"2", b"#"], infos
    assert {info.headers.get("Content-Type") for info in infos} == {"application/dtmf-relay"}
    assert peer.events == [], "no RFC 4733 packet without a negotiated event format"
    sent = [e for e in result.events if e["event"] == "dtmf" and e["direction"] == "sent"]
    assert [(e["digit"], e["method"]) for e in sent] == [(d, "info") for d in "12#"]
