"""SDP (RFC 4566) and the offer/answer model (RFC 3264) for one audio and one video stream.

``build_offer`` writes what we can receive, ``negotiate`` reads the answer into typed
per-stream parameters, and ``answer_offer`` answers a re-INVITE's offer from the same
capabilities, keeping the o= version when nothing changed (RFC 3264 §8).

SRTP is negotiated with security descriptions (RFC 4568, `sip.sdes`). Our offer sets the
mode for the whole call: no ``a=crypto`` lines is plain RTP only; ``RTP/AVP`` with them is
SRTP where the peer takes it (many PBXs do; RFC 4568 §6 leaves the profile to the offer);
``RTP/SAVP`` with them is SRTP or nothing. No message of ours carries a key (`mask_keys`).

A description comes from the network: parsing it, and negotiating with it, cost time linear
in its size, keep to the caps below, and raise nothing but `SdpParseError`. Every number is
checked for its digits and range before it is converted.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from sip2rtmp.sip.sdes import KEY_LENGTHS, CryptoAttribute, SrtpKeys, mask_keys, read_crypto

__all__ = [
    "Connection",
    "MediaDescription",
    "NegotiatedSession",
    "NegotiatedStream",
    "Origin",
    "RtpMap",
    "SdpAnswer",
    "SdpParseError",
    "SessionDescription",
    "SrtpOffer",
    "answer_offer",
    "build_offer",
    "negotiate",
    "parse_fmtp",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_CANONICAL_NAMES = {
    "PCMU": "PCMU",
    "PCMA": "PCMA",
    "G722": "G722",
    "OPUS": "opus",
    "H264": "H264",
    "VP8": "VP8",
    "TELEPHONE-EVENT": "telephone-event",
    "CN": "CN",
}
_MEDIA_CODECS = frozenset(("PCMU", "PCMA", "G722", "opus", "H264", "VP8"))
_STATIC = {  # RFC 3551 §6
    0: ("PCMU", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    13: ("CN", 8000, 1),
}
_SAMPLE_RATE = {"G722": 16000}  # RTP clock 8000, audio at 16 kHz (RFC 3551 §4.5.2)

MAX_SDP_SIZE = 65535
"""Characters per description: what the largest SIP message we accept can carry."""
MAX_SDP_LINES = 1024
"""Lines per description, attribute lines included. A WebRTC offer listing every codec,
extension and candidate has a few hundred."""
MAX_MEDIA_SECTIONS = 16
"""m= sections: a call has one audio and one video, a conference client a handful."""
MAX_FORMATS = 64
"""Formats per m= line; RTP has 128 payload types, and real offers list under 30."""
MAX_TOKEN_LENGTH = 64
"""Length of an m= line's media type, protocol and each format, which an answer echoes (they
are RFC 4566 tokens: printable ASCII)."""
MAX_ADDRESS_LENGTH = 255
"""A host name (253 characters, RFC 1035 §2.3.4) or an address with its multicast suffix."""
_MAX_PAYLOAD_TYPE = 127
_MAX_PORT = 65535
_MAX_U32 = 2**32 - 1
_MAX_SESSION_VERSION = 2**64 - 1  # RFC 4566 §5.2 suggests an NTP timestamp
_MAX_PTIME_MS = 1000
_SRTP_PROTOS = frozenset(("RTP/SAVP", "RTP/SAVPF"))  # RFC 3711 §12, RFC 5124
_RTP_PROTOS = frozenset(("RTP/AVP", "RTP/AVPF")) | _SRTP_PROTOS
_MAX_REASONS = 2
"""Refused crypto lines named in an error: enough to see why, short enough for one line."""


class SdpParseError(ValueError):
    """The text is not a session description we can use."""


@dataclass(slots=True)
class Origin:
    """The o= line (RFC 4566 §5.2)."""

    username: str
    session_id: str
    session_version: int
    nettype: str
    addrtype: str
    address: str

    def serialize(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(slots=True)
class Connection:
    """The c= line (RFC 4566 §5.7); a multicast TTL suffix stays in ``address``."""

    nettype: str
    addrtype: str
    address: str

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    def serialize(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """An a=rtpmap entry, or the RFC 3551 static defaults; names are canonical case."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1


def _canonical(name: str) -> str:
    return _CANONICAL_NAMES.get(name.upper(), name)


def parse_fmtp(value: str) -> dict[str, str]:
    """``k=v;k=v`` parameters, keys lower-cased; a bare token maps to ""."""
    params: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, val = part.strip().partition("=")
        if key:
            params[key.strip().lower() if sep else key.strip()] = val.strip()
    return params


def _excerpt(text: str) -> str:
    """Enough of a hostile line to recognise it in a message, never all of it, and never an
    SRTP key."""
    masked = mask_keys(text)
    return repr(masked[:40]) + ("..." if len(masked) > 40 else "")


def _number(text: str, what: str, maximum: int, minimum: int = 0) -> int:
    """A decimal field (RFC 4566 §9 ``integer``): ASCII digits, as many as ``maximum`` has,
    checked before ``int()`` so that a 4,300-digit field costs nothing and raises our error."""
    if not 0 < len(text) <= len(str(maximum)) or not text.isascii() or not text.isdigit():
        raise SdpParseError(f"bad {what}: {_excerpt(text)}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise SdpParseError(f"{what} {value} out of range")
    return value


def _address(text: str) -> str:
    if len(text) > MAX_ADDRESS_LENGTH or not text.isascii() or not text.isprintable():
        raise SdpParseError(f"bad address: {_excerpt(text)}")
    return text


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpParseError(f"bad c= line: {_excerpt(value)}")
    return Connection(parts[0], parts[1], _address(parts[2]))


def _parse_port(text: str) -> int:
    return _number(text, "port", _MAX_PORT)


def _parse_bandwidth(value: str) -> str:
    """b=<bwtype>:<bandwidth> (RFC 4566 §5.8); kept as text, but only if it is well formed."""
    kind, sep, amount = value.partition(":")
    if not sep or not kind:
        raise SdpParseError(f"bad b= line: {_excerpt(value)}")
    _number(amount, "bandwidth", _MAX_U32)
    return value


def _parse_rtpmap(value: str) -> RtpMap | None:
    """``<payload type> <encoding name>/<clock rate>[/<channels>]`` (RFC 4566 §6), or None."""
    pt_text, _, spec = value.strip().partition(" ")
    parts = spec.strip().split("/")
    if len(parts) not in (2, 3):
        return None
    try:
        pt = _number(pt_text, "payload type", _MAX_PAYLOAD_TYPE)
        rate = _number(parts[1], "clock rate", _MAX_U32, 1)
        channels = _number(parts[2], "channels", 255, 1) if len(parts) > 2 else 1
    except SdpParseError:
        return None
    return RtpMap(pt, _canonical(parts[0]), rate, channels)


@dataclass(slots=True)
class MediaDescription:
    """One m= section (RFC 4566 §5.14) with its c=, b= and a= lines."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.attributes if k == name and v is not None]

    def first(self, name: str) -> str | None:
        values = self.values(name)
        return values[0] if values else None

    def has(self, name: str) -> bool:
        return any(k == name for k, _ in self.attributes)

    @property
    def payload_types(self) -> list[int]:
        """The formats that are RTP payload types, each once, in the order listed."""
        found = (int(f) for f in self.formats if len(f) <= 3 and f.isascii() and f.isdigit())
        return list(dict.fromkeys(pt for pt in found if pt <= _MAX_PAYLOAD_TYPE))

    def rtpmaps(self) -> dict[int, RtpMap]:
        """Every format's encoding: explicit rtpmap, else the static table; malformed skipped."""
        maps: dict[int, RtpMap] = {}
        for value in self.values("rtpmap"):
            rtpmap = _parse_rtpmap(value)
            if rtpmap is not None:
                maps.setdefault(rtpmap.payload_type, rtpmap)
        for pt in self.payload_types:
            if pt not in maps and pt in _STATIC:
                maps[pt] = RtpMap(pt, *_STATIC[pt])
        return maps

    def fmtp_texts(self) -> dict[str, str]:
        """Each payload type's first a=fmtp parameters, by the type as written: one pass."""
        texts: dict[str, str] = {}
        for value in self.values("fmtp"):
            pt_text, _, params = value.strip().partition(" ")
            texts.setdefault(pt_text, params.strip())
        return texts

    def fmtp_text(self, payload_type: int) -> str | None:
        return self.fmtp_texts().get(str(payload_type))

    def fmtp(self, payload_type: int) -> dict[str, str]:
        text = self.fmtp_text(payload_type)
        return parse_fmtp(text) if text is not None else {}

    def rtcp_fb(self, payload_type: int) -> frozenset[str]:
        """RFC 4585 §4.2 feedback types for a payload type, wildcard entries included."""
        found: set[str] = set()
        for value in self.values("rtcp-fb"):
            pt_text, _, kind = value.strip().partition(" ")
            if pt_text in ("*", str(payload_type)) and kind.strip():
                found.add(" ".join(kind.split()))
        return frozenset(found)

    def direction(self, default: str = "sendrecv") -> str:
        for name, _ in self.attributes:
            if name in DIRECTIONS:
                return name
        return default

    @property
    def ptime(self) -> int | None:
        """a=ptime in whole milliseconds (RFC 4566 §6); None if absent or unusable."""
        return self._milliseconds("ptime")

    @property
    def maxptime(self) -> int | None:
        """a=maxptime in whole milliseconds (RFC 4566 §6): the most media one packet may
        carry; None if absent or unusable."""
        return self._milliseconds("maxptime")

    def _milliseconds(self, name: str) -> int | None:
        value = self.first(name)
        if value is None or len(value) > 16 or not value.isascii():
            return None
        try:
            milliseconds = round(float(value))
        except (ValueError, OverflowError):
            return None
        return milliseconds if 0 < milliseconds <= _MAX_PTIME_MS else None

    def rtcp_attribute(self) -> tuple[int, str | None] | None:
        """a=rtcp (RFC 3605): the RTCP port and, if given, its address."""
        value = self.first("rtcp")
        if value is None:
            return None
        parts = value.split()
        try:
            port = _number(parts[0], "RTCP port", _MAX_PORT, 1)
            address = _address(parts[3]) if len(parts) >= 4 else None
        except (SdpParseError, IndexError):
            return None
        return port, address

    def serialize(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        lines = [f"m={self.kind} {port} {' '.join([self.proto, *self.formats])}"]
        lines += [f"{k}={v}" for k, v in self.other if k == "i"]
        if self.connection is not None:
            lines.append(f"c={self.connection.serialize()}")
        lines += [f"b={b}" for b in self.bandwidths]
        lines += [f"{k}={v}" for k, v in self.other if k != "i"]
        lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        return lines


@dataclass(slots=True)
class SessionDescription:
    """A whole SDP body (RFC 4566 §5)."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    timing: list[str] = field(default_factory=lambda: ["0 0"])
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)

    def direction(self) -> str:
        for name, _ in self.attributes:
            if name in DIRECTIONS:
                return name
        return "sendrecv"

    @classmethod
    def parse(cls, text: str) -> SessionDescription:
        """Parse strictly enough to trust the structure; unknown lines are kept."""
        if len(text) > MAX_SDP_SIZE:
            raise SdpParseError(f"SDP of {len(text)} characters, over {MAX_SDP_SIZE}")
        lines = [line.rstrip("\r") for line in text.split("\n")]
        lines = [line for line in lines if line.strip()]
        if not lines or lines[0].strip() != "v=0":
            raise SdpParseError("SDP must start with v=0")
        if len(lines) > MAX_SDP_LINES:
            raise SdpParseError(f"SDP of {len(lines)} lines, over {MAX_SDP_LINES}")
        origin: Origin | None = None
        session = cls(Origin("-", "0", 0, "IN", "IP4", "0.0.0.0"))
        session.timing = []
        current: MediaDescription | None = None
        for line in lines[1:]:
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
                raise SdpParseError(f"not an SDP line: {_excerpt(line)}")
            kind, value = line[0], line[2:]
            if kind == "m":
                if len(session.media) == MAX_MEDIA_SECTIONS:
                    raise SdpParseError(f"more than {MAX_MEDIA_SECTIONS} media sections")
                current = _parse_media(value)
                session.media.append(current)
            elif kind == "a":
                name, sep, attr_value = value.partition(":")
                if not name:
                    raise SdpParseError(f"empty attribute: {_excerpt(line)}")
                attribute = (name, attr_value if sep else None)
                (current.attributes if current else session.attributes).append(attribute)
            elif kind == "c":
                connection = _parse_connection(value)
                if current is None:
                    session.connection = connection
                else:
                    current.connection = connection
            elif kind == "b":
                bandwidth = _parse_bandwidth(value)
                (current.bandwidths if current else session.bandwidths).append(bandwidth)
            elif current is not None:
                current.other.append((kind, value))
            elif kind == "o":
                origin = _parse_origin(value)
            elif kind == "s":
                session.session_name = value
            elif kind == "t":
                session.timing.append(value)
            elif kind == "v":
                raise SdpParseError("repeated v= line")
            else:
                session.other.append((kind, value))
        if origin is None:
            raise SdpParseError("SDP has no o= line")
        session.origin = origin
        session.timing = session.timing or ["0 0"]
        return session

    def serialize(self) -> str:
        """CRLF-terminated text in RFC 4566 §5 line order."""
        lines = ["v=0", f"o={self.origin.serialize()}", f"s={self.session_name}"]
        lines += [f"{k}={v}" for k, v in self.other if k in "iuep"]
        if self.connection is not None:
            lines.append(f"c={self.connection.serialize()}")
        lines += [f"b={b}" for b in self.bandwidths]
        lines += [f"t={t}" for t in self.timing]
        lines += [f"{k}={v}" for k, v in self.other if k not in "iuep"]
        lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        for media in self.media:
            lines += media.serialize()
        return "\r\n".join(lines) + "\r\n"


def _parse_origin(value: str) -> Origin:
    """o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address> (RFC 4566 §5.2).

    The session id is kept as text and never converted, so it is only bounded in length.
    """
    parts = value.split()
    if len(parts) != 6:
        raise SdpParseError(f"bad o= line: {_excerpt(value)}")
    if len(parts[1]) > MAX_TOKEN_LENGTH:
        raise SdpParseError(f"bad session id: {_excerpt(parts[1])}")
    version = _number(parts[2], "session version", _MAX_SESSION_VERSION)
    return Origin(parts[0], parts[1], version, parts[3], parts[4], _address(parts[5]))


def _parse_media(value: str) -> MediaDescription:
    """m=<media> <port>[/<number of ports>] <proto> <fmt> ... (RFC 4566 §5.14)."""
    parts = value.split(maxsplit=MAX_FORMATS + 3)
    if len(parts) < 3:
        raise SdpParseError(f"bad m= line: {_excerpt(value)}")
    if len(parts) > MAX_FORMATS + 3:
        raise SdpParseError(f"m= line with more than {MAX_FORMATS} formats")
    if any(len(part) > MAX_TOKEN_LENGTH for part in parts) or not value.isascii():
        raise SdpParseError(f"m= line with an overlong or non-ASCII field: {_excerpt(value)}")
    if not all(part.isprintable() for part in parts):
        raise SdpParseError(f"m= line with control characters: {_excerpt(value)}")
    port_text, _, count_text = parts[1].partition("/")
    port = _parse_port(port_text)
    count = _parse_port(count_text) if count_text else None
    return MediaDescription(parts[0], port, parts[2], parts[3:], count)


@dataclass(frozen=True, slots=True)
class _Codec:
    name: str
    payload_type: int
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None
    feedback: tuple[str, ...] = ()


_VIDEO_FEEDBACK = ("nack pli", "ccm fir")
_AUDIO_OFFER = {
    "opus": _Codec("opus", 111, 48000, 2, "useinbandfec=1"),
    "G722": _Codec("G722", 9, 8000),
    "PCMU": _Codec("PCMU", 0, 8000),
    "PCMA": _Codec("PCMA", 8, 8000),
}
_TELEPHONE_EVENTS = (
    _Codec("telephone-event", 101, 8000, 1, "0-16"),
    _Codec("telephone-event", 110, 48000, 1, "0-16"),
)
_COMFORT_NOISE = _Codec("CN", 13, 8000)
"""RFC 3389 comfort noise under its static number (RFC 3551 §6), listed last so that no
answerer takes it for the call's codec."""
_VIDEO_OFFER = {
    "H264": _Codec(
        "H264",
        96,
        90000,
        1,
        "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1",
        _VIDEO_FEEDBACK,
    ),
    "H264/0": _Codec(
        "H264",
        97,
        90000,
        1,
        "profile-level-id=42e01f;packetization-mode=0;level-asymmetry-allowed=1",
        _VIDEO_FEEDBACK,
    ),
    "VP8": _Codec("VP8", 98, 90000, 1, None, _VIDEO_FEEDBACK),
}
DEFAULT_AUDIO_CODECS = ("opus", "G722", "PCMU", "PCMA")


def audio_codecs_named(names: Sequence[str]) -> tuple[str, ...]:
    """The offer's names for audio codecs written in any case (``pcmu`` is ``PCMU``), each
    once, in the order given; ValueError names the first that cannot be offered."""
    known = {name.upper(): name for name in _AUDIO_OFFER}
    offered: dict[str, None] = {}
    for name in names:
        canonical = known.get(name.strip().upper())
        if canonical is None:
            raise ValueError(f"unknown audio codec {name.strip()!r}")
        offered[canonical] = None
    return tuple(offered)


DEFAULT_VIDEO_CODECS = ("H264", "H264/0", "VP8")


def _codec_attributes(codec: _Codec) -> list[tuple[str, str | None]]:
    pt = codec.payload_type
    suffix = f"/{codec.channels}" if codec.channels != 1 else ""
    attrs: list[tuple[str, str | None]] = [
        ("rtpmap", f"{pt} {codec.name}/{codec.clock_rate}{suffix}")
    ]
    if codec.fmtp:
        attrs.append(("fmtp", f"{pt} {codec.fmtp}"))
    attrs += [("rtcp-fb", f"{pt} {fb}") for fb in codec.feedback]
    return attrs


def _media_section(
    kind: str,
    port: int,
    codecs: Sequence[_Codec],
    extra: list[tuple[str, str | None]],
    proto: str = "RTP/AVP",
) -> MediaDescription:
    attributes: list[tuple[str, str | None]] = []
    for codec in codecs:
        attributes += _codec_attributes(codec)
    formats = [str(c.payload_type) for c in codecs]
    return MediaDescription(kind, port, proto, formats, attributes=attributes + extra)


def _crypto_attributes(lines: Sequence[CryptoAttribute]) -> list[tuple[str, str | None]]:
    return [("crypto", line.serialize()) for line in lines]


def _rtcp_port(port: int | None) -> list[tuple[str, str | None]]:
    return [] if port is None else [("rtcp", str(port))]


def build_offer(
    local_ip: str,
    audio_port: int,
    video_port: int | None = None,
    *,
    session_id: int,
    session_version: int = 0,
    username: str = "-",
    session_name: str = "sip2rtmp",
    audio_codecs: Sequence[str] = DEFAULT_AUDIO_CODECS,
    video_codecs: Sequence[str] = DEFAULT_VIDEO_CODECS,
    ptime: int = 20,
    rtcp_mux: bool = True,
    audio_rtcp_port: int | None = None,
    video_rtcp_port: int | None = None,
    srtp: SrtpOffer | None = None,
) -> str:
    """Our initial offer: everything we can receive, best quality first (RFC 3264 §5).

    Video codec names are "H264" (packetization-mode=1), "H264/0" (mode 0) and "VP8".
    Telephone-events are offered at 8 and 48 kHz to match the audio clock (RFC 4733 §2.1),
    comfort noise at 8 kHz for the 8 kHz clock codecs (RFC 3389 §5).
    An RTCP port that is not the RTP port + 1 (a NAT maps each socket its own way) goes
    into `a=rtcp:` (RFC 3605 §2.1); its address is the `c=` one, so the port alone.
    ``srtp`` sets every m= line's profile and adds each stream's ``a=crypto`` lines
    (RFC 4568 §6.1).
    """
    try:
        audio = [_AUDIO_OFFER[name] for name in audio_codecs]
        video = [_VIDEO_OFFER[name] for name in video_codecs]
    except KeyError as exc:
        raise ValueError(f"unknown codec {exc.args[0]!r}") from None
    if not audio:
        raise ValueError("offer needs at least one audio codec")
    proto = srtp.profile if srtp is not None else "RTP/AVP"
    if proto not in _RTP_PROTOS:
        raise ValueError(f"unknown RTP profile {proto!r}")
    if srtp is not None and not (srtp.audio and (srtp.video or video_port is None or not video)):
        raise ValueError("an SRTP offer needs a=crypto lines for every stream")
    audio_crypto = _crypto_attributes(srtp.audio) if srtp is not None else []
    video_crypto = _crypto_attributes(srtp.video) if srtp is not None else []
    addrtype = "IP6" if ":" in local_ip else "IP4"
    common: list[tuple[str, str | None]] = [("rtcp-mux", None)] if rtcp_mux else []
    session = SessionDescription(
        Origin(username, str(session_id), session_version, "IN", addrtype, local_ip),
        session_name,
        Connection("IN", addrtype, local_ip),
    )
    session.media.append(
        _media_section(
            "audio",
            audio_port,
            [*audio, *_TELEPHONE_EVENTS, _COMFORT_NOISE],
            [
                *audio_crypto,
                ("ptime", str(ptime)),
                *_rtcp_port(audio_rtcp_port),
                *common,
                ("sendrecv", None),
            ],
            proto,
        )
    )
    if video_port is not None and video:
        extra = [*video_crypto, *_rtcp_port(video_rtcp_port), *common, ("sendrecv", None)]
        session.media.append(_media_section("video", video_port, video, extra, proto))
    return session.serialize()


@dataclass(frozen=True, slots=True)
class SrtpOffer:
    """SRTP in our offer: ``RTP/SAVP`` when it is required, ``RTP/AVP`` with the crypto
    lines when it is optional (the best-effort practice many PBXs honour), and each
    stream's ``a=crypto`` lines with our keys."""

    profile: str
    """"RTP/SAVP" (required) or "RTP/AVP" (optional)."""
    audio: tuple[CryptoAttribute, ...]
    video: tuple[CryptoAttribute, ...]
    """Empty when the offer has no video."""


@dataclass(frozen=True, slots=True)
class NegotiatedStream:
    """What both sides agreed for one stream, ready for the RTP layer.

    ``payload_type`` is what we send with (the remote's number); the remote may send with
    ``payload_type`` or ``local_payload_type`` (ours), so accept both. ``direction`` is as
    the remote declared it.

    Telephone-events may run on another clock than the codec's (Opus at 48 kHz with
    ``telephone-event/8000``): ``telephone_event_clock_rate`` is theirs. Comfort noise
    (RFC 3389) is on the codec's clock, and its payload types are received like the codec's.
    ``ptime`` and ``maxptime`` are the remote's wishes for the packets we send (RFC 4566 §6).
    """

    kind: str
    rtp_address: tuple[str, int]
    rtcp_address: tuple[str, int]
    rtcp_mux: bool
    codec: str
    payload_type: int
    local_payload_type: int
    clock_rate: int
    sample_rate: int
    channels: int
    fmtp: Mapping[str, str]
    telephone_event_pt: int | None
    local_telephone_event_pt: int | None
    direction: str
    ptime: int | None
    rtcp_fb: frozenset[str]
    telephone_event_clock_rate: int | None = None
    comfort_noise_pt: int | None = None
    local_comfort_noise_pt: int | None = None
    maxptime: int | None = None
    srtp: SrtpKeys | None = None
    """The SRTP keys when the stream is encrypted (RFC 4568), None for plain RTP."""

    @property
    def receive_payload_types(self) -> frozenset[int]:
        """The media the remote may send: the codec and comfort noise, under either number."""
        types = frozenset((self.payload_type, self.local_payload_type))
        return types | self.comfort_noise_payload_types

    @property
    def comfort_noise_payload_types(self) -> frozenset[int]:
        """RFC 3389 payload types, under the remote's number and ours; empty if not agreed."""
        types = (self.comfort_noise_pt, self.local_comfort_noise_pt)
        return frozenset(pt for pt in types if pt is not None)


@dataclass(frozen=True, slots=True)
class NegotiatedSession:
    """Result of an offer/answer exchange; a rejected or absent stream is None."""

    audio: NegotiatedStream | None
    video: NegotiatedStream | None
    remote_origin: Origin


def _as_description(sdp: str | SessionDescription) -> SessionDescription:
    return sdp if isinstance(sdp, SessionDescription) else SessionDescription.parse(sdp)


def _packetization_mode(fmtp_texts: Mapping[str, str], payload_type: int) -> str:
    return parse_fmtp(fmtp_texts.get(str(payload_type), "")).get("packetization-mode", "0")


def _same_codec(
    rmap: RtpMap, remote_fmtp: Mapping[str, str], lmap: RtpMap, local_fmtp: Mapping[str, str]
) -> bool:
    if (rmap.encoding.upper(), rmap.clock_rate) != (lmap.encoding.upper(), lmap.clock_rate):
        return False
    if rmap.encoding == "opus":
        return True  # opus is always signalled /2 (RFC 7587 §7)
    if rmap.channels != lmap.channels:
        return False
    if rmap.encoding == "H264":
        return _packetization_mode(remote_fmtp, rmap.payload_type) == _packetization_mode(
            local_fmtp, lmap.payload_type
        )
    return True


@dataclass(frozen=True, slots=True)
class _Selection:
    """The codec both sides listed, and the telephone-event and comfort-noise pairs that go
    with it (None where there is none): the remote's entry first, ours second."""

    remote: RtpMap
    local: RtpMap
    remote_event: RtpMap | None = None
    local_event: RtpMap | None = None
    remote_noise: RtpMap | None = None
    local_noise: RtpMap | None = None


def _pairs(
    remote: Sequence[RtpMap], local: Sequence[RtpMap], encoding: str
) -> list[tuple[RtpMap, RtpMap]]:
    """Each remote ``encoding`` entry, in the remote's order, with our first at its clock."""
    ours: dict[int, RtpMap] = {}
    for lmap in local:
        if lmap.encoding == encoding:
            ours.setdefault(lmap.clock_rate, lmap)
    return [
        (rmap, ours[rmap.clock_rate])
        for rmap in remote
        if rmap.encoding == encoding and rmap.clock_rate in ours
    ]


def _first_at(
    clock_rate: int, pairs: Sequence[tuple[RtpMap, RtpMap]]
) -> tuple[RtpMap, RtpMap] | None:
    return next((pair for pair in pairs if pair[0].clock_rate == clock_rate), None)


def _select(remote: MediaDescription, local: MediaDescription) -> _Selection | None:
    """First remote codec we also listed, and the telephone-event and CN pairs for it.

    Telephone-events at the codec's clock are preferred (RFC 4733 §2.1), else the first rate
    both sides list: an Opus answer with only ``telephone-event/8000`` still gets RFC 4733
    events. Comfort noise is taken only at the codec's clock, as it fills the codec's
    timeline (RFC 3389 §4).
    """
    remote_maps = remote.rtpmaps()
    local_maps = local.rtpmaps()
    remote_fmtp = remote.fmtp_texts()
    local_fmtp = local.fmtp_texts()
    local_order = [local_maps[pt] for pt in local.payload_types if pt in local_maps]
    remote_order = [remote_maps[pt] for pt in remote.payload_types if pt in remote_maps]
    for rmap in remote_order:
        if rmap.encoding not in _MEDIA_CODECS:
            continue
        matches = [lm for lm in local_order if _same_codec(rmap, remote_fmtp, lm, local_fmtp)]
        if not matches:
            continue
        lmap = next((m for m in matches if m.payload_type == rmap.payload_type), matches[0])
        events = _pairs(remote_order, local_order, "telephone-event")
        event = _first_at(rmap.clock_rate, events) or (events[0] if events else (None, None))
        noise = _first_at(rmap.clock_rate, _pairs(remote_order, local_order, "CN"))
        cn = noise or (None, None)
        return _Selection(rmap, lmap, *event, *cn)
    return None


def _stream(
    remote_session: SessionDescription,
    remote: MediaDescription,
    local: MediaDescription,
) -> NegotiatedStream | None:
    if remote.port == 0 or local.port == 0:
        return None
    chosen = _select(remote, local)
    if chosen is None:
        return None
    srtp = _answered_keys(remote, local)
    return _build_stream(remote_session, remote, local, chosen, srtp)


def _answered_keys(remote: MediaDescription, local: MediaDescription) -> SrtpKeys | None:
    """The SRTP of a stream whose offer (``local``, ours) carried ``a=crypto`` lines.

    The answer accepts one of our lines by repeating its tag and suite with its own key
    (RFC 4568 §7.1.3); a line with a tag or suite we did not offer, or a key we cannot use,
    is passed over. None when the answer takes none and the stream may stay plain: we
    offered ``RTP/AVP`` and the answer is not ``RTP/SAVP``."""
    offered = {line.tag: line for line in read_crypto(local.values("crypto"))[0]}
    if not offered:
        return None
    answered, refused = read_crypto(remote.values("crypto"))
    for line in answered:
        ours = offered.get(line.tag)
        problem = line.problem
        if ours is None:
            refused.append(f"crypto line {line.tag}: a tag we did not offer")
        elif ours.suite != line.suite:
            refused.append(f"crypto line {line.tag}: not the suite offered with that tag")
        elif problem is not None:
            refused.append(problem)
        else:
            return SrtpKeys(line.suite, ours.key, line.key)
    reason = "; ".join(refused[:_MAX_REASONS]) if refused else "no a=crypto line"
    if local.proto in _SRTP_PROTOS:
        raise SdpParseError(
            "the answer has no usable a=crypto line for the SRTP the offer requires "
            f"({remote.kind}: {reason})"
        )
    if remote.proto in _SRTP_PROTOS:
        raise SdpParseError(
            f"the answer's {remote.proto} {remote.kind} stream has no usable a=crypto line "
            f"for SRTP ({reason})"
        )
    return None


def _build_stream(
    remote_session: SessionDescription,
    remote: MediaDescription,
    local: MediaDescription,
    chosen: _Selection,
    srtp: SrtpKeys | None = None,
) -> NegotiatedStream:
    rmap, rte = chosen.remote, chosen.remote_event
    connection = remote.connection or remote_session.connection
    if connection is None:
        raise SdpParseError(f"no connection address for the {remote.kind} stream")
    host = connection.host
    mux = remote.has("rtcp-mux") and local.has("rtcp-mux")
    rtcp = remote.rtcp_attribute()
    if mux:
        rtcp_address = (host, remote.port)
    elif rtcp is not None:
        rtcp_address = (rtcp[1] or host, rtcp[0])
    elif remote.port < _MAX_PORT:
        rtcp_address = (host, remote.port + 1)  # RFC 3550 §11
    else:
        raise SdpParseError(f"RTP port {remote.port} leaves no port for RTCP")
    return NegotiatedStream(
        kind=remote.kind,
        rtp_address=(host, remote.port),
        rtcp_address=rtcp_address,
        rtcp_mux=mux,
        codec=rmap.encoding,
        payload_type=rmap.payload_type,
        local_payload_type=chosen.local.payload_type,
        clock_rate=rmap.clock_rate,
        sample_rate=_SAMPLE_RATE.get(rmap.encoding, rmap.clock_rate),
        channels=rmap.channels,
        fmtp=remote.fmtp(rmap.payload_type),
        telephone_event_pt=rte.payload_type if rte else None,
        local_telephone_event_pt=_number_of(chosen.local_event),
        direction=remote.direction(remote_session.direction()),
        ptime=remote.ptime,
        rtcp_fb=remote.rtcp_fb(rmap.payload_type),
        telephone_event_clock_rate=rte.clock_rate if rte else None,
        comfort_noise_pt=_number_of(chosen.remote_noise),
        local_comfort_noise_pt=_number_of(chosen.local_noise),
        maxptime=remote.maxptime,
        srtp=srtp,
    )


def _number_of(rtpmap: RtpMap | None) -> int | None:
    return rtpmap.payload_type if rtpmap is not None else None


def _first_of_kind(
    streams: Sequence[NegotiatedStream | None], kind: str
) -> NegotiatedStream | None:
    return next((s for s in streams if s is not None and s.kind == kind), None)


def negotiate(offer: str | SessionDescription, answer: str) -> NegotiatedSession:
    """Read the answer to our offer (RFC 3264 §6): m-lines pair up by position.

    A stream we offered as ``RTP/SAVP`` that the answer takes without a usable ``a=crypto``
    line raises `SdpParseError`: plain media there would not be what the user asked for."""
    ours = _as_description(offer)
    theirs = SessionDescription.parse(answer)
    streams = [
        _stream(theirs, remote, local) if remote.kind == local.kind else None
        for local, remote in zip(ours.media, theirs.media, strict=False)
    ]
    return NegotiatedSession(
        _first_of_kind(streams, "audio"), _first_of_kind(streams, "video"), theirs.origin
    )


@dataclass(frozen=True, slots=True)
class SdpAnswer:
    """Our answer to a remote offer; ``changed`` tells whether the o= version moved."""

    sdp: str
    session: NegotiatedSession
    changed: bool


def _direction(send: bool, receive: bool) -> str:
    return ("inactive", "recvonly", "sendonly", "sendrecv")[2 * send + receive]


def _offered_crypto(
    remote: MediaDescription, local: MediaDescription
) -> tuple[bool, CryptoAttribute | None]:
    """Whether our capabilities (``local``) can take the offered stream as far as SRTP goes,
    and the offered ``a=crypto`` line to answer when it is taken encrypted.

    Without crypto lines of our own (SRTP off) an ``RTP/SAVP`` offer cannot be taken; with
    them, the first offered line of a suite we offer and a key we can use is answered
    (RFC 4568 §7.1.2). If there is none, a plain offer is answered plain unless our own
    offer was ``RTP/SAVP`` (SRTP required)."""
    if remote.proto not in _RTP_PROTOS:
        return False, None
    ours = read_crypto(local.values("crypto"))[0]
    if not ours:
        return remote.proto not in _SRTP_PROTOS, None
    suites = {line.suite for line in ours}
    theirs = read_crypto(remote.values("crypto"))[0]
    line = next((c for c in theirs if c.suite in suites and c.usable), None)
    if line is not None:
        return True, line
    return local.proto not in _SRTP_PROTOS and remote.proto not in _SRTP_PROTOS, None


def _our_key(previous: MediaDescription | None, suite: str) -> bytes | None:
    """The key we already send with in ``suite`` on this stream, if our last SDP named one:
    kept, so that an offer that changes only the peer's key changes nothing of ours."""
    if previous is None or previous.port == 0:
        return None
    for line in read_crypto(previous.values("crypto"))[0]:
        if line.suite == suite and line.usable:
            return line.key
    return None


def _answer_section(
    remote_session: SessionDescription,
    remote: MediaDescription,
    local: MediaDescription | None,
    previous: MediaDescription | None,
    random_bytes: Callable[[int], bytes],
) -> tuple[MediaDescription, NegotiatedStream | None]:
    chosen = None
    offered: CryptoAttribute | None = None
    if local is not None and remote.port != 0 and local.port != 0:
        acceptable, offered = _offered_crypto(remote, local)
        chosen = _select(remote, local) if acceptable else None
    if local is None or chosen is None:
        rejected = MediaDescription(remote.kind, 0, remote.proto, remote.formats[:1] or ["0"])
        return rejected, None
    extra: list[tuple[str, str | None]] = []
    srtp = None
    if offered is not None:
        key = _our_key(previous, offered.suite) or random_bytes(KEY_LENGTHS[offered.suite])
        srtp = SrtpKeys(offered.suite, key, offered.key)
        extra.append(("crypto", CryptoAttribute(offered.tag, offered.suite, key).serialize()))
    stream = _build_stream(remote_session, remote, local, chosen, srtp)
    rmap, lmap, rte, rcn = chosen.remote, chosen.local, chosen.remote_event, chosen.remote_noise
    feedback = remote.rtcp_fb(rmap.payload_type) & local.rtcp_fb(lmap.payload_type)
    codecs = [
        _Codec(
            rmap.encoding,
            rmap.payload_type,
            rmap.clock_rate,
            rmap.channels,
            local.fmtp_text(lmap.payload_type),
            tuple(sorted(feedback)),
        )
    ]
    if rte is not None:
        codecs.append(_Codec("telephone-event", rte.payload_type, rte.clock_rate, 1, "0-16"))
    if rcn is not None:
        codecs.append(_Codec("CN", rcn.payload_type, rcn.clock_rate))
    if local.ptime is not None:
        extra.append(("ptime", str(local.ptime)))
    if stream.rtcp_mux:
        extra.append(("rtcp-mux", None))
    ours, theirs = local.direction(), stream.direction
    send = ours in ("sendrecv", "sendonly") and theirs in ("sendrecv", "recvonly")
    receive = ours in ("sendrecv", "recvonly") and theirs in ("sendrecv", "sendonly")
    extra.append((_direction(send, receive), None))
    section = _media_section(remote.kind, local.port, codecs, extra)
    section.proto = remote.proto
    return section, stream


def answer_offer(
    capabilities: str | SessionDescription,
    offer: str,
    *,
    previous: str | SessionDescription | None = None,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> SdpAnswer:
    """Answer a remote offer (a re-INVITE's, RFC 3264 §6 and §8) from our capabilities.

    ``capabilities`` is our own initial offer (ports, address, codecs, SRTP mode); ``previous``
    is the last SDP we sent in the dialog. The o= line keeps its session id, and its version
    goes up by one only if the body differs from ``previous``.

    An encrypted stream is answered with the offer's profile, the tag and suite of the offered
    ``a=crypto`` line taken, and our key: the one ``previous`` names for that suite, else a
    fresh one from ``random_bytes`` (RFC 4568 §7.1.4 lets a re-offer keep or change keys).
    """
    ours = _as_description(capabilities)
    theirs = SessionDescription.parse(offer)
    last = _as_description(previous) if previous is not None else ours
    unused = list(ours.media)
    unused_last = list(last.media)
    sections: list[MediaDescription] = []
    streams: list[NegotiatedStream | None] = []
    for remote in theirs.media:
        local = _take(unused, remote.kind)
        sent = _take(unused_last, remote.kind)
        section, stream = _answer_section(theirs, remote, local, sent, random_bytes)
        sections.append(section)
        streams.append(stream)
    origin = replace(last.origin)
    answer = SessionDescription(origin, ours.session_name, ours.connection, media=sections)
    changed = _body(answer) != _body(last)
    if changed:
        answer.origin.session_version += 1
    session = NegotiatedSession(
        _first_of_kind(streams, "audio"), _first_of_kind(streams, "video"), theirs.origin
    )
    return SdpAnswer(answer.serialize(), session, changed)


def _take(sections: list[MediaDescription], kind: str) -> MediaDescription | None:
    """The first section of ``kind``, removed from ``sections``."""
    found = next((m for m in sections if m.kind == kind), None)
    if found is not None:
        sections.remove(found)
    return found


def _body(description: SessionDescription) -> list[str]:
    """The serialised lines except o=, to tell whether our SDP changed."""
    return [line for line in description.serialize().split("\r\n") if not line.startswith("o=")]
