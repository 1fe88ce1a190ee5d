"""The limits docs/security.md quotes, pinned to the values it states: a changed constant
fails here until the page says the same, and the behaviour turns exactly at the stated
number, written out rather than taken from the constant."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest

from sip2rtmp.net import amf, locate, rtmp_publish, rtmp_socket, rtp_endpoint
from sip2rtmp.relay import dtmf
from sip2rtmp.rtp import frames, h264, source
from sip2rtmp.sip import auth, context, dialog, invite, message, prack, sdp, useragent
from sip2rtmp.sip.dialog import Dialog
from sip2rtmp.sip.message import Request, Response, SipParseError, parse_message
from tests.unit.sip.exchange import ANSWER, OFFER, SERVER, make_ua, options_request, reply

SECURITY_DOC = next(
    folder / "docs" / "security.md"
    for folder in Path(__file__).resolve().parents
    if (folder / "docs" / "security.md").is_file()
)

PINNED: list[tuple[ModuleType, str, float, str, str]] = [
    (message, "MAX_MESSAGE_SIZE", 65_535, "MAX_MESSAGE_SIZE", "65,535 bytes"),
    (message, "MAX_HEADER_FIELDS", 256, "MAX_HEADER_FIELDS", "| 256 |"),
    (message, "MAX_FIELD_LENGTH", 8_192, "MAX_FIELD_LENGTH", "8,192 characters"),
    (message, "MAX_LIST_ELEMENTS", 64, "MAX_LIST_ELEMENTS", "64 per message"),
    (message, "MAX_NUMBER_DIGITS", 10, "MAX_NUMBER_DIGITS", "10 digits"),
    (dialog, "MAX_ROUTE_SET", 16, "MAX_ROUTE_SET_CHARS", "16 entries"),
    (dialog, "MAX_ROUTE_SET_CHARS", 2_048, "MAX_ROUTE_SET_CHARS", "2,048 characters"),
    (useragent, "MAX_SERVER_TRANSACTIONS", 64, "MAX_SERVER_TRANSACTIONS", "64 (the oldest"),
    (useragent, "MAX_FORKED_ANSWERS", 8, "MAX_FORKED_ANSWERS", "| 8 |"),
    (useragent, "MAX_CHALLENGES", 3, "MAX_CHALLENGES", "| 3, for in-dialog"),
    (auth, "MAX_AUTH_ITEMS", 64, "MAX_AUTH_ITEMS", "64, of at most"),
    (auth, "MAX_AUTH_PARAM_LENGTH", 1_024, "MAX_AUTH_PARAM_LENGTH", "1,024 characters each"),
    (useragent, "MAX_REFRESH_DELAY", 86_400, "MAX_REFRESH_DELAY", "once a day"),
    (sdp, "MAX_SDP_SIZE", 65_535, "sip/sdp.py", "65,535 characters"),
    (sdp, "MAX_SDP_LINES", 1_024, "sip/sdp.py", "1,024 lines"),
    (sdp, "MAX_MEDIA_SECTIONS", 16, "sip/sdp.py", "16 media sections"),
    (sdp, "MAX_FORMATS", 64, "sip/sdp.py", "64 formats each"),
    (dtmf, "MAX_INFO_BODY", 1_024, "MAX_INFO_BODY", "1,024 bytes"),
    (frames, "MAX_FRAME_BYTES", 4 * 1024 * 1024, "MAX_FRAME_BYTES", "4 MiB"),
    (frames, "MAX_FRAME_PACKETS", 4_096, "MAX_FRAME_PACKETS", "4,096 packets"),
    (h264, "MAX_PARAMETER_SET_SIZE", 1_024, "MAX_PARAMETER_SET_SIZE", "1,024 bytes"),
    (h264, "MAX_PARAMETER_SETS", 8, "MAX_PARAMETER_SET_SIZE", "8 in `sprop"),
    (h264, "MAX_ACCESS_UNIT_NALS", 4_096, "MAX_ACCESS_UNIT_NALS", "| 4,096 |"),
    (source, "MAX_CANDIDATES", 8, "MAX_CANDIDATES", "8 per stream"),
    (rtp_endpoint, "_MAX_PER_DRAIN", 256, "_MAX_PER_DRAIN", "| 256 (the rest waits"),
    (rtp_endpoint, "_RECEIVE_BUFFER", 1 << 20, "_MAX_PER_DRAIN", "buffer of up to 1 MiB"),
    (source, "ANSWER_RACE_S", 0.5, "ANSWER_RACE_S", "| 0.5 s (older"),
    (source, "PROBATION_PACKETS", 4, "PROBATION_PACKETS", "sent 4 packets"),
    (source, "PROBATION_S", 0.05, "PROBATION_S", "at least 50 ms"),
    (source, "SOURCE_SILENCE_S", 1.0, "SOURCE_SILENCE_S", "nothing for 1 s"),
    (invite, "MAX_REDIRECTS", 3, "MAX_REDIRECTS", "| 3 |"),
    (prack, "MAX_EARLY_DIALOGS", 8, "MAX_EARLY_DIALOGS", "| 8 |"),
    (context, "MAX_RETRY_AFTER", 3_600, "MAX_RETRY_AFTER", "one hour"),
    (locate, "MAX_NAPTR_FOLLOWED", 4, "MAX_NAPTR_FOLLOWED", "4 NAPTR records"),
    (locate, "MAX_SRV_RECORDS", 16, "MAX_NAPTR_FOLLOWED", "16 SRV records"),
    (locate, "MAX_TARGETS", 16, "MAX_NAPTR_FOLLOWED", "16 targets"),
    (rtmp_publish, "MAX_IN_MESSAGE", 64 * 1024, "MAX_IN_MESSAGE", "messages of 64 KiB"),
    (rtmp_publish, "MAX_IN_CHUNK_STREAMS", 16, "MAX_IN_MESSAGE", "16 chunk streams"),
    (amf, "MAX_AMF_DEPTH", 8, "MAX_IN_MESSAGE", "nested 8 deep"),
    (rtmp_socket, "MAX_READS_PER_WRITE", 4, "MAX_IN_MESSAGE", "at most 4 reads per write"),
]
"""(module, constant, the value security.md states, a word of the doc's line or row that
names it, how the doc writes the value there)."""


def _doc_line(anchor: str) -> str:
    """The lines naming `anchor`, each with the one before it (prose wraps)."""
    lines = SECURITY_DOC.read_text().splitlines()
    found = [" ".join(lines[max(i - 1, 0) : i + 1]) for i, ln in enumerate(lines) if anchor in ln]
    assert found, f"security.md no longer mentions {anchor}"
    return " ".join(found)


@pytest.mark.parametrize(
    ("module", "name", "value", "anchor", "written"),
    PINNED,
    ids=[name for _, name, *_ in PINNED],
)
def test_a_limit_is_the_value_the_page_states(
    module: ModuleType, name: str, value: float, anchor: str, written: str
) -> None:
    assert getattr(module, name) == value
    assert written in _doc_line(anchor)


def _request_with_fields(count: int) -> bytes:
    """An OPTIONS request of exactly `count` header fields."""
    mandatory = [
        "Via: SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKlimit",
        "From: <sip:a@lab.test>;tag=1",
        "To: <sip:relay@lab.test>",
        "Call-ID: limit",
        "CSeq: 1 OPTIONS",
    ]
    padding = [f"X-Pad-{index}: y" for index in range(count - len(mandatory) - 1)]
    head = "\r\n".join(["OPTIONS sip:relay@192.0.2.1 SIP/2.0", *mandatory, *padding])
    return (head + "\r\nContent-Length: 0\r\n\r\n").encode()


def test_256_header_fields_are_taken_and_257_refused() -> None:
    assert len(parse_message(_request_with_fields(256)).headers) == 256
    with pytest.raises(SipParseError, match="header fields"):
        parse_message(_request_with_fields(257))


def _answer_with_routes(routes: list[str]) -> tuple[Request, Response]:
    ua = make_ua()
    ua.invite(0.0, "someone", OFFER)
    [(data, _)] = ua.data_to_send(0.0)
    invite = parse_message(data)
    assert isinstance(invite, Request)
    extra = [("Contact", "<sip:callee@192.0.2.20>")]
    extra += [("Record-Route", f"<{uri}>") for uri in routes]
    answer = parse_message(reply(invite, 200, "OK", extra, to_tag="t", body=ANSWER))
    assert isinstance(answer, Response)
    return invite, answer


def _routes_of_length(total: int, count: int) -> list[str]:
    """`count` sip: URIs whose lengths add up to `total` characters."""
    base = "sip:p.test;lr"
    share, rest = divmod(total, count)
    sizes = [share + (1 if index < rest else 0) for index in range(count)]
    return [base[:4] + "p" * (size - len(base)) + base[4:] for size in sizes]


def test_a_route_set_of_2048_characters_is_kept_and_2049_refused() -> None:
    routes = _routes_of_length(2_048, 16)
    assert sum(map(len, routes)) == 2_048
    dialog = Dialog.from_response(*_answer_with_routes(routes))
    assert [route.uri for route in dialog.route_set] == routes[::-1]
    with pytest.raises(SipParseError, match="Record-Route longer than"):
        Dialog.from_response(*_answer_with_routes(_routes_of_length(2_049, 16)))


def test_a_route_set_of_16_entries_is_kept_and_17_refused() -> None:
    assert len(Dialog.from_response(*_answer_with_routes(["sip:p.test;lr"] * 16)).route_set) == 16
    with pytest.raises(SipParseError, match="17 entries"):
        Dialog.from_response(*_answer_with_routes(["sip:p.test;lr"] * 17))


def test_server_transactions_the_oldest_forgotten_first() -> None:
    """security.md: 64 server transactions kept, the oldest forgotten first; a request the
    agent forgot is a new transaction again, one it keeps is a retransmission."""
    ua = make_ua()
    for index in range(65):
        ua.receive_data(options_request(f"b{index}"), SERVER, index / 100)
    kept = [branch for branch, _ in ua._servers]
    assert kept == [f"z9hG4bKb{index}" for index in range(1, 65)]
    ua.receive_data(options_request("b0"), SERVER, 1.0)
    kept = [branch for branch, _ in ua._servers]
    assert kept == [f"z9hG4bKb{index}" for index in range(2, 65)] + ["z9hG4bKb0"]
    ua.receive_data(options_request("b2"), SERVER, 1.1)
    assert [branch for branch, _ in ua._servers] == kept, "kept: a retransmission"


def test_the_pinned_rows_cover_the_limits_table() -> None:
    """Every constant the table names is pinned above."""
    table = re.findall(r"^\|[^|]+\|[^|]+\| (.+) \|$", SECURITY_DOC.read_text(), re.M)
    named = {name for row in table for name in re.findall(r"`([A-Z_][A-Z_0-9]+)`", row)}
    pinned = {name for _, name, *_ in PINNED}
    assert len(named) >= 20, "the table was read"
    assert named - {"bounded_int"} <= pinned
