"""SDP from a hostile or broken peer: typed errors only, bounded numbers, linear cost.

The property tests build answers from plausible codec lists, so that negotiation against our
own offer really finds streams, and then break them line by line the way a fuzzer or an
attacker would: numbers of hundreds or thousands of digits, lines lost or repeated, junk and
non-UTF-8 bytes (decoded with replacement, as the relay decodes a body).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sip2rtmp.sip import sdp
from sip2rtmp.sip.sdp import (
    MAX_FORMATS,
    MAX_MEDIA_SECTIONS,
    MAX_SDP_LINES,
    MediaDescription,
    NegotiatedSession,
    SdpParseError,
    SessionDescription,
    answer_offer,
    build_offer,
    negotiate,
)
from tests.unit.rtp.mutations import fields

OFFER = build_offer("192.0.2.10", 40000, 40002, session_id=42, session_version=1)
OURS = SessionDescription.parse(OFFER)
"""Our offer parsed once, so that the property tests spend their time on the answers."""
HEAD = "v=0\r\no=- 7 7 IN IP4 198.51.100.5\r\ns=-\r\nc=IN IP4 198.51.100.5\r\nt=0 0\r\n"
AUDIO = "m=audio 30000 RTP/AVP 0\r\n"
TOO_MANY_DIGITS = "9" * 4301
"""One digit over what int() converts by default: there it raises a plain ValueError."""


# ---- findings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        HEAD + f"m=audio {TOO_MANY_DIGITS} RTP/AVP 0\r\n",
        HEAD + f"m=audio 30000/{TOO_MANY_DIGITS} RTP/AVP 0\r\n",
        HEAD + f"m=audio 30000 RTP/AVP {TOO_MANY_DIGITS}\r\n",
        HEAD.replace("o=- 7 7", f"o=- 7 {TOO_MANY_DIGITS}"),
        HEAD + AUDIO + f"a=rtcp:{TOO_MANY_DIGITS}\r\n",
        HEAD + f"b=AS:{TOO_MANY_DIGITS}\r\n" + AUDIO,
        HEAD + f"m=audio {'9' * 400} RTP/AVP 0\r\n",
    ],
    ids=["port", "port count", "payload type", "o= version", "a=rtcp", "b=", "400 digits"],
)
def test_huge_numbers_raise_sdp_parse_error_or_are_ignored(answer: str) -> None:
    for operation in (negotiate, answer_offer):
        try:
            session = operation(OFFER, answer)
        except SdpParseError as error:
            assert len(str(error)) < 120  # an excerpt of the field, never all of it
            continue
        assert isinstance(session, NegotiatedSession | sdp.SdpAnswer)


@pytest.mark.parametrize(
    "rtpmap",
    [
        f"96 opus/{TOO_MANY_DIGITS}/2",
        f"96 opus/48000/{TOO_MANY_DIGITS}",
        "96 opus/48000/300",
        "96 opus/0/2",
        f"{TOO_MANY_DIGITS} opus/48000/2",
        "96 opus",
        "+96 opus/48000/2",
        "96 opus/4_8000/2",
    ],
)
def test_malformed_rtpmaps_are_skipped(rtpmap: str) -> None:
    answer = HEAD + f"m=audio 30000 RTP/AVP 96\r\na=rtpmap:{rtpmap}\r\n"
    assert negotiate(OFFER, answer).audio is None


def test_ptime_out_of_range_is_ignored() -> None:
    for value, expected in (("20", 20), ("1000", 1000), ("1001", None), ("0", None), ("-20", None)):
        media = SessionDescription.parse(HEAD + AUDIO + f"a=ptime:{value}\r\n").media[0]
        assert media.ptime == expected, value


def test_rtp_port_65535_leaves_no_rtcp_port() -> None:
    answer = HEAD + "m=audio 65535 RTP/AVP 0\r\n"
    with pytest.raises(SdpParseError, match="RTCP"):
        negotiate(OFFER, answer)  # the old code named RTCP port 65536
    assert negotiate(OFFER, answer + "a=rtcp-mux\r\n").audio is not None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (HEAD + AUDIO + "a=x\r\n" * MAX_SDP_LINES, "lines"),
        (HEAD + AUDIO * (MAX_MEDIA_SECTIONS + 1), "media sections"),
        (HEAD + "m=audio 30000 RTP/AVP" + " 0" * (MAX_FORMATS + 1) + "\r\n", "formats"),
        (HEAD + "m=audio 30000 RTP/" + "A" * 100 + " 0\r\n", "overlong"),
        (HEAD.replace("198.51.100.5\r\nt", "a" * 300 + "\r\nt"), "address"),
        (HEAD.replace("198.51.100.5\r\nt", "host\x07name\r\nt"), "address"),
        (HEAD + "b=AS\r\n", "b="),
        ("v=0\r\n" + " " * 70_000, "characters"),
    ],
)
def test_caps(text: str, match: str) -> None:
    with pytest.raises(SdpParseError, match=match):
        SessionDescription.parse(text)


def test_caps_leave_room_for_real_descriptions() -> None:
    formats = " ".join(str(pt) for pt in range(96, 96 + MAX_FORMATS))
    lines = [f"a=rtpmap:{pt} H264/90000" for pt in range(96, 96 + MAX_FORMATS)]
    body = "\r\n".join(lines[: MAX_SDP_LINES - 10])
    text = HEAD + AUDIO * (MAX_MEDIA_SECTIONS - 1) + f"m=video 30002 RTP/AVP {formats}\r\n" + body
    assert len(SessionDescription.parse(text).media) == MAX_MEDIA_SECTIONS


def counting(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[None]:
    """Count the calls of `owner.name` from now on."""
    calls: list[None] = []
    original: Callable[..., object] = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(None)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("operation", [negotiate, answer_offer])
def test_negotiation_work_does_not_grow_with_the_format_list(
    monkeypatch: pytest.MonkeyPatch, operation: Callable[[str, str], object]
) -> None:
    """One H.264 type listed again and again, with many fmtp lines: the old negotiation parsed
    the fmtp lines again for every listed format and every local H.264 entry (400 ms at 64 KB)."""
    scans = counting(monkeypatch, MediaDescription, "values")
    parses = counting(monkeypatch, sdp, "parse_fmtp")

    def work(formats: int) -> tuple[int, int]:
        scans.clear()
        parses.clear()
        answer = (
            HEAD
            + AUDIO
            + "m=video 30002 RTP/AVP"
            + " 96" * formats
            + "\r\na=rtpmap:96 H264/90000\r\n"
            + "a=fmtp:96 packetization-mode=2\r\n" * 200
        )
        operation(OFFER, answer)
        return len(scans), len(parses)

    assert work(MAX_FORMATS) == work(MAX_FORMATS // 4)
    assert work(MAX_FORMATS)[1] <= 4


# ---- answers from plausible codec lists --------------------------------------------------


@dataclass(frozen=True)
class Codec:
    name: str
    rate: int
    channels: int = 1
    static: int | None = None
    fmtp: str | None = None


AUDIO_CODECS = (
    Codec("PCMU", 8000, static=0),
    Codec("PCMA", 8000, static=8),
    Codec("G722", 8000, static=9),
    Codec("G729", 8000, static=18),
    Codec("opus", 48000, 2, fmtp="useinbandfec=1;stereo=0"),
    Codec("iLBC", 8000, fmtp="mode=30"),
    Codec("telephone-event", 8000, fmtp="0-16"),
    Codec("telephone-event", 48000, fmtp="0-15"),
)
VIDEO_CODECS = (
    Codec("H264", 90000, fmtp="profile-level-id=42e01f;packetization-mode=1"),
    Codec("H264", 90000, fmtp="profile-level-id=42e01f;packetization-mode=0"),
    Codec("H264", 90000, fmtp="profile-level-id=640028"),
    Codec("VP8", 90000),
    Codec("VP9", 90000),
    Codec("H263", 90000, static=34),
)
DIRECTIONS = ("sendrecv", "sendrecv", "sendonly", "recvonly")
OUR_AUDIO = {"PCMU", "PCMA", "G722", "opus"}
OUR_VIDEO = {"H264", "VP8"}


@dataclass(frozen=True)
class Answer:
    text: str
    audio: str | None
    """The codec negotiation must pick for audio: the first of ours in the answer's order."""
    video: bool
    """Whether the video section carries a codec we take (with a port)."""


@st.composite
def sections(
    draw: st.DrawFn, kind: str, catalogue: tuple[Codec, ...], port: int
) -> tuple[list[str], list[Codec]]:
    """One m= section listing a few codecs of ``catalogue``, its options picked by one draw."""
    # Few, wide draws: each draw costs hypothesis more than the negotiation it feeds.
    chosen = draw(st.integers(1, 2 ** len(catalogue) - 1))
    flags = draw(st.integers(0, 2**12 - 1))
    first_dynamic = 96 + flags % 32
    codecs = [codec for index, codec in enumerate(catalogue) if chosen >> index & 1]
    codecs = (codecs[chosen % len(codecs) :] + codecs[: chosen % len(codecs)])[:5]
    lines: list[str] = []
    pts: list[int] = []
    for index, codec in enumerate(codecs):
        pt = codec.static if codec.static is not None else 96 + (first_dynamic + index) % 32
        pts.append(pt)
        suffix = f"/{codec.channels}" if codec.channels != 1 else ""
        if codec.static is None or flags >> index & 1:
            lines.append(f"a=rtpmap:{pt} {codec.name}/{codec.rate}{suffix}")
        if codec.fmtp:
            lines.append(f"a=fmtp:{pt} {codec.fmtp}")
    if flags & 0x20:
        lines.append(f"a=ptime:{(10, 20, 30, 60)[flags >> 10]}")
    if flags & 0x40:
        lines.append("a=rtcp-mux")
    elif flags & 0x80:
        lines.append(f"a=rtcp:{port + 1} IN IP4 198.51.100.6")
    if flags & 0x300:
        lines.append(f"a={DIRECTIONS[flags >> 8 & 3]}")
    if flags & 0x400:
        lines.insert(0, "c=IN IP4 203.0.113.9")
    if flags & 0x800:
        lines.insert(0, f"b=AS:{first_dynamic * 100}")
    m_line = f"m={kind} {port} RTP/AVP {' '.join(map(str, pts))}"
    return [m_line, *lines], codecs


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    audio_lines, audio_codecs = draw(sections("audio", AUDIO_CODECS, 30000))
    shape = draw(st.integers(0, 15))
    with_video = bool(shape & 1)
    lines = [
        "v=0",
        f"o=- 1 {(0, 1, 2**63, 2**64 - 1)[shape >> 2]} IN IP4 h",
        "s=-",
        "c=IN IP4 198.51.100.5",
        "t=0 0",
        *audio_lines,
    ]
    video = False
    if with_video:
        video_port = 30002 if shape & 2 else 0
        video_lines, video_codecs = draw(sections("video", VIDEO_CODECS, video_port))
        lines += video_lines
        video = bool(video_port) and any(c.name in OUR_VIDEO for c in video_codecs)
    audio = next((c.name for c in audio_codecs if c.name in OUR_AUDIO), None)
    newline = "\n" if shape & 8 else "\r\n"
    return Answer(newline.join(lines) + newline, audio, video)


@pytest.mark.fuzz
@given(answers())
def test_plausible_answers_negotiate(answer: Answer) -> None:
    session = negotiate(OURS, answer.text)
    assert (session.audio.codec if session.audio else None) == answer.audio
    assert (session.video is not None) == answer.video
    reply = answer_offer(OURS, answer.text)
    assert (reply.session.audio.codec if reply.session.audio else None) == answer.audio
    SessionDescription.parse(reply.sdp)


LINE_EDITS = ("huge number", "drop", "repeat", "junk", "cut", "non-utf-8", "control", "swap")
JUNK = (
    "",
    "x",
    "=",
    "a=",
    "a=:",
    "m=",
    "m=audio",
    "m=audio 1 RTP/AVP 96 96 96",
    "c=IN IP4",
    "b=AS",
    "a=rtpmap:",
    "a=rtpmap:96 opus/48000/2/2",
    "a=fmtp:96 ;;==;",
    "v=0",
    "o=- 1 1 IN IP4",
    "é=1",
    "a=rtcp:0",
    "\x00=\x00",
)


@st.composite
def mutated_answers(draw: st.DrawFn) -> str:
    """A plausible answer with one to three hostile line edits."""
    lines = draw(answers()).text.splitlines()
    f = draw(fields())
    for _ in range(f.int(1, 3)):
        if not lines:
            break
        at = f.int(0, len(lines) - 1)
        edit = f.pick(LINE_EDITS)
        line = lines[at]
        if edit == "huge number":
            words = line.replace("/", " / ").replace(":", ": ").split(" ")
            numeric = [i for i, word in enumerate(words) if word.isdigit()]
            if numeric:
                words[f.pick(numeric)] = "9" * f.pick((6, 21, 400, 4301))
            lines[at] = " ".join(words).replace(" / ", "/").replace(": ", ":")
        elif edit == "drop":
            del lines[at]
        elif edit == "repeat":
            lines[at:at] = [line] * f.int(1, 3)
        elif edit == "junk":
            lines.insert(at, f.pick(JUNK))
        elif edit == "cut":
            lines[at] = line[: f.int(0, len(line))]
        elif edit == "non-utf-8":
            raw = line.encode()
            cut = f.int(0, len(raw))
            lines[at] = (raw[:cut] + b"\xff\xfe\xc3" + raw[cut:]).decode("utf-8", "replace")
        elif edit == "control":
            cut = f.int(0, len(line))
            lines[at] = line[:cut] + f.pick("\x00\x07\x0b\x1b\x7f\x85") + line[cut:]
        else:
            other = f.int(0, len(lines) - 1)
            lines[at], lines[other] = lines[other], lines[at]
    return "\r\n".join(lines)


@pytest.mark.fuzz
@given(mutated_answers())
def test_mutated_answers_raise_only_sdp_parse_error(text: str) -> None:
    try:
        answer_offer(OURS, text)
        session = negotiate(OURS, text)
    except SdpParseError:
        event("refused")
        return
    event("negotiated a stream" if session.audio or session.video else "negotiated nothing")
    for stream in (session.audio, session.video):
        if stream is not None:
            assert 0 <= stream.payload_type <= 127
            assert 0 < stream.rtp_address[1] <= 65535 and 0 < stream.rtcp_address[1] <= 65535
            assert stream.ptime is None or 0 < stream.ptime <= 1000
