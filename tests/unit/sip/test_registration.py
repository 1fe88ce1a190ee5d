"""The registration state machine on its own (RFC 3261 §10): its states, its refresh timer and
the facts it reports, driven through the shared context with a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sip2rtmp.outcomes import Rejected, Unanswered
from sip2rtmp.sip.context import AgentContext
from sip2rtmp.sip.events import (
    Registered,
    RegistrationFailed,
    RegistrationRetrying,
    Unregistered,
)
from sip2rtmp.sip.message import Request
from sip2rtmp.sip.registration import Registration
from tests.unit.sip.exchange import CONFIG, deliver, drain, happenings, make_context, reply


def state(machine: Registration) -> str:
    return machine.state


def registered(expires: str = "120") -> tuple[Registration, AgentContext, Request]:
    """A machine whose first REGISTER was answered 200 at t=1 granting `expires` seconds."""
    context = make_context()
    machine = Registration(context)
    machine.register(0.0)
    [request] = drain(context)
    deliver(context, reply(request, 200, "OK", [("Expires", expires)], to_tag="r"), 1.0)
    assert happenings(context) == [Registered(int(expires))]
    return machine, context, request


def test_states_and_the_refresh_at_half_the_granted_interval() -> None:
    context = make_context()
    machine = Registration(context)
    assert (state(machine), machine.get_timer()) == ("idle", None)
    machine.register(0.0)
    [first] = drain(context)
    assert state(machine) == "registering" and machine.registered
    assert machine.get_timer() is None, "no refresh before the registrar answers"
    deliver(context, reply(first, 200, "OK", [("Expires", "120")], to_tag="r"), 1.0)
    assert state(machine) == "registered"
    assert happenings(context) == [Registered(120)]
    assert machine.get_timer() == pytest.approx(61.0)
    machine.handle_timer(60.9)
    assert drain(context) == []
    machine.handle_timer(61.0)
    [refresh] = drain(context)
    assert refresh.cseq == (2, "REGISTER") and refresh.call_id == first.call_id
    assert refresh.headers.get("Expires") == "600"
    assert machine.get_timer() is None, "the refresh timer is spent until the answer"
    deliver(context, reply(refresh, 200, "OK", [("Expires", "300")], to_tag="r"), 62.0)
    assert happenings(context) == [Registered(300)]
    assert machine.get_timer() == pytest.approx(212.0)


def test_a_failed_refresh_is_retried_with_a_doubling_delay_until_it_succeeds() -> None:
    machine, context, _ = registered()
    machine.handle_timer(61.0)
    [refresh] = drain(context)
    refused = Rejected("REGISTER", 403, "Forbidden", "lab.test")
    deliver(context, reply(refresh, 403, "Forbidden", to_tag="r"), 61.1)
    assert happenings(context) == [RegistrationRetrying(refused, 1.0)]
    assert (state(machine), machine.registered, machine.get_timer()) == ("registered", True, 62.1)
    machine.handle_timer(62.1)
    [again] = drain(context)
    deliver(context, reply(again, 403, "Forbidden", to_tag="r"), 62.2)
    assert happenings(context) == [RegistrationRetrying(refused, 2.0)]
    assert machine.get_timer() == 64.2
    machine.handle_timer(64.2)
    [third] = drain(context)
    assert third.cseq[0] == again.cseq[0] + 1 and third.call_id == refresh.call_id
    deliver(context, reply(third, 200, "OK", [("Expires", "120")], to_tag="r"), 64.3)
    assert happenings(context) == [Registered(120)]
    assert machine.get_timer() == 124.3, "after a success the refresh is due at half again"


def test_a_first_register_that_fails_leaves_the_machine_idle() -> None:
    context = make_context()
    machine = Registration(context)
    machine.register(0.0)
    [first] = drain(context)
    deliver(context, reply(first, 403, "Forbidden", to_tag="r"), 0.1)
    assert happenings(context) == [
        RegistrationFailed(Rejected("REGISTER", 403, "Forbidden", "lab.test"))
    ]
    assert (state(machine), machine.registered, machine.get_timer()) == ("idle", False, None)


def test_unregister_stops_the_refresh_and_outranks_a_refresh_in_flight() -> None:
    machine, context, first = registered()
    machine.handle_timer(61.0)
    [refresh] = drain(context)
    machine.unregister(61.5)
    [removal] = drain(context)
    assert removal.headers.get("Expires") == "0" and removal.cseq == (3, "REGISTER")
    assert state(machine) == "unregistering" and not machine.registered
    deliver(context, reply(refresh, 200, "OK", to_tag="r"), 61.6)
    assert happenings(context) == [], "the overtaken refresh decides nothing"
    assert machine.get_timer() is None
    deliver(context, reply(removal, 200, "OK", to_tag="r"), 61.7)
    assert happenings(context) == [Unregistered(ok=True)]
    assert (state(machine), machine.get_timer()) == ("idle", None)
    assert removal.call_id == first.call_id


def test_an_unanswered_unregister_reports_not_ok() -> None:
    machine, context, _ = registered()
    machine.unregister(10.0)
    drain(context)
    context.handle_client_timers(10.0 + 32.0)
    assert happenings(context) == [Unregistered(ok=False)]
    assert state(machine) == "idle"


def test_unregister_without_a_binding_reports_at_once_and_sends_nothing() -> None:
    context = make_context()
    machine = Registration(context)
    machine.unregister(0.0)
    assert drain(context) == []
    assert happenings(context) == [Unregistered(ok=True)]


def test_423_is_retried_with_the_registrars_minimum() -> None:
    context = make_context()
    machine = Registration(context)
    machine.register(0.0)
    [first] = drain(context)
    deliver(context, reply(first, 423, "Interval Too Brief", [("Min-Expires", "3600")]), 0.1)
    [second] = drain(context)
    assert second.headers.get("Expires") == "3600" and second.cseq == (2, "REGISTER")
    assert happenings(context) == []


def test_a_timeout_is_unanswered_at_the_configured_server() -> None:
    context = make_context(replace(CONFIG, outbound_proxy="proxy.lab.test"))
    machine = Registration(context)
    machine.register(0.0)
    drain(context)
    context.handle_client_timers(31.9)
    assert happenings(context) == []
    context.handle_client_timers(32.0)
    assert happenings(context) == [
        RegistrationFailed(Unanswered("REGISTER", "proxy.lab.test", 32.0))
    ]
    assert state(machine) == "idle"
