"""The free-text redactor's bookkeeping: secrets added at different times all stay masked, and
a URL that would mask nothing adds no pattern."""

from __future__ import annotations

from sip2rtmp.cli.output import Redactor

SERVER = "rtmp://127.0.0.1:1935/live"


def test_a_second_password_joins_the_first_rather_than_replacing_it() -> None:
    """The SIP password is known first, a URL's password when the targets are read."""
    redact_text = Redactor(["sip-Passw0rd-1"])
    redact_text.add("url-Passw0rd-2")
    assert redact_text("sip-Passw0rd-1 url-Passw0rd-2") == "*** ***"


def test_a_url_that_is_empty_or_shown_as_it_is_adds_nothing() -> None:
    """An empty pattern would match between every two characters."""
    redact_text = Redactor()
    redact_text.add_url("", f"{SERVER}/***")
    redact_text.add_url(SERVER, SERVER)
    assert redact_text(f"connecting to {SERVER}") == f"connecting to {SERVER}"


def test_a_secret_that_starts_a_longer_one_never_masks_only_its_start() -> None:
    redact = Redactor(["abcdefgh", "abcdefgh!"])
    assert redact("key abcdefgh! and abcdefgh.") == "key *** and ***."
