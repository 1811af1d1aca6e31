"""``alpr-topo bench backend``: Kafka -> PostgreSQL / OpenSearch throughput and plate-lookup latency.

All against the real local servers of ``alpr-topo services`` (started if needed), in one run:

- ``postgres_events_per_s``: ``sink.postgres`` (COPY batches, one transaction per batch, offsets
  committed after it) reading a topic of ``ingest_events`` Avro events until all are stored;
- ``baseline_events_per_s``: the same events, same decoder and table, stored the way the original
  system did: one INSERT and one commit per event (on up to ``baseline_events`` of them, as it is
  slow; a rate does not need more);
- ``opensearch_events_per_s``: ``sink.opensearch`` (bulk, ``_id = event_id``) on the same topic;
- ``query_p50_ms`` / ``query_p99_ms``: ``WHERE plate_normalized = $1 ORDER BY captured_at DESC
  LIMIT 100`` on a table of ``stored_events`` events (default 1,000,000) spread over 90 days in
  monthly partitions, each plate seen 4 times. The table is filled server side with
  ``INSERT ... SELECT FROM generate_series`` (faster than streaming COPY from Python, and the
  query part measures lookups, not loading).

Every schema, index and topic made here is dropped at the end.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any, Callable

import click

__all__ = ["run", "main_text", "bench_backend_command"]

Progress = Callable[[str], None]
BASE_MS = 1_760_000_000_000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _produce(bootstrap: str, topic: str, count: int, progress: Progress) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from ..backend import avro_wire
    from ..stages import events

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the futures are done
    for f in admin.create_topics([NewTopic(topic, 3, 1)]).values():
        f.result(30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "compression.type": "lz4",
                  "queue.buffering.max.messages": 200_000, "enable.idempotence": True, "acks": "all"})
    for i in range(count):
        text = f"B{i % 100_000:06d}"
        ev = events.make_event(camera_id=f"cam{i % 8}", captured_at=(BASE_MS + i * 100) / 1000, track_id=i,
                               plate={"text": text, "normalized_text": text, "confidence": 0.9, "region": "us-ca"},
                               site="bench", host="bench", extras={"seq": str(i)})
        while True:
            try:
                p.produce(topic, key=ev["camera_id"].encode(), value=avro_wire.encode_single_object(ev))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    if p.flush(120):
        raise RuntimeError("could not write the benchmark events to Kafka")
    progress(f"{count} events written to {topic}")


def _run_sink(stage_type: str, params: dict[str, Any], count: int, timeout_s: float = 600) -> float:
    """Seconds a sink takes to store ``count`` events from its topic: from the ``produce`` call
    that received the first records (setup and the consumer group join, about 3 s on a fresh
    broker, are not the sink's throughput) until the last batch is stored and committed."""
    from ..core.testing import StageHarness

    with StageHarness(stage_type, params) as h:
        start = None
        deadline = time.monotonic() + timeout_s
        while h.counters.get("stored", 0) < count:
            before = time.perf_counter()
            h.stage.produce()
            if start is None and h.counters.get("consumed", 0) > 0:
                start = before
            if time.monotonic() > deadline:
                raise RuntimeError(f"{stage_type} stored {h.counters.get('stored')} of {count} in {timeout_s} s")
        return time.perf_counter() - (start or 0.0)


def _baseline(dsn: str, bootstrap: str, topic: str, schema: str, count: int) -> float:
    """Events/s with one INSERT and one commit per event (same decoder, same table)."""
    import psycopg

    from ..backend.kafka_ingest import KafkaIngest
    from ..stages.sink_postgres import EVENT_COLUMNS, event_row, migrate

    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, schema)
        conn.execute(f"SET search_path TO {schema}")
        conn.execute("CREATE TABLE events_bench PARTITION OF events FOR VALUES FROM ('2000-01-01') TO ('2100-01-01')")
        sql = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))}) ON CONFLICT DO NOTHING"
        ingest = KafkaIngest(bootstrap, f"{schema}-baseline", [topic])
        done = 0
        start = None
        try:
            while done < count:
                records = ingest.poll(min(500, count - done), 0.5)
                if records and start is None:  # after the consumer group join, as for the sinks
                    start = time.perf_counter()
                for r in records:  # autocommit: one INSERT, one transaction per event
                    conn.execute(sql, event_row(r.record, (r.topic, r.partition, r.offset)))
                ingest.commit(records)  # offsets per poll, as generously as the batched sink
                done += len(records)
            return done / (time.perf_counter() - (start or 0.0))
        finally:
            ingest.close()


def _query_latency(dsn: str, schema: str, stored: int, queries: int, progress: Progress) -> tuple[float, float]:
    import random

    import psycopg

    from ..stages.sink_postgres import migrate

    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, schema)
        conn.execute(f"SET search_path TO {schema}")
        for m in range(4):  # 2025-10 .. 2026-01: the 90 days below
            y, mo = (2025 + (9 + m) // 12, (9 + m) % 12 + 1)
            ny, nmo = (y + 1, 1) if mo == 12 else (y, mo + 1)
            conn.execute(f"CREATE TABLE events_p{y}{mo:02d} PARTITION OF events FOR VALUES FROM "
                         f"('{y}-{mo:02d}-01 00:00+00') TO ('{ny}-{nmo:02d}-01 00:00+00')")
        plates = max(1, stored // 4)
        t0 = time.perf_counter()
        conn.execute(
            "INSERT INTO events (event_id, captured_at, camera_id, track_id, plate_text, plate_normalized,"
            " plate_confidence, plate_region, site, host, extras, first_seen, last_seen, count, reads)"
            " SELECT gen_random_uuid(), ts, 'cam' || (i %% 16), i, p, p, 0.9, 'us-ca', 'bench', 'bench', '{}', ts, ts, 1, 3"
            " FROM (SELECT i, 'Q' || lpad((i %% %s)::text, 7, '0') AS p,"
            "       timestamptz '2025-10-15 00:00+00' + (i * (90 * 86400.0 / %s)) * interval '1 second' AS ts"
            "       FROM generate_series(0, %s - 1) AS i) g", (plates, stored, stored))
        conn.execute("ANALYZE events")
        progress(f"{stored} events stored for the query part in {time.perf_counter() - t0:.1f} s")
        rng = random.Random(1)
        sql = ("SELECT event_id, captured_at, camera_id, plate_normalized, count FROM events"
               " WHERE plate_normalized = %s ORDER BY captured_at DESC LIMIT 100")
        times: list[float] = []
        for n in range(queries + 50):
            plate = f"Q{rng.randrange(plates):07d}"
            t = time.perf_counter()
            rows = conn.execute(sql, (plate,), prepare=True).fetchall()
            if n >= 50:  # the first ones warm caches and the prepared statement
                times.append((time.perf_counter() - t) * 1000)
            assert rows, f"no rows for {plate}"
        return statistics.median(times), _percentile(times, 0.99)


def run(events: int = 1_000_000, ingest_events: int = 100_000, baseline_events: int = 3000, queries: int = 2000,
        progress: Progress = lambda msg: None) -> dict[str, Any]:
    """Run every part and return the ``bench backend`` JSON object (docs/benchmarks.md)."""
    import psycopg
    from confluent_kafka.admin import AdminClient
    from opensearchpy import OpenSearch

    from . import services as svc

    conns = svc.up(["kafka", "postgres", "opensearch"], say_for=lambda name: (lambda msg: progress(f"[{name}] {msg}")))
    bootstrap, dsn, os_url = conns["kafka"]["bootstrap_servers"], conns["postgres"]["dsn"], conns["opensearch"]["url"]
    tag = uuid.uuid4().hex[:8]
    topic, schemas, prefix = f"bench-{tag}", [f"bench_{tag}_{x}" for x in ("b", "a", "q")], f"bench-{tag}"
    ingest = min(events, ingest_events)
    try:
        _produce(bootstrap, topic, ingest, progress)
        common = {"bootstrap_servers": bootstrap, "topics": [topic], "batch_size": 5000, "linger_ms": 200}
        pg_s = _run_sink("sink.postgres", {**common, "group_id": f"{tag}-pg", "dsn": dsn, "db_schema": schemas[0]}, ingest)
        progress(f"sink.postgres: {ingest} events in {pg_s:.2f} s")
        base = _baseline(dsn, bootstrap, topic, schemas[1], min(ingest, baseline_events))
        progress(f"one INSERT per event: {base:.0f} events/s")
        os_s = _run_sink("sink.opensearch", {**common, "group_id": f"{tag}-os", "url": os_url, "index_prefix": prefix}, ingest)
        progress(f"sink.opensearch: {ingest} events in {os_s:.2f} s")
        p50, p99 = _query_latency(dsn, schemas[2], events, queries, progress)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for s in schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
        client = OpenSearch(hosts=[os_url])
        client.indices.delete(index=f"{prefix}-*,{prefix}_updates", ignore=404)
        client.indices.delete_index_template(name=prefix, ignore=404)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.delete_topics([topic]).values():
            try:
                f.result(30)
            except Exception as exc:  # cleanup only
                progress(f"could not delete {topic}: {exc}")
    return {
        "postgres_events_per_s": round(ingest / pg_s, 1),
        "baseline_events_per_s": round(base, 1),
        "opensearch_events_per_s": round(ingest / os_s, 1),
        "query_p50_ms": round(p50, 3),
        "query_p99_ms": round(p99, 3),
        "stored_events": events,
        "ingest_events": ingest,
    }


def main_text(r: dict[str, Any]) -> str:
    return (f"Kafka -> PostgreSQL: {r['postgres_events_per_s']:.0f} events/s batched, {r['baseline_events_per_s']:.0f} "
            f"events/s one INSERT per event ({r['ingest_events']} events)\n"
            f"Kafka -> OpenSearch: {r['opensearch_events_per_s']:.0f} events/s (bulk)\n"
            f"plate lookup at {r['stored_events']} stored events: p50 {r['query_p50_ms']:.2f} ms, p99 {r['query_p99_ms']:.2f} ms")


@click.command("backend")
@click.option("--events", type=int, default=1_000_000, show_default=True, help="events stored for the query latency part")
@click.option("--ingest-events", type=int, default=100_000, show_default=True,
              help="events sent through Kafka for the throughput parts (at most --events)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_backend_command(events: int, ingest_events: int, as_json: bool) -> None:
    """Events/s from Kafka into PostgreSQL (batched vs one INSERT per event) and OpenSearch, and
    plate-lookup latency p50/p99 at --events stored events, on the local services."""
    import json

    result = run(events=events, ingest_events=ingest_events, progress=lambda msg: click.echo(msg, err=True))
    click.echo(json.dumps(result, indent=2) if as_json else main_text(result))
