"""``source.kafka``: plate events from Kafka into a graph (alert rules, publish.local, plugins).

A consumer group member, so several backend hosts share the partitions. Each message becomes an
envelope shaped like ``dedup.plates`` output: ``meta["event"]`` or ``meta["event_update"]``, plus
``meta["kafka"] = {topic, partition, offset}``. Undecodable messages go to ``<topic>.dlq`` with
the reason in header ``dlq.reason`` and ingestion goes on.

Offsets: a source cannot know when a stage in another process is done with an envelope, so this
stage commits what it has *handed downstream* (every ``commit_interval_s``, and at stop): at least
once up to the hand-over. The durable stores do not hang off it; ``sink.postgres`` and
``sink.opensearch`` consume Kafka themselves and commit after storing (docs/backend.md).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from pydantic import Field

from ..backend.kafka_ingest import KafkaIngest, Record
from ..core.envelope import Envelope
from ..core.stage import Source, StageParams
from . import events

__all__ = ["KafkaSourceParams", "KafkaSource", "to_envelope", "STAGE_TYPES"]


class KafkaSourceParams(StageParams):
    bootstrap_servers: str = Field("localhost:9092", min_length=1, description="Kafka brokers, host:port[,host:port]")
    topics: list[str] = Field(["alpr.events", "alpr.event-updates"], min_length=1, description="topics of events and update messages")
    group_id: str = Field("alpr-backend", min_length=1, description="consumer group (replicas and hosts with the same id share partitions)")
    schema_registry_url: str | None = Field(None, description="Confluent-compatible registry, to decode Confluent-framed values")
    dead_letter: bool = Field(True, description="send undecodable messages to <topic>.dlq with the reason in header dlq.reason")
    commit_interval_s: float = Field(1.0, gt=0, description="how often the offsets of envelopes handed downstream are committed")
    max_records: int = Field(0, ge=0, description="finish after this many records (0: run until stopped); for tests and replays")
    consumer_config: dict[str, str | int | float | bool] = Field(default_factory=dict, description="further librdkafka consumer settings")


def to_envelope(rec: Record) -> Envelope:
    """The envelope of a record, as ``dedup.plates`` would have made it."""
    body = rec.record
    key = "event" if rec.name == events.EVENT else "event_update"
    ms = body.get("captured_at") or body.get("last_seen") or 0
    return Envelope(camera_id=str(body.get("camera_id", "")), frame_id=rec.offset, captured_at=ms / 1000,
                    meta={key: body, "kafka": rec.position})


class KafkaSource(Source):
    """Plate events and updates from Kafka topics, as envelopes (consumer group, dead-letter topic)."""

    type_name = "source.kafka"
    Params = KafkaSourceParams

    def setup(self) -> None:
        p = self.params
        for name in ("consumed", "committed", "dead_lettered", "registry_errors"):
            self.ctx.count(name, 0)
        self.ingest = KafkaIngest(p.bootstrap_servers, p.group_id, list(p.topics), registry_url=p.schema_registry_url,
                                  dead_letter=p.dead_letter, consumer_config=dict(p.consumer_config), log=self.log,
                                  count=self.ctx.count, on_revoke=self._revoked)
        self.buffer: deque[Record] = deque()
        self.handed: list[Record] = []
        self.emitted = 0
        self.next_commit = time.monotonic() + p.commit_interval_s

    def produce(self) -> Envelope | None:
        if time.monotonic() >= self.next_commit:
            self._commit()
        if not self.buffer:
            self.buffer.extend(self.ingest.poll(500, 0.05))
            if not self.buffer:
                return None
        rec = self.buffer.popleft()
        self.handed.append(rec)
        self.emitted += 1
        if self.params.max_records and self.emitted >= self.params.max_records:
            self.finished = True
        return to_envelope(rec)

    def _commit(self) -> None:
        """Commit what was handed downstream (not what waits in ``buffer``)."""
        self.next_commit = time.monotonic() + self.params.commit_interval_s
        handed, self.handed = self.handed, []
        try:
            self.ingest.commit(handed)
        except Exception as exc:
            self.log.warning("offset commit failed: %s", exc)

    def _revoked(self, partitions: set[tuple[str, int]]) -> None:
        if self.handed:
            self._commit()  # still ours inside the revoke callback
        self.buffer = deque(r for r in self.buffer if (r.topic, r.partition) not in partitions)

    def teardown(self) -> None:
        ingest: Any = getattr(self, "ingest", None)
        if ingest is not None:
            self._commit()
            ingest.close()


STAGE_TYPES = [KafkaSource]
