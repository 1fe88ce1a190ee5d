"""SDP parse/serialise and offer/answer (RFC 4566, RFC 3264, RFC 3605, RFC 4317 style)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip2rtmp.sip.sdp import (
    SdpParseError,
    SessionDescription,
    answer_offer,
    audio_codecs_named,
    build_offer,
    negotiate,
)

# RFC 3264 §10.1
ALICE_OFFER = """v=0
o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
s=
c=IN IP4 host.atlanta.example.com
t=0 0
m=audio 49170 RTP/AVP 0 8 97
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:97 iLBC/8000
m=video 51372 RTP/AVP 31 32
a=rtpmap:31 H261/90000
a=rtpmap:32 MPV/90000
"""

BOB_ANSWER = """v=0
o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
s=
c=IN IP4 host.biloxi.example.com
t=0 0
m=audio 49174 RTP/AVP 0
a=rtpmap:0 PCMU/8000
m=video 49170 RTP/AVP 32
a=rtpmap:32 MPV/90000
"""

# RFC 3264 §10.1, Bob's later offer dropping video
BOB_REOFFER = """v=0
o=bob 2808844564 2808844565 IN IP4 host.biloxi.example.com
s=
c=IN IP4 host.biloxi.example.com
t=0 0
m=audio 49172 RTP/AVP 0
a=rtpmap:0 PCMU/8000
m=video 0 RTP/AVP 32
a=rtpmap:32 MPV/90000
"""


def offer() -> str:
    return build_offer("192.0.2.10", 40000, 40002, session_id=42, session_version=1)


def test_parse_rfc3264_example_and_round_trip() -> None:
    sdp = SessionDescription.parse(ALICE_OFFER)
    assert sdp.origin.username == "alice"
    assert sdp.origin.session_version == 2890844526
    assert sdp.connection is not None and sdp.connection.host == "host.atlanta.example.com"
    audio, video = sdp.media
    assert (audio.kind, audio.port, audio.payload_types) == ("audio", 49170, [0, 8, 97])
    assert audio.rtpmaps()[97].encoding == "iLBC"
    assert video.rtpmaps()[32].clock_rate == 90000
    assert SessionDescription.parse(sdp.serialize()) == sdp


def test_negotiate_rfc3264_example() -> None:
    session = negotiate(ALICE_OFFER, BOB_ANSWER)
    assert session.audio is not None
    assert session.audio.codec == "PCMU"
    assert session.audio.rtp_address == ("host.biloxi.example.com", 49174)
    assert session.audio.rtcp_address == ("host.biloxi.example.com", 49175)
    assert session.video is None  # MPV is nothing we can decode
    assert session.remote_origin.session_version == 2808844564


def test_offer_contents() -> None:
    sdp = SessionDescription.parse(offer())
    audio, video = sdp.media
    maps = audio.rtpmaps()
    names = {(m.encoding, m.clock_rate, m.channels) for m in maps.values()}
    assert {("PCMU", 8000, 1), ("PCMA", 8000, 1), ("G722", 8000, 1), ("opus", 48000, 2)} <= names
    assert ("telephone-event", 8000, 1) in names
    assert ("CN", 8000, 1) in names
    assert sorted(pt for pt in audio.payload_types if pt < 96) == [0, 8, 9, 13]
    opus = next(pt for pt, m in maps.items() if m.encoding == "opus")
    assert audio.fmtp(opus)["useinbandfec"] == "1"
    te = next(pt for pt, m in maps.items() if m.encoding == "telephone-event")
    assert audio.fmtp_text(te) == "0-16"
    assert audio.direction() == "sendrecv"
    h264 = [pt for pt, m in video.rtpmaps().items() if m.encoding == "H264"]
    modes = sorted(video.fmtp(pt)["packetization-mode"] for pt in h264)
    assert modes == ["0", "1"]
    assert all(video.fmtp(pt)["profile-level-id"] == "42e01f" for pt in h264)
    assert "VP8" in {m.encoding for m in video.rtpmaps().values()}
    assert video.rtcp_fb(h264[0]) == {"nack pli", "ccm fir"}
    assert offer().endswith("\r\n") and "\r\n\r\n" not in offer()


def test_offer_names_rtcp_ports_a_nat_moved() -> None:
    """RFC 3605: a far end without rtcp-mux sends RTCP to `a=rtcp`'s port on the c= host."""
    ours = build_offer(
        "203.0.113.9", 40100, 40200, session_id=42, audio_rtcp_port=51001, video_rtcp_port=51003
    )
    audio, video = SessionDescription.parse(ours).media
    assert (audio.rtcp_attribute(), video.rtcp_attribute()) == ((51001, None), (51003, None))
    far_end = build_offer("198.51.100.5", 30000, 30002, session_id=7, rtcp_mux=False)
    session = answer_offer(far_end, ours).session
    assert session.audio is not None and session.video is not None
    assert session.audio.rtp_address == ("203.0.113.9", 40100)
    assert session.audio.rtcp_address == ("203.0.113.9", 51001)
    assert session.video.rtcp_address == ("203.0.113.9", 51003)


def test_offer_without_rtcp_ports_has_no_rtcp_attribute() -> None:
    plain = offer()
    same = build_offer(
        "192.0.2.10", 40000, 40002, session_id=42, session_version=1, audio_rtcp_port=None
    )
    assert same == plain and "a=rtcp:" not in plain
    audio_only = build_offer("192.0.2.10", 40000, 40002, session_id=42, audio_rtcp_port=40011)
    audio, video = SessionDescription.parse(audio_only).media
    assert (audio.rtcp_attribute(), video.rtcp_attribute()) == ((40011, None), None)
    assert audio_only.count("a=rtcp:") == 1


def test_offer_lists_only_the_chosen_audio_codecs_in_their_order() -> None:
    chosen = audio_codecs_named(["pcmu", " PCMA", "PCMU"])
    assert chosen == ("PCMU", "PCMA")
    sdp = SessionDescription.parse(
        build_offer("192.0.2.1", 4000, session_id=1, audio_codecs=chosen)
    )
    audio = sdp.media[0]
    codecs = [audio.rtpmaps()[pt].encoding for pt in audio.payload_types]
    assert [c for c in codecs if c not in ("telephone-event", "CN")] == ["PCMU", "PCMA"]
    with pytest.raises(ValueError, match="'G729'"):
        audio_codecs_named(["PCMU", "G729"])


def test_dynamic_payload_types_match_by_name_and_rate() -> None:
    answer = """v=0
o=- 7 7 IN IP4 198.51.100.5
s=-
c=IN IP4 198.51.100.5
t=0 0
m=audio 30000 RTP/AVP 96 101
a=rtpmap:96 OPUS/48000/2
a=fmtp:96 useinbandfec=1;stereo=0
a=rtpmap:101 telephone-event/48000
a=ptime:20
a=sendonly
m=video 30002 RTP/AVP 100
c=IN IP4 203.0.113.9
a=rtpmap:100 H264/90000
a=fmtp:100 profile-level-id=42e01f;packetization-mode=0;sprop-parameter-sets=Z0IAHg,aM4
a=rtcp-fb:100 nack pli
a=rtcp-fb:* ccm fir
a=rtcp:30011 IN IP4 203.0.113.10
"""
    ours = offer()
    session = negotiate(ours, answer)
    audio, video = session.audio, session.video
    assert audio is not None and video is not None
    assert (audio.codec, audio.payload_type, audio.local_payload_type) == ("opus", 96, 111)
    assert (audio.clock_rate, audio.sample_rate, audio.channels) == (48000, 48000, 2)
    assert audio.telephone_event_pt == 101 and audio.local_telephone_event_pt == 110
    assert audio.direction == "sendonly" and audio.ptime == 20
    assert audio.receive_payload_types == {96, 111}
    assert video.codec == "H264"
    assert video.local_payload_type == 97  # the packetization-mode=0 entry we offered
    assert video.rtp_address == ("203.0.113.9", 30002)  # media c= overrides session c=
    assert video.rtcp_address == ("203.0.113.10", 30011)  # RFC 3605
    assert video.fmtp["sprop-parameter-sets"] == "Z0IAHg,aM4"
    assert video.rtcp_fb == {"nack pli", "ccm fir"}


def test_g722_exposes_both_rates_and_rtcp_mux() -> None:
    answer = """v=0
o=- 1 1 IN IP4 198.51.100.5
s=-
c=IN IP4 198.51.100.5
t=0 0
m=audio 30000 RTP/AVP 9 101
a=rtpmap:101 telephone-event/8000
a=rtcp-mux
m=video 0 RTP/AVP 96
"""
    session = negotiate(offer(), answer)
    assert session.audio is not None and session.video is None
    assert (session.audio.clock_rate, session.audio.sample_rate) == (8000, 16000)
    assert session.audio.rtcp_mux
    assert session.audio.rtcp_address == ("198.51.100.5", 30000)
    assert session.audio.telephone_event_pt == 101


def test_answer_without_common_codec_or_missing_lines() -> None:
    answer = """v=0
o=- 1 1 IN IP4 198.51.100.5
s=-
c=IN IP4 198.51.100.5
t=0 0
m=audio 30000 RTP/AVP 18
a=rtpmap:18 G729/8000
"""
    session = negotiate(offer(), answer)
    assert session.audio is None and session.video is None


def test_reinvite_answer_keeps_version_when_unchanged() -> None:
    ours = build_offer("192.0.2.10", 40000, 40002, session_id=42, session_version=5)
    first = answer_offer(ours, BOB_REOFFER)
    assert first.changed
    assert first.session.audio is not None and first.session.video is None
    sdp = SessionDescription.parse(first.sdp)
    assert sdp.origin.session_id == "42" and sdp.origin.session_version == 6
    audio, video = sdp.media
    assert (audio.port, audio.payload_types, audio.direction()) == (40000, [0], "sendrecv")
    assert (video.kind, video.port) == ("video", 0)  # rejected in place (RFC 3264 §6)
    again = answer_offer(ours, BOB_REOFFER, previous=first.sdp)
    assert not again.changed and again.sdp == first.sdp


def test_reinvite_srtp_stream_is_rejected() -> None:
    srtp = BOB_REOFFER.replace("m=audio 49172 RTP/AVP 0", "m=audio 49172 RTP/SAVP 0")
    answer = answer_offer(offer(), srtp)
    assert answer.session.audio is None
    assert SessionDescription.parse(answer.sdp).media[0].port == 0


def test_reinvite_hold_flips_direction_and_bumps_version() -> None:
    ours = offer()
    hold = BOB_REOFFER.replace(
        "a=rtpmap:0 PCMU/8000\nm=video", "a=rtpmap:0 PCMU/8000\na=sendonly\nm=video"
    )
    previous = answer_offer(ours, BOB_REOFFER).sdp
    held = answer_offer(ours, hold, previous=previous)
    assert held.changed
    assert SessionDescription.parse(held.sdp).media[0].direction() == "recvonly"
    assert held.session.audio is not None and held.session.audio.direction == "sendonly"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "o=- 1 1 IN IP4 1.2.3.4\r\n",
        "v=0\r\n",
        "v=0\r\no=- 1 1 IN IP4\r\n",
        "v=0\r\no=- 1 x IN IP4 1.2.3.4\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio notaport RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ngarbage\r\n",
    ],
)
def test_malformed(text: str) -> None:
    with pytest.raises(SdpParseError):
        SessionDescription.parse(text)


@pytest.mark.parametrize("value", ["1e400", "nan", "x", "20.4"])
def test_odd_ptime_values(value: str) -> None:
    sdp = SessionDescription.parse(
        f"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\na=ptime:{value}"
    )
    assert sdp.media[0].ptime == (20 if value == "20.4" else None)


def test_answer_without_connection_address_is_an_error() -> None:
    answer = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
    with pytest.raises(SdpParseError):
        negotiate(offer(), answer)


OURS = SessionDescription.parse(offer())
LINE = st.one_of(
    st.sampled_from(
        ["m=", "a=", "c=", "o=", "v=0", "s=", "t=", "b=", "a=rtpmap:", "a=fmtp:"]
    ).flatmap(lambda prefix: st.text(max_size=30).map(lambda rest: prefix + rest)),
    st.text(max_size=20),
)


@pytest.mark.fuzz
@given(st.lists(LINE, max_size=6))
def test_arbitrary_text_parses_or_raises(lines: list[str]) -> None:
    text = "\r\n".join(["v=0", "o=- 1 1 IN IP4 192.0.2.1", *lines])
    try:
        session = negotiate(OURS, text)
    except SdpParseError:
        return
    for stream in (session.audio, session.video):
        assert stream is None or 0 <= stream.payload_type < 128


@pytest.mark.fuzz
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    with contextlib.suppress(SdpParseError):
        SessionDescription.parse(text)
