"""Whole topologies run by the real supervisor in subprocesses: exactly-once delivery, fan-out,
replicas, per-camera order, crash and hang recovery, hot swap, clean shutdown, tcp transport."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import free_port_range, read_jsonl, shm_segments

pytestmark = pytest.mark.slow


def chain(name: str, middle: str, count: int = 200, fps: float = 0, extra: str = "", sink_params: str = "") -> str:
    return f"""
name: {name}
plugins: [runtime_plugins]
{extra}
stages:
  cam:
    type: source.test_pattern
    params: {{width: 320, height: 240, fps: {fps}, count: {count}}}
  work:
{middle}
    inputs: [cam]
  out:
    type: sink.jsonl
    inputs: [work]
    params: {{path: out/frames.jsonl, check_stamps: true{sink_params}}}
"""


def assert_exactly_once(records: list[dict], count: int) -> None:
    ids = Counter(r["frame_id"] for r in records)
    duplicates = [i for i, n in ids.items() if n > 1]
    missing = sorted(set(range(count)) - set(ids))
    assert not duplicates, f"duplicated frame ids: {duplicates[:20]}"
    assert not missing, f"lost frame ids: {missing[:20]} ({len(missing)} in all)"
    assert all(r["stamp"] == r["frame_id"] for r in records), "a sink read a frame that was not the one its envelope named"


def test_finite_source_runs_to_the_end_exactly_once(start_run, tmp_path: Path) -> None:
    run = start_run(chain("basic", "    type: transform.passthrough\n    params: {check_stamps: true}", count=300))
    assert run.wait() == 0, run.output()
    assert_exactly_once(read_jsonl(tmp_path / "out/frames.jsonl"), 300)
    assert "stopped" in run.output()
    assert shm_segments("alpr.basic.") == []
    assert re.search(r"out\s+in\s+300\s+out\s+0", run.output()), run.output()


def test_status_reports_every_stage_while_running(start_run) -> None:
    run = start_run(chain("stat", "    type: transform.passthrough\n    params: {delay_ms: 1}", count=0, fps=50))
    run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] > 20, what="frames at the sink")
    status = run.status()
    rows = {r["stage"]: r for r in status["stages"]}
    assert set(rows) == {"cam", "work", "out"}
    for row in rows.values():
        assert row["pid"] and row["state"] == "running" and row["rss_mb"] > 0 and row["restarts"] == 0
        for key in ("frames_in", "frames_out", "fps_in", "fps_out", "queue_in", "queue_out", "latency_p50_ms", "latency_p99_ms"):
            assert key in row
    assert rows["work"]["latency_p50_ms"] >= 1.0  # the 1 ms delay is visible
    assert rows["cam"]["pool"]["slots"] == 16
    text = run.cli("status").stdout
    assert "work" in text and "p99 ms" in text
    run.cli("down")
    assert run.wait() == 0


def test_fan_out_delivers_every_frame_to_every_branch(start_run, tmp_path: Path) -> None:
    run = start_run("""
name: fan
stages:
  cam: {type: source.test_pattern, params: {width: 320, height: 240, fps: 0, count: 150}}
  a: {type: sink.jsonl, inputs: [cam], params: {path: out/a.jsonl, check_stamps: true}}
  b: {type: transform.passthrough, inputs: [cam], params: {check_stamps: true}}
  c: {type: sink.jsonl, inputs: [b], params: {path: out/c.jsonl, check_stamps: true}}
  d: {type: sink.jsonl, inputs: [b], params: {path: out/d.jsonl, check_stamps: true}}
""")
    assert run.wait() == 0, run.output()
    for sink in "acd":
        assert_exactly_once(read_jsonl(tmp_path / f"out/{sink}.jsonl"), 150)
    assert shm_segments("alpr.fan.") == []


def test_replicas_share_the_load(start_run, tmp_path: Path) -> None:
    run = start_run(chain("rep", "    type: transform.passthrough\n    replicas: 3\n    params: {delay_ms: 5}", count=300))
    assert run.wait() == 0, run.output()
    records = read_jsonl(tmp_path / "out/frames.jsonl")
    assert_exactly_once(records, 300)
    per_instance = Counter(r["meta"]["passed"][0] for r in records)
    assert len(per_instance) == 3, per_instance
    assert min(per_instance.values()) > 30, per_instance  # nobody starves


def test_ordered_stage_sees_each_camera_in_order_despite_upstream_replicas(start_run, tmp_path: Path) -> None:
    run = start_run("""
name: order
plugins: [runtime_plugins]
stages:
  cam1: {type: source.test_pattern, params: {width: 64, height: 48, fps: 0, count: 300, camera_id: one}}
  cam2: {type: source.test_pattern, params: {width: 64, height: 48, fps: 0, count: 300, camera_id: two}}
  jitter:
    type: transform.passthrough
    inputs: [cam1, cam2]
    replicas: 3
  track:
    type: test.order_check
    inputs: [jitter]
    replicas: 2
  out: {type: sink.jsonl, inputs: [track], params: {path: out/frames.jsonl}}
""")
    assert run.wait() == 0, run.output()
    records = read_jsonl(tmp_path / "out/frames.jsonl")
    assert len(records) == 600
    assert all(r["meta"]["in_order"] for r in records), [r["frame_id"] for r in records if not r["meta"]["in_order"]][:10]
    replica_of = {}
    for r in records:  # one camera always lands on the same tracker replica
        assert replica_of.setdefault(r["camera_id"], r["meta"]["replica"]) == r["meta"]["replica"]


def test_kill_9_of_a_stage_under_load_restarts_it_and_leaks_nothing(start_run, tmp_path: Path) -> None:
    run = start_run(chain("kill", "    type: transform.passthrough\n    params: {check_stamps: true}", count=0, fps=100,
                          extra="frame_pool: {lease_timeout_s: 2}"))
    run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] > 50, what="frames flowing")
    old = run.stage_rows("work")[0]["pid"]
    os.kill(old, signal.SIGKILL)
    run.wait_for(lambda: run.stage_rows("work")[0]["restarts"] == 1 and run.stage_rows("work")[0]["state"] == "running",
                 what="the stage restarted")
    assert run.stage_rows("work")[0]["pid"] != old
    before = run.stage_rows("out")[0]["frames_in"]
    run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] > before + 100, what="frames flowing after the restart")
    # the source, too: its pool's segments must go with it
    cam = run.stage_rows("cam")[0]["pid"]
    assert any(f".cam.{cam}." in name for name in shm_segments("alpr.kill."))
    os.kill(cam, signal.SIGKILL)
    run.wait_for(lambda: run.stage_rows("cam")[0]["restarts"] == 1 and run.stage_rows("cam")[0]["state"] == "running",
                 what="the source restarted")
    assert not any(f".cam.{cam}." in name for name in shm_segments("alpr.kill."))
    before = run.stage_rows("out")[0]["frames_in"]
    run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] > before + 100, what="frames flowing after the source restart")
    run.cli("down")
    assert run.wait() == 0
    assert shm_segments("alpr.kill.") == []
    records = read_jsonl(tmp_path / "out/frames.jsonl")
    assert all(r["stamp"] == r["frame_id"] for r in records)


def test_hung_stage_is_killed_and_restarted(start_run, tmp_path: Path) -> None:
    marker = tmp_path / "hang-once"
    marker.touch()
    middle = f"    type: test.fault\n    params: {{hang_on: 20, marker: {marker}}}"
    run = start_run(chain("hang", middle, count=100, fps=50,
                          extra="supervisor: {heartbeat_timeout_s: 2, restart_backoff_s: 0.1}\nframe_pool: {lease_timeout_s: 1}"))
    assert run.wait() == 0, run.output()
    assert "sent no heartbeat" in run.output()
    records = read_jsonl(tmp_path / "out/frames.jsonl")
    assert max(r["frame_id"] for r in records) == 99  # the pipeline went on after the hang


def test_restart_budget_stops_a_stage_that_keeps_crashing(start_run) -> None:
    run = start_run(chain("budget", "    type: test.fault\n    params: {crash_always: true}", count=0, fps=10,
                          extra="supervisor: {restart_backoff_s: 0.05, restart_budget: 3, restart_window_s: 60}"))
    assert run.wait() == 1
    assert "crashed 3 times within 60 s: giving up" in run.output()
    assert shm_segments("alpr.budget.") == []


def test_hot_swap_five_times_loses_and_duplicates_nothing(start_run, tmp_path: Path) -> None:
    # An endless source, stopped by SIGTERM after the swaps: however slow the machine, every swap
    # happens while frames flow, and the drain tells how many frames the sink must have seen.
    run = start_run(chain("swap", "    type: transform.passthrough\n    params: {check_stamps: true}", count=0, fps=150))
    run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] > 30, what="frames flowing")
    steps = [
        ["--set", "delay_ms=1"],
        ["--set", "delay_ms=2", "--set", "check_stamps=false"],
        ["--type", "test.tagger", "--set", "tag=plugin-a"],
        ["--type", "test.tagger", "--set", "tag=plugin-b"],
        ["--type", "transform.passthrough", "--set", "check_stamps=true"],
        [],  # same type and parameters: a new process with the code as it is on disk now
    ]
    instances = {run.stage_rows("work")[0]["instance"]}
    for step in steps:
        result = run.cli("swap", "work", *step)
        assert "swapped 'work'" in result.stdout
        instances.add(run.stage_rows("work")[0]["instance"])
        time.sleep(0.3)
    assert len(instances) == len(steps) + 1
    frames = run.stage_rows("out")[0]["frames_in"]
    run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] > frames + 10, what="frames flowing after the last swap")
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait() == 0, run.output()
    emitted = int(re.search(r"cam\s+in\s+0\s+out\s+(\d+)", run.output()).group(1))
    records = read_jsonl(tmp_path / "out/frames.jsonl")
    assert_exactly_once(records, emitted)
    tags = {r["meta"].get("tag") for r in records}
    assert {"plugin-a", "plugin-b"} <= tags  # the other plugin really ran


def test_swap_rejects_bad_requests_and_keeps_running(start_run) -> None:
    run = start_run(chain("badswap", "    type: transform.passthrough", count=0, fps=20))
    run.wait_for(lambda: run.stage_rows("work")[0]["state"] == "running", what="running")
    pid = run.stage_rows("work")[0]["pid"]
    result = run.cli("swap", "work", "--type", "transform.pasthrough", check=False)
    assert result.returncode == 1 and "unknown stage type 'transform.pasthrough', did you mean 'transform.passthrough'?" in result.stderr
    result = run.cli("swap", "work", "--set", "delay_ms=-1", check=False)
    assert result.returncode == 1 and "bad parameters for 'transform.passthrough': delay_ms:" in result.stderr
    result = run.cli("swap", "nosuch", check=False)
    assert "no stage named 'nosuch'" in result.stderr
    result = run.cli("swap", "work", "--type", "source.test_pattern", check=False)
    assert "one is a source or ordered" in result.stderr
    result = run.cli("swap", "work", "--type", "test.fault", "--set", "crash_always=true", check=False)
    assert result.returncode == 1 and "the new instance of 'work' failed to start (exit code 3)" in result.stderr
    assert run.stage_rows("work")[0]["pid"] == pid  # the old instance never stopped
    assert run.stage_rows("work")[0]["type"] == "transform.passthrough"
    frames = run.stage_rows("out")[0]["frames_in"]
    run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] > frames + 10, what="frames still flowing")
    run.cli("restart", "work")
    run.wait_for(lambda: run.stage_rows("work")[0]["pid"] not in (None, pid) and run.stage_rows("work")[0]["state"] == "running",
                 what="the restarted stage")
    assert run.stage_rows("work")[0]["restarts"] == 1


def test_sigterm_drains_in_flight_frames(start_run, tmp_path: Path) -> None:
    run = start_run(chain("term", "    type: transform.passthrough\n    params: {delay_ms: 4}", count=0, fps=200))
    run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] > 50, what="frames flowing")
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait() == 0
    emitted = int(re.search(r"cam\s+in\s+0\s+out\s+(\d+)", run.output()).group(1))
    records = read_jsonl(tmp_path / "out/frames.jsonl")
    assert len(records) == emitted  # what the source made before the signal all reached the sink
    assert_exactly_once(records, emitted)
    assert shm_segments("alpr.term.") == []


def test_duration_stops_the_run(start_run) -> None:
    run = start_run(chain("dur", "    type: transform.passthrough", count=0, fps=30), "--duration", "2")
    started = time.monotonic()
    assert run.wait() == 0
    assert time.monotonic() - started < 30
    assert "duration of 2 s reached" in run.output()


def test_second_run_with_the_same_name_is_refused(start_run, run_env) -> None:
    run = start_run(chain("twice", "    type: transform.passthrough", count=0, fps=10))
    run.wait_for(lambda: run.status()["name"] == "twice", what="up")
    again = run.cli("up", str(run.topology), check=False)
    assert again.returncode == 1 and "a run named 'twice' is already up" in again.stderr


def test_tcp_transport_across_two_logical_hosts_carries_frames_inline(start_run, tmp_path: Path) -> None:
    base = free_port_range(8)
    run = start_run(f"""
name: tcp
transport: {{kind: tcp, base_port: {base}}}
hosts: {{edge: 127.0.0.1, server: 127.0.0.2}}
stages:
  cam: {{type: source.test_pattern, host: edge, params: {{width: 320, height: 240, fps: 0, count: 200}}}}
  near: {{type: transform.passthrough, host: edge, inputs: [cam], params: {{check_stamps: true}}}}
  far: {{type: transform.passthrough, host: server, inputs: [near], params: {{check_stamps: true}}}}
  out: {{type: sink.jsonl, host: server, inputs: [far], params: {{path: out/frames.jsonl, check_stamps: true}}}}
""")
    assert run.wait() == 0, run.output()
    records = read_jsonl(tmp_path / "out/frames.jsonl")
    assert_exactly_once(records, 200)
    assert all("frame_shape" not in r for r in records)  # inline frames on the server side, no shm refs
    assert shm_segments("alpr.tcp.") == []


def test_live_source_drops_when_consumers_fall_behind_and_counts_it(start_run, tmp_path: Path) -> None:
    run = start_run(chain("live", "    type: transform.passthrough\n    params: {delay_ms: 20, check_stamps: true}",
                          count=0, fps=200, extra="frame_pool: {when_full: drop, slots: 4}"))
    run.wait_for(lambda: (run.stage_rows("cam")[0]["pool"] or {}).get("dropped_full", 0) > 20, what="drops counted")
    run.cli("down")
    assert run.wait() == 0
    records = read_jsonl(tmp_path / "out/frames.jsonl")
    ids = [r["frame_id"] for r in records]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids[-1] + 1 > len(ids)  # frames were skipped, not delayed
    assert all(r["stamp"] == r["frame_id"] for r in records)  # and no slot was overwritten under a reader


def test_one_supervisor_per_host_links_over_tcp(start_run, tmp_path: Path) -> None:
    import json

    base = free_port_range(10)
    topology = f"""
name: split
transport: {{kind: tcp, base_port: {base}}}
hosts: {{edge: 127.0.0.1, server: 127.0.0.2}}
stages:
  cam: {{type: source.test_pattern, host: edge, params: {{width: 320, height: 240, fps: 100, count: 300}}}}
  near: {{type: transform.passthrough, host: edge, inputs: [cam], params: {{check_stamps: true}}}}
  far: {{type: transform.passthrough, host: server, replicas: 2, inputs: [near], params: {{check_stamps: true}}}}
  out: {{type: sink.jsonl, host: server, inputs: [far], params: {{path: out/frames.jsonl, check_stamps: true}}}}
"""
    server = start_run(topology, "--host", "server", name="server.yaml")
    server.wait_for(lambda: json.loads(server.cli("status", "--name", "split-server", "--json").stdout)["stages"][0]["state"] == "running",
                    what="the server host's stages")
    edge = start_run(topology, "--host", "edge", name="edge.yaml")
    assert edge.wait() == 0, edge.output()  # the edge ends by itself once its 300 frames left
    summary = {line.split()[0] for line in edge.output().splitlines() if line.startswith("  ")}
    assert summary == {"cam", "near"}  # only the edge host's stages ran here

    def sink_count() -> int:
        rows = json.loads(server.cli("status", "--name", "split-server", "--json").stdout)["stages"]
        assert {r["stage"] for r in rows} == {"far", "out"}
        return next(r["frames_in"] for r in rows if r["stage"] == "out")

    server.wait_for(lambda: sink_count() == 300, what="every frame at the server's sink")
    server.cli("down", "split-server")
    assert server.wait() == 0
    assert_exactly_once(read_jsonl(tmp_path / "out/frames.jsonl"), 300)
    assert shm_segments("alpr.split") == []
    bad = edge.cli("up", str(edge.topology), "--host", "nowhere", check=False)
    assert bad.returncode == 1 and "unknown host 'nowhere' (hosts of" in bad.stderr


def test_tick_and_flush_let_a_stage_emit_without_input(start_run, tmp_path: Path) -> None:
    run = start_run(chain("flush", "    type: test.summary", count=200, fps=100))
    assert run.wait() == 0, run.output()
    summaries = read_jsonl(tmp_path / "out/frames.jsonl")
    assert {s["meta"]["why"] for s in summaries} == {"tick", "flush"}
    assert summaries[-1]["meta"]["why"] == "flush"
    frames = [f for s in summaries for f in s["meta"]["frames"]]
    assert sorted(frames) == list(range(200))  # every frame summarised exactly once, the last ones by flush


def test_queued_envelopes_of_several_cameras_are_batched(start_run, tmp_path: Path) -> None:
    run = start_run("""
name: batch
plugins: [runtime_plugins]
stages:
  cam1: {type: source.test_pattern, params: {width: 64, height: 48, fps: 0, count: 150, camera_id: one}}
  cam2: {type: source.test_pattern, params: {width: 64, height: 48, fps: 0, count: 150, camera_id: two}}
  det: {type: test.batcher, inputs: [cam1, cam2], params: {batch_size: 4, delay_ms: 20}}
  out: {type: sink.jsonl, inputs: [det], params: {path: out/frames.jsonl, check_stamps: true}}
""")
    assert run.wait() == 0, run.output()
    records = read_jsonl(tmp_path / "out/frames.jsonl")
    assert len(records) == 300 and all(r["stamp"] == r["frame_id"] for r in records)
    sizes = Counter(r["meta"]["batch"] for r in records)
    assert max(sizes) == 4 and sizes[4] > 100, sizes  # the slow stage took what was queued, up to batch_size
    batched = [r for r in records if r["meta"]["batch"] > 1]
    assert {r["camera_id"] for r in batched} == {"one", "two"}
