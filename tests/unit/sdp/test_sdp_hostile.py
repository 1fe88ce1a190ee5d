"""SDP from a hostile or broken peer: typed errors only, bounded numbers, linear cost.

The property tests build answers from plausible codec lists, so that negotiation against our
own offer really finds streams, and then break them line by line the way a fuzzer or an
attacker would: numbers of hundreds or thousands of digits, lines lost or repeated, junk and
non-UTF-8 bytes (decoded with replacement, as the relay decodes a body).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sip2rtmp.sip import sdp
from sip2rtmp.sip.sdes import KEY_LENGTHS, SUITES, CryptoAttribute, NoUsableCrypto, offer_crypto
from sip2rtmp.sip.sdp import (
    MAX_FORMATS,
    MAX_MEDIA_SECTIONS,
    MAX_SDP_LINES,
    MediaDescription,
    NegotiatedSession,
    SdpParseError,
    SessionDescription,
    SrtpOffer,
    answer_offer,
    build_offer,
    negotiate,
)
from tests.unit.rtp.mutations import Fields, fields

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
    return "\r\n".join(edit_lines(lines, f, f.int(1, 3)))


def edit_lines(lines: list[str], f: Fields, edits: int) -> list[str]:
    """``lines`` after ``edits`` hostile line edits (`LINE_EDITS`)."""
    for _ in range(edits):
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
    return lines


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


# ---- SRTP: a=crypto lines from a hostile peer -------------------------------------------------

SRTP_OFFERS = {
    mode: SessionDescription.parse(
        build_offer(
            "192.0.2.10",
            40000,
            40002,
            session_id=42,
            srtp=SrtpOffer(profile, offer_crypto(), offer_crypto()) if profile else None,
        )
    )
    for mode, profile in (("off", None), ("optional", "RTP/AVP"), ("required", "RTP/SAVP"))
}
"""Our offer in each SRTP mode, parsed once."""
OUR_KEYS = {
    (mode, media.kind, line.suite): line.key
    for mode, offer in SRTP_OFFERS.items()
    for media in offer.media
    for line in map(CryptoAttribute.parse, media.values("crypto"))
}
SHOWN_SUITES = (*SUITES, "F8_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_80")
KEY_OPTIONS = ("", "|2^20", "|1048576", "|2^20|1:4", "|1:32", "|2^48|255:1", "|2^99", "|1:0")
SESSION_PARAMS = ("", " KDR=1", " UNENCRYPTED_SRTCP", " FEC_ORDER=FEC_SRTP", " WSH=64")
CRYPTO_JUNK = ("|", ":", "^", ";", "=", " ", "2^", "inline:", "*", "\x00", "é", "==", "9" * 30)
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{16,}")


@dataclass(frozen=True)
class CryptoValue:
    value: str
    key: str
    """The base64 key the value was built with (the value may no longer hold it intact)."""


@st.composite
def crypto_values(draw: st.DrawFn) -> CryptoValue:
    """An a=crypto value: nearly half are lines we can take; the others are built from our
    tags and suites and others, keys of the right length or not, lifetimes, MKIs and session
    parameters, then zero to two hostile character edits; and now and then any text."""
    f = draw(fields())
    shape = f.int(0, 9)
    if shape == 0:
        return CryptoValue(draw(st.text(max_size=80)), "")
    if shape < 5:  # a line we can take: the tag we offered for the suite, a key of its length
        index = f.int(0, len(SUITES) - 1)
        suite = SUITES[index]
        key = base64.b64encode(f.bytes(KEY_LENGTHS[suite], KEY_LENGTHS[suite])).decode()
        lifetime = f.pick(("", "|2^31", "|2^20"))
        return CryptoValue(f"{index + 1} {suite} inline:{key}{lifetime}", key)
    suite = f.pick(SHOWN_SUITES)
    length = f.pick((KEY_LENGTHS.get(suite, 30), 30, 28, 16, 31, 1))
    key = base64.b64encode(f.bytes(length, length)).decode()
    if f.int(0, 3) == 0:
        key = key.rstrip("=")
    tag = f.pick(("1", "2", "3", "4", "01", "1234567890", "-1"))
    value = f"{tag} {suite} inline:{key}{f.pick(KEY_OPTIONS)}{f.pick(SESSION_PARAMS)}"
    for _ in range(f.int(0, 2)):
        at = f.int(0, len(value))
        edit = f.int(0, 3)
        if edit == 0:
            value = value[:at]
        elif edit == 1:
            value = value[:at] + f.pick(CRYPTO_JUNK) + value[at:]
        elif edit == 2:
            value = value[:at] + value[at + f.int(1, 8) :]
        else:
            value = value.replace(f"{key}", f"{key};inline:{key}", 1)
    return CryptoValue(value, key)


@pytest.mark.fuzz
@given(crypto_values())
def test_crypto_values_parse_or_raise_no_usable_crypto(crypto: CryptoValue) -> None:
    """Errors and problems never quote a key (nor any long base64 run); what parses
    serializes to a value that parses back to the same line."""
    try:
        line = CryptoAttribute.parse(crypto.value)
    except NoUsableCrypto as error:
        event("refused")
        assert not BASE64_RUN.search(str(error)), str(error)
        return
    event("usable" if line.usable else "parsed, not usable")
    assert 0 <= line.tag <= 999_999_999
    assert CryptoAttribute.parse(line.serialize()) == line
    assert line.problem is None or not BASE64_RUN.search(line.problem)
    if line.usable:
        assert len(line.key) == KEY_LENGTHS[line.suite]


@dataclass(frozen=True)
class SrtpCase:
    mode: str
    text: str
    keys: tuple[str, ...]
    """The peer's keys that are still intact in ``text`` after its `inline:`."""


@st.composite
def srtp_answers(draw: st.DrawFn) -> SrtpCase:
    """A plausible answer (or re-INVITE offer) whose m= lines take an RTP profile and up to
    four a=crypto lines each, then up to two hostile line edits; and our SRTP mode."""
    lines = draw(answers()).text.splitlines()
    f = draw(fields())
    mode = f.pick(tuple(SRTP_OFFERS))
    built: list[str] = []
    keys: list[str] = []
    for line in lines:
        built.append(line)
        if line.startswith("m="):
            proto = f.pick(("RTP/AVP", "RTP/SAVP", "RTP/SAVPF"))
            built[-1] = line.replace("RTP/AVP", proto)
            for _ in range(f.int(0, 4)):
                crypto = draw(crypto_values())
                built.append(f"a=crypto:{crypto.value}")
                keys.append(crypto.key)
    text = "\r\n".join(edit_lines(built, f, f.int(0, 2))) + "\r\n"
    intact = tuple(key for key in keys if len(key) >= 16 and f"inline:{key}" in text)
    return SrtpCase(mode, text, intact)


def assert_keys_not_in(text: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        assert key[:16] not in text, text


@pytest.mark.fuzz
@given(srtp_answers())
def test_crypto_lines_in_answers_and_offers_raise_only_sdp_parse_error(case: SrtpCase) -> None:
    """In every mode: typed errors that quote no key, SRTP on every stream when it is
    required, our key and theirs each in its place, and the peer's key never in our answer."""
    ours = SRTP_OFFERS[case.mode]
    try:
        session = negotiate(ours, case.text)
    except SdpParseError as error:
        event(f"{case.mode}: answer refused")
        assert_keys_not_in(str(error), case.keys)
    else:
        streams = [s for s in (session.audio, session.video) if s is not None]
        event(f"{case.mode}: {sum(s.srtp is not None for s in streams)} SRTP streams")
        for negotiated in streams:
            keys = negotiated.srtp
            assert (keys is None) if case.mode == "off" else True
            assert (keys is not None) if case.mode == "required" else True
            if keys is not None:
                assert keys.local_key == OUR_KEYS[case.mode, negotiated.kind, keys.suite]
                assert len(keys.remote_key) == KEY_LENGTHS[keys.suite]
    try:
        reply = answer_offer(ours, case.text)
    except SdpParseError as error:
        assert_keys_not_in(str(error), case.keys)
        return
    assert_keys_not_in(reply.sdp, case.keys)
    answered = SessionDescription.parse(reply.sdp)
    for stream in (reply.session.audio, reply.session.video):
        if stream is None or stream.srtp is None:
            continue
        assert case.mode != "off"
        section = next(m for m in answered.media if m.kind == stream.kind and m.port)
        (line,) = map(CryptoAttribute.parse, section.values("crypto"))
        assert (line.suite, line.key) == (stream.srtp.suite, stream.srtp.local_key)
        assert section.proto in ("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF")
