"""The lab's kamailio, measured over the wire: challenges, registration, routing, transports."""

from __future__ import annotations

import base64
import secrets
import socket
import ssl
from collections.abc import Iterator

import pytest

from sip2rtmp.lab import (
    BUSY_USER,
    CALLEES,
    DECLINE_USER,
    RELAY_ACCOUNT,
    SIP_DOMAIN,
    SIP_HOST,
    SIP_PORT,
    SIP_TLS_PORT,
    UNKNOWN_USER,
    Lab,
)
from sip2rtmp.sip.auth import Credentials, DigestClient, parse_challenges
from sip2rtmp.sip.message import Headers, Request, Response, StreamFramer, parse_message

pytestmark = pytest.mark.lab

TRANSPORTS = ("UDP", "TCP", "TLS")


class SipPeer:
    """A bare SIP endpoint on one loopback socket, enough to send requests and read replies."""

    def __init__(self, transport: str, lab: Lab) -> None:
        self.transport = transport
        if transport == "UDP":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((SIP_HOST, 0))
            self.sock.connect((SIP_HOST, SIP_PORT))
        else:
            port = SIP_TLS_PORT if transport == "TLS" else SIP_PORT
            raw = socket.create_connection((SIP_HOST, port), timeout=5)
            if transport == "TLS":
                context = ssl.create_default_context(cafile=str(lab.tls_ca))
                raw = context.wrap_socket(raw, server_hostname=SIP_DOMAIN)
            self.sock = raw
        self.sock.settimeout(5)
        self.host, self.port = self.sock.getsockname()[:2]
        self._framer = StreamFramer()
        self._pending: list[bytes] = []

    def close(self) -> None:
        self.sock.close()

    @property
    def uri_transport(self) -> str:
        return "" if self.transport == "UDP" else f";transport={self.transport.lower()}"

    def request(
        self, method: str, uri: str, from_user: str, to_uri: str, cseq: int, call_id: str
    ) -> Request:
        request = Request(method, uri)
        headers = request.headers
        branch = "z9hG4bK" + secrets.token_hex(8)
        headers.add("Via", f"SIP/2.0/{self.transport} {self.host}:{self.port};branch={branch}")
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:{from_user}@{SIP_DOMAIN}>;tag={secrets.token_hex(4)}")
        headers.add("To", f"<{to_uri}>")
        headers.add("Call-ID", call_id)
        headers.add("CSeq", f"{cseq} {method}")
        contact = f"<sip:{from_user}@{self.host}:{self.port}{self.uri_transport}>"
        headers.add("Contact", contact)
        return request

    def send(self, message: Request) -> None:
        self.sock.sendall(message.to_bytes())

    def final_response(self, request: Request) -> Response:
        """Send `request` and return its final response, skipping provisional ones."""
        self.send(request)
        while True:
            message = self.next_response()
            if message.status >= 200:
                assert message.cseq == request.cseq
                if request.method == "INVITE":
                    self.send(_ack(request, message))
                return message

    def next_response(self) -> Response:
        message = parse_message(self._receive())
        assert isinstance(message, Response)
        return message

    def _receive(self) -> bytes:
        if self.transport == "UDP":
            return self.sock.recv(65535)
        while not self._pending:
            data = self.sock.recv(65535)
            assert data, "kamailio closed the connection"
            self._pending += self._framer.feed(data)
        return self._pending.pop(0)


def _ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response: same branch, To with the response's tag."""
    ack = Request("ACK", invite.uri)
    for name in ("Via", "Max-Forwards", "From", "Call-ID"):
        ack.headers.add(name, invite.headers.get(name) or "")
    ack.headers.add("To", response.headers.get("To") or "")
    ack.headers.add("CSeq", f"{invite.cseq[0]} ACK")
    return ack


def _with_credentials(
    peer: SipPeer, request: Request, client: DigestClient, response: Response
) -> Request:
    """The request again, with the next CSeq and credentials answering a 401/407."""
    field = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
    assert client.accept(response.status, response.headers.get_all(field))
    number, method = request.cseq
    retry = Request(method, request.uri, Headers(list(request.headers)), request.body)
    retry.headers.set("CSeq", f"{number + 1} {method}")
    branch = "z9hG4bK" + secrets.token_hex(8)
    retry.headers.set("Via", f"SIP/2.0/{peer.transport} {peer.host}:{peer.port};branch={branch}")
    for name, value in client.headers_for(method, request.uri):
        retry.headers.add(name, value)
    return retry


def _authenticate(
    peer: SipPeer, request: Request, client: DigestClient, response: Response
) -> Response:
    """Answer a 401/407 with credentials and return the final response to the retry."""
    return peer.final_response(_with_credentials(peer, request, client, response))


@pytest.fixture(params=TRANSPORTS)
def peer(request: pytest.FixtureRequest, lab: Lab) -> Iterator[SipPeer]:
    endpoint = SipPeer(request.param, lab)
    yield endpoint
    endpoint.close()


def _register(peer: SipPeer, user: str, expires: int) -> Request:
    aor = f"sip:{user}@{SIP_DOMAIN}"
    request = peer.request("REGISTER", f"sip:{SIP_DOMAIN}", user, aor, 1, secrets.token_hex(8))
    request.headers.add("Expires", str(expires))
    return request


def _invite(peer: SipPeer, callee: str) -> Request:
    uri = f"sip:{callee}@{SIP_DOMAIN}"
    return peer.request("INVITE", uri, RELAY_ACCOUNT.user, uri, 1, secrets.token_hex(8))


def _client(password: str) -> DigestClient:
    return DigestClient(Credentials(RELAY_ACCOUNT.user, password), lambda: secrets.token_hex(8))


def test_register_without_credentials_is_challenged_with_qop_auth(peer: SipPeer) -> None:
    response = peer.final_response(_register(peer, RELAY_ACCOUNT.user, 0))

    assert response.status == 401
    (challenge,) = parse_challenges(response.headers.get_all("WWW-Authenticate"), proxy=False)
    assert challenge.realm == SIP_DOMAIN
    assert "auth" in challenge.qop


def test_register_with_the_right_password_is_accepted(peer: SipPeer, lab: Lab) -> None:
    request = _register(peer, RELAY_ACCOUNT.user, 60)
    client = _client(RELAY_ACCOUNT.password)

    response = _authenticate(peer, request, client, peer.final_response(request))
    contact = request.headers.get("Contact")
    assert contact is not None
    try:
        assert response.status == 200
        assert peer.host in lab.kamcmd("ul.lookup", "location", f"s:{RELAY_ACCOUNT.user}")
    finally:
        removal = _register(peer, RELAY_ACCOUNT.user, 0)
        removal.headers.set("Contact", contact)
        removal.headers.set("Call-ID", request.call_id)
        removal.headers.set("CSeq", "3 REGISTER")
        for name, value in client.headers_for("REGISTER", removal.uri):
            removal.headers.add(name, value)
        assert peer.final_response(removal).status == 200


def test_register_with_a_wrong_password_is_challenged_again(peer: SipPeer) -> None:
    request = _register(peer, RELAY_ACCOUNT.user, 60)
    client = _client("not-the-lab-password")

    second = _authenticate(peer, request, client, peer.final_response(request))

    assert second.status == 401
    assert not client.accept(second.status, second.headers.get_all("WWW-Authenticate"))


def test_invite_without_credentials_is_challenged_with_407(peer: SipPeer) -> None:
    response = peer.final_response(_invite(peer, "tone"))

    assert response.status == 407
    (challenge,) = parse_challenges(response.headers.get_all("Proxy-Authenticate"), proxy=True)
    assert challenge.realm == SIP_DOMAIN
    assert "auth" in challenge.qop


@pytest.mark.parametrize(
    ("callee", "status"), [(BUSY_USER, 486), (DECLINE_USER, 603), (UNKNOWN_USER, 404)]
)
def test_authenticated_invite_to_a_special_user_gets_its_status(
    peer: SipPeer, callee: str, status: int
) -> None:
    request = _invite(peer, callee)
    client = _client(RELAY_ACCOUNT.password)

    response = _authenticate(peer, request, client, peer.final_response(request))

    assert response.status == status


def test_every_callee_is_registered(lab: Lab) -> None:
    assert {a.user for a in CALLEES} <= lab.registered_users()
    for callee in CALLEES:
        contact = lab.kamcmd("ul.lookup", "location", f"s:{callee.user}")
        assert f"@{SIP_HOST}:{callee.sip_port}" in contact


def test_an_invite_reaches_a_registered_callee_over_every_transport(peer: SipPeer) -> None:
    invite = _invite(peer, "noanswer")
    invite.headers.add("Content-Type", "application/sdp")
    invite.body = (
        f"v=0\r\no=- 1 1 IN IP4 {peer.host}\r\ns=-\r\nc=IN IP4 {peer.host}\r\nt=0 0\r\n"
        "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()
    retry = _with_credentials(
        peer, invite, _client(RELAY_ACCOUNT.password), peer.final_response(invite)
    )

    peer.send(retry)
    statuses = [peer.next_response().status]
    while statuses[-1] != 180:
        assert statuses[-1] < 200, statuses
        statuses.append(peer.next_response().status)
    cancel = Request("CANCEL", retry.uri)
    for name in ("Via", "Max-Forwards", "From", "To", "Call-ID"):
        cancel.headers.add(name, retry.headers.get(name) or "")
    cancel.headers.add("CSeq", f"{retry.cseq[0]} CANCEL")
    peer.send(cancel)
    finals: dict[str, Response] = {}
    while len(finals) < 2:
        response = peer.next_response()
        if response.status >= 200:
            finals[response.cseq[1]] = response
    assert finals["CANCEL"].status == 200
    assert finals["INVITE"].status == 487
    peer.send(_ack(retry, finals["INVITE"]))


@pytest.mark.parametrize("crypto", [False, True], ids=["plain", "with-crypto"])
def test_the_srtp_callee_answers_an_rtp_avp_offer_with_488(lab: Lab, crypto: bool) -> None:
    """docs/lab.md: `srtp` demands SRTP (baresip's srtp-mand) and, like an SBC with encryption
    required, refuses RTP/AVP with 488 even when the offer carries an a=crypto line (the
    best-effort SDES offer that many PBXs accept, RFC 4568 §6.x practice)."""
    peer = SipPeer("UDP", lab)
    try:
        invite = _invite(peer, "srtp")
        invite.headers.add("Content-Type", "application/sdp")
        key = base64.b64encode(secrets.token_bytes(30)).decode()
        invite.body = (
            f"v=0\r\no=- 1 1 IN IP4 {peer.host}\r\ns=-\r\nc=IN IP4 {peer.host}\r\nt=0 0\r\n"
            "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            + (f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n" if crypto else "")
        ).encode()
        response = _authenticate(
            peer, invite, _client(RELAY_ACCOUNT.password), peer.final_response(invite)
        )
    finally:
        peer.close()

    assert response.status == 488, f"{response.status} {response.reason}"
