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
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import av
import click
import numpy as np

from sip2rtmp.cli.options import relay_options, relay_request
from sip2rtmp.cli.output import json_line, terminal_safe
from sip2rtmp.config import CallSettings, RtmpTarget, parse_host_port
from sip2rtmp.errors import (
    ExitCode,
    RtmpOutputFailed,
    Sip2RtmpError,
    SipUnreachable,
    UsageError,
)
from sip2rtmp.media import AacEncoder, EncodedPacket, SlateVideo, StreamTemplates
from sip2rtmp.media.outbound import PTIME_MS, OutboundAudio
from sip2rtmp.net.sip_session import SipSession
from sip2rtmp.net.sip_transport import Addr, open_transport, resolve
from sip2rtmp.relay.runner import user_agent_config
from sip2rtmp.sip.message import Headers, Request, Response, SipParseError, parse_message
from sip2rtmp.sip.transaction import ClientTransaction

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

    @classmethod
    def failed(cls, check: str, target: str, error: Sip2RtmpError, detail: str) -> CheckResult:
        hint = f" — {error.hint}" if error.hint else ""
        return cls(check, target, Result.FAIL, detail + hint, error.exit_code)

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
        return record


# ---- SIP ------------------------------------------------------------------------------------


async def check_sip(settings: CallSettings) -> list[CheckResult]:
    """OPTIONS, then REGISTER (and un-REGISTER) unless --no-register or the server is silent."""
    server = f"{settings.sip_transport}:{settings.sip_server}"
    account = (
        f"{settings.sip_login}@{settings.sip_domain}" if settings.sip_login else settings.sip_domain
    )
    try:
        response = await ping_options(settings, OPTIONS_TIMEOUT)
    except SipUnreachable as error:
        return [
            CheckResult.failed("SIP server", server, error, error.detail or "unreachable"),
            CheckResult("SIP registration", account, Result.SKIP, "server unreachable"),
        ]
    results = [
        CheckResult(
            "SIP server",
            server,
            Result.PASS,
            f"reachable, OPTIONS answered {response.status} {response.reason}",
        )
    ]
    if not settings.register:
        results.append(CheckResult("SIP registration", account, Result.SKIP, "--no-register"))
        return results
    try:
        async with SipSession(user_agent_config(settings)) as session:
            expires = await session.register()
    except Sip2RtmpError as error:
        results.append(CheckResult.failed("SIP registration", account, error, error.describe()))
        return results
    results.append(
        CheckResult(
            "SIP registration",
            account,
            Result.PASS,
            f"credentials accepted (registered for {expires} s, then unregistered)",
        )
    )
    return results


async def ping_options(settings: CallSettings, timeout: float) -> Response:
    """Send OPTIONS to the SIP server and return its final answer, whatever the status.

    Raises SipUnreachable when the name does not resolve, the connection is refused, or no
    answer arrives within `timeout` (retransmitting over UDP as RFC 3261 §17.1.2 says).
    """
    server = settings.sip_server
    port = server.port or 5060
    target = str(server)
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[Response] = loop.create_future()
    branch = "z9hG4bK" + secrets.token_hex(8)

    def on_message(data: bytes, addr: Addr) -> None:
        with contextlib.suppress(SipParseError):
            message = parse_message(data)
            if (
                isinstance(message, Response)
                and message.status >= 200
                and message.top_via.branch == branch
                and not answered.done()
            ):
                answered.set_result(message)

    def on_error(error: Exception) -> None:
        if not answered.done():
            answered.set_exception(SipUnreachable(target, _os_detail(error)))

    try:
        addr = await resolve(server.host, port, settings.sip_transport)
        transport = await open_transport(
            settings.sip_transport,
            addr,
            on_message,
            on_error,
            server_hostname=server.host,
            connect_timeout=timeout,
            tls_ca_file=settings.sip_tls_ca,
        )
    except TimeoutError:
        raise SipUnreachable(target, f"no connection within {timeout:g} s") from None
    except OSError as error:
        raise SipUnreachable(target, _os_detail(error)) from None
    try:
        request = _options_request(settings, transport.local_addr, branch)
        reliable = settings.sip_transport != "udp"
        transaction = ClientTransaction(request, addr, reliable, loop.time())
        deadline = loop.time() + timeout
        while not answered.done():
            for data in transaction.outbox:
                transport.send(data, addr)
            transaction.outbox.clear()
            wake = min(transaction.get_timer() or deadline, deadline)
            await asyncio.wait([answered], timeout=max(wake - loop.time(), 0.0))
            if not answered.done() and loop.time() >= deadline:
                raise SipUnreachable(target, f"no answer to OPTIONS within {timeout:g} s")
            transaction.handle_timer(loop.time())
        return answered.result()
    finally:
        transport.close()


def _options_request(settings: CallSettings, local: Addr, branch: str) -> Request:
    host = f"[{local[0]}]" if ":" in local[0] else local[0]
    user = settings.sip_login or "sip2rtmp"
    domain = settings.sip_domain
    headers = Headers()
    headers.add(
        "Via", f"SIP/2.0/{settings.sip_transport.upper()} {host}:{local[1]};rport;branch={branch}"
    )
    headers.add("Max-Forwards", "70")
    headers.add("From", f"<sip:{user}@{domain}>;tag={secrets.token_hex(4)}")
    headers.add("To", f"<sip:{domain}>")
    headers.add("Call-ID", secrets.token_hex(8))
    headers.add("CSeq", "1 OPTIONS")
    headers.add("Accept", "application/sdp")
    headers.add("User-Agent", "sip2rtmp check")
    return Request("OPTIONS", f"sip:{domain}", headers)


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
        failure = RtmpOutputFailed(target.display, detail)
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
            results.append(CheckResult("codec", name, Result.FAIL, detail, ExitCode.USAGE))
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
            failure = UsageError(f"--announce {announce}: {_os_detail(error)}")
            results.append(CheckResult.failed("announcement", str(announce), failure, str(failure)))
        else:
            seconds = len(payloads) * PTIME_MS / 1000
            how = "looped" if announce_loop else "once"
            detail = f"decodes: {seconds:.1f} s, played {how}"
            results.append(CheckResult("announcement", str(announce), Result.PASS, detail))
    if slate is not None:
        try:
            picture = SlateVideo.image(slate)
        except (av.error.FFmpegError, OSError, ValueError, StopIteration) as error:
            failure = UsageError(f"--slate {slate}: {_os_detail(error)}")
            results.append(CheckResult.failed("slate", str(slate), failure, str(failure)))
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
            shown = replace(result, target=redactor(result.target), detail=redactor(result.detail))
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
    raise UsageError("missing --sip-domain or --sip-outbound-proxy: the SIP server to check")
