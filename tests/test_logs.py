"""Structured per-stage logs (text or JSON lines with the frame and event a line is about) and
`alpr-topo logs STAGE [-f]`, on log folders made here (the live runs are in test_metrics.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from alpr_topo.core.logs import (JsonFormatter, TextFormatter, _ContextFilter, as_text, follow, frame_context,
                                 log_files, stages_with_logs, tail, tail_many)


def record(msg: str, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    rec = logging.LogRecord("alpr_topo.ocr.0", logging.ERROR if exc else logging.INFO, __file__, 1, msg, (), info)
    _ContextFilter("ocr", 1, "ocr-1-7").filter(rec)
    return rec


def test_lines_carry_the_frame_and_event_being_processed() -> None:
    frame_context("gate", 42, {"event": {"event_id": "e-1"}})
    try:
        rec = record("read %s" % "7ABC123")
        data = json.loads(JsonFormatter().format(rec))
        assert data["msg"] == "read 7ABC123" and data["level"] == "INFO"
        assert (data["stage"], data["replica"], data["instance"]) == ("ocr", 1, "ocr-1-7")
        assert (data["camera_id"], data["frame_id"], data["event_id"]) == ("gate", 42, "e-1")
        assert TextFormatter().format(rec).endswith("INFO [ocr.1] read 7ABC123 (frame gate/42, event e-1)")
    finally:
        frame_context(None)
    rec = record("between frames", exc=True)
    data = json.loads(JsonFormatter().format(rec))
    assert "camera_id" not in data and "ValueError: boom" in data["exc"]
    text = TextFormatter().format(rec)
    assert text.splitlines()[0].endswith("ERROR [ocr.1] between frames") and "ValueError: boom" in text
    assert as_text(JsonFormatter().format(rec)).splitlines()[0].endswith("ERROR [ocr.1] between frames")


def make_logs(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "work.0.log").write_text("2024-05-01 12:00:00,100 INFO [work.0] a\n"
                                       "2024-05-01 12:00:02,000 ERROR [work.0] c\nTraceback (most recent call last):\n  boom\n")
    (folder / "work.1.log").write_text("2024-05-01 12:00:01,000 INFO [work.1] b\n")
    (folder / "work2.0.log").write_text("2024-05-01 12:00:00,000 INFO [work2.0] other stage\n")
    (folder / "supervisor.log").write_text("2024-05-01 12:00:00,000 WARNING [supervisor] s\n")


def test_replicas_merge_by_time_and_a_traceback_stays_with_its_line(tmp_path: Path) -> None:
    make_logs(tmp_path / "logs")
    files = log_files(tmp_path / "logs", "work")
    assert [f.name for f in files] == ["work.0.log", "work.1.log"]  # not work2
    assert stages_with_logs(tmp_path / "logs") == ["work", "work2", "supervisor"]
    merged = tail_many(files, 10, label=True)
    assert merged == ["[work.0] 2024-05-01 12:00:00,100 INFO [work.0] a", "[work.1] 2024-05-01 12:00:01,000 INFO [work.1] b",
                      "[work.0] 2024-05-01 12:00:02,000 ERROR [work.0] c", "[work.0] Traceback (most recent call last):",
                      "[work.0]   boom"]
    assert tail(files[0], 2) == ["Traceback (most recent call last):", "  boom"]
    assert log_files(tmp_path / "logs", "supervisor")[0].name == "supervisor.log"


def test_follow_yields_appended_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.0.log"
    path.write_text("old\n")
    lines = follow([path], poll_s=0.01)
    with open(path, "a") as fh:
        fh.write("new 1\nnew ")
    assert next(lines) == (path, "new 1")
    with open(path, "a") as fh:
        fh.write("2\n")
    assert next(lines) == (path, "new 2")  # a half-written line waits for its end


def test_logs_command_shows_a_finished_runs_logs_and_follows(tmp_path: Path) -> None:
    make_logs(tmp_path / "rt" / "demo" / "logs")
    env = {**os.environ, "ALPR_TOPO_RUNTIME_DIR": str(tmp_path / "rt")}
    cli = [sys.executable, "-m", "alpr_topo.tools.cli", "logs"]
    shown = subprocess.run([*cli, "work", "-n", "2"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr  # the only run folder with logs, though no run is up
    assert shown.stdout.splitlines() == ["[work.0] Traceback (most recent call last):", "[work.0]   boom"]
    missing = subprocess.run([*cli, "nosuch", "--name", "demo"], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no log of 'nosuch'" in missing.stderr and "work2" in missing.stderr

    proc = subprocess.Popen([*cli, "work2", "-f", "-n", "1"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip().endswith("other stage")
        time.sleep(1.0)  # let it reach the follow loop; the line below is what it must pick up
        with open(tmp_path / "rt" / "demo" / "logs" / "work2.0.log", "a") as fh:
            fh.write(json.dumps({"ts": 1714564800.5, "level": "INFO", "stage": "work2", "replica": 0, "msg": "later",
                                 "camera_id": "c", "frame_id": 3}) + "\n")
        assert proc.stdout.readline().strip().endswith("INFO [work2.0] later (frame c/3)")
    finally:
        proc.kill()
        proc.wait()
