"""The dialog's session description state (RFC 3264 §8): what we can do, what we last sent,
and how to answer the peer's later offers.

Our INVITE's offer lists everything we can receive; it stays our capabilities for the whole
call. Each offer from the peer in the dialog (a re-INVITE or UPDATE with SDP) is answered
from them by `sip.sdp.answer_offer`: hold is answered `recvonly`, a stream the peer declines
(port 0) stays declined, the codec is one we offered, and our o= version moves only when our
SDP changes. An offer with no usable stream at all is refused (488) and the session stays as
it was. A re-INVITE without SDP asks for our offer: the last SDP we sent, whose answer comes
in the ACK.
"""

from __future__ import annotations

from dataclasses import dataclass

from sip2rtmp.sip.sdp import NegotiatedSession, SdpParseError, answer_offer, negotiate


class UnacceptableOffer(ValueError):
    """The peer's offer cannot be answered: malformed, or no stream we can take (RFC 3264 §6:
    488 Not Acceptable Here). `status` is the response to send."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class SessionState:
    """Our side of the offer/answer exchanges of one call."""

    capabilities: bytes
    """The offer of our INVITE: every codec, port and address we can use."""
    local: bytes
    """The last SDP we sent in the dialog (offer or answer)."""

    def answer(self, offer: bytes) -> tuple[bytes, NegotiatedSession]:
        """Our answer to the peer's offer, and the session it makes; the answer becomes our
        last SDP. Raises `UnacceptableOffer`."""
        try:
            result = answer_offer(
                self.capabilities.decode("utf-8", "replace"),
                offer.decode("utf-8", "replace"),
                previous=self.local.decode("utf-8", "replace"),
            )
        except SdpParseError as error:
            raise UnacceptableOffer(488, f"unusable offer: {error}") from None
        session = result.session
        if session.audio is None and session.video is None:
            raise UnacceptableOffer(488, "no stream we can take")
        answer = result.sdp.encode()
        self.local = answer
        return answer, session

    def take_answer(self, answer: bytes) -> NegotiatedSession:
        """The session the peer's answer to our last SDP makes (an ACK's body after an
        offerless re-INVITE). Raises `UnacceptableOffer` when it cannot be read."""
        try:
            return negotiate(
                self.local.decode("utf-8", "replace"), answer.decode("utf-8", "replace")
            )
        except SdpParseError as error:
            raise UnacceptableOffer(400, f"unusable answer: {error}") from None
