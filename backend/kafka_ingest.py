"""Consuming plate events from Kafka: decode, dead-letter, commit explicitly.

Shared by ``source.kafka`` and the storage sinks ``sink.postgres`` / ``sink.opensearch``
(docs/backend.md). Each of those is its own consumer group member, so several backend hosts share
the partitions of a topic, and each store commits its own offsets *after* it stored what it read
(the Kafka Connect pattern): a committed offset never passes what the store holds.

Why a helper and not a stage: the sinks are Kafka consumers themselves rather than downstream of
``source.kafka``, because stages are separate processes and a source cannot learn when another
process made a record durable. Keeping consumer, decoder and dead-letter producer in one place
gives all three the same behaviour.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import Field

from ..core.stage import Source, StageParams
from . import avro_wire
from .avro_reader import raw_readers

__all__ = ["Record", "KafkaIngest", "KafkaSinkParams", "KafkaSink", "DLQ_SUFFIX"]

DLQ_SUFFIX = ".dlq"


def _slow_decode(decoder: avro_wire.AvroDecoder, data: bytes | None) -> tuple[str, dict[str, Any]]:
    decoded = decoder.decode(data)
    return decoded.name, decoded.record


def _fast_decode(data: bytes | None) -> tuple[str, dict[str, Any]] | None:
    """(name, record) of a single-object message of this version's schemas; None for anything
    else (or anything odd), which then goes through :class:`AvroDecoder` and gets its precise
    error."""
    if data is None or len(data) < 10 or data[:2] != avro_wire.SINGLE_OBJECT_MAGIC:
        return None
    found = raw_readers().get(bytes(data[2:10]))
    if found is None:
        return None
    try:
        record = found[1](data, 10)
    except Exception:
        return None
    return (found[0], record) if isinstance(record, dict) else None


@dataclass(slots=True)
class Record:
    """One decoded message: ``name`` is ``event`` or ``event_update``, ``record`` its dict form."""

    topic: str
    partition: int
    offset: int
    name: str
    record: dict[str, Any]

    @property
    def position(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


class KafkaIngest:
    """A consumer group member with manual commits and a dead-letter topic.

    ``poll`` returns decoded records; a message that cannot be decoded is produced to
    ``<topic>.dlq`` (same key and value, header ``dlq.reason``, plus the source position) and
    skipped. ``commit(records)`` first flushes the dead-letter producer (a dead-lettered message
    must be safely elsewhere before an offset passes it), then commits, synchronously, the offset
    after the highest record of each partition. Records of partitions taken away by a rebalance
    are reported through ``on_revoke`` so a caller can drop what it has not stored yet (the new
    owner reads them again from the committed offset; stores are idempotent anyway).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        group_id: str,
        topics: list[str],
        *,
        registry_url: str | None = None,
        dead_letter: bool = True,
        consumer_config: dict[str, Any] | None = None,
        log: logging.Logger | None = None,
        count: Callable[[str, float], None] | None = None,
        on_revoke: Callable[[set[tuple[str, int]]], None] | None = None,
    ) -> None:
        from confluent_kafka import Consumer

        self.log = log or logging.getLogger(__name__)
        self.count = count or (lambda name, value=1.0: None)
        self.on_revoke = on_revoke
        self.bootstrap_servers = bootstrap_servers
        self.dead_letter = dead_letter
        self.decoder = avro_wire.AvroDecoder(registry_url or None)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "logger": logging.getLogger(f"{self.log.name}.librdkafka"),
            **(consumer_config or {}),
        })
        self.consumer.subscribe(topics, on_revoke=self._revoked, on_lost=self._revoked)
        self._dlq: Any = None
        self._dlq_pending = 0
        self.paused = False

    # -- reading ---------------------------------------------------------------------------------

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to ``max_records`` decoded records (fewer after ``timeout_s``)."""
        from confluent_kafka import KafkaError, TopicPartition

        msgs = self.consumer.consume(num_messages=max_records, timeout=timeout_s)
        out: list[Record] = []
        rewound: set[tuple[str, int]] = set()
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self.log.warning("Kafka consumer: %s", err)
                continue
            where = (msg.topic(), msg.partition())
            if where in rewound:
                continue  # read again after the seek below
            value = msg.value()
            fast = _fast_decode(value)
            try:
                name, record = fast or _slow_decode(self.decoder, value)
            except avro_wire.WireFormatError as exc:
                self._dead_letter(msg, str(exc))
                continue
            except avro_wire.RegistryError as exc:
                # the message may be fine: read it again later instead of dead-lettering it
                self.log.warning("schema registry unreachable (%s); retrying %s[%d]@%d", exc, *where, msg.offset())
                self.count("registry_errors", 1)
                self.consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
                rewound.add(where)
                continue
            out.append(Record(where[0], where[1], msg.offset(), name, record))
        if rewound:
            time.sleep(min(timeout_s, 1.0))
        self.count("consumed", len(out))
        return out

    def _dead_letter(self, msg: Any, reason: str) -> None:
        """Send an undecodable message to ``<topic>.dlq`` with the reason in a header."""
        self.count("dead_lettered", 1)
        self.log.warning("dead-lettering %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), reason)
        if not self.dead_letter:
            return
        if self._dlq is None:
            from confluent_kafka import Producer

            self._dlq = Producer({"bootstrap.servers": self.bootstrap_servers, "enable.idempotence": True,
                                  "acks": "all", "logger": logging.getLogger(f"{self.log.name}.librdkafka")})
        headers = [("dlq.reason", reason.encode()), ("dlq.topic", msg.topic().encode()),
                   ("dlq.partition", str(msg.partition()).encode()), ("dlq.offset", str(msg.offset()).encode())]
        self._dlq.produce(msg.topic() + DLQ_SUFFIX, key=msg.key(), value=msg.value(), headers=headers)
        self._dlq_pending += 1
        self._dlq.poll(0)

    # -- committing ------------------------------------------------------------------------------

    def commit(self, records: list[Record], extra: dict[tuple[str, int], int] | None = None) -> None:
        """Commit the offset after the last of ``records`` per partition (after the DLQ is flushed).

        ``extra`` maps (topic, partition) to an offset already handled without a record (a batch
        that held only dead-lettered messages still moves on): pass :meth:`positions`.
        """
        from confluent_kafka import TopicPartition

        if self._dlq is not None and self._dlq_pending:
            left = self._dlq.flush(30)
            if left:
                raise RuntimeError(f"{left} dead-letter messages not acknowledged; not committing")
            self._dlq_pending = 0
        upto: dict[tuple[str, int], int] = dict(extra or {})
        for r in records:
            key = (r.topic, r.partition)
            upto[key] = max(upto.get(key, 0), r.offset + 1)
        if upto:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in upto.items()], asynchronous=False)
            self.count("committed", len(records))

    def positions(self) -> dict[tuple[str, int], int]:
        """The consumer's read position per assigned partition (where the next poll starts)."""
        try:
            parts = self.consumer.position(self.consumer.assignment())
        except Exception:  # not assigned yet
            return {}
        return {(tp.topic, tp.partition): tp.offset for tp in parts if tp.offset >= 0}

    # -- outages ---------------------------------------------------------------------------------

    def pause(self) -> None:
        """Stop prefetching while the store is down. The sink does not poll meanwhile (a message
        polled and not stored would move the read position past it); librdkafka's heartbeats keep
        the membership, and after ``max.poll.interval.ms`` (5 min) the group hands the partitions
        to another member, as it should for a member that cannot store."""
        if not self.paused:
            self.consumer.pause(self.consumer.assignment())
            self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.consumer.resume(self.consumer.assignment())
            self.paused = False

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        if self.on_revoke is not None:
            self.on_revoke({(tp.topic, tp.partition) for tp in partitions})
        self.paused = False  # a new assignment starts unpaused

    def close(self) -> None:
        if self._dlq is not None:
            self._dlq.flush(10)
        self.consumer.close()  # leaves the group at once, so its partitions move on quickly


# -- the base of the storage sinks ----------------------------------------------------------------

class KafkaSinkParams(StageParams):
    """Parameters every Kafka-consuming store shares."""

    bootstrap_servers: str = Field("localhost:9092", min_length=1, description="Kafka brokers, host:port[,host:port]")
    topics: list[str] = Field(["alpr.events", "alpr.event-updates"], min_length=1, description="topics of events and update messages")
    group_id: str = Field(..., min_length=1, description="consumer group: one per store, shared by its replicas and hosts")
    schema_registry_url: str | None = Field(None, description="Confluent-compatible registry, to decode Confluent-framed values")
    batch_size: int = Field(5000, ge=1, description="records stored in one batch (one transaction / one bulk request)")
    linger_ms: int = Field(200, ge=0, description="store a partial batch once its oldest record waited this long")
    retry_interval_s: float = Field(2.0, gt=0, description="seconds between attempts while the store is unreachable")
    dead_letter: bool = Field(True, description="send undecodable messages to <topic>.dlq with the reason in header dlq.reason")
    consumer_config: dict[str, str | int | float | bool] = Field(default_factory=dict, description="further librdkafka consumer settings")


@dataclass
class _Flight:
    """A batch being stored in the background, and the read positions to commit once it is."""

    batch: list[Record]
    positions: dict[tuple[str, int], int]
    future: "Future[None]"


class KafkaSink(Source):
    """A store that reads Kafka itself and commits only what it stored (subclasses: ``store``).

    It is a Source because it has no upstream stage: ``produce`` polls, and hands full (or
    lingering) batches to ``store``, which runs in a background thread, so that polling and
    decoding the next batch overlaps with the store's round trips (the database or OpenSearch
    work, its COMMIT, the offset commit): about half the time of a batch. At most one batch is in
    flight; its offsets (the read positions when it was cut, so nothing read later) are committed
    only once ``store`` returned, from this thread. While the store is down the consumer is paused,
    the batch is kept, and storing is retried every ``retry_interval_s`` in this thread; nothing is
    committed until it succeeds, so a crash meanwhile re-reads the batch (stores are idempotent on
    event_id).
    """

    Params = KafkaSinkParams

    def setup(self) -> None:
        p = self.params
        for name in ("consumed", "stored", "committed", "dead_lettered", "store_errors", "registry_errors"):
            self.ctx.count(name, 0)
        self.pending: list[Record] = []
        self.first_at = 0.0
        self.retry_at: float | None = None
        self.flight: _Flight | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.type_name}-store")
        self.ingest = KafkaIngest(p.bootstrap_servers, p.group_id, list(p.topics), registry_url=p.schema_registry_url,
                                  dead_letter=p.dead_letter, consumer_config=dict(p.consumer_config), log=self.log,
                                  count=self.ctx.count, on_revoke=self._revoked)

    def store(self, records: list[Record]) -> None:
        """Make ``records`` durable (idempotently); raise to have the batch retried later. Runs in
        the store thread (one batch at a time), so it must not touch what ``produce`` uses."""
        raise NotImplementedError

    def produce(self) -> None:
        now = time.monotonic()
        if self.flight is not None and self.flight.future.done():
            self._land()
        if self.retry_at is not None:
            if now < self.retry_at:
                return None
            self.write_pending()
            return None
        records = self.ingest.poll(max(1, self.params.batch_size - len(self.pending)), 0.05)
        if records and not self.pending:
            self.first_at = now
        self.pending.extend(records)
        full = len(self.pending) >= self.params.batch_size
        if full or (self.pending and now - self.first_at >= self.params.linger_ms / 1000):
            self._launch()
        elif not self.pending and records == [] and self.flight is None and self.ingest.positions():
            self._commit_dead_letters_only()
        return None

    def wait_s(self) -> float:
        """While waiting to retry the store, let the runtime sleep instead of spinning."""
        return 0.0 if self.retry_at is None else max(0.0, self.retry_at - time.monotonic())

    def _commit_dead_letters_only(self) -> None:
        """A quiet moment with nothing pending: commit the read position, so messages that were only
        dead-lettered are not read (and dead-lettered) again after a restart."""
        if self.ingest._dlq_pending:
            try:
                self.ingest.commit([], self.ingest.positions())
            except Exception as exc:
                self.log.warning("commit failed: %s", exc)

    def _launch(self) -> None:
        """Start storing the pending batch in the background (after the one in flight landed)."""
        if self.flight is not None and not self._land():
            return  # it failed and is pending again, retried after retry_interval_s
        batch, self.pending = self.pending, []
        # every record read so far is in this batch (or dead-lettered): these positions are its end
        self.flight = _Flight(batch, self.ingest.positions(), self.pool.submit(self.store, batch))

    def _land(self) -> bool:
        """Wait for the batch in flight; commit it if stored, else make it pending again first."""
        flight, self.flight = self.flight, None
        if flight is None:
            return True
        try:
            flight.future.result()
        except Exception as exc:
            self.pending = flight.batch + self.pending
            self._failed(exc)
            return False
        self._stored(flight.batch, flight.positions)
        return True

    def write_pending(self) -> bool:
        """Store and commit the pending batch in this thread (retries, flush); on failure pause
        and schedule a retry."""
        if not self._land():
            return False
        batch, self.pending = self.pending, []
        positions = self.ingest.positions()
        try:
            if batch:
                self.store(batch)
        except Exception as exc:
            self.pending = batch + self.pending
            self._failed(exc)
            return False
        self._stored(batch, positions)
        return True

    def _failed(self, exc: Exception) -> None:
        self.ctx.count("store_errors", 1)
        if self.retry_at is None:
            self.log.warning("%s: store failed (%s); retrying every %.1f s, offsets not committed",
                             self.type_name, exc, self.params.retry_interval_s)
        self.retry_at = time.monotonic() + self.params.retry_interval_s
        self.ingest.pause()

    def _stored(self, batch: list[Record], positions: dict[tuple[str, int], int]) -> None:
        if self.retry_at is not None:
            self.log.info("%s: store is back; %d records stored", self.type_name, len(batch))
        self.retry_at = None
        self.ctx.count("stored", len(batch))
        try:
            self.ingest.commit(batch, positions)
        except Exception as exc:  # stored but not committed: read again later, stored idempotently
            self.log.warning("offset commit failed: %s", exc)
        self.ingest.resume()

    def _revoked(self, partitions: set[tuple[str, int]]) -> None:
        """Partitions moved to another member: land the batch in flight (its commit is still ours
        to make), then forget the unstored records of those partitions (the new owner re-reads)."""
        self._land()
        self.pending = [r for r in self.pending if (r.topic, r.partition) not in partitions]

    def flush(self) -> None:
        if self.flight is not None or self.pending:
            self.write_pending()
        return None

    def teardown(self) -> None:
        if getattr(self, "flight", None) is not None:
            self._land()  # a batch in flight finishes and, if stored, is committed (fewer re-reads)
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
        ingest = getattr(self, "ingest", None)
        if ingest is not None:
            ingest.close()
