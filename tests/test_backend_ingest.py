"""Backend ingest against real servers (the ``services`` fixture): Kafka -> PostgreSQL / OpenSearch.

Every test uses its own topics, consumer groups, PostgreSQL schema and index prefix, so tests do
not see each other's data. Sinks run in-process with StageHarness (``produce`` driven by hand) or
as a whole ``alpr-topo up`` of topologies/backend.yaml.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from alpr_topo.backend import avro_wire
from alpr_topo.core.testing import StageHarness
from alpr_topo.stages import events
from alpr_topo.stages.sink_opensearch import plate_grams

pytest.importorskip("confluent_kafka")
pytest.importorskip("psycopg")
pytest.importorskip("opensearchpy")

REPO = Path(__file__).resolve().parent.parent
BASE_MS = 1_763_800_000_000  # 2025-11-22


class Setup:
    """Names private to one test, and helpers to produce and inspect."""

    def __init__(self, services: Any, partitions: int = 3) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        self.services = services
        self.bootstrap = services.kafka_bootstrap
        tag = uuid.uuid4().hex[:10]
        self.topic, self.updates = f"ingest-{tag}", f"ingest-{tag}-updates"
        self.schema = f"test_{tag}"
        self.prefix = f"test-{tag}"
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for f in admin.create_topics([NewTopic(t, partitions, 1) for t in (self.topic, self.updates)]).values():
            f.result(30)

    def produce(self, records: list[dict[str, Any]], raw: list[bytes] = ()) -> None:
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all"})
        for r in records:
            topic = self.updates if events.is_update(r) else self.topic
            p.produce(topic, key=r["camera_id"].encode(), value=avro_wire.encode_single_object(r))
        for blob in raw:
            p.produce(self.topic, key=b"cam0", value=blob)
        assert p.flush(30) == 0

    def pg_params(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, "topics": [self.topic, self.updates], "group_id": f"{self.schema}-pg",
                "dsn": self.services.postgres_dsn, "db_schema": self.schema, "linger_ms": 50, **extra}

    def os_params(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, "topics": [self.topic, self.updates], "group_id": f"{self.schema}-os",
                "url": self.services.opensearch_url, "index_prefix": self.prefix, "linger_ms": 50, **extra}

    def pg(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.services.postgres_dsn, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {self.schema}")
            return conn.execute(sql, args or None).fetchall()

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        """The group's committed offsets per partition of both topics (0 where none was committed)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            parts = [TopicPartition(t, p) for t in (self.topic, self.updates) for p in range(3)]
            return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in c.committed(parts, timeout=10)}
        finally:
            c.close()

    def end_offsets(self) -> dict[tuple[str, int], int]:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"w-{uuid.uuid4().hex}"})
        try:
            return {(t, p): c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                    for t in (self.topic, self.updates) for p in range(3)}
        finally:
            c.close()

    def os_client(self) -> Any:
        from opensearchpy import OpenSearch

        return OpenSearch(hosts=[self.services.opensearch_url])

    def cleanup(self) -> None:
        try:
            self.pg(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE; SELECT 1")
        except Exception:
            pass
        try:
            client = self.os_client()
            client.indices.delete(index=f"{self.prefix}-*,{self.prefix}_updates", ignore=404)
            client.indices.delete_index_template(name=self.prefix, ignore=404)
        except Exception:
            pass


@pytest.fixture
def setup(services: Any) -> Any:
    s = Setup(services)
    yield s
    s.cleanup()


def make(i: int, day: int = 0, plate: str | None = None) -> dict[str, Any]:
    text = plate or f"{chr(65 + i % 26)}{chr(65 + (i // 26) % 26)}{i:05d}"
    ev = events.make_event(camera_id=f"cam{i % 4}", captured_at=(BASE_MS + day * 86_400_000 + i * 1000) / 1000,
                           track_id=i, plate={"text": text, "normalized_text": text, "confidence": 0.9, "region": "us-ca"},
                           site="lot", host="edge1", extras={"seq": str(i), "note": "tab\there \\ back\nnew line ü"})
    return ev


def drive(h: StageHarness, until: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Call the sink's produce (what the worker loop does) until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    last_check = 0.0
    while time.monotonic() < deadline:
        h.stage.produce()
        if time.monotonic() - last_check > 0.3:
            last_check = time.monotonic()
            if until():
                return
    raise AssertionError(f"timed out waiting for {what}; counters {h.counters}")


def os_count(s: Setup) -> int:
    client = s.os_client()
    client.indices.refresh(index=f"{s.prefix}-*")
    return client.count(index=f"{s.prefix}-*")["count"]


def test_events_and_updates_land_exactly_once_in_postgres_and_opensearch(setup: Setup) -> None:
    evs = [make(i, day=i % 3) for i in range(300)]  # three daily indices
    first_update = events.make_update(event_id=evs[5]["event_id"], last_seen=(BASE_MS + 999_000) / 1000, count=3, camera_id="cam1")
    setup.produce([first_update])  # an update before its event: applied once the event is stored
    setup.produce(evs + evs[:40])  # 40 redelivered (e.g. a producer that retried): stored once
    setup.produce([events.make_update(event_id=evs[7]["event_id"], last_seen=(BASE_MS + 500_000) / 1000, count=2, camera_id="cam3")])

    with StageHarness("sink.postgres", setup.pg_params(batch_size=128)) as h:
        drive(h, lambda: setup.pg("SELECT count(*) FROM events")[0][0] >= 300 and h.counters["updates"] >= 2, what="postgres rows")
        drive(h, lambda: setup.committed(setup.pg_params()["group_id"]) == setup.end_offsets(), what="commit")
    rows = setup.pg("SELECT event_id::text, plate_normalized, count, last_seen FROM events")
    assert len(rows) == 300 and {r[0] for r in rows} == {e["event_id"] for e in evs}
    by_id = {r[0]: r for r in rows}
    assert by_id[evs[5]["event_id"]][2] == 3 and by_id[evs[7]["event_id"]][2] == 2
    assert by_id[evs[0]["event_id"]][2] == 1
    assert setup.pg("SELECT extras FROM events LIMIT 1")[0][0]["note"] == "tab\there \\ back\nnew line ü"  # COPY escaping
    assert setup.pg("SELECT count(*) FROM pg_inherits WHERE inhrelid::regclass::text LIKE 'events_p%'")[0][0] >= 1
    assert setup.pg("SELECT version, variant FROM schema_migrations ORDER BY version") == [(1, "native"), (2, "native"), (3, "native")]

    with StageHarness("sink.opensearch", setup.os_params(batch_size=128)) as h:
        drive(h, lambda: os_count(setup) >= 300 and h.counters["updates"] >= 2, what="opensearch docs")
        drive(h, lambda: setup.committed(setup.os_params()["group_id"]) == setup.end_offsets(), what="commit")
        assert h.counters["indexed"] == 300 and h.counters["duplicates"] == 40
    client = setup.os_client()
    assert os_count(setup) == 300
    assert len(client.indices.get(index=f"{setup.prefix}-*")) == 3
    doc5 = client.search(index=f"{setup.prefix}-*", body={"query": {"ids": {"values": [evs[5]["event_id"]]}}})["hits"]["hits"][0]
    assert doc5["_source"]["count"] == 3
    doc7 = client.search(index=f"{setup.prefix}-*", body={"query": {"ids": {"values": [evs[7]["event_id"]]}}})["hits"]["hits"][0]
    assert doc7["_source"]["count"] == 2
    # partial plate search: a prefix, and a plate with one misread character (trigram overlap)
    target = evs[123]["plate"]["normalized_text"]
    hits = client.search(index=f"{setup.prefix}-*", body={"size": 300, "query": {"term": {"plate.prefixes": target[:4]}}})
    assert target in {h["_source"]["plate"]["normalized_text"] for h in hits["hits"]["hits"]}
    misread = target[:3] + ("9" if target[3] != "9" else "8") + target[4:]
    _, grams = plate_grams(misread)
    best = client.search(index=f"{setup.prefix}-*", body={"size": 1, "query": {"bool": {
        "should": [{"term": {"plate.trigrams": g}} for g in grams], "minimum_should_match": 2}}})
    assert best["hits"]["hits"][0]["_source"]["plate"]["normalized_text"] == target
    analyzers = client.indices.get_mapping(index=f"{setup.prefix}-*")
    if any("fields" in m["mappings"]["properties"]["plate"]["properties"]["normalized_text"] for m in analyzers.values()):
        hits = client.search(index=f"{setup.prefix}-*", body={"query": {"match": {"plate.normalized_text.edge": target[:4]}}})
        assert target in {h["_source"]["plate"]["normalized_text"] for h in hits["hits"]["hits"]}


def test_malformed_message_goes_to_the_dead_letter_topic_and_ingestion_continues(setup: Setup) -> None:
    from confluent_kafka import Consumer

    setup.produce([make(0)], raw=[b"not avro at all", avro_wire.SINGLE_OBJECT_MAGIC + b"\x00" * 8 + b"xx"])
    setup.produce([make(i) for i in range(1, 50)])
    with StageHarness("sink.postgres", setup.pg_params()) as h:
        drive(h, lambda: setup.pg("SELECT count(*) FROM events")[0][0] >= 50, what="rows after the bad ones")
        assert h.counters["dead_lettered"] == 2
        drive(h, lambda: setup.committed(setup.pg_params()["group_id"]) == setup.end_offsets(), what="commit past the bad ones")
    c = Consumer({"bootstrap.servers": setup.bootstrap, "group.id": f"dlq-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    c.subscribe([setup.topic + ".dlq"])
    got: list[Any] = []
    deadline = time.monotonic() + 30
    while len(got) < 2 and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            got.append(msg)
    c.close()
    assert sorted(m.value() for m in got) == sorted([b"not avro at all", avro_wire.SINGLE_OBJECT_MAGIC + b"\x00" * 8 + b"xx"])
    reasons = [dict(m.headers())["dlq.reason"].decode() for m in got]
    assert any("unknown framing" in r for r in reasons) and any("fingerprint" in r for r in reasons)
    assert all(dict(m.headers())["dlq.topic"].decode() == setup.topic for m in got)


def test_source_kafka_emits_dedup_shaped_envelopes(setup: Setup, tmp_path: Path) -> None:
    evs = [make(i) for i in range(20)]
    setup.produce(evs + [events.make_update(event_id=evs[0]["event_id"], last_seen=BASE_MS / 1000 + 5, count=2, camera_id="cam0")],
                  raw=[b"\x07junk"])
    params = {"bootstrap_servers": setup.bootstrap, "topics": [setup.topic, setup.updates],
              "group_id": f"{setup.schema}-src", "max_records": 21}
    with StageHarness("source.kafka", params) as h:
        outs = h.run_source(21, timeout_s=30)
        assert h.counters["dead_lettered"] == 1
    got = {o.meta["event"]["event_id"] for o in outs if "event" in o.meta}
    assert got == {e["event_id"] for e in evs}
    update = [o for o in outs if "event_update" in o.meta]
    assert len(update) == 1 and update[0].meta["event_update"]["count"] == 2
    assert all(set(o.meta["kafka"]) == {"topic", "partition", "offset"} for o in outs)
    committed = setup.committed(params["group_id"])
    assert sum(committed.values()) >= 21  # what was handed on is committed at stop
    # publish.local takes them as it takes dedup's output
    with StageHarness("publish.local", {"path": str(tmp_path / "events.jsonl"), "csv": False, "images": False}) as local:
        for o in outs:
            local.process(o)
    written = [events.from_json(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert {w["event_id"] for w in written if not events.is_update(w)} == {e["event_id"] for e in evs}


@pytest.mark.slow
def test_postgres_outage_loses_nothing_duplicates_nothing_and_commits_nothing_unstored(setup: Setup) -> None:
    services = setup.services
    group = setup.pg_params()["group_id"]
    setup.produce([make(i) for i in range(500)])
    with StageHarness("sink.postgres", setup.pg_params(batch_size=100, retry_interval_s=0.5, connect_timeout_s=2)) as h:
        drive(h, lambda: setup.pg("SELECT count(*) FROM events")[0][0] >= 500, what="first rows")
        # the sink commits a batch's offsets just after its COMMIT (the store runs in a thread):
        # wait for that, so "before" below holds every offset of what was stored before the outage
        drive(h, lambda: setup.committed(group) == setup.end_offsets(), what="first commit")
        services.stop("postgres")
        try:
            setup.produce([make(i) for i in range(500, 1500)])
            before = setup.committed(group)
            errors = h.counters["store_errors"]
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:  # ingestion goes on against a dead database
                h.stage.produce()
            assert h.counters["store_errors"] > errors
            assert setup.committed(group) == before, "offsets moved while nothing could be stored"
        finally:
            services.start("postgres")
        drive(h, lambda: setup.pg("SELECT count(*) FROM events")[0][0] >= 1500, timeout=90, what="rows after the outage")
        drive(h, lambda: setup.committed(group) == setup.end_offsets(), what="commit after the outage")
    total, distinct = setup.pg("SELECT count(*), count(DISTINCT event_id) FROM events")[0]
    assert total == distinct == 1500
    seqs = {int(r[0]) for r in setup.pg("SELECT extras->>'seq' FROM events")}
    assert seqs == set(range(1500))
    # the committed offset of each partition is at most one past the highest stored offset there
    stored = {(t, p): o for t, p, o in setup.pg("SELECT kafka_topic, kafka_partition, max(kafka_offset) FROM events GROUP BY 1, 2")}
    for (topic, part), off in setup.committed(group).items():
        if topic == setup.topic and off > 0:
            assert off <= stored[(topic, part)] + 1


@pytest.mark.slow
def test_backend_topology_stores_into_both(setup: Setup, services: Any, run_env: dict[str, str], start_run: Any) -> None:
    text = (REPO / "topologies" / "backend.yaml").read_text()
    text = text.replace("[alpr.events, alpr.event-updates]", f"[{setup.topic}, {setup.updates}]")
    text = text.replace("group_id: alpr-postgres", f"group_id: {setup.schema}-pg")
    text = text.replace("group_id: alpr-opensearch", f"group_id: {setup.schema}-os")
    text = text.replace("group_id: alpr-alerts", f"group_id: {setup.schema}-alerts")
    text = text.replace("name: backend", f"name: backend-{setup.schema[-6:]}")
    services.ensure("kafka", "postgres", "opensearch")
    run_env.update(services.env, ALPR_POSTGRES_SCHEMA=setup.schema, ALPR_INDEX_PREFIX=setup.prefix,
                   ALPR_ALERT_RULES=str(REPO / "topologies" / "alert-rules.yaml"))  # the copy runs in tmp_path
    run = start_run(text)
    evs = [make(i) for i in range(200)]
    setup.produce(evs)

    def stored() -> bool:
        try:
            return setup.pg("SELECT count(*) FROM events")[0][0] == 200 and os_count(setup) == 200
        except Exception:
            return False

    run.wait_for(stored, timeout=90, what="events in PostgreSQL and OpenSearch")
    run.wait_for(lambda: setup.committed(f"{setup.schema}-pg") == setup.end_offsets(), what="postgres commits")
    rows = run.status()["stages"]
    assert {r["stage"] for r in rows} == {"postgres", "opensearch", "events", "alerts"}
    assert all(r["state"] == "running" and r["restarts"] == 0 for r in rows), json.dumps(rows)
    assert run.stage_rows("events")[0]["frames_out"] == 200  # the alert engine's consumer saw every event


@pytest.mark.slow
def test_bench_backend_json(services: Any) -> None:
    services.ensure("kafka", "postgres", "opensearch")
    out = subprocess.run([sys.executable, "-m", "alpr_topo.tools.cli", "bench", "backend", "--events", "20000",
                          "--ingest-events", "5000", "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("postgres_events_per_s", "baseline_events_per_s", "opensearch_events_per_s", "query_p50_ms", "query_p99_ms"):
        assert isinstance(result[key], (int, float)) and result[key] > 0, key
    assert result["stored_events"] == 20000
    assert result["query_p50_ms"] <= result["query_p99_ms"]
    assert result["postgres_events_per_s"] > result["baseline_events_per_s"]  # batching beats one INSERT per event


def test_generated_avro_reader_matches_fastavro_and_rejects_corrupt_bytes() -> None:
    """The schema-compiled reader of the sinks' fast path gives fastavro's result for every
    event/update, and for damaged bytes either the same result or None (then the slow path)."""
    import io
    import random

    import fastavro

    from alpr_topo.backend.avro_reader import strip_logical
    from alpr_topo.backend.kafka_ingest import _fast_decode

    parsed = {avro_wire.fingerprint(n): fastavro.parse_schema(strip_logical(events.schema(n)), named_schemas={})
              for n in (events.EVENT, events.UPDATE)}

    def reference(data: bytes) -> Any:
        buf = io.BytesIO(data)
        buf.seek(10)
        try:
            record = fastavro.schemaless_reader(buf, parsed[data[2:10]], None)
        except Exception:
            return None
        return record if buf.tell() == len(data) else None

    rng = random.Random(7)

    def maybe(value: Any) -> Any:
        return value if rng.random() < 0.5 else None

    blobs = []
    for i in range(400):
        if i % 5 == 0:
            rec = events.make_update(event_id=events.new_event_id(), last_seen=rng.uniform(-1e9, 4e9),
                                     count=rng.randint(0, 2**31 - 1), camera_id="c" + "ü" * rng.randint(0, 90),
                                     similarity=maybe(rng.random()))
        else:
            rec = events.make_event(camera_id="cam\t" + "x" * rng.randint(0, 200), captured_at=rng.uniform(-2e9, 4e9),
                                    track_id=maybe(rng.randint(-2**62, 2**62)),
                                    plate={"text": "é" * rng.randint(0, 70), "normalized_text": "AB1", "confidence": rng.random(),
                                           "region": maybe("us-ca")},
                                    vehicle={"type": maybe("car"), "make": maybe("x" * 150)}, images={"frame_url": maybe("s3://b/k")},
                                    latency={"pipeline_ms": maybe(rng.uniform(-1e6, 1e6))}, site="s", host="h",
                                    extras={f"k{j}": "v" * j for j in range(rng.randint(0, 70))}, reads=rng.randint(0, 99))
        blob = avro_wire.encode_single_object(rec)
        assert _fast_decode(blob) == (avro_wire.schema_name_of(rec), reference(blob))
        blobs.append(blob)
    for blob in blobs:
        for _ in range(10):
            damaged = bytearray(blob)
            damaged[rng.randrange(10, len(damaged))] = rng.randrange(256)
            cut = bytes(damaged[:rng.randrange(10, len(damaged) + 1)]) if rng.random() < 0.3 else bytes(damaged)
            got = _fast_decode(cut)
            assert got is None or got[1] == reference(cut)
