"""`sip2rtmp check`: will a call with these flags work? Finds out without placing one.

It asks the SIP server an OPTIONS (any answer proves it reachable), registers and unregisters
when registration is on (the only way to learn whether the credentials are accepted), publishes
one keyframe and one audio frame to each RTMP output, looks for every codec a call may need in
the installed PyAV, and decodes the --announce and --slate files. The exit code is that of the
first failure, as `call` would exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import av
import click
import numpy as np

from sip2rtmp.cli.options import relay_options, relay_request
from sip2rtmp.cli.outcomes import ExitCode, explain
from sip2rtmp.cli.output import json_line, terminal_safe
from sip2rtmp.config import CallSettings, ConfigError, RtmpTarget, parse_host_port
from sip2rtmp.media import AacEncoder, EncodedPacket, SlateVideo, StreamTemplates
from sip2rtmp.media.outbound import PTIME_MS, OutboundAudio
from sip2rtmp.net.locate import Located
from sip2rtmp.net.sip_session import SipSession
from sip2rtmp.netaddr import Address, format_address
from sip2rtmp.outcomes import Outcome, OutputFailed, RunFailed, Unanswered, Unreachable
from sip2rtmp.relay.account import user_agent_config

OPTIONS_TIMEOUT = 5.0
"""Long enough for three UDP retransmissions; a server that has not answered by then is down."""
RTMP_TIMEOUT = 10.0

Mode = Literal["r", "w"]
CODECS: tuple[tuple[str, tuple[Mode, ...], str], ...] = (
    ("aac", ("w",), "AAC encoder, the stream's audio"),
    ("libx264", ("w",), "H.264 encoder, the stream's video"),
    ("h264", ("r",), "H.264 decoder, the callee's video"),
    ("vp8", ("r",), "VP8 decoder, the callee's video"),
    ("pcm_mulaw", ("r", "w"), "PCMU (G.711 µ-law) decoder and encoder"),
    ("pcm_alaw", ("r", "w"), "PCMA (G.711 A-law) decoder and encoder"),
    ("g722", ("r", "w"), "G.722 decoder and encoder"),
    ("opus", ("r", "w"), "Opus decoder and encoder"),
)
"""(FFmpeg name, r=decode/w=encode, what it is for): every codec a call may negotiate or need."""


class Result(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


MARKS = {Result.PASS: "✓", Result.FAIL: "✗", Result.SKIP: "-"}


@dataclass(frozen=True)
class CheckResult:
    """One line of the report; a failure carries the exit code `call` would exit with."""

    check: str
    target: str
    result: Result
    detail: str
    exit_code: ExitCode = ExitCode.OK
    data: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """More fields for the `--json` record (the DNS lookups, the targets, the addresses)."""

    @classmethod
    def failed(cls, check: str, target: str, outcome: Outcome, detail: str) -> CheckResult:
        """A failure `call` would meet as `outcome`: its exit code, and its hint after the
        detail."""
        explained = explain(outcome)
        hint = f" — {explained.hint}" if explained.hint else ""
        return cls(check, target, Result.FAIL, detail + hint, explained.exit_code)

    @classmethod
    def unusable(cls, check: str, target: str, detail: str) -> CheckResult:
        """A configuration `call` would refuse: exit code 2, no hint."""
        return cls(check, target, Result.FAIL, detail, ExitCode.USAGE)

    def line(self) -> str:
        return f"{MARKS[self.result]} {self.check} {self.target}: {self.detail}"

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "event": "check",
            "check": self.check,
            "target": self.target,
            "result": self.result.value,
            "detail": self.detail,
        }
        if self.result is Result.FAIL:
            record["exitCode"] = int(self.exit_code)
        return {**record, **self.data}

    def redacted(self, redactor: Callable[[str], str]) -> CheckResult:
        """The same result with `redactor` applied to every text it shows."""
        return replace(self, detail=redactor(self.detail), data=_redacted(self.data, redactor))


def _redacted(value: Any, redactor: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, Mapping):
        return {key: _redacted(item, redactor) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item, redactor) for item in value]
    return value


# ---- SIP ------------------------------------------------------------------------------------


async def check_sip(settings: CallSettings) -> list[CheckResult]:
    """OPTIONS, then REGISTER (and un-REGISTER) unless --no-register or the server is silent:
    one SIP session, so the checks go through the same transactions a call would."""
    server = f"{settings.sip_transport}:{settings.sip_server}"
    account = (
        f"{settings.sip_login}@{settings.sip_domain}" if settings.sip_login else settings.sip_domain
    )
    session = SipSession(user_agent_config(settings), connect_timeout=OPTIONS_TIMEOUT)
    try:
        async with session:
            answer = await session.options(timeout=OPTIONS_TIMEOUT)
            reachable = f"reachable, OPTIONS answered {answer.status} {answer.reason}"
            results = [
                CheckResult("SIP server", server, Result.PASS, reachable),
                *check_location(settings, session.located, session.server),
                check_public_address(settings, session.local_address, session.public_address),
            ]
            if not settings.register:
                skipped = CheckResult("SIP registration", account, Result.SKIP, "--no-register")
                return [*results, skipped]
            return [*results, await check_registration(session, account)]
    except RunFailed as failed:
        return [
            CheckResult.failed("SIP server", server, failed.outcome, _unreachable(failed.outcome)),
            *check_location(settings, session.located, None),
            CheckResult("public address", server, Result.SKIP, "server unreachable"),
            CheckResult("SIP registration", account, Result.SKIP, "server unreachable"),
        ]


def check_location(
    settings: CallSettings, located: Located | None, answered: Address | None
) -> list[CheckResult]:
    """Where RFC 3263 server location found the server: the lookups made, then each target
    in the order a call tries them, the one that answered marked. Nothing when the session
    found no target: its failure names the lookups already."""
    if located is None:
        return []
    transport = settings.sip_transport
    name = str(settings.sip_server)
    lookups = ", ".join(located.tried) or "an IP address, nothing to look up"
    targets = [
        {"address": format_address(t.address), "transport": t.transport, "record": t.record}
        for t in located.targets
    ]
    data = {"tried": list(located.tried), "targets": targets}
    results = [CheckResult("SIP server location", name, Result.PASS, lookups, data=data)]
    for order, target in enumerate(located.targets, 1):
        mark = " (answered the OPTIONS)" if target.address == answered else ""
        detail = f"{order} of {len(located.targets)}: {target.record}{mark}"
        shown = f"{transport}:{format_address(target.address)}"
        facts = {"order": order, "record": target.record, "answered": bool(mark)}
        results.append(CheckResult("SIP server target", shown, Result.PASS, detail, data=facts))
    return results


def check_public_address(
    settings: CallSettings, local: Address, public: Address | None
) -> CheckResult:
    """The address the server saw our OPTIONS come from (the top Via's `received`/`rport` of
    its answer, RFC 3581 §4), which Contact and the SDP offer then advertise; or the one
    --public-address configures."""
    transport = settings.sip_transport
    target = f"{transport}:{format_address(local)}"
    if settings.nat == "off":
        detail = "--nat off: Contact and the SDP offer carry the local address"
        return CheckResult("public address", target, Result.SKIP, detail)
    seen = public or local
    if settings.public_address is not None:
        source, detail = "configured", f"{format_address(seen)}, as --public-address says"
    elif public is None:
        source = "local"
        detail = "same as local (no other address in the answer's Via received/rport)"
    else:
        source = "received"
        detail = f"the server saw {format_address(seen)} (Via received/rport): behind a NAT"
    data = {"address": format_address(seen), "source": source, "local": format_address(local)}
    return CheckResult("public address", target, Result.PASS, detail, data=data)


async def check_registration(session: SipSession, account: str) -> CheckResult:
    """REGISTER: the only way to learn whether the server takes the credentials. The session
    removes the binding again on its way out."""
    try:
        expires = await session.register()
    except RunFailed as failed:
        message = explain(failed.outcome).message
        return CheckResult.failed("SIP registration", account, failed.outcome, message)
    detail = f"credentials accepted (registered for {expires} s, then unregistered)"
    return CheckResult("SIP registration", account, Result.PASS, detail)


def _unreachable(outcome: Outcome) -> str:
    """Why the server did not answer, in the words of the check's report."""
    if isinstance(outcome, Unanswered):
        return f"no answer to {outcome.method} within {outcome.seconds:g} s"
    if isinstance(outcome, Unreachable):
        return outcome.detail or "unreachable"
    return explain(outcome).message


def _os_detail(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


# ---- RTMP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What each output is sent: the codec headers, one H.264 keyframe, one AAC frame."""

    templates: StreamTemplates
    packets: tuple[EncodedPacket, ...]

    @classmethod
    def make(cls) -> Probe:
        slate = SlateVideo.text("sip2rtmp check", width=160, height=90)
        aac = AacEncoder()
        audio: list[EncodedPacket] = []
        silence = np.zeros((1, AacEncoder.frame_size), dtype=np.float32)
        position = 0
        while not audio:
            audio = aac.encode(silence, position)
            position += AacEncoder.frame_size
        keyframe = slate.packets_until(0.0)[0]
        return cls(StreamTemplates(slate.template, aac.template), (keyframe, audio[0]))


def check_output(target: RtmpTarget, probe: Probe, timeout: float) -> CheckResult:
    """Connect, publish the probe, close: the handshake, the publish and the muxer all ran."""
    container: Any = None
    try:
        container = av.open(target.url, "w", format="flv", timeout=(timeout, timeout))
        streams = probe.templates.add_to(container)
        for packet in probe.packets:
            av_packet = av.Packet(packet.data)
            av_packet.pts = packet.pts
            av_packet.dts = packet.dts
            av_packet.time_base = packet.time_base
            av_packet.stream = streams[packet.track]
            av_packet.is_keyframe = packet.keyframe
            container.mux(av_packet)
        container.close()
    except (av.error.FFmpegError, OSError, ValueError) as error:
        if container is not None:
            with contextlib.suppress(av.error.FFmpegError, OSError):
                container.close()
        detail = _os_detail(error).replace(target.url, target.display)
        failure = OutputFailed(target.display, detail)
        return CheckResult.failed("RTMP output", target.display, failure, detail)
    return CheckResult(
        "RTMP output",
        target.display,
        Result.PASS,
        "accepted the stream (one keyframe and one audio frame published, then closed)",
    )


def check_outputs(targets: tuple[RtmpTarget, ...]) -> list[CheckResult]:
    try:
        probe = Probe.make()
    except (av.error.FFmpegError, ValueError, RuntimeError) as error:
        reason = f"cannot encode a test frame ({_os_detail(error)}); see the codec checks"
        return [CheckResult("RTMP output", t.display, Result.SKIP, reason) for t in targets]
    return [check_output(target, probe, RTMP_TIMEOUT) for target in targets]


# ---- codecs ---------------------------------------------------------------------------------


def check_codecs() -> list[CheckResult]:
    results = []
    for name, modes, purpose in CODECS:
        missing = [mode for mode in modes if not _has_codec(name, mode)]
        if missing:
            kinds = " and ".join("decoder" if mode == "r" else "encoder" for mode in missing)
            detail = f"no {kinds} in this PyAV build ({purpose})"
            results.append(CheckResult.unusable("codec", name, detail))
        else:
            results.append(CheckResult("codec", name, Result.PASS, purpose))
    return results


def _has_codec(name: str, mode: Mode) -> bool:
    try:
        av.codec.Codec(name, mode)
    except ValueError:
        return False
    return True


# ---- files a call would play or show -------------------------------------------------------


def check_media_files(
    announce: Path | None, announce_loop: bool, slate: Path | None
) -> list[CheckResult]:
    """Decode --announce and --slate now rather than at the answer of an unattended call."""
    results = []
    if announce is not None:
        try:
            payloads = OutboundAudio("PCMU", announce_path=announce).announcement
        except (av.error.FFmpegError, OSError, ValueError) as error:
            detail = f"--announce {announce}: {_os_detail(error)}"
            results.append(CheckResult.unusable("announcement", str(announce), detail))
        else:
            seconds = len(payloads) * PTIME_MS / 1000
            how = "looped" if announce_loop else "once"
            detail = f"decodes: {seconds:.1f} s, played {how}"
            results.append(CheckResult("announcement", str(announce), Result.PASS, detail))
    if slate is not None:
        try:
            picture = SlateVideo.image(slate)
        except (av.error.FFmpegError, OSError, ValueError, StopIteration) as error:
            detail = f"--slate {slate}: {_os_detail(error)}"
            results.append(CheckResult.unusable("slate", str(slate), detail))
        else:
            detail = f"decodes: streamed as {picture.width}x{picture.height}"
            results.append(CheckResult("slate", str(slate), Result.PASS, detail))
    return results


# ---- the command ----------------------------------------------------------------------------


@click.command(context_settings={"auto_envvar_prefix": "SIP2RTMP"})
@relay_options(hide_call_flags=True)
@click.pass_context
def check(ctx: click.Context, /, **flags: Any) -> int:
    """Check the SIP server, credentials, RTMP outputs, codecs and media files; call no one.

    Takes the flags and profiles of `call`. Prints one line per check (or, with --json, one JSON
    object per line) and exits 0 when all pass, else with the exit code of the first failure.
    """
    request = relay_request(
        ctx,
        flags,
        default_callee=_server_callee(
            flags["sip_login"], flags["sip_domain"], flags["sip_outbound_proxy"]
        ),
    )
    settings, redactor, as_json = request.settings, request.redactor, request.as_json
    announce, slate = request.media.announce, request.media.slate
    announce_loop = request.media.announce_loop

    outcomes: list[CheckResult] = []
    for results in run_checks(settings, announce, announce_loop, slate):
        for result in results:
            # Targets are display forms already; a detail may quote a third party's free text.
            shown = result.redacted(redactor)
            if as_json:
                click.echo(json_line(shown.record()))
            else:
                click.echo(terminal_safe(shown.line()))
        outcomes += results
    failures = [result for result in outcomes if result.result is Result.FAIL]
    exit_code = failures[0].exit_code if failures else ExitCode.OK
    if as_json:
        summary = {"event": "checked", "ok": not failures, "exitCode": int(exit_code)}
        click.echo(json_line(summary))
    return exit_code


def run_checks(
    settings: CallSettings, announce: Path | None, announce_loop: bool, slate: Path | None
) -> Iterator[list[CheckResult]]:
    """The checks in report order, each group yielded as soon as it is done."""
    yield asyncio.run(check_sip(settings))
    yield check_outputs(settings.rtmp_targets)
    yield check_codecs()
    yield check_media_files(announce, announce_loop, slate)


def _server_callee(login: str | None, domain: str | None, proxy: str | None) -> str:
    """A stand-in callee, so `call`'s validation applies unchanged: the login, completed with
    the domain; with --no-register and no --sip-domain, `call` takes the server from the
    callee's host, so then it is the login at the proxy."""
    user = login or "sip2rtmp"
    if domain:
        return user
    if proxy:
        return f"{user}@{parse_host_port(proxy, '--sip-outbound-proxy')}"
    raise ConfigError("missing --sip-domain or --sip-outbound-proxy: the SIP server to check")
