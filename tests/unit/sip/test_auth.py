"""Digest answers against RFC 7616 §3.9.1, challenge choice, and wrong-password detection."""

from __future__ import annotations

import contextlib
import hashlib
import random

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sip2rtmp.sip import auth as auth_module
from sip2rtmp.sip.auth import (
    MAX_AUTH_ITEMS,
    MAX_AUTH_PARAM_LENGTH,
    MAX_REMEMBERED_CHALLENGES,
    Challenge,
    Credentials,
    DigestClient,
    authorization_value,
    choose_challenge,
    digest_response,
    parse_challenges,
)
from sip2rtmp.sip.message import (
    Headers,
    Request,
    SipParseError,
    is_token,
    parse_message,
    quote,
)
from tests.unit.sip.work import watch

RFC7616_CHALLENGES = [
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"',
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"',
]
MUFASA = Credentials("Mufasa", "Circle of Life")
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_vectors(algorithm: str, expected: str) -> None:
    challenges = parse_challenges(RFC7616_CHALLENGES, proxy=False)
    (challenge,) = [c for c in challenges if c.algorithm == algorithm]
    response, qop = digest_response(
        challenge, MUFASA, method="GET", uri="/dir/index.html", cnonce=CNONCE, nc=1
    )
    assert (response, qop) == (expected, "auth")


def test_authorization_header_carries_every_required_parameter() -> None:
    challenge = choose_challenge(parse_challenges(RFC7616_CHALLENGES, proxy=False))
    assert challenge is not None
    value = authorization_value(
        challenge, MUFASA, method="GET", uri="/dir/index.html", cnonce=CNONCE, nc=1
    )
    assert value.startswith('Digest username="Mufasa", realm="http-auth@example.org"')
    for part in (
        'uri="/dir/index.html"',
        'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"',
        "algorithm=SHA-256",
        f'cnonce="{CNONCE}"',
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"',
        "qop=auth",
        "nc=00000001",
    ):
        assert part in value


def test_sha256_wins_over_md5_whatever_the_order() -> None:
    for order in (RFC7616_CHALLENGES, list(reversed(RFC7616_CHALLENGES))):
        chosen = choose_challenge(parse_challenges(order, proxy=True))
        assert chosen is not None and chosen.algorithm == "SHA-256" and chosen.proxy


def test_several_challenges_in_one_header_and_unknown_schemes() -> None:
    value = 'Basic realm="x", Digest realm="a", nonce="n1", algorithm=MD5-sess, qop=auth, ' + (
        'Digest realm="a", nonce="n2", algorithm=UNKNOWN-HASH'
    )
    challenges = parse_challenges([value], proxy=False)
    assert [(c.nonce, c.algorithm, c.supported) for c in challenges] == [
        ("n1", "MD5-SESS", True),
        ("n2", "UNKNOWN-HASH", False),
    ]
    chosen = choose_challenge(challenges)
    assert chosen is not None and chosen.session


def test_legacy_no_qop_digest_rfc_2069_style() -> None:
    challenge = Challenge(realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093")
    value = authorization_value(
        challenge, Credentials("bob", "zanzibar"), method="REGISTER", uri="sip:biloxi.com"
    )
    assert "qop" not in value and "nc=" not in value and "cnonce" not in value
    assert "algorithm" not in value


def test_sess_variant_hashes_nonce_and_cnonce_into_ha1() -> None:
    plain = Challenge(realm="r", nonce="n", algorithm="MD5", qop=("auth",))
    sess = Challenge(realm="r", nonce="n", algorithm="MD5-SESS", qop=("auth",))
    a = digest_response(plain, MUFASA, method="INVITE", uri="sip:x", cnonce="c")
    b = digest_response(sess, MUFASA, method="INVITE", uri="sip:x", cnonce="c")
    assert a != b


def test_credentials_never_show_the_password() -> None:
    credentials = Credentials("relay", "hunter2-secret")
    assert "hunter2" not in repr(credentials)
    assert "hunter2" not in str(credentials)
    assert "hunter2" not in f"{credentials}"


CHALLENGE_401 = ['Digest realm="lab", nonce="abc", qop="auth", algorithm=MD5']


def test_a_second_challenge_after_answering_means_wrong_password() -> None:
    client = DigestClient(MUFASA, lambda: "cn")
    assert client.headers_for("REGISTER", "sip:lab") == []
    assert client.accept(401, CHALLENGE_401)
    (name, value), *_ = client.headers_for("REGISTER", "sip:lab")
    assert name == "Authorization" and "nc=00000001" in value
    assert not client.accept(401, ['Digest realm="lab", nonce="new", qop="auth"'])


def test_stale_nonce_is_answered_again() -> None:
    client = DigestClient(MUFASA, lambda: "cn")
    assert client.accept(407, CHALLENGE_401)
    [(name, _)] = client.headers_for("INVITE", "sip:x")
    assert name == "Proxy-Authorization"
    assert client.accept(407, ['Digest realm="lab", nonce="fresh", qop="auth", stale=true'])


def test_remembered_challenge_counts_nc_and_tolerates_one_new_challenge() -> None:
    client = DigestClient(MUFASA, lambda: "cn")
    assert client.accept(401, CHALLENGE_401)
    client.headers_for("REGISTER", "sip:lab")
    [(_, refresh)] = client.headers_for("REGISTER", "sip:lab")
    assert "nc=00000002" in refresh
    # The registrar forgot the nonce without saying stale: answering it once more is fair.
    assert client.accept(401, ['Digest realm="lab", nonce="other", qop="auth"'])


def test_unsupported_or_malformed_challenges_are_refused() -> None:
    client = DigestClient(MUFASA, lambda: "cn")
    assert not client.accept(401, ['Digest realm="x", nonce="n", algorithm=SHA-1024'])
    assert not client.accept(401, ['Digest realm="x, nonce="n'])
    assert not client.accept(401, [])


# --- hostile challenges ---------------------------------------------------------------------

UNAUTHORIZED = (
    b"SIP/2.0 401 Unauthorized\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-r1\r\n"
    b"From: <sip:relay@lab>;tag=f1\r\n"
    b"To: <sip:relay@lab>;tag=t1\r\n"
    b"Call-ID: reg-1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b'WWW-Authenticate: Digest realm="caf\xe9 \xff", nonce="n\xc3\x28", qop="auth", '
    b'opaque="\xfe"\r\n'
    b"Content-Length: 0\r\n\r\n"
)


def test_a_realm_that_is_not_utf8_is_answered_over_its_bytes() -> None:
    """A realm that is not UTF-8 made `headers_for` raise UnicodeEncodeError, so REGISTER never
    finished. The server hashes the bytes it sent; so do we, and we echo them unchanged."""
    challenge_values = parse_message(UNAUTHORIZED).headers.get_all("WWW-Authenticate")
    client = DigestClient(Credentials("relay", "pw"), lambda: "cn")
    assert client.accept(401, challenge_values)
    [(name, value)] = client.headers_for("REGISTER", "sip:lab")
    request = Request("REGISTER", "sip:lab", Headers([(name, value)]))
    data = request.to_bytes()
    assert b'realm="caf\xe9 \xff"' in data and b'nonce="n\xc3\x28"' in data
    assert b'opaque="\xfe"' in data

    def md5(raw: bytes) -> bytes:
        return hashlib.md5(raw).hexdigest().encode()

    ha1 = md5(b"relay:caf\xe9 \xff:pw")
    ha2 = md5(b"REGISTER:sip:lab")
    expected = md5(ha1 + b":n\xc3\x28:00000001:cn:auth:" + ha2)
    assert b'response="' + expected + b'"' in data


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="a\x00b", nonce="n"',
        'Digest realm="a", nonce="n\\\x00"',
        "Digest realm=a\x1b[31m, nonce=n",
        'Digest realm="lone \ud800 surrogate", nonce="n"',
        'Digest realm="a", nonce="' + "n" * (MAX_AUTH_PARAM_LENGTH + 1) + '"',
        "Digest nonce=n" + ", p=v" * MAX_AUTH_ITEMS,
        'Digest realm="a", nonce="n',
        "Digest realm=a, (bad)=1",
        "realm=a, Digest nonce=n",
    ],
    ids=["nul", "escaped-nul", "escape-sequence", "lone-surrogate", "long-nonce", "many-params",
         "unterminated", "bad-token", "param-before-scheme"],
)  # fmt: skip
def test_hostile_challenges_are_refused_cleanly(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_challenges([value], proxy=False)
    client = DigestClient(MUFASA, lambda: "cn")
    assert not client.accept(401, [value])
    assert client.headers_for("REGISTER", "sip:x") == []


def test_challenges_at_the_caps_are_accepted() -> None:
    nonce = "n" * MAX_AUTH_PARAM_LENGTH
    params = ", p=v" * (MAX_AUTH_ITEMS - 3)
    [challenge] = parse_challenges([f'Digest realm="r", nonce="{nonce}"{params}'], proxy=False)
    assert challenge.nonce == nonce


def test_parameters_after_the_last_scheme_of_another_field_are_refused() -> None:
    """A field's parameters belong to a scheme of that field (RFC 7235 §4.1)."""
    with pytest.raises(SipParseError, match="before any scheme"):
        parse_challenges(["Digest realm=a", "nonce=n"], proxy=False)


PATHOLOGICAL = {
    "blanks": "Digest" + " " * 64_000 + "realm=x",
    "commas": "Digest realm=x" + "," * 64_000,
    "quoted": 'Digest realm="' + "a" * 64_000 + '", nonce="n"',
    "escapes": 'Digest realm="' + "\\a" * 32_000 + '", nonce="n"',
    "unterminated": 'Digest realm="' + "a" * 64_000,
    "params": "Digest nonce=n" + ", a=b" * 12_800,
    "schemes": "Digest nonce=n, " + "B, " * 21_000,
    "token": "Digest " + "a" * 64_000,
    "qop list": 'Digest nonce=n, qop="' + "auth," * 12_800 + '"',
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_64_kb_challenges_cost_a_bounded_number_of_steps(name: str) -> None:
    """The challenge parser walked its input one character per Python step (64 KB: about
    400,000 steps); now it takes one pattern match per parameter, and the caps stop it."""
    with watch(auth_module) as work, contextlib.suppress(SipParseError):
        parse_challenges([PATHOLOGICAL[name]], proxy=False)
    assert work.lines < 2_000


def test_a_server_cannot_make_a_chain_remember_challenges_without_end() -> None:
    client = DigestClient(MUFASA, lambda: "cn")
    for n in range(100):
        assert client.accept(401, [f'Digest realm="r{n}", nonce="n{n}", qop=auth, stale=true'])
        fields = client.headers_for("REGISTER", "sip:lab")
    assert len(fields) == MAX_REMEMBERED_CHALLENGES
    assert 'realm="r99"' in fields[-1][1]


# --- properties -------------------------------------------------------------------------------

VALUES = ["", "a", "lab", "http-auth@example.org", "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
          'say "hi"', "back\\slash", "a, b=c", "caf\udce9 \udcff", "\u00fcml\u00e4ut", "sp ace",
          "x" * MAX_AUTH_PARAM_LENGTH]  # fmt: skip
"""Parameter values: separators and quotes inside, non-ASCII, bytes that were not UTF-8 (as
the parser decodes them), and one at the length cap."""
ALGORITHMS = ["MD5", "md5", "MD5-sess", "SHA-256", "SHA-256-SESS", "SHA-512-256", "SHA-1024"]
EXTRA = ["domain", "charset", "x-unknown", "stale", "userhash"]
SEPARATORS = [", ", ",", " ,\t", ",\t , "]


def _param(name: str, value: str, quoted: bool) -> str:
    return f"{name}={quote(value)}" if quoted or not is_token(value) else f"{name}={value}"


QOPS = ['qop="auth"', 'qop="auth-int, auth"', "qop=auth-int", 'qop="x"']
FLAGS = ["stale=true", "stale=FALSE", "userhash=true"]
OTHER_SCHEMES = ['Basic realm="x"', "Other", "Bearer abc=="]
_rng = random.Random(7616)


def _some(pool: list[str], most: int = 1) -> list[str]:
    return [_rng.choice(pool) for _ in range(_rng.randint(0, most))]


def _challenge() -> tuple[str, str, str]:
    """A Digest challenge field, among other schemes, and the realm and nonce it carries."""
    realm, nonce = _rng.choice(VALUES), _rng.choice(VALUES)
    params = [_param("realm", realm, _rng.random() < 0.5), _param("nonce", nonce, True)]
    params += _some([f"algorithm={a}" for a in ALGORITHMS]) + _some(QOPS) + _some(FLAGS, 2)
    for name in _some(EXTRA, 2) + _some(["opaque"]):
        params.append(_param(name, _rng.choice(VALUES), _rng.random() < 0.5))
    _rng.shuffle(params)
    field = _rng.choice(["Digest ", "digest\t", "DIGEST  "]) + _rng.choice(SEPARATORS).join(params)
    return _rng.choice(SEPARATORS).join([*_some(OTHER_SCHEMES, 2), field]), realm, nonce


CHALLENGES = st.sampled_from([_challenge() for _ in range(3_000)])
"""Pre-rendered from a seeded generator, so a challenge is one draw and 10,000 examples stay
fast; the pool combines the parts above in thousands of ways."""


UNITS = [" ", ",", '"', "\\", "=", "\x00", "\udcff", "\ud800", "a", "\t", 'realm="', "Digest "]
TIMES = st.integers(0, 4) | st.integers(0, 70_000)
MUTATIONS = st.lists(
    st.tuples(st.integers(0, 5_000), st.sampled_from(UNITS), TIMES, st.integers(0, 3)),
    min_size=1,
    max_size=3,
)
"""(where, unit, times, characters replaced): a run of one hostile unit, short or 70 KB."""


def _mutate(text: str, mutations: list[tuple[int, str, int, int]]) -> str:
    for where, unit, times, replaced in mutations:
        index = where % (len(text) + 1)
        text = text[:index] + unit * times + text[index + replaced :]
    return text


REGISTER_FIELDS = [(n, v) for n, v in parse_message(UNAUTHORIZED).headers if "Auth" not in n]


def _answer_round_trips(values: list[str], status: int) -> None:
    """`accept` says yes or no; a yes gives fields that encode and parse back to the same realm
    and nonce, whatever bytes they hold."""
    client = DigestClient(MUFASA, lambda: "cnonce")
    accepted = client.accept(status, values)
    event(f"accepted: {accepted}")
    fields = client.headers_for("REGISTER", "sip:lab", b"body")
    assert bool(fields) == accepted
    for name, value in fields:
        chosen = choose_challenge(parse_challenges(values, proxy=status == 407))
        headers = Headers([*REGISTER_FIELDS, (name, value)])
        sent = parse_message(Request("REGISTER", "sip:lab", headers).to_bytes())
        [back] = parse_challenges(sent.headers.get_all(name), proxy=False)
        assert chosen is not None and (back.realm, back.nonce) == (chosen.realm, chosen.nonce)


@pytest.mark.fuzz
@given(st.lists(CHALLENGES, min_size=1, max_size=3), st.sampled_from([401, 407]))
def test_well_formed_challenges_parse_and_are_answered(
    fields: list[tuple[str, str, str]], status: int
) -> None:
    parsed = parse_challenges([field for field, _, _ in fields], proxy=status == 407)
    assert [(c.realm, c.nonce) for c in parsed] == [(realm, nonce) for _, realm, nonce in fields]
    _answer_round_trips([field for field, _, _ in fields], status)


@pytest.mark.fuzz
@given(CHALLENGES, MUTATIONS)
def test_mutated_challenges_raise_nothing_but_sip_parse_error(
    challenge: tuple[str, str, str], mutations: list[tuple[int, str, int, int]]
) -> None:
    value = _mutate(challenge[0], mutations)
    try:
        parse_challenges([value], proxy=False)
    except SipParseError:
        event("refused")
    else:
        event("parsed")
    _answer_round_trips([value], 401)


# --- responses against RFC 7616 §3.4, computed here with hashlib -------------------------------

HASHLIB_NAMES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}


def rfc7616_response(
    algorithm: str,
    credentials: Credentials,
    realm: str,
    nonce: str,
    *,
    method: str,
    uri: str,
    qop: str | None,
    cnonce: str = "",
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """`response` as RFC 7616 §3.4.1-§3.4.3 define it, written from the RFC with hashlib."""
    name = HASHLIB_NAMES[algorithm.upper().removesuffix("-SESS")]

    def h(data: bytes) -> str:
        return hashlib.new(name, data).hexdigest()

    a1 = h(f"{credentials.username}:{realm}:{credentials.password}".encode())
    if algorithm.upper().endswith("-SESS"):  # §3.4.2: A1 = H(user:realm:pw):nonce:cnonce
        a1 = h(f"{a1}:{nonce}:{cnonce}".encode())
    a2 = f"{method}:{uri}"
    if qop == "auth-int":  # §3.4.3: A2 = method:uri:H(entity-body)
        a2 += ":" + h(body)
    if qop is None:  # RFC 2069 compatibility (RFC 2617 §3.2.2.1)
        return h(f"{a1}:{nonce}:{h(a2.encode())}".encode())
    return h(f"{a1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{h(a2.encode())}".encode())


def test_rfc7616_section_3_9_2_sha512_256_with_userhash() -> None:
    """RFC 7616 §3.9.2 with the username and response of its erratum 4897 (the RFC's own values
    are not those of its inputs): SHA-512-256, `userhash=true` and a non-ASCII username."""
    [challenge] = parse_challenges(
        [
            'Digest realm="api@example.org", qop="auth", algorithm=SHA-512-256, '
            'nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", '
            'opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", charset=UTF-8, userhash=true'
        ],
        proxy=False,
    )
    assert challenge.userhash and challenge.supported
    value = authorization_value(
        challenge,
        Credentials("J\u00e4s\u00f8n Doe", "Secret, or not?"),
        method="GET",
        uri="/doe.json",
        cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v",
        nc=1,
    )
    assert value.startswith(
        'Digest username="793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b", '
    )
    assert 'response="3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"' in value
    assert value.endswith(", userhash=true")


@pytest.mark.parametrize("flag", ["userhash=TRUE", 'userhash="true"', "USERHASH=true"])
def test_userhash_is_read_whatever_its_case_or_quoting(flag: str) -> None:
    """Parameter names are case-insensitive (RFC 7235 §2.1); the flag's value is read like
    `stale`'s, without regard to case (RFC 7616 §3.3)."""
    [challenge] = parse_challenges([f'Digest realm="r", nonce="n", {flag}'], proxy=False)
    assert challenge.userhash


def test_sha512_256_is_offered_exactly_when_hashlib_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian 12's OpenSSL has SHA-512/256; a build without it must not offer it (RFC 7616 §3.7
    picks the strongest hash the client supports)."""
    available = "sha512_256" in hashlib.algorithms_available
    assert auth_module._sha512_256_available() is available
    assert ("SHA-512-256" in auth_module._HASHES) is available

    def unsupported(name: str, *args: object, **kwargs: object) -> object:
        raise ValueError(f"unsupported hash type {name}")

    monkeypatch.setattr(hashlib, "new", unsupported)
    assert auth_module._sha512_256_available() is False


@pytest.mark.parametrize("algorithm", ["MD5", "MD5-SESS", "SHA-256", "SHA-256-SESS"])
@pytest.mark.parametrize("qop", ["auth", "auth-int", None])
def test_responses_follow_rfc7616_section_3_4(algorithm: str, qop: str | None) -> None:
    """Every algorithm, `-sess` (§3.4.2) and qop (§3.4.3, and none) against the RFC's formulas."""
    challenge = Challenge(
        realm="lab", nonce="nonce-1", algorithm=algorithm, qop=(qop,) if qop else ()
    )
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    response, used = digest_response(
        challenge, MUFASA, method="INVITE", uri="sip:1002@lab", body=body, cnonce="cn", nc=3
    )
    expected = rfc7616_response(
        algorithm, MUFASA, "lab", "nonce-1", method="INVITE", uri="sip:1002@lab", qop=qop,
        cnonce="cn", nc=3, body=body,
    )  # fmt: skip
    assert (response, used) == (expected, qop)


def test_auth_int_is_used_when_it_is_the_only_qop_offered() -> None:
    """`auth` is preferred; a server offering only `auth-int` gets `auth-int` (RFC 7616 §3.3)."""
    only_int = Challenge(realm="lab", nonce="n", qop=("auth-int",))
    both = Challenge(realm="lab", nonce="n", qop=("auth-int", "auth"))
    assert digest_response(only_int, MUFASA, method="REGISTER", uri="sip:lab")[1] == "auth-int"
    assert digest_response(both, MUFASA, method="REGISTER", uri="sip:lab")[1] == "auth"


def test_defaults_describe_a_first_request_without_a_body() -> None:
    """Left out, `body` is empty (REGISTER, BYE), `nc` is 1 (the nonce's first use, RFC 7616
    §3.4) and `cnonce` is empty."""
    challenge = Challenge(realm="lab", nonce="n", algorithm="MD5-SESS", qop=("auth-int",))
    first = digest_response(
        challenge, MUFASA, method="REGISTER", uri="sip:lab", body=b"", cnonce="", nc=1
    )
    assert digest_response(challenge, MUFASA, method="REGISTER", uri="sip:lab") == first
    value = authorization_value(
        challenge, MUFASA, method="REGISTER", uri="sip:lab", body=b"", cnonce="", nc=1
    )
    assert authorization_value(challenge, MUFASA, method="REGISTER", uri="sip:lab") == value
    assert 'cnonce=""' in value and "nc=00000001" in value


def test_a_chain_answers_each_request_over_its_own_body_and_count() -> None:
    """`auth-int` hashes the body of the request being sent, empty for a REGISTER, and each
    request of the chain counts `nc` up, in the header and in the hash (RFC 7616 §3.4)."""
    client = DigestClient(MUFASA, lambda: "cn")
    assert client.accept(407, ['Digest realm="lab", nonce="n1", qop="auth-int"'])
    sdp = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    requests = [("INVITE", sdp), ("ACK", b""), ("BYE", b"")]
    for nc, (method, body) in enumerate(requests, start=1):
        if body:
            [(name, value)] = client.headers_for(method, "sip:1002@lab", body)
        else:
            [(name, value)] = client.headers_for(method, "sip:1002@lab")
        expected = rfc7616_response(
            "MD5", MUFASA, "lab", "n1", method=method, uri="sip:1002@lab", qop="auth-int",
            cnonce="cn", nc=nc, body=body,
        )  # fmt: skip
        assert name == "Proxy-Authorization"
        assert f'response="{expected}"' in value and f"nc={nc:08x}" in value


def test_a_challenge_without_realm_qop_or_algorithm_is_answered_rfc_2069_style() -> None:
    """Only `nonce` is needed: no realm hashes as empty, no qop means the RFC 2069 response
    (RFC 2617 §3.2.2.1), no algorithm means MD5 and none is echoed (RFC 7616 §3.3)."""
    [challenge] = parse_challenges(['Digest nonce="n"'], proxy=False)
    assert (challenge.realm, challenge.qop, challenge.algorithm) == ("", (), "MD5")
    assert not (challenge.algorithm_given or challenge.stale or challenge.userhash)
    assert challenge.opaque is None and challenge.supported
    client = DigestClient(MUFASA, lambda: "cn")
    assert client.accept(401, ['Digest nonce="n"'])
    [(_, value)] = client.headers_for("REGISTER", "sip:lab")
    expected = rfc7616_response("MD5", MUFASA, "", "n", method="REGISTER", uri="sip:lab", qop=None)
    assert value == (
        f'Digest username="Mufasa", realm="", nonce="n", uri="sip:lab", response="{expected}"'
    )


def test_a_new_challenge_for_a_remembered_realm_replaces_it_and_becomes_the_newest() -> None:
    """Answering realm r3 again must not evict another realm: it takes r3's place, counts `nc`
    from 1 for its new nonce, and is the last to be forgotten."""
    client = DigestClient(MUFASA, lambda: "cn")
    realms = [f"r{n}" for n in range(MAX_REMEMBERED_CHALLENGES)]
    for realm in realms:
        assert client.accept(401, [f'Digest realm="{realm}", nonce="old", qop=auth, stale=true'])
        client.headers_for("REGISTER", "sip:lab")
    assert client.accept(401, ['Digest realm="r3", nonce="new", qop=auth, stale=true'])
    fields = client.headers_for("REGISTER", "sip:lab")
    order = [*realms[:3], *realms[4:], "r3"]
    assert [value.split('realm="')[1].split('"')[0] for _, value in fields] == order
    assert 'nonce="new"' in fields[-1][1] and "nc=00000001" in fields[-1][1]


def test_after_a_refusal_the_next_challenge_is_judged_afresh() -> None:
    """A challenge means "wrong password" only right after a request that carried fresh
    credentials; one refused challenge does not make the next one a refusal too."""
    client = DigestClient(MUFASA, lambda: "cn")
    assert client.accept(401, CHALLENGE_401)
    client.headers_for("REGISTER", "sip:lab")
    assert not client.accept(401, ['Digest realm="lab", nonce="second", qop="auth"'])
    assert client.accept(401, ['Digest realm="lab", nonce="third", qop="auth"'])


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="r", nonce="n",',
        'Digest realm="r", nonce="n" , ,\t',
        ', Digest realm="r",, nonce="n"',
    ],
)
def test_empty_list_elements_are_ignored(value: str) -> None:
    """A recipient must accept empty list elements (RFC 7230 §7), before, between and after."""
    [challenge] = parse_challenges([value], proxy=False)
    assert (challenge.realm, challenge.nonce) == ("r", "n")


LONG_NAME = "n" * 30
REFUSALS = {
    "control": (
        'Digest realm="a\x00b", nonce="n"',
        "control character in an authentication header",
    ),
    "unencodable": ('Digest realm="\ud800"', "authentication header holds unencodable text"),
    "near": (
        'Digest realm=a, ="' + "x" * 30,
        "bad authentication parameter near ', =\"xxxxxxxxxxxxxxxx'",
    ),
    "items": (
        "Digest nonce=n" + ", p=v" * MAX_AUTH_ITEMS,
        f"more than {MAX_AUTH_ITEMS} authentication parameters",
    ),
    "token": ("Digest realm=a, " + "(" * 30 + "=1", f"bad authentication parameter {'(' * 20!r}"),
    "before-scheme": ("nonce=n, Digest", "authentication parameter before any scheme"),
    "unterminated": (
        'Digest realm="a", nonce="n',
        "unterminated quoted string in authentication header",
    ),
    "long": (
        f"Digest {LONG_NAME}={'v' * (MAX_AUTH_PARAM_LENGTH + 1)}",
        f"authentication parameter {LONG_NAME[:20]!r} is too long",
    ),
}
"""A refused challenge field and the exact error it must raise."""


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_each_refusal_names_its_fault_and_quotes_at_most_20_characters(name: str) -> None:
    """The error says what is wrong with the challenge and quotes no more than 20 characters of
    what the server sent, so a hostile field cannot fill a log line."""
    value, message = REFUSALS[name]
    with pytest.raises(SipParseError) as caught:
        parse_challenges([value], proxy=False)
    assert str(caught.value) == message
