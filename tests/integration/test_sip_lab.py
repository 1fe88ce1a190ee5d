"""The SIP user agent against the lab's kamailio and baresip callees, over UDP, TCP and TLS.

Every check reads a capture of the loopback interface, decoded by tshark (TLS with the session
keys Python's ssl logs): what went on the wire is the truth, in particular that the callee
never retransmits its 200 OK (it would if our ACK were wrong, and drop the call ~32 s in).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sip2rtmp.lab import (
    BUSY_USER,
    DECLINE_USER,
    RELAY_ACCOUNT,
    SIP_DOMAIN,
    SIP_HOST,
    SIP_PORT,
    SIP_TLS_PORT,
    UNKNOWN_USER,
    Lab,
)
from sip2rtmp.net.sip_session import SipSession
from sip2rtmp.netaddr import Transport
from sip2rtmp.outcomes import Rejected, RingTimeout, RunFailed
from sip2rtmp.sip.auth import Credentials
from sip2rtmp.sip.useragent import UserAgentConfig
from tests.support.sip_wire import SipCapture

pytestmark = pytest.mark.lab

CALL_HOLD_SECONDS = 5.0
"""Long enough for a callee that missed our ACK to retransmit its 200 OK (at 0.5, 1.5, 3.5 s);
the minute-long version of this claim runs through the CLI in test_call_cli.py."""


@pytest.fixture
def wire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SipCapture]:
    """SIP on the registrar's ports captured for the test, TLS keys logged for tshark."""
    capture = SipCapture(tmp_path)
    monkeypatch.setenv("SSLKEYLOGFILE", str(capture.keylog))
    yield capture
    capture.stop()


def config(transport: Transport, lab: Lab, password: str | None = None) -> UserAgentConfig:
    return UserAgentConfig(
        user=RELAY_ACCOUNT.user,
        domain=SIP_DOMAIN,
        credentials=Credentials(RELAY_ACCOUNT.user, password or RELAY_ACCOUNT.password),
        transport=transport,
        outbound_proxy=SIP_HOST,
        port=SIP_TLS_PORT if transport == "tls" else SIP_PORT,
        local_port=0,
        tls_ca_file=str(lab.tls_ca) if transport == "tls" else None,
    )


class RtpPeer(asyncio.DatagramProtocol):
    """A PCMU stream of silence towards the callee, so its RTP timeout never fires."""

    def __init__(self) -> None:
        self.received = 0

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received += 1


def offer(rtp_port: int) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=sip2rtmp test\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    ).encode()


def media_target(sdp: bytes) -> tuple[str, int]:
    text = sdp.decode()
    host = re.search(r"^c=IN IP4 (\S+)", text, re.M)
    port = re.search(r"^m=audio (\d+)", text, re.M)
    assert host and port, text
    return host.group(1), int(port.group(1))


async def send_rtp(transport: asyncio.DatagramTransport, target: tuple[str, int]) -> None:
    sequence, timestamp = 0, 0
    while True:
        header = struct.pack("!BBHII", 0x80, 0, sequence & 0xFFFF, timestamp, 0x5125A001)
        transport.sendto(header + b"\xff" * 160, target)
        sequence += 1
        timestamp += 160
        await asyncio.sleep(0.02)


TRANSPORTS: list[Transport] = ["udp", "tcp", "tls"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_register_answers_the_401(lab: Lab, wire: SipCapture, transport: Transport) -> None:
    async def scenario() -> tuple[int, int]:
        async with SipSession(config(transport, lab)) as sip:
            return sip.local_address[1], await sip.register()

    port, expires = asyncio.run(scenario())
    assert expires > 0
    log = wire.read(port)
    registers = log.sent("REGISTER")
    assert log.responses(401, "REGISTER")
    assert len(registers) == 3, "REGISTER, again with credentials, then the un-REGISTER"
    assert registers[0].first("sip.Authorization") is None
    assert registers[1].first("sip.Authorization")
    assert registers[1].call_id == registers[0].call_id
    assert registers[1].cseq[0] == registers[0].cseq[0] + 1
    assert registers[-1].first("sip.Expires") == "0"  # un-REGISTER on the way out
    assert RELAY_ACCOUNT.password not in "".join(m.text for m in log.messages)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_call_keeps_the_dialog_then_we_hang_up(
    lab: Lab, wire: SipCapture, transport: Transport
) -> None:
    progress: list[int] = []
    ports: list[int] = []

    async def scenario() -> tuple[str | None, bool, int]:
        loop = asyncio.get_running_loop()
        rtp, peer = await loop.create_datagram_endpoint(RtpPeer, local_addr=("127.0.0.1", 0))
        try:
            async with SipSession(config(transport, lab)) as sip:
                ports.append(sip.local_address[1])
                await sip.register()
                call = await sip.invite(
                    "tone",
                    offer(rtp.get_extra_info("sockname")[1]),
                    on_progress=lambda p: progress.append(p.status),
                    ring_timeout=20,
                )
                sender = asyncio.create_task(send_rtp(rtp, media_target(call.answer_sdp)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(call.ended.wait()), CALL_HOLD_SECONDS)
                ended_early = call.ended.is_set()
                await call.hangup()
                sender.cancel()
                return call.end_reason, ended_early, peer.received
        finally:
            rtp.close()

    reason, ended_early, rtp_received = asyncio.run(scenario())
    assert not ended_early, f"the call ended after less than {CALL_HOLD_SECONDS} s: {reason}"
    assert reason == "hangup"
    assert rtp_received > 100
    assert 180 in progress

    log = wire.read(ports[0])
    invites = log.sent("INVITE")
    assert log.responses(407, "INVITE")
    assert len(invites) == 2 and invites[1].first("sip.Proxy-Authorization")
    assert invites[1].cseq[0] == invites[0].cseq[0] + 1
    assert (invites[1].call_id, invites[1].from_tag) == (invites[0].call_id, invites[0].from_tag)

    oks = log.responses(200, "INVITE")
    assert len(oks) == 1, "the callee retransmitted its 200 OK: our ACK did not reach it"
    ok = oks[0]
    acks = [a for a in log.sent("ACK") if a.cseq[0] == invites[1].cseq[0]]
    assert len(acks) == 1
    [bye] = log.sent("BYE")
    for request in (acks[0], bye):
        assert request.request_uri == ok.contact_uri
        assert request.routes == list(reversed(ok.record_routes))  # RFC 3261 §12.1.2
        assert request.from_tag == invites[1].from_tag
        assert request.to_tag == ok.to_tag
        assert request.call_id == invites[1].call_id
    assert acks[0].cseq == (invites[1].cseq[0], "ACK")
    assert acks[0].top_branch != invites[1].top_branch  # RFC 3261 §17.1.1.3
    assert bye.cseq == (invites[1].cseq[0] + 1, "BYE")
    assert log.responses(200, "BYE")


def test_short_call_over_tls(lab: Lab, wire: SipCapture) -> None:
    async def scenario() -> tuple[int, str | None]:
        async with SipSession(config("tls", lab)) as sip:
            await sip.register()
            call = await sip.invite("tone", offer(40000), ring_timeout=20)
            await call.hangup()
            return sip.local_address[1], call.end_reason

    port, reason = asyncio.run(scenario())
    assert reason in ("hangup", "remote hangup")
    log = wire.read(port)
    assert len(log.responses(200, "INVITE")) == 1
    assert len(log.sent("ACK")) == 2 and len(log.sent("BYE")) == 1, "for the 407 and the 200"


def test_wrong_password_fails_fast(lab: Lab) -> None:
    async def scenario() -> None:
        async with SipSession(config("udp", lab, password="not-the-password")) as sip:
            await sip.register()

    started = time.monotonic()
    with pytest.raises(RunFailed) as failed:
        asyncio.run(scenario())
    assert time.monotonic() - started < 5
    outcome = failed.value.outcome
    assert isinstance(outcome, Rejected) and outcome.method == "REGISTER"
    assert outcome.status == 401, "kamailio challenges a wrong password again"


@pytest.mark.parametrize(
    ("callee", "busy", "status"),
    [
        (UNKNOWN_USER, False, 404),
        (BUSY_USER, True, 486),
        (DECLINE_USER, True, 603),
    ],
)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_rejections_are_typed(
    lab: Lab,
    wire: SipCapture,
    transport: Transport,
    callee: str,
    busy: bool,
    status: int,
) -> None:
    ports: list[int] = []

    async def scenario() -> None:
        async with SipSession(config(transport, lab)) as sip:
            ports.append(sip.local_address[1])
            await sip.register()
            await sip.invite(callee, offer(40000), ring_timeout=10)

    with pytest.raises(RunFailed) as caught:
        asyncio.run(scenario())
    outcome = caught.value.outcome
    assert isinstance(outcome, Rejected) and outcome.method == "INVITE"
    assert (outcome.status, outcome.busy) == (status, busy)
    log = wire.read(ports[0])
    final = log.responses(status, "INVITE")
    assert final
    # RFC 3261 §17.1.1.3: the ACK of a non-2xx final response is in its INVITE's transaction.
    acks = [a for a in log.sent("ACK") if a.top_branch == final[0].top_branch]
    assert acks and acks[0].to_tag == final[0].to_tag


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_no_answer_cancels_after_the_ring_timeout(
    lab: Lab, wire: SipCapture, transport: Transport
) -> None:
    ports: list[int] = []

    async def scenario() -> None:
        async with SipSession(config(transport, lab)) as sip:
            ports.append(sip.local_address[1])
            await sip.register()
            await sip.invite("noanswer", offer(40000), ring_timeout=3)

    started = time.monotonic()
    with pytest.raises(RunFailed) as failed:
        asyncio.run(scenario())
    assert time.monotonic() - started < 10
    outcome = failed.value.outcome
    assert isinstance(outcome, RingTimeout)
    assert outcome.seconds == pytest.approx(3, abs=0.5)
    log = wire.read(ports[0])
    [cancel] = log.sent("CANCEL")
    invite = log.sent("INVITE")[-1]
    # RFC 3261 §9.1: a CANCEL has the Request-URI and top Via branch of the INVITE it cancels.
    assert cancel.top_branch == invite.top_branch
    assert cancel.request_uri == invite.request_uri
    assert cancel.time - invite.time == pytest.approx(3, abs=0.5), "at the ring timeout"
    assert log.responses(200, "CANCEL") and log.responses(487, "INVITE")
    assert any(a.top_branch == invite.top_branch for a in log.sent("ACK"))


def test_cancelling_the_invite_task_sends_cancel(lab: Lab, wire: SipCapture) -> None:
    ports: list[int] = []

    async def scenario() -> None:
        async with SipSession(config("udp", lab)) as sip:
            ports.append(sip.local_address[1])
            await sip.register()
            task = asyncio.create_task(sip.invite("noanswer", offer(40000)))
            await asyncio.sleep(1.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    log = wire.read(ports[0])
    assert log.sent("CANCEL")
    assert log.responses(487, "INVITE")
