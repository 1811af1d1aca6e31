"""``alpr-topo services`` against the real servers: each one starts, is ready, does one real
operation through its usual client library, shows in ``status``, and ``down`` stops it without
leaving a process behind.

The servers are installed by ``alpr-topo services install`` (tools/run-tests.sh runs it before
pytest); on a machine where that has not happened, the first test installs them, which takes
minutes (the MinIO Go build most of all).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import psutil
import pytest

from alpr_topo.tools import services as svc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

NAMES = list(svc.SERVICES)


def cli(*args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "alpr_topo.tools.cli", "services", *args], capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"alpr-topo services {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    alive = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return alive


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# -- one real operation per server ----------------------------------------------------------------


def kafka_round_trip(conn: dict[str, Any]) -> None:
    """Create a topic, produce one message with acks=all, read it back with a consumer group."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = conn["bootstrap_servers"]
    topic = f"svc-test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept: the futures die with their client
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    delivered: list[Any] = []
    producer.produce(topic, key=b"cam1", value=b"plate ABC123", on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(30) == 0 and delivered == [None]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                assert (msg.key(), msg.value()) == (b"cam1", b"plate ABC123")
                return
        raise AssertionError(f"the message produced to {topic} was not consumed within 60 s")
    finally:
        consumer.close()


def postgres_round_trip(conn: dict[str, Any]) -> None:
    """Create a table, insert, select, over TCP with the application user's password."""
    import psycopg

    table = f"svc_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conn["dsn"], connect_timeout=10) as db:
        db.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, plate text NOT NULL, seen timestamptz DEFAULT now())")
        db.execute(f"INSERT INTO {table} (id, plate) VALUES (%s, %s), (%s, %s)", (1, "ABC123", 2, "XYZ789"))
        rows = db.execute(f"SELECT id, plate FROM {table} ORDER BY id").fetchall()
        assert rows == [(1, "ABC123"), (2, "XYZ789")]
        assert db.execute("SELECT current_user, current_database()").fetchone() == (conn["user"], conn["database"])
        db.execute(f"DROP TABLE {table}")


def minio_round_trip(conn: dict[str, Any]) -> None:
    """Make a bucket, put an object, get it back with the ``minio`` client."""
    import io

    from minio import Minio

    client = Minio(conn["host"], access_key=conn["access_key"], secret_key=conn["secret_key"], secure=False,
                   region=conn["region"])
    bucket = f"svc-test-{uuid.uuid4().hex[:8]}"
    client.make_bucket(bucket)
    payload = os.urandom(200_000)
    client.put_object(bucket, "crops/cam1/1.jpg", io.BytesIO(payload), len(payload), content_type="image/jpeg")
    response = client.get_object(bucket, "crops/cam1/1.jpg")
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()
    assert [o.object_name for o in client.list_objects(bucket, prefix="crops/", recursive=True)] == ["crops/cam1/1.jpg"]


def opensearch_round_trip(conn: dict[str, Any]) -> None:
    """Index a document and find it by a full-text search."""
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[conn["url"]], timeout=30)
    index = f"svc-test-{uuid.uuid4().hex[:8]}"
    client.index(index=index, id="e1", body={"plate": "ABC123", "camera_id": "cam1"}, refresh=True)
    hits = client.search(index=index, body={"query": {"match": {"plate": "ABC123"}}})["hits"]["hits"]
    assert [(h["_id"], h["_source"]["camera_id"]) for h in hits] == [("e1", "cam1")]
    client.indices.delete(index=index)


def registry_round_trip(conn: dict[str, Any]) -> None:
    """Register an Avro schema through the Confluent REST API and read it back by subject and by id
    (plain HTTP as Confluent's clients send it; confluent-kafka's registry client needs extra packages)."""
    from alpr_topo.tools.svc_base import http_json

    base, ctype = conn["url"], {"Content-Type": "application/vnd.schemaregistry.v1+json"}
    subject = f"svc-test-{uuid.uuid4().hex[:8]}-value"
    avro = {"type": "record", "name": "Plate", "namespace": "alpr",
            "fields": [{"name": "text", "type": "string"}, {"name": "confidence", "type": "float"}]}
    status, body = http_json(f"{base}/subjects/{subject}/versions", method="POST", body={"schema": json.dumps(avro)},
                             headers=ctype)
    assert status == 200 and isinstance(body.get("id"), int), (status, body)
    schema_id = body["id"]
    status, latest = http_json(f"{base}/subjects/{subject}/versions/latest")
    assert status == 200 and latest["id"] == schema_id and latest["version"] == 1, latest
    assert json.loads(latest["schema"]) == avro
    status, by_id = http_json(f"{base}/schemas/ids/{schema_id}")
    assert status == 200 and json.loads(by_id["schema"]) == avro
    # registering the same schema again returns the same id (what a restarted producer relies on)
    assert http_json(f"{base}/subjects/{subject}/versions", method="POST", body={"schema": json.dumps(avro)},
                     headers=ctype)[1]["id"] == schema_id
    assert subject in http_json(f"{base}/subjects")[1]


ROUND_TRIPS = {"kafka": kafka_round_trip, "postgres": postgres_round_trip, "minio": minio_round_trip,
               "opensearch": opensearch_round_trip, "registry": registry_round_trip}


# -- tests ----------------------------------------------------------------------------------------


def test_install_is_a_no_op_once_installed() -> None:
    """Everything installed (by run-tests.sh, or here on a fresh machine); a second install does nothing."""
    first = cli("install", timeout=1800)
    assert all(f"{n:<11} FAILED" not in first.stdout for n in NAMES), first.stdout
    started = time.monotonic()
    again = cli("install")
    assert time.monotonic() - started < 30
    for name in NAMES:
        assert f"{name:<11} already installed" in again.stdout, again.stdout


@pytest.mark.parametrize("name", NAMES)
def test_service_starts_answers_and_shows_in_status(services, name: str) -> None:
    conn = services.connection(name)
    ROUND_TRIPS[name](conn)
    row = json.loads(cli("status", "--json").stdout)["services"][name]
    assert row["running"] and row["installed"] and row["pid"] == services.pid(name)
    assert row["connection"] == conn
    assert psutil.Process(row["pid"]).is_running()


def test_postgres_reports_timescaledb_or_native_partitioning(services) -> None:
    conn = services.connection("postgres")
    row = svc.status(["postgres"])["postgres"]
    import psycopg

    with psycopg.connect(conn["dsn"]) as db:
        installed = db.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0]
    assert row["timescaledb"] is conn["timescaledb"] is bool(installed)
    assert row["partitioning"] == ("timescaledb hypertables" if installed else "native declarative partitioning")


def test_up_is_idempotent_and_env_and_services_json_report_connections(services) -> None:
    services.ensure("kafka", "minio")
    pid = services.pid("kafka")
    again = cli("up", "kafka", "minio")
    assert services.pid("kafka") == pid
    assert "kafka       ready  bootstrap_servers=" + services.kafka_bootstrap in again.stdout
    exports = dict(line.removeprefix("export ").split("=", 1) for line in cli("env").stdout.splitlines())
    assert exports["ALPR_KAFKA"] == services.kafka_bootstrap
    assert exports["ALPR_S3_ENDPOINT"] == services.s3_endpoint
    assert exports["MINIO_SECRET_KEY"].strip("'") == services.minio["secret_key"]
    written = json.loads((svc.services_dir() / "services.json").read_text())
    assert written["services"]["kafka"]["running"] is True
    assert written["services"]["kafka"]["bootstrap_servers"] == services.kafka_bootstrap
    assert written["env"]["ALPR_KAFKA"] == services.kafka_bootstrap


@pytest.mark.parametrize("name", NAMES)
def test_down_stops_the_server_and_leaves_no_process(services, name: str) -> None:
    conn = services.connection(name)
    row = svc.status([name])[name]
    pid, ports = row["pid"], row["ports"]
    assert group_alive(pid)
    out = cli("down", name).stdout
    assert f"{name:<11} stopped" in out
    assert group_alive(pid) == []
    assert not any(port_open(p) for p in ports.values())
    after = json.loads(cli("status", "--json", name).stdout)["services"][name]
    assert after["running"] is False and after["pid"] is None and "connection" not in after
    assert json.loads((svc.services_dir() / "services.json").read_text())["services"][name]["running"] is False
    assert "was not running" in cli("down", name).stdout
    # and it comes back on the same ports, with a new process
    assert services.connection(name) == conn
    assert services.pid(name) not in (None, pid)
    ROUND_TRIPS[name](conn)


def test_data_survives_a_restart(services) -> None:
    """A row written before `down` is there after `up` (the data folder persists); same for a Kafka message."""
    import psycopg

    dsn = services.postgres_dsn
    table = f"svc_keep_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn) as db:
        db.execute(f"CREATE TABLE {table} (plate text)")
        db.execute(f"INSERT INTO {table} VALUES ('KEEP01')")
    services.stop("postgres")
    with psycopg.connect(services.postgres_dsn) as db:
        assert db.execute(f"SELECT plate FROM {table}").fetchall() == [("KEEP01",)]
        db.execute(f"DROP TABLE {table}")


def test_a_port_in_use_is_a_clear_error(services) -> None:
    services.stop("minio")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = cli("up", "minio", env={"ALPR_TOPO_MINIO_PORT": str(port)}, check=False)
    assert result.returncode != 0
    assert f"port {port}" in result.stderr and "ALPR_TOPO_MINIO_PORT" in result.stderr
    assert not svc.get("minio").running()
    minio_round_trip(services.minio)


def test_unknown_service_is_refused() -> None:
    result = cli("up", "zookeeper", check=False)
    assert result.returncode != 0 and "unknown service zookeeper" in result.stderr
