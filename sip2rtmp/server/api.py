"""The reference system's REST API (`/rest-api/call/...`) over one worker process per call.

Every answer is JSON: the call objects `find` returns, or `{"error": ..., "field": ...}` with
the status code saying what went wrong. Request bodies are never logged and no answer carries
a password or a stream key.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web

from sip2rtmp.server.calls import STATUSES, CallRecord, CallRegistry
from sip2rtmp.server.config import MAX_BODY, ServerConfig
from sip2rtmp.server.request import (
    BadRequest,
    StartRequest,
    is_text,
    media_file,
    parse_start_request,
)
from sip2rtmp.server.zygote import Zygote

log = logging.getLogger("sip2rtmp.server.api")

EventHandler = Callable[[CallRecord, dict[str, Any]], None]
COMMAND_TIMEOUT = 3.0
"""How long a REST call waits for the worker's answer to a command before it replies 202."""
DTMF_RE = re.compile(r"[0-9A-Da-d*#]{1,64}")
"""DTMF events 0-9, *, #, A-D (RFC 4733 §3.2)."""
DTMF_METHODS = {"RFC2833": "rfc4733", "INFO": "info"}
INJECT_SCHEMES = ("http", "https", "rtmp", "rtmps")
"""What `inject_stream` plays from a URL: streams a client may name, never `file:` or the
other protocols FFmpeg would open on the server's side."""
"""The reference's `type` names: RFC 2833 is what RFC 4733 obsoleted; INFO is SIP INFO."""


class CallWorker(Protocol):
    async def start(self) -> None: ...
    async def command(self, cmd: dict[str, Any]) -> None: ...
    async def terminate(self, timeout: float) -> None: ...
    async def wait(self) -> None: ...


WorkerFactory = Callable[[StartRequest, CallRecord, EventHandler], CallWorker]


class ApiError(Exception):
    """An answer other than 200: its status code, the reason, and the body field at fault."""

    def __init__(self, status: int, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.field = field


class CallServer:
    """The calls and their workers: what the routes act on and what `app.py` shuts down."""

    def __init__(
        self,
        config: ServerConfig,
        worker_factory: WorkerFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.registry = CallRegistry(config.keep_finished)
        self.workers: dict[str, CallWorker] = {}
        self.listeners: list[EventHandler] = []
        """Called with each event after the record took it (webhooks, metrics)."""
        self.clock = clock
        self._factory = worker_factory or self._default_factory
        self.zygote = Zygote() if worker_factory is None else None
        """The workers' parent, for the default workers."""
        self._answers: dict[tuple[str, str], list[asyncio.Future[dict[str, Any]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _default_factory(
        self, request: StartRequest, record: CallRecord, on_event: EventHandler
    ) -> CallWorker:
        from sip2rtmp.server.worker import Worker

        assert self.zygote is not None
        return Worker(request, record, on_event, profile=self.config.profile, zygote=self.zygote)

    def on_event(self, record: CallRecord, event: dict[str, Any]) -> None:
        if event.get("event") == "command":
            waiting = self._answers.get((record.call_id, str(event.get("command"))))
            while waiting:
                future = waiting.pop(0)
                if not future.done():
                    future.set_result(event)
                    break
        for listener in self.listeners:
            try:
                listener(record, event)
            except Exception:  # an observer's bug must not stop the others
                log.exception("call %s: event listener failed", record.call_id)

    def expire(self) -> None:
        for call_id in self.registry.expire(self.clock()):
            self.workers.pop(call_id, None)

    async def start(self, body: object) -> CallRecord:
        try:
            request = parse_start_request(body, self.config.defaults, self.config.media_dir)
            target = request.target
        except BadRequest as error:
            raise ApiError(400, error.reason, error.field) from None
        self.expire()
        if self.registry.get(request.call_id) is not None:
            raise ApiError(409, "a call with this callId exists", "callId")
        if self.registry.destination_in_use(target.url) is not None:
            raise ApiError(409, "a running call streams to this rtmpUrl and stream", "rtmpUrl")
        if self.registry.running_count() >= self.config.max_calls:
            raise ApiError(503, f"{self.config.max_calls} calls are running (--max-calls)")
        record = CallRecord(
            call_id=request.call_id,
            status="NEW",
            sip_status=None,
            sip_message=None,
            callee=request.callee,
            rtmp_url=target.display,
            has_audio=request.has_audio,
            has_video=request.has_video,
            created=self.clock(),
        )
        self.registry.add(record, target.url)
        worker = self._factory(request, record, self.on_event)
        self.workers[record.call_id] = worker
        log.info(
            "call %s: starting, callee %s, to %s", record.call_id, record.callee, record.rtmp_url
        )
        await worker.start()
        return record

    def running_call(self, body: dict[str, Any]) -> tuple[CallRecord, CallWorker]:
        record = self.known_call(body)
        worker = self.workers.get(record.call_id)
        if record.finished or worker is None:
            raise ApiError(409, f"the call has ended ({record.status})", "callId")
        return record, worker

    def known_call(self, body: dict[str, Any]) -> CallRecord:
        call_id = body.get("callId")
        if not isinstance(call_id, str) or not call_id:
            raise ApiError(400, "callId is required (a string)", "callId")
        self.expire()
        record = self.registry.get(call_id)
        if record is None:
            raise ApiError(404, "no call with this callId", "callId")
        return record

    async def command(self, record: CallRecord, worker: CallWorker, cmd: dict[str, Any]) -> bool:
        """Send a command and wait for the worker's answer; False when none came in time."""
        key = (record.call_id, str(cmd["command"]))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers.setdefault(key, []).append(future)
        try:
            await worker.command(cmd)
            answer = await asyncio.wait_for(future, COMMAND_TIMEOUT)
        except TimeoutError:
            return False
        finally:
            waiting = self._answers.get(key, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._answers.pop(key, None)
        if answer.get("ok") is not True:
            reason = answer.get("reason")
            raise ApiError(409, reason if isinstance(reason, str) else "the call refused it")
        return True

    def terminate(self, record: CallRecord, worker: CallWorker) -> None:
        """Hang up in the background: the BYE's transaction may take seconds."""
        task = asyncio.create_task(worker.terminate(self.config.terminate_timeout))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("call %s: terminate requested", record.call_id)

    async def shutdown(self) -> None:
        """Hang up every running call at once and wait until each worker is gone."""
        running = [
            worker
            for call_id, worker in self.workers.items()
            if (record := self.registry.get(call_id)) is not None and not record.finished
        ]
        timeout = self.config.terminate_timeout
        await asyncio.gather(*(worker.terminate(timeout) for worker in running))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.zygote is not None:
            await self.zygote.close()


SERVER_KEY = web.AppKey("sip2rtmp_server", CallServer)


def create_app(
    config: ServerConfig,
    *,
    worker_factory: WorkerFactory | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The aiohttp application; `app[SERVER_KEY]` holds the calls (for shutdown and hooks)."""
    server = CallServer(config, worker_factory, clock)
    app = web.Application(
        client_max_size=MAX_BODY, middlewares=[_errors_middleware, _auth_middleware(config)]
    )
    app[SERVER_KEY] = server
    routes = Routes(server)
    prefix = "/rest-api/call"
    app.router.add_post(f"{prefix}/startup", routes.startup)
    app.router.add_post(f"{prefix}/terminate", routes.terminate)
    app.router.add_post(f"{prefix}/find", routes.find)
    app.router.add_post(f"{prefix}/find_all", routes.find_all)
    app.router.add_post(f"{prefix}/send_dtmf", routes.send_dtmf)
    app.router.add_post(f"{prefix}/inject_stream", routes.inject_stream)
    app.router.add_get("/health", routes.health)
    app.router.add_get("/metrics", routes.metrics)
    app.router.add_get("/openapi.json", routes.openapi)
    return app


class Routes:
    def __init__(self, server: CallServer) -> None:
        self.server = server

    def _calls(self, records: list[CallRecord]) -> web.Response:
        now = self.server.clock()
        return _json([record.to_json(now) for record in records])

    async def startup(self, request: web.Request) -> web.Response:
        record = await self.server.start(await _body(request))
        return _json(record.to_json(self.server.clock()))

    async def terminate(self, request: web.Request) -> web.Response:
        body = await _object(request)
        record = self.server.known_call(body)
        worker = self.server.workers.get(record.call_id)
        if worker is not None and not record.finished:
            self.server.terminate(record, worker)
        return _json(record.to_json(self.server.clock()))

    async def find(self, request: web.Request) -> web.Response:
        body = await _object(request)
        if "callId" in body:
            return self._calls([self.server.known_call(body)])
        status = body.get("status")
        if not isinstance(status, str) or status.upper() not in STATUSES:
            raise ApiError(400, f"give callId, or status: one of {', '.join(STATUSES)}", "status")
        self.server.expire()
        records = self.server.registry.find(status.upper())
        if not records:
            raise ApiError(404, f"no call is {status.upper()}", "status")
        return self._calls(records)

    async def find_all(self, request: web.Request) -> web.Response:
        await _object(request, empty_ok=True)
        self.server.expire()
        return self._calls(self.server.registry.all())

    async def send_dtmf(self, request: web.Request) -> web.Response:
        body = await _object(request)
        record, worker = self.server.running_call(body)
        digits = body.get("dtmf")
        if not isinstance(digits, str) or not DTMF_RE.fullmatch(digits):
            raise ApiError(400, "dtmf must be 1 to 64 of 0-9 * # A-D", "dtmf")
        cmd: dict[str, Any] = {"command": "dtmf", "digits": digits}
        kind = body.get("type")
        if kind is not None:
            if not isinstance(kind, str) or kind.upper() not in DTMF_METHODS:
                raise ApiError(400, "type must be RFC2833 or INFO", "type")
            cmd["method"] = DTMF_METHODS[kind.upper()]
        return await self._send(record, worker, cmd)

    async def inject_stream(self, request: web.Request) -> web.Response:
        body = await _object(request)
        record, worker = self.server.running_call(body)
        given = [name for name in ("file", "url") if body.get(name) is not None]
        if len(given) != 1:
            raise ApiError(400, "give exactly one of file, url", "file")
        field = given[0]
        source = body[field]
        if not isinstance(source, str) or not is_text(source):
            raise ApiError(400, f"{field} must be a string of printable characters", field)
        if field == "file":
            try:
                source = media_file(field, source, self.server.config.media_dir)
            except BadRequest as error:
                raise ApiError(400, error.reason, field) from None
        elif urlsplit(source).scheme.lower() not in INJECT_SCHEMES:
            raise ApiError(400, "must be an http(s):// or rtmp(s):// URL", field)
        return await self._send(record, worker, {"command": "inject", "file": source})

    async def _send(
        self, record: CallRecord, worker: CallWorker, cmd: dict[str, Any]
    ) -> web.Response:
        answered = await self.server.command(record, worker, cmd)
        return _json(record.to_json(self.server.clock()), status=200 if answered else 202)

    async def health(self, request: web.Request) -> web.Response:
        self.server.expire()
        registry = self.server.registry
        return _json(
            {
                "status": "ok",
                "calls": len(registry.all()),
                "running": registry.running_count(),
                "maxCalls": self.server.config.max_calls,
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        from sip2rtmp.server import metrics

        body, content_type = metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def openapi(self, request: web.Request) -> web.Response:
        from sip2rtmp.server.openapi import document

        return _json(document())


def _json(value: object, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=_dumps)


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


async def _body(request: web.Request) -> object:
    """The JSON body; 413 beyond MAX_BODY (aiohttp's own limit), 400 for anything not JSON."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, f"the body exceeds {MAX_BODY} bytes")
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not JSON", "body") from None


async def _object(request: web.Request, *, empty_ok: bool = False) -> dict[str, Any]:
    body = await _body(request)
    if body is None and empty_ok:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", "body")
    return body


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as a JSON body naming the reason; a bug as a 500 that quotes nothing."""
    try:
        return await handler(request)
    except ApiError as error:
        body: dict[str, Any] = {"error": error.reason}
        if error.field is not None:
            body["field"] = error.field
        return _json(body, status=error.status)
    except web.HTTPRequestEntityTooLarge:
        return _json({"error": f"the body exceeds {MAX_BODY} bytes"}, status=413)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _json({"error": error.reason}, status=error.status)
    except Exception:
        log.exception("internal error on %s", request.path)
        return _json({"error": "internal error"}, status=500)


def _auth_middleware(config: ServerConfig) -> Callable[..., Awaitable[web.StreamResponse]]:
    token = config.token.reveal().encode() if config.token else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        """A bearer token (RFC 6750 §2.1) on every route but /health, compared in constant
        time so the answer's timing tells nothing of it."""
        if token is None or request.path == "/health":
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "replace"), token
        ):
            response = _json({"error": "a valid bearer token is required"}, status=401)
            response.headers["WWW-Authenticate"] = 'Bearer realm="sip2rtmp"'
            return response
        return await handler(request)

    return auth
