"""SRTP in the offer/answer model (RFC 4568 §7): our RTP/SAVP and RTP/AVP offers with a=crypto,
the answer's line picked by tag and suite, the keys mapped the right way round, and the
re-INVITE offers answered for each of the modes off, optional and required."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import pytest

from sip2rtmp.sip.offer_answer import SessionState, UnacceptableOffer
from sip2rtmp.sip.sdes import KEY_LENGTHS, SUITES, CryptoAttribute, offer_crypto
from sip2rtmp.sip.sdp import (
    MediaDescription,
    SdpParseError,
    SessionDescription,
    SrtpOffer,
    answer_offer,
    build_offer,
    negotiate,
)
from tests.unit.sdp.test_sdp_rules import DEFAULT_OFFER


def keyed(seed: int) -> Callable[[int], bytes]:
    """A `random_bytes` giving keys that start with ``seed`` and count up from there."""
    calls = [seed]

    def random_bytes(count: int) -> bytes:
        calls[0] += 1
        return bytes([calls[0]]) * count

    return random_bytes


AUDIO_LINES = offer_crypto(random_bytes=keyed(0x10))
VIDEO_LINES = offer_crypto(random_bytes=keyed(0x20))


def our_offer(profile: str | None) -> str:
    """Our INVITE's offer with SRTP required ("RTP/SAVP"), optional ("RTP/AVP") or off."""
    srtp = SrtpOffer(profile, AUDIO_LINES, VIDEO_LINES) if profile else None
    return build_offer("192.0.2.10", 40000, 40002, session_id=42, srtp=srtp)


REQUIRED, OPTIONAL, OFF = our_offer("RTP/SAVP"), our_offer("RTP/AVP"), our_offer(None)
PEER_KEY = bytes(range(30))
PEER_KEY_2 = bytes(range(100, 130))
PEER_GCM_KEY = bytes(range(200, 228))
HEAD = "v=0\r\no=- 7 7 IN IP4 198.51.100.5\r\ns=-\r\nc=IN IP4 198.51.100.5\r\nt=0 0\r\n"


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def crypto(tag: int, suite: str, key: bytes, extra: str = "") -> str:
    return f"a=crypto:{tag} {suite} inline:{b64(key)}{extra}\r\n"


def peer_sdp(audio_proto: str, audio_crypto: str = "", video: str = "") -> str:
    """A peer's answer or offer: PCMU audio with the given profile and crypto lines."""
    return (
        HEAD
        + f"m=audio 30000 {audio_proto} 0 101\r\n"
        + audio_crypto
        + ("a=rtpmap:101 telephone-event/8000\r\na=rtcp-mux\r\n")
        + video
    )


def h264_video(proto: str, video_crypto: str = "", port: int = 30002) -> str:
    return (
        f"m=video {port} {proto} 96\r\na=rtpmap:96 H264/90000\r\n"
        "a=fmtp:96 packetization-mode=1\r\n" + video_crypto
    )


def assert_no_key(text: str, *keys: bytes) -> None:
    """None of ``keys``, nor the start of one, is in ``text``."""
    for key in (*keys, *(line.key for line in AUDIO_LINES + VIDEO_LINES)):
        assert b64(key)[:12] not in text, text


# ---- our offer ------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["RTP/SAVP", "RTP/AVP"])
def test_srtp_offer_is_the_plain_offer_with_its_profile_and_crypto_lines(profile: str) -> None:
    """Both m= lines take the profile and their own a=crypto lines (RFC 4568 §7.1.1), after
    the codecs and before ptime; every other line, rtcp-fb included, is the plain offer's."""
    offer = SessionDescription.parse(our_offer(profile))
    audio, video = offer.media
    assert (audio.proto, video.proto) == (profile, profile)
    assert audio.values("crypto") == [line.serialize() for line in AUDIO_LINES]
    assert video.values("crypto") == [line.serialize() for line in VIDEO_LINES]
    assert [name for name, _ in audio.attributes][-6:] == [
        "crypto",
        "crypto",
        "crypto",
        "ptime",
        "rtcp-mux",
        "sendrecv",
    ]
    plain = [
        line.replace(profile, "RTP/AVP")
        for line in our_offer(profile).split("\r\n")
        if not line.startswith("a=crypto:")
    ]
    assert "\r\n".join(plain) == DEFAULT_OFFER
    assert video.rtcp_fb(96) == frozenset({"nack pli", "ccm fir"})


def test_srtp_offer_without_video_and_its_refusals() -> None:
    audio_only = build_offer(
        "192.0.2.10", 40000, session_id=1, srtp=SrtpOffer("RTP/SAVP", AUDIO_LINES, ())
    )
    assert [m.proto for m in SessionDescription.parse(audio_only).media] == ["RTP/SAVP"]
    with pytest.raises(ValueError, match="a=crypto lines for every stream"):
        build_offer("192.0.2.10", 1, 3, session_id=1, srtp=SrtpOffer("RTP/SAVP", AUDIO_LINES, ()))
    with pytest.raises(ValueError, match="a=crypto lines for every stream"):
        build_offer("192.0.2.10", 1, session_id=1, srtp=SrtpOffer("RTP/SAVP", (), ()))
    with pytest.raises(ValueError, match="profile"):
        build_offer("192.0.2.10", 1, session_id=1, srtp=SrtpOffer("UDP/TLS", AUDIO_LINES, ()))


# ---- the answer to our offer ----------------------------------------------------------------


def test_negotiate_takes_the_answered_tag_and_maps_the_keys() -> None:
    """Tag 2 (SHA1_32) answered on audio, tag 3 (GCM) on video: our key is the one we offered
    with that tag, theirs the one in the answer (RFC 4568 §6.1)."""
    answer = peer_sdp(
        "RTP/SAVP",
        crypto(2, "AES_CM_128_HMAC_SHA1_32", PEER_KEY),
        h264_video("RTP/SAVP", crypto(3, "AEAD_AES_128_GCM", PEER_GCM_KEY)),
    )
    session = negotiate(REQUIRED, answer)
    assert session.audio is not None and session.video is not None
    audio, video = session.audio.srtp, session.video.srtp
    assert audio is not None and video is not None
    assert (audio.suite, audio.local_key, audio.remote_key) == (
        "AES_CM_128_HMAC_SHA1_32",
        AUDIO_LINES[1].key,
        PEER_KEY,
    )
    assert (video.suite, video.local_key, video.remote_key) == (
        "AEAD_AES_128_GCM",
        VIDEO_LINES[2].key,
        PEER_GCM_KEY,
    )


def test_negotiate_passes_over_lines_it_cannot_use() -> None:
    lines = (
        crypto(7, "AES_CM_128_HMAC_SHA1_80", PEER_KEY)  # a tag we did not offer
        + crypto(1, "AES_CM_128_HMAC_SHA1_32", PEER_KEY)  # tag 1 was SHA1_80
        + crypto(1, "AES_CM_128_HMAC_SHA1_80", PEER_KEY, "|2^20|1:4")  # an MKI
        + crypto(1, "AES_CM_128_HMAC_SHA1_80", PEER_KEY[:16])  # too short
        + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:***\r\n"  # not base64
        + crypto(1, "AES_CM_128_HMAC_SHA1_80", PEER_KEY_2)
    )
    session = negotiate(REQUIRED, peer_sdp("RTP/SAVP", lines))
    assert session.audio is not None and session.audio.srtp is not None
    assert session.audio.srtp.remote_key == PEER_KEY_2
    assert session.audio.srtp.local_key == AUDIO_LINES[0].key


@pytest.mark.parametrize(
    ("proto", "lines", "reason"),
    [
        ("RTP/AVP", "", r"\(audio: no a=crypto line\)"),
        ("RTP/SAVP", "", r"\(audio: no a=crypto line\)"),
        (
            "RTP/SAVP",
            crypto(1, "AES_CM_128_HMAC_SHA1_80", PEER_KEY[:29]),
            r"crypto line 1 \(AES_CM_128_HMAC_SHA1_80\): a key of 29 bytes, not 30",
        ),
        ("RTP/SAVP", crypto(9, "AEAD_AES_128_GCM", PEER_GCM_KEY), "crypto line 9: a tag we"),
        (
            "RTP/SAVP",
            crypto(3, "AES_CM_128_HMAC_SHA1_80", PEER_KEY) + crypto(9, "X", PEER_KEY) * 3,
            "crypto line 3: not the suite offered with that tag; crypto line 9: a tag we did "
            r"not offer\)$",
        ),
    ],
)
def test_required_srtp_without_a_usable_answer_line_raises_without_keys(
    proto: str, lines: str, reason: str
) -> None:
    with pytest.raises(SdpParseError) as caught:
        negotiate(REQUIRED, peer_sdp(proto, lines))
    message = str(caught.value)
    assert message.startswith(
        "the answer has no usable a=crypto line for the SRTP the offer requires"
    )
    assert re.search(reason, message), message
    assert_no_key(message, PEER_KEY, PEER_GCM_KEY)
    with pytest.raises(UnacceptableOffer) as refused:
        SessionState(REQUIRED.encode(), REQUIRED.encode()).take_answer(
            peer_sdp(proto, lines).encode()
        )
    assert refused.value.status == 400 and "SRTP" in refused.value.reason


def test_a_declined_stream_needs_no_crypto() -> None:
    answer = peer_sdp(
        "RTP/SAVP", crypto(1, "AES_CM_128_HMAC_SHA1_80", PEER_KEY), h264_video("RTP/SAVP", port=0)
    )
    session = negotiate(REQUIRED, answer)
    assert session.video is None and session.audio is not None
    assert session.audio.srtp is not None


def test_optional_srtp_takes_a_plain_answer_or_an_encrypted_one() -> None:
    plain = negotiate(OPTIONAL, peer_sdp("RTP/AVP"))
    assert plain.audio is not None and plain.audio.srtp is None
    unusable = peer_sdp("RTP/AVP", crypto(1, "AES_CM_128_HMAC_SHA1_80", PEER_KEY[:20]))
    assert negotiate(OPTIONAL, unusable).audio is not None
    for proto in ("RTP/AVP", "RTP/SAVP", "RTP/SAVPF"):
        answer = peer_sdp(proto, crypto(1, "AES_CM_128_HMAC_SHA1_80", PEER_KEY))
        stream = negotiate(OPTIONAL, answer).audio
        assert stream is not None and stream.srtp is not None, proto
        assert (stream.srtp.local_key, stream.srtp.remote_key) == (AUDIO_LINES[0].key, PEER_KEY)


def test_optional_srtp_refuses_an_encrypted_answer_without_keys() -> None:
    with pytest.raises(SdpParseError, match="answer's RTP/SAVP audio stream has no usable") as c:
        negotiate(OPTIONAL, peer_sdp("RTP/SAVP", crypto(1, "X_Y", PEER_KEY)))
    assert_no_key(str(c.value), PEER_KEY)


def test_without_srtp_an_answers_crypto_lines_are_ignored() -> None:
    answer = peer_sdp("RTP/AVP", crypto(1, "AES_CM_128_HMAC_SHA1_80", PEER_KEY))
    stream = negotiate(OFF, answer).audio
    assert stream is not None and stream.srtp is None


# ---- answering the peer's offers (re-INVITE) --------------------------------------------------


def answered(sdp: str) -> list[MediaDescription]:
    return SessionDescription.parse(sdp).media


SAVP_OFFER = peer_sdp(
    "RTP/SAVP",
    crypto(5, "AES_CM_128_HMAC_SHA1_80", PEER_KEY, "|2^20|1:4")  # MKI: passed over
    + crypto(6, "AES_CM_128_HMAC_SHA1_32", PEER_KEY),
    h264_video("RTP/SAVPF", crypto(1, "AEAD_AES_128_GCM", PEER_GCM_KEY)),
)
AVP_CRYPTO_OFFER = peer_sdp("RTP/AVP", crypto(1, "AES_CM_128_HMAC_SHA1_80", PEER_KEY))
PLAIN_OFFER = peer_sdp("RTP/AVP")


@pytest.mark.parametrize(
    ("capabilities", "offer", "audio_proto", "srtp"),
    [
        (OFF, PLAIN_OFFER, "RTP/AVP", False),
        (OFF, AVP_CRYPTO_OFFER, "RTP/AVP", False),
        (OFF, SAVP_OFFER, None, False),
        (OPTIONAL, PLAIN_OFFER, "RTP/AVP", False),
        (OPTIONAL, AVP_CRYPTO_OFFER, "RTP/AVP", True),
        (OPTIONAL, SAVP_OFFER, "RTP/SAVP", True),
        (REQUIRED, PLAIN_OFFER, None, False),
        (REQUIRED, AVP_CRYPTO_OFFER, "RTP/AVP", True),
        (REQUIRED, SAVP_OFFER, "RTP/SAVP", True),
    ],
    ids=[
        "off-plain",
        "off-avp+crypto",
        "off-savp",
        "optional-plain",
        "optional-avp+crypto",
        "optional-savp",
        "required-plain",
        "required-avp+crypto",
        "required-savp",
    ],
)
def test_answer_offer_in_each_mode(
    capabilities: str, offer: str, audio_proto: str | None, srtp: bool
) -> None:
    """``audio_proto`` None: the stream is declined (port 0, RFC 3264 §6)."""
    result = answer_offer(capabilities, offer, random_bytes=keyed(0x70))
    audio = answered(result.sdp)[0]
    assert audio.proto == ("RTP/SAVP" if offer is SAVP_OFFER else "RTP/AVP")
    if audio_proto is None:
        assert audio.port == 0 and result.session.audio is None
        return
    stream = result.session.audio
    assert audio.port == 40000 and stream is not None
    assert (stream.srtp is not None) is srtp
    assert len(audio.values("crypto")) == (1 if srtp else 0)
    if stream.srtp is not None:
        line = CryptoAttribute.parse(audio.values("crypto")[0])
        assert (line.suite, line.key) == (stream.srtp.suite, stream.srtp.local_key)
        assert not any(b64(key)[:12] in result.sdp for key in (PEER_KEY, PEER_GCM_KEY))


def test_answer_takes_the_first_usable_offered_line_and_our_key_for_its_suite() -> None:
    """The MKI line (tag 5) is passed over; tag 6's suite is answered with the key our
    INVITE offered for it, the video's GCM line with our GCM key, on RTP/SAVPF."""
    result = answer_offer(REQUIRED, SAVP_OFFER, random_bytes=keyed(0x70))
    audio, video = answered(result.sdp)
    assert audio.values("crypto") == [
        CryptoAttribute(6, "AES_CM_128_HMAC_SHA1_32", AUDIO_LINES[1].key).serialize()
    ]
    assert video.proto == "RTP/SAVPF"
    assert video.values("crypto") == [
        CryptoAttribute(1, "AEAD_AES_128_GCM", VIDEO_LINES[2].key).serialize()
    ]
    session = result.session
    assert session.audio is not None and session.video is not None
    assert session.audio.srtp is not None and session.video.srtp is not None
    assert session.audio.srtp.remote_key == PEER_KEY
    assert session.video.srtp.remote_key == PEER_GCM_KEY
    assert session.video.srtp.local_key == VIDEO_LINES[2].key


def test_a_suite_our_last_sdp_has_no_key_for_gets_a_fresh_one() -> None:
    first = answer_offer(REQUIRED, AVP_CRYPTO_OFFER)  # our last SDP: SHA1_80 only
    gcm = peer_sdp("RTP/SAVP", crypto(4, "AEAD_AES_128_GCM", PEER_GCM_KEY))
    result = answer_offer(REQUIRED, gcm, previous=first.sdp, random_bytes=keyed(0x70))
    stream = result.session.audio
    assert stream is not None and stream.srtp is not None
    assert stream.srtp.local_key == bytes([0x71]) * KEY_LENGTHS["AEAD_AES_128_GCM"]
    assert result.changed


def test_a_reoffer_with_a_new_peer_key_changes_only_the_remote_key() -> None:
    """RFC 4568 §7.1.4: the peer may rekey in a re-INVITE; our key and our SDP stay."""
    state = SessionState(REQUIRED.encode(), REQUIRED.encode())
    first_sdp, first = state.answer(AVP_CRYPTO_OFFER.encode())
    rekeyed = AVP_CRYPTO_OFFER.replace(b64(PEER_KEY), b64(PEER_KEY_2))
    second_sdp, second = state.answer(rekeyed.encode())
    assert first.audio is not None and second.audio is not None
    assert first.audio.srtp is not None and second.audio.srtp is not None
    assert (first.audio.srtp.remote_key, second.audio.srtp.remote_key) == (PEER_KEY, PEER_KEY_2)
    assert first.audio.srtp.local_key == second.audio.srtp.local_key == AUDIO_LINES[0].key
    assert second_sdp == first_sdp


def test_required_srtp_refuses_a_plain_reoffer_with_488() -> None:
    state = SessionState(REQUIRED.encode(), REQUIRED.encode())
    with pytest.raises(UnacceptableOffer) as refused:
        state.answer((PLAIN_OFFER + h264_video("RTP/AVP")).encode())
    assert refused.value.status == 488
    assert state.local == REQUIRED.encode()


def test_parse_errors_never_show_a_key() -> None:
    """An excerpt of a broken line is masked before it is cut to 40 characters."""
    for line in (
        f"a=:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(PEER_KEY)}",
        f"X inline:{b64(PEER_KEY)}",
    ):
        with pytest.raises(SdpParseError) as caught:
            SessionDescription.parse(HEAD + line)
        assert "inline:***" in str(caught.value)
        assert_no_key(str(caught.value), PEER_KEY)
        with pytest.raises(UnacceptableOffer) as refused:
            SessionState(OFF.encode(), OFF.encode()).answer((HEAD + line).encode())
        assert_no_key(refused.value.reason, PEER_KEY)


def test_every_suite_we_offer_can_be_answered() -> None:
    for tag, suite in enumerate(SUITES, start=1):
        key = bytes(KEY_LENGTHS[suite])
        stream = negotiate(REQUIRED, peer_sdp("RTP/SAVP", crypto(tag, suite, key))).audio
        assert stream is not None and stream.srtp is not None
        assert (stream.srtp.suite, stream.srtp.remote_key) == (suite, key)
