"""``alpr-topo services``: real local backend servers for development and CI, without Docker.

Kafka (KRaft), PostgreSQL, MinIO, OpenSearch and a Confluent-compatible schema registry (Apicurio)
are installed once into a cache folder (``$ALPR_TOPO_SERVICES_DIR``, else
``~/.cache/alpr-topo/services``; ``/var/cache/alpr-topo/services`` as root) and run as plain
processes on 127.0.0.1. How each is installed and run is in its own module (``svc_kafka.py``, ...);
the shared start/stop/readiness logic is in ``svc_base.py``. See docs/services.md.

Besides the CLI, the functions here (``up``, ``down``, ``install``, ``status``, ``connections``)
are what the test fixture ``services`` (tests/services_fixtures.py) calls.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import click

from .svc_base import Say, Service, ServiceError, run_in_threads, services_dir
from .svc_kafka import Kafka
from .svc_minio import MinIO
from .svc_opensearch import OpenSearch
from .svc_postgres import Postgres
from .svc_registry import Registry

__all__ = ["SERVICES", "ServiceError", "get", "install", "up", "down", "status", "connections", "env_vars",
           "write_connections", "services_command"]

# Start order for `up` with no names; MinIO first for `install`, whose Go build is the longest.
SERVICES: dict[str, type[Service]] = {"kafka": Kafka, "postgres": Postgres, "minio": MinIO,
                                      "opensearch": OpenSearch, "registry": Registry}
INSTALL_ORDER = ["minio", "registry", "kafka", "opensearch", "postgres"]
CONNECTIONS_FILE = "services.json"

_print_lock = threading.Lock()


def get(name: str, root: Path | None = None) -> Service:
    if name not in SERVICES:
        raise ServiceError(f"unknown service '{name}' (known: {', '.join(SERVICES)})")
    return SERVICES[name](root)


def resolve(names: tuple[str, ...] | list[str]) -> list[str]:
    """The names asked for, in start order (none: all of them)."""
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise ServiceError(f"unknown service {', '.join(unknown)} (known: {', '.join(SERVICES)})")
    return [n for n in SERVICES if n in names] if names else list(SERVICES)


def stderr_say(name: str) -> Say:
    """Progress lines, one per call, prefixed with the service (installs run on several threads)."""

    def say(message: str) -> None:
        with _print_lock:
            click.echo(f"[{name}] {message}", err=True)

    return say


def install(names: list[str], root: Path | None = None, jobs: int = 2,
            say_for: Callable[[str], Say] = stderr_say) -> dict[str, dict[str, Any]]:
    """Install the services (those already installed are skipped). Two at a time by default: the
    MinIO Go build uses the CPU while the Maven downloads of the others wait on the network.
    Returns per service {"installed_now": bool, "seconds": float, "error": str | None}."""
    report: dict[str, dict[str, Any]] = {}

    def job(name: str) -> Callable[[], None]:
        def run() -> None:
            started = time.monotonic()
            try:
                now = get(name, root).ensure_installed(say_for(name))
                report[name] = {"installed_now": now, "seconds": round(time.monotonic() - started, 1), "error": None}
            except BaseException as exc:
                report[name] = {"installed_now": False, "seconds": round(time.monotonic() - started, 1),
                                "error": str(exc)}
                raise
        return run

    ordered = [n for n in INSTALL_ORDER if n in names]
    run_in_threads({n: job(n) for n in ordered}, workers=jobs)
    return report


def up(names: list[str], root: Path | None = None, port_overrides: dict[str, dict[str, int]] | None = None,
       timeout_s: float | None = None, say_for: Callable[[str], Say] = stderr_say) -> dict[str, dict[str, Any]]:
    """Start the services that are not running (installing them first if needed), then wait until
    each is ready. Returns their connection details; raises ServiceError naming every failure."""
    services = [get(n, root) for n in names]
    errors: dict[str, str] = {}
    for svc in services:
        try:
            svc.start(say_for(svc.name), (port_overrides or {}).get(svc.name))
        except ServiceError as exc:
            errors[svc.name] = str(exc)
    result: dict[str, dict[str, Any]] = {}
    for svc in services:
        if svc.name in errors:
            continue
        try:
            result[svc.name] = svc.wait_ready(say_for(svc.name), timeout_s)
        except ServiceError as exc:
            errors[svc.name] = str(exc)
    write_connections(root)
    if errors:
        raise ServiceError("\n".join(f"{name}: {message}" for name, message in errors.items()))
    return result


def down(names: list[str], root: Path | None = None, wipe: bool = False,
         say_for: Callable[[str], Say] = stderr_say) -> list[str]:
    """Stop the services (in reverse start order); returns those that were running."""
    stopped = []
    try:
        for name in reversed(names):
            svc = get(name, root)
            if svc.stop(say_for(name)):
                stopped.append(name)
            if wipe:
                svc.wipe()
                say_for(name)(f"deleted {svc.data_dir}")
    finally:
        write_connections(root)
    return stopped


def status(names: list[str] | None = None, root: Path | None = None) -> dict[str, dict[str, Any]]:
    return {n: get(n, root).status() for n in (names or list(SERVICES))}


def connections(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Connection details of the services that are running now."""
    return {name: row["connection"] for name, row in status(None, root).items() if row.get("connection")}


def env_vars(conns: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The environment variables topologies and tests read (``${ALPR_KAFKA}`` in a topology YAML)."""
    env: dict[str, str] = {}
    if "kafka" in conns:
        env["ALPR_KAFKA"] = conns["kafka"]["bootstrap_servers"]
    if "registry" in conns:
        env["ALPR_SCHEMA_REGISTRY"] = conns["registry"]["url"]
    if "postgres" in conns:
        env["ALPR_POSTGRES_DSN"] = conns["postgres"]["dsn"]
    if "minio" in conns:
        m = conns["minio"]
        env.update({"ALPR_S3_ENDPOINT": m["endpoint"], "ALPR_S3_ACCESS_KEY": m["access_key"],
                    "ALPR_S3_SECRET_KEY": m["secret_key"], "MINIO_ACCESS_KEY": m["access_key"],
                    "MINIO_SECRET_KEY": m["secret_key"]})
    if "opensearch" in conns:
        env["ALPR_OPENSEARCH"] = conns["opensearch"]["url"]
    return env


def write_connections(root: Path | None = None) -> Path:
    """services.json in the cache folder: what is running and how to reach it, for tests and scripts."""
    base = (root or services_dir()).absolute()
    base.mkdir(parents=True, exist_ok=True)
    rows = status(None, base)
    conns = {n: r["connection"] for n, r in rows.items() if r.get("connection")}
    body = {"services_dir": str(base), "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "services": {n: {"running": r["running"], **r.get("connection", {})} for n, r in rows.items()},
            "env": env_vars(conns)}
    path = base / CONNECTIONS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.chmod(tmp, 0o600)  # it holds the dev credentials
    tmp.replace(path)
    return path


# -- CLI ------------------------------------------------------------------------------------------


def _fail(exc: ServiceError) -> None:
    raise click.ClickException(str(exc))


def _describe(name: str, conn: dict[str, Any]) -> str:
    keys = {"kafka": ["bootstrap_servers"], "postgres": ["dsn"], "minio": ["endpoint", "access_key", "secret_key"],
            "opensearch": ["url"], "registry": ["url"]}[name]
    return "  ".join(f"{k}={conn[k]}" for k in keys)


def _parse_ports(values: tuple[str, ...]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for value in values:
        name, _, port = value.partition("=")
        service, _, key = name.partition(".")
        if service not in SERVICES or not port.isdigit():
            raise click.BadParameter(f"expected SERVICE=PORT or SERVICE.KEY=PORT (e.g. kafka=19092, "
                                     f"minio.console_port=19001), got {value!r}", param_hint="--port")
        out.setdefault(service, {})[f"{key}_port" if key and not key.endswith("port") else (key or "port")] = int(port)
    return out


@click.group("services")
def services_command() -> None:
    """Local Kafka, PostgreSQL, MinIO, OpenSearch and schema registry for development and CI.

    Real servers as plain processes on 127.0.0.1 (no Docker), installed once into
    $ALPR_TOPO_SERVICES_DIR (default ~/.cache/alpr-topo/services). NAME is one of kafka, postgres,
    minio, opensearch, registry; none means all. See docs/services.md.
    """


@services_command.command("install")
@click.argument("names", nargs=-1)
@click.option("--jobs", type=click.IntRange(1, 8), default=2, show_default=True, help="installs running at once")
def install_cmd(names: tuple[str, ...], jobs: int) -> None:
    """Install the services once (downloads and builds; a no-op for those already installed)."""
    try:
        chosen = resolve(names)
    except ServiceError as exc:
        _fail(exc)
    started = time.monotonic()
    report = install(chosen, jobs=jobs)
    for name in chosen:
        row = report.get(name, {"error": "not run", "seconds": 0, "installed_now": False})
        state = f"FAILED: {row['error']}" if row["error"] else \
            (f"installed in {row['seconds']:.0f} s" if row["installed_now"] else "already installed")
        click.echo(f"{name:<11} {state}")
    click.echo(f"services folder: {services_dir()}  ({time.monotonic() - started:.0f} s)")
    if any(r["error"] for r in report.values()):
        sys.exit(1)


@services_command.command("up")
@click.argument("names", nargs=-1)
@click.option("--port", "ports", multiple=True, metavar="SERVICE=PORT",
              help="port for this start, e.g. kafka=19092 or kafka.controller=19093 (default: "
                   "ALPR_TOPO_<SERVICE>_PORT, else the standard one)")
@click.option("--timeout", type=float, default=None, help="seconds to wait for each server to be ready")
def up_cmd(names: tuple[str, ...], ports: tuple[str, ...], timeout: float | None) -> None:
    """Start the services (installing them first if needed) and wait until they answer."""
    try:
        chosen = resolve(names)
        conns = up(chosen, port_overrides=_parse_ports(ports), timeout_s=timeout)
    except ServiceError as exc:
        _fail(exc)
    for name in chosen:
        click.echo(f"{name:<11} ready  {_describe(name, conns[name])}")
    click.echo(f"connection details: {services_dir() / CONNECTIONS_FILE}  (shell: eval \"$(alpr-topo services env)\")")


@services_command.command("down")
@click.argument("names", nargs=-1)
@click.option("--wipe", is_flag=True, help="also delete their data (the next start begins empty)")
def down_cmd(names: tuple[str, ...], wipe: bool) -> None:
    """Stop the services (all when no NAME is given); data and installs stay unless --wipe."""
    try:
        chosen = resolve(names)
        stopped = down(chosen, wipe=wipe)
    except ServiceError as exc:
        _fail(exc)
    for name in chosen:
        click.echo(f"{name:<11} {'stopped' if name in stopped else 'was not running'}")


@services_command.command("status")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="one JSON object: per service installed, running, pid, ports, connection")
def status_cmd(names: tuple[str, ...], as_json: bool) -> None:
    """Show which services are installed and running, with their ports and connection details."""
    try:
        rows = status(resolve(names))
    except ServiceError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({"services_dir": str(services_dir()), "services": rows}, indent=2))
        return
    for name, row in rows.items():
        state = "running" if row["running"] else ("stopped" if row["installed"] else "not installed")
        line = f"{name:<11} {state:<14}"
        if row["running"]:
            line += f"pid {row['pid']:<8} {_describe(name, row['connection'])}"
        extra = [f"{k}: {row[k]}" for k in ("server", "partitioning") if k in row]
        click.echo(line.rstrip() + (f"\n{'':<11} {'; '.join(extra)}" if extra else ""))
    click.echo(f"services folder: {services_dir()}")


@services_command.command("env")
@click.argument("names", nargs=-1)
def env_cmd(names: tuple[str, ...]) -> None:
    """Print `export NAME=value` lines for the running services (eval "$(alpr-topo services env)")."""
    try:
        chosen = resolve(names)
    except ServiceError as exc:
        _fail(exc)
    conns = {n: c for n, c in connections().items() if n in chosen}
    for key, value in env_vars(conns).items():
        click.echo(f"export {key}={shlex.quote(str(value))}")
    missing = [n for n in chosen if n not in conns]
    if missing and names:
        click.echo(f"# not running: {', '.join(missing)}", err=True)
