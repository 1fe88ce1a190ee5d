"""Scripted callees for what carriers do before and around the answer.

Each peer is a `SipPeer` on loopback that keeps every request it receives, so a test can read
what sip2rtmp sent (INVITE headers, PRACK, INFO) from the far end's side:

- `ProgressPeer`: a 183 Session Progress with SDP, reliable (RFC 3262) or not, a tone from the
  183 on, then a 200 OK and another tone;
- `ChallengingPeer`: 407 to the INVITE, then a final status to the authenticated retry;
- `OpusEventPeer`: answers Opus with only `telephone-event/8000` and keeps the RFC 4733
  packets it receives.
"""

from __future__ import annotations

import hashlib
import re
import socket
import struct
import time
import uuid
from dataclasses import dataclass

from sip2rtmp.netaddr import Address
from sip2rtmp.rtp.packet import RtpPacket, is_rtcp
from sip2rtmp.sip.message import Request, Response, SipParseError, parse_message
from sip2rtmp.sip.sdp import answer_offer
from tests.support.sip_peer import HOST, T1, SipPeer

PRACK_PATIENCE = 8.0
"""Seconds a reliable 183 waits for its PRACK before the INVITE is refused with a 5xx. RFC 3262
§3 waits 64*T1; a test run gives up sooner so a missing PRACK fails in seconds."""


class RecordingPeer(SipPeer):
    """A `SipPeer` that keeps every request it receives, in arrival order."""

    def __init__(self, *, tone_hz: float = 440.0, send_media: bool = True) -> None:
        super().__init__(tone_hz=tone_hz, send_media=send_media)
        self.requests: list[Request] = []

    @property
    def tag(self) -> str:
        """The To tag of every response this peer sends in its dialog."""
        return self._tag

    def received(self, method: str) -> list[Request]:
        return [request for request in self.requests if request.method == method]

    def _on_sip(self) -> None:
        data = self._sip.recv(65535, socket.MSG_PEEK)
        try:
            message = parse_message(data)
        except SipParseError:
            message = None
        if isinstance(message, Request):
            self.requests.append(message)
            if self._take(message):
                return
        super()._on_sip()

    def _take(self, request: Request) -> bool:
        """Handle `request` here instead of in `SipPeer`; then read it off the socket."""
        return False


class ProgressPeer(RecordingPeer):
    """Answers with `183 Session Progress` (or `provisional`, e.g. 180 Ringing) carrying the
    SDP answer, plays `early_hz` from then on, and `answer_after` seconds later sends the 200
    OK and switches to `answer_hz` on the same RTP stream (one SSRC, continuous sequence
    numbers and timestamps).

    `reliable`: the 183 has `Require: 100rel` and `RSeq: 1` and is retransmitted at T1,
    doubling, until a matching PRACK comes (RFC 3262 §3); the 200 OK waits for that PRACK.
    `lose_pracks_for`: PRACKs that come within that many seconds of the 183 are recorded but
    not answered, as if lost on the way (the 183 is retransmitted meanwhile).
    `answer_in_ok`: the 200 OK repeats the 183's answer; otherwise it has no body (the answer
    was already given reliably, RFC 3262 §5).
    The 18x and 200 carry a Contact other than the Request-URI and a Record-Route, so
    in-dialog requests show whether they follow the early dialog (RFC 3261 §12.1.2).
    """

    def __init__(
        self,
        *,
        reliable: bool = True,
        early_hz: float = 440.0,
        answer_hz: float = 660.0,
        answer_after: float = 2.5,
        lose_pracks_for: float = 0.0,
        answer_in_ok: bool = True,
        provisional: tuple[int, str] = (183, "Session Progress"),
    ) -> None:
        super().__init__(tone_hz=early_hz)
        self.provisional = provisional
        self.reliable = reliable
        self.early_hz = early_hz
        self.answer_hz = answer_hz
        self.answer_after = answer_after
        self.lose_pracks_for = lose_pracks_for
        self.answer_in_ok = answer_in_ok
        self.invite: Request | None = None
        self.progress_sent_at: float | None = None
        self.progress_retransmissions = 0
        self.prack_answered_at: float | None = None
        self.early_packets = 0
        """Packets of `early_hz` sent before the 200 OK."""
        self.gave_up = False
        self._progress: tuple[bytes, Address] | None = None
        self._progress_interval = T1
        self._next_progress = 0.0
        self._answer_sdp = b""

    @property
    def contact_uri(self) -> str:
        return f"sip:media-gw@{HOST}:{self.port}"

    @property
    def route_uri(self) -> str:
        return f"sip:{HOST}:{self.port};lr"

    def _response(self, request: Request, status: int, reason: str, body: bytes = b"") -> Response:
        response = super()._response(request, status, reason, body)
        if request.method == "INVITE" and 100 < status < 300:
            response.headers.set("Contact", f"<{self.contact_uri}>")
            response.headers.add("Record-Route", f"<{self.route_uri}>")
        return response

    def _on_invite(self, invite: Request, addr: Address) -> None:
        if self.invite is not None:
            # A retransmission: the latest response goes out again (RFC 3261 §17.2.1).
            latest = self._ok or self._progress
            if latest is not None:
                self._sip.sendto(*latest)
            return
        self.invite = invite
        self._sip.sendto(self._response(invite, 100, "Trying").to_bytes(), addr)
        self.seen.offer = invite.body.decode("utf-8", "replace")
        answer = answer_offer(self._capabilities(self.rtp_address[1]), self.seen.offer)
        audio = answer.session.audio
        if audio is None or audio.codec != "PCMU":
            self._sip.sendto(self._response(invite, 488, "Not Acceptable Here").to_bytes(), addr)
            return
        self.session = answer.session
        self._media_to = audio.rtp_address
        self._answer_sdp = answer.sdp.encode()
        progress = self._response(invite, *self.provisional, self._answer_sdp)
        if self.reliable:
            progress.headers.add("Require", "100rel")
            progress.headers.add("RSeq", "1")
        self._progress = (progress.to_bytes(), addr)
        self._sip.sendto(*self._progress)
        self.progress_sent_at = time.monotonic()
        self._next_progress = self.progress_sent_at + T1
        self._answered.set()  # the tone starts with the 183: early media

    def _take(self, request: Request) -> bool:
        if request.method != "PRACK":
            return False
        _, addr = self._sip.recvfrom(65535)
        sent = self.progress_sent_at
        if sent is not None and time.monotonic() - sent < self.lose_pracks_for:
            return True
        invite = self.invite
        expected = f"1 {invite.cseq[0]} INVITE" if invite is not None else None
        rack = " ".join((request.headers.get("RAck") or "").split())
        if not self.reliable or rack != expected:
            # RFC 3262 §3: a PRACK that matches no unacknowledged reliable response.
            reply = self._response(request, 481, "Call/Transaction Does Not Exist")
            self._sip.sendto(reply.to_bytes(), addr)
            return True
        self._sip.sendto(self._response(request, 200, "OK").to_bytes(), addr)
        if self.prack_answered_at is None:
            self.prack_answered_at = time.monotonic()
        return True

    def _retransmit_ok(self) -> None:
        now = time.monotonic()
        if self._progress is not None and self.seen.ok_sent_at is None and not self.gave_up:
            self._progress_step(now)
        super()._retransmit_ok()

    def _progress_step(self, now: float) -> None:
        """Retransmit the reliable 183 until PRACKed; send the 200 OK when it is due."""
        assert self.invite is not None and self._progress is not None
        acknowledged = not self.reliable or self.prack_answered_at is not None
        if not acknowledged:
            if self.progress_sent_at is not None and now - self.progress_sent_at > PRACK_PATIENCE:
                refusal = self._response(self.invite, 504, "No PRACK")
                self._sip.sendto(refusal.to_bytes(), self._progress[1])
                self.gave_up = True
                self._media_stop.set()
            elif now >= self._next_progress:
                self._sip.sendto(*self._progress)
                self.progress_retransmissions += 1
                self._progress_interval *= 2
                self._next_progress = now + self._progress_interval
            return
        assert self.progress_sent_at is not None
        if now >= self.progress_sent_at + self.answer_after:
            self._send_ok(now)

    def _send_ok(self, now: float) -> None:
        assert self.invite is not None and self._progress is not None
        body = self._answer_sdp if self.answer_in_ok else b""
        ok = self._response(self.invite, 200, "OK", body)
        self.early_packets = self.seen.rtp_sent
        self.tone_hz = self.answer_hz
        self._ok = (ok.to_bytes(), self._progress[1])
        self._sip.sendto(*self._ok)
        self.seen.ok_sent_at = now
        self._next_retransmit = now + T1


class ChallengingPeer(RecordingPeer):
    """Challenges an INVITE without credentials with 407 (RFC 3261 §22.3) and answers one with
    credentials with `final` (403: the caller is known but may not make this call).

    `challenge=False` answers the first INVITE with `final` at once, unchallenged. The digest
    in each authenticated INVITE is checked here (RFC 2617 §3.2.2, qop=auth) against
    `password`, independently of sip2rtmp's own digest code.
    """

    REALM = "carrier.test"

    def __init__(
        self,
        password: str,
        *,
        final: tuple[int, str] = (403, "Forbidden"),
        challenge: bool = True,
    ) -> None:
        super().__init__(send_media=False)
        self.password = password
        self.final = final
        self.challenge = challenge
        self.nonce = uuid.uuid4().hex
        self.digests: list[dict[str, str]] = []
        """The parameters of each Proxy-Authorization received."""
        self.digest_valid: list[bool] = []

    def _on_invite(self, invite: Request, addr: Address) -> None:
        self.seen.offer = invite.body.decode("utf-8", "replace")
        credentials = invite.headers.get("Proxy-Authorization")
        if credentials is None and self.challenge:
            response = self._response(invite, 407, "Proxy Authentication Required")
            response.headers.add(
                "Proxy-Authenticate",
                f'Digest realm="{self.REALM}", nonce="{self.nonce}", qop="auth", algorithm=MD5',
            )
        else:
            if credentials is not None:
                digest = digest_params(credentials)
                self.digests.append(digest)
                self.digest_valid.append(self._valid(digest, "INVITE"))
            response = self._response(invite, *self.final)
        self._sip.sendto(response.to_bytes(), addr)

    def _valid(self, digest: dict[str, str], method: str) -> bool:
        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        try:
            ha1 = md5(f"{digest['username']}:{self.REALM}:{self.password}")
            ha2 = md5(f"{method}:{digest['uri']}")
            expected = md5(
                f"{ha1}:{self.nonce}:{digest['nc']}:{digest['cnonce']}:{digest['qop']}:{ha2}"
            )
        except KeyError:
            return False
        return digest.get("response") == expected and digest.get("realm") == self.REALM


def digest_params(value: str) -> dict[str, str]:
    """`Digest a="b", c=d` as a dict (RFC 2617 §3.2.2), quotes removed."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    pairs = re.findall(r'([\w-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)', rest)
    return {name.lower(): raw[1:-1] if raw.startswith('"') else raw for name, raw in pairs}


OPUS_SILENCE = b"\xf8\xff\xfe"
"""One 20 ms Opus frame of silence (TOC config 31, CELT fullband, mono; RFC 6716 §3.1)."""


@dataclass(frozen=True)
class TelephoneEvent:
    """One RFC 4733 packet as received (§2.3), with its arrival time."""

    at: float
    timestamp: int
    marker: bool
    event: int
    end: bool
    duration: int


class OpusEventPeer(RecordingPeer):
    """Answers Opus with `telephone-event/8000` as its only event format, although the offer
    also had `telephone-event/48000` (or, `with_events=False`, with no event format at all);
    sends Opus silence and keeps every RTP packet of the event payload type."""

    def __init__(self, *, with_events: bool = True) -> None:
        super().__init__()
        self.with_events = with_events
        """False: the answer lists no telephone-event at all, so DTMF must go as SIP INFO."""
        self.opus_pt: int | None = None
        self.event_pt: int | None = None
        """The payload type of `telephone-event/8000` in the offer, used in the answer."""
        self.events: list[TelephoneEvent] = []

    def _on_invite(self, invite: Request, addr: Address) -> None:
        if self.seen.offer:
            if self._ok is not None:
                self._sip.sendto(*self._ok)
            return
        self._sip.sendto(self._response(invite, 100, "Trying").to_bytes(), addr)
        offer = invite.body.decode("utf-8", "replace")
        self.seen.offer = offer
        rtpmap = {
            name.lower(): int(pt)
            for pt, name in re.findall(r"^a=rtpmap:(\d+) (\S+)", offer, re.MULTILINE)
        }
        self.opus_pt = rtpmap.get("opus/48000/2")
        self.event_pt = rtpmap.get("telephone-event/8000")
        # The answer's address for our media comes from the offer; the answer itself is
        # written here, so it has exactly the formats this peer chooses.
        ours = answer_offer(self._capabilities(self.rtp_address[1]), offer).session.audio
        if self.opus_pt is None or self.event_pt is None or ours is None:
            self._sip.sendto(self._response(invite, 488, "Not Acceptable Here").to_bytes(), addr)
            return
        self._media_to = ours.rtp_address
        ok = self._response(invite, 200, "OK", self._answer(offer).encode())
        self._ok = (ok.to_bytes(), addr)
        self._sip.sendto(*self._ok)
        self.seen.ok_sent_at = time.monotonic()
        self._next_retransmit = self.seen.ok_sent_at + T1
        self._answered.set()

    def _answer(self, offer: str) -> str:
        """RFC 3264 §6.1: one m= line per offered one, in order, declined ones at port 0."""
        lines = [
            "v=0",
            f"o=peer {self.port} 1 IN IP4 {HOST}",
            "s=-",
            f"c=IN IP4 {HOST}",
            "t=0 0",
        ]
        audio_done = False
        for m_line in re.findall(r"^m=.*$", offer, re.MULTILINE):
            media, _, proto, *formats = m_line[2:].split()
            if media == "audio" and not audio_done:
                audio_done = True
                events = [
                    f"a=rtpmap:{self.event_pt} telephone-event/8000",
                    f"a=fmtp:{self.event_pt} 0-16",
                ]
                formats_answered = f"{self.opus_pt} {self.event_pt}" if self.with_events else ""
                lines += [
                    f"m=audio {self.rtp_address[1]} {proto} {formats_answered or self.opus_pt}",
                    f"a=rtpmap:{self.opus_pt} opus/48000/2",
                    *(events if self.with_events else []),
                    "a=ptime:20",
                    "a=sendrecv",
                ]
            else:
                lines.append(f"m={media} 0 {proto} {formats[0] if formats else '0'}")
        return "\r\n".join(lines) + "\r\n"

    def _on_rtp(self) -> None:
        data = self._rtp.recv(65535, socket.MSG_PEEK)
        if not is_rtcp(data) and len(data) >= 16:
            packet = RtpPacket.parse(data)
            if packet.payload_type == self.event_pt and len(packet.payload) >= 4:
                event, flags, duration = struct.unpack_from("!BBH", packet.payload)
                self.events.append(
                    TelephoneEvent(
                        time.monotonic(),
                        packet.timestamp,
                        packet.marker,
                        event,
                        bool(flags & 0x80),
                        duration,
                    )
                )
        super()._on_rtp()

    def _send_tone(self) -> None:
        """Opus silence every 20 ms from the 200 OK, so the call has media from the callee."""
        self._answered.wait()
        destination = self._media_to
        if destination is None or self.opus_pt is None:
            return
        ssrc, start, index = uuid.uuid4().int & 0xFFFFFFFF, time.monotonic(), 0
        while not self._media_stop.is_set():
            packet = RtpPacket(self.opus_pt, index & 0xFFFF, index * 960, ssrc, OPUS_SILENCE)
            self._rtp.sendto(packet.serialize(), destination)
            self.seen.rtp_sent += 1
            index += 1
            self._media_stop.wait(max(start + index * 0.02 - time.monotonic(), 0.0))
