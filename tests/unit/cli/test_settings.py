"""Settings derived from the flags: URIs, servers, RTMP targets and what counts as a secret."""

from __future__ import annotations

import pytest

from sip2rtmp.cli.output import Redactor
from sip2rtmp.config import (
    ConfigError,
    HostPort,
    Secret,
    build_call_settings,
    callee_uri,
    parse_host_port,
    redact_url,
    rtmp_targets,
)


def settings(**overrides: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = {
        "callee": "1001",
        "sip_login": "relay",
        "sip_auth_name": None,
        "sip_password": "s3cret-Pw",
        "sip_domain": "pbx.example.test",
        "sip_outbound_proxy": None,
        "sip_port": None,
        "sip_transport": "udp",
        "register": True,
        "rtmp_urls": ("rtmp://live.example.test/app",),
        "rtmp_streams": ("abcd-efgh-ijkl",),
        "audio": True,
        "video": True,
        "call_id": "c1",
        "max_duration": None,
        "ring_timeout": 60.0,
        "media_timeout": 15.0,
    }
    values.update(overrides)
    return build_call_settings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("proxy.test", HostPort("proxy.test")),
        ("proxy.test:5080", HostPort("proxy.test", 5080)),
        ("sip:10.0.0.1:5062;lr", HostPort("10.0.0.1", 5062)),
        ("[2001:db8::1]:5060", HostPort("2001:db8::1", 5060)),
        ("2001:db8::1", HostPort("2001:db8::1")),
    ],
)
def test_parse_host_port(text: str, expected: HostPort) -> None:
    assert parse_host_port(text, "x") == expected


@pytest.mark.parametrize("text", ["", "host:0", "host:70000", "host:abc", "a b", "[::1"])
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_host_port(text, "x")


def test_callee_forms() -> None:
    assert callee_uri("1001", "pbx.test") == "sip:1001@pbx.test"
    assert callee_uri("conf@bridge.test", None) == "sip:conf@bridge.test"
    assert callee_uri("sips:9@x.test;transport=tls", None) == "sips:9@x.test;transport=tls"
    with pytest.raises(ConfigError):
        callee_uri("1001", None)


def test_server_is_proxy_when_given_and_tls_defaults_to_5061() -> None:
    """An IP literal without a port gets the transport's default port; a name without one
    keeps none, for RFC 3263 server location (§4.2) to find; a port given anywhere wins."""
    assert settings().sip_server == HostPort("pbx.example.test", None)
    assert settings(sip_outbound_proxy="127.0.0.1").sip_server == HostPort("127.0.0.1", 5060)
    assert settings(sip_outbound_proxy="127.0.0.1:5080", sip_port=5070).sip_server.port == 5080
    assert settings(sip_outbound_proxy="10.0.0.1", sip_transport="tls").sip_server.port == 5061
    assert settings(sip_transport="tls").sip_server == HostPort("pbx.example.test", None)
    assert settings(sip_port=5999).sip_server.port == 5999
    assert settings(sip_outbound_proxy="sbc.example.test").sip_server.port is None
    assert settings(sip_outbound_proxy="[2001:db8::1]").sip_server == HostPort("2001:db8::1", 5060)


def test_a_portless_server_name_is_shown_without_a_port() -> None:
    assert str(settings().sip_server) == "pbx.example.test"
    assert str(settings(sip_port=5070).sip_server) == "pbx.example.test:5070"
    assert str(settings(sip_outbound_proxy="2001:db8::1").sip_server) == "[2001:db8::1]:5060"


def test_auth_name_defaults_to_login_and_password_is_secret() -> None:
    s = settings()
    assert s.sip_auth_name == "relay"
    assert "s3cret-Pw" not in repr(s)
    assert s.sip_password.reveal() == "s3cret-Pw"
    assert set(s.secrets) == {"s3cret-Pw", "abcd-efgh-ijkl"}


def test_rtmp_targets_pairing_and_masking() -> None:
    one_key = rtmp_targets(("rtmp://a.test/live", "rtmps://b.test:443/app/"), ("k-1234567890",))
    assert [t.url for t in one_key] == [
        "rtmp://a.test/live/k-1234567890",
        "rtmps://b.test:443/app/k-1234567890",
    ]
    assert one_key[0].display == "rtmp://a.test/live/k-12****"
    paired = rtmp_targets(("rtmp://a.test/x", "rtmp://b.test/y"), ("k1", "k2"))
    assert [t.url for t in paired] == ["rtmp://a.test/x/k1", "rtmp://b.test/y/k2"]
    embedded = rtmp_targets(("rtmp://a.test/live/embedded-key-99",), ())
    assert embedded[0].stream_key == "embedded-key-99"
    with pytest.raises(ConfigError):
        rtmp_targets(("rtmp://a/x", "rtmp://b/y", "rtmp://c/z"), ("k1", "k2"))
    assert "secret-stream-key" not in redact_url("rtmp://a.test/live/secret-stream-key")


def test_redactor_and_secret() -> None:
    redact = Redactor(["abcdefgh", "abcdefghij"])
    assert redact("x abcdefghij y abcdefgh") == "x *** y ***"
    assert str(Secret("pw")) == "***" and repr(Secret("pw")) == "Secret('***')"
    assert not Secret("")


def test_login_is_escaped_and_the_auth_name_kept_as_typed() -> None:
    s = settings(sip_login="desk#1", sip_auth_name=None)
    assert s.sip_login == "desk%231"
    assert s.sip_auth_name == "desk#1"
    assert settings(sip_auth_name='DOM\\"x"').sip_auth_name == 'DOM\\"x"'


@pytest.mark.parametrize(
    ("domain", "uri_domain", "server"),
    [
        ("pbx.example.test:5080", "pbx.example.test:5080", HostPort("pbx.example.test", 5080)),
        ("sip:pbx.example.test;transport=udp", "pbx.example.test", None),
        ("2001:db8::1", "[2001:db8::1]", HostPort("2001:db8::1", 5060)),
        ("[2001:db8::1]:5070", "[2001:db8::1]:5070", HostPort("2001:db8::1", 5070)),
    ],
)
def test_the_domain_is_a_uri_host(domain: str, uri_domain: str, server: HostPort | None) -> None:
    s = settings(sip_domain=domain)
    assert s.sip_domain == uri_domain
    assert s.callee_uri == f"sip:1001@{uri_domain}"
    assert s.sip_server == (server or HostPort("pbx.example.test"))


def test_without_a_domain_an_ipv6_proxy_is_the_domain_in_brackets() -> None:
    s = settings(sip_domain=None, register=False, callee="7@[2001:db8::7]",
                 sip_outbound_proxy="[2001:db8::1]:5080")  # fmt: skip
    assert s.sip_domain == "[2001:db8::1]"
    assert s.sip_server == HostPort("2001:db8::1", 5080)


def test_a_tel_callee_needs_a_server() -> None:
    assert settings(callee="tel:+49-30-123").callee_uri == "tel:+49-30-123"
    with pytest.raises(ConfigError, match="tel:"):
        settings(callee="tel:+49-30-123", sip_domain=None, register=False)


def test_an_rtmp_url_with_a_bad_port_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="invalid port"):
        settings(rtmp_urls=("rtmp://live.example.test:99999/app",))


def test_credentials_in_rtmp_urls_are_masked_and_secret() -> None:
    s = settings(
        rtmp_urls=("rtmp://user:hunter2-pw@live.example.test/app?token=t0k3n-abc&x=1",),
        rtmp_streams=("streamkey-0123",),
    )
    target = s.rtmp_targets[0]
    assert target.url == (
        "rtmp://user:hunter2-pw@live.example.test/app/streamkey-0123?token=t0k3n-abc&x=1"
    )
    assert target.display == "rtmp://user:***@live.example.test/app/stre****?token=t0k3****&x=****"
    assert {"hunter2-pw", "t0k3n-abc", "streamkey-0123", "s3cret-Pw"} <= set(s.secrets)
    assert redact_url("rtmp://u:p@h.test/app/key-abcdefgh?sig=zz") == (
        "rtmp://u:***@h.test/app/key-****?sig=****"
    )
    embedded = rtmp_targets(("rtmp://h.test/app/key-abcdefgh/",), ())[0]
    assert embedded.display == "rtmp://h.test/app/key-****/"
