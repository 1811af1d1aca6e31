"""Shared fixtures: run real topologies as `alpr-topo up` subprocesses and talk to them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from services_fixtures import services  # noqa: F401  (session fixture: local Kafka, PostgreSQL, MinIO, ...)

TESTS = Path(__file__).resolve().parent
SHARED = TESTS.parent.parent / "shared"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Test modules that need the backend servers run last, so that tools/run-tests.sh can
    install the servers in the background meanwhile (the first install builds MinIO: minutes).
    The ``services`` fixture waits for that install (a file lock per server)."""
    needs = {item.module for item in items if "services" in getattr(item, "fixturenames", ())}
    items.sort(key=lambda item: item.module in needs)


def shm_segments(prefix: str = "alpr.") -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))


class Run:
    """One `alpr-topo up` in a subprocess, with helpers to query and stop it."""

    def __init__(self, topology: Path, env: dict[str, str], args: list[str]) -> None:
        self.topology = topology
        self.env = env
        self.log_path = topology.with_suffix(".log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "alpr_topo.tools.cli", "up", str(topology), *args],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=topology.parent,
        )

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "alpr_topo.tools.cli", *args], env=self.env,
                                capture_output=True, text=True, timeout=timeout, cwd=self.topology.parent)
        if check and result.returncode != 0:
            raise AssertionError(f"alpr-topo {' '.join(args)} failed: {result.stderr}\n--- up log:\n{self.output()}")
        return result

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json").stdout)

    def stage_rows(self, stage: str) -> list[dict[str, Any]]:
        return [row for row in self.status()["stages"] if row["stage"] == stage]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"run ended while waiting for {what}:\n{self.output()}")
            try:
                if condition():
                    return
            except (AssertionError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output()}")

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            raise AssertionError(f"run did not end within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture
def runtime_dir() -> Any:
    """A short runtime folder (ipc:// paths are limited to about 100 bytes)."""
    path = tempfile.mkdtemp(prefix="at-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def run_env(runtime_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env["ALPR_TOPO_RUNTIME_DIR"] = runtime_dir
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(TESTS), env.get("PYTHONPATH", "")] if p)
    return env


@pytest.fixture
def start_run(tmp_path: Path, run_env: dict[str, str]) -> Any:
    """Start a topology given as YAML text; every run is stopped at the end of the test."""
    runs: list[Run] = []

    def start(yaml_text: str, *args: str, name: str = "topology.yaml") -> Run:
        path = tmp_path / name
        path.write_text(yaml_text)
        run = Run(path, run_env, list(args))
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def free_port_range(count: int, addresses: tuple[str, ...] = ("127.0.0.1", "127.0.0.2")) -> int:
    """A base port whose next ``count`` ports are free on every address (below the ephemeral
    range, so outgoing connections of other programs do not take them meanwhile)."""
    import random
    import socket

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 30000 - count)
        try:
            for port in range(base, base + count):
                for address in addresses:
                    with socket.socket() as s:
                        s.bind((address, port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} free ports found")
