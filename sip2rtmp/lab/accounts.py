"""The lab's SIP accounts: who exists, with which password, and what each callee sends.

Tests and the demo read this table instead of repeating users, passwords and tone frequencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What an account does in the lab."""

    RELAY = "relay"
    """The account sip2rtmp itself registers and calls from."""
    CALLEE = "callee"
    """A baresip process that answers automatically and sends a tone (and maybe video)."""
    NO_ANSWER = "noanswer"
    """A baresip process that registers and rings but never answers."""


@dataclass(frozen=True)
class LabAccount:
    """One subscriber of the lab domain and, for callees, what its baresip sends."""

    user: str
    password: str
    role: Role
    tone_hz: int | None = None
    """Frequency of the sine the callee sends as audio; None for the relay account."""
    video_codec: str | None = None
    """Video codec the callee sends (H264 or VP8); None for an audio-only callee."""
    audio_codecs: tuple[str, ...] = ()
    """Codecs the callee accepts, as baresip's full names; empty means all it has."""
    sip_port: int | None = None
    """Loopback UDP/TCP port of the callee's baresip (TLS takes the next one); None for relay."""
    ctrl_port: int | None = None
    """Loopback port of the callee's baresip ctrl_tcp (netstring JSON) interface."""
    rtp_ports: tuple[int, int] | None = None
    """Inclusive RTP/RTCP port range of the callee, so traffic to it can be told apart."""
    media_encryption: str | None = None
    """baresip's `mediaenc` for the callee (`srtp-mand`: SDES-SRTP or 488); None for plain RTP."""

    @property
    def video(self) -> bool:
        """Whether the callee sends video."""
        return self.video_codec is not None

    @property
    def is_callee(self) -> bool:
        """Whether a baresip process runs for this account."""
        return self.role is not Role.RELAY


CALLEE_RTP_BASE = 10000


def _callee(
    index: int,
    user: str,
    password: str,
    *,
    role: Role = Role.CALLEE,
    tone_hz: int = 440,
    video_codec: str | None = None,
    audio_codecs: tuple[str, ...] = (),
    media_encryption: str | None = None,
) -> LabAccount:
    """A callee with ports derived from its index, so no two callees share one.

    Callee RTP ports lie below sip2rtmp's own range (16384-32767) and the kernel's ephemeral
    ports, so a capture or a fault rule on a callee's range never catches the relay's side.
    """
    rtp_low = CALLEE_RTP_BASE + 100 * index
    return LabAccount(
        user=user,
        password=password,
        role=role,
        tone_hz=tone_hz,
        video_codec=video_codec,
        audio_codecs=audio_codecs,
        sip_port=5070 + 2 * index,
        ctrl_port=4440 + index,
        rtp_ports=(rtp_low, rtp_low + 99),
        media_encryption=media_encryption,
    )


LAB_ACCOUNTS: tuple[LabAccount, ...] = (
    LabAccount(user="relay", password="relay-lab-Quokka-7291", role=Role.RELAY),
    _callee(0, "tone", "tone-lab-Heron-4417", tone_hz=440),
    _callee(1, "video", "video-lab-Ibis-5803", tone_hz=660, video_codec="H264"),
    _callee(2, "noanswer", "noanswer-lab-Sloth-3362", role=Role.NO_ANSWER, tone_hz=440),
    _callee(3, "pcmu", "pcmu-lab-Marten-1954", audio_codecs=("PCMU/8000/1",)),
    _callee(4, "pcma", "pcma-lab-Lynx-8820", audio_codecs=("PCMA/8000/1",)),
    _callee(5, "g722", "g722-lab-Otter-6075", audio_codecs=("G722/16000/1",)),
    _callee(6, "opus", "opus-lab-Puffin-2748", audio_codecs=("opus/48000/2",)),
    _callee(7, "vp8", "vp8-lab-Tapir-9136", tone_hz=440, video_codec="VP8"),
    _callee(8, "srtp", "srtp-lab-Pangolin-6613", tone_hz=440, media_encryption="srtp-mand"),
)
"""Every subscriber of the lab domain; distinctive passwords make a leak into a log easy to grep."""

BUSY_USER = "busy"
"""No account: kamailio answers an authenticated INVITE to it with 486 Busy Here."""
DECLINE_USER = "decline"
"""No account: kamailio answers an authenticated INVITE to it with 603 Decline."""
UNKNOWN_USER = "nobody"
"""No account and never registered: an INVITE to it gets 404 Not Found."""


def account(user: str) -> LabAccount:
    """The lab account named `user`; KeyError names the user if there is none."""
    for candidate in LAB_ACCOUNTS:
        if candidate.user == user:
            return candidate
    raise KeyError(user)


RELAY_ACCOUNT = account("relay")
CALLEES: tuple[LabAccount, ...] = tuple(a for a in LAB_ACCOUNTS if a.is_callee)
