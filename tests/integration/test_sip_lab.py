"""The SIP user agent against the lab's kamailio and baresip callees, over UDP, TCP and TLS.

Every check reads the message log: what went on the wire is the truth, in particular that the
callee never retransmits its 200 OK (it would if our ACK were wrong, and drop the call ~32 s in).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import time
from dataclasses import dataclass, field

import pytest

from sip2rtmp.errors import AuthenticationFailed, BusyOrDeclined, CalleeNotFound, NoAnswer
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
from sip2rtmp.sip.auth import Credentials
from sip2rtmp.sip.message import Request, Response, parse_message, parse_name_addr
from sip2rtmp.sip.useragent import Transport, UserAgentConfig

pytestmark = pytest.mark.lab

CALL_HOLD_SECONDS = 5.0
"""Long enough for a callee that missed our ACK to retransmit its 200 OK (at 0.5, 1.5, 3.5 s);
the minute-long version of this claim runs through the CLI in test_call_cli.py."""


@dataclass
class WireLog:
    """Every message the session sent or received, parsed, with a timestamp."""

    entries: list[tuple[float, str, Request | Response]] = field(default_factory=list)

    def __call__(self, direction: str, addr: tuple[str, int], data: bytes) -> None:
        self.entries.append((time.monotonic(), direction, parse_message(data)))

    def sent(self, method: str) -> list[Request]:
        return [
            m
            for _, d, m in self.entries
            if d == "sent" and isinstance(m, Request) and m.method == method
        ]

    def responses(self, status: int, cseq_method: str) -> list[Response]:
        return [
            m
            for _, d, m in self.entries
            if d == "received"
            and isinstance(m, Response)
            and m.status == status
            and m.cseq[1] == cseq_method
        ]


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
def test_register_answers_the_401(lab: Lab, transport: Transport) -> None:
    log = WireLog()

    async def scenario() -> int:
        async with SipSession(config(transport, lab), message_log=log) as sip:
            return await sip.register()

    expires = asyncio.run(scenario())
    assert expires > 0
    registers = log.sent("REGISTER")
    assert log.responses(401, "REGISTER")
    assert "Authorization" not in registers[0].headers
    assert registers[1].headers.get("Authorization")
    assert registers[1].call_id == registers[0].call_id
    assert registers[1].cseq[0] == registers[0].cseq[0] + 1
    assert registers[-1].headers.get("Expires") == "0"  # un-REGISTER on the way out
    assert RELAY_ACCOUNT.password not in "".join(
        m.to_bytes().decode(errors="replace") for _, _, m in log.entries
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_call_keeps_the_dialog_then_we_hang_up(lab: Lab, transport: Transport) -> None:
    log = WireLog()
    progress: list[int] = []

    async def scenario() -> tuple[str | None, bool, int]:
        loop = asyncio.get_running_loop()
        rtp, peer = await loop.create_datagram_endpoint(RtpPeer, local_addr=("127.0.0.1", 0))
        try:
            async with SipSession(config(transport, lab), message_log=log) as sip:
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

    invites = log.sent("INVITE")
    assert log.responses(407, "INVITE")
    assert len(invites) == 2 and invites[1].headers.get("Proxy-Authorization")
    assert invites[1].cseq[0] == invites[0].cseq[0] + 1
    assert (invites[1].call_id, invites[1].from_.tag) == (invites[0].call_id, invites[0].from_.tag)

    oks = log.responses(200, "INVITE")
    assert len(oks) == 1, "the callee retransmitted its 200 OK: our ACK did not reach it"
    ok = oks[0]
    contact = parse_name_addr(ok.headers.get("Contact") or "").uri
    route_set = [parse_name_addr(r).uri for r in reversed(ok.headers.get_all("Record-Route"))]
    acks = [a for a in log.sent("ACK") if a.cseq[0] == invites[1].cseq[0]]
    assert len(acks) == 1
    [bye] = log.sent("BYE")
    for request in (acks[0], bye):
        assert request.uri == contact
        assert [parse_name_addr(r).uri for r in request.headers.get_all("Route")] == route_set
        assert request.from_.tag == invites[1].from_.tag
        assert request.to.tag == ok.to.tag
        assert request.call_id == invites[1].call_id
    assert acks[0].cseq == (invites[1].cseq[0], "ACK")
    assert acks[0].top_via.branch != invites[1].top_via.branch
    assert bye.cseq == (invites[1].cseq[0] + 1, "BYE")
    assert log.responses(200, "BYE")


def test_short_call_over_tls(lab: Lab) -> None:
    log = WireLog()

    async def scenario() -> str | None:
        async with SipSession(config("tls", lab), message_log=log) as sip:
            await sip.register()
            call = await sip.invite("tone", offer(40000), ring_timeout=20)
            await call.hangup()
            return call.end_reason

    assert asyncio.run(scenario()) in ("hangup", "remote hangup")
    assert len(log.responses(200, "INVITE")) == 1


def test_wrong_password_fails_fast(lab: Lab) -> None:
    async def scenario() -> None:
        async with SipSession(config("udp", lab, password="not-the-password")) as sip:
            await sip.register()

    started = time.monotonic()
    with pytest.raises(AuthenticationFailed):
        asyncio.run(scenario())
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("callee", "error", "status"),
    [
        (UNKNOWN_USER, CalleeNotFound, 404),
        (BUSY_USER, BusyOrDeclined, 486),
        (DECLINE_USER, BusyOrDeclined, 603),
    ],
)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_rejections_are_typed(
    lab: Lab, transport: Transport, callee: str, error: type[Exception], status: int
) -> None:
    log = WireLog()

    async def scenario() -> None:
        async with SipSession(config(transport, lab), message_log=log) as sip:
            await sip.register()
            await sip.invite(callee, offer(40000), ring_timeout=10)

    with pytest.raises(error) as caught:
        asyncio.run(scenario())
    assert getattr(caught.value, "status", None) == status
    final = log.responses(status, "INVITE")
    assert final
    acks = [a for a in log.sent("ACK") if a.top_via.branch == final[0].top_via.branch]
    assert acks and acks[0].to.tag == final[0].to.tag


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_no_answer_cancels_after_the_ring_timeout(lab: Lab, transport: Transport) -> None:
    log = WireLog()

    async def scenario() -> None:
        async with SipSession(config(transport, lab), message_log=log) as sip:
            await sip.register()
            await sip.invite("noanswer", offer(40000), ring_timeout=3)

    started = time.monotonic()
    with pytest.raises(NoAnswer):
        asyncio.run(scenario())
    assert time.monotonic() - started < 10
    [cancel] = log.sent("CANCEL")
    invite = log.sent("INVITE")[-1]
    assert cancel.top_via.branch == invite.top_via.branch and cancel.uri == invite.uri
    assert log.responses(200, "CANCEL") and log.responses(487, "INVITE")
    assert any(a.top_via.branch == invite.top_via.branch for a in log.sent("ACK"))


def test_cancelling_the_invite_task_sends_cancel(lab: Lab) -> None:
    log = WireLog()

    async def scenario() -> None:
        async with SipSession(config("udp", lab), message_log=log) as sip:
            await sip.register()
            task = asyncio.create_task(sip.invite("noanswer", offer(40000)))
            await asyncio.sleep(1.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert log.sent("CANCEL")
    assert log.responses(487, "INVITE")
