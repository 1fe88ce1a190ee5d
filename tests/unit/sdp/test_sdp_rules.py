"""SDP rules at their boundaries: field ranges and caps (RFC 4566), the exact text of our offer
and answer (RFC 3264 §5, §6), codec and telephone-event pairing, RTCP addresses (RFC 3605,
RFC 5761) and the error messages a user reads when a peer's description is refused."""

from __future__ import annotations

import pytest

from sip2rtmp.sip.sdp import (
    MAX_SDP_LINES,
    MAX_SDP_SIZE,
    MAX_TOKEN_LENGTH,
    MediaDescription,
    SdpParseError,
    SessionDescription,
    answer_offer,
    audio_codecs_named,
    build_offer,
    negotiate,
    parse_fmtp,
)

OFFER = build_offer("192.0.2.10", 40000, 40002, session_id=42, session_version=3)
HEAD = "v=0\r\no=- 7 7 IN IP4 198.51.100.5\r\ns=-\r\nc=IN IP4 198.51.100.5\r\nt=0 0\r\n"
CRLF = "\r\n"


def text(*lines: str) -> str:
    return CRLF.join(lines) + CRLF


def parse_error(sdp: str) -> str:
    """The message of the error that refusing ``sdp`` raises."""
    with pytest.raises(SdpParseError) as caught:
        SessionDescription.parse(sdp)
    return str(caught.value)


# ---- our offer, byte for byte -----------------------------------------------------------------

DEFAULT_OFFER = text(
    "v=0",
    "o=- 42 0 IN IP4 192.0.2.10",
    "s=sip2rtmp",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 40000 RTP/AVP 111 9 0 8 101 110 13",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 useinbandfec=1",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=rtpmap:110 telephone-event/48000",
    "a=fmtp:110 0-16",
    "a=rtpmap:13 CN/8000",
    "a=ptime:20",
    "a=rtcp-mux",
    "a=sendrecv",
    "m=video 40002 RTP/AVP 96 97 98",
    "a=rtpmap:96 H264/90000",
    "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1",
    "a=rtcp-fb:96 nack pli",
    "a=rtcp-fb:96 ccm fir",
    "a=rtpmap:97 H264/90000",
    "a=fmtp:97 profile-level-id=42e01f;packetization-mode=0;level-asymmetry-allowed=1",
    "a=rtcp-fb:97 nack pli",
    "a=rtcp-fb:97 ccm fir",
    "a=rtpmap:98 VP8/90000",
    "a=rtcp-fb:98 nack pli",
    "a=rtcp-fb:98 ccm fir",
    "a=rtcp-mux",
    "a=sendrecv",
)


def test_default_offer_text() -> None:
    """The whole offer: version 0 when none is given, RFC 4566 §5 line order, every codec we
    receive with its rtpmap, fmtp and RFC 4585 feedback, telephone-events at both clocks, and
    comfort noise under its static number after everything else (RFC 3389 §5)."""
    assert build_offer("192.0.2.10", 40000, 40002, session_id=42) == DEFAULT_OFFER


def test_offer_options() -> None:
    """IPv6 address type, no rtcp-mux, no video section, caller's ptime, user and name."""
    sdp = build_offer(
        "2001:db8::1",
        40000,
        session_id=7,
        rtcp_mux=False,
        audio_codecs=["PCMU"],
        ptime=30,
        username="u",
        session_name="n",
    )
    assert sdp == text(
        "v=0",
        "o=u 7 0 IN IP6 2001:db8::1",
        "s=n",
        "c=IN IP6 2001:db8::1",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0 101 110 13",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=rtpmap:110 telephone-event/48000",
        "a=fmtp:110 0-16",
        "a=rtpmap:13 CN/8000",
        "a=ptime:30",
        "a=sendrecv",
    )
    no_video = build_offer("192.0.2.1", 4000, 4002, session_id=1, video_codecs=())
    assert "m=video" not in no_video


@pytest.mark.parametrize(
    ("audio", "video", "match"),
    [
        (["G729"], ["H264"], "unknown codec 'G729'"),
        (["PCMU"], ["H265"], "^unknown codec 'H265'$"),
        ([], ["H264"], "^offer needs at least one audio codec$"),
    ],
)
def test_offer_refuses_codecs_it_cannot_offer(
    audio: list[str], video: list[str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        build_offer("192.0.2.1", 4000, 4002, session_id=1, audio_codecs=audio, video_codecs=video)


def test_audio_codec_names_in_any_case_each_once() -> None:
    assert audio_codecs_named([" OPUS ", "g722", "Opus"]) == ("opus", "G722")
    with pytest.raises(ValueError, match="unknown audio codec 'speex'"):
        audio_codecs_named(["speex"])


# ---- parsing: structure, caps and boundaries ---------------------------------------------------

RICH = text(
    "v=0",
    "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5",
    "s=SDP Seminar",
    "i=A Seminar on the session description protocol",
    "u=http://www.example.com/seminars/sdp.pdf",
    "e=j.doe@example.com (Jane Doe)",
    "p=+1 617 555-6011",
    "c=IN IP4 224.2.17.12/127",
    "b=CT:1000",
    "t=2873397496 2873404696",
    "r=7d 1h 0 25h",
    "z=2882844526 -1h",
    "k=prompt",
    "a=recvonly",
    "a=tool:",
    "m=audio 49170/2 RTP/AVP 0",
    "i=voice",
    "c=IN IP4 224.2.17.14/127",
    "b=AS:64",
    "k=prompt",
    "a=rtpmap:0 PCMU/8000",
    "m=video 51372 RTP/AVP 99",
    "a=rtpmap:99 h263-1998/90000",
)


def test_rfc4566_example_keeps_every_line_in_order() -> None:
    """RFC 4566 §5's example with every optional line: parsed into its parts, and written back
    in the same order (a= without a value stays without a colon, an empty value keeps it)."""
    sdp = SessionDescription.parse(RICH)
    assert sdp.origin.username == "jdoe" and sdp.origin.session_id == "2890844526"
    assert sdp.origin.session_version == 2890842807
    assert (sdp.origin.nettype, sdp.origin.addrtype, sdp.origin.address) == (
        "IN",
        "IP4",
        "10.47.16.5",
    )
    assert sdp.session_name == "SDP Seminar"
    assert sdp.connection is not None
    assert (sdp.connection.nettype, sdp.connection.addrtype) == ("IN", "IP4")
    assert sdp.connection.host == "224.2.17.12"
    assert sdp.bandwidths == ["CT:1000"] and sdp.timing == ["2873397496 2873404696"]
    assert sdp.attributes == [("recvonly", None), ("tool", "")]
    assert sdp.direction() == "recvonly"
    audio, video = sdp.media
    assert (audio.port, audio.port_count, video.port_count) == (49170, 2, None)
    assert audio.connection is not None and audio.connection.host == "224.2.17.14"
    assert audio.bandwidths == ["AS:64"] and audio.other == [("i", "voice"), ("k", "prompt")]
    assert video.rtpmaps()[99].encoding == "h263-1998"
    assert sdp.serialize() == RICH


def test_only_the_line_ending_is_removed() -> None:
    """RFC 4566 §5.3: a session without a name is written "s= " (one space); that space, like
    any other text of a field, is kept as written."""
    sdp = SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 h\r\ns= \r\n")
    assert sdp.session_name == " "
    assert "\r\ns= \r\n" in sdp.serialize()


def test_defaults_for_missing_optional_lines() -> None:
    sdp = SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n")
    assert (sdp.session_name, sdp.timing, sdp.media, sdp.connection) == ("-", ["0 0"], [], None)


@pytest.mark.parametrize(
    "sdp",
    [
        "v=0\no=- 1 1 IN IP4 192.0.2.1\n",  # LF only
        " v=0 \r\n\r\n  \r\no=- 1 1 IN IP4 192.0.2.1\r\n\r\n",  # padding and blank lines
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nz=\r\na=x\r\n",  # shortest line, last letter
    ],
)
def test_tolerated_layout(sdp: str) -> None:
    assert SessionDescription.parse(sdp).origin.address == "192.0.2.1"


@pytest.mark.parametrize(
    ("sdp", "message"),
    [
        ("", "SDP must start with v=0"),
        ("v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\n", "SDP must start with v=0"),
        ("v=0\r\ns=-\r\n", "SDP has no o= line"),
        ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nv=0\r\n", "repeated v= line"),
        ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\na\r\n", "not an SDP line: 'a'"),
        ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nab\r\n", "not an SDP line: 'ab'"),
        ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nA=b\r\n", "not an SDP line: 'A=b'"),
        ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n`=b\r\n", "not an SDP line: '`=b'"),
        ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n{=b\r\n", "not an SDP line: '{=b'"),
        ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\na=:x\r\n", "empty attribute: 'a=:x'"),
        ("v=0\r\no=- 1 IN IP4 192.0.2.1\r\n", "bad o= line: '- 1 IN IP4 192.0.2.1'"),
        ("v=0\r\no=- 1 1 IN IP4 192.0.2.1 x\r\n", "bad o= line"),
        (f"v=0\r\no=- {'1' * 65} 1 IN IP4 h\r\n", f"bad session id: '{'1' * 40}'..."),
        ("v=0\r\no=- 1 x IN IP4 h\r\n", "bad session version: 'x'"),
        (f"v=0\r\no=- 1 {2**64} IN IP4 h\r\n", f"session version {2**64} out of range"),
        ("v=0\r\no=- 1 1 IN IP4 h\u00f4te\r\n", "bad address: 'h\u00f4te'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4\r\n", "bad c= line: 'IN IP4'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 a b\r\n", "bad c= line: 'IN IP4 a b'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\u00f4te\r\n", "bad address"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 a\x7fb\r\n", "bad address"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nb=AS:x\r\n", "bad bandwidth: 'x'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nb=AS:1:2\r\n", "bad bandwidth: '1:2'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nb=:64\r\n", "bad b= line: ':64'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nb=AS:4294967296\r\n", "bandwidth 4294967296 out of range"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1\r\n", "bad m= line: 'audio 1'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio x RTP/AVP 0\r\n", "bad port: 'x'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 065535 RTP/AVP 0\r\n", "bad port: '065535'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 65536 RTP/AVP 0\r\n", "port 65536 out of range"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1/65536 RTP/AVP 0\r\n", "port 65536 out of range"),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1 RTP/AVP \u00e9\r\n",
            "m= line with an overlong or non-ASCII field: 'audio 1",
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1 RTP/AVP 0\x7f\r\n",
            "m= line with control characters",
        ),
    ],
)
def test_refusals_say_what_is_wrong(sdp: str, message: str) -> None:
    """Each refusal names the field and quotes (an excerpt of) what was found."""
    assert parse_error(sdp).startswith(message)


@pytest.mark.parametrize(
    ("field", "shown"),
    [
        ("x" * 40, repr("x" * 40)),
        ("x" * 41, repr("x" * 40) + "..."),
        ("x" * 42, repr("x" * 40) + "..."),
    ],
)
def test_a_quoted_field_is_cut_after_40_characters(field: str, shown: str) -> None:
    assert parse_error(f"v=0\r\no=- 1 1 IN IP4 h\r\n{field}\r\n") == f"not an SDP line: {shown}"


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        ("o=- 1 18446744073709551615 IN IP4 h", True),  # 2**64 - 1: an NTP timestamp fits
        ("o=- 1 0 IN IP4 h", True),
        (f"o=- {'1' * MAX_TOKEN_LENGTH} 1 IN IP4 h", True),
        (f"o=- 1 1 IN IP4 {'h' * 255}", True),  # RFC 1035 names and a multicast suffix
        (f"o=- 1 1 IN IP4 {'h' * 256}", False),
    ],
)
def test_origin_field_bounds(line: str, ok: bool) -> None:
    sdp = f"v=0\r\n{line}\r\n"
    if ok:
        assert SessionDescription.parse(sdp).serialize().split(CRLF)[1] == line
    else:
        assert "bad address" in parse_error(sdp)


@pytest.mark.parametrize(
    ("m_line", "port", "count"),
    [
        ("m=audio 0 RTP/AVP 0", 0, None),
        ("m=audio 65535 RTP/AVP 0", 65535, None),
        ("m=audio 49170/2 RTP/AVP 0", 49170, 2),
        ("m=audio 49170/ RTP/AVP 0", 49170, None),
        ("m=audio 1/65535 RTP/AVP 0", 1, 65535),
        (f"m=audio 1 {'P' * MAX_TOKEN_LENGTH} 0", 1, None),
    ],
)
def test_media_line_bounds(m_line: str, port: int, count: int | None) -> None:
    media = SessionDescription.parse(HEAD + m_line + CRLF).media[0]
    assert (media.port, media.port_count) == (port, count)


def test_media_line_overlong_token_and_format_count() -> None:
    overlong = f"m=audio 1 {'P' * (MAX_TOKEN_LENGTH + 1)} 0"
    assert "overlong" in parse_error(HEAD + overlong + CRLF)
    formats = [str(n % 128) for n in range(64)]
    media = SessionDescription.parse(HEAD + f"m=audio 1 RTP/AVP {' '.join(formats)}\r\n").media[0]
    assert media.formats == formats
    assert "more than 64 formats" in parse_error(HEAD + "m=audio 1 RTP/AVP" + " 0" * 65 + CRLF)
    empty = SessionDescription.parse(HEAD + "m=audio 1 RTP/AVP\r\n").media[0]
    assert empty.formats == []


def test_size_and_line_caps_are_inclusive() -> None:
    """MAX_SDP_SIZE characters and MAX_SDP_LINES lines parse; one more of either does not."""
    head = "v=0\r\no=- 1 1 IN IP4 h\r\n"
    filler = MAX_SDP_SIZE - len(head) - len("a=\r\n")
    biggest = head + "a=" + "x" * filler + "\r\n"
    assert len(biggest) == MAX_SDP_SIZE
    assert SessionDescription.parse(biggest).attributes[0][0] == "x" * filler
    assert parse_error(biggest + "a") == f"SDP of {MAX_SDP_SIZE + 1} characters, over 65535"
    most = head + "a=x\r\n" * (MAX_SDP_LINES - 2)
    assert len(SessionDescription.parse(most).attributes) == MAX_SDP_LINES - 2
    assert parse_error(most + "a=x\r\n") == f"SDP of {MAX_SDP_LINES + 1} lines, over 1024"
    sections = head + "m=audio 1 RTP/AVP 0\r\n" * 17
    assert parse_error(sections) == "more than 16 media sections"


# ---- media attributes ------------------------------------------------------------------------


def media(*attributes: str, formats: str = "0 8 9 18 96 97") -> SessionDescription:
    return SessionDescription.parse(
        HEAD + f"m=audio 30000 RTP/AVP {formats}\r\n" + "".join(a + CRLF for a in attributes)
    )


def test_payload_types_are_the_numeric_formats_up_to_127_each_once() -> None:
    formats = ["0", "8", "0", "127", "128", "0127", "abc", "\u0663", "96"]
    assert MediaDescription("audio", 1, "RTP/AVP", formats).payload_types == [0, 8, 127, 96]


@pytest.mark.parametrize(
    ("rtpmap", "expected"),
    [
        ("96 OPUS/48000/2", ("opus", 48000, 2)),
        ("96 pcmu/8000", ("PCMU", 8000, 1)),
        ("96 PCMU/8000/1", ("PCMU", 8000, 1)),
        ("96 h264/90000", ("H264", 90000, 1)),
        ("96 Telephone-Event/8000", ("telephone-event", 8000, 1)),
        ("96 iLBC/8000", ("iLBC", 8000, 1)),  # unknown names keep their case
        ("  96   speex/1/255 ", ("speex", 1, 255)),
        ("96 L16/4294967295", ("L16", 4294967295, 1)),
        ("127 x/8000", ("x", 8000, 1)),
    ],
)
def test_rtpmap_fields(rtpmap: str, expected: tuple[str, int, int]) -> None:
    pt = int(rtpmap.split()[0])
    maps = media(f"a=rtpmap:{rtpmap}", formats=str(pt)).media[0].rtpmaps()
    assert (maps[pt].encoding, maps[pt].clock_rate, maps[pt].channels) == expected


@pytest.mark.parametrize(
    "rtpmap",
    [
        "96 x/8000/256",
        "96 x/8000/0",
        "96 x/0",
        "96 x/4294967296",
        "128 x/8000",
        "96 x/8000/1/1",
        "96 x",
    ],
)
def test_rtpmap_out_of_range_is_skipped(rtpmap: str) -> None:
    assert media(f"a=rtpmap:{rtpmap}", formats="96").media[0].rtpmaps() == {}


def test_rtpmaps_first_entry_wins_and_static_types_fill_in() -> None:
    """RFC 3551 §6: 0, 8 and 9 need no rtpmap; an explicit one is taken over the table."""
    maps = media("a=rtpmap:96 opus/48000/2", "a=rtpmap:96 VP8/90000", "a=rtpmap:8 G722/8000")
    described = {
        pt: (m.encoding, m.clock_rate, m.channels) for pt, m in maps.media[0].rtpmaps().items()
    }
    assert described == {
        0: ("PCMU", 8000, 1),
        8: ("G722", 8000, 1),
        9: ("G722", 8000, 1),
        96: ("opus", 48000, 2),
    }


def test_fmtp_lines_by_payload_type() -> None:
    section = media(
        "a=fmtp:96  Profile-Level-Id=42e01f ;packetization-mode= 1;;=x;"
        " sprop-parameter-sets=Z0I=,aM4=",
        "a=fmtp:96 packetization-mode=0",
        "a=fmtp:97 0-15",
    ).media[0]
    assert section.fmtp(96) == {
        "profile-level-id": "42e01f",
        "packetization-mode": "1",
        "sprop-parameter-sets": "Z0I=,aM4=",
    }
    assert section.fmtp(97) == {"0-15": ""}
    assert section.fmtp(8) == {} and section.fmtp_text(8) is None


@pytest.mark.parametrize(
    ("value", "params"),
    [
        ("a=1;b=2", {"a": "1", "b": "2"}),
        (" A = 1 ; ; B=2 ", {"a": "1", "b": "2"}),
        ("x=a=b", {"x": "a=b"}),
        ("0-15,66", {"0-15,66": ""}),
        ("Bare", {"Bare": ""}),  # a bare token is a value, not a key: its case is kept
        ("=1", {}),
        ("", {}),
    ],
)
def test_parse_fmtp(value: str, params: dict[str, str]) -> None:
    """RFC 4566 §6 fmtp: format-specific ``k=v`` pairs separated by ";" (RFC 6184 §8.1)."""
    assert parse_fmtp(value) == params


def test_rtcp_feedback_for_a_type_includes_the_wildcard() -> None:
    """RFC 4585 §4.2: ``*`` applies to every payload type; spacing is not significant."""
    section = media(
        "a=rtcp-fb:96 nack   pli",
        "a=rtcp-fb:* ccm fir",
        "a=rtcp-fb:97 goog-remb",
        "a=rtcp-fb:96",
        "a=rtcp-fb:96 ",
    ).media[0]
    assert section.rtcp_fb(96) == {"nack pli", "ccm fir"}
    assert section.rtcp_fb(97) == {"goog-remb", "ccm fir"}


def test_first_direction_attribute_wins_else_the_default() -> None:
    assert media("a=inactive", "a=sendonly").media[0].direction() == "inactive"
    assert media("a=recvonly").media[0].direction("sendonly") == "recvonly"
    assert media("a=rtcp-mux").media[0].direction("sendonly") == "sendonly"
    assert media().media[0].direction() == "sendrecv"


@pytest.mark.parametrize(
    ("value", "ptime"),
    [
        ("0000000000000020", 20),  # 16 characters
        ("00000000000000020", None),  # 17
        ("\uff12\uff10", None),  # full-width digits: float() takes them, RFC 4566 does not
        ("0.4", None),
        ("0.6", 1),
        ("1000.4", 1000),
    ],
)
def test_ptime_values(value: str, ptime: int | None) -> None:
    assert media(f"a=ptime:{value}").media[0].ptime == ptime


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("53020", (53020, None)),
        ("53020 IN IP4 126.16.64.4", (53020, "126.16.64.4")),  # RFC 3605 §2.1
        (
            "53020 IN IP6 2001:2345:6789:ABCD:EF01:2345:6789:ABCD",
            (53020, "2001:2345:6789:ABCD:EF01:2345:6789:ABCD"),
        ),
        ("53020 IN IP4", (53020, None)),
        ("1", (1, None)),
        ("65535", (65535, None)),
        ("0", None),
        ("65536", None),
        ("", None),
        ("x", None),
        ("53020 IN IP4 h\u00f4te", None),
    ],
)
def test_rtcp_attribute(value: str, expected: tuple[int, str | None] | None) -> None:
    assert media(f"a=rtcp:{value}").media[0].rtcp_attribute() == expected


def test_attributes_without_a_value_are_absent_for_value_readers() -> None:
    section = media("a=ptime", "a=rtcp", "a=fmtp", "a=rtcp-fb", "a=rtpmap").media[0]
    assert (section.ptime, section.rtcp_attribute(), section.fmtp_texts()) == (None, None, {})
    assert section.rtcp_fb(0) == frozenset() and section.rtpmaps()[0].encoding == "PCMU"
    assert section.has("ptime") and not section.has("rtcp-mux")


# ---- negotiation: reading the answer to our offer ----------------------------------------------


def answer(*media_lines: str, session: str = "") -> str:
    return HEAD + session + "".join(line + CRLF for line in media_lines)


def test_codecs_match_by_name_case_and_rate_and_the_first_listed_wins() -> None:
    session = negotiate(OFFER, answer("m=audio 30000 RTP/AVP 101 96 0", "a=rtpmap:96 pcma/8000"))
    assert session.audio is not None
    assert (session.audio.codec, session.audio.payload_type, session.audio.local_payload_type) == (
        "PCMA",
        96,
        8,
    )


@pytest.mark.parametrize(
    ("rtpmap", "codec"),
    [
        ("96 opus/48000", "opus"),  # RFC 7587 §7: always /2, a missing count still matches
        ("96 PCMU/8000/2", None),  # two-channel PCMU is not what we offered
        ("96 PCMU/16000", None),
        ("96 telephone-event/8000", None),  # events alone are no media stream
    ],
)
def test_channels_and_rate_must_match(rtpmap: str, codec: str | None) -> None:
    session = negotiate(OFFER, answer("m=audio 30000 RTP/AVP 96", f"a=rtpmap:{rtpmap}"))
    assert (session.audio.codec if session.audio else None) == codec


@pytest.mark.parametrize(
    ("fmtp", "local"),
    [
        ("", 97),  # RFC 6184 §8.1: packetization-mode defaults to 0
        ("a=fmtp:100 packetization-mode=0", 97),
        ("a=fmtp:100 packetization-mode=1", 96),
        ("a=fmtp:100 Packetization-Mode=1", 96),
    ],
)
def test_h264_pairs_by_packetization_mode(fmtp: str, local: int) -> None:
    video = ["m=video 30002 RTP/AVP 100", "a=rtpmap:100 H264/90000"] + ([fmtp] if fmtp else [])
    session = negotiate(OFFER, answer("m=audio 30000 RTP/AVP 0", *video))
    assert session.video is not None and session.video.local_payload_type == local
    reply = answer(
        "m=video 30002 RTP/AVP 100", "a=rtpmap:100 H264/90000", "a=fmtp:100 packetization-mode=2"
    )
    assert (
        negotiate(OFFER, answer("m=audio 30000 RTP/AVP 0") + reply.removeprefix(HEAD)).video is None
    )


def test_the_local_entry_with_the_remote_number_is_preferred() -> None:
    offer = text(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.10",
        "c=IN IP4 192.0.2.10",
        "m=audio 40000 RTP/AVP 96 97",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:97 opus/48000/2",
    )
    session = negotiate(offer, answer("m=audio 30000 RTP/AVP 97", "a=rtpmap:97 opus/48000/2"))
    assert session.audio is not None and session.audio.local_payload_type == 97
    session = negotiate(offer, answer("m=audio 30000 RTP/AVP 98", "a=rtpmap:98 opus/48000/2"))
    assert session.audio is not None and session.audio.local_payload_type == 96


@pytest.mark.parametrize(
    ("lines", "remote", "local", "clock"),
    [
        (["m=audio 30000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000"], 101, 101, 8000),
        (["m=audio 30000 RTP/AVP 0 102", "a=rtpmap:102 telephone-event/48000"], 102, 110, 48000),
        (
            [
                "m=audio 30000 RTP/AVP 0 102 101",
                "a=rtpmap:101 telephone-event/8000",
                "a=rtpmap:102 telephone-event/8000",
            ],
            102,
            101,
            8000,
        ),
        (["m=audio 30000 RTP/AVP 0", "a=rtpmap:101 telephone-event/8000"], None, None, None),
        (["m=audio 30000 RTP/AVP 0 102", "a=rtpmap:102 telephone-event/16000"], None, None, None),
        (
            [
                "m=audio 30000 RTP/AVP 96 100 101",
                "a=rtpmap:96 opus/48000/2",
                "a=rtpmap:100 telephone-event/8000",
                "a=rtpmap:101 telephone-event/48000",
            ],
            101,
            110,
            48000,
        ),
        (
            [
                "m=audio 30000 RTP/AVP 96 100",
                "a=rtpmap:96 opus/48000/2",
                "a=rtpmap:100 telephone-event/8000",
            ],
            100,
            101,
            8000,
        ),
    ],
)
def test_telephone_events_pair_at_the_codec_clock_else_at_any_common_clock(
    lines: list[str], remote: int | None, local: int | None, clock: int | None
) -> None:
    """RFC 4733 §2.1: events at the audio codec's RTP clock are preferred; else the first
    rate both sides list (an Opus answer with only telephone-event/8000); a type described
    but not listed on the m= line is not taken, nor a rate we did not offer."""
    session = negotiate(OFFER, answer(*lines))
    assert session.audio is not None
    audio = session.audio
    assert (audio.telephone_event_pt, audio.local_telephone_event_pt) == (remote, local)
    assert audio.telephone_event_clock_rate == clock


@pytest.mark.parametrize(
    ("lines", "remote", "local"),
    [
        (["m=audio 30000 RTP/AVP 0 13"], 13, 13),
        (["m=audio 30000 RTP/AVP 8 98", "a=rtpmap:98 CN/8000"], 98, 13),
        (["m=audio 30000 RTP/AVP 9 13", "a=rtpmap:13 CN/8000"], 13, 13),
        (["m=audio 30000 RTP/AVP 0", "a=rtpmap:13 CN/8000"], None, None),
        (["m=audio 30000 RTP/AVP 0 98", "a=rtpmap:98 CN/16000"], None, None),
        (["m=audio 30000 RTP/AVP 96 13", "a=rtpmap:96 opus/48000/2"], None, None),
    ],
)
def test_comfort_noise_pairs_at_the_codec_clock_and_is_received_as_media(
    lines: list[str], remote: int | None, local: int | None
) -> None:
    """RFC 3389 §5: CN under the static 13 (no rtpmap needed, RFC 3551 §6) or a dynamic
    number, only on the codec's clock (it fills the codec's timeline): never beside Opus at
    48 kHz. Its payload types join the ones received as media, the codec's still first."""
    audio = negotiate(OFFER, answer(*lines)).audio
    assert audio is not None
    assert (audio.comfort_noise_pt, audio.local_comfort_noise_pt) == (remote, local)
    codec = {audio.payload_type, audio.local_payload_type}
    noise = {pt for pt in (remote, local) if pt is not None}
    assert audio.comfort_noise_payload_types == noise
    assert audio.receive_payload_types == codec | noise


def test_a_reoffer_with_comfort_noise_and_events_at_another_clock_is_answered_with_both() -> None:
    """RFC 3264 §6.1: the answer lists the codec, then the events and the CN it takes from
    the offer, under the offer's numbers; an offer without CN gets none."""
    offer = answer(
        "m=audio 30000 RTP/AVP 96 100 13",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:100 telephone-event/8000",
        "a=sendrecv",
    )
    reply = SessionDescription.parse(answer_offer(OFFER, offer).sdp).media[0]
    assert reply.payload_types == [96, 100]
    assert reply.rtpmaps()[100].clock_rate == 8000
    pcmu = answer("m=audio 30000 RTP/AVP 0 97 13", "a=rtpmap:97 telephone-event/8000")
    result = answer_offer(OFFER, pcmu)
    reply = SessionDescription.parse(result.sdp).media[0]
    assert reply.payload_types == [0, 97, 13]
    assert reply.values("rtpmap") == ["0 PCMU/8000", "97 telephone-event/8000", "13 CN/8000"]
    assert result.session.audio is not None
    assert result.session.audio.comfort_noise_payload_types == {13}


@pytest.mark.parametrize(
    ("lines", "ptime", "maxptime"),
    [
        (["m=audio 30000 RTP/AVP 0", "a=ptime:30", "a=maxptime:40"], 30, 40),
        (["m=audio 30000 RTP/AVP 0", "a=maxptime:20"], None, 20),
        (["m=audio 30000 RTP/AVP 0", "a=maxptime:0"], None, None),
        (["m=audio 30000 RTP/AVP 0", "a=maxptime:x"], None, None),
        (["m=audio 30000 RTP/AVP 0", "a=maxptime:1001"], None, None),
        (["m=audio 30000 RTP/AVP 0", "a=maxptime:59.6"], None, 60),
    ],
)
def test_ptime_and_maxptime_are_read_from_the_answer(
    lines: list[str], ptime: int | None, maxptime: int | None
) -> None:
    """RFC 4566 §6: both in milliseconds; an unusable value counts as absent."""
    audio = negotiate(OFFER, answer(*lines)).audio
    assert audio is not None
    assert (audio.ptime, audio.maxptime) == (ptime, maxptime)


@pytest.mark.parametrize(
    ("lines", "rtp", "rtcp", "mux"),
    [
        (["m=audio 30000 RTP/AVP 0"], ("198.51.100.5", 30000), ("198.51.100.5", 30001), False),
        (["m=audio 65534 RTP/AVP 0"], ("198.51.100.5", 65534), ("198.51.100.5", 65535), False),
        (
            ["m=audio 30000 RTP/AVP 0", "c=IN IP4 224.2.1.1/127"],
            ("224.2.1.1", 30000),
            ("224.2.1.1", 30001),
            False,
        ),
        (
            ["m=audio 30000 RTP/AVP 0", "a=rtcp:30011"],
            ("198.51.100.5", 30000),
            ("198.51.100.5", 30011),
            False,
        ),
        (
            ["m=audio 30000 RTP/AVP 0", "a=rtcp-mux", "a=rtcp:30011 IN IP4 203.0.113.1"],
            ("198.51.100.5", 30000),
            ("198.51.100.5", 30000),
            True,
        ),
    ],
)
def test_rtp_and_rtcp_addresses(
    lines: list[str], rtp: tuple[str, int], rtcp: tuple[str, int], mux: bool
) -> None:
    """RFC 3550 §11 (port + 1), RFC 3605 (a=rtcp), RFC 5761 (rtcp-mux, taken over a=rtcp)."""
    stream = negotiate(OFFER, answer(*lines)).audio
    assert stream is not None
    assert (stream.rtp_address, stream.rtcp_address, stream.rtcp_mux) == (rtp, rtcp, mux)


def test_rtcp_mux_needs_both_sides() -> None:
    ours = build_offer("192.0.2.10", 40000, session_id=1, rtcp_mux=False)
    stream = negotiate(ours, answer("m=audio 30000 RTP/AVP 0", "a=rtcp-mux")).audio
    assert stream is not None and not stream.rtcp_mux
    assert stream.rtcp_address == ("198.51.100.5", 30001)


def test_missing_connection_names_the_stream() -> None:
    no_c = "v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 30000 RTP/AVP 0\r\n"
    with pytest.raises(SdpParseError, match="no connection address for the audio stream"):
        negotiate(OFFER, no_c)
    with pytest.raises(SdpParseError, match="RTP port 65535 leaves no port for RTCP"):
        negotiate(OFFER, answer("m=audio 65535 RTP/AVP 0"))


def test_stream_parameters_come_from_the_answer() -> None:
    session = negotiate(
        OFFER,
        answer(
            "m=audio 30000 RTP/AVP 0",
            "a=ptime:30",
            "m=video 30002 RTP/AVP 98",
            "a=rtpmap:98 VP8/90000",
            "a=fmtp:98 max-fr=30",
            "a=rtcp-fb:98 nack pli",
            "a=inactive",
            session="a=sendonly\r\n",
        ),
    )
    audio, video = session.audio, session.video
    assert audio is not None and video is not None
    assert (audio.kind, audio.direction, audio.ptime, audio.fmtp, audio.rtcp_fb) == (
        "audio",
        "sendonly",  # from the session level (RFC 4566 §6)
        30,
        {},
        frozenset(),
    )
    assert (audio.clock_rate, audio.sample_rate, audio.channels) == (8000, 8000, 1)
    assert (video.kind, video.codec, video.direction, video.ptime) == (
        "video",
        "VP8",
        "inactive",
        None,
    )
    assert (video.fmtp, video.rtcp_fb) == ({"max-fr": "30"}, frozenset({"nack pli"}))
    assert session.remote_origin.username == "-" and session.remote_origin.session_version == 7


@pytest.mark.parametrize(
    ("lines", "audio", "video"),
    [
        (["m=audio 0 RTP/AVP 0", "m=video 30002 RTP/AVP 98", "a=rtpmap:98 VP8/90000"], False, True),
        (
            ["m=video 30002 RTP/AVP 98", "a=rtpmap:98 VP8/90000", "m=audio 30000 RTP/AVP 0"],
            False,
            False,
        ),
        (["m=audio 30000 RTP/AVP 0"], True, False),
        (
            ["m=video 30000 RTP/AVP 0", "m=audio 30002 RTP/AVP 98", "a=rtpmap:98 VP8/90000"],
            False,
            False,
        ),
    ],
)
def test_answer_m_lines_pair_with_ours_by_position(
    lines: list[str], audio: bool, video: bool
) -> None:
    """RFC 3264 §6: the answer's m-lines answer ours in order and keep their media type, even
    when the codec would fit the other kind; port 0 rejects a stream."""
    session = negotiate(OFFER, answer(*lines))
    assert (session.audio is not None, session.video is not None) == (audio, video)


def test_our_stream_with_port_zero_negotiates_nothing() -> None:
    ours = build_offer("192.0.2.10", 0, session_id=1)
    assert negotiate(ours, answer("m=audio 30000 RTP/AVP 0")).audio is None


# ---- answering an offer (re-INVITE) ------------------------------------------------------------

REOFFER = text(
    "v=0",
    "o=bob 2808844564 2808844565 IN IP4 198.51.100.5",
    "s=-",
    "c=IN IP4 198.51.100.5",
    "t=0 0",
    "m=audio 49172 RTP/AVP 0 101",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:30",
    "m=video 49174 RTP/AVPF 100 31",
    "a=rtpmap:100 H264/90000",
    "a=fmtp:100 profile-level-id=42e01f;packetization-mode=1",
    "a=rtcp-fb:100 nack pli",
    "a=rtcp-fb:100 goog-remb",
    "a=rtcp-mux",
    "a=recvonly",
    "m=video 49176 RTP/AVP 31 34",
    "m=audio 49178 RTP/AVP 0",
    "m=application 49180 UDP/BFCP *",
    "m=video 49182 RTP/AVP",
)


def test_answer_text() -> None:
    """RFC 3264 §6.1: one answer line per offered m= line in order, our port and the peer's
    payload numbers, our ptime and fmtp, feedback both sides named, events at the codec's
    clock, the direction mirrored; a stream we cannot take is rejected with port 0 and the
    first offered format (our video and audio are taken by the first of each kind)."""
    reply = answer_offer(OFFER, REOFFER)
    assert reply.sdp == text(
        "v=0",
        "o=- 42 4 IN IP4 192.0.2.10",
        "s=sip2rtmp",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
        "m=video 40002 RTP/AVPF 100",
        "a=rtpmap:100 H264/90000",
        "a=fmtp:100 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1",
        "a=rtcp-fb:100 nack pli",
        "a=rtcp-mux",
        "a=sendonly",
        "m=video 0 RTP/AVP 31",
        "m=audio 0 RTP/AVP 0",
        "m=application 0 UDP/BFCP *",
        "m=video 0 RTP/AVP 0",
    )
    assert reply.changed
    session = reply.session
    assert session.remote_origin.username == "bob"
    assert session.audio is not None and session.video is not None
    assert (session.audio.payload_type, session.audio.ptime) == (0, 30)
    assert (session.video.codec, session.video.payload_type, session.video.local_payload_type) == (
        "H264",
        100,
        96,
    )
    assert session.video.direction == "recvonly" and session.video.rtcp_mux


def test_answer_without_ptime_or_events() -> None:
    """No a=ptime when our capabilities have none, no event line when the peer offers none."""
    ours = SessionDescription.parse(OFFER)
    ours.media[0].attributes = [a for a in ours.media[0].attributes if a[0] != "ptime"]
    reply = answer_offer(ours, text(*HEAD.split(CRLF)[:-1], "m=audio 30000 RTP/AVP 8"))
    audio = SessionDescription.parse(reply.sdp).media[0]
    assert audio.serialize() == [
        "m=audio 40000 RTP/AVP 8",
        "a=rtpmap:8 PCMA/8000",
        "a=sendrecv",
    ]


@pytest.mark.parametrize(
    ("remote", "local", "answered"), [(0, 40000, 0), (1, 40000, 40000), (1, 0, 0)]
)
def test_a_port_zero_on_either_side_rejects_the_stream(
    remote: int, local: int, answered: int
) -> None:
    """RFC 3264 §6: a stream offered with port 0, or one we have at port 0, is answered with 0."""
    ours = build_offer("192.0.2.10", local, session_id=1)
    reply = answer_offer(ours, text(*HEAD.split(CRLF)[:-1], f"m=audio {remote} RTP/AVP 0"))
    assert SessionDescription.parse(reply.sdp).media[0].port == answered
    assert (reply.session.audio is not None) == bool(answered)


DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# RFC 3264 §6.1: what we answer, by our own direction (rows) and the offer's (columns).
ANSWERED = {
    "sendrecv": ("sendrecv", "recvonly", "sendonly", "inactive"),
    "sendonly": ("sendonly", "inactive", "sendonly", "inactive"),
    "recvonly": ("recvonly", "recvonly", "inactive", "inactive"),
    "inactive": ("inactive", "inactive", "inactive", "inactive"),
}


@pytest.mark.parametrize("ours", DIRECTIONS)
@pytest.mark.parametrize("theirs", DIRECTIONS)
def test_answered_direction(ours: str, theirs: str) -> None:
    capabilities = OFFER.replace("a=sendrecv", f"a={ours}")
    offered = text(*HEAD.split(CRLF)[:-1], "m=audio 30000 RTP/AVP 0", f"a={theirs}")
    reply = answer_offer(capabilities, offered)
    expected = ANSWERED[ours][DIRECTIONS.index(theirs)]
    assert SessionDescription.parse(reply.sdp).media[0].direction() == expected


def test_version_moves_only_when_the_body_changes() -> None:
    """RFC 3264 §8: the o= version goes up by one for any change, spacing included."""
    ours = build_offer("192.0.2.10", 40000, session_id=1, session_version=9, session_name="a b")
    offered = text(*HEAD.split(CRLF)[:-1], "m=audio 30000 RTP/AVP 0")
    first = answer_offer(ours, offered)
    assert SessionDescription.parse(first.sdp).origin.session_version == 10
    again = answer_offer(ours, offered, previous=first.sdp)
    assert not again.changed and again.sdp == first.sdp
    respaced = answer_offer(ours, offered, previous=first.sdp.replace("s=a b", "s=a  b"))
    assert respaced.changed
    assert SessionDescription.parse(respaced.sdp).origin.session_version == 11
