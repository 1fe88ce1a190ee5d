"""Digest answers against RFC 7616 §3.9.1, challenge choice, and wrong-password detection."""

from __future__ import annotations

import pytest

from sip2rtmp.sip.auth import (
    Challenge,
    Credentials,
    DigestClient,
    authorization_value,
    choose_challenge,
    digest_response,
    parse_challenges,
)

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
