"""Where a run keeps its sockets, specs and logs, and how the CLI finds running supervisors.

A run is named by its topology's ``name``; everything lives in ``<runtime dir>/<name>/``. The
runtime dir is ``$ALPR_TOPO_RUNTIME_DIR`` or ``/tmp/alpr-topo-<uid>`` (short, because ``ipc://``
paths are limited to about 100 bytes).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

RUNTIME_ENV = "ALPR_TOPO_RUNTIME_DIR"


def runtime_dir() -> Path:
    return Path(os.environ.get(RUNTIME_ENV) or f"/tmp/alpr-topo-{os.getuid()}")


@dataclass(frozen=True)
class RunDir:
    name: str

    @property
    def path(self) -> Path:
        return runtime_dir() / self.name

    @property
    def control(self) -> str:
        return f"ipc://{self.path}/control"

    @property
    def api(self) -> str:
        return f"ipc://{self.path}/api"

    @property
    def info_file(self) -> Path:
        return self.path / "supervisor.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def specs(self) -> Path:
        return self.path / "specs"

    @property
    def taps(self) -> Path:
        """Preview JPEGs and latest events written by the workers for the status page (core/taps.py)."""
        return self.path / "taps"

    @property
    def webui_file(self) -> Path:
        """Where the status page's address and token are kept while it runs (mode 0600)."""
        return self.path / "webui.json"

    def read_info(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.info_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def live_pid(self) -> int | None:
        """The supervisor's pid if it is still running."""
        info = self.read_info()
        if not info:
            return None
        pid = int(info.get("pid", 0))
        try:
            proc = psutil.Process(pid)
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return pid
        except psutil.Error:
            pass
        return None

    def prepare(self, info: dict[str, Any]) -> None:
        """Create a fresh run folder (removing what a dead run left) and record the supervisor."""
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        for folder in (self.path, self.logs, self.specs):
            folder.mkdir(parents=True, exist_ok=True)
        self.info_file.write_text(json.dumps(info))

    def remove(self) -> None:
        """Remove sockets and specs; keep the logs for `alpr-topo logs` after the run."""
        for child in self.path.iterdir() if self.path.exists() else []:
            if child.name == "logs":
                continue
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def live_runs() -> list[RunDir]:
    """Every run whose supervisor is alive."""
    base = runtime_dir()
    if not base.exists():
        return []
    return [RunDir(p.name) for p in sorted(base.iterdir()) if p.is_dir() and RunDir(p.name).live_pid()]


class ApiError(Exception):
    """The supervisor refused a request (its message) or did not answer."""


def control_request(endpoint: str, body: dict[str, Any], timeout_s: float = 10.0,
                    who: str = "the supervisor") -> dict[str, Any]:
    """One request to a supervisor's control API (the CLI and the status page both use it).

    A fresh REQ socket per request: ZeroMQ sockets are not thread-safe, and a REQ socket that
    timed out cannot be reused. Returns the reply (with its ``ok``); raises :class:`ApiError`.
    """
    import msgpack
    import zmq

    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
    sock.connect(endpoint)
    try:
        sock.send(msgpack.packb(body))
        reply = msgpack.unpackb(sock.recv())
    except zmq.Again as exc:
        raise ApiError(f"{who} did not answer within {timeout_s:.0f} s") from exc
    finally:
        sock.close()
    if not reply.get("ok"):
        raise ApiError(reply.get("error", "request failed"))
    return reply
