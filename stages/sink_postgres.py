"""``sink.postgres``: plate events from Kafka into PostgreSQL, committed only once stored.

A Kafka consumer of its own (group ``group_id``; docs/backend.md explains why the stores are
not downstream of ``source.kafka``). Each batch is one transaction: COPY into a temporary table,
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into ``events`` (idempotent on event_id), update
messages recorded in ``event_updates`` and applied (``count``/``last_seen`` only ever grow), then
COMMIT, and only then the Kafka offsets. A crash anywhere before the offset commit re-reads the
batch and storing it again changes nothing: exactly one row per event.

Schema: the SQL files in ``backend/migrations`` run at first connection, in version order, each
once (table ``schema_migrations``), under an advisory lock so several hosts can start together.
``NNN_name.timescale.sql`` replaces ``NNN_name.sql`` when the timescaledb extension exists.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import Field

from ..backend.kafka_ingest import KafkaSink, KafkaSinkParams, Record
from ..stages import events

__all__ = ["PostgresSinkParams", "PostgresSink", "migrate", "migrations_dir", "event_row", "EVENT_COLUMNS", "STAGE_TYPES"]

EVENT_COLUMNS = (
    "event_id", "captured_at", "camera_id", "track_id", "plate_text", "plate_normalized", "plate_confidence",
    "plate_region", "vehicle_type", "vehicle_color", "vehicle_make", "vehicle_model", "plate_url", "vehicle_url",
    "frame_url", "capture_to_event_ms", "pipeline_ms", "site", "host", "extras", "first_seen", "last_seen",
    "count", "reads", "kafka_topic", "kafka_partition", "kafka_offset",
)
_LOCK_MIGRATE = 7_316_001  # advisory lock keys (arbitrary, fixed)
_LOCK_WRITE = 7_316_002
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def migrations_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "backend" / "migrations"


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def event_row(ev: dict[str, Any], pos: tuple[str, int, int] | None = None) -> tuple[Any, ...]:
    """The ``events`` row (in :data:`EVENT_COLUMNS` order) of an event dict."""
    plate, veh, img, lat, node = ev["plate"], ev.get("vehicle") or {}, ev.get("images") or {}, ev.get("latency") or {}, ev["node"]
    return (
        ev["event_id"], _ts(ev["captured_at"]), ev["camera_id"], ev.get("track_id"), plate["text"],
        plate["normalized_text"], plate["confidence"], plate.get("region"), veh.get("type"), veh.get("color"),
        veh.get("make"), veh.get("model"), img.get("plate_url"), img.get("vehicle_url"), img.get("frame_url"),
        lat.get("capture_to_event_ms"), lat.get("pipeline_ms"), node["site"], node["host"],
        json.dumps(ev.get("extras") or {}), _ts(ev.get("first_seen")), _ts(ev.get("last_seen")),
        ev.get("count", 1), ev.get("reads", 0), *(pos or (None, None, None)),
    )


_STAGING = (
    "event_id uuid, captured_ms bigint, camera_id text, track_id bigint, plate_text text, plate_normalized text,"
    " plate_confidence float8, plate_region text, vehicle_type text, vehicle_color text, vehicle_make text,"
    " vehicle_model text, plate_url text, vehicle_url text, frame_url text, capture_to_event_ms float8,"
    " pipeline_ms float8, site text, host text, extras jsonb, first_ms bigint, last_ms bigint, count integer,"
    " reads integer, kafka_topic text, kafka_partition integer, kafka_offset bigint"
)
_FROM_STAGING = ", ".join(  # float8, not numeric, division: exact to the millisecond and cheaper
    f"to_timestamp({c}::float8 / 1000)" if c in ("captured_ms", "first_ms", "last_ms") else c
    for c in (part.split()[0] for part in _STAGING.split(","))
)
_EMPTY: dict[str, Any] = {}
_json = json.JSONEncoder(ensure_ascii=False).encode  # one encoder: json.dumps with options builds one per call


def staging_row(ev: dict[str, Any], topic: str, partition: int, offset: int) -> tuple[Any, ...]:
    """The ``events_in`` row (staging column order) of an event. The hot loop of the sink: plain
    values only, timestamps stay integer milliseconds (PostgreSQL converts them in the INSERT),
    and psycopg's C code formats and escapes the row for COPY (several times faster than
    building the text line in Python)."""
    plate, node = ev["plate"], ev["node"]
    veh, img, lat = ev.get("vehicle") or _EMPTY, ev.get("images") or _EMPTY, ev.get("latency") or _EMPTY
    extras = ev.get("extras")
    return (
        ev["event_id"], ev["captured_at"], ev["camera_id"], ev.get("track_id"), plate["text"],
        plate["normalized_text"], plate["confidence"], plate.get("region"), veh.get("type"), veh.get("color"),
        veh.get("make"), veh.get("model"), img.get("plate_url"), img.get("vehicle_url"), img.get("frame_url"),
        lat.get("capture_to_event_ms"), lat.get("pipeline_ms"), node["site"], node["host"],
        _json(extras) if extras else "{}", ev.get("first_seen"), ev.get("last_seen"),
        ev.get("count", 1), ev.get("reads", 0), topic, partition, offset)


# Raise count / last_seen of the events listed by the subquery {ids} to their stored updates
# (updates are absolute, so applying them again changes nothing).
_APPLY_UPDATES = (
    "UPDATE events e SET count = GREATEST(e.count, u.count), last_seen = GREATEST(e.last_seen, u.last_seen)"
    " FROM (SELECT event_id, max(count) AS count, max(last_seen) AS last_seen FROM event_updates"
    "       WHERE event_id IN ({ids}) GROUP BY event_id) u"
    " WHERE e.event_id = u.event_id AND (e.count < u.count OR e.last_seen IS DISTINCT FROM"
    "       GREATEST(e.last_seen, u.last_seen))"
)


def migrate(conn: Any, db_schema: str = "public") -> str:
    """Apply the migrations not yet recorded in ``<db_schema>.schema_migrations``; returns the
    partitioning in use (``timescaledb`` or ``native``). Commits."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_MIGRATE,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {db_schema}")
        conn.execute(f"SET LOCAL search_path TO {db_schema}, public")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                     " variant text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        timescale = _timescale(conn)
        by_version: dict[int, dict[str, Path]] = {}
        for path in sorted(migrations_dir().glob("*.sql")):
            m = re.match(r"^(\d+)_(\w+?)(\.timescale)?\.sql$", path.name)
            if m:
                by_version.setdefault(int(m.group(1)), {})["timescale" if m.group(3) else "native"] = path
        for version in sorted(by_version):
            if version in done:
                continue
            variants = by_version[version]
            variant = "timescale" if timescale and "timescale" in variants else "native"
            path = variants[variant]
            conn.execute(path.read_text())
            conn.execute("INSERT INTO schema_migrations (version, name, variant) VALUES (%s, %s, %s)",
                         (version, path.name, variant))
        row = conn.execute("SELECT variant FROM schema_migrations WHERE version = 1").fetchone()
    return "timescaledb" if row and row[0] == "timescale" else "native"


def _timescale(conn: Any) -> bool:
    """True when the timescaledb extension exists or can be created here (else native partitions)."""
    if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone():
        return False
    try:
        with conn.transaction():  # a savepoint: a refused CREATE EXTENSION leaves the migration going
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return True
    except Exception:
        return False


class PostgresSinkParams(KafkaSinkParams):
    dsn: str = Field(..., min_length=1, description="libpq connection string or URL (use ${ALPR_POSTGRES_DSN})")
    group_id: str = Field("alpr-postgres", min_length=1, description="consumer group of the PostgreSQL store")
    db_schema: str = Field("public", pattern=_NAME.pattern, description="PostgreSQL schema of the tables (created if missing)")
    connect_timeout_s: int = Field(5, ge=1, description="libpq connect_timeout")


class PostgresSink(KafkaSink):
    """Store plate events and updates from Kafka in PostgreSQL (batched, idempotent, offsets after COMMIT)."""

    type_name = "sink.postgres"
    Params = PostgresSinkParams

    def setup(self) -> None:
        super().setup()
        self.conn: Any = None
        self.partitioning = ""
        self.partitions: set[str] = set()
        for name in ("inserted", "duplicates", "updates"):
            self.ctx.count(name, 0)
        try:
            self._connect()
        except Exception as exc:  # the first batch retries; the stage starts without the database
            self.log.warning("PostgreSQL not reachable yet: %s", exc)

    def _connect(self) -> Any:
        import psycopg

        if self.conn is not None and not self.conn.closed:
            return self.conn
        p = self.params
        conn = psycopg.connect(p.dsn, connect_timeout=p.connect_timeout_s, autocommit=True)
        try:
            self.partitioning = migrate(conn, p.db_schema)
            conn.execute(f"SET search_path TO {p.db_schema}, public")
            conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS events_in ({_STAGING})")
        except Exception:
            conn.close()
            raise
        self.conn = conn
        self.partitions = set()
        return conn

    def _ensure_partitions(self, conn: Any, months: set[tuple[int, int]]) -> None:
        """Create the monthly partitions a batch needs (native partitioning only)."""
        for year, month in sorted(months):
            name = f"events_p{year:04d}{month:02d}"
            if name in self.partitions:
                continue
            nxt = (year + 1, 1) if month == 12 else (year, month + 1)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_MIGRATE,))
                conn.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF events FOR VALUES FROM "
                             f"('{year:04d}-{month:02d}-01 00:00+00') TO ('{nxt[0]:04d}-{nxt[1]:02d}-01 00:00+00')")
            self.partitions.add(name)

    def store(self, records: list[Record]) -> None:
        try:
            self._store(self._connect(), records)
        except Exception:
            if self.conn is not None:
                try:
                    self.conn.close()  # reconnect (and re-check the schema) on the next attempt
                finally:
                    self.conn = None
            raise

    def _store(self, conn: Any, records: list[Record]) -> None:
        evs = [r for r in records if r.name == events.EVENT]
        ups = [r for r in records if r.name == events.UPDATE]
        if self.partitioning == "native" and evs:
            stamps = [r.record["captured_at"] for r in evs]
            first, last = _ts(min(stamps)), _ts(max(stamps))
            months = {(y, m) for y in range(first.year, last.year + 1) for m in range(1, 13)
                      if (first.year, first.month) <= (y, m) <= (last.year, last.month)}
            self._ensure_partitions(conn, months)
        inserted = 0
        with conn.transaction():
            # updates exclude event batches (and not each other): an update and its event stored
            # at the same moment by two replicas must not miss each other
            lock = "pg_advisory_xact_lock" if ups else "pg_advisory_xact_lock_shared"
            conn.execute(f"SELECT {lock}(%s)", (_LOCK_WRITE,))
            if evs:
                conn.execute("TRUNCATE events_in")
                with conn.cursor().copy("COPY events_in FROM STDIN") as copy:
                    for r in evs:
                        copy.write_row(staging_row(r.record, r.topic, r.partition, r.offset))
                cur = conn.execute(f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) SELECT {_FROM_STAGING}"
                                   " FROM events_in ON CONFLICT DO NOTHING")
                inserted = cur.rowcount
                # updates stored before their event: only ids marked in event_updates_pending
                # (nearly always none) are looked up, not every event of the batch
                conn.execute(_APPLY_UPDATES.format(ids="SELECT p.event_id FROM event_updates_pending p"
                                                       " JOIN events_in s ON s.event_id = p.event_id"))
            if ups:
                ids = list({r.record["event_id"] for r in ups})
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO event_updates (event_id, count, last_seen, reason, camera_id, track_id,"
                        " normalized_text, similarity) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        [(u["event_id"], u["count"], _ts(u["last_seen"]), u.get("reason", "duplicate"), u["camera_id"],
                          u.get("track_id"), u.get("normalized_text"), u.get("similarity")) for u in (r.record for r in ups)])
                conn.execute(_APPLY_UPDATES.format(ids="SELECT unnest(%s::uuid[])"), (ids,))
                # under the exclusive lock no event batch runs: ids without their event are marked
                # for the event batch that stores it, and marks whose event exists are dropped
                conn.execute("INSERT INTO event_updates_pending (event_id) SELECT i FROM unnest(%s::uuid[]) AS i"
                             " WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = i) ON CONFLICT DO NOTHING",
                             (ids,))
                conn.execute("DELETE FROM event_updates_pending p USING events e WHERE e.event_id = p.event_id")
        self.ctx.count("inserted", inserted)
        self.ctx.count("duplicates", len(evs) - inserted)
        self.ctx.count("updates", len(ups))

    def teardown(self) -> None:
        super().teardown()
        if getattr(self, "conn", None) is not None:
            self.conn.close()


STAGE_TYPES = [PostgresSink]
