"""PostgreSQL from Debian's packages, as a private cluster on a loopback port.

Installed with ``apt-get install postgresql`` when no server binaries are there; we never touch the
system's own cluster: ``initdb`` makes a private data folder, and ``postgres -D DATA -p PORT`` runs
it directly (no ``pg_ctl``, so the pid we record is the postmaster's). The superuser ``postgres``
may log in only over the private Unix socket; the application user (``alpr`` by default) owns the
database ``alpr`` and logs in over TCP with a password, as the backend will in production.

TimescaleDB: used when its extension is installed for this PostgreSQL major version (the install
tries Debian's package); Debian 12 has none, so ``status`` then says the backend uses PostgreSQL's
native declarative partitioning instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .svc_base import LOOPBACK, Say, Service, ServiceError, ensure_debian_packages


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian: /usr/lib/postgresql/<major>/bin)."""
    configured = os.environ.get("ALPR_TOPO_POSTGRES_BIN")
    if configured:
        return Path(configured)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


def major(bindir: Path) -> str:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True).stdout
    return out.split()[-1].split(".")[0]


def timescaledb_available(bindir: Path) -> bool:
    """Whether the TimescaleDB extension is installed for this server (its control file is there)."""
    share = subprocess.run([str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True).stdout.strip() \
        if (bindir / "pg_config").exists() else f"/usr/share/postgresql/{major(bindir)}"
    return Path(share, "extension", "timescaledb.control").exists()


class Postgres(Service):
    name = "postgres"
    title = "PostgreSQL"
    version = "debian"  # whatever Debian's postgresql package brings; the major version is in `status`
    ports = {"port": 5433}
    settings = {"user": "alpr", "password": "alpr", "db": "alpr"}
    stop_signal = signal.SIGINT  # fast shutdown: SIGTERM would wait for every client to disconnect
    signal_group = False  # only the postmaster; it stops its own backends
    start_timeout_s = 60.0

    @property
    def socket_dir(self) -> Path:
        return self.dir / "run"

    def bindir(self) -> Path:
        found = bin_dir()
        if found is None or not (found / "initdb").exists():
            raise ServiceError("PostgreSQL server binaries not found: run `alpr-topo services install postgres` as root "
                               "(apt-get install postgresql) or set ALPR_TOPO_POSTGRES_BIN to a bin folder with "
                               "postgres and initdb")
        return found

    def install(self, say: Say) -> None:
        if bin_dir() is None or not (bin_dir() / "initdb").exists():  # type: ignore[operator]
            ensure_debian_packages(["postgresql", "postgresql-contrib"], "PostgreSQL", say)
        bindir = self.bindir()
        version = major(bindir)
        if not timescaledb_available(bindir):
            candidates = [f"postgresql-{version}-timescaledb", f"timescaledb-2-postgresql-{version}"]
            for package in candidates:
                known = subprocess.run(["apt-cache", "show", package], capture_output=True, text=True) \
                    if shutil.which("apt-cache") else None
                if known is not None and known.returncode == 0 and known.stdout.strip():
                    ensure_debian_packages([package], "TimescaleDB", say)
                    break
            else:
                say(f"no TimescaleDB package for PostgreSQL {version} in the configured apt sources: the backend "
                    "uses native partitioning")
        say(f"PostgreSQL {version} at {bindir}")

    def notes(self) -> dict[str, Any]:
        bindir = bin_dir()
        if bindir is None or not (bindir / "postgres").exists():
            return {}
        timescale = timescaledb_available(bindir)
        return {"server": f"PostgreSQL {major(bindir)} (Debian)", "timescaledb": timescale,
                "partitioning": "timescaledb hypertables" if timescale else "native declarative partitioning"}

    def prepare(self, cfg: dict[str, Any], say: Say) -> None:
        bindir = self.bindir()
        self.mkdir(self.socket_dir)
        pgdata = self.data_dir / "pgdata"
        if not (pgdata / "PG_VERSION").exists():
            say("initdb: a new private cluster")
            self.mkdir(pgdata)
            self.run_tool([str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "-E", "UTF8", "--no-locale",
                           "--auth-local=trust", "--auth-host=scram-sha-256"], "initdb")

    def command(self, cfg: dict[str, Any]) -> list[str]:
        bindir = self.bindir()
        cmd = [str(bindir / "postgres"), "-D", str(self.data_dir / "pgdata"), "-p", str(cfg["ports"]["port"]),
               "-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={self.socket_dir}",
               "-c", "max_connections=200", "-c", "logging_collector=off"]
        if timescaledb_available(bindir):
            cmd += ["-c", "shared_preload_libraries=timescaledb", "-c", "timescaledb.telemetry_level=off"]
        return cmd

    def environment(self, cfg: dict[str, Any]) -> dict[str, str]:
        return {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}

    def probe(self, cfg: dict[str, Any]) -> None:
        result = subprocess.run([str(self.bindir() / "pg_isready"), "-h", LOOPBACK, "-p", str(cfg["ports"]["port"]),
                                 "-d", "postgres", "-t", "2"], capture_output=True, text=True)
        if result.returncode != 0:
            raise ConnectionError(result.stdout.strip() or "pg_isready failed")

    def psql(self, cfg: dict[str, Any], sql: str, db: str = "postgres") -> str:
        """Run SQL as the superuser over the private socket (trust there, never over TCP)."""
        result = subprocess.run([str(self.bindir() / "psql"), "-h", str(self.socket_dir), "-p", str(cfg["ports"]["port"]),
                                 "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(f"psql: {result.stderr.strip()}")
        return result.stdout

    def after_ready(self, cfg: dict[str, Any], say: Say) -> None:
        """The application user and database (idempotent, so changed credentials take effect on start)."""
        s = cfg["settings"]
        user, password, db = s["user"], s["password"], s["db"]
        ident, literal = '"' + user.replace('"', '""') + '"', "'" + password.replace("'", "''") + "'"
        exists = self.psql(cfg, f"SELECT 1 FROM pg_roles WHERE rolname = '{user.replace(chr(39), '')}'").strip()
        verb = "ALTER" if exists else "CREATE"
        self.psql(cfg, f"{verb} ROLE {ident} LOGIN CREATEDB PASSWORD {literal}")
        if not self.psql(cfg, f"SELECT 1 FROM pg_database WHERE datname = '{db.replace(chr(39), '')}'").strip():
            say(f"creating database {db} owned by {user}")
            self.psql(cfg, f'CREATE DATABASE "{db}" OWNER {ident}')
        if timescaledb_available(self.bindir()):
            self.psql(cfg, "CREATE EXTENSION IF NOT EXISTS timescaledb", db=db)

    def connection(self, cfg: dict[str, Any]) -> dict[str, Any]:
        s, port = cfg["settings"], cfg["ports"]["port"]
        dsn = f"postgresql://{quote(s['user'], safe='')}:{quote(s['password'], safe='')}@{LOOPBACK}:{port}/{s['db']}"
        return {"dsn": dsn, "host": LOOPBACK,
                "port": port, "user": s["user"], "password": s["password"], "database": s["db"],
                "timescaledb": timescaledb_available(self.bindir())}
