"""The parser against RFC 4475 torture messages, the Headers multimap and the stream framer."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip2rtmp.sip.message import (
    MAX_MESSAGE_SIZE,
    Headers,
    Request,
    Response,
    SipEncodeError,
    SipParseError,
    StreamFramer,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_list,
)

SDP = (
    b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\n"
    b"t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"
)
assert len(SDP) == 150


def msg(head: str, body: bytes = b"") -> bytes:
    """RFC 4475 writes messages with bare line ends; SIP wants CRLF."""
    lines = head.strip("\n").split("\n")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


# --- RFC 4475 §3.1.1: valid messages a UA must accept ---------------------------------------

WSINV = msg(
    """
INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33
""",
    SDP,
)


def test_wsinv_short_tortuous_invite() -> None:
    """§3.1.1.1: folding, LWS everywhere, compact forms, unknown headers and parameters."""
    m = parse_message(WSINV)
    assert isinstance(m, Request)
    assert (m.method, m.uri) == ("INVITE", "sip:vivekg@chair-dnrc.example.com;unknownparam")
    assert m.to.tag == "1918181833n"
    assert m.to.uri == "sip:vivekg@chair-dnrc.example.com"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    assert m.headers.get("Max-Forwards") == "0068"
    assert m.cseq == (9, "INVITE")
    vias = [parse_via(v) for v in m.headers.get_all("Via")]
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    contact = parse_name_addr(m.headers.get("Contact") or "")
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert parse_name_addr(m.headers.get("Route") or "").sip_uri().loose_route
    assert m.body == SDP


INTMETH = msg(
    """
!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:\ufeff\u5927\u505c\u96fb
Content-Length: 0
"""  # noqa: E501
)


def test_intmeth_wide_range_of_valid_characters() -> None:
    """§3.1.1.2: every token character in method, branch, tag; escapes in a display name."""
    m = parse_message(INTMETH)
    assert isinstance(m, Request)
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"


ESC01 = msg(
    """
INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: 150
""",
    SDP,
)

ESCNULL = msg(
    """
REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0
"""
)

LWSDISP = msg(
    """
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0
"""
)

SEMIURI = msg(
    """
OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0
"""
)

TRANSPORTS = msg(
    """
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0
"""
)

MPART_BODY = (
    b"--7a9cbec.3ff1c2f5\r\nContent-Type: application/sdp\r\n\r\n"
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n--7a9cbec.3ff1c2f5\r\n"
    b"Content-Type: application/octet-stream\r\n\r\n\x00\xff\r\n\x80binary\x00"
    b"\r\n--7a9cbec.3ff1c2f5--\r\n"
)
MPART01 = msg(
    f"""
MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport
Max-Forwards: 70
Route: <sip:127.0.0.1:5080>
Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuLIK0YWVKZhKv9Mj8UeXqkMVbnVq37CD+813gvYjcBUaZngQmXc9WNZSDNGCzA+fWl9MEUHWIZo1CeJebdY/XlgKeTa0Olvq0rt70Q5jiSfbqMJmQFteeivUhkMWYUA=
Contact: <sip:fluffy@127.0.0.1:5070>
To: <sip:kumiko@example.org>
From: <sip:fluffy@example.com>;tag=2fb0dcc9
Call-ID: 3d9485ad0c49859b@Q2lzY28tMDAxOWJkMC0xMTJmNDUzMi0wNWE2ZGFiZi1mOGFkNTMx
CSeq: 1 MESSAGE
Content-Transfer-Encoding: binary
Content-Type: multipart/mixed;boundary=7a9cbec.3ff1c2f5
Content-Length: {len(MPART_BODY)}
""",  # noqa: E501
    MPART_BODY,
)

UNREASON = msg(
    """
SIP/2.0 200 = 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442\u043e \u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440\u043e\u0441\u0442\u043e\u0435
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 150
Content-Type: application/sdp
Contact: <sip:user@host198.example.com>
""",  # noqa: E501
    SDP,
)

NOREASON = msg(
    """
SIP/2.0 100 \n\
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>
"""
)


def _longreq() -> bytes:
    vias = "".join(f"Via: SIP/2.0/TCP sip{n}.example.com\n" for n in range(33, 0, -1))
    return msg(
        f"""
INVITE sip:user@example.com SIP/2.0
To: "I have a user name of {"extreme" * 10} proportion"<sip:user@example.com:6000;unknownparam1=very{"long" * 20}value;longparam{"name" * 25}=shortvalue;very{"long" * 25}ParameterNameWithNoValue>
F: sip:{"amazinglylongcallername" * 5}@example.net;tag=12{"982" * 50}424;unknownheaderparam{"name" * 20}=unknowheaderparam{"value" * 15};unknownValueless{"paramname" * 10}
Call-ID: longreq.one{"really" * 20}longcallid
CSeq: 3882340 INVITE
Unknown-{"Long" * 20}-Name: unknown-{"long" * 20}-value; unknown-{"long" * 20}-parameter-name = unknown-{"long" * 20}-parameter-value
{vias}Via: SIP/2.0/TCP host.example.com;received=192.0.2.5;branch=very{"long" * 50}branchvalue
Max-Forwards: 70
Contact: <sip:{"amazinglylongcallername" * 5}@host5.example.net>
Content-Type: application/sdp
l: 150
""",  # noqa: E501
        SDP,
    )


@pytest.mark.parametrize(
    "data",
    [ESC01, ESCNULL, LWSDISP, SEMIURI, TRANSPORTS, MPART01, UNREASON, NOREASON, _longreq()],
    ids=["esc01", "escnull", "lwsdisp", "semiuri", "transports", "mpart01", "unreason",
         "noreason", "longreq"],
)  # fmt: skip
def test_valid_torture_messages_parse(data: bytes) -> None:
    message = parse_message(data)
    assert message.call_id
    assert message.headers.get_all("Via")


def test_details_of_valid_torture_messages() -> None:
    esc01 = parse_message(ESC01)
    assert isinstance(esc01, Request)
    assert parse_uri(esc01.uri).user == "sips%3Auser%40example.com"
    assert esc01.headers.get("Content-Type") == "application/sdp"
    assert len(parse_message(ESCNULL).headers.get_all("Contact")) == 2
    assert parse_message(LWSDISP).from_.display_name == "caller"
    semiuri = parse_message(SEMIURI)
    assert isinstance(semiuri, Request)
    assert parse_uri(semiuri.uri).user == "user;par=u%40example.net"
    assert len(semiuri.headers.get_all("Accept")) == 6
    transports = [parse_via(v).transport for v in parse_message(TRANSPORTS).headers.get_all("v")]
    assert transports == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert parse_message(MPART01).body == MPART_BODY
    unreason = parse_message(UNREASON)
    assert isinstance(unreason, Response)
    assert unreason.status == 200 and unreason.reason.startswith("= 2**3 * 5**2 \u043d\u043e")
    noreason = parse_message(NOREASON)
    assert isinstance(noreason, Response)
    assert (noreason.status, noreason.reason) == (100, "")
    longreq = parse_message(_longreq())
    assert len(longreq.headers.get_all("Via")) == 34
    assert longreq.from_.tag == "12" + "982" * 50 + "424"


def test_dblreq_bytes_after_content_length_are_ignored() -> None:
    """§3.1.1.8: a REGISTER with Content-Length 0 followed by an INVITE in one datagram."""
    register = msg(
        """
REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0
"""
    )
    invite = msg(
        """
INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 150
""",
        SDP,
    )
    message = parse_message(register + invite)
    assert isinstance(message, Request)
    assert message.method == "REGISTER" and message.body == b""


# --- RFC 4475 §3.1.2 and §3.4: messages to refuse -----------------------------------------

INVALID = {
    "badinv01": (
        """
INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: "Joe" <sip:joe@example.org>;;;;
Content-Length: 150
Content-Type: application/sdp
""",
        "Via",
    ),
    "clerr": (
        """
INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999
""",
        "Content-Length says 9999",
    ),
    "ncl": (
        """
INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999
""",
        "Content-Length",
    ),
    "scalar02": (
        """
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1000000000000000000000000000000000000000000000000000000000000000000000000000000000
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Content-Length: 0
""",
        "CSeq",
    ),
    "scalarlg": (
        """
SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture "In Progress"
Content-Length: 0
""",
        "CSeq",
    ),
    "quotbal": (
        """
INVITE sip:user@example.com SIP/2.0
To: "Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234
Content-Type: application/sdp
Content-Length: 150
""",
        "unterminated",
    ),
    "ltgtruri": (
        """
INVITE <sip:user@example.com> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5
CSeq: 1 INVITE
Via: SIP/2.0/UDP 192.0.2.5
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: 150
""",
        "not a URI",
    ),
    "lwsruri": (
        """
INVITE sip:user@example.com; lr SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423
CSeq: 2130706432 INVITE
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: 150
""",
        "Request-Line",
    ),
    "lwsstart": (
        """
INVITE  sip:user@example.com  SIP/2.0
Max-Forwards: 8
To: sip:user@example.com
From: sip:caller@example.net;tag=8814
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com
CSeq: 1893884 INVITE
Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: 150
""",
        "Request-Line",
    ),
    "trws": (
        """
OPTIONS sip:remote-target@example.com SIP/2.0  \n\
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK299342093
To: <sip:remote-target@example.com>
From: <sip:local-resource@example.com>;tag=329429089
Call-ID: trws.oicu34958239neffasdhr2345r
Accept: application/sdp
CSeq: 238923 OPTIONS
Max-Forwards: 70
Content-Length: 0
""",
        "Request-Line",
    ),
    "regbadct": (
        """
REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1
CSeq: 1 REGISTER
Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E
l: 0
""",
        "angle brackets",
    ),
    "badaspec": (
        """
OPTIONS sip:user@example.org SIP/2.0
Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234
Max-Forwards: 70
From: "Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423
To: "Watson, Thomas" < sip:t.watson@example.org >
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0
""",
        "not a URI",
    ),
    "baddn": (
        """
OPTIONS sip:t.watson@example.org SIP/2.0
Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards:      70
From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43
To:      Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.31415@c.example.com
Accept: application/sdp
CSeq:    3923239 OPTIONS
l: 0
""",
        "more than one address",
    ),
    "badvers": (
        """
OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
l: 0
""",
        "Request-Line",
    ),
    "mismatch01": (
        """
OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
l: 0
""",
        "CSeq method",
    ),
    "bigcode": (
        """
SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>
""",
        "Status-Line",
    ),
    "insuf": (
        """
INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: 150
""",
        "missing",
    ),
    "mcl01": (
        """
OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423
To: sip:user@example.com
From: sip:other@example.net;tag=3923942
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain
""",
        "conflicting Content-Length",
    ),
    "multi01": (
        """
INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
Content-Type: application/sdp
l: 150
""",
        "more than one",
    ),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_torture_messages_are_refused(name: str) -> None:
    head, why = INVALID[name]
    body = b"" if "l: 0" in head or "Content-Length: 0" in head or name == "clerr" else SDP
    if name == "mcl01":
        body = b"There's no body here\r\n"
    with pytest.raises(SipParseError, match=why):
        parse_message(msg(head, body))


# --- building, headers, helpers ---------------------------------------------------------


def test_content_length_is_always_written_from_the_body() -> None:
    headers = Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bKx"), ("Content-Length", "99")])
    data = Request("MESSAGE", "sip:a@b", headers, b"hello").to_bytes()
    assert data.count(b"Content-Length") == 1
    assert data.endswith(b"Content-Length: 5\r\n\r\nhello")


def test_headers_are_case_insensitive_with_compact_forms() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b"), ("VIA", "x")])
    headers.add("i", "abc")
    assert headers.get("call-id") == "abc"
    assert headers.get_all("Via") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b", "x"]
    assert next(iter(headers))[0] == "Via"
    headers.set("Call-ID", "new")
    assert headers.get_all("i") == ["new"]
    headers.remove("via")
    assert "Via" not in headers
    headers.prepend("Via", "top")
    assert next(iter(headers)) == ("Via", "top")


def test_split_list_respects_quotes_and_angle_brackets() -> None:
    value = '"Doe, J" <sip:a@b;x=1,2>;q=1, <sip:c@d>, sip:e@f'
    assert split_list(value) == ['"Doe, J" <sip:a@b;x=1,2>;q=1', "<sip:c@d>", "sip:e@f"]
    headers = Headers([("Record-Route", "<sip:p1;lr>, <sip:p2;lr>"), ("Record-Route", "<sip:p3>")])
    assert headers.get_all("Record-Route") == ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3>"]
    headers.add("Authorization", 'Digest a="1,2", b=3')
    assert headers.get_all("Authorization") == ['Digest a="1,2", b=3']


def test_uri_round_trip() -> None:
    uri = parse_uri("sip:alice:secret@[2001:db8::1]:5061;transport=tls;lr?subject=hi")
    assert (uri.user, uri.host, uri.port) == ("alice:secret", "[2001:db8::1]", 5061)
    assert uri.params == {"transport": "tls", "lr": None}
    assert str(uri) == "sip:alice:secret@[2001:db8::1]:5061;transport=tls;lr?subject=hi"


def test_too_large_message_has_a_clear_error() -> None:
    with pytest.raises(SipParseError, match="exceeds the 65535-byte limit"):
        parse_message(LWSDISP + b"x" * MAX_MESSAGE_SIZE)


# --- stream framing -------------------------------------------------------------------------


def test_framer_cuts_by_content_length_and_skips_keepalives() -> None:
    stream = b"\r\n\r\n" + WSINV + b"\r\n" + LWSDISP + ESCNULL
    framer = StreamFramer()
    out: list[bytes] = []
    for index in range(0, len(stream), 7):
        out += framer.feed(stream[index : index + 7])
    assert out == [WSINV, LWSDISP, ESCNULL]


def test_framer_refuses_a_bad_content_length_and_runaway_headers() -> None:
    with pytest.raises(SipParseError):
        StreamFramer().feed(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: x\r\n\r\n")
    with pytest.raises(SipParseError, match="exceeds"):
        StreamFramer(max_size=100).feed(b"OPTIONS sip:a SIP/2.0\r\nX: " + b"y" * 200)


# --- robustness: parse or SipParseError, nothing else --------------------------------------

VALID = [WSINV, INTMETH, ESC01, ESCNULL, LWSDISP, SEMIURI, TRANSPORTS, MPART01, UNREASON]


@pytest.mark.fuzz
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise_anything_but_sip_parse_error(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        parse_message(data)


@pytest.mark.fuzz
@given(
    st.sampled_from(VALID),
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=2000), st.binary(min_size=0, max_size=4)),
        min_size=1,
        max_size=6,
    ),
    st.integers(min_value=0, max_value=40),
)
def test_mutated_messages_never_raise_anything_but_sip_parse_error(
    base: bytes, edits: list[tuple[int, bytes]], cut: int
) -> None:
    data = bytearray(base)
    for position, replacement in edits:
        index = position % (len(data) + 1)
        data[index : index + len(replacement) // 2] = replacement
    data = data[: len(data) - cut]
    for chunk in (bytes(data), bytes(data).replace(b"\r\n", b"\n")):
        try:
            message = parse_message(chunk)
        except SipParseError:
            continue
        try:
            data = message.to_bytes()
        except SipEncodeError:  # RFC 4475 §3.1.1.2 quotes a NUL, which we never send
            assert any("\x00" in value for _, value in message.headers)
            continue
        parse_message(data)
        for value in message.headers.get_all("Contact"):
            if value != "*":
                parse_name_addr(value)
