"""The query API against real PostgreSQL, OpenSearch and MinIO (the ``services`` fixture).

Events go into the stores the way the sinks put them there: rows made by ``sink.postgres``'s
``event_row`` in the schema of its migrations (a schema of their own per test run), documents
with ``sink.opensearch``'s index template and daily index names (a prefix of their own), and a
crop uploaded to a bucket of its own.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg is in the backend/test extra")
opensearchpy = pytest.importorskip("opensearchpy", reason="opensearch-py is in the backend/test extra")
pytest.importorskip("minio", reason="minio is in the backend/test extra")

from starlette.testclient import TestClient  # noqa: E402

from alpr_topo.backend.api import ApiConfig, create_app, openapi_schema  # noqa: E402
from alpr_topo.backend.objectstore import make_client  # noqa: E402
from alpr_topo.stages import events  # noqa: E402
from alpr_topo.stages.sink_opensearch import index_name, index_template, to_document  # noqa: E402
from alpr_topo.stages.sink_postgres import EVENT_COLUMNS, event_row, migrate  # noqa: E402

TOKEN = "s3cret-token"
JPEG = b"\xff\xd8\xff\xe0" + b"plate-crop-bytes" * 8 + b"\xff\xd9"
LOCAL_JPEG = b"\xff\xd8\xff\xe0local\xff\xd9"


def at(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2024, 5, day, hour, minute, tzinfo=timezone.utc).timestamp()


def make(plate: str, camera: str, when: float, **kw: Any) -> dict[str, Any]:
    return events.make_event(camera_id=camera, captured_at=when, track_id=1, site=kw.pop("site", "north"), host="h1",
                             plate={"text": plate, "normalized_text": plate, "confidence": 0.9},
                             vehicle={"type": "car", "color": kw.pop("color", None)}, **kw)


class Stores:
    def __init__(self, services: Any, tmp: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.schema = f"api_test_{tag}"
        self.prefix = f"api-test-{tag}"
        self.bucket = f"api-test-{tag}"
        self.image_root = tmp / "images"
        self.services = services
        crop_key = "plates/2024/05/01/crop.jpg"
        (self.image_root / "2024-05-02").mkdir(parents=True)
        (self.image_root / "2024-05-02" / "local.jpg").write_bytes(LOCAL_JPEG)
        self.events = [
            make("7ABC123", "gate-1", at(1, 8), images={"plate_url": f"s3://{self.bucket}/{crop_key}"}, color="red"),
            make("7ABC123", "gate-1", at(1, 20)),
            make("7ABC123", "gate-2", at(2, 8, 30), site="south"),
            make("7ABC128", "gate-1", at(2, 9)),
            make("KX52LMN", "gate-2", at(2, 10), site="south", images={"plate_url": "2024-05-02/local.jpg"}),
            make("KX52LMN", "gate-2", at(3, 10), site="south", images={"plate_url": "s3://" + self.bucket + "/plates/missing.jpg"}),
            make("ZZ99ZZZ", "gate-3", at(3, 23), images={"plate_url": "../../etc/passwd"}),
        ] + [make(f"FILL{i:03d}", "gate-3", at(4, 12, i)) for i in range(20)]
        # PostgreSQL, in the schema of sink.postgres's migrations
        with psycopg.connect(services.postgres_dsn, autocommit=True) as conn:
            partitioning = migrate(conn, self.schema)
            conn.execute(f"SET search_path TO {self.schema}, public")
            if partitioning == "native":
                conn.execute(f"CREATE TABLE IF NOT EXISTS {self.schema}.events_p202405 PARTITION OF {self.schema}.events"
                             " FOR VALUES FROM ('2024-05-01 00:00+00') TO ('2024-06-01 00:00+00')")
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))})",
                                [event_row(e) for e in self.events])
        # OpenSearch, with sink.opensearch's template and daily indices
        self.os = opensearchpy.OpenSearch(hosts=[services.opensearch_url], timeout=30)
        template = index_template(self.prefix)
        try:
            self.os.indices.put_index_template(name=self.prefix, body=template)
            self.ngram = True
        except opensearchpy.exceptions.RequestError as exc:
            # An OpenSearch without the analysis-common module (the bare integ-test zip) lacks the
            # n-gram tokenizers of the template: same fields without the analysed
            # sub-fields. The API's wildcard/prefix/fuzzy clauses must then still find plates.
            assert "Unknown tokenizer" in str(exc.info), exc.info
            template["template"]["settings"].pop("analysis")
            props = template["template"]["mappings"]["properties"]["plate"]["properties"]
            props["normalized_text"].pop("fields")
            props["text"] = {"type": "text"}
            self.os.indices.put_index_template(name=self.prefix, body=template)
            self.ngram = False
        for e in self.events:
            self.os.index(index=index_name(self.prefix, e["captured_at"]), id=e["event_id"], body=to_document(e))
        self.os.indices.refresh(index=f"{self.prefix}-*")
        # MinIO: one stored crop
        m = services.minio
        self.s3 = make_client(m["endpoint"], m["access_key"], m["secret_key"], region=m.get("region"))
        self.s3.make_bucket(self.bucket)
        self.s3.put_object(self.bucket, crop_key, io.BytesIO(JPEG), len(JPEG), content_type="image/jpeg")

    def config(self, **kw: Any) -> ApiConfig:
        m = self.services.minio
        base = dict(postgres_dsn=self.services.postgres_dsn, db_schema=self.schema, opensearch_url=self.services.opensearch_url,
                    index_prefix=self.prefix, s3_endpoint=m["endpoint"], s3_access_key=m["access_key"],
                    s3_secret_key=m["secret_key"], s3_region=m.get("region"), image_root=str(self.image_root))
        base.update(kw)
        return ApiConfig(**base)

    def close(self) -> None:
        with psycopg.connect(self.services.postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.os.indices.delete(index=f"{self.prefix}-*")
        self.os.indices.delete_index_template(name=self.prefix)
        for obj in self.s3.list_objects(self.bucket, recursive=True):
            self.s3.remove_object(self.bucket, obj.object_name)
        self.s3.remove_bucket(self.bucket)


@pytest.fixture(scope="module")
def stores(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    s = Stores(services, tmp_path_factory.mktemp("api"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def client(stores: Stores) -> Iterator[TestClient]:
    with TestClient(create_app(stores.config())) as c:
        yield c


def plates(body: dict[str, Any]) -> list[str]:
    return [e["plate"]["normalized_text"] for e in body["events"]]


def test_health_and_stats(client: TestClient, stores: Stores) -> None:
    health = client.get("/health").json()
    assert health == {"status": "ok", "stores": {"postgres": "ok", "opensearch": "ok", "s3": "ok"}}
    stats = client.get("/stats").json()
    assert stats["events"] == len(stores.events)
    assert stats["first_event_at"] == "2024-05-01T08:00:00.000Z"
    assert {c["camera_id"]: c["events"] for c in stats["cameras"]} == {"gate-3": 21, "gate-1": 3, "gate-2": 3}
    assert client.get("/stats", params={"since": "2024-05-04T00:00:00Z"}).json()["events"] == 20


def test_event_by_id_round_trips(client: TestClient, stores: Stores) -> None:
    ev = stores.events[0]
    got = client.get(f"/events/{ev['event_id']}").json()
    assert got == events.to_json_obj(ev)
    events.validate(events.from_json(got))
    assert client.get(f"/events/{uuid.uuid4()}").status_code == 404
    bad = client.get("/events/not-a-uuid")
    assert bad.status_code == 400 and "not a UUID" in bad.json()["error"]


def test_recent_events_keyset_pagination(client: TestClient, stores: Stores) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        body = client.get("/events", params={"limit": 10, **({"cursor": cursor} if cursor else {})}).json()
        seen += [e["event_id"] for e in body["events"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    expected = [e["event_id"] for e in sorted(stores.events, key=lambda e: (e["captured_at"], e["event_id"]), reverse=True)]
    assert seen == expected and pages == 3
    assert client.get("/events", params={"cursor": "garbage!"}).status_code == 400
    assert client.get("/events", params={"limit": 0}).status_code == 400


def test_events_by_camera_and_time_range(client: TestClient) -> None:
    body = client.get("/events", params={"camera": "gate-2", "since": "2024-05-02T00:00:00Z",
                                         "until": "2024-05-03T00:00:00Z"}).json()
    assert plates(body) == ["KX52LMN", "7ABC123"]
    ms = int(at(1, 12) * 1000)
    assert plates(client.get("/events", params={"until": ms}).json()) == ["7ABC123"]
    assert client.get("/events", params={"since": "yesterday"}).status_code == 400
    assert plates(client.get("/events", params={"site": "south", "camera": "gate-2"}).json()) == ["KX52LMN", "KX52LMN", "7ABC123"]


def test_plate_exact_and_fuzzy(client: TestClient) -> None:
    exact = client.get("/plates/7abc-123").json()
    assert exact["plate"] == "7ABC123" and plates(exact) == ["7ABC123"] * 3
    page1 = client.get("/plates/7ABC123", params={"limit": 2}).json()
    page2 = client.get("/plates/7ABC123", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    assert len(page1["events"]) == 2 and len(page2["events"]) == 1 and page2["next_cursor"] is None
    assert plates(client.get("/plates/7ABC123", params={"camera": "gate-2"}).json()) == ["7ABC123"]

    pg = client.get("/plates/7ABC123", params={"fuzzy": "true"}).json()
    assert pg["source"] == "postgres"
    assert set(plates(pg)) == {"7ABC123", "7ABC128"} and pg["events"][0]["score"] == 1.0
    assert plates(pg)[-1] == "7ABC128"
    paged = client.get("/plates/7ABC123", params={"fuzzy": "1", "limit": 3}).json()
    assert paged["next_offset"] == 3
    rest = client.get("/plates/7ABC123", params={"fuzzy": "1", "limit": 3, "offset": 3}).json()
    assert plates(rest) == ["7ABC128"] and rest["next_offset"] is None

    osr = client.get("/plates/7ABC123", params={"fuzzy": "true", "source": "opensearch"}).json()
    assert osr["source"] == "opensearch"
    assert set(plates(osr)) == {"7ABC123", "7ABC128"} and plates(osr)[:3] == ["7ABC123"] * 3
    misread = client.get("/plates/KX52LNN", params={"fuzzy": "true", "source": "opensearch"}).json()
    assert set(plates(misread)) == {"KX52LMN"}


def test_search_full_text_and_facets(client: TestClient) -> None:
    body = client.get("/search", params={"q": "7AB"}).json()  # a plate prefix
    assert body["total"] == 4 and set(plates(body)) == {"7ABC123", "7ABC128"}
    facets = body["facets"]
    assert {f["value"]: f["count"] for f in facets["camera"]} == {"gate-1": 3, "gate-2": 1}
    assert {f["value"]: f["count"] for f in facets["day"]} == {"2024-05-01": 2, "2024-05-02": 2}
    assert {f["value"]: f["count"] for f in facets["hour"]} == {8: 2, 20: 1, 9: 1}
    assert plates(client.get("/search", params={"q": "52LM"}).json()) == ["KX52LMN", "KX52LMN"]  # infix
    assert set(plates(client.get("/search", params={"q": "south"}).json())) == {"KX52LMN", "7ABC123"}  # a site word
    assert client.get("/search", params={"q": "red"}).json()["total"] == 1  # vehicle colour
    assert plates(client.get("/search", params={"q": "7ABC129", "fuzzy": "true", "camera": "gate-1",
                                                "until": "2024-05-01T12:00:00Z"}).json()) == ["7ABC123"]
    everything = client.get("/search", params={"limit": 10}).json()
    assert everything["total"] == 27 and everything["next_offset"] == 10
    last = client.get("/search", params={"limit": 10, "offset": 20}).json()
    assert len(last["events"]) == 7 and last["next_offset"] is None


def test_plate_crop_download(client: TestClient, stores: Stores) -> None:
    s3 = client.get(f"/events/{stores.events[0]['event_id']}/plate.jpg")
    assert s3.status_code == 200 and s3.content == JPEG and s3.headers["content-type"] == "image/jpeg"
    local = client.get(f"/events/{stores.events[4]['event_id']}/plate.jpg")
    assert local.status_code == 200 and local.content == LOCAL_JPEG
    assert client.get(f"/events/{stores.events[1]['event_id']}/plate.jpg").status_code == 404  # no crop
    missing = client.get(f"/events/{stores.events[5]['event_id']}/plate.jpg")
    assert missing.status_code == 404 and "not stored" in missing.json()["error"]
    assert client.get(f"/events/{stores.events[6]['event_id']}/plate.jpg").status_code == 403  # outside the root


def test_openapi_is_valid(client: TestClient) -> None:
    from openapi_spec_validator import validate

    doc = client.get("/openapi.json").json()
    validate(doc)
    assert set(doc["paths"]) == {"/health", "/stats", "/events", "/events/{event_id}", "/events/{event_id}/plate.jpg",
                                 "/plates/{plate}", "/search", "/openapi.json"}
    assert "security" not in doc["paths"]["/events"]["get"]  # no token configured
    protected = openapi_schema(ApiConfig(token="x"))
    validate(protected)
    assert protected["paths"]["/events"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in protected["paths"]["/health"]["get"]


def test_bearer_token_per_route(stores: Stores) -> None:
    with TestClient(create_app(stores.config(token=TOKEN, public=frozenset({"health", "openapi", "events"})))) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/events").status_code == 200  # opened by config
        refused = c.get("/stats")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert c.get("/search", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/search", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        assert c.get("/stats", headers={"Authorization": f"Bearer {TOKEN}"}).json()["events"] == len(stores.events)
        crop = c.get(f"/events/{stores.events[0]['event_id']}/plate.jpg", headers={"Authorization": f"Bearer {TOKEN}"})
        assert crop.content == JPEG


def test_store_down_is_503(stores: Stores) -> None:
    with TestClient(create_app(stores.config(postgres_dsn="postgresql://alpr:alpr@127.0.0.1:1/alpr", opensearch_url=""))) as c:
        health = c.get("/health").json()
        assert health["status"] == "degraded" and "PostgreSQL unavailable" in health["stores"]["postgres"]
        assert c.get("/events").status_code == 503
        assert c.get("/search").status_code == 503


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_the_api(stores: Stores) -> None:
    """``alpr-topo api`` as users run it: a real uvicorn server, queried over HTTP."""
    import httpx

    port = _free_port()
    m = stores.services.minio
    env = {**os.environ, "ALPR_POSTGRES_DSN": stores.services.postgres_dsn, "ALPR_OPENSEARCH": stores.services.opensearch_url,
           "ALPR_S3_ENDPOINT": m["endpoint"], "ALPR_S3_ACCESS_KEY": m["access_key"], "ALPR_S3_SECRET_KEY": m["secret_key"]}
    proc = subprocess.Popen([sys.executable, "-m", "alpr_topo.tools.cli", "api", "--port", str(port), "--token", TOKEN,
                             "--db-schema", stores.schema, "--index-prefix", stores.prefix],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(proc.stdout.read().decode() if proc.stdout else "no output")
                time.sleep(0.2)
        assert health.json()["status"] == "ok"
        assert httpx.get(f"{base}/events").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = httpx.get(f"{base}/plates/KX52LMN", headers=auth).json()
        assert plates(body) == ["KX52LMN", "KX52LMN"]
        assert httpx.get(f"{base}/openapi.json").json()["openapi"] == "3.0.3"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
