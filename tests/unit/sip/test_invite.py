"""The INVITE dialog usage on its own: its states, its ring and CANCEL timers, and the failure
fact it reports for each way an attempt ends, driven through the shared context."""

from __future__ import annotations

import pytest

from sip2rtmp.outcomes import Rejected, RingTimeout, Unreachable
from sip2rtmp.sip.context import AgentContext
from sip2rtmp.sip.events import CallAnswered, CallAttemptFailed, CallEnded, CallProgress
from sip2rtmp.sip.invite import InviteUsage
from sip2rtmp.sip.message import Request
from tests.unit.sip.exchange import ANSWER, OFFER, deliver, drain, happenings, make_context, reply

CONTACT = [("Contact", "<sip:tone@192.0.2.20:5070>")]


def calling(ring_timeout: float | None = 30.0) -> tuple[InviteUsage, AgentContext, Request]:
    """A usage whose INVITE went out at t=0, and the context it runs on."""
    context = make_context()
    usage = InviteUsage(context)
    usage.invite(0.0, "tone", OFFER, ring_timeout)
    [invite] = drain(context)
    return usage, context, invite


def state(usage: InviteUsage) -> str | None:
    return None if usage.call is None else usage.call.state


def test_calling_proceeding_confirmed_terminating_and_gone() -> None:
    usage, context, invite = calling()
    assert state(usage) == "calling" and usage.get_timer() == 30.0
    deliver(context, reply(invite, 180, "Ringing", to_tag="c"), 0.5)
    assert state(usage) == "proceeding" and usage.get_timer() == 30.0
    deliver(context, reply(invite, 200, "OK", CONTACT, to_tag="c", body=ANSWER), 2.0)
    assert state(usage) == "confirmed"
    assert usage.get_timer() is None, "answered: no ring timeout, no session timer asked for"
    [ack] = drain(context)
    assert ack.method == "ACK"
    assert happenings(context) == [CallProgress(180, "Ringing", None), CallAnswered(ANSWER)]
    usage.bye(5.0)
    [bye] = drain(context)
    assert state(usage) == "terminating"
    deliver(context, reply(bye, 200, "OK"), 5.1)
    assert state(usage) is None
    assert happenings(context) == [CallEnded(by_remote=False, reason="hangup")]


def test_the_ring_timeout_cancels_and_reports_how_long_it_rang() -> None:
    usage, context, invite = calling(ring_timeout=12.0)
    deliver(context, reply(invite, 180, "Ringing", to_tag="c"), 0.3)
    usage.handle_timer(12.04)
    [cancel] = drain(context)
    assert cancel.method == "CANCEL"
    assert usage.get_timer() == pytest.approx(12.04 + 32.0), "now the wait for the 487"
    deliver(context, reply(invite, 487, "Request Terminated", to_tag="c"), 12.2)
    assert happenings(context)[-1] == CallAttemptFailed(RingTimeout(12.0))


def test_a_cancel_keeps_the_outcome_it_was_given() -> None:
    usage, context, invite = calling()
    deliver(context, reply(invite, 183, "Session Progress", to_tag="c"), 0.3)
    usage.cancel(1.0, RingTimeout(1.0))
    usage.cancel(1.5, Unreachable("ignored"))  # the first reason stands
    assert [request.method for request in drain(context)] == ["CANCEL"]
    deliver(context, reply(invite, 487, "Request Terminated", to_tag="c"), 1.6)
    assert happenings(context)[-1] == CallAttemptFailed(RingTimeout(1.0))


def test_an_attempt_cancelled_before_any_provisional_ends_after_64_t1_without_one() -> None:
    """No CANCEL may go out before a provisional response (RFC 3261 §9.1); if none ever
    comes the attempt still ends, 64*T1 later, with the 487 a CANCEL would have brought."""
    usage, context, _ = calling(ring_timeout=None)
    usage.cancel(2.0)
    assert drain(context) == []
    assert usage.get_timer() == pytest.approx(34.0)
    usage.handle_timer(34.0)
    assert happenings(context) == [
        CallAttemptFailed(Rejected("INVITE", 487, "Request Terminated", "lab.test"))
    ]
    assert state(usage) is None and usage.get_timer() is None


def test_a_rejection_after_ringing_carries_rang_and_elapsed() -> None:
    _, context, invite = calling()
    deliver(context, reply(invite, 180, "Ringing", to_tag="c"), 1.0)
    deliver(context, reply(invite, 486, "Busy Here", to_tag="c"), 7.25)
    outcome = Rejected("INVITE", 486, "Busy Here", "lab.test", rang=True, elapsed=7.25)
    assert happenings(context)[-1] == CallAttemptFailed(outcome)
    assert outcome.busy


def test_early_progress_without_ringing_does_not_count_as_rang() -> None:
    _, context, invite = calling()
    deliver(context, reply(invite, 100, "Trying"), 0.1)
    deliver(context, reply(invite, 404, "Not Found", to_tag="c"), 0.4)
    failed = happenings(context)[-1]
    assert failed == CallAttemptFailed(
        Rejected("INVITE", 404, "Not Found", "lab.test", rang=False, elapsed=0.4)
    )
