"""Transaction timers with a fake clock (RFC 3261 §17), beyond what the UA tests exercise."""

from __future__ import annotations

from sip2rtmp.sip.message import Headers, Request, Response
from sip2rtmp.sip.transaction import T4, ClientTransaction, ServerTransaction, State

ADDR = ("192.0.2.10", 5060)


def request(method: str, branch: str = "z9hG4bKabc") -> Request:
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP 192.0.2.10;branch={branch}")
    headers.add("From", "<sip:a@x>;tag=1")
    headers.add("To", "<sip:b@x>")
    headers.add("Call-ID", "c1")
    headers.add("CSeq", f"1 {method}")
    return Request(method, "sip:b@x", headers)


def response(req: Request, status: int) -> Response:
    headers = Headers([(n, v) for n, v in req.headers])
    headers.set("To", "<sip:b@x>;tag=2")
    return Response(status, "Whatever", headers)


def test_invite_client_completed_absorbs_retransmitted_failures_until_timer_d() -> None:
    invite = request("INVITE")
    tx = ClientTransaction(invite, ADDR, reliable=False, now=0.0)
    tx.outbox.clear()
    busy = response(invite, 486)
    assert tx.receive_response(busy, 1.0)
    [ack] = tx.outbox
    assert b"ACK sip:b@x SIP/2.0" in ack and b"tag=2" in ack and b"CSeq: 1 ACK" in ack
    assert not tx.receive_response(busy, 2.0)
    assert tx.outbox == [ack, ack]
    assert tx.get_timer() == 33.0  # timer D: 32 s over UDP
    tx.handle_timer(33.0)
    assert tx.terminated


def test_invite_client_over_tcp_ends_at_once_after_a_failure() -> None:
    invite = request("INVITE")
    tx = ClientTransaction(invite, ADDR, reliable=True, now=0.0)
    assert tx.get_timer() == 32.0  # timer B only, no timer A
    tx.receive_response(response(invite, 404), 0.5)
    assert tx.get_timer() == 0.5
    tx.handle_timer(0.5)
    assert tx.terminated and not tx.timed_out


def test_non_invite_client_timer_k() -> None:
    bye = request("BYE")
    tx = ClientTransaction(bye, ADDR, reliable=False, now=0.0)
    assert tx.receive_response(response(bye, 200), 0.2)
    assert not tx.receive_response(response(bye, 200), 0.3)
    assert tx.get_timer() == 0.2 + T4
    tx.handle_timer(0.2 + T4)
    assert tx.terminated


def test_server_non_invite_repeats_its_final_response_until_timer_j() -> None:
    info = request("INFO")
    tx = ServerTransaction(info, ADDR, reliable=False)
    tx.respond(response(info, 200), 0.0)
    tx.receive_retransmission()
    assert len(tx.outbox) == 2 and tx.outbox[0] == tx.outbox[1]
    assert tx.get_timer() == 32.0
    tx.handle_timer(32.0)
    assert tx.terminated


def test_server_invite_non_2xx_is_retransmitted_until_its_ack() -> None:
    invite = request("INVITE")
    tx = ServerTransaction(invite, ADDR, reliable=False)
    tx.respond(response(invite, 491), 0.0)
    tx.handle_timer(0.5)
    tx.handle_timer(1.5)
    assert len(tx.outbox) == 3  # timer G: 0.5, then 1 s later
    tx.receive_ack(2.0)
    assert tx.state is State.CONFIRMED
    tx.handle_timer(2.0 + T4)
    assert tx.terminated and not tx.timed_out


def test_server_invite_2xx_without_ack_times_out() -> None:
    invite = request("INVITE")
    tx = ServerTransaction(invite, ADDR, reliable=True)
    tx.respond(response(invite, 200), 0.0)
    while (deadline := tx.get_timer()) is not None:
        tx.handle_timer(deadline)
    assert tx.timed_out
    assert len(tx.outbox) > 5  # the 2xx is repeated even over TCP (§13.3.1.4)
