"""End to end on real servers: synthetic video with known plates -> edge topology -> Kafka (+ crops
in MinIO) -> backend topology -> PostgreSQL, OpenSearch and watchlist alerts -> Query API.

Both topologies run under ``alpr-topo up`` at the same time, as on an edge box and a backend host.
The edge's ``publish.local`` (downstream of ``publish.kafka`` with ``forward: true``) records what
the edge sent, with the image URLs; ``dedup.plates`` runs in test mode so each event names the
vehicle of the scene it came from, and the scene's own truth says which plates were readable.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import SHARED
from test_alerts import Receiver

pytest.importorskip("confluent_kafka")
pytest.importorskip("psycopg")
pytest.importorskip("opensearchpy")
pytest.importorskip("minio")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
MODELS = SHARED / "models"
SCENE = {"camera_id": "gate-e2e", "width": 1280, "height": 720, "fps": 8, "duration_s": 14, "vehicles": 4,
         "max_simultaneous": 1, "formats": ["us"], "seed": 5}


def edge_topology(name: str, topic: str, updates: str, s3: dict[str, Any]) -> str:
    """cpu-models.yaml's vision stages, then publish.kafka (forwarding) -> publish.local."""
    data = yaml.safe_load((REPO / "topologies" / "cpu-models.yaml").read_text())
    stages = data["stages"]
    data["name"] = name
    stages["camera"]["params"] = SCENE
    stages["dedup"]["params"] = {"test_mode": True}
    stages.pop("events")
    stages["kafka"] = {"type": "publish.kafka", "inputs": ["dedup"], "params": {
        "bootstrap_servers": "${ALPR_KAFKA}", "topic": topic, "updates_topic": updates, "spool_dir": "out/spool",
        "retry_interval_s": 2, "forward": True,
        "s3": {"endpoint": "${ALPR_S3_ENDPOINT}", "access_key": "${ALPR_S3_ACCESS_KEY}",
               "secret_key": "${ALPR_S3_SECRET_KEY}", "bucket": s3["bucket"], "cache_dir": "out/crops"}}}
    stages["local"] = {"type": "publish.local", "inputs": ["kafka"],
                       "params": {"path": "out/events.jsonl", "print_events": False, "images": False}}
    return yaml.safe_dump(data, sort_keys=False)


def backend_topology(name: str, topic: str, updates: str, schema: str) -> str:
    text = (REPO / "topologies" / "backend.yaml").read_text()
    text = text.replace("[alpr.events, alpr.event-updates]", f"[{topic}, {updates}]")
    text = text.replace("group_id: alpr-postgres", f"group_id: {schema}-pg")
    text = text.replace("group_id: alpr-opensearch", f"group_id: {schema}-os")
    text = text.replace("group_id: alpr-alerts", f"group_id: {schema}-alerts")
    return text.replace("name: backend", f"name: {name}")


@pytest.mark.skipif(not (MODELS / "plate-detector-yolov9t-416-int8.onnx").exists(),
                    reason=f"the shared plate models are not at {MODELS}")
def test_synthetic_plates_reach_every_store_and_the_api_exactly_once_with_crops(
        services: Any, run_env: dict[str, str], start_run: Any, tmp_path: Path) -> None:
    import psycopg
    from opensearchpy import OpenSearch
    from starlette.testclient import TestClient

    from alpr_topo.backend import objectstore
    from alpr_topo.backend.api import ApiConfig, create_app
    from alpr_topo.stages.publish import read_events
    from alpr_topo.tools.bench_synthetic import truth_vehicles

    tag = uuid.uuid4().hex[:8]
    topic, updates, schema, prefix = f"e2e-{tag}", f"e2e-{tag}-updates", f"e2e_{tag}", f"e2e-{tag}"
    bucket = f"e2e-{tag}"
    services.ensure("kafka", "postgres", "opensearch", "minio")
    m = services.minio
    run_env.update(services.env, ALPR_MODELS=str(MODELS), ALPR_POSTGRES_SCHEMA=schema, ALPR_INDEX_PREFIX=prefix)
    opensearch = OpenSearch(hosts=[services.opensearch_url], timeout=30)
    s3 = objectstore.make_client(m["host"], m["access_key"], m["secret_key"])

    def pg(sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(services.postgres_dsn, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {schema}")
            return conn.execute(sql, args or None).fetchall()

    # every plate of the scene is on the watchlist: each right event must fire one webhook
    readable, _ = truth_vehicles(SCENE)
    receiver = Receiver()
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({
        "actions": {"hook": {"type": "webhook", "url": receiver.url + "/alpr"}},
        "watchlists": {"scene": sorted(readable.values())},
        "rules": [{"name": "scene-plates", "match": "exact", "watchlist": "scene", "actions": ["hook"]}]}))
    run_env["ALPR_ALERT_RULES"] = str(rules)
    try:
        backend = start_run(backend_topology(f"e2e-backend-{tag}", topic, updates, schema), name="backend.yaml")
        edge = start_run(edge_topology(f"e2e-edge-{tag}", topic, updates, {"bucket": bucket}), "--duration", "400",
                         name="edge.yaml")
        assert edge.wait(420) == 0, edge.output()

        # what the edge sent, and which of it is right against the scene's truth
        sent = read_events(tmp_path / "out" / "events.jsonl")
        right = {eid: ev for eid, ev in sent.items()
                 if readable.get(int(ev["extras"].get("truth_vehicle_id") or -1)) == ev["plate"]["normalized_text"]}
        assert right, f"no event of the edge read a plate of the scene {sorted(readable.values())}: {edge.output()}"
        assert not [p for p in (tmp_path / "out" / "spool").iterdir() if p.is_dir()]  # all delivered

        def stored() -> bool:
            opensearch.indices.refresh(index=f"{prefix}-*")
            return (pg("SELECT count(*) FROM events")[0][0] >= len(sent)
                    and opensearch.count(index=f"{prefix}-*")["count"] >= len(sent))

        backend.wait_for(stored, timeout=120, what="the edge's events in PostgreSQL and OpenSearch")

        # exactly once in each store
        rows = pg("SELECT event_id::text, plate_normalized, camera_id, plate_url FROM events")
        assert Counter(r[0] for r in rows) == Counter(sent.keys()), "PostgreSQL rows differ from the events sent"
        for event_id, plate, camera, url in rows:
            assert (plate, camera, url) == (sent[event_id]["plate"]["normalized_text"], "gate-e2e",
                                            sent[event_id]["images"]["plate_url"])
        opensearch.indices.refresh(index=f"{prefix}-*")
        hits = opensearch.search(index=f"{prefix}-*", body={"size": 1000, "query": {"match_all": {}}})["hits"]["hits"]
        assert Counter(h["_id"] for h in hits) == Counter(sent.keys()), "OpenSearch documents differ from the events sent"

        # alerts: a webhook for each watched plate (rate-limited: once per plate), none for the others
        watched = {eid: ev["plate"]["normalized_text"] for eid, ev in sent.items()
                   if ev["plate"]["normalized_text"] in readable.values()}
        assert set(right) <= set(watched)
        plates = set(watched.values())
        backend.wait_for(lambda: len(receiver.bodies) >= len(plates), timeout=60, what="the alert webhooks")
        assert sorted(b["plate"] for b in receiver.bodies) == sorted(plates)
        assert all(b["event"]["event_id"] in watched for b in receiver.bodies)

        # the Query API finds each right event by id, by plate and in search, with its crop
        config = ApiConfig(postgres_dsn=services.postgres_dsn, db_schema=schema, opensearch_url=services.opensearch_url,
                           index_prefix=prefix, s3_endpoint=m["endpoint"], s3_access_key=m["access_key"],
                           s3_secret_key=m["secret_key"], s3_region=m.get("region"))
        with TestClient(create_app(config)) as api:
            for event_id, ev in right.items():
                plate = ev["plate"]["normalized_text"]
                assert api.get(f"/events/{event_id}").json()["plate"]["normalized_text"] == plate
                by_plate = api.get(f"/plates/{plate}").json()["events"]
                assert [e["event_id"] for e in by_plate].count(event_id) == 1
                assert event_id in [e["event_id"] for e in api.get("/search", params={"q": plate}).json()["events"]]
                crop = api.get(f"/events/{event_id}/plate.jpg")
                assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"
                assert crop.content == objectstore.fetch(s3, ev["images"]["plate_url"])
                assert crop.content[:2] == b"\xff\xd8" and len(crop.content) > 500
            stats = api.get("/stats").json()
            assert stats["events"] == len(sent)
    finally:
        receiver.close()
        with psycopg.connect(services.postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        opensearch.indices.delete(index=f"{prefix}-*,{prefix}_updates", ignore=404)
        opensearch.indices.delete_index_template(name=prefix, ignore=404)
        if s3.bucket_exists(bucket):
            for obj in s3.list_objects(bucket, recursive=True):
                s3.remove_object(bucket, obj.object_name)
            s3.remove_bucket(bucket)

