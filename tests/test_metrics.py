"""Prometheus /metrics: the values of a live run against what its stages did (frames written by
the sink, plate reads and events of the fake ALPR stages, latency buckets of a known delay),
counters that survive a restart, and the Grafana dashboard's queries against a live /metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from alpr_topo.core.metrics import LATENCY_BUCKETS_S, Histogram, is_level, render, totals
from conftest import read_jsonl
from pagehelpers import page_info, scrape, value

TOOLS = Path(__file__).resolve().parent.parent / "tools"

TOPOLOGY = """
name: NAME
plugins: [webui_plugins]
stages:
  cam: {type: source.test_pattern, params: {width: 160, height: 120, fps: 100, count: 0, camera_id: gate}}
  work: {type: transform.passthrough, inputs: [cam], params: {delay_ms: 2}}
  alpr: {type: test.fake_alpr, inputs: [work], params: {event_every: 10}}
  out: {type: sink.jsonl, inputs: [alpr], params: {path: out/frames.jsonl}}
  pub: {type: test.fake_publisher, inputs: [alpr]}
"""


# -- without processes ---------------------------------------------------------------------------


def test_histogram_buckets_are_prometheus_le_buckets() -> None:
    h = Histogram()
    for seconds in (0.0005, 0.0006, 0.003, 100.0):
        h.observe(seconds)
    counts, total = h.to_wire()
    assert counts[0] == 1  # 0.0005 <= 0.0005
    assert counts[1] == 1  # 0.0006 in (0.0005, 0.001]
    assert counts[LATENCY_BUCKETS_S.index(0.005)] == 1
    assert counts[-1] == 1  # above every bound: +Inf only
    assert total == pytest.approx(100.0041)


def test_totals_add_up_processes_and_leave_levels_to_the_live_one() -> None:
    first = {"frames_in": 10, "frames_out": 9, "errors": 1, "cameras": {"a": [10, 9]},
             "hist": {"latency": [[1, 2, 0], 0.5]}, "pool": {"allocated": 9, "in_use": 3},
             "counters": {"plates_read": 4, "spool_bytes": 1000, "connected": 1}}
    second = {"frames_in": 5, "frames_out": 5, "cameras": {"a": [3, 3], "b": [2, 2]},
              "hist": {"latency": [[0, 1, 1], 0.25]}, "counters": {"plates_read": 1}}
    t = totals([totals([{}, first]), second])
    assert (t["frames_in"], t["frames_out"], t["errors"]) == (15, 14, 1)
    assert t["cameras"] == {"a": [13, 12], "b": [2, 2]}
    assert t["hist"]["latency"] == [[1, 3, 1], 0.75]
    assert t["pool"]["allocated"] == 9 and "in_use" not in t["pool"]
    assert t["counters"] == {"plates_read": 5}  # spool_bytes and connected are levels
    assert is_level("spool_bytes") and is_level("spool_records") and not is_level("delivery_errors")


def test_render_gives_valid_exposition_with_stage_and_camera_labels() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    h = Histogram()
    h.observe(0.002)
    row = {"stage": "ocr", "replica": 0, "type": "ocr.plate", "state": "running", "restarts": 2, "queue_in": 3,
           "queue_out": 1, "rss_mb": 10.0, "cpu_percent": 50.0, "pool": None,
           "counters": {"plates_read": 7, "spool_bytes": 512}}
    reply = {"status": {"name": "r", "topology": "/t.yaml", "uptime_s": 3.0, "shutting_down": False, "swap": "ocr",
                        "stages": [row]},
             "replicas": [{"stage": "ocr", "replica": 0,
                           "totals": totals([{"frames_in": 1, "frames_out": 1, "cameras": {"cam1": [1, 1]},
                                              "hist": {"latency": h.to_wire()}, "counters": row["counters"]}])}]}
    body, content_type = render(reply)
    assert content_type.startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    labels = (("replica", "0"), ("stage", "ocr"))
    assert samples[("alpr_topo_frames_in_total", (("camera", "cam1"), *labels))] == 1
    assert samples[("alpr_topo_restarts_total", labels)] == 2
    assert samples[("alpr_topo_queue_depth", (("queue", "in"), *labels))] == 3
    assert samples[("alpr_topo_stage_latency_seconds_bucket", (("le", "0.001"), *labels))] == 0
    assert samples[("alpr_topo_stage_latency_seconds_bucket", (("le", "0.0025"), *labels))] == 1
    assert samples[("alpr_topo_stage_latency_seconds_count", labels)] == 1
    assert samples[("alpr_topo_stage_counter_total", (("name", "plates_read"), *labels))] == 7
    assert samples[("alpr_topo_stage_gauge", (("name", "spool_bytes"), *labels))] == 512
    assert samples[("alpr_topo_process_resident_memory_bytes", labels)] == 10 * 2**20
    assert samples[("alpr_topo_swap_in_progress", ())] == 1


# -- a live run ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_metrics_match_what_the_stages_did(start_run, tmp_path: Path) -> None:
    run = start_run(TOPOLOGY.replace("NAME", "met"), "--status-port", "auto", "--log-format", "json")
    url = page_info(run, "met")["url"]
    run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] > 50, what="frames at the sink")

    first = scrape(url)
    assert value(first, "alpr_topo_stage_up", stage="work") == 1
    assert value(first, "alpr_topo_stage_state", stage="out", state="running") == 1
    assert value(first, "alpr_topo_pool_slots", stage="cam") == 16
    # work sleeps 2 ms per frame: nothing at or under 1 ms, every output counted in the histogram
    assert value(first, "alpr_topo_stage_latency_seconds_bucket", stage="work", le="0.001") == 0
    work_out = value(first, "alpr_topo_stage_latency_seconds_count", stage="work")
    assert work_out > 0 and value(first, "alpr_topo_stage_latency_seconds_sum", stage="work") >= 0.002 * work_out

    # a restart: the replica's counters carry on from what its earlier process did
    run.cli("restart", "work")
    run.wait_for(lambda: run.stage_rows("work")[0]["restarts"] == 1 and run.stage_rows("work")[0]["state"] == "running",
                 what="work restarted")
    frames = run.stage_rows("out")[0]["frames_in"]
    run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] > frames + 30, what="frames after the restart")
    second = scrape(url)
    assert value(second, "alpr_topo_restarts_total", stage="work") == 1
    assert value(second, "alpr_topo_frames_in_total", stage="work") > value(first, "alpr_topo_frames_in_total", stage="work")
    assert value(second, "alpr_topo_frames_in_total", stage="work") > run.stage_rows("work")[0]["frames_in"]

    # stop the source: everything in flight drains into the sinks, the run stays up for a last scrape
    run.cli("stop", "cam")
    run.wait_for(lambda: run.stage_rows("cam")[0]["state"] == "stopped", what="the source stopped")
    records = []

    def settled() -> bool:
        nonlocal records
        records = read_jsonl(tmp_path / "out/frames.jsonl")
        s = scrape(url)
        return bool(records) and all(value(s, "alpr_topo_frames_in_total", stage=st) == len(records) for st in ("out", "pub"))

    run.wait_for(settled, what="the sinks' counts to match what they wrote")
    final = scrape(url)
    written = len(records)
    events = sum(1 for r in records if "event" in r["meta"])
    assert events == sum(1 for r in records if r["frame_id"] % 10 == 9) > 0
    assert value(final, "alpr_topo_frames_in_total", stage="out", camera="gate") == written
    assert value(final, "alpr_topo_frames_out_total", stage="alpr", camera="gate") == written
    assert value(final, "alpr_topo_frames_in_total", stage="alpr") == written
    cam_out = value(final, "alpr_topo_frames_out_total", stage="cam", camera="gate")
    assert cam_out == max(r["frame_id"] for r in records) + 1 >= written  # the restart of work lost a few
    assert value(final, "alpr_topo_pool_allocated_total", stage="cam") == cam_out
    assert value(final, "alpr_topo_drops_total", stage="cam", reason="pool_full") == 0
    assert value(final, "alpr_topo_stage_counter_total", stage="alpr", name="plates_read") == written
    assert value(final, "alpr_topo_stage_counter_total", stage="pub", name="events_written") == events
    assert value(final, "alpr_topo_stage_counter_total", stage="pub", name="delivery_errors") == events // 2
    assert value(final, "alpr_topo_stage_gauge", stage="pub", name="spool_bytes") == 100 * events
    assert value(final, "alpr_topo_stage_latency_seconds_count", stage="alpr") == written
    assert value(final, "alpr_topo_e2e_latency_seconds_count", stage="alpr") == written
    assert value(final, "alpr_topo_queue_depth", stage="work") == 0
    assert value(final, "alpr_topo_errors_total") == 0

    # structured logs: JSON lines with the frame, and the event id where there is one
    lines = [json.loads(line) for line in (Path(run.env["ALPR_TOPO_RUNTIME_DIR"]) / "met/logs/alpr.0.log").read_text().splitlines()]
    plate_lines = [rec for rec in lines if rec["msg"].startswith("plate event")]
    assert plate_lines and all(rec["camera_id"] == "gate" and rec["frame_id"] % 10 == 9 and rec["stage"] == "alpr"
                               for rec in plate_lines)
    text = run.cli("logs", "alpr", "--name", "met", "-n", "5").stdout
    assert re.search(r"INFO \[alpr\.0\] plate event TP\d{4} \(frame gate/\d+\)", text), text

    run.cli("down")
    assert run.wait() == 0, run.output()


DASHBOARD = TOOLS / "grafana" / "alpr-topo-dashboard.json"
SELECTOR = re.compile(r"\b(alpr_topo_[a-zA-Z0-9_:]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"')


def dashboard_selectors() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric, [(label, op, value)]) for every metric selector in every panel query."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    assert len(exprs) > 15
    return [(m.group(1), MATCHER.findall(m.group(2) or "")) for e in exprs for m in SELECTOR.finditer(e)]


@pytest.mark.slow
def test_every_metric_the_dashboard_queries_exists_on_a_live_metrics(start_run) -> None:
    run = start_run(TOPOLOGY.replace("NAME", "dash"), "--status-port", "auto")
    url = page_info(run, "dash")["url"]
    # every counter the dashboard filters on has been counted at least once (two events: a delivery error)
    run.wait_for(lambda: (run.stage_rows("pub")[0]["counters"].get("delivery_errors") or 0) >= 1,
                 what="the fake publisher's counters")
    run.wait_for(lambda: value(scrape(url), "alpr_topo_stage_counter_total", stage="pub", name="delivery_errors") >= 1,
                 what="the counters on /metrics")
    series = list(scrape(url))
    names = {name for name, _ in series}
    missing = []
    for metric, matchers in dashboard_selectors():
        candidates = [labels for name, labels in series if name == metric]
        if not candidates:
            missing.append(metric)
            continue
        fixed = [(k, op, v) for k, op, v in matchers if "$" not in v]  # dashboard variables match anything
        if not any(all(_matches(dict(labels).get(k, ""), op, v) for k, op, v in fixed) for labels in candidates):
            missing.append(f"{metric}{{{', '.join(f'{k}{op}{v!r}' for k, op, v in fixed)}}}")
    assert not missing, f"the dashboard queries what /metrics does not have: {missing} (has: {sorted(names)})"
    assert "job_name: alpr-topo" in (TOOLS / "grafana" / "prometheus.yml").read_text()
    run.cli("down")
    assert run.wait() == 0, run.output()


def _matches(actual: str, op: str, wanted: str) -> bool:
    full = re.fullmatch(wanted, actual) is not None
    return {"=": actual == wanted, "!=": actual != wanted, "=~": full, "!~": not full}[op]
