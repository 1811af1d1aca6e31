"""publish.local: JSON lines, CSV, JPEG files, rotation, updates and the console lines."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from alpr_topo.core.envelope import Envelope
from alpr_topo.core.testing import StageHarness
from alpr_topo.stages import events
from alpr_topo.stages.dedup import DedupStage
from alpr_topo.stages.publish import LocalPublish, read_events

T0 = 1714564801.0  # 2024-05-01T12:00:01Z
DAY1 = datetime(2024, 5, 1, 12, 0, 0)
DAY2 = datetime(2024, 5, 2, 0, 0, 5)


def jpeg(h: int, w: int, value: int = 200) -> bytes:
    return cv2.imencode(".jpg", np.full((h, w, 3), value, np.uint8))[1].tobytes()


PLATE = jpeg(24, 96)
VEHICLE = jpeg(120, 200, 90)


def event_env(text: str = "7ABC123", t: float = T0, camera: str = "cam1", track: int | None = 7,
              images: dict[str, bytes] | None = None, **changes: Any) -> Envelope:
    ev = events.make_event(camera_id=camera, captured_at=t, track_id=track, host="edge", site="gate",
                           plate={"text": text, "normalized_text": text, "confidence": 0.97, "region": "us-ca"},
                           vehicle={"type": "car"}, extras={"reader": "test"}, reads=5, **changes)
    return Envelope(camera_id=camera, frame_id=1, captured_at=t,
                    meta={"event": ev, "images": {"plate_jpeg": PLATE} if images is None else images})


def update_env(event_id: str, count: int, last_seen: float, camera: str = "cam2") -> Envelope:
    upd = events.make_update(event_id=event_id, last_seen=last_seen, count=count, camera_id=camera, track_id=3,
                             normalized_text="7ABC128", similarity=0.857)
    return Envelope(camera_id=camera, frame_id=2, captured_at=last_seen, meta={"event_update": upd})


def publisher(tmp_path: Path, now: datetime = DAY1, **params: Any) -> StageHarness:
    params.setdefault("path", str(tmp_path / "out" / "events-{date}.jsonl"))
    params.setdefault("utc", True)
    h = StageHarness(LocalPublish, params)
    h.start()
    h.stage._now = lambda: now  # type: ignore[attr-defined]
    return h


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def decodes(path: Path) -> np.ndarray:
    image = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} is not a JPEG"
    return image


def test_events_updates_csv_and_images(tmp_path):
    h = publisher(tmp_path)
    envs = [event_env("7ABC123", images={"plate_jpeg": PLATE, "vehicle_jpeg": VEHICLE}),
            event_env("5XYZ999", T0 + 1, track=None), event_env("6DEF456", T0 + 2, camera="cam2")]
    for env in envs:
        assert h.process(env) == []
    first_id = envs[0].meta["event"]["event_id"]
    h.process(update_env(first_id, 2, T0 + 30))
    h.close()

    out = tmp_path / "out"
    records = lines(out / "events-2024-05-01.jsonl")
    assert len(records) == 4
    for record in records[:3]:
        assert list(record) == events.field_names(events.EVENT)
        events.validate(events.from_json(record))
    assert records[0]["captured_at"] == "2024-05-01T12:00:01.000Z"
    assert records[3] == {"type": "update", "event_id": first_id, "last_seen": "2024-05-01T12:00:31.000Z", "count": 2,
                          "reason": "duplicate", "camera_id": "cam2", "track_id": 3, "normalized_text": "7ABC128",
                          "similarity": 0.857}

    images = records[0]["images"]
    assert images["plate_url"] == f"images/2024-05-01/{first_id}-plate.jpg"
    assert images["vehicle_url"] == f"images/2024-05-01/{first_id}-vehicle.jpg"
    assert images["frame_url"] is None
    assert decodes(out / images["plate_url"]).shape == (24, 96, 3)
    assert decodes(out / images["vehicle_url"]).shape == (120, 200, 3)
    assert all((out / r["images"]["plate_url"]).is_file() for r in records[:3])

    with open(out / "events-2024-05-01.csv", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    assert header == events.csv_columns(events.EVENT)
    assert [r[header.index("plate.normalized_text")] for r in rows] == ["7ABC123", "5XYZ999", "6DEF456"]
    assert rows[0][header.index("images.plate_url")] == images["plate_url"]
    with open(out / "events-2024-05-01-updates.csv", newline="") as fh:
        upd_rows = list(csv.DictReader(fh))
    assert [(r["event_id"], r["count"]) for r in upd_rows] == [(first_id, "2")]

    replay = read_events(out / "events-2024-05-01.jsonl")
    assert replay[first_id]["count"] == 2 and replay[first_id]["last_seen"] == events.to_millis(T0 + 30)
    assert h.counters["events_written"] == 3 and h.counters["updates_written"] == 1


def test_printed_lines_and_summary(tmp_path, capsys):
    h = publisher(tmp_path)
    env = event_env("7ABC123")
    h.process(env)
    h.process(update_env(env.meta["event"]["event_id"], 2, T0 + 4))
    h.close()
    printed = capsys.readouterr().out.splitlines()
    short = env.meta["event"]["event_id"][:8]
    assert printed[0] == "12:00:01 cam1 track 7  7ABC123 (us-ca, 0.97)"
    assert printed[1] == f"12:00:05 cam2 track 3  7ABC128 = {short} (duplicate, count 2)"
    assert printed[2].startswith("under_test: 1 events, 1 duplicates merged, 0 continued, 1 images;")

    h = publisher(tmp_path, print_events=False)
    h.process(event_env())
    h.close()
    assert capsys.readouterr().out == ""


def test_rotation_by_size(tmp_path):
    h = publisher(tmp_path, max_bytes=2500)
    for i in range(12):
        h.process(event_env(f"7ABC{i:03d}", T0 + i))
    h.close()
    out = tmp_path / "out"
    jsonl = sorted(out.glob("events-2024-05-01*.jsonl"))
    assert len(jsonl) >= 3  # about 700 bytes an event: three to a file
    assert {p.name for p in jsonl} == {"events-2024-05-01.jsonl"} | {f"events-2024-05-01.{i}.jsonl" for i in range(1, len(jsonl))}
    assert all(p.stat().st_size <= 2500 for p in jsonl)
    texts = [r["plate"]["normalized_text"] for p in sorted(jsonl, key=lambda p: (len(p.name), p.name)) for r in lines(p)]
    assert texts == [f"7ABC{i:03d}" for i in range(12)]  # nothing lost, in order
    csvs = sorted(out.glob("events-2024-05-01*.csv"))
    csvs = [p for p in csvs if "updates" not in p.name]
    assert len(csvs) >= 2
    header = ",".join(events.csv_columns()) + "\n"
    rows = 0
    for p in csvs:
        text = p.read_text()
        assert text.startswith(header) and p.stat().st_size <= 2500
        rows += len(text.splitlines()) - 1
    assert rows == 12


def test_rotation_by_date(tmp_path):
    h = publisher(tmp_path)
    now = [DAY1]
    h.stage._now = lambda: now[0]
    h.process(event_env("7ABC123"))
    h.process(event_env("5XYZ999", T0 + 1))
    now[0] = DAY2
    env = event_env("6DEF456", T0 + 43200)
    h.process(env)
    h.close()
    out = tmp_path / "out"
    assert len(lines(out / "events-2024-05-01.jsonl")) == 2
    (record,) = lines(out / "events-2024-05-02.jsonl")
    assert record["images"]["plate_url"] == f"images/2024-05-02/{env.meta['event']['event_id']}-plate.jpg"
    assert len(list((out / "images" / "2024-05-01").glob("*-plate.jpg"))) == 2
    assert (out / "events-2024-05-02.csv").read_text().count("\n") == 2  # header + one row


def test_restart_appends_and_writes_the_header_once(tmp_path):
    for _ in range(2):
        h = publisher(tmp_path, fsync="always")
        h.process(event_env())
        h.close()
    out = tmp_path / "out"
    assert len(lines(out / "events-2024-05-01.jsonl")) == 2
    text = (out / "events-2024-05-01.csv").read_text()
    assert text.count("event_id,captured_at") == 1 and text.count("\n") == 3


def test_file_urls_and_images_off(tmp_path):
    h = publisher(tmp_path, image_urls="file", csv=False)
    h.process(event_env())
    h.close()
    (record,) = lines(tmp_path / "out" / "events-2024-05-01.jsonl")
    url = record["images"]["plate_url"]
    assert url.startswith("file:///")
    decodes(Path(url[len("file://"):]))
    assert not list((tmp_path / "out").glob("*.csv"))

    h = publisher(tmp_path / "b", images=False)
    h.process(event_env())
    h.close()
    (record,) = lines(tmp_path / "b" / "out" / "events-2024-05-01.jsonl")
    assert record["images"]["plate_url"] is None and not (tmp_path / "b" / "out" / "images").exists()


def test_invalid_events_are_counted_and_still_written(tmp_path):
    h = publisher(tmp_path)
    env = event_env()
    env.meta["event"]["plate"]["confidence"] = "high"
    h.process(env)
    h.process(Envelope(camera_id="cam1", frame_id=9))  # not an event: ignored
    h.close()
    assert h.counters["invalid_events"] == 1 and h.counters["ignored"] == 1
    assert len(lines(tmp_path / "out" / "events-2024-05-01.jsonl")) == 1


def test_forward_passes_the_event_on_with_urls(tmp_path):
    h = publisher(tmp_path, forward=True)
    (out,) = h.process(event_env())
    h.close()
    assert out.meta["event"]["images"]["plate_url"].startswith("images/2024-05-01/")


def test_dedup_then_publish(tmp_path):
    """The two stages together: noisy reads in, one event and one update out on disk."""
    crop = jpeg(30, 120)
    dedup = StageHarness(DedupStage, {"window_s": 60})
    dedup.start()
    outs: list[Envelope] = []
    for start, track, texts in ((T0, 1, ["7ABC123", "7A8C123", "7ABC123"]), (T0 + 10, 2, ["7ABC128", "7ABC128"])):
        for i, text in enumerate(texts):
            plate = {"text": text, "normalized": text, "confidence": 0.9, "region": "us-ca", "box": [0, 0, 120, 30],
                     "track_id": track, "vehicle_track_id": None, "reader": "t",
                     "quality": {"sharpness": 120, "width": 120, "height": 30, "angle": 0}, "crop_jpeg": crop}
            outs += dedup.process(Envelope(camera_id="cam1", frame_id=int(start * 10) + i, captured_at=start + i * 0.1,
                                           plates=[plate]))
    outs += dedup.process(Envelope(camera_id="cam1", frame_id=10**9, captured_at=T0 + 20))
    dedup.close()
    h = publisher(tmp_path)
    for env in outs:
        h.process(env)
    h.close()
    path = tmp_path / "out" / "events-2024-05-01.jsonl"
    records = lines(path)
    assert [events.is_update(r) for r in records] == [False, True]
    event = records[0]
    assert event["plate"]["normalized_text"] == "7ABC123" and event["reads"] == 3
    decodes(tmp_path / "out" / event["images"]["plate_url"])
    (kept,) = read_events(path).values()
    assert kept["count"] == 2 and kept["last_seen"] == events.to_millis(T0 + 10.1)


def test_params_are_checked():
    import pydantic

    with pytest.raises(pydantic.ValidationError):
        LocalPublish.Params(fsync="sometimes")
    with pytest.raises(pydantic.ValidationError):
        LocalPublish.Params(max_bytes=-1)
