"""``publish.kafka``: plate events and updates to Kafka, through a durable on-disk spool.

Takes the envelopes of ``dedup.plates`` (``env.meta["event"]`` with ``env.meta["images"]``,
``env.meta["event_update"]``; docs/events.md) and sends each record to Kafka as Avro
(:mod:`alpr_topo.backend.avro_wire`), keyed by camera id. docs/kafka.md is the user's page.

**Write-ahead spool.** ``process`` never talks to the network: it validates and encodes the
record, appends it to the spool (:mod:`alpr_topo.backend.spool`, fsynced per ``fsync``) and
returns. A sender thread reads the spool in order, hands records to an idempotent
``confluent_kafka.Producer`` (``acks=all``) and removes them from the spool only when their
delivery report says the broker has them. Every record passes the spool, not only those of an
outage, because that is the only way a ``kill -9`` or a power cut between "handed to the client"
and "acknowledged by the broker" loses nothing: the client's queue is memory.

**Outages.** librdkafka's "all brokers down" (or a failed delivery report) marks the broker
unreachable: the sender stops handing records to the producer and, every ``retry_interval_s``,
asks the cluster for metadata (with a new producer if the old one was dropped). Once that
answers, the spool is sent on in order. Records already handed over stay with the producer,
which retries them itself (idempotently: no duplicates) unless ``delivery_timeout_s`` is set;
then a timed-out record is a delivery error: the sender waits for the reports of everything in
flight, rewinds to the oldest record not delivered, drops the producer and replays from the
spool after reconnecting. Meanwhile ``process`` keeps appending, so the vision pipeline never
waits for Kafka.

**Restarts and hot swaps.** Each stage instance spools into a folder of its own,
``<spool_dir>/<instance>``, locked while in use. On start, and at every reconnect attempt, an
instance adopts unlocked sibling folders left by earlier instances of the same stage (a crash,
a restart, the old side of a hot swap once it stopped) and sends their records before its own.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field

from ..backend import avro_wire
from ..backend.spool import Spool, SpoolError, SpoolLocked
from ..core.envelope import Envelope
from ..core.stage import Stage, StageParams
from . import events

__all__ = ["KafkaPublishParams", "S3Params", "KafkaPublish", "STAGE_TYPES"]

#: librdkafka errors after which retrying the same record cannot help
_PERMANENT = {"MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE", "INVALID_RECORD", "RECORD_LIST_TOO_LARGE",
              "_INVALID_ARG", "INVALID_REQUIRED_ACKS", "UNSUPPORTED_FOR_MESSAGE_FORMAT", "CORRUPT_MESSAGE"}
COUNTERS = ("spooled", "delivered", "delivery_errors", "spool_bytes", "spool_records", "spool_dropped",
            "connect_errors", "connected", "rejected", "invalid_events", "ignored", "registry_errors")
CROP_COUNTERS = ("crops_queued", "crops_uploaded", "crop_upload_errors", "crops_pending", "crops_dropped")


class S3Params(BaseModel):
    """Where plate crops go (an S3-compatible object store such as MinIO)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(..., description="host:port of the S3 API (e.g. localhost:9000), or its http(s):// URL")
    access_key: str = Field(..., description="access key (use ${ALPR_S3_ACCESS_KEY} in YAML)")
    secret_key: str = Field(..., description="secret key (use ${ALPR_S3_SECRET_KEY} in YAML)")
    bucket: str = Field("alpr-crops", min_length=3, description="bucket, created when missing")
    secure: bool = Field(False, description="https instead of http")
    region: str | None = Field(None, description="region name, if the store needs one")
    cache_dir: str = Field("spool/crops-{name}-{replica}", description="local folder of crops not yet uploaded ('{name}', '{replica}')")
    max_cache_bytes: int = Field(1024 ** 3, ge=1024, description="bound of the cache folder; the oldest crops are dropped past it (crops_dropped)")
    url_style: Literal["s3", "http"] = Field("s3", description="images.*_url as s3://bucket/key, or an http URL (path style) fetchable with public_read")
    public_base_url: str | None = Field(None, description="with url_style http: base URL in front of the key instead of http(s)://endpoint/bucket")
    public_read: bool = Field(False, description="set a bucket policy allowing anonymous GET of the image prefixes")
    vehicle_images: bool = Field(True, description="also upload the vehicle crop when the event carries one")
    frame_images: bool = Field(True, description="also upload the whole frame when the event carries one")
    retry_max_s: float = Field(60.0, gt=0, description="longest wait between upload retries (backoff doubles from 1 s)")
    timeout_s: float = Field(10.0, gt=0, description="timeout of one S3 request")


class KafkaPublishParams(StageParams):
    bootstrap_servers: str = Field("localhost:9092", min_length=1, description="Kafka brokers, host:port[,host:port]")
    topic: str = Field("alpr.events", min_length=1, description="topic of plate events")
    updates_topic: str = Field("alpr.event-updates", min_length=1, description="topic of update messages (may equal topic)")
    schema_registry_url: str | None = Field(None, description="Confluent-compatible schema registry API base: Confluent wire format with subject <topic>-value; without it, Avro single-object encoding")
    compression: Literal["lz4", "zstd", "gzip", "snappy", "none"] = Field("lz4", description="compression of message batches")
    linger_ms: int = Field(20, ge=0, le=60000, description="how long the producer waits to fill a batch")
    retry_interval_s: float = Field(30.0, gt=0, description="seconds between connection attempts while the broker is unreachable")
    connect_timeout_s: float = Field(5.0, gt=0, description="how long one connection attempt (a metadata request) may take")
    delivery_timeout_s: float = Field(0.0, ge=0, description="0 (default): the producer retries a record it was handed until the broker has it (no duplicates); > 0: a record not acknowledged within this time is a delivery error, taken back and sent again from the spool after reconnecting (it may then be stored twice, with the same event_id)")
    max_in_flight: int = Field(1000, ge=1, description="records handed to the producer and not yet acknowledged, at most")
    spool_dir: str = Field("spool/{name}", min_length=1, description="spool folder of this stage; each instance spools into <spool_dir>/<instance> ('{name}', '{replica}' are replaced)")
    spool_max_bytes: int = Field(256 * 1024 ** 2, ge=64 * 1024, description="bound of one instance's spool; past it the oldest records are dropped (spool_dropped)")
    spool_segment_bytes: int = Field(8 * 1024 ** 2, ge=4096, description="size of one spool segment file")
    fsync: Literal["always", "batch", "never"] = Field("always", description="fsync the spool after every record, at most every fsync_interval_s, or never (a crash of the process loses nothing either way; a power cut may lose unsynced records)")
    fsync_interval_s: float = Field(1.0, gt=0, description="seconds between fsyncs with fsync: batch")
    create_topics: bool = Field(True, description="create missing topics on connecting")
    partitions: int = Field(-1, ge=-1, description="partitions of created topics; -1 = the broker's default")
    replication_factor: int = Field(-1, ge=-1, description="replication factor of created topics; -1 = the broker's default")
    close_timeout_s: float = Field(10.0, ge=0, description="at stop, how long to keep delivering what is spooled while the broker answers (the rest stays spooled)")
    check_schema: bool = Field(True, description="validate each record against the Avro schema first (problems are logged and counted as invalid_events)")
    producer_config: dict[str, str | int | float | bool] = Field(default_factory=dict, description="further librdkafka settings (security.protocol, sasl.*, ssl.*, ...)")
    s3: S3Params | None = Field(None, description="upload plate crops to this object store; images.plate_url then points at the object")
    forward: bool = Field(False, description="pass envelopes on (with the image URLs filled in) to stages downstream")


@dataclass
class _Flight:
    """A record handed to the producer: where it lives in which spool, and its fate."""

    spool: Spool
    seq: int
    payload: bytes = b""
    done: bool = False
    failed: bool = False


class _Sender(threading.Thread):
    """Reads the spools in order and feeds the producer; all Kafka calls happen here."""

    def __init__(self, stage: "KafkaPublish") -> None:
        super().__init__(name="kafka-sender", daemon=True)
        self.stage = stage
        self.p: KafkaPublishParams = stage.params
        self.log = stage.log
        self.own: Spool = stage.spool
        self.spools: list[Spool] = []  # adopted spools first, own last
        self.cursor: dict[int, int] = {}  # id(spool) -> next seq to read
        self.inflight: deque[_Flight] = deque()
        self.delivered_ahead: set[tuple[int, int]] = set()  # delivered behind a failed record
        self.producer: Any = None
        self.healthy = False
        self.rewind = False
        self.next_probe = 0.0
        self.stopping = False
        self.deadline: float | None = None
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.stats: dict[str, int] = {k: 0 for k in ("delivered", "delivery_errors", "connect_errors", "rejected", "registry_errors")}
        self.encoder = avro_wire.AvroEncoder(avro_wire.SchemaRegistry(self.p.schema_registry_url) if self.p.schema_registry_url else None)
        self.topics_created = False
        self.adopt()
        self.spools.append(self.own)

    # -- spools ------------------------------------------------------------------------------------

    def adopt(self) -> None:
        """Open sibling spool folders whose owner is gone (older first) and queue them."""
        root = self.own.path.parent
        known = {s.path for s in self.spools} | {self.own.path}
        found = []
        for folder in root.iterdir() if root.is_dir() else []:
            if folder.is_dir() and folder not in known and (folder / "lock").exists():
                found.append(folder)
        found.sort(key=lambda f: (f / "lock").stat().st_mtime)
        adopted = []
        for folder in found:
            try:
                spool = Spool(folder, max_bytes=self.p.spool_max_bytes, segment_bytes=self.p.spool_segment_bytes,
                              fsync=self.p.fsync, fsync_interval_s=self.p.fsync_interval_s)
            except SpoolLocked:
                continue  # its instance is still running (a hot swap in progress)
            except (OSError, SpoolError) as exc:
                self.log.error("cannot open spool %s: %s", folder, exc)
                continue
            if spool.records:
                self.log.info("adopted spool %s: %d records of an earlier instance", folder, spool.records)
            adopted.append(spool)
        if adopted:
            with self.lock:
                at = len(self.spools) - 1 if self.own in self.spools else len(self.spools)
                self.spools[at:at] = adopted

    def retire_drained(self) -> None:
        """Delete adopted spools that are empty and have nothing in flight."""
        busy = {id(f.spool) for f in self.inflight}
        for spool in [s for s in self.spools if s is not self.own]:
            if spool.records == 0 and id(spool) not in busy:
                with self.lock:
                    self.spools.remove(spool)
                spool.close()
                shutil.rmtree(spool.path, ignore_errors=True)
                self.cursor.pop(id(spool), None)

    def totals(self) -> tuple[int, int, int]:
        with self.lock:
            spools = list(self.spools)
        return (sum(s.records for s in spools), sum(s.bytes for s in spools), sum(s.dropped for s in spools))

    # -- producer ----------------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        p = self.p
        return {
            "bootstrap.servers": p.bootstrap_servers,
            "client.id": f"alpr-topo-{self.stage.ctx.instance}",
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": p.compression,
            "linger.ms": p.linger_ms,
            "message.timeout.ms": int(p.delivery_timeout_s * 1000),
            "socket.connection.setup.timeout.ms": max(1000, int(p.connect_timeout_s * 1000)),
            "reconnect.backoff.max.ms": max(100, int(p.retry_interval_s * 1000)),
            "logger": logging.getLogger(f"{self.log.name}.librdkafka"),
            "error_cb": self._on_error,
            **p.producer_config,
        }

    def _on_error(self, err: Any) -> None:
        """librdkafka's global errors: "all brokers down" pauses feeding until a probe answers."""
        if err.fatal():
            self.log.error("Kafka producer fatal error: %s; a new producer will be made", err)
            self._down(rewind=True)
        elif err.name() == "_ALL_BROKERS_DOWN":
            # also reported when an idle connection was closed: check at once, then back off
            if self.healthy:
                self.log.warning("Kafka unreachable (%s): spooling", err.str())
            self._down(rewind=False, probe_now=True)
        else:  # one broker's connection trouble: librdkafka retries, deliveries tell the rest
            self.log.debug("Kafka: %s", err.str())

    def _down(self, rewind: bool, probe_now: bool = False) -> None:
        if self.healthy:
            self.next_probe = time.monotonic() if probe_now else time.monotonic() + self.p.retry_interval_s
        self.healthy = False
        self.rewind = self.rewind or rewind

    def probe(self) -> None:
        """One connection attempt: a producer and a metadata request (topics created if asked)."""
        from confluent_kafka import Producer

        try:
            if self.producer is None:
                self.producer = Producer(self._config())
            md = self._metadata()
            if self.p.create_topics and not self.topics_created:
                self._create_topics(set(md.topics))
        except Exception as exc:
            self.stats["connect_errors"] += 1
            self.next_probe = time.monotonic() + self.p.retry_interval_s
            self.log.info("Kafka %s unreachable (%s); next attempt in %.0f s", self.p.bootstrap_servers, exc, self.p.retry_interval_s)
            if not self.inflight:
                self.producer = None  # no background reconnects between attempts
            return
        self.log.info("Kafka %s reachable: sending %d spooled records", self.p.bootstrap_servers, self.totals()[0])
        self.healthy = True

    def _metadata(self) -> Any:
        """Cluster metadata within ``connect_timeout_s``, asked in slices of at most 1 s so a
        stop does not wait for a hanging broker."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + self.p.connect_timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                md = self.producer.list_topics(timeout=max(0.05, min(1.0, left)))
                if md.brokers:
                    return md
                error: Exception = KafkaException("no brokers in metadata")
            except KafkaException as exc:
                error = exc
            if left <= 1.0 or self.stopping:
                raise error

    def _create_topics(self, existing: set[str]) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        wanted = [t for t in dict.fromkeys((self.p.topic, self.p.updates_topic)) if t not in existing]
        if wanted:
            conf = {k: v for k, v in self.p.producer_config.items()
                    if k.split(".")[0] in ("security", "sasl", "ssl", "client")}
            admin = AdminClient({"bootstrap.servers": self.p.bootstrap_servers, **conf})
            futures = admin.create_topics([NewTopic(t, self.p.partitions, self.p.replication_factor) for t in wanted],
                                          request_timeout=self.p.connect_timeout_s)
            for topic, fut in futures.items():
                try:
                    fut.result(timeout=self.p.connect_timeout_s + 5)
                    self.log.info("created topic %s", topic)
                except Exception as exc:
                    if "TOPIC_ALREADY_EXISTS" not in str(exc):
                        raise
        self.topics_created = True

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> None:
        next_adopt = time.monotonic() + self.p.retry_interval_s
        while True:
            now = time.monotonic()
            if self.stopping and (self.deadline is None or now >= self.deadline or not self.healthy
                                  or (self.totals()[0] == 0 and not self.inflight)):
                break
            try:
                if now >= next_adopt:  # e.g. the old instance of a hot swap left records behind
                    self.adopt()
                    next_adopt = now + self.p.retry_interval_s
                if not self.healthy and not self.rewind and now >= self.next_probe:
                    self.probe()
                if self.healthy and not self.rewind:
                    self.feed()
                if self.producer is not None:
                    self.producer.poll(0.05 if self.inflight else 0)
                self.settle()
                self.retire_drained()
                self.stage._sync_due()
            except Exception:  # never let the thread die: start over from the spools
                self.log.exception("Kafka sender failed; retrying in %.0f s", self.p.retry_interval_s)
                self.inflight.clear()
                self.cursor.clear()
                self.producer, self.healthy, self.rewind = None, False, False
                self.next_probe = time.monotonic() + self.p.retry_interval_s
            if not self.inflight:
                wait = 0.5 if self.healthy else max(0.0, min(0.5, self.next_probe - time.monotonic()))
                self.wake.wait(wait)
                self.wake.clear()
        try:
            self.finish()
        except Exception:
            self.log.exception("Kafka sender: stopping failed (undelivered records stay spooled)")

    def feed(self) -> None:
        """Hand spooled records to the producer, oldest spool first, up to ``max_in_flight``."""
        from confluent_kafka import KafkaException

        with self.lock:
            spools = list(self.spools)
        for spool in spools:
            while len(self.inflight) < self.p.max_in_flight and self.healthy:
                room = self.p.max_in_flight - len(self.inflight)
                batch = spool.read(self.cursor.get(id(spool), 0), max_records=min(room, 500))
                if not batch:
                    break
                for seq, payload in batch:
                    flight = _Flight(spool, seq, payload)
                    if (id(spool), seq) in self.delivered_ahead:
                        self.delivered_ahead.discard((id(spool), seq))
                        flight.done = True  # already in Kafka: do not send it twice
                        self.inflight.append(flight)
                        self.cursor[id(spool)] = seq + 1
                        continue
                    try:
                        topic, key, value, headers = self._message(payload)
                    except avro_wire.RegistryError as exc:
                        self.stats["registry_errors"] += 1
                        self.log.warning("schema registry: %s; retrying in %.0f s", exc, self.p.retry_interval_s)
                        self._down(rewind=False)
                        return
                    except Exception as exc:  # a record that can never be sent
                        self._reject(flight, payload, f"cannot frame: {exc}")
                        self.cursor[id(spool)] = seq + 1
                        continue
                    try:
                        self.producer.produce(topic, value=value, key=key, headers=headers,
                                              on_delivery=lambda err, msg, f=flight: self._delivered(f, err))
                    except BufferError:
                        self.producer.poll(0.1)
                        return
                    except KafkaException as exc:
                        self._reject(flight, payload, str(exc))
                        self.cursor[id(spool)] = seq + 1
                        continue
                    self.inflight.append(flight)
                    self.cursor[id(spool)] = seq + 1
            if len(self.inflight) >= self.p.max_in_flight:
                return

    def _message(self, payload: bytes) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
        kind, key, single, event_id = msgpack.unpackb(payload)
        topic = self.p.updates_topic if kind == events.UPDATE else self.p.topic
        value = self.encoder.frame(single, topic)
        return topic, key.encode(), value, [("event_id", str(event_id).encode())]

    def _reject(self, flight: _Flight, payload: bytes, why: str) -> None:
        self.stats["rejected"] += 1
        self.log.error("record %d of spool %s rejected for good: %s", flight.seq, flight.spool.path, why)
        self.stage._write_rejected(why, payload=payload)
        flight.done = True
        self.inflight.append(flight)

    def _delivered(self, flight: _Flight, err: Any) -> None:
        if err is None:
            flight.done = True
            self.stats["delivered"] += 1
            return
        if err.name() in ("_PURGE_QUEUE", "_PURGE_INFLIGHT"):  # our own purge at stop: stays spooled
            flight.failed = True
            return
        self.stats["delivery_errors"] += 1
        if err.name() in _PERMANENT:
            self.stats["rejected"] += 1
            self.log.error("record %d of spool %s rejected by Kafka: %s", flight.seq, flight.spool.path, err)
            self.stage._write_rejected(f"refused by Kafka: {err.str()}", payload=flight.payload)
            flight.done = True
            return
        flight.failed = True
        if self.healthy:
            self.log.warning("delivery failed (%s): spooling until Kafka answers again", err)
        self._down(rewind=True)

    def settle(self) -> None:
        """Acknowledge the delivered prefix; after a failure, rewind once nothing is in flight."""
        last: dict[int, tuple[Spool, int]] = {}
        while self.inflight and self.inflight[0].done:
            f = self.inflight.popleft()
            last[id(f.spool)] = (f.spool, f.seq)
        for spool, seq in last.values():
            spool.ack(seq)
        if self.rewind and all(f.done or f.failed for f in self.inflight):
            for f in self.inflight:
                if f.done:
                    self.delivered_ahead.add((id(f.spool), f.seq))
            self.inflight.clear()
            self.cursor.clear()  # read again from each spool's head
            self.rewind = False
            self.producer = None  # a fresh producer (and idempotence session) after an outage
            self.next_probe = max(self.next_probe, time.monotonic() + self.p.retry_interval_s)

    def finish(self) -> None:
        """At stop: deliver what is in flight (briefly), then leave the rest spooled."""
        if self.producer is not None:
            if self.healthy and self.inflight:
                self.producer.flush(max(0.0, (self.deadline or 0) - time.monotonic()) + 1.0)
            self.producer.purge()
            self.producer.poll(0)
            self.settle()
            self.producer = None

    def stop(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.stopping = True
        self.wake.set()
        self.join(timeout_s + self.p.connect_timeout_s + 10)


class KafkaPublish(Stage):
    """Sends plate events and updates to Kafka as Avro, through a durable spool; crops to S3."""

    type_name = "publish.kafka"
    Params = KafkaPublishParams
    params: KafkaPublishParams

    def setup(self) -> None:
        import confluent_kafka  # noqa: F401  (fail the start with a clear message when missing)

        p = self.params
        root = Path(p.spool_dir.replace("{name}", self.ctx.name).replace("{replica}", str(self.ctx.replica)))
        self.spool_root = root
        self.spool = Spool(root / self.ctx.instance.replace(os.sep, "_"), max_bytes=p.spool_max_bytes,
                           segment_bytes=p.spool_segment_bytes, fsync=p.fsync, fsync_interval_s=p.fsync_interval_s)
        for name in COUNTERS:
            self.ctx.counters.setdefault(name, 0.0)
        self.crops = None
        if p.s3 is not None:
            from ..backend.objectstore import CropStore

            s3 = p.s3
            for name in CROP_COUNTERS:
                self.ctx.counters.setdefault(name, 0.0)
            self.crops = CropStore(
                endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, bucket=s3.bucket,
                cache_dir=s3.cache_dir.replace("{name}", self.ctx.name).replace("{replica}", str(self.ctx.replica)),
                secure=s3.secure, region=s3.region, url_style=s3.url_style, public_base_url=s3.public_base_url,
                public_read=s3.public_read, max_cache_bytes=s3.max_cache_bytes, retry_max_s=s3.retry_max_s,
                timeout_s=s3.timeout_s, fsync=p.fsync == "always", logger=self.log)
            self.crops.start()
        #: event_id -> camera of events sent by this instance, so updates share their event's key
        self.event_cameras: OrderedDict[str, str] = OrderedDict()
        self.rejected = 0  # records refused before they reached the spool
        self.sender = _Sender(self)
        self.sender.start()
        self._publish_counters()

    # -- stage API ---------------------------------------------------------------------------------

    def process(self, env: Envelope) -> Envelope | None:
        event = env.meta.get("event")
        update = env.meta.get("event_update")
        if isinstance(event, dict):
            record = self._with_images(dict(event), env.meta.get("images") or {})
            env.meta["event"] = record
            self._remember(record)
            key = str(record.get("camera_id", env.camera_id))
        elif isinstance(update, dict):
            record = {"type": "update", **update}
            key = self.event_cameras.get(str(record.get("event_id")), str(record.get("camera_id", env.camera_id)))
        else:
            self.ctx.count("ignored")
            return env if self.params.forward else None
        self._spool(record, key)
        self._publish_counters()
        return env if self.params.forward else None

    def tick(self) -> None:
        self._publish_counters()
        return None

    def teardown(self) -> None:
        sender = getattr(self, "sender", None)
        if sender is not None:
            sender.stop(self.params.close_timeout_s)
        if getattr(self, "crops", None) is not None:
            self.crops.close(self.params.close_timeout_s)
        if sender is None or not hasattr(self, "spool"):  # setup failed half way
            if hasattr(self, "spool"):
                self.spool.close()
            return
        self._publish_counters()
        left = self.spool.records
        self.spool.close()
        for spool in (sender.spools if sender is not None else []):
            if spool is not self.spool:
                spool.close()
        if left == 0:
            shutil.rmtree(self.spool.path, ignore_errors=True)
        c = self.ctx.counters
        self.log.info("%s: %d delivered, %d still spooled in %s, %d delivery errors", self.ctx.name,
                      int(c.get("delivered", 0)), int(c.get("spool_records", 0)), self.spool_root, int(c.get("delivery_errors", 0)))

    # -- records -----------------------------------------------------------------------------------

    def _with_images(self, event: dict[str, Any], images: dict[str, Any]) -> dict[str, Any]:
        """Queue the crops for upload and put their future URLs into the event."""
        if self.crops is None:
            return event
        from ..backend.objectstore import object_key

        s3 = self.params.s3
        assert s3 is not None
        wanted = {"plate": True, "vehicle": s3.vehicle_images, "frame": s3.frame_images}
        event["images"] = dict(event.get("images") or {})
        for kind, use in wanted.items():
            data = images.get(f"{kind}_jpeg")
            if not use or not isinstance(data, (bytes, bytearray, memoryview)) or not data:
                continue
            key = object_key(str(event["event_id"]), event.get("captured_at"), kind)
            try:
                event["images"][f"{kind}_url"] = self.crops.put(key, bytes(data))
            except OSError as exc:  # a full disk must not stop the event itself
                self.log.error("cannot cache crop %s: %s", key, exc)
        return event

    def _remember(self, event: dict[str, Any]) -> None:
        self.event_cameras[str(event.get("event_id"))] = str(event.get("camera_id"))
        while len(self.event_cameras) > 10000:
            self.event_cameras.popitem(last=False)

    def _spool(self, record: dict[str, Any], key: str) -> None:
        name = avro_wire.schema_name_of(record)
        if self.params.check_schema:
            try:
                events.validate(record, name)
            except events.EventError as exc:
                self.ctx.count("invalid_events")
                self.log.error("%s %s does not match the schema: %s", name, record.get("event_id"), exc)
        try:
            single = avro_wire.encode_single_object(record, name)
        except Exception as exc:  # not representable in Avro at all: keep it aside, visibly
            self.rejected += 1
            self._write_rejected(f"cannot encode: {exc}", record=record)
            return
        payload = msgpack.packb([name, key, single, str(record.get("event_id"))], use_bin_type=True)
        try:
            self.spool.append(payload)
        except (SpoolError, OSError) as exc:  # larger than the whole spool, or the disk is full
            self.rejected += 1
            self._write_rejected(str(exc), record=record)
            return
        self.ctx.count("spooled")
        self.sender.wake.set()

    def _write_rejected(self, why: str, record: dict[str, Any] | None = None, payload: bytes | None = None) -> None:
        """Records that can never be sent go to ``<spool_dir>/rejected.jsonl`` for a person."""
        import json

        try:
            if record is None and payload is not None:
                single = msgpack.unpackb(payload)[2]
                record = avro_wire.AvroDecoder().decode(single).record
            line = json.dumps({"reason": why, "record": events.to_json_obj(record) if record else None}, default=str)
            self.spool_root.mkdir(parents=True, exist_ok=True)
            with open(self.spool_root / "rejected.jsonl", "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except Exception as exc:
            self.log.error("cannot write rejected record: %s", exc)

    def _sync_due(self) -> None:
        """Called by the sender thread: the batch fsync also happens when no record comes."""
        if self.params.fsync == "batch":
            self.spool.sync_if_due()

    def _publish_counters(self) -> None:
        """Copy the sender's and uploader's figures into ``ctx.counters`` (this thread only, so
        the heartbeat never sees the dict change size under it)."""
        s = self.sender
        records, size, dropped = s.totals()
        c = self.ctx.counters
        c.update({k: float(v) for k, v in s.stats.items()})
        c["rejected"] = float(s.stats["rejected"] + self.rejected)
        c["spool_records"], c["spool_bytes"], c["spool_dropped"] = float(records), float(size), float(dropped)
        c["connected"] = 1.0 if s.healthy else 0.0
        if self.crops is not None:
            st = self.crops.stats
            c["crops_queued"], c["crops_uploaded"] = float(st["queued"]), float(st["uploaded"])
            c["crop_upload_errors"], c["crops_dropped"] = float(st["upload_errors"]), float(st["dropped"])
            c["crops_pending"] = float(self.crops.pending)


STAGE_TYPES = [KafkaPublish]
