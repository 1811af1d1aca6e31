"""``publish.local``: the offline sink for plate events (JSON lines, CSV, JPEG crops, console).

Takes the envelopes of ``dedup.plates``: events (``env.meta["event"]`` with
``env.meta["images"]``) and updates (``env.meta["event_update"]``), see docs/events.md.

- JSON lines: one event per line, the Avro field names (:func:`alpr_topo.stages.events.to_json`);
  an update is a line of its own, ``{"type": "update", "event_id": ..., "last_seen": ..., "count": ...}``.
- CSV beside it (same fields flattened, header at the top of every file); updates go to a
  ``-updates.csv`` file of their own.
- JPEGs in ``images/YYYY-MM-DD/<event_id>-plate.jpg`` (``-vehicle``, ``-frame``), and
  ``images.*_url`` in the event pointing at them.
- One line per event on stdout (the terminal of ``alpr-topo up``) and a summary at the end.

docs/publish.md describes files, rotation and the fsync policy.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field

from ..core.envelope import Envelope
from ..core.stage import Stage, StageParams
from . import events
from .publish_files import FsyncPolicy, RotatingFile, write_atomic

__all__ = ["LocalPublishParams", "LocalPublish", "read_events", "STAGE_TYPES"]

IMAGE_KINDS = (("plate_jpeg", "plate", "plate_url"), ("vehicle_jpeg", "vehicle", "vehicle_url"),
               ("frame_jpeg", "frame", "frame_url"))


class LocalPublishParams(StageParams):
    path: str = Field("events/events-{date}.jsonl", min_length=1, description="JSON lines file; '{date}' is replaced by YYYY-MM-DD (a new file per day), '{replica}' by the replica index")
    csv: bool = Field(True, description="also write CSV: the same path with .csv (updates: -updates.csv)")
    images: bool = Field(True, description="write the plate crop of every event as JPEG")
    vehicle_images: bool = Field(True, description="write the vehicle crop when the event carries one")
    frame_images: bool = Field(True, description="write the full frame when the event carries one")
    images_dir: str | None = Field(None, description="folder for images/<date>/...; default: the JSON lines file's folder + '/images'")
    image_urls: Literal["relative", "file"] = Field("relative", description="images.*_url: a path relative to the JSON lines file's folder, or an absolute file:// URL")
    max_bytes: int = Field(64 * 1024 * 1024, ge=0, description="start the next file (events-DATE.1.jsonl, ...) before one grows past this size; 0 = no limit")
    fsync: FsyncPolicy = Field("interval", description="'always': fsync after every event; 'interval': at most every fsync_interval_s; 'never': leave it to the OS")
    fsync_interval_s: float = Field(1.0, gt=0, description="seconds between fsyncs with fsync: interval")
    utc: bool = Field(False, description="dates of files and folders, and the printed times, in UTC instead of local time")
    print_events: bool = Field(True, description="print one line per event and update to stdout, and a summary at the end")
    check_schema: bool = Field(True, description="check every event against the Avro schema; problems are logged and counted (invalid_events), the event is still written")
    forward: bool = Field(False, description="pass each envelope on (with the image URLs filled in) to stages downstream")


class LocalPublish(Stage):
    """Writes plate events to JSON lines, CSV and JPEG files, and prints them as they happen."""

    type_name = "publish.local"
    Params = LocalPublishParams
    params: LocalPublishParams

    def setup(self) -> None:
        p = self.params
        path = p.path.replace("{replica}", str(self.ctx.replica))
        self.path_template = path
        common = dict(max_bytes=p.max_bytes, fsync=p.fsync, fsync_interval_s=p.fsync_interval_s)
        self.jsonl = RotatingFile(path, **common)
        self.csv: RotatingFile | None = None
        self.csv_updates: RotatingFile | None = None
        if p.csv:
            template = Path(path)
            header = ",".join(events.csv_columns(events.EVENT)) + "\n"
            upd_header = ",".join(events.csv_columns(events.UPDATE)) + "\n"
            self.csv = RotatingFile(str(template.with_suffix(".csv")), header=header, **common)
            self.csv_updates = RotatingFile(str(template.with_name(f"{template.stem}-updates.csv")),
                                            header=upd_header, **common)
        self.files = [f for f in (self.jsonl, self.csv, self.csv_updates) if f is not None]
        self.stats = {"events": 0, "duplicates": 0, "continued": 0, "images": 0, "invalid": 0}
        #: the current time (for file and folder dates); tests replace it
        self._now: Callable[[], datetime] = (lambda: datetime.now(timezone.utc)) if p.utc else datetime.now

    # -- stage API ---------------------------------------------------------------------------------

    def process(self, env: Envelope) -> Envelope | None:
        event = env.meta.get("event")
        update = env.meta.get("event_update")
        if isinstance(event, dict):
            env.meta["event"] = self._publish_event(event, env.meta.get("images") or {})
        elif isinstance(update, dict):
            self._publish_update(update)
        else:
            self.ctx.count("ignored")
            return env if self.params.forward else None
        for f in self.files:
            f.maybe_sync()
        return env if self.params.forward else None

    def tick(self) -> None:
        for f in self.files:
            f.maybe_sync()
        return None

    def teardown(self) -> None:
        for f in self.files:
            f.close()
        s = self.stats
        summary = (f"{self.ctx.name}: {s['events']} events, {s['duplicates']} duplicates merged, "
                   f"{s['continued']} continued, {s['images']} images"
                   + (f", {s['invalid']} invalid" if s["invalid"] else "")
                   + f"; {os.path.abspath(os.path.dirname(self.path_template) or '.')}")
        self.log.info(summary)
        if self.params.print_events:
            print(summary, flush=True)

    # -- events ------------------------------------------------------------------------------------

    def _date(self) -> str:
        return self._now().strftime("%Y-%m-%d")

    def _publish_event(self, event: dict[str, Any], images: dict[str, Any]) -> dict[str, Any]:
        p = self.params
        date = self._date()
        event = dict(event)
        event["images"] = dict(event.get("images") or {})
        jsonl_dir = self.jsonl.base_for(date).parent
        image_root = Path(p.images_dir.replace("{replica}", str(self.ctx.replica))) if p.images_dir else jsonl_dir / "images"
        wanted = {"plate_jpeg": p.images, "vehicle_jpeg": p.images and p.vehicle_images,
                  "frame_jpeg": p.images and p.frame_images}
        for key, suffix, url_field in IMAGE_KINDS:
            data = images.get(key)
            if not wanted[key] or not isinstance(data, (bytes, bytearray, memoryview)) or not data:
                continue
            target = image_root / date / f"{event['event_id']}-{suffix}.jpg"
            write_atomic(target, bytes(data), fsync=p.fsync == "always")
            self.stats["images"] += 1
            self.ctx.count("images_written")
            if p.image_urls == "file":
                event["images"][url_field] = target.resolve().as_uri()
            else:
                event["images"][url_field] = os.path.relpath(target, jsonl_dir).replace(os.sep, "/")
        if p.check_schema:
            try:
                events.validate(event)
            except events.EventError as exc:
                self.stats["invalid"] += 1
                self.ctx.count("invalid_events")
                self.log.error("event %s does not match the schema: %s", event.get("event_id"), exc)
        self.jsonl.write(events.to_json(event) + "\n", date)
        if self.csv is not None:
            self.csv.write(events.to_csv_row(event), date)
        self.stats["events"] += 1
        self.ctx.count("events_written")
        if p.print_events:
            print(events.event_line(event, utc=p.utc), flush=True)
        return event

    def _publish_update(self, update: dict[str, Any]) -> None:
        p = self.params
        date = self._date()
        update = {"type": "update", **update}
        if p.check_schema:
            try:
                events.validate(update, events.UPDATE)
            except events.EventError as exc:
                self.stats["invalid"] += 1
                self.ctx.count("invalid_events")
                self.log.error("update of %s does not match the schema: %s", update.get("event_id"), exc)
        self.jsonl.write(events.to_json(update) + "\n", date)
        if self.csv_updates is not None:
            self.csv_updates.write(events.to_csv_row(update), date)
        self.stats["continued" if update.get("reason") == "continued" else "duplicates"] += 1
        self.ctx.count("updates_written")
        if p.print_events:
            print(events.update_line(update, utc=p.utc), flush=True)


def read_events(path: str | Path) -> dict[str, dict[str, Any]]:
    """Replay JSON lines written by ``publish.local``: events by id with their updates applied
    (``last_seen`` and ``count`` of the latest update)."""
    found: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as fh:
        for record in events.iter_jsonl(fh):
            if events.is_update(record):
                event = found.get(record["event_id"])
                if event is not None:
                    event["last_seen"] = max(event.get("last_seen") or 0, record["last_seen"])
                    event["count"] = max(int(event.get("count") or 1), int(record["count"]))
            else:
                found[record["event_id"]] = record
    return found


STAGE_TYPES = [LocalPublish]
