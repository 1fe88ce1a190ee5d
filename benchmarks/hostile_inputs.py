"""Worst-case cost of every parser that reads network input, on 64 KB pathological inputs.

A relay parses whatever reaches its SIP and RTP ports on the asyncio loop, so one input that
costs a parser a second stops the call's media for that second. Each case below builds one
hostile input of about 64 KB (the largest SIP message or UDP datagram we accept), or a packet
stream built to exhaust a cap, and times the parser on it: the best of a few runs, against a
limit of 50 ms. The input is made before the clock starts; the parser's own typed error
(``SipParseError``, ``SdpParseError``...) is an expected outcome, any other exception is a
finding and fails the run too.

    .venv/bin/python -m benchmarks.hostile_inputs
    .venv/bin/python -m benchmarks.hostile_inputs --only sdp --repeats 5
"""

from __future__ import annotations

import argparse
import itertools
import struct
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from sip2rtmp.relay.dtmf import parse_info_dtmf
from sip2rtmp.rtp.dtmf import DtmfParseError, DtmfReceiver
from sip2rtmp.rtp.h264 import (
    H264Depacketizer,
    H264ParseError,
    parse_sprop_parameter_sets,
    parse_sps,
)
from sip2rtmp.rtp.packet import RtpPacket, RtpParseError
from sip2rtmp.rtp.rtcp import RtcpParseError, parse_compound
from sip2rtmp.rtp.vp8 import Vp8Depacketizer
from sip2rtmp.sip.auth import Credentials, parse_challenges
from sip2rtmp.sip.message import SipParseError, StreamFramer, parse_message
from sip2rtmp.sip.sdp import SdpParseError, answer_offer, build_offer, negotiate
from sip2rtmp.sip.useragent import UserAgent, UserAgentConfig

LIMIT_S = 0.050
"""Longest a single hostile input may hold the event loop."""
SIZE = 64 * 1024
"""Input size: a UDP datagram, and the SIP message size limit, are both about this."""
FILLER = 60_000
"""Hostile part of a SIP message: the rest of it must fit the 65,535-byte message limit, or
the size check refuses it before the parser under test ever runs."""
DEFAULT_REPEATS = 3
GIVE_UP_FACTOR = 10
"""A run this many times over the limit is not repeated: best-of only smooths noise."""

TYPED_ERRORS: tuple[type[Exception], ...] = (
    SipParseError,
    SdpParseError,
    RtpParseError,
    RtcpParseError,
    H264ParseError,
    DtmfParseError,
)

Operation = Callable[[], object]


@dataclass(frozen=True)
class Case:
    """One hostile input for one parser; ``setup`` makes a fresh operation per run, untimed."""

    parser: str
    name: str
    setup: Callable[[], Operation]


@dataclass(frozen=True)
class Result:
    case: Case
    seconds: float
    runs: int
    escaped: str | None
    """The type of an untyped exception the parser let out, if any."""

    @property
    def ok(self) -> bool:
        return self.escaped is None and self.seconds <= LIMIT_S


def _fixed(operation: Operation) -> Callable[[], Operation]:
    return lambda: operation


# ---- SIP ------------------------------------------------------------------------------------

_REQUEST_HEAD = (
    "OPTIONS sip:relay@192.0.2.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-bench\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:peer@192.0.2.9>;tag=bench\r\n"
    "To: <sip:relay@192.0.2.1>\r\n"
    "Call-ID: bench@192.0.2.9\r\n"
    "CSeq: 1 OPTIONS\r\n"
)


def _request(*fields: str, body: str = "") -> bytes:
    head = _REQUEST_HEAD + "".join(f"{field}\r\n" for field in fields)
    return f"{head}Content-Length: {len(body.encode())}\r\n\r\n{body}".encode()


def _sip_messages() -> dict[str, bytes]:
    """Messages that each aim at one weak spot a header parser can have."""
    n = FILLER
    return {
        "spaces without a newline": _request("Subject: a" + " " * n + "b"),
        "spaces and tabs before a newline": _request("Subject: a" + " \t" * (n // 2)),
        "folded lines": _request("Subject: a" + "\r\n b" * (n // 4)),
        "comma list": _request("Supported: " + "," * n),
        "Record-Route entries": _request(
            "Record-Route: " + ",".join(["<sip:p@192.0.2.2;lr>"] * (n // 21))
        ),
        "long quoted string": _request('From: "' + "a" * n + '" <sip:x@192.0.2.9>;tag=q'),
        "unterminated quoted pairs": _request('Subject: "' + "\\a" * (n // 2)),
        "many Via params": _request(
            "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-x" + ";p" * (n // 2)
        ),
        "many URI params": _request("Contact: <sip:x@192.0.2.9" + ";p" * (n // 2) + ">"),
        "angle brackets": _request("Contact: " + "<" * n),
        "many header fields": _request(*(["X-A: b"] * (n // 8))),
    }


def _framer_message() -> bytes:
    """A 64 KB message: a long header section and a long body."""
    fields = [f"X-Filler-{index:05d}: {'h' * 100}" for index in range(200)]
    return _request(*fields, body="b" * (SIZE - 200 * 120 - 600))


def _feed(message: bytes, chunk: int) -> Operation:
    def run() -> object:
        framer = StreamFramer()
        out = [framer.feed(message[i : i + chunk]) for i in range(0, len(message), chunk)]
        if sum(len(batch) for batch in out) != 1:
            raise AssertionError("the framer did not cut out exactly one message")
        return out

    return run


def _challenges() -> dict[str, str]:
    n = FILLER
    return {
        "long realm": 'Digest nonce="n", realm="' + "r" * n + '"',
        "many parameters": "Digest nonce=n" + ", a=b" * (n // 5),
        "commas": "Digest nonce=n" + "," * n,
        "quoted pairs, unterminated": 'Digest nonce="' + "\\x" * (n // 2),
        "many schemes": "Digest nonce=n, " * (n // 16),
    }


def _user_agent() -> UserAgent:
    config = UserAgentConfig(
        "relay", "example.test", Credentials("relay", "secret"), local_host="192.0.2.1"
    )
    tokens = itertools.count()
    return UserAgent(config, [("192.0.2.2", 5060)], token_factory=lambda: f"t{next(tokens)}")


def _registering_ua_and_401(challenge: str) -> Callable[[], Operation]:
    """A UA that sent its REGISTER, and the 401 answering it with ``challenge``."""

    def setup() -> Operation:
        ua = _user_agent()
        ua.register(0.0)
        (register, _addr), *_ = ua.data_to_send(0.0)
        request = parse_message(register)
        lines = [
            "SIP/2.0 401 Unauthorized",
            *(f"Via: {v}" for v in request.headers.get_all("Via")),
            f"From: {request.headers.get('From')}",
            f"To: {request.headers.get('To')};tag=srv",
            f"Call-ID: {request.headers.get('Call-ID')}",
            f"CSeq: {request.headers.get('CSeq')}",
            f"WWW-Authenticate: {challenge}",
            "Content-Length: 0",
        ]
        response = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return lambda: ua.receive_data(response, ("192.0.2.2", 5060), 0.1)

    return setup


def _ua_receives(message: bytes) -> Callable[[], Operation]:
    def setup() -> Operation:
        ua = _user_agent()
        return lambda: ua.receive_data(message, ("192.0.2.2", 5060), 0.0)

    return setup


def _sip_cases() -> Iterable[Case]:
    messages = _sip_messages()
    for name, message in messages.items():
        yield Case("sip parse_message", name, _fixed(partial(parse_message, message)))
    framed = _framer_message()
    yield Case("sip StreamFramer", "64 KB, 1 byte at a time", _fixed(_feed(framed, 1)))
    yield Case("sip StreamFramer", "64 KB, 1,400-byte chunks", _fixed(_feed(framed, 1400)))
    unended = ("OPTIONS sip:a@b SIP/2.0\r\nSubject: " + "a" * SIZE).encode()
    yield Case(
        "sip StreamFramer",
        "64 KB header without its end, 1 byte at a time",
        _fixed(_feed_unended(unended)),
    )
    for name, value in _challenges().items():
        yield Case(
            "sip parse_challenges", name, _fixed(partial(parse_challenges, [value], proxy=False))
        )
    for name in ("spaces without a newline", "folded lines", "Record-Route entries"):
        yield Case("sip UserAgent.receive_data", name, _ua_receives(messages[name]))
    for name in ("long realm", "many parameters"):
        yield Case(
            "sip UserAgent.receive_data",
            f"401 with {name}",
            _registering_ua_and_401(_challenges()[name]),
        )


def _feed_unended(data: bytes) -> Operation:
    def run() -> object:
        framer = StreamFramer()
        for index in range(len(data)):
            framer.feed(data[index : index + 1])
        return framer

    return run


# ---- SDP ------------------------------------------------------------------------------------

_OFFER = build_offer("192.0.2.1", 40000, 40002, session_id=1)
_SDP_HEAD = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
_HUGE = "9" * 4301
"""One digit over what int() converts (CPython's default limit): a plain ValueError."""


def _sdp_answers() -> dict[str, str]:
    n = FILLER
    h264 = "a=rtpmap:96 H264/90000\r\n"
    many_pts = " ".join(["96"] * (n // 8))
    return {
        "64 KB of attributes": _SDP_HEAD + "m=audio 30000 RTP/AVP 0\r\n" + "a=x\r\n" * (n // 5),
        "64 KB of fmtp lines": _SDP_HEAD
        + "m=audio 30000 RTP/AVP 0\r\nm=video 30002 RTP/AVP 96\r\n"
        + h264
        + "a=fmtp:97 x=y\r\n" * (n // 15),
        "a format list of one H.264 type, repeated": _SDP_HEAD
        + "m=audio 30000 RTP/AVP 0\r\n"
        + f"m=video 30002 RTP/AVP {many_pts}\r\n"
        + h264
        + "a=fmtp:96 packetization-mode=2\r\n" * (n // 64),
        "many media sections": _SDP_HEAD + "m=audio 30000 RTP/AVP 0\r\n" * (n // 25),
        "4,301-digit port": _SDP_HEAD + f"m=audio {_HUGE} RTP/AVP 0\r\n",
        "4,301-digit rtpmap rate": _SDP_HEAD
        + f"m=audio 30000 RTP/AVP 96\r\na=rtpmap:96 opus/{_HUGE}/2\r\n",
        "60,000-digit rtpmap rate": _SDP_HEAD
        + f"m=audio 30000 RTP/AVP 96\r\na=rtpmap:96 opus/{'9' * n}/2\r\n",
        "4,301-digit payload type": _SDP_HEAD + f"m=audio 30000 RTP/AVP {_HUGE}\r\n",
        "4,301-digit o= version": f"v=0\r\no=- 1 {_HUGE} IN IP4 192.0.2.9\r\ns=-\r\n",
        "60,000-digit ptime": _SDP_HEAD + f"m=audio 30000 RTP/AVP 0\r\na=ptime:{'9' * n}\r\n",
        "4,301-digit a=rtcp port": _SDP_HEAD + f"m=audio 30000 RTP/AVP 0\r\na=rtcp:{_HUGE}\r\n",
    }


def _sdp_cases() -> Iterable[Case]:
    for name, answer in _sdp_answers().items():
        yield Case("sdp negotiate", name, _fixed(partial(negotiate, _OFFER, answer)))
        yield Case("sdp answer_offer", name, _fixed(partial(answer_offer, _OFFER, answer)))


# ---- RTP side -------------------------------------------------------------------------------


def _rtp_cases() -> Iterable[Case]:
    extension = struct.pack("!BBHII", 0x9F, 96, 1, 0, 1) + bytes(60) + struct.pack("!HH", 1, 16000)
    packet = extension + bytes(SIZE - len(extension))
    yield Case(
        "rtp RtpPacket.parse",
        "64 KB, 15 CSRCs and a 64 KB extension",
        _fixed(lambda: RtpPacket.parse(packet)),
    )
    yield Case(
        "rtcp parse_compound",
        "16,384 empty APP packets",
        _fixed(lambda: parse_compound(bytes.fromhex("80cc0000") * (SIZE // 4))),
    )
    nack = struct.pack("!BBHII", 0x81, 205, SIZE // 4 - 1, 1, 2) + b"\x00\x01\xff\xff" * (
        SIZE // 4 - 3
    )
    yield Case(
        "rtcp parse_compound",
        "generic NACK of 16,381 words, every bit set",
        _fixed(lambda: parse_compound(nack)),
    )
    items = b"\x01\x00" * ((SIZE - 12) // 2)
    sdes = struct.pack("!BBHI", 0x81, 202, SIZE // 4 - 1, 1) + items + bytes(4)
    yield Case(
        "rtcp parse_compound",
        "SDES chunk of 32,762 empty items",
        _fixed(lambda: parse_compound(sdes[:SIZE])),
    )
    events = [(ts, struct.pack("!BBH", ts % 16, 0x80, 160)) for ts in range(SIZE // 4)]

    def dtmf() -> Operation:
        receiver = DtmfReceiver()
        return lambda: [receiver.feed(ts, payload) for ts, payload in events]

    yield Case("rtp DtmfReceiver.feed", "16,384 end events", dtmf)
    yield Case("rtp parse_sps", "64 KB SPS", _fixed(lambda: _swallow(parse_sps, _BIG_SPS)))
    yield Case(
        "rtp parse_sps",
        f"{len(_CAPPED_SPS)}-byte SPS read to its end",
        _fixed(lambda: _swallow(parse_sps, _CAPPED_SPS)),
    )
    sprop = ",".join(["Z0IAHpWoKA9puAgICBA="] * (SIZE // 21))
    yield Case(
        "rtp parse_sprop_parameter_sets",
        "64 KB value",
        _fixed(lambda: parse_sprop_parameter_sets(sprop)),
    )
    yield Case("rtp H264Depacketizer", "64 KB SPS in FU-A, then its size", _h264_fu_a_sps)
    markerless: list[tuple[type[H264Depacketizer | Vp8Depacketizer], str, bytes, bytes]] = [
        (H264Depacketizer, "20,000 packets without a marker",
         b"\x7c\x05" + bytes(1200), b"\x7c\x85" + bytes(1200)),
        (H264Depacketizer, "STAP-A of 1-byte NAL units, 20,000 packets",
         b"\x78" + b"\x00\x01\x41" * 400, b""),
        (Vp8Depacketizer, "20,000 packets without a marker",
         b"\x00" + bytes(1200), b"\x10" + bytes(1200)),
    ]  # fmt: skip
    for kind, what, payload, first in markerless:
        yield Case(f"rtp {kind.__name__}", what, _markerless(kind, payload, first))
    info_bodies = {
        "64 KB of newlines": b"\n" * SIZE,
        "64 KB of 'signal' without '='": b"signal " * (SIZE // 7),
        "64 KB of spaces, then Signal=1": b" " * SIZE + b"Signal=1",
    }
    for what, body in info_bodies.items():
        dtmf_info = partial(parse_info_dtmf, "application/dtmf-relay", body)
        yield Case("relay parse_info_dtmf", what, _fixed(dtmf_info))


def _ue(value: int) -> str:
    """Exp-Golomb bits of ``value`` (H.264 §9.1)."""
    code = format(value + 1, "b")
    return "0" * (len(code) - 1) + code


def _sps(announced: int, offsets: list[int]) -> bytes:
    """Baseline SPS with pic_order_cnt_type 1, a cycle of ``announced`` frames and the given
    offsets for them (H.264 §7.3.2.1.1), and nothing after: a parser runs out of bits."""
    bits = _ue(0) + _ue(0) + _ue(1) + "0" + _ue(0) + _ue(0) + _ue(announced)
    bits += "".join(_ue(2 * v - 1 if v > 0 else -2 * v) for v in offsets)
    bits += "1" * (-len(bits) % 8)
    return b"\x67\x42\x00\x1e" + int(bits, 2).to_bytes(len(bits) // 8, "big")


_BIG_SPS = _sps(2**20 - 1, []) + b"\xff" * (SIZE - 12)
"""A cycle of 2^20 frames announced, then all ones (a se(v) of 0 per bit): a parser that
believes the count reads to the end of the 64 KB."""
_CAPPED_SPS = _sps(255, [-(2**14)] * 255)
"""The longest read a 1 KB SPS allows: 255 offsets (the most H.264 allows) of 30 bits each."""


def _swallow(parse: Callable[[bytes], object], data: bytes) -> object:
    try:
        return parse(data)
    except H264ParseError:
        return None


def _h264_fu_a_sps() -> Operation:
    depacketizer = H264Depacketizer(wait_for_keyframe=False)
    body = _BIG_SPS[1:]
    chunks = [body[i : i + 1200] for i in range(0, len(body), 1200)]
    packets = []
    for index, chunk in enumerate(chunks):
        header = 0x07 | (0x80 if index == 0 else 0) | (0x40 if index == len(chunks) - 1 else 0)
        last = index == len(chunks) - 1
        packets.append(RtpPacket(96, index, 0, 1, bytes((0x7C, header)) + chunk, marker=last))

    def run() -> object:
        for packet in packets:
            depacketizer.push(packet)
        return depacketizer.resolution, depacketizer.decoder_config()

    return run


def _markerless(
    kind: Callable[[], H264Depacketizer | Vp8Depacketizer], payload: bytes, first: bytes = b""
) -> Callable[[], Operation]:
    def setup() -> Operation:
        depacketizer = kind()
        packets = [
            RtpPacket(96, seq, 0, 1, first if seq == 0 and first else payload)
            for seq in range(20_000)
        ]

        def run() -> object:
            for packet in packets:
                depacketizer.push(packet)
            return depacketizer

        return run

    return setup


# ---- running --------------------------------------------------------------------------------


def all_cases() -> list[Case]:
    return [*_sip_cases(), *_sdp_cases(), *_rtp_cases()]


def measure(case: Case, repeats: int) -> Result:
    best = float("inf")
    runs = 0
    for _ in range(repeats):
        operation = case.setup()
        start = time.perf_counter()
        try:
            operation()
        except TYPED_ERRORS:
            pass
        except Exception as exc:  # a finding: report it, never stop the table
            return Result(case, time.perf_counter() - start, runs + 1, type(exc).__name__)
        best = min(best, time.perf_counter() - start)
        runs += 1
        if best > GIVE_UP_FACTOR * LIMIT_S:
            break
    return Result(case, best, runs, None)


def print_table(results: list[Result]) -> None:
    width = max(len(f"{r.case.parser}: {r.case.name}") for r in results)
    print(f"{'parser: input':<{width}}  {'best ms':>9}  runs  verdict")
    for result in results:
        label = f"{result.case.parser}: {result.case.name}"
        verdict = "ok" if result.ok else "OVER LIMIT"
        if result.escaped is not None:
            verdict = f"RAISED {result.escaped}"
        print(f"{label:<{width}}  {1000 * result.seconds:9.1f}  {result.runs:4d}  {verdict}")
    print()
    print(f"{'worst per parser':<{width}}  {'ms':>9}")
    worst: dict[str, Result] = {}
    for result in results:
        current = worst.get(result.case.parser)
        if current is None or result.seconds > current.seconds:
            worst[result.case.parser] = result
    for parser, result in worst.items():
        mark = "" if result.seconds <= LIMIT_S else "  > limit"
        print(f"{parser:<{width}}  {1000 * result.seconds:9.1f}{mark}")
    print(f"limit: {1000 * LIMIT_S:.0f} ms per input")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="runs per case")
    parser.add_argument("--only", help="only the parsers whose name contains this text")
    args = parser.parse_args(argv)
    cases = [c for c in all_cases() if args.only is None or args.only in c.parser]
    results = []
    for case in cases:
        results.append(measure(case, args.repeats))
    print_table(results)
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"{len(failed)} of {len(results)} inputs over the limit or raised an untyped error")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
