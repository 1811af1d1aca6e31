"""The session fixture ``services``: real local backend servers from ``alpr-topo services``.

Loaded by tests/conftest.py. A test asks for what it needs through attributes, and the server
behind each one is started on first use (installed first if ``alpr-topo services install`` has not
run, which can take minutes):

    def test_x(services):
        producer = Producer({"bootstrap.servers": services.kafka_bootstrap})
        ...

Servers that were already running when the session began (``alpr-topo services up`` in another
terminal) are reused and left running; those the fixture started are stopped at the end of the
session. A test may stop a server for an outage (``services.stop("kafka")`` or the CLI) and start
it again (``services.start("kafka")``); any later attribute access starts it again if needed.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from alpr_topo.tools import services as svc


def _progress(name: str):
    def say(message: str) -> None:
        print(f"[services:{name}] {message}")
    return say


class Services:
    """Connection details of the local servers; each is started on first use."""

    def __init__(self) -> None:
        self.started: set[str] = set()  # started by this session, stopped at its end
        self.reused: set[str] = set()  # running before this session first needed them: left running
        self._objects = {name: svc.get(name) for name in svc.SERVICES}  # kept, so exited children are reaped

    def ensure(self, *names: str) -> dict[str, dict[str, Any]]:
        """Start those of ``names`` that are not running; their connection details."""
        wanted = svc.resolve(list(names))
        for name in wanted:
            if self._objects[name].running():
                if name not in self.started:
                    self.reused.add(name)
            elif name not in self.reused:
                self.started.add(name)
        return svc.up(wanted, say_for=_progress)

    def connection(self, name: str) -> dict[str, Any]:
        return self.ensure(name)[name]

    def start(self, name: str) -> dict[str, Any]:
        return self.connection(name)

    def stop(self, name: str) -> bool:
        """Stop a server (an outage); the next use starts it again."""
        return bool(svc.down([name], say_for=_progress))

    def pid(self, name: str) -> int | None:
        return self._objects[name].pid()

    @property
    def kafka_bootstrap(self) -> str:
        return self.connection("kafka")["bootstrap_servers"]

    @property
    def registry_url(self) -> str:
        """The Confluent-compatible API base (``.../apis/ccompat/v7``), for SchemaRegistryClient."""
        return self.connection("registry")["url"]

    @property
    def postgres_dsn(self) -> str:
        return self.connection("postgres")["dsn"]

    @property
    def minio(self) -> dict[str, Any]:
        """endpoint (http URL), host (host:port for the ``minio`` client), access_key, secret_key, region."""
        return self.connection("minio")

    @property
    def s3_endpoint(self) -> str:
        return self.minio["endpoint"]

    @property
    def opensearch_url(self) -> str:
        return self.connection("opensearch")["url"]

    @property
    def env(self) -> dict[str, str]:
        """ALPR_KAFKA, ALPR_POSTGRES_DSN, ... for the servers running now (for topology subprocesses)."""
        return svc.env_vars(svc.connections())

    def close(self) -> None:
        if self.started:
            svc.down(sorted(self.started), say_for=_progress)
        self.started.clear()


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """Local Kafka, PostgreSQL, MinIO, OpenSearch and schema registry, started on first use."""
    s = Services()
    try:
        yield s
    finally:
        s.close()
