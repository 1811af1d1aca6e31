"""publish.kafka against real servers: Kafka (KRaft), MinIO, a schema registry.

The servers come from ``alpr-topo services`` (the session fixture ``services``). Broker outages
are real: the test stops Kafka with ``alpr-topo services down kafka`` and starts it again. The
unreachable-broker cases that need no server use a loopback port where nothing (or a listener
that never answers) is.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest

from alpr_topo.backend import avro_wire, objectstore
from alpr_topo.core.envelope import Envelope
from alpr_topo.core.testing import StageHarness
from alpr_topo.stages import events


T0 = 1714564801.0  # 2024-05-01T12:00:01Z


# -- helpers --------------------------------------------------------------------------------------


def jpeg(value: int) -> bytes:
    image = np.full((24, 96, 3), value % 256, np.uint8)
    cv2.putText(image, str(value), (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return cv2.imencode(".jpg", image)[1].tobytes()


def event_env(i: int, camera: str = "cam1", crop: bool = False) -> Envelope:
    ev = events.make_event(camera_id=camera, captured_at=T0 + i, track_id=i, host="edge", site="gate",
                           plate={"text": f"ABC{i:04d}", "normalized_text": f"ABC{i:04d}", "confidence": 0.9},
                           extras={"seq": i})
    return Envelope(camera_id=camera, frame_id=i, captured_at=T0 + i,
                    meta={"event": ev, "images": {"plate_jpeg": jpeg(i)} if crop else {}})


def update_env(event_id: str, count: int, camera: str = "cam2") -> Envelope:
    upd = events.make_update(event_id=event_id, last_seen=T0 + 100 + count, count=count, camera_id=camera)
    return Envelope(camera_id=camera, frame_id=0, captured_at=T0, meta={"event_update": upd})


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition",
               tick: Callable[[], Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tick is not None:
            tick()
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def counters(h: StageHarness) -> dict[str, float]:
    h.stage.tick()  # copies the sender's figures into the counters, as the runtime's tick does
    return h.counters


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SilentBroker:
    """A TCP listener that accepts connections and never answers: a broker that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def publisher(tmp_path: Path, bootstrap: str, name: str = "pub", **params: Any) -> StageHarness:
    params.setdefault("spool_dir", str(tmp_path / "spool"))
    params.setdefault("topic", "t")
    params.setdefault("updates_topic", "t-updates")
    params.setdefault("retry_interval_s", 1.0)
    params.setdefault("connect_timeout_s", 2.0)
    params.setdefault("close_timeout_s", 10.0)
    h = StageHarness("publish.kafka", {"bootstrap_servers": bootstrap, **params}, name=name)
    h.start()
    return h


# -- without a broker -----------------------------------------------------------------------------


def test_unreachable_broker_spools_without_blocking_process(tmp_path: Path) -> None:
    """process() only appends to the spool: with a broker that accepts connections and never
    answers, every call returns while the sender is still inside its first connection attempt."""
    silent = SilentBroker()
    try:
        h = publisher(tmp_path, f"127.0.0.1:{silent.port}", connect_timeout_s=120.0, close_timeout_s=0.0)
        try:
            for i in range(50):
                assert h.process(event_env(i)) == []
            c = counters(h)
            assert c["spooled"] == 50 and c["spool_records"] == 50 and c["spool_bytes"] > 0
            assert c["connect_errors"] == 0 and c["connected"] == 0  # the first attempt still hangs
            assert c["delivered"] == 0
        finally:
            silent.close()  # the attempt fails now, and teardown does not wait for it
            h.close()
    finally:
        silent.close()


def test_spool_outlives_the_stage_and_is_reopened(tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{dead_port()}"
    with publisher(tmp_path, bootstrap, close_timeout_s=0.0) as h:
        for i in range(7):
            h.process(event_env(i))
        wait_until(lambda: counters(h)["connect_errors"] >= 1, what="a failed connection attempt")
    folders = [p for p in (tmp_path / "spool").iterdir() if p.is_dir()]
    assert len(folders) == 1 and list(folders[0].glob("*.seg"))
    with publisher(tmp_path, bootstrap, name="pub2", close_timeout_s=0.0) as h2:  # another instance adopts it
        h2.process(event_env(7))
        assert counters(h2)["spool_records"] == 8


def test_ignores_envelopes_without_events_and_forwards_on_request(tmp_path: Path) -> None:
    with publisher(tmp_path, f"127.0.0.1:{dead_port()}", close_timeout_s=0.0, forward=True) as h:
        out = h.process(Envelope(camera_id="cam1", frame_id=1, captured_at=T0))
        assert len(out) == 1 and counters(h)["ignored"] == 1
        [env] = h.process(event_env(1))
        assert env.meta["event"]["plate"]["normalized_text"] == "ABC0001"


# -- with Kafka -----------------------------------------------------------------------------------


class KafkaService:
    """The test broker: its address, and stopping / starting it for real."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.bootstrap = services.kafka_bootstrap

    def stop(self) -> None:
        self.services.stop("kafka")  # what `alpr-topo services down kafka` does

    def start(self) -> None:
        self.services.start("kafka")  # `alpr-topo services up kafka`, returns once it is ready


@pytest.fixture
def kafka(services: Any) -> KafkaService:
    return KafkaService(services)


def topic_names() -> tuple[str, str]:
    base = f"alpr-test-{uuid.uuid4().hex[:10]}"
    return base, base + "-updates"


def consume(bootstrap: str, topics: list[str], count: int, timeout: float = 90.0) -> list[Any]:
    """Read ``count`` messages from the start of ``topics`` (fails on fewer)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(topics)
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            got.append(msg)
    finally:
        consumer.close()
    assert len(got) >= count, f"only {len(got)} of {count} messages arrived"
    return got


def stored_count(bootstrap: str, topic: str) -> int:
    """Messages stored in ``topic`` (sum of partition high watermarks): duplicates would show."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}"})
    try:
        for attempt in range(20):  # right after a broker came back its metadata may lag a moment
            try:
                parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                return sum(high - low for low, high in
                           (consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts))
            except KafkaException:
                if attempt == 19:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")
    finally:
        consumer.close()


def by_camera(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in records:
        out.setdefault(r["camera_id"], []).append(int(r["extras"]["seq"]))
    return out


def test_events_and_updates_reach_kafka_keyed_and_decodable(tmp_path: Path, kafka: KafkaService) -> None:
    topic, updates = topic_names()
    sent = []
    with publisher(tmp_path, kafka.bootstrap, topic=topic, updates_topic=updates, compression="zstd") as h:
        for i in range(20):
            env = event_env(i, camera=f"cam{i % 3}")
            h.process(env)
            sent.append(env.meta["event"])
        h.process(update_env(sent[4]["event_id"], 2))
        wait_until(lambda: counters(h)["delivered"] == 21, what="21 deliveries")
        c = counters(h)
        assert c["spool_records"] == 0 and c["spool_bytes"] == 0 and c["connected"] == 1
        assert c["delivery_errors"] == 0 and c["spooled"] == 21
    msgs = consume(kafka.bootstrap, [topic], 20)
    decoder = avro_wire.AvroDecoder()
    got = {}
    for m in msgs:
        d = decoder.decode(m.value())
        assert d.wire == "single-object" and d.name == "event"
        assert m.key() == d.record["camera_id"].encode()
        assert dict(m.headers())["event_id"] == d.record["event_id"].encode()
        got[d.record["event_id"]] = d.record
    assert got == {e["event_id"]: e for e in sent}
    assert by_camera(list(got.values())) == by_camera(sent)
    [um] = consume(kafka.bootstrap, [updates], 1)
    upd = decoder.decode(um.value())
    assert upd.name == "event_update" and upd.record["event_id"] == sent[4]["event_id"] and upd.record["count"] == 2
    assert um.key() == b"cam1"  # the key of its event (camera of event 4), not of the sighting (cam2)
    assert stored_count(kafka.bootstrap, topic) == 20


def test_broker_outage_spools_then_replays_in_order_exactly_once(tmp_path: Path, kafka: KafkaService) -> None:
    """Stop the real broker for longer than the retry interval: events spool (process() keeps
    returning), connection attempts fail every retry_interval_s; start it: the spool is replayed
    in order, every event exactly once."""
    topic, updates = topic_names()
    sent: list[dict[str, Any]] = []

    def send(h: StageHarness, n: int) -> None:
        for _ in range(n):
            env = event_env(len(sent), camera=f"cam{len(sent) % 2}")
            assert h.process(env) == []
            sent.append(env.meta["event"])

    h = publisher(tmp_path, kafka.bootstrap, topic=topic, updates_topic=updates, retry_interval_s=2.0,
                  delivery_timeout_s=6.0, connect_timeout_s=2.0)
    try:
        send(h, 10)
        wait_until(lambda: counters(h)["delivered"] == 10, what="the first deliveries")
        kafka.stop()
        try:
            send(h, 15)  # some reach the producer before the outage is noticed
            wait_until(lambda: counters(h)["connected"] == 0, what="the outage to be noticed")
            errors_before = counters(h)["connect_errors"]
            wait_until(lambda: counters(h)["connect_errors"] >= errors_before + 2, timeout=120,
                       what="two more failed connection attempts (longer than the retry interval)")
            send(h, 15)
            c = counters(h)
            assert c["delivered"] == 10
            assert c["spool_records"] == 30 and c["spooled"] == 40
        finally:
            kafka.start()
        wait_until(lambda: counters(h)["spool_records"] == 0, timeout=180, what="the spool to drain")
        send(h, 5)
        wait_until(lambda: counters(h)["delivered"] >= 45, what="all deliveries")
        assert counters(h)["connected"] == 1
    finally:
        h.close()
    msgs = consume(kafka.bootstrap, [topic], 45)
    records = [avro_wire.AvroDecoder().decode(m.value()).record for m in msgs]
    assert sorted(r["event_id"] for r in records) == sorted(e["event_id"] for e in sent)  # none lost, none twice
    assert stored_count(kafka.bootstrap, topic) == 45  # nor stored twice
    assert by_camera(records) == by_camera(sent)  # in order per camera (= per partition)


def broker_pid(bootstrap: str) -> int:
    """The process listening on the (first) bootstrap port: the broker's JVM."""
    import psutil

    port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    raise AssertionError(f"no process listens on port {port}")


@pytest.mark.parametrize("delivery_timeout_s", [0.0, 3.0])
def test_hanging_broker(tmp_path: Path, kafka: KafkaService, delivery_timeout_s: float) -> None:
    """The broker freezes (SIGSTOP: connections stay open, nothing answers) while records are in
    flight. Default (0): the producer keeps them and delivers them once the broker thaws, each
    exactly once. With delivery_timeout_s the records time out, count as delivery errors and are
    replayed from the spool: nothing is lost, but a record the frozen broker had already read may
    be stored twice (same event_id), which is the documented at-least-once edge."""
    topic, updates = topic_names()
    sent: list[dict[str, Any]] = []
    pid = broker_pid(kafka.bootstrap)
    h = publisher(tmp_path, kafka.bootstrap, topic=topic, updates_topic=updates, retry_interval_s=1.0,
                  delivery_timeout_s=delivery_timeout_s, connect_timeout_s=2.0,
                  producer_config={"socket.timeout.ms": 1500})  # requests to the frozen broker time out and are retried
    try:
        for i in range(5):
            env = event_env(i, camera=f"cam{i % 2}")
            h.process(env)
            sent.append(env.meta["event"])
        wait_until(lambda: counters(h)["delivered"] == 5, what="the first deliveries")
        os.kill(pid, signal.SIGSTOP)
        try:
            for i in range(5, 25):
                env = event_env(i, camera=f"cam{i % 2}")
                assert h.process(env) == []
                sent.append(env.meta["event"])
            if delivery_timeout_s:
                wait_until(lambda: counters(h)["delivery_errors"] >= 1, what="records to time out")
                wait_until(lambda: counters(h)["connect_errors"] >= 1, what="a failed reconnection")
            else:
                # the fault lasts several request timeouts (librdkafka retries with the same
                # idempotent sequence numbers); there is no error to wait for: records stay in flight
                time.sleep(8)
                assert counters(h)["delivery_errors"] == 0
            assert counters(h)["spool_records"] == 20
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: counters(h)["spool_records"] == 0, timeout=120, what="the spool to drain")
    finally:
        h.close()
    stored = stored_count(kafka.bootstrap, topic)
    msgs = consume(kafka.bootstrap, [topic], stored)
    records = [avro_wire.AvroDecoder().decode(m.value()).record for m in msgs]
    assert {r["event_id"] for r in records} == {e["event_id"] for e in sent}  # nothing lost
    first: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in records:
        if r["event_id"] not in seen:
            seen.add(r["event_id"])
            first.append(r)
    assert by_camera(first) == by_camera(sent)  # in order per camera
    if delivery_timeout_s == 0:
        assert stored == len(sent)  # exactly once
    else:
        assert stored >= len(sent)


KILLED_STAGE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[3])
    from test_publish_kafka import event_env, publisher
    from pathlib import Path
    h = publisher(Path(sys.argv[1]), sys.argv[2], name="victim", close_timeout_s=0.0)
    i = 0
    while True:
        env = event_env(i, camera=f"cam{i % 2}")
        h.process(env)
        print(env.meta["event"]["event_id"], flush=True)
        i += 1
""")


def test_spool_of_a_killed_stage_is_sent_first_by_its_successor(tmp_path: Path, kafka: KafkaService) -> None:
    """kill -9 a stage while it spools (broker unreachable); a new instance of the stage adopts
    the spool and sends it, in order, before its own events; nothing lost, nothing twice."""
    topic, updates = topic_names()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_STAGE, str(tmp_path), f"127.0.0.1:{dead_port()}",
                             str(Path(__file__).parent)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    spooled: list[str] = []
    for line in proc.stdout:
        spooled.append(line.strip())
        if len(spooled) == 40:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    spooled.extend(line.strip() for line in proc.stdout)  # printed before the kill landed
    with publisher(tmp_path, kafka.bootstrap, name="successor", topic=topic, updates_topic=updates) as h:
        own = []
        for i in range(1000, 1010):
            e = event_env(i, camera=f"cam{i % 2}")
            h.process(e)
            own.append(e.meta["event"]["event_id"])
        wait_until(lambda: counters(h)["spool_records"] == 0, what="both spools to drain")
        assert counters(h)["delivered"] >= len(spooled) + 10
    stored = stored_count(kafka.bootstrap, topic)
    records = [avro_wire.AvroDecoder().decode(m.value()).record for m in consume(kafka.bootstrap, [topic], stored)]
    ids = [r["event_id"] for r in records]
    assert len(ids) == len(set(ids)) == stored  # nothing twice
    assert set(spooled) <= set(ids) and set(own) <= set(ids)  # nothing lost (kill may land after one more)
    for camera in ("cam0", "cam1"):
        mine = [r for r in records if r["camera_id"] == camera]
        seqs = [int(r["extras"]["seq"]) for r in mine]
        assert seqs == sorted(seqs)  # the dead instance's spool first, in order, then the new events
    assert not [p for p in (tmp_path / "spool").iterdir() if p.is_dir()]  # drained spools are removed


@pytest.fixture
def registry_url(services: Any) -> str:
    url = getattr(services, "registry_url", None)
    if not url:
        pytest.skip("no schema registry among the test services")
    return url


def test_schema_registry_confluent_wire_format(tmp_path: Path, kafka: KafkaService, registry_url: str) -> None:
    topic, updates = topic_names()
    with publisher(tmp_path, kafka.bootstrap, topic=topic, updates_topic=updates, schema_registry_url=registry_url) as h:
        first = event_env(1)
        h.process(first)
        h.process(update_env(first.meta["event"]["event_id"], 3))
        h.process(event_env(2))
        wait_until(lambda: counters(h)["delivered"] == 3, what="3 deliveries")
        assert counters(h)["registry_errors"] == 0
    [m1, m2] = consume(kafka.bootstrap, [topic], 2)
    [mu] = consume(kafka.bootstrap, [updates], 1)
    registry = avro_wire.SchemaRegistry(registry_url)
    # the ids are the registry's, under <topic>-value, and a fresh decoder resolves them there
    with urllib.request.urlopen(f"{registry_url}/subjects/{topic}-value/versions/latest", timeout=10) as resp:
        latest = json.loads(resp.read())
    assert m1.value()[0] == 0 and int.from_bytes(m1.value()[1:5], "big") == latest["id"]
    decoder = avro_wire.AvroDecoder(registry_url)
    d1, d2, du = decoder.decode(m1.value()), decoder.decode(m2.value()), decoder.decode(mu.value())
    assert (d1.wire, d1.name, du.name) == ("confluent", "event", "event_update")
    assert d1.record == first.meta["event"] and d2.record["extras"]["seq"] == "2"
    assert du.record["count"] == 3
    assert registry.schema(latest["id"])["name"] == "Event"


def test_decoder_resolves_an_older_writer_schema_from_the_registry(registry_url: str) -> None:
    """Schema evolution: a value written with an older Event schema (before first_seen/last_seen/
    count/reads existed) decodes to the current form with the defaults."""
    import io

    import fastavro

    old = events.schema(events.EVENT)
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("first_seen", "last_seen", "count", "reads")]
    subject = f"alpr-test-{uuid.uuid4().hex[:10]}-value"
    req = urllib.request.Request(f"{registry_url}/subjects/{subject}/versions", method="POST",
                                 data=json.dumps({"schema": json.dumps(old)}).encode(),
                                 headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        schema_id = json.loads(resp.read())["id"]
    ev = event_env(5).meta["event"]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old, named_schemas={}),
                               {k: v for k, v in ev.items() if k not in ("first_seen", "last_seen", "count", "reads")})
    decoded = avro_wire.AvroDecoder(registry_url).decode(b"\x00" + schema_id.to_bytes(4, "big") + buf.getvalue())
    assert decoded.record["plate"] == ev["plate"]
    assert (decoded.record["count"], decoded.record["reads"], decoded.record["first_seen"]) == (1, 0, None)
    with pytest.raises(avro_wire.WireFormatError, match="unknown to the registry"):
        avro_wire.AvroDecoder(registry_url).decode(b"\x00" + (987654).to_bytes(4, "big") + buf.getvalue())


# -- crops in MinIO -------------------------------------------------------------------------------


class MinioService:
    def __init__(self, services: Any) -> None:
        self.services = services
        info = services.minio
        self.endpoint, self.access_key, self.secret_key = info["host"], info["access_key"], info["secret_key"]

    def s3(self, tmp_path: Path, **extra: Any) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "access_key": self.access_key, "secret_key": self.secret_key,
                "bucket": f"alpr-test-{uuid.uuid4().hex[:8]}", "cache_dir": str(tmp_path / "crops"), **extra}

    def client(self) -> Any:
        return objectstore.make_client(self.endpoint, self.access_key, self.secret_key)


@pytest.fixture
def minio(services: Any) -> MinioService:
    return MinioService(services)


def test_crops_land_in_minio_and_the_event_url_fetches_them(tmp_path: Path, kafka: KafkaService, minio: MinioService) -> None:
    topic, updates = topic_names()
    s3 = minio.s3(tmp_path)
    vehicle = jpeg(999)
    with publisher(tmp_path, kafka.bootstrap, topic=topic, updates_topic=updates, s3=s3) as h:
        for i in range(6):
            env = event_env(i, crop=True)
            if i == 0:
                env.meta["images"]["vehicle_jpeg"] = vehicle
            h.process(env)
        wait_until(lambda: counters(h)["crops_uploaded"] == 7 and counters(h)["delivered"] == 6, what="uploads and deliveries")
        assert counters(h)["crops_pending"] == 0 and counters(h)["crop_upload_errors"] == 0
    client = minio.client()
    for m in consume(kafka.bootstrap, [topic], 6):
        ev = avro_wire.AvroDecoder().decode(m.value()).record
        i = int(ev["extras"]["seq"])
        assert ev["images"]["plate_url"] == f"s3://{s3['bucket']}/plates/2024/05/01/{ev['event_id']}.jpg"
        assert objectstore.fetch(client, ev["images"]["plate_url"]) == jpeg(i)
        if i == 0:
            assert objectstore.fetch(client, ev["images"]["vehicle_url"]) == vehicle
            assert "/vehicles/2024/05/01/" in ev["images"]["vehicle_url"]
        else:
            assert ev["images"]["vehicle_url"] is None
    assert not list((tmp_path / "crops").rglob("*.jpg"))  # the cache is emptied once uploaded


def test_http_urls_with_public_read_fetch_without_credentials(tmp_path: Path, kafka: KafkaService, minio: MinioService) -> None:
    topic, updates = topic_names()
    s3 = minio.s3(tmp_path, url_style="http", public_read=True)
    with publisher(tmp_path, kafka.bootstrap, topic=topic, updates_topic=updates, s3=s3, forward=True) as h:
        [out] = h.process(event_env(3, crop=True))
        wait_until(lambda: counters(h)["crops_uploaded"] == 1, what="the upload")
    url = out.meta["event"]["images"]["plate_url"]
    assert url.startswith(f"http://{minio.endpoint}/{s3['bucket']}/plates/2024/05/01/")
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == jpeg(3)


def test_crop_cache_survives_an_unreachable_store_and_a_restart(tmp_path: Path, minio: MinioService) -> None:
    """Uploads to a store that does not answer fail and are retried with backoff; what is still
    cached at stop is uploaded by the next start."""
    bucket = f"alpr-test-{uuid.uuid4().hex[:8]}"
    cache = tmp_path / "crops"
    down = objectstore.CropStore(endpoint=f"127.0.0.1:{dead_port()}", access_key=minio.access_key,
                                 secret_key=minio.secret_key, bucket=bucket, cache_dir=cache,
                                 retry_initial_s=0.2, retry_max_s=0.5, timeout_s=2)
    down.start()
    keys = [objectstore.object_key(f"evt-{i}", int(T0 * 1000), "plate") for i in range(5)]
    urls = [down.put(k, jpeg(i)) for i, k in enumerate(keys)]
    wait_until(lambda: down.stats["upload_errors"] >= 3, what="retries")
    down.close(timeout_s=1)
    assert down.pending == 5 and len(list(cache.rglob("*.jpg"))) == 5
    up = objectstore.CropStore(endpoint=minio.endpoint, access_key=minio.access_key, secret_key=minio.secret_key,
                               bucket=bucket, cache_dir=cache)
    up.start()
    wait_until(lambda: up.stats["uploaded"] == 5, what="the leftovers to upload")
    up.close()
    client = minio.client()
    assert [objectstore.fetch(client, u) for u in urls] == [jpeg(i) for i in range(5)]
    assert not list(cache.rglob("*.jpg"))


def test_crop_store_outage_and_bound(tmp_path: Path, minio: MinioService) -> None:
    """A full cache drops the oldest crops (counted); the rest is uploaded once the store answers."""
    bucket = f"alpr-test-{uuid.uuid4().hex[:8]}"
    size = len(jpeg(0))
    store = objectstore.CropStore(endpoint=f"127.0.0.1:{dead_port()}", access_key=minio.access_key,
                                  secret_key=minio.secret_key, bucket=bucket, cache_dir=tmp_path / "c",
                                  max_cache_bytes=int(size * 3.5), retry_initial_s=0.2, retry_max_s=0.2, timeout_s=2)
    store.start()
    keys = [objectstore.object_key(f"evt-{i}", int(T0 * 1000)) for i in range(6)]
    for i, k in enumerate(keys):
        store.put(k, jpeg(i))
    store.close(timeout_s=0)
    assert store.stats["dropped"] >= 2 and store.pending == 6 - store.stats["dropped"]
    kept = sorted(p.name for p in (tmp_path / "c").rglob("*.jpg"))
    assert kept == sorted(k.rsplit("/", 1)[1] for k in keys[store.stats["dropped"]:])  # the newest survive


# -- in a topology --------------------------------------------------------------------------------


@pytest.mark.slow
def edge_topology(name: str, kafka_params: dict[str, Any], *, width: int, height: int, seconds: float, vehicles: int,
                  seed: int) -> str:
    """Synthetic traffic -> detect -> track -> ocr -> dedup, fanned out to publish.local and
    publish.kafka (``kafka_params``): the local sink's file is what Kafka must end up holding."""
    return textwrap.dedent(f"""
        name: {name}
        stages:
          camera:
            type: source.synthetic
            params: {{camera_id: synth, width: {width}, height: {height}, fps: 6, duration_s: {seconds},
                      vehicles: {vehicles}, max_simultaneous: 1, seed: {seed}}}
          detect:
            type: detect.plates
            inputs: [camera]
            params: {{max_side: 640, batch_size: 1, retry_enhanced: false, classic_fallback: false, threads: 1}}
          track:
            type: track.bytetrack
            inputs: [detect]
            params: {{kinds: [plate], fps: 6}}
          ocr:
            type: ocr.plate
            inputs: [track]
            params: {{reader: ppocr, regions: [us, eu], threads: 1}}
          dedup:
            type: dedup.plates
            inputs: [ocr]
          local:
            type: publish.local
            inputs: [dedup]
            params: {{path: out/events.jsonl, print_events: false}}
          kafka:
            type: publish.kafka
            inputs: [dedup]
            params: {json.dumps(kafka_params)}
        """)


def test_topology_synthetic_traffic_to_kafka_and_minio(tmp_path: Path, start_run: Any, kafka: KafkaService,
                                                       minio: MinioService) -> None:
    """source.synthetic -> detect -> track -> ocr -> dedup, fanned out to publish.local and
    publish.kafka under ``alpr-topo up``: Kafka holds exactly the events the local sink wrote,
    each once, and each event's plate_url fetches the same crop from MinIO."""
    from alpr_topo.stages.publish import read_events

    topic, updates = topic_names()
    s3 = minio.s3(tmp_path)
    params = {"bootstrap_servers": kafka.bootstrap, "topic": topic, "updates_topic": updates,
              "spool_dir": "out/spool", "retry_interval_s": 2, "s3": s3}
    run = start_run(edge_topology(f"kafka-{uuid.uuid4().hex[:6]}", params, width=1280, height=720, seconds=12,
                                  vehicles=3, seed=3), "--duration", "300")
    assert run.wait(280) == 0, run.output()
    local = read_events(tmp_path / "out" / "events.jsonl")
    assert local, run.output()
    stored = stored_count(kafka.bootstrap, topic)
    assert stored == len(local)
    client = minio.client()
    for m in consume(kafka.bootstrap, [topic], stored):
        ev = avro_wire.AvroDecoder().decode(m.value()).record
        mine = local[ev["event_id"]]
        assert m.key() == b"synth"
        assert ev["plate"] == mine["plate"] and ev["captured_at"] == mine["captured_at"]
        crop = (tmp_path / "out" / mine["images"]["plate_url"]).read_bytes()
        assert objectstore.fetch(client, ev["images"]["plate_url"]) == crop
    assert not [p for p in (tmp_path / "out" / "spool").iterdir() if p.is_dir()]  # all delivered


@pytest.mark.parametrize("who", ["client", "broker"])
def test_a_record_kafka_refuses_for_good_does_not_block_the_spool(tmp_path: Path, kafka: KafkaService, who: str) -> None:
    """A record larger than Kafka accepts (refused by the client's own limit, or, with a larger
    client limit, by the broker) is rejected and written to rejected.jsonl; the records after it
    are delivered."""
    topic, updates = topic_names()
    extra = {"producer_config": {"message.max.bytes": 8_000_000}} if who == "broker" else {}
    with publisher(tmp_path, kafka.bootstrap, topic=topic, updates_topic=updates, compression="none", **extra) as h:
        h.process(event_env(0))
        big = event_env(1)
        big.meta["event"]["extras"]["blob"] = os.urandom(1_500_000).hex()  # 3 MB, past the broker's 1 MiB
        h.process(big)
        h.process(event_env(2))
        wait_until(lambda: counters(h)["delivered"] == 2 and counters(h)["rejected"] == 1, what="2 deliveries, 1 rejection")
        wait_until(lambda: counters(h)["spool_records"] == 0, what="the spool to drain")
    rejected = [json.loads(line) for line in (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()]
    assert [r["record"]["event_id"] for r in rejected] == [big.meta["event"]["event_id"]]
    assert "too large" in rejected[0]["reason"].lower() or "size" in rejected[0]["reason"].lower()
    seqs = [avro_wire.AvroDecoder().decode(m.value()).record["extras"]["seq"] for m in consume(kafka.bootstrap, [topic], 2)]
    assert sorted(seqs) == ["0", "2"]


@pytest.mark.slow
def test_hot_swap_of_publish_kafka_loses_and_repeats_nothing(tmp_path: Path, start_run: Any, kafka: KafkaService) -> None:
    """``alpr-topo swap`` replaces the Kafka stage mid-run (new compression): the old instance
    drains its spool, the new one takes over; Kafka ends with exactly the local sink's events."""
    from alpr_topo.stages.publish import read_events

    topic, updates = topic_names()
    params = {"bootstrap_servers": kafka.bootstrap, "topic": topic, "updates_topic": updates,
              "spool_dir": "out/spool", "retry_interval_s": 2, "compression": "lz4"}
    run = start_run(edge_topology(f"kswap-{uuid.uuid4().hex[:6]}", params, width=960, height=540, seconds=18,
                                  vehicles=4, seed=5), "--duration", "300")

    def delivered() -> float:
        return sum(row["counters"].get("delivered", 0) for row in run.stage_rows("kafka"))

    run.wait_for(lambda: delivered() >= 1, timeout=200, what="a first delivery")
    run.cli("swap", "kafka", "--set", "compression=zstd")
    assert run.wait(280) == 0, run.output()
    local = read_events(tmp_path / "out" / "events.jsonl")
    stored = stored_count(kafka.bootstrap, topic)
    records = [avro_wire.AvroDecoder().decode(m.value()).record for m in consume(kafka.bootstrap, [topic], stored)]
    assert sorted(r["event_id"] for r in records) == sorted(local)  # each once
    assert not [p for p in (tmp_path / "out" / "spool").iterdir() if p.is_dir()]
