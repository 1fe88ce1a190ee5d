"""A minimal SIP callee on loopback UDP that answers with PCMU and sends a tone.

It exists to put a controlled network path (see udp_relay) between a far end and sip2rtmp,
and to observe from the far end's side what sip2rtmp sends: whether and when RTP arrives.
Built on sip2rtmp's own message and SDP code; it answers one call, with no authentication.

Mid-call it can do what a PBX does to a call: send re-INVITEs (`MediaUpdate`) that move its
media to another address and port, change codec or hold the call, changing what it sends at
the moment the offer goes out; and it can send comfort noise between talk spurts
(`TalkSpurts`, RFC 3389). It keeps what it received: the answers to its re-INVITEs and every
RTP packet, with the port it arrived on.
"""

from __future__ import annotations

import functools
import math
import random
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sip2rtmp.netaddr import Address
from sip2rtmp.rtp.packet import RtpPacket, is_rtcp
from sip2rtmp.sip.message import (
    Headers,
    Request,
    Response,
    SipParseError,
    parse_message,
    parse_name_addr,
    parse_uri,
)
from sip2rtmp.sip.sdp import (
    DIRECTIONS,
    NegotiatedSession,
    SessionDescription,
    answer_offer,
    build_offer,
    negotiate,
)
from tests.support.udp_relay import UdpRelay

HOST = "127.0.0.1"
PTIME = 0.02
SAMPLES_PER_PACKET = 160
T1 = 0.5
"""RFC 3261 §17.1.1.1: the 200 OK is retransmitted at T1, 2*T1, ... capped at T2 until ACK."""
T2 = 4.0
CN_PAYLOAD_TYPE = 13
"""Comfort noise's static payload type (RFC 3551 §6, RFC 3389 §4)."""
G711_PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}


def mulaw_encode(samples: npt.NDArray[np.int16]) -> bytes:
    """G.711 mu-law, written out so the tone does not depend on the codec code under test."""
    values = samples.astype(np.int32)
    sign = (values < 0).astype(np.int32) << 7
    magnitude = np.minimum(np.abs(values), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return bytes((~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8))


def alaw_encode(samples: npt.NDArray[np.int16]) -> bytes:
    """G.711 A-law (ITU-T G.711 Table 1a), written out like `mulaw_encode`: 13-bit magnitude,
    segment and 4-bit step, sign bit set for positive values, even bits inverted."""
    values = samples.astype(np.int32) >> 3
    sign = np.where(values >= 0, 0x80, 0x00)
    magnitude = np.minimum(np.where(values >= 0, values, -values - 1), 0x0FFF)
    segment = np.maximum(np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 4, 0)
    step = np.where(segment == 0, magnitude >> 1, magnitude >> segment) & 0x0F
    code = sign | (segment << 4) | step
    return bytes((code ^ 0x55).astype(np.uint8))


def tone_samples(index: int, hz: float) -> npt.NDArray[np.int16]:
    """The `index`-th 20 ms of a continuous sine at 8 kHz, 0.3 of full scale."""
    n = np.arange(index * SAMPLES_PER_PACKET, (index + 1) * SAMPLES_PER_PACKET)
    samples: npt.NDArray[np.int16] = (0.3 * 32767 * np.sin(2 * math.pi * hz * n / 8000)).astype(
        np.int16
    )
    return samples


def tone_packet(index: int, hz: float) -> bytes:
    """The `index`-th 20 ms of a continuous sine at 8 kHz, as a PCMU payload."""
    return mulaw_encode(tone_samples(index, hz))


G711_ENCODERS: dict[str, Callable[[npt.NDArray[np.int16]], bytes]] = {
    "PCMU": mulaw_encode,
    "PCMA": alaw_encode,
}


@dataclass(frozen=True)
class MediaUpdate:
    """A re-INVITE the peer sends `at` seconds after the ACK of its 200 OK, and what changes
    in what it sends at that moment: an offerer may send the new way as soon as its offer is
    out (RFC 3264 §8.3.1, §8.3.2). `host` moves the media to a new socket bound there (a new
    address if it is not HOST, always a new port), with a new SSRC, as when another box takes
    over the media; `codec` is what it offers and sends from then on; `direction` is the
    offer's (`sendonly` holds the call, RFC 3264 §8.4); `tone_hz` replaces the tone; `send`
    False stops the peer's RTP."""

    at: float
    codec: str = "PCMU"
    host: str | None = None
    direction: str = "sendrecv"
    tone_hz: float | None = None
    send: bool = True


@dataclass(frozen=True)
class TalkSpurts:
    """Discontinuous transmission (RFC 3389 §1): `talk` seconds of tone, then `silence`
    seconds in which only comfort noise goes out, one CN packet at the start of the silence
    and one every `cn_every` seconds after it (updates of the noise estimate), each
    carrying `level` (-dBov, RFC 3389 §3) and no spectral information."""

    talk: float = 1.0
    silence: float = 4.0
    cn_every: float = 1.0
    level: int = 50

    def talking(self, index: int) -> bool:
        """Whether the `index`-th 20 ms of the call is in a talk spurt."""
        period = round((self.talk + self.silence) / PTIME)
        return index % period < round(self.talk / PTIME)

    def comfort_noise_due(self, index: int) -> bool:
        """Whether the `index`-th 20 ms, in a silence, carries a CN packet."""
        period = round((self.talk + self.silence) / PTIME)
        into_silence = index % period - round(self.talk / PTIME)
        return into_silence % max(round(self.cn_every / PTIME), 1) == 0


@dataclass
class ReInvite:
    """One re-INVITE the peer sent and the final response it got (`status`, `answer`)."""

    update: MediaUpdate
    cseq: int
    branch: str
    offer: str
    sent_at: float
    request: bytes
    status: int | None = None
    answer: str = ""
    answered_at: float | None = None
    provisional: bool = False
    retransmissions: int = 0
    ack: bytes = b""


@dataclass(frozen=True)
class ReceivedRtp:
    """One RTP packet from sip2rtmp: when, its payload type and the peer's port it reached."""

    at: float
    payload_type: int
    port: int
    sender: Address


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
    reinvites: list[ReInvite] = field(default_factory=list)
    rtp: list[ReceivedRtp] = field(default_factory=list)
    comfort_noise_sent: int = 0

    @property
    def first_rtp_after_ok(self) -> float | None:
        """Seconds from our first 200 OK to the first RTP packet from the caller."""
        if self.ok_sent_at is None or not self.rtp_arrivals:
            return None
        return self.rtp_arrivals[0] - self.ok_sent_at


@dataclass
class _Outgoing:
    """The RTP stream the peer sends: one SSRC, its sequence and timestamp counters."""

    sock: socket.socket
    codec: str
    ssrc: int = field(default_factory=lambda: random.randrange(1 << 32))
    sequence: int = field(default_factory=lambda: random.randrange(1 << 16))
    timestamp: int = field(default_factory=lambda: random.randrange(1 << 32))
    talking: bool = False
    """Whether the last packet was speech: the first one after a silence is marked."""

    def packet(self, payload_type: int, payload: bytes, marker: bool = False) -> bytes:
        packet = RtpPacket(
            payload_type, self.sequence, self.timestamp, self.ssrc, payload, marker=marker
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        return packet.serialize()


class SipPeer:
    """Answers one INVITE at `sip:<user>@127.0.0.1:<port>` and streams a tone until BYE.

    With a relay, the SDP answer names the relay's public side and the tone goes through it,
    so every packet sip2rtmp receives has crossed the relay; without one, media is direct.
    `updates` are re-INVITEs sent in the call (direct media only); `talk_spurts` replaces the
    steady tone by tone and comfort noise, and the answer lists CN when the offer did; with
    `ring_s` it sends 180 Ringing and answers that much later, as a phone does.
    """

    def __init__(
        self,
        *,
        user: str = "peer",
        tone_hz: float = 440.0,
        relay: UdpRelay | None = None,
        send_media: bool = True,
        updates: Sequence[MediaUpdate] = (),
        talk_spurts: TalkSpurts | None = None,
        ring_s: float = 0.0,
    ) -> None:
        self.user = user
        self.ring_s = ring_s
        self.tone_hz = tone_hz
        self.send_media = send_media
        self.relay = relay
        self.updates = list(updates)
        self.talk_spurts = talk_spurts
        self.seen = PeerObservations()
        self._sip = _bound()
        self._rtp = _bound()
        self._moved = {index: _bound(u.host) for index, u in enumerate(updates) if u.host}
        """The sockets media moves to, bound now so that each offer can name its port."""
        if relay is not None:
            relay.peer = self.rtp_address
        self._media_to: Address | None = None
        self.session: NegotiatedSession | None = None
        """The answered call's streams, as the peer sees them."""
        self.invite: Request | None = None
        """The INVITE that set up the dialog."""
        self._local_sdp = ""
        self._local_cseq = 0
        self._switch: tuple[MediaUpdate, socket.socket] | None = None
        """The latest update's media, for the sender to take up at its next packet."""
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

    def moved_address(self, update: int) -> Address:
        """Where the `update`-th re-INVITE moves the peer's media (it has a `host`)."""
        host, port = self._moved[update].getsockname()
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
        for sock in (self._sip, self._rtp, *self._moved.values()):
            sock.close()

    # SIP ------------------------------------------------------------------------------------

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._sip, selectors.EVENT_READ, self._on_sip)
        selector.register(self._rtp, selectors.EVENT_READ, self._on_rtp)
        for sock in self._moved.values():
            receive = functools.partial(self._receive_rtp, sock)
            selector.register(sock, selectors.EVENT_READ, receive)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.02):
                    key.data()
                self._retransmit_ok()
                self._run_updates()
        finally:
            selector.close()

    def _on_sip(self) -> None:
        data, addr = self._sip.recvfrom(65535)
        try:
            message = parse_message(data)
        except SipParseError:
            return
        if isinstance(message, Response):
            self._on_response(message, addr)
        elif message.method == "INVITE":
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
        self.invite = invite
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
        self._local_sdp = answer.sdp
        if self.talk_spurts is not None and offers_comfort_noise(self.seen.offer):
            self._local_sdp = with_comfort_noise(answer.sdp)
        if self.ring_s:
            self._sip.sendto(self._response(invite, 180, "Ringing").to_bytes(), addr)
            self._stop.wait(self.ring_s)
        self._before_answer()
        ok = self._response(invite, 200, "OK", self._local_sdp.encode())
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

    # Re-INVITEs (RFC 3261 §14, RFC 3264 §8) -------------------------------------------------

    def _run_updates(self) -> None:
        """Send each update's re-INVITE when due, one at a time (RFC 3261 §14.1: no new offer
        while one is pending), and retransmit the pending one (§17.1.1.2, timer A)."""
        now = time.monotonic()
        sent = self.seen.reinvites
        if sent and sent[-1].status is None:
            pending = sent[-1]
            due = pending.sent_at + T1 * (2 ** (pending.retransmissions + 1) - 1)
            if not pending.provisional and now >= due:
                self._sip.sendto(pending.request, self._remote_target())
                pending.retransmissions += 1
            return
        if self.seen.ack_at is None or self._media_stop.is_set() or len(sent) >= len(self.updates):
            return
        index = len(sent)
        if now >= self.seen.ack_at + self.updates[index].at:
            self._reinvite(index)

    def _remote_target(self) -> Address:
        """The caller's Contact (RFC 3261 §12.1.2): where in-dialog requests go."""
        assert self.invite is not None
        uri = parse_uri(parse_name_addr(self.invite.headers.get("Contact") or "").uri)
        return uri.host, uri.port or 5060

    def _dialog_headers(self, cseq: int, method: str, branch: str) -> Headers:
        """The peer's side of the dialog the INVITE set up, as the UAC (RFC 3261 §12.2.1.1)."""
        assert self.invite is not None
        headers = Headers()
        headers.add("Via", f"SIP/2.0/UDP {HOST}:{self.port};branch={branch};rport")
        headers.add("Max-Forwards", "70")
        headers.add("From", f"{self.invite.headers.get('To') or ''};tag={self._tag}")
        headers.add("To", self.invite.headers.get("From") or "")
        headers.add("Call-ID", self.invite.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        return headers

    def _reinvite(self, index: int) -> None:
        """Send the `index`-th update's offer and switch the media at once."""
        assert self.invite is not None
        update = self.updates[index]
        sock = self._moved.get(index, self._switch[1] if self._switch else self._rtp)
        host, port = sock.getsockname()
        offer = self._update_offer(update, str(host), int(port))
        self._local_cseq += 1
        branch = f"z9hG4bK{uuid.uuid4().hex[:16]}"
        headers = self._dialog_headers(self._local_cseq, "INVITE", branch)
        headers.add("Contact", f"<sip:{self.user}@{HOST}:{self.port}>")
        headers.add("Content-Type", "application/sdp")
        contact = parse_name_addr(self.invite.headers.get("Contact") or "").uri
        request = Request("INVITE", contact, headers, offer.encode()).to_bytes()
        self._local_sdp = offer
        self._sip.sendto(request, self._remote_target())
        self.seen.reinvites.append(
            ReInvite(update, self._local_cseq, branch, offer, time.monotonic(), request)
        )
        if update.tone_hz is not None:
            self.tone_hz = update.tone_hz
        self._switch = (update, sock)

    def _update_offer(self, update: MediaUpdate, host: str, port: int) -> str:
        """The new offer: the peer's last SDP with the audio section replaced, every other
        m= line kept as it was (a declined stream stays at port 0) and the o= version up by
        one (RFC 3264 §8)."""
        last = SessionDescription.parse(self._local_sdp)
        fresh = SessionDescription.parse(
            build_offer(
                host,
                port,
                session_id=int(last.origin.session_id),
                session_version=last.origin.session_version + 1,
                username=last.origin.username,
                audio_codecs=(update.codec,),
                video_codecs=(),
            )
        )
        audio = fresh.media[0]
        audio.attributes = [(k, v) for k, v in audio.attributes if k not in DIRECTIONS]
        audio.attributes.append((update.direction, None))
        kinds = [m.kind for m in last.media]
        at = kinds.index("audio") if "audio" in kinds else 0
        fresh.media = [*last.media[:at], audio, *last.media[at + 1 :]]
        if self.talk_spurts is not None and offers_comfort_noise(self.seen.offer):
            return with_comfort_noise(fresh.serialize())
        return fresh.serialize()

    def _on_response(self, response: Response, addr: Address) -> None:
        number, method = response.cseq
        pending = [r for r in self.seen.reinvites if r.cseq == number]
        if method != "INVITE" or not pending:
            return
        reinvite = pending[0]
        if response.status < 200:
            reinvite.provisional = True
            return
        if reinvite.status is None:
            reinvite.status = response.status
            reinvite.answer = response.body.decode("utf-8", "replace")
            reinvite.answered_at = time.monotonic()
            reinvite.ack = self._ack(reinvite, response)
            if response.status < 300 and reinvite.answer:
                answered = negotiate(reinvite.offer, reinvite.answer)
                self.session = answered
                if answered.audio is not None and self.relay is None:
                    self._media_to = answered.audio.rtp_address
        # Every final response, and each retransmission of it, is acknowledged.
        self._sip.sendto(reinvite.ack, self._remote_target() if response.status < 300 else addr)

    def _ack(self, reinvite: ReInvite, response: Response) -> bytes:
        """ACK for a 2xx: a new transaction to the remote target (RFC 3261 §13.2.2.4); for a
        failure, in the INVITE's transaction, with the response's To (§17.1.1.3)."""
        assert self.invite is not None
        success = response.status < 300
        branch = f"z9hG4bK{uuid.uuid4().hex[:16]}" if success else reinvite.branch
        headers = self._dialog_headers(reinvite.cseq, "ACK", branch)
        headers.set("To", response.headers.get("To") or "")
        contact = parse_name_addr(self.invite.headers.get("Contact") or "").uri
        return Request("ACK", contact, headers).to_bytes()

    # RTP ------------------------------------------------------------------------------------

    def _on_rtp(self) -> None:
        self._receive_rtp(self._rtp)

    def _receive_rtp(self, sock: socket.socket) -> None:
        data, sender = sock.recvfrom(65535)
        if is_rtcp(data):
            return
        packet = RtpPacket.parse(data)
        now = time.monotonic()
        self.seen.rtp_arrivals.append(now)
        self.seen.rtp_received += 1
        self.seen.payload_types.add(packet.payload_type)
        port = int(sock.getsockname()[1])
        self.seen.rtp.append(ReceivedRtp(now, packet.payload_type, port, sender))

    def _send_tone(self) -> None:
        """20 ms packets on an absolute schedule from the 200 OK, until BYE or stop."""
        self._answered.wait()
        if self._media_to is None or self._media_stop.is_set() or not self.send_media:
            return
        stream = _Outgoing(self._rtp, "PCMU")
        sending = True
        taken: MediaUpdate | None = None
        start = time.monotonic()
        index = 0
        while not self._media_stop.is_set():
            switch = self._switch
            if switch is not None and switch[0] is not taken:
                taken, sending = switch[0], switch[0].send
                stream = self._switched(stream, *switch)
            packet = self._next_packet(stream, index) if sending else None
            destination = self._media_to
            if packet is not None and destination is not None:
                stream.sock.sendto(packet, destination)
                self.seen.rtp_sent += 1
            stream.timestamp = (stream.timestamp + SAMPLES_PER_PACKET) & 0xFFFFFFFF
            index += 1
            self._media_stop.wait(max(start + index * PTIME - time.monotonic(), 0.0))

    @staticmethod
    def _switched(stream: _Outgoing, update: MediaUpdate, sock: socket.socket) -> _Outgoing:
        """The stream after an update: the same source in a new codec, or a new source (SSRC,
        sequence, timestamp) on a new socket."""
        if sock is stream.sock:
            stream.codec = update.codec
            return stream
        return _Outgoing(sock, update.codec)

    def _next_packet(self, stream: _Outgoing, index: int) -> bytes | None:
        """The `index`-th 20 ms: tone, a CN packet in a silence, or nothing."""
        spurts = self.talk_spurts
        if spurts is None or spurts.talking(index):
            samples = tone_samples(index, self.tone_hz)
            payload = G711_ENCODERS[stream.codec](samples)
            marker = not stream.talking
            stream.talking = True
            return stream.packet(G711_PAYLOAD_TYPES[stream.codec], payload, marker)
        stream.talking = False
        if not spurts.comfort_noise_due(index):
            return None
        self.seen.comfort_noise_sent += 1
        return stream.packet(CN_PAYLOAD_TYPE, bytes([spurts.level]))


def offers_comfort_noise(sdp: str) -> bool:
    """Whether the first audio section lists CN/8000 (RFC 3389 §5)."""
    audio = [m for m in SessionDescription.parse(sdp).media if m.kind == "audio"]
    if not audio:
        return False
    rtpmap = audio[0].rtpmaps().get(CN_PAYLOAD_TYPE)
    listed = CN_PAYLOAD_TYPE in audio[0].payload_types
    return listed and (rtpmap is None or rtpmap.encoding.upper() == "CN")


def with_comfort_noise(sdp: str) -> str:
    """`sdp` with CN/8000 added to its first audio section (RFC 3389 §5)."""
    description = SessionDescription.parse(sdp)
    audio = next(m for m in description.media if m.kind == "audio")
    if audio.port != 0 and CN_PAYLOAD_TYPE not in audio.payload_types:
        audio.formats.append(str(CN_PAYLOAD_TYPE))
        after = max(
            (i + 1 for i, (k, _) in enumerate(audio.attributes) if k == "rtpmap"), default=0
        )
        audio.attributes.insert(after, ("rtpmap", f"{CN_PAYLOAD_TYPE} CN/8000"))
    return description.serialize()


def _bound(host: str = HOST) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock
