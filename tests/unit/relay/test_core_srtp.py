"""The relay core's SRTP decisions (RFC 4568, RFC 3711): what `--srtp` puts in the offer, the
one retry with RTP/SAVP that `optional` makes after a refusal, and the suite the answer
agreed on in the ESTABLISHED event."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sip2rtmp.config import SrtpMode
from sip2rtmp.outcomes import Rejected
from sip2rtmp.relay import actions
from sip2rtmp.relay.core import RelayCore, RelayPlan
from sip2rtmp.relay.events import Established, Failed
from sip2rtmp.sip import events as sip
from sip2rtmp.sip.sdes import CryptoAttribute
from sip2rtmp.sip.sdp import SessionDescription
from tests.unit.relay.test_core import AUDIO_ANSWER, Run, settings
from tests.unit.relay.test_core_rules import calling

PEER_KEY = bytes(range(30))


def run_with(mode: SrtpMode) -> Run:
    run = Run(RelayCore(replace(settings(register=False), srtp=mode), RelayPlan(1)))
    run.core.start(run.now)
    return run


def crypto_lines(offer: actions.Invite) -> dict[str, list[CryptoAttribute]]:
    """Each m-line's proto and crypto attributes, by media kind."""
    session = SessionDescription.parse(offer.sdp.decode())
    return {
        f"{m.kind} {m.proto}": [CryptoAttribute.parse(v) for v in m.values("crypto")]
        for m in session.media
    }


def refused(run: Run, status: int) -> None:
    outcome = Rejected("INVITE", status, "Not Acceptable Here", "127.0.0.1")
    run.sip(sip.CallAttemptFailed(outcome))


def answered_with_srtp(run: Run, offer: actions.Invite) -> None:
    """The callee accepts our first audio crypto line and names its own key."""
    ours = crypto_lines(offer)
    audio = next(lines for name, lines in ours.items() if name.startswith("audio"))
    line = CryptoAttribute(audio[0].tag, audio[0].suite, PEER_KEY)
    answer = AUDIO_ANSWER.replace("RTP/AVP", "RTP/SAVP").replace(
        "a=sendrecv", f"a=crypto:{line.serialize()}\r\na=sendrecv"
    )
    run.sip(sip.CallAnswered(answer.encode()))


def test_off_offers_plain_rtp_without_keys() -> None:
    invite = calling(run_with("off"), video_port=30002)
    assert crypto_lines(invite) == {"audio RTP/AVP": [], "video RTP/AVP": []}


@pytest.mark.parametrize(("mode", "profile"), [("required", "RTP/SAVP"), ("optional", "RTP/AVP")])
def test_srtp_offers_keys_of_its_own_on_every_stream(mode: SrtpMode, profile: str) -> None:
    """Required offers RTP/SAVP; optional RTP/AVP with a=crypto, which plain peers ignore.
    Each stream has its own keys, none shared between lines."""
    lines = crypto_lines(calling(run_with(mode), video_port=30002))
    assert set(lines) == {f"audio {profile}", f"video {profile}"}
    keys = [line.key for stream in lines.values() for line in stream]
    assert all(len(stream) >= 2 for stream in lines.values())
    assert len(set(keys)) == len(keys)
    assert lines[f"audio {profile}"][0].suite == "AES_CM_128_HMAC_SHA1_80"


@pytest.mark.parametrize("status", [488, 406, 415])
def test_optional_offers_savp_once_after_a_refusal(status: int) -> None:
    """An SRTP-only callee refuses RTP/AVP with a=crypto: the same keys go again as
    RTP/SAVP; a second refusal ends the run with that refusal."""
    run = run_with("optional")
    first = calling(run)
    refused(run, status)
    taken, events = run.take()
    again = [a for a in taken if isinstance(a, actions.Invite)]
    assert len(again) == 1 and not [e for e in events if isinstance(e, Failed)]
    assert list(crypto_lines(again[0])) == ["audio RTP/SAVP"]
    assert crypto_lines(again[0])["audio RTP/SAVP"] == crypto_lines(first)["audio RTP/AVP"]
    refused(run, status)
    failed = [e for e in run.take()[1] if isinstance(e, Failed)]
    assert len(failed) == 1 and isinstance(failed[0].outcome, Rejected)
    assert failed[0].outcome.status == status


@pytest.mark.parametrize("mode", ["off", "required"])
def test_other_modes_do_not_retry_a_refusal(mode: SrtpMode) -> None:
    run = run_with(mode)
    calling(run)
    refused(run, 488)
    taken, events = run.take()
    assert not [a for a in taken if isinstance(a, actions.Invite)]
    assert [type(e) for e in events if isinstance(e, Failed)] == [Failed]


def test_optional_does_not_retry_other_failures() -> None:
    run = run_with("optional")
    calling(run)
    refused(run, 486)
    assert not [a for a in run.take()[0] if isinstance(a, actions.Invite)]


def test_established_names_the_suite_the_answer_took() -> None:
    run = run_with("required")
    answered_with_srtp(run, calling(run))
    established = [e for e in run.take()[1] if isinstance(e, Established)]
    assert [e.srtp for e in established] == ["AES_CM_128_HMAC_SHA1_80"]


def test_established_says_plain_rtp_when_the_answer_has_no_keys() -> None:
    run = run_with("optional")
    calling(run)
    run.sip(sip.CallAnswered(AUDIO_ANSWER.encode()))
    established = [e for e in run.take()[1] if isinstance(e, Established)]
    assert [e.srtp for e in established] == [None]
