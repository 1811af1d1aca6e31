"""``bench transport``: structure of the result, exact frame accounting, no leaks (never speed)."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys

import pytest

from alpr_topo.tools import bench_transport as bt

SHAPE = (64, 64, 3)
FRAMES = 50
WARMUP = 5


def _segments() -> set[str]:
    try:
        # only this benchmark's segments (run ids "bt<pid>..."): other runs may come and go meanwhile
        return {n for n in os.listdir("/dev/shm") if n.startswith("alpr.bt")}
    except FileNotFoundError:
        return set()


@pytest.fixture(scope="module")
def result():
    before = _segments()
    messages: list[str] = []
    out = bt.run(sizes=[SHAPE], frames=FRAMES, warmup=WARMUP, progress=messages.append)
    out["_leaked"] = sorted(_segments() - before)
    out["_messages"] = messages
    return out


def test_result_is_json_with_contract_fields(result):
    text = json.dumps({k: v for k, v in result.items() if not k.startswith("_")})
    back = json.loads(text)
    assert isinstance(back["results"], list) and back["results"]
    assert isinstance(back["notes"], str) and "stamp" in back["notes"]
    assert back["host"]["cpus"] >= 1 and back["host"]["python"]
    for entry in back["results"]:
        for key in ("method", "frame_bytes", "p50_us", "p99_us", "frames_per_s"):
            assert key in entry, key


def test_every_method_measured_with_positive_values(result):
    methods = {r["method"] for r in result["results"]}
    assert {"shm-zmq", "pickle-zmq", "mp-queue"} <= methods
    assert "shm-zmq-write" in methods
    for r in result["results"]:
        assert r["frame_bytes"] == SHAPE[0] * SHAPE[1] * SHAPE[2]
        assert r["p50_us"] > 0 and r["p99_us"] > 0 and r["frames_per_s"] > 0, r
        assert r["p99_us"] >= r["p50_us"]


def test_every_frame_received_exactly_once(result):
    expected = WARMUP + 2 * FRAMES
    for r in result["results"]:
        assert r["sent"] == expected, r
        assert r["received"] == expected, r
        assert r["unique"] == expected, r
        assert r["missing"] == 0 and r["duplicates"] == 0, r
        assert r["corrupt"] == 0 and r["stale"] == 0, r
        assert r["exactly_once"] is True, r


def test_shm_pool_slots_all_came_back(result):
    for r in result["results"]:
        if r["method"].startswith("shm-zmq"):
            pool = r["pool"]
            assert pool["allocated"] >= WARMUP + 2 * FRAMES
            assert pool["reclaimed"] == 0 and pool["stale_releases"] == 0 and pool["dropped_full"] == 0


def test_no_shared_memory_leaked(result):
    assert result["_leaked"] == []
    assert all(r["leaked_segments"] == 0 for r in result["results"])
    assert not multiprocessing.active_children()


def test_ratios_and_targets_present(result):
    ratios = result["ratios"]
    assert ratios["frame_bytes"] == SHAPE[0] * SHAPE[1] * SHAPE[2]
    assert ratios["p50_vs_pickle-zmq"] > 0 and ratios["p50_vs_mp-queue"] > 0
    assert set(result["targets"]) >= {"p50_met", "frames_per_s_met", "p50_ratio_met"}


def test_progress_and_text(result):
    assert any("shm-zmq" in m for m in result["_messages"])
    text = bt.main_text(result)
    for method in bt.ALL_METHODS:
        assert method in text
    assert "64x64x3" in text


def test_unknown_method_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        bt.run(sizes=[SHAPE], frames=5, methods=["carrier-pigeon"])


def test_tally_counts_missing_duplicates_and_corruption():
    tally = bt._Tally(warmup=1, frames=2)  # ids 0 | 1 2 | 3 4
    tally.add(0, 0, 0, 10)
    tally.add(1, 1, 0, 10)
    tally.add(1, 1, 0, 10)  # duplicate
    tally.add(2, 7, 0, 10)  # stamp says another frame
    tally.add(3, 3, 100, 150)  # 4 never arrives
    tally.add(9, 9, 0, 1)  # unknown id
    report = tally.report()
    assert report["missing"] == 1 and report["duplicates"] == 1
    assert report["corrupt"] == 1 and report["unknown"] == 1
    assert report["latency_ns"] == [10, 10, 10] and report["loaded_ns"] == [50]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork start method (monkeypatch reaches the children)")
def test_failing_consumer_cleans_up(monkeypatch):
    """A consumer dying mid-run: the error surfaces, children are gone, no segment is left."""
    real = bt.read_stamp
    calls = {"n": 0}

    def flaky(image):
        calls["n"] += 1
        if calls["n"] > 10:
            raise RuntimeError("consumer blew up")
        return real(image)

    monkeypatch.setattr(bt, "read_stamp", flaky)
    before = _segments()
    with pytest.raises(bt.BenchError, match="consumer blew up"):
        bt.run(sizes=[SHAPE], frames=FRAMES, warmup=WARMUP, methods=["shm-zmq"], start_method="fork")
    assert _segments() - before == set()
    assert not multiprocessing.active_children()


def test_spawn_start_method_works():
    before = _segments()
    out = bt.run(sizes=[SHAPE], frames=10, warmup=2, methods=["shm-zmq", "mp-queue"], start_method="spawn")
    assert out["host"]["start_method"] == "spawn"
    assert [r["method"] for r in out["results"]] == ["shm-zmq", "mp-queue"]
    assert all(r["exactly_once"] for r in out["results"])
    assert _segments() - before == set()


def test_parse_size():
    assert bt.parse_size("1920x1080") == (1080, 1920, 3)
    assert bt.parse_size("640x480x1") == (480, 640, 1)
    with pytest.raises(ValueError):
        bt.parse_size("1080p")
