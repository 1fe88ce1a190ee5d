"""A minimal SIP callee on loopback UDP that answers with PCMU and sends a tone.

It exists to put a controlled network path (see udp_relay) between a far end and sip2rtmp,
and to observe from the far end's side what sip2rtmp sends: whether and when RTP arrives.
Built on sip2rtmp's own message and SDP code; it answers one call, with no authentication.
"""

from __future__ import annotations

import math
import random
import selectors
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sip2rtmp.netaddr import Address
from sip2rtmp.rtp.packet import RtpPacket, is_rtcp
from sip2rtmp.sip.message import Headers, Request, Response, SipParseError, parse_message
from sip2rtmp.sip.sdp import NegotiatedSession, answer_offer, build_offer
from tests.support.udp_relay import UdpRelay

HOST = "127.0.0.1"
PTIME = 0.02
SAMPLES_PER_PACKET = 160
T1 = 0.5
"""RFC 3261 §17.1.1.1: the 200 OK is retransmitted at T1, 2*T1, ... capped at T2 until ACK."""
T2 = 4.0


def mulaw_encode(samples: npt.NDArray[np.int16]) -> bytes:
    """G.711 mu-law, written out so the tone does not depend on the codec code under test."""
    values = samples.astype(np.int32)
    sign = (values < 0).astype(np.int32) << 7
    magnitude = np.minimum(np.abs(values), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return bytes((~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8))


def tone_packet(index: int, hz: float) -> bytes:
    """The `index`-th 20 ms of a continuous sine at 8 kHz, as a PCMU payload."""
    n = np.arange(index * SAMPLES_PER_PACKET, (index + 1) * SAMPLES_PER_PACKET)
    samples = 0.3 * 32767 * np.sin(2 * math.pi * hz * n / 8000)
    return mulaw_encode(samples.astype(np.int16))


@dataclass
class PeerObservations:
    """What the peer saw, with `time.monotonic()` timestamps."""

    ok_sent_at: float | None = None
    ack_at: float | None = None
    bye_at: float | None = None
    ok_retransmissions: int = 0
    rtp_received: int = 0
    rtp_arrivals: list[float] = field(default_factory=list)
    payload_types: set[int] = field(default_factory=set)
    rtp_sent: int = 0
    offer: str = ""

    @property
    def first_rtp_after_ok(self) -> float | None:
        """Seconds from our first 200 OK to the first RTP packet from the caller."""
        if self.ok_sent_at is None or not self.rtp_arrivals:
            return None
        return self.rtp_arrivals[0] - self.ok_sent_at


class SipPeer:
    """Answers one INVITE at `sip:<user>@127.0.0.1:<port>` and streams a tone until BYE.

    With a relay, the SDP answer names the relay's public side and the tone goes through it,
    so every packet sip2rtmp receives has crossed the relay; without one, media is direct.
    """

    def __init__(
        self,
        *,
        user: str = "peer",
        tone_hz: float = 440.0,
        relay: UdpRelay | None = None,
        send_media: bool = True,
    ) -> None:
        self.user = user
        self.tone_hz = tone_hz
        self.send_media = send_media
        self.relay = relay
        self.seen = PeerObservations()
        self._sip = _bound()
        self._rtp = _bound()
        if relay is not None:
            relay.peer = self.rtp_address
        self._media_to: Address | None = None
        self.session: NegotiatedSession | None = None
        """The answered call's streams, as the peer sees them."""
        self._ok: tuple[bytes, Address] | None = None
        self._next_retransmit = 0.0
        self._interval = T1
        self._stop = threading.Event()
        self._media_stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve, name="sip-peer", daemon=True),
            threading.Thread(target=self._send_tone, name="sip-peer-rtp", daemon=True),
        ]
        self._answered = threading.Event()
        self._tag = uuid.uuid4().hex[:10]

    @property
    def port(self) -> int:
        return int(self._sip.getsockname()[1])

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{HOST}:{self.port}"

    @property
    def rtp_address(self) -> Address:
        host, port = self._rtp.getsockname()
        return str(host), int(port)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._media_stop.set()
        self._answered.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=2.0)
        self._sip.close()
        self._rtp.close()

    # SIP ------------------------------------------------------------------------------------

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._sip, selectors.EVENT_READ, self._on_sip)
        selector.register(self._rtp, selectors.EVENT_READ, self._on_rtp)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.02):
                    key.data()
                self._retransmit_ok()
        finally:
            selector.close()

    def _on_sip(self) -> None:
        data, addr = self._sip.recvfrom(65535)
        try:
            message = parse_message(data)
        except SipParseError:
            return
        if not isinstance(message, Request):
            return
        if message.method == "INVITE":
            self._on_invite(message, addr)
        elif message.method == "ACK":
            if self.seen.ack_at is None:
                self.seen.ack_at = time.monotonic()
            self._ok = None
        elif message.method == "BYE":
            self.seen.bye_at = time.monotonic()
            self._media_stop.set()
            self._sip.sendto(self._response(message, 200, "OK").to_bytes(), addr)
        else:
            self._sip.sendto(self._response(message, 200, "OK").to_bytes(), addr)

    def _on_invite(self, invite: Request, addr: Address) -> None:
        if self.seen.offer:
            if self._ok is not None:
                self._sip.sendto(*self._ok)
            return
        self._sip.sendto(self._response(invite, 100, "Trying").to_bytes(), addr)
        self.seen.offer = invite.body.decode("utf-8", "replace")
        media_port = self.relay.public_address[1] if self.relay else self.rtp_address[1]
        answer = answer_offer(self._capabilities(media_port), self.seen.offer)
        self.session = answer.session
        audio = answer.session.audio
        if audio is None or audio.codec != "PCMU":
            self._sip.sendto(self._response(invite, 488, "Not Acceptable Here").to_bytes(), addr)
            return
        if self.relay is not None:
            self.relay.target = audio.rtp_address
            self._media_to = self.relay.inner_address
        else:
            self._media_to = audio.rtp_address
        self._before_answer()
        ok = self._response(invite, 200, "OK", answer.sdp.encode())
        self._ok = (ok.to_bytes(), addr)
        self._sip.sendto(*self._ok)
        self.seen.ok_sent_at = time.monotonic()
        self._next_retransmit = self.seen.ok_sent_at + T1
        self._answered.set()

    def _before_answer(self) -> None:
        """Called with ``session`` set, just before the 200 OK goes out (a callee getting its
        media ready)."""

    def _capabilities(self, media_port: int) -> str:
        """What the peer can receive, as the offer its answer is made from (RFC 3264 §6)."""
        return build_offer(
            HOST,
            media_port,
            session_id=random.randrange(1, 1 << 31),
            username=self.user,
            audio_codecs=("PCMU",),
            video_codecs=(),
        )

    def _retransmit_ok(self) -> None:
        if self._ok is None or time.monotonic() < self._next_retransmit:
            return
        self._sip.sendto(*self._ok)
        self.seen.ok_retransmissions += 1
        self._interval = min(self._interval * 2, T2)
        self._next_retransmit = time.monotonic() + self._interval

    def _response(self, request: Request, status: int, reason: str, body: bytes = b"") -> Response:
        headers = Headers()
        for via in request.headers.get_fields("Via"):
            headers.add("Via", via)
        headers.add("From", request.headers.get("From") or "")
        to = request.headers.get("To") or ""
        headers.add("To", to if ";tag=" in to or status == 100 else f"{to};tag={self._tag}")
        headers.add("Call-ID", request.call_id)
        headers.add("CSeq", request.headers.get("CSeq") or "")
        if status == 200 and request.method == "INVITE":
            headers.add("Contact", f"<sip:{self.user}@{HOST}:{self.port}>")
        if body:
            headers.add("Content-Type", "application/sdp")
        return Response(status, reason, headers, body)

    # RTP ------------------------------------------------------------------------------------

    def _on_rtp(self) -> None:
        data = self._rtp.recv(65535)
        if is_rtcp(data):
            return
        packet = RtpPacket.parse(data)
        self.seen.rtp_arrivals.append(time.monotonic())
        self.seen.rtp_received += 1
        self.seen.payload_types.add(packet.payload_type)

    def _send_tone(self) -> None:
        """20 ms packets on an absolute schedule from the 200 OK, until BYE or stop."""
        self._answered.wait()
        destination = self._media_to
        if destination is None or self._media_stop.is_set() or not self.send_media:
            return
        ssrc = random.randrange(1 << 32)
        first_seq = random.randrange(1 << 16)
        first_ts = random.randrange(1 << 32)
        start = time.monotonic()
        index = 0
        while not self._media_stop.is_set():
            packet = RtpPacket(
                0,
                (first_seq + index) & 0xFFFF,
                (first_ts + index * SAMPLES_PER_PACKET) & 0xFFFFFFFF,
                ssrc,
                tone_packet(index, self.tone_hz),
                marker=index == 0,
            )
            self._rtp.sendto(packet.serialize(), destination)
            self.seen.rtp_sent += 1
            index += 1
            self._media_stop.wait(max(start + index * PTIME - time.monotonic(), 0.0))


def _bound() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock
