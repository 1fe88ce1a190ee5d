"""`sip2rtmp check`: will a call with these flags work? Finds out without placing one.

It asks the SIP server an OPTIONS (any answer proves it reachable), registers and unregisters
when registration is on (the only way to learn whether the credentials are accepted), publishes
one keyframe and one audio frame to each RTMP output (an RTMPS one after verifying the server's
certificate, on the same kind of connection a call makes), looks for every codec a call may need in
the installed PyAV, and decodes the --announce and --slate files. The exit code is that of the
first failure, as `call` would exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import av
import click
import numpy as np

from sip2rtmp.cli.options import relay_options, relay_request
from sip2rtmp.cli.outcomes import ExitCode, explain
from sip2rtmp.cli.output import json_line, terminal_safe
from sip2rtmp.config import CallSettings, ConfigError, RtmpTarget, parse_host_port
from sip2rtmp.media.audio import AacEncoder
from sip2rtmp.media.outbound import PTIME_MS, OutboundAudio
from sip2rtmp.media.packets import EncodedPacket, StreamTemplates
from sip2rtmp.media.slate import SlateVideo
from sip2rtmp.net.locate import Located
from sip2rtmp.net.rtmp_socket import RtmpConnection
from sip2rtmp.net.rtmps import (
    RTMPS_PORT,
    CertificateRefused,
    client_context,
    verify_certificate,
)
from sip2rtmp.net.sip_session import SipSession
from sip2rtmp.netaddr import Address, format_address
from sip2rtmp.outcomes import (
    Outcome,
    OutputFailed,
    Rejected,
    RunFailed,
    Unanswered,
    Unreachable,
)
from sip2rtmp.relay.account import user_agent_config
from sip2rtmp.sip.sdp import SdpParseError, SessionDescription

OPTIONS_TIMEOUT = 5.0
"""Long enough for three UDP retransmissions; a server that has not answered by then is down."""
RTMP_TIMEOUT = 10.0
CERTIFICATE_HINT = "--rtmps-ca FILE trusts another CA, --rtmps-insecure skips the check"

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


async def check_sip(settings: CallSettings, *, callee: bool = False) -> list[CheckResult]:
    """OPTIONS, then REGISTER (and un-REGISTER) unless --no-register or the server is silent,
    then with ``callee`` an OPTIONS to the callee: one SIP session, so the checks go through
    the same transactions a call would."""
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
                results.append(
                    CheckResult("SIP registration", account, Result.SKIP, "--no-register")
                )
            else:
                results.append(await check_registration(session, account))
            if callee:
                results.append(await check_callee_media(session, settings))
            return results
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


SECURE_PROFILES = ("RTP/SAVP", "RTP/SAVPF")


async def check_callee_media(session: SipSession, settings: CallSettings) -> CheckResult:
    """OPTIONS to the callee, whose answer may carry the SDP it would accept (RFC 3261
    §11.2): an audio stream there in RTP/SAVP means an offer without SRTP is refused."""
    target = settings.callee_uri
    try:
        answer = await session.options(target, timeout=OPTIONS_TIMEOUT)
    except RunFailed as failed:
        detail = f"no answer to OPTIONS ({type(failed.outcome).__name__}): see the call"
        return CheckResult("callee media", target, Result.SKIP, detail)
    profile = _audio_profile(answer.sdp)
    if profile is None:
        detail = f"answered {answer.status} without SDP: whether it needs SRTP shows in a call"
        return CheckResult("callee media", target, Result.SKIP, detail)
    data = {"profile": profile, "srtp": profile in SECURE_PROFILES}
    if profile not in SECURE_PROFILES:
        detail = f"takes {profile}: plain RTP, SRTP not required"
        return CheckResult("callee media", target, Result.PASS, detail, data=data)
    if settings.srtp != "off":
        detail = f"requires SRTP ({profile}); --srtp {settings.srtp} offers it"
        return CheckResult("callee media", target, Result.PASS, detail, data=data)
    refused = Rejected("INVITE", 488, "Not Acceptable Here", target)
    detail = f"requires SRTP ({profile}): a call with --srtp off would be refused (488)"
    explained = explain(refused, srtp="off")
    hint = f" — {explained.hint}" if explained.hint else ""
    return CheckResult(
        "callee media", target, Result.FAIL, detail + hint, explained.exit_code, data=data
    )


def _audio_profile(sdp: bytes | None) -> str | None:
    """The transport profile of the first audio stream of ``sdp``, None when there is none
    or the SDP cannot be read."""
    if sdp is None:
        return None
    try:
        description = SessionDescription.parse(sdp.decode("utf-8", "replace"))
    except SdpParseError:
        return None
    return next((m.proto for m in description.media if m.kind == "audio"), None)


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


def check_output(
    target: RtmpTarget, probe: Probe, timeout: float, tls: ssl.SSLContext | None = None
) -> CheckResult:
    """Connect, publish the probe, close: the handshake, the publish and the muxer all ran,
    on the same connection a call's output makes (verified with ``tls`` for rtmps://)."""
    container: Any = None
    connection: RtmpConnection | None = None
    try:
        connection = RtmpConnection.open(target.url, timeout=timeout, tls=tls)
        container = av.open(connection, "w", format="flv")
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
        connection.close()
    except (av.error.FFmpegError, OSError, ValueError) as error:
        if container is not None:
            with contextlib.suppress(av.error.FFmpegError, OSError):
                container.close()
        if connection is not None:
            connection.close()
        detail = _os_detail(error).replace(target.url, target.display)
        failure = OutputFailed(target.display, detail)
        return CheckResult.failed("RTMP output", target.display, failure, detail)
    return CheckResult(
        "RTMP output",
        target.display,
        Result.PASS,
        "accepted the stream (one keyframe and one audio frame published, then closed)",
    )


def check_certificate(
    target: RtmpTarget, cafile: str | None, insecure: bool, timeout: float
) -> CheckResult:
    """The RTMPS server's certificate, checked as a call's hop checks it."""
    if insecure:
        detail = "--rtmps-insecure: the certificate is not checked"
        return CheckResult("RTMPS certificate", target.display, Result.SKIP, detail)
    parts = urlsplit(target.url)
    host, port = parts.hostname or "", parts.port or RTMPS_PORT
    try:
        context = client_context(cafile)
        description = asyncio.run(verify_certificate(host, port, context, timeout))
    except CertificateRefused as refused:
        detail = f"{host}:{port} refused: {refused} — {CERTIFICATE_HINT}"
        code = explain(OutputFailed(target.display, detail)).exit_code
        return CheckResult("RTMPS certificate", target.display, Result.FAIL, detail, code)
    except OSError as error:  # ssl.SSLError, TimeoutError and a missing --rtmps-ca too
        detail = f"{host}:{port}: {_os_detail(error)}"
        failure = OutputFailed(target.display, detail)
        return CheckResult.failed("RTMPS certificate", target.display, failure, detail)
    return CheckResult("RTMPS certificate", target.display, Result.PASS, description)


def check_rtmps_output(
    target: RtmpTarget, probe: Probe, timeout: float, cafile: str | None, insecure: bool
) -> list[CheckResult]:
    """The certificate first; then the probe, published as a call's output would."""
    certificate = check_certificate(target, cafile, insecure, timeout)
    if certificate.result is Result.FAIL:
        skipped = "not published: the certificate did not verify"
        return [certificate, CheckResult("RTMP output", target.display, Result.SKIP, skipped)]
    tls = client_context(cafile, insecure=insecure)
    return [certificate, check_output(target, probe, timeout, tls)]


def check_outputs(
    targets: tuple[RtmpTarget, ...], cafile: str | None = None, insecure: bool = False
) -> list[CheckResult]:
    try:
        probe = Probe.make()
    except (av.error.FFmpegError, ValueError, RuntimeError) as error:
        reason = f"cannot encode a test frame ({_os_detail(error)}); see the codec checks"
        return [CheckResult("RTMP output", t.display, Result.SKIP, reason) for t in targets]
    results: list[CheckResult] = []
    for target in targets:
        if urlsplit(target.url).scheme.lower() == "rtmps":
            results += check_rtmps_output(target, probe, RTMP_TIMEOUT, cafile, insecure)
        else:
            results.append(check_output(target, probe, RTMP_TIMEOUT))
    return results


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
    callee = bool(flags["callee"])
    for results in run_checks(settings, announce, announce_loop, slate, callee=callee):
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
    settings: CallSettings,
    announce: Path | None,
    announce_loop: bool,
    slate: Path | None,
    *,
    callee: bool = False,
) -> Iterator[list[CheckResult]]:
    """The checks in report order, each group yielded as soon as it is done; ``callee`` when
    one was named, so that the callee's own media is asked about too."""
    yield asyncio.run(check_sip(settings, callee=callee))
    yield check_outputs(settings.rtmp_targets, settings.rtmps_ca, settings.rtmps_insecure)
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
