"""The status page and ``/metrics`` of a run: a Starlette app served by uvicorn in a background
thread of the supervisor process (``alpr-topo up`` starts it; see docs/status-page.md).

Why it is built this way:

- **One control API.** The page never calls into the supervisor's objects: it sends the same
  msgpack requests over the same ``ipc://<run>/api`` socket as the CLI (``status``, ``swap``,
  ``restart``, ``stop``, ``start``, ``topology``, ``metrics``), from its own thread with its own
  sockets. A button and ``alpr-topo restart`` are the same request; the supervisor stays
  single-threaded.
- **Files for what is not state.** Logs, preview JPEGs and the latest plate events are files in
  the run folder, read here as ``alpr-topo logs`` reads them (core/logs.py, core/taps.py).
- **Security.** Binds 127.0.0.1 unless told otherwise; every request that changes something (POST)
  needs ``Authorization: Bearer <token>`` (generated at start and printed, or configured); reads
  need no token, so opening the bind address to a network opens the read-only views only. On a
  loopback bind the ``Host`` header must name the loopback address, so a web page elsewhere cannot
  reach the API through DNS rebinding.
- **Live updates** by server-sent events: one ``status`` snapshot a second per open page.
- **No build step**: plain HTML, CSS and JavaScript in ``core/static/``, shipped as package data.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .logs import log_files, stages_with_logs, tail_many
from .runs import ApiError, RunDir, control_request
from .taps import PREVIEW_INTERVAL_S, touch_wanted

log = logging.getLogger("alpr_topo.webui")

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_PORT = 8480
FALLBACK_PORTS = 20  # with the default port, try this many ports from it before giving up
STREAM_INTERVAL_S = 1.0
SWAP_TIMEOUT_S = 600.0
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class Api:
    """Requests to the supervisor's control API from any thread of the page (see
    :func:`~alpr_topo.core.runs.control_request`), replies without their ``ok``."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def request(self, body: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
        reply = control_request(self.endpoint, body, timeout_s)
        reply.pop("ok", None)
        return reply


def _json(body: Any, status_code: int = 200) -> Any:
    from starlette.responses import Response

    return Response(json.dumps(body, default=str), status_code=status_code, media_type="application/json")


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def create_app(run: RunDir, token: str, bind: str = "127.0.0.1", closing: threading.Event | None = None) -> Any:
    """The Starlette application of one run's status page."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from .metrics import render

    api = Api(run.api)
    closing = closing or threading.Event()
    order: list[str] = []  # stage names in topological order, for "the deepest stage's preview"

    async def call(body: dict[str, Any], timeout_s: float = 10.0) -> Any:
        try:
            return _json(await run_in_threadpool(api.request, body, timeout_s))
        except ApiError as exc:
            return _json({"error": str(exc)}, 409 if "did not answer" not in str(exc) else 504)

    def authorized(request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

    def refused() -> Response:
        return _json({"error": "this needs the token printed by `alpr-topo up` (Authorization: Bearer TOKEN)"}, 401)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def status(request: Request) -> Response:
        return await call({"cmd": "status"})

    async def topology(request: Request) -> Response:
        return await call({"cmd": "topology"})

    async def metrics(request: Request) -> Response:
        try:
            reply = await run_in_threadpool(api.request, {"cmd": "metrics"})
        except ApiError as exc:
            return Response(f"# supervisor did not answer: {exc}\n", status_code=503, media_type="text/plain")
        body, content_type = render(reply)
        return Response(body, media_type=content_type)

    async def stream(request: Request) -> Response:
        async def snapshots() -> Any:
            while not closing.is_set():
                try:
                    body: dict[str, Any] = await run_in_threadpool(api.request, {"cmd": "status"}, 5.0)
                except ApiError as exc:
                    body = {"error": str(exc)}
                yield f"event: status\ndata: {json.dumps(body, default=str)}\n\n"
                for _ in range(int(STREAM_INTERVAL_S / 0.1)):
                    if closing.is_set():
                        return
                    await asyncio.sleep(0.1)

        return StreamingResponse(snapshots(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def action(request: Request) -> Response:
        if not authorized(request):
            return refused()
        stage, verb = request.path_params["stage"], request.path_params["action"]
        if verb == "swap":
            try:
                body = await request.json()
            except ValueError:
                return _json({"error": "expected a JSON body {\"type\": ..., \"params\": {...}}"}, 400)
            if not isinstance(body, dict) or not isinstance(body.get("params", {}), dict):
                return _json({"error": "params must be a JSON object"}, 400)
            return await call({"cmd": "swap", "stage": stage, "type": body.get("type") or None,
                               "params": body.get("params") or {}}, SWAP_TIMEOUT_S)
        if verb in ("restart", "stop", "start"):
            return await call({"cmd": verb, "stage": stage})
        return _json({"error": f"unknown action {verb!r} (restart, stop, start, swap)"}, 404)

    async def check_token(request: Request) -> Response:
        return _json({"ok": True}) if authorized(request) else refused()

    async def logs(request: Request) -> Response:
        stage = request.path_params["stage"]
        try:
            lines = max(1, min(5000, int(request.query_params.get("lines", "200"))))
        except ValueError:
            return _json({"error": "lines must be a number"}, 400)
        files = log_files(run.logs, stage) if _FILE_NAME.match(stage) else []
        if not files:
            return _json({"error": f"no log files for '{stage}'"}, 404)
        text = await run_in_threadpool(tail_many, files, lines, len(files) > 1)
        return _json({"stage": stage, "files": [str(f) for f in files], "lines": text})

    async def log_index(request: Request) -> Response:
        return _json({"stages": stages_with_logs(run.logs) if run.logs.exists() else []})

    async def previews(request: Request) -> Response:
        touch_wanted(run.taps)  # the workers draw previews only while a page asks for them
        if not order:
            try:
                order.extend(s["name"] for s in (await run_in_threadpool(api.request, {"cmd": "topology"}))["stages"])
            except ApiError:
                pass
        rank = {name: i for i, name in enumerate(order)}
        now = time.time()
        cameras = []
        folder = run.taps / "preview"
        for camera_dir in sorted(folder.iterdir()) if folder.exists() else []:
            shots = [(p, p.stat().st_mtime) for p in camera_dir.glob("*.jpg")]
            if not shots:
                continue
            fresh = [s for s in shots if now - s[1] < 3 * PREVIEW_INTERVAL_S + 1] or shots
            path, mtime = max(fresh, key=lambda s: (rank.get(s[0].stem, -1), s[1]))
            cameras.append({"camera": camera_dir.name, "stage": path.stem, "age_s": round(now - mtime, 1),
                            "url": f"/api/preview/{camera_dir.name}/{path.name}?v={int(mtime * 1000)}"})
        return _json({"cameras": cameras})

    async def preview_image(request: Request) -> Response:
        camera, name = request.path_params["camera"], request.path_params["name"]
        path = run.taps / "preview" / camera / name
        if not (_FILE_NAME.match(camera) and _FILE_NAME.match(name) and path.is_file()):
            return _json({"error": "no such preview"}, 404)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        found: list[dict[str, Any]] = []
        folder = run.taps / "events"
        for path in folder.glob("*.json") if folder.exists() else []:
            try:
                found.extend(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # being replaced right now: the next poll gets it
        found.sort(key=lambda e: e.get("_seen", 0), reverse=True)
        for event in found:
            if event.get("_crop"):
                event["crop_url"] = f"/api/events/crop/{event['_crop']}"
        return _json({"events": found[:20]})

    async def crop(request: Request) -> Response:
        name = request.path_params["name"]
        path = run.taps / "events" / name
        if not (_FILE_NAME.match(name) and name.endswith(".jpg") and path.is_file()):
            return _json({"error": "no such crop"}, 404)
        return FileResponse(path, media_type="image/jpeg")

    routes = [
        Route("/", index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/metrics", metrics),
        Route("/api/status", status),
        Route("/api/topology", topology),
        Route("/api/stream", stream),
        Route("/api/token", check_token, methods=["POST"]),
        Route("/api/stages/{stage}/{action}", action, methods=["POST"]),
        Route("/api/logs", log_index),
        Route("/api/logs/{stage}", logs),
        Route("/api/preview", previews),
        Route("/api/preview/{camera}/{name}", preview_image),
        Route("/api/events", events),
        Route("/api/events/crop/{name}", crop),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = []
    if is_loopback(bind):
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=["localhost", "127.0.0.1", bind]))
    return Starlette(routes=routes, middleware=middleware)


def open_listener(bind: str, port: int | None, fallback: bool = False) -> socket.socket:
    """A listening socket: ``port`` (None: any free port), or with ``fallback`` the first free one
    of ``port .. port + FALLBACK_PORTS - 1``. Bound here, before any stage starts, so a port in use
    is a clear error and not a traceback in a thread."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    candidates = [0] if port is None else range(port, port + (FALLBACK_PORTS if fallback else 1))
    error: OSError | None = None
    for candidate in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind, candidate))
            sock.listen(128)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    span = f"ports {port}-{port + FALLBACK_PORTS - 1}" if fallback else f"port {port}"
    raise OSError(f"cannot serve the status page on {bind}, {span}: {error.strerror if error else 'no port'}")


class StatusServer:
    """uvicorn serving :func:`create_app` from a daemon thread of the supervisor process."""

    def __init__(self, run: RunDir, listener: socket.socket, token: str | None = None) -> None:
        import uvicorn

        self.run = run
        self.listener = listener
        self.token = token or secrets.token_urlsafe(24)
        self.bind, self.port = listener.getsockname()[:2]
        self.closing = threading.Event()
        config = uvicorn.Config(create_app(run, self.token, self.bind, self.closing), log_config=None,
                                access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # not "Started server process" in supervisor.log
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [listener]},
                                       name="status-page", daemon=True)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self.thread.start()
        # The address and token for tools and tests; only the owner may read the token. Written
        # beside and renamed into place: a reader never sees the file empty or half written.
        part = self.run.webui_file.with_name(self.run.webui_file.name + ".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"url": self.url, "bind": self.bind, "port": self.port, "token": self.token}, fh)
        os.replace(part, self.run.webui_file)

    def stop(self) -> None:
        self.closing.set()  # ends the server-sent event streams
        self.server.should_exit = True
        self.thread.join(10)
        self.listener.close()


def read_webui(run: RunDir) -> dict[str, Any] | None:
    """The running status page's address and token (None when the run serves none)."""
    try:
        return json.loads(run.webui_file.read_text())
    except (OSError, ValueError):
        return None
