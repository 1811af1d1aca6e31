"""The ready topologies (cpu, cpu-models, jetson), `up --input`, and the synthetic and pipeline
benchmarks that run them for real.

Tests needing the shared models (``../shared``) skip with the reason when absent.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from alpr_topo.core.overrides import load_changed, source_stage, use_input
from alpr_topo.core.topology import TopologyError, load
from alpr_topo.stages.detect import YoloParams, make_yolo_detector, model_file_checks
from alpr_topo.tools import bench_pipeline, bench_replay, bench_synthetic

REPO = Path(__file__).resolve().parent.parent
TOPOLOGIES = REPO / "topologies"
MODELS = REPO.parent / "shared" / "models"
PLATE_MODEL = MODELS / "plate-detector-yolov9t-416-int8.onnx"


def need_models() -> None:
    if not PLATE_MODEL.exists():
        pytest.skip(f"{MODELS} is absent (tests use ../shared relative to the repository; see DESIGN.md)")


def cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alpr_topo.tools.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


# -- the files -------------------------------------------------------------------------------------


def test_cpu_topology_is_the_offline_default() -> None:
    topo = load(str(TOPOLOGIES / "cpu.yaml"))
    types = [topo.stages[name].type for name in topo.order()]
    assert types == ["source.synthetic", "detect.plates", "track.bytetrack", "ocr.plate", "dedup.plates", "publish.local"]
    assert topo.stages["ocr"].params["model"] is None  # nothing to download


def test_cpu_models_topology_takes_models_from_alpr_models(monkeypatch: pytest.MonkeyPatch) -> None:
    need_models()
    monkeypatch.setenv("ALPR_MODELS", str(MODELS))
    topo = load(str(TOPOLOGIES / "cpu-models.yaml"))
    assert topo.stages["detect"].params["model"] == str(PLATE_MODEL)
    assert Path(topo.stages["ocr"].params["model"]).name == "plate-ocr-cct-xs-v2-global.onnx"


def test_cpu_models_without_models_names_the_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ALPR_MODELS", str(tmp_path))
    with pytest.raises(TopologyError) as err:
        load(str(TOPOLOGIES / "cpu-models.yaml"))
    text = str(err.value)
    assert "cpu-models.yaml:" in text and "plate-detector-yolov9t-416-int8.onnx" in text and "models pull" in text


def test_jetson_topology_validates_here(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALPR_MODELS", "ALPR_KAFKA", "CAM1_URL"):
        monkeypatch.delenv(name, raising=False)
    with model_file_checks(False):
        topo = load(str(TOPOLOGIES / "jetson.yaml"))
    cams = [n for n in topo.order() if topo.stages[n].type == "source.video"]
    assert len(cams) == 4 and all(topo.stages[c].params["gst_template"] == "jetson-h264" for c in cams)
    assert {topo.stages[n].params["backend"] for n in ("vehicles", "plates")} == {"tensorrt"}
    assert topo.stages["ocr"].replicas == 2
    assert topo.stages["kafka"].type == "publish.kafka"


def test_jetson_detectors_fall_back_to_onnxruntime_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Here (no TensorRT), the jetson detectors run on ONNX Runtime and say so once."""
    need_models()
    from alpr_topo.stages.det_tensorrt import availability

    if availability()[0]:
        pytest.skip("TensorRT is installed here: the fallback is not taken (the gpu tests cover TensorRT)")
    with model_file_checks(False):
        params = dict(load(str(TOPOLOGIES / "jetson.yaml")).stages["plates"].params)
    params["model"] = str(PLATE_MODEL)
    logger = logging.getLogger("test.jetson")
    with caplog.at_level(logging.WARNING, logger="test.jetson"):
        detectors = [make_yolo_detector(YoloParams(**params), logger) for _ in range(2)]
    warnings = [r for r in caplog.records if "ONNX Runtime instead" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    for det in detectors:
        det.close()


# -- up --input ------------------------------------------------------------------------------------


def data_of(name: str) -> dict[str, Any]:
    return yaml.safe_load((TOPOLOGIES / name).read_text())


def test_use_input_replaces_the_source(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0")
    data = data_of("cpu.yaml")
    use_input(data, str(video))
    assert data["stages"]["camera"] == {"type": "source.video", "params": {
        "url": str(video), "camera_id": "synthetic", "realtime": False}}
    data = data_of("cpu.yaml")
    use_input(data, str(tmp_path))
    assert data["stages"]["camera"]["type"] == "source.images"
    data = data_of("cpu.yaml")
    use_input(data, "rtsp://cam.local/stream")
    assert data["stages"]["camera"]["params"]["url"] == "rtsp://cam.local/stream"
    with pytest.raises(ValueError, match="no such file"):
        use_input(data_of("cpu.yaml"), str(tmp_path / "absent.mp4"))
    with pytest.raises(ValueError, match="has 4"):
        source_stage(data_of("jetson.yaml"))


def test_changed_topology_is_checked_like_a_written_one(tmp_path: Path) -> None:
    def bad(data: dict[str, Any]) -> None:
        data["stages"]["detect"]["params"]["max_side"] = 1  # below the allowed range

    with pytest.raises(TopologyError) as err:
        load_changed(str(TOPOLOGIES / "cpu.yaml"), bad)
    assert "max_side" in str(err.value) and "cpu.yaml" in str(err.value)


@pytest.mark.slow
def test_readme_run_command_prints_plate_events(tmp_path: Path, run_env: dict[str, str]) -> None:
    """`alpr-topo up topologies/cpu.yaml`, shortened: events printed as they happen, a summary, files."""
    env = {**run_env, "ALPR_DURATION": "12", "ALPR_VEHICLES": "2"}
    result = cli("up", str(TOPOLOGIES / "cpu.yaml"), "--status-port", "0", env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    event_lines = [line for line in result.stdout.splitlines() if " synthetic track " in line]
    assert event_lines, result.stdout + result.stderr[-2000:]
    assert "events:" in result.stdout + result.stderr
    files = list((tmp_path / "out" / "events").glob("events-*.jsonl"))
    events = [json.loads(line) for f in files for line in f.read_text().splitlines() if '"plate"' in line]
    assert events and all(e["camera_id"] == "synthetic" and e["plate"]["normalized_text"] for e in events)


@pytest.mark.slow
def test_up_input_reads_a_video_file(tmp_path: Path, run_env: dict[str, str]) -> None:
    video = tmp_path / "traffic.mp4"
    made = cli("synth", "--out", str(video), "--seconds", "6", "--fps", "5", "--vehicles", "1", "--formats", "us",
               env=run_env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    result = cli("up", str(TOPOLOGIES / "cpu.yaml"), "--input", str(video), "--status-port", "0",
                 env=run_env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = result.stderr
    assert "camera" in summary and " out       30" in summary  # every frame of the file read
    missing = cli("up", str(TOPOLOGIES / "cpu.yaml"), "--input", str(tmp_path / "nope.mp4"), env=run_env, cwd=tmp_path)
    assert missing.returncode != 0 and "no such file" in missing.stderr


# -- benchmarks ------------------------------------------------------------------------------------


def test_synthetic_scoring() -> None:
    vehicles = {1: "7ABC123", 2: "5XYZ999", 3: "8KLM456"}
    shown = {**vehicles, 4: "1HID000"}

    def ev(vid: int | None, text: str) -> dict[str, Any]:
        return {"plate": {"normalized_text": text}, "extras": {"truth_vehicle_id": str(vid) if vid else None}}

    events = [ev(1, "7ABC123"), ev(1, "7ABC123"), ev(2, "5XYZ99"), ev(None, "QQQ"), ev(4, "HID000")]
    r = bench_synthetic.score(events, vehicles, shown)
    assert r["vehicles"] == 3 and r["events"] == 4 and r["unreadable_events"] == 1
    assert r["event_recall"] == pytest.approx(1 / 3, abs=1e-3)
    assert r["duplicate_events"] == 1 and r["wrong_text_events"] == 2
    assert {m["truth"] for m in r["misses"]} == {"5XYZ999", "8KLM456"}


def test_synthetic_truth_tells_readable_from_partly_shown_plates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readable: whole and unhidden in 3 frames. Shown: any part of the plate in view once, also
    a plate always more than 30% hidden (its fragments are unreadable events, not wrong ones).
    A plate never in view, or wholly hidden, is neither (an event from it is wrong)."""
    def obj(vid: int, box: list[int] | None, occlusion: float) -> dict[str, Any]:
        return {"vehicle_id": vid, "plate": f"PLATE{vid}", "plate_box": box, "occlusion": occlusion,
                "plate_visible": box is not None and occlusion <= 0.3}

    frames = [[obj(1, [10, 10, 50, 30], 0.0), obj(2, [60, 10, 100, 30], 0.6), obj(3, None, 1.0),
               obj(4, [10, 40, 50, 60], 1.0), obj(5, [0, 10, 30, 30], 0.2)]] * 3

    class Scene:
        width, height = 200, 100

        def __init__(self, params: dict[str, Any]) -> None:
            self.left = list(frames)

        @property
        def finished(self) -> bool:
            return not self.left

        def render(self, draw: bool = False) -> tuple[None, list[dict[str, Any]]]:
            return None, self.left.pop()

    monkeypatch.setattr("alpr_topo.stages.synth_scene.SceneRenderer", Scene)
    readable, shown = bench_synthetic.truth_vehicles({})
    assert readable == {1: "PLATE1"}
    assert set(shown) == {1, 2, 5}  # 5: cut by the frame's edge, 2: always 60% hidden


def test_bench_replay_lists_each_vehicles_reads(tmp_path: Path) -> None:
    """cpu.yaml's detect/track/ocr in this process on a 10 s scene: every readable vehicle was
    read as its plate at least once, each read says where it came from, and --vehicle prints them
    (replaying the scene only until that vehicle has left it)."""
    r = bench_replay.replay(seconds=10, vehicles=2, seed=3)
    assert r["frames"] == 50 and r["vehicles"]
    readable = [v for v in r["vehicles"] if v["kind"] == "readable"]
    assert readable
    for v in readable:
        assert v["plate"] in {read["text"] for read in v["reads"]}, v
        assert all(set(read) == {"frame", "track_id", "text", "confidence", "aspect", "height", "hidden"}
                   for read in v["reads"])
    first = readable[0]
    text = bench_replay.main_text(r, first["vehicle_id"])
    assert f"vehicle {first['vehicle_id']} {first['plate']} (readable)" in text
    assert text.count("  frame ") == len(first["reads"])
    alone = bench_replay.replay(seconds=10, vehicles=2, seed=3, vehicle=first["vehicle_id"])
    assert [v["vehicle_id"] for v in alone["vehicles"]] == [first["vehicle_id"]]
    assert alone["vehicles"][0]["reads"] == first["reads"]
    last_frame = max(read["frame"] for read in first["reads"])
    assert last_frame < alone["frames"] <= r["frames"]
    no_ocr = tmp_path / "no-ocr.yaml"
    no_ocr.write_text("name: t\nstages:\n  cam: {type: source.synthetic}\n  out: {type: sink.null, inputs: [cam]}\n")
    with pytest.raises(ValueError, match="no ocr"):
        bench_replay.replay(str(no_ocr), seconds=1, vehicles=1)


@pytest.mark.slow
def test_bench_synthetic_runs_the_topology(run_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPR_TOPO_RUNTIME_DIR", run_env["ALPR_TOPO_RUNTIME_DIR"])
    r = bench_synthetic.run(seconds=10, vehicles=2, seed=3)
    assert r["frames"] == 50 and r["vehicles"] >= 1
    assert r["events"] + r["unreadable_events"] >= 1
    assert 0 <= r["event_recall"] <= 1 and set(r["targets"]) == {"event_recall_min", "duplicate_rate_max", "wrong_text_rate_max"}
    json.dumps(r)


@pytest.mark.slow
def test_bench_pipeline_contract(run_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPR_TOPO_RUNTIME_DIR", run_env["ALPR_TOPO_RUNTIME_DIR"])
    r = bench_pipeline.run(frames=8, width=640, height=360)
    for key in ("staged_fps", "sequential_fps", "speedup", "latency_p50_ms", "latency_p99_ms", "frames"):
        assert key in r
    assert r["frames"] == 8 and r["staged_fps"] > 0 and r["sequential_fps"] > 0
    assert r["measured_stage"] == "ocr"  # dedup holds frames back until passages end
    assert all(r["staged_stages"][name]["frames_out"] == 8 for name in ("camera", "detect", "track", "ocr"))
    assert r["speedup"] == pytest.approx(r["staged_fps"] / r["sequential_fps"], rel=0.02)
