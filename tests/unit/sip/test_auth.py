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
