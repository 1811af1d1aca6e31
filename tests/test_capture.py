"""Capture stages: video files, image folders (with OpenALPR truth), live streams that are cut and
restored (HTTP MJPEG served here, RTSP from tools/rtsp_server.sh), GStreamer pipelines."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from alpr_topo.core.envelope import Envelope
from alpr_topo.core.testing import HarnessError, StageHarness
from alpr_topo.stages.cap_gst import GST_TEMPLATES, gst_pipeline, gstreamer_available
from alpr_topo.stages.cap_live import LiveReader, RateLimiter
from alpr_topo.stages.cap_open import CaptureError, classify, mask_url
from alpr_topo.stages.capture import STAGE_TYPES
from conftest import read_jsonl
from streaming import (
    MjpegServer,
    RtspServer,
    free_port,
    numbered_frame,
    pull_gst_samples,
    read_number,
    rtsp_server_missing,
    write_numbered_video,
)

OPENALPR_US = Path(__file__).resolve().parents[2] / "shared" / "data" / "openalpr-us"


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """40 numbered frames at 25 fps (1.6 s)."""
    return write_numbered_video(tmp_path / "numbered.mp4", 40, fps=25.0)


def run_all(h: StageHarness, limit: int = 10000) -> list[tuple[Envelope, int]]:
    """Every envelope of a finite source with the number read from its frame (read at once,
    before the harness recycles the slot)."""
    outs: list[tuple[Envelope, int]] = []
    while not h.stage.finished and len(outs) < limit:
        for env in h.run_source(1, timeout_s=30):
            outs.append((env, read_number(h.frame(env))))
    return outs


class ProduceTimer:
    """Times every produce() call from outside the stage (the stage also measures itself)."""

    def __init__(self, stage: Any) -> None:
        self.max_s = 0.0
        self.calls = 0
        inner = stage.produce

        def timed() -> Envelope | None:
            start = time.perf_counter()
            try:
                return inner()
            finally:
                self.calls += 1
                self.max_s = max(self.max_s, time.perf_counter() - start)

        stage.produce = timed


def drive(h: StageHarness, seconds: float, until: Callable[[list[tuple[Envelope, int]]], bool] | None = None,
          numbered: bool = True) -> list[tuple[Envelope, int]]:
    """Call produce the way the runtime does, for at most ``seconds`` or until ``until(outs)``."""
    outs: list[tuple[Envelope, int]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not h.stage.finished:
        try:
            got = h.run_source(1, timeout_s=0.2)
        except HarnessError:
            got = []  # nothing in 0.2 s: the camera is down; keep polling as the event loop would
        for env in got:
            outs.append((env, read_number(h.frame(env)) if numbered else -1))
        if until is not None and until(outs):
            break
    return outs


def wait_counter(h: StageHarness, name: str, minimum: float, seconds: float) -> float:
    """Poll wait_s() (which syncs the reader's stats) until counters[name] >= minimum."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        h.stage.wait_s()
        if h.counters.get(name, 0) >= minimum:
            break
        time.sleep(0.05)
    return h.counters.get(name, 0)


def test_stage_types_are_exported() -> None:
    assert {cls.type_name for cls in STAGE_TYPES} == {"source.video", "source.images"}
    assert all(cls.is_source for cls in STAGE_TYPES)


# -- video files -------------------------------------------------------------------------------


def test_video_file_every_frame_once_in_order_decoded_into_the_slot(video: Path) -> None:
    with StageHarness("source.video", {"url": str(video), "realtime": False, "camera_id": "lane-1"}) as h:
        outs = run_all(h)
        assert h.stage.finished
        assert [env.frame_id for env, _ in outs] == list(range(40))
        assert [number for _, number in outs] == list(range(40)), "a frame's pixels are not the frame its id names"
        env = outs[-1][0]
        assert env.camera_id == "lane-1"
        assert env.frame.shape == (240, 320, 3) and env.frame.dtype == "uint8"
        assert [e.meta["pos_ms"] for e, _ in outs[:3]] == pytest.approx([0.0, 40.0, 80.0])
        assert env.meta["source_frame"] == 39
        assert set(env.meta["capture"]) >= {"fps", "dropped", "reconnects", "decode_ms"}
        assert abs(env.captured_at - time.time()) < 60
        # stamped with the file's own clock (25 fps), not with how fast this machine read it
        gaps = [b.captured_at - a.captured_at for (a, _), (b, _) in zip(outs, outs[1:])]
        assert gaps == pytest.approx([0.04] * 39, abs=1e-5)
        # decoded straight into the shared-memory slot: no copy on this OpenCV
        assert h.counters["zero_copy_frames"] == 40
        assert h.counters["copied_frames"] == 0
        assert h.counters["produce_max_ms"] > 0


def test_video_file_copy_fallback_gives_the_same_frames(video: Path) -> None:
    with StageHarness("source.video", {"url": str(video), "realtime": False, "zero_copy": False}) as h:
        outs = run_all(h)
        assert [number for _, number in outs] == list(range(40))
        assert h.counters["copied_frames"] == 40 and h.counters["zero_copy_frames"] == 0


def test_video_file_loops_and_frame_ids_keep_increasing(video: Path) -> None:
    with StageHarness("source.video", {"url": str(video), "realtime": False, "loop": True, "count": 100}) as h:
        outs = run_all(h)
        assert h.stage.finished
        assert [env.frame_id for env, _ in outs] == list(range(100))
        assert [number for _, number in outs] == [i % 40 for i in range(100)]
        assert [env.meta["loop"] for env, _ in outs][::40] == [0, 1, 2]
        assert outs[40][0].meta["pos_ms"] == pytest.approx(0.0)


def test_video_file_skip_and_count(video: Path) -> None:
    with StageHarness("source.video", {"url": str(video), "realtime": False, "skip": 3, "count": 5}) as h:
        outs = run_all(h)
        assert [env.frame_id for env, _ in outs] == [0, 3, 6, 9, 12]
        assert [number for _, number in outs] == [0, 3, 6, 9, 12]
        assert h.stage.finished


def test_video_file_skip_without_count_reads_to_the_end(video: Path) -> None:
    with StageHarness("source.video", {"url": str(video), "realtime": False, "skip": 7}) as h:
        assert [number for _, number in run_all(h)] == [0, 7, 14, 21, 28, 35]
        assert h.counters["skipped"] == 40 - 6


def test_video_file_start_offset(video: Path) -> None:
    with StageHarness("source.video", {"url": str(video), "realtime": False, "start_s": 1.0, "count": 5}) as h:
        outs = run_all(h)
        assert [number for _, number in outs] == [25, 26, 27, 28, 29]
        assert outs[0][0].meta["pos_ms"] == pytest.approx(1000.0)


def test_video_file_max_fps_in_realtime_keeps_frames_by_video_time(video: Path) -> None:
    # 25 fps limited to 5 fps: every 5th frame by the video's own clock, whatever the machine's speed
    with StageHarness("source.video", {"url": str(video), "realtime": True, "max_fps": 5, "count": 4}) as h:
        assert [number for _, number in run_all(h)] == [0, 5, 10, 15]


def test_video_file_resize(video: Path) -> None:
    with StageHarness("source.video", {"url": str(video), "realtime": False, "resize": [160, 120], "count": 10}) as h:
        outs = run_all(h)
        assert outs[0][0].frame.shape == (120, 160, 3)
        assert [number for _, number in outs] == list(range(10))


def test_video_file_realtime_paces_by_the_file_rate(tmp_path: Path) -> None:
    slow = write_numbered_video(tmp_path / "slow.mp4", 3, fps=1.0)
    with StageHarness("source.video", {"url": str(slow), "realtime": True}) as h:
        assert len(h.run_source(1)) == 1
        assert h.stage.produce() is None  # frame 1 is due a second after frame 0
        assert h.stage.wait_s() > 0.5
    with StageHarness("source.video", {"url": str(slow), "realtime": False}) as h:
        h.run_source(1)
        assert h.stage.wait_s() == 0.0


def test_missing_video_file_is_a_clear_error_at_setup(tmp_path: Path) -> None:
    h = StageHarness("source.video", {"url": str(tmp_path / "nope.mp4")})
    with pytest.raises(FileNotFoundError, match=r"no such video file: .*nope\.mp4"):
        h.start()
    h.close()


def test_a_file_that_is_not_a_video_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    h = StageHarness("source.video", {"url": str(junk)})
    with pytest.raises(CaptureError, match="cannot decode video file"):
        h.start()
    h.close()


def test_bad_parameters_are_rejected() -> None:
    for bad in ({"url": "a.mp4", "skip": 0}, {"url": "a.mp4", "reconnect_initial_s": 5, "reconnect_max_s": 1},
                {"url": "a.mp4", "resize": [0, 10]}, {"url": "a.mp4", "rtsp_transport": "quic"},
                {"url": "a.mp4", "fps": 3}):
        with pytest.raises(ValidationError):
            StageHarness("source.video", bad)


# -- url kinds ---------------------------------------------------------------------------------


def test_urls_are_classified(video: Path) -> None:
    assert classify(str(video)).kind == "file" and not classify(str(video)).live
    assert classify(f"file://{video}").target == str(video)
    rtsp = classify("rtsp://user:secret@10.1.2.3:554/stream1")
    assert (rtsp.kind, rtsp.live, rtsp.api) == ("stream", True, cv2.CAP_FFMPEG)
    assert rtsp.ffmpeg_options == {"rtsp_transport": "tcp"}
    assert "secret" not in rtsp.display
    assert classify("https://cam.example/mjpg/video.mjpg").kind == "stream"
    assert classify("http://x/y.mp4", live=False).live is False
    assert (classify(0).kind, classify(0).target, classify(0).api) == ("device", 0, cv2.CAP_V4L2)
    assert classify("/dev/video2").kind == "device"
    with pytest.raises(CaptureError, match="unknown url scheme"):
        classify("ftp://x/y.mp4")
    assert mask_url("rtsp://admin:p%40ss@cam/1") == "rtsp://admin:***@cam/1"


# -- GStreamer -----------------------------------------------------------------------------------


JETSON_FROM_BRIEF = ('rtspsrc location="rtsp://10.0.0.5:554/stream1" latency=200 ! rtph264depay ! h264parse ! '
                     "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
                     "appsink drop=1 max-buffers=1")


def test_gst_pipeline_builder() -> None:
    assert gst_pipeline("rtsp://10.0.0.5:554/stream1") == JETSON_FROM_BRIEF
    assert gst_pipeline("rtsp://cam/1", "cpu-h264", latency_ms=100, protocols="tcp").startswith(
        'rtspsrc location="rtsp://cam/1" protocols=tcp latency=100 ! rtph264depay ! h264parse ! avdec_h264 !')
    for name in GST_TEMPLATES:
        text = gst_pipeline("rtsp://u:p@cam:8554/a?b=1&c=2", name)
        assert text.endswith("video/x-raw,format=BGR ! appsink drop=1 max-buffers=1")
        assert '"rtsp://u:p@cam:8554/a?b=1&c=2"' in text
    with pytest.raises(ValueError, match="rtsp://"):
        gst_pipeline("http://cam/video.mjpg")
    with pytest.raises(ValueError, match="unknown GStreamer template"):
        gst_pipeline("rtsp://cam/1", "jetson-av1")
    with pytest.raises(ValueError, match="characters"):
        gst_pipeline('rtsp://cam/1" ! fakesink')


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV has GStreamer: the missing-GStreamer error cannot happen")
def test_gstreamer_url_without_gstreamer_is_a_clear_error_at_setup() -> None:
    for params in ({"url": "gst:videotestsrc ! videoconvert ! appsink"},
                   {"url": "rtsp://cam/1", "gst_template": "jetson-h264"},
                   {"url": "videotestsrc ! appsink", "backend": "gstreamer"}):
        h = StageHarness("source.video", params)
        with pytest.raises(CaptureError, match=r"built without GStreamer.*getBuildInformation"):
            h.start()
        h.close()


@pytest.mark.skipif(not gstreamer_available(), reason="OpenCV was built without GStreamer "
                    "(cv2.getBuildInformation() shows 'GStreamer: NO'); the pipeline path needs it")
def test_gstreamer_pipeline_source_reads_frames() -> None:
    pipeline = "gst:videotestsrc num-buffers=50 ! video/x-raw,width=320,height=240 ! videoconvert ! video/x-raw,format=BGR ! appsink"
    with StageHarness("source.video", {"url": pipeline, "count": 10}) as h:
        outs = drive(h, 30, until=lambda o: len(o) >= 10, numbered=False)
        assert len(outs) == 10 and outs[0][0].frame.shape == (240, 320, 3)


@pytest.mark.slow
def test_cpu_gst_templates_decode_the_local_rtsp_stream() -> None:
    """The CPU templates, run by Debian's GStreamer against the real RTSP server (the Jetson ones
    differ only in the decoder and need a Jetson)."""
    missing = rtsp_server_missing()
    if missing:
        pytest.skip(missing)
    with RtspServer() as server:
        for template in ("cpu-h264", "cpu-auto"):
            shapes = pull_gst_samples(gst_pipeline(server.url, template, protocols="tcp"), 5,
                                      needs=["rtspsrc", "avdec_h264", "appsink"])
            if shapes is None:
                pytest.skip("Debian's GStreamer with gst-libav (avdec_h264) is not installed: tools/rtsp_server.sh install")
            assert shapes == ["BGR 320x240"] * 5, template


# -- image folders -----------------------------------------------------------------------------


def openalpr_truth(txt: Path) -> list[tuple[str, list[float], str]]:
    rows = []
    for line in txt.read_text().splitlines():
        if line.strip():
            name, x, y, w, h, plate = line.split("\t")
            rows.append((name, [float(x), float(y), float(x) + float(w), float(y) + float(h)], plate))
    return rows


def test_openalpr_benchmark_folder_attaches_the_truth() -> None:
    if not OPENALPR_US.is_dir():
        pytest.skip(f"the OpenALPR US benchmark images are not at {OPENALPR_US} (shared/data/openalpr-us)")
    images = sorted(OPENALPR_US.glob("*.jpg"))
    with StageHarness("source.images", {"path": str(OPENALPR_US), "camera_id": "bench"}, slots=4) as h:
        seen = {}
        while not h.stage.finished:
            for env in h.run_source(1):
                path = Path(env.meta["image_path"])
                image = cv2.imread(str(path))
                assert env.frame.shape == image.shape
                assert np.array_equal(h.frame(env), image)
                seen[path.name] = env
        assert sorted(seen) == sorted(p.name for p in images)
        ids = [env.frame_id for env in seen.values()]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        for name, env in seen.items():
            expected = openalpr_truth(OPENALPR_US / (Path(name).stem + ".txt"))
            truth = env.meta["truth"]
            assert [t["plate"] for t in truth] == [plate for _, _, plate in expected]
            assert [t["plate_box"] for t in truth] == [box for _, box, _ in expected]
            assert all(t["vehicle_id"] is None and t["vehicle_box"] is None and t["plate_visible"] for t in truth)
            assert env.camera_id == "bench"
        car13 = seen["car13.jpg"].meta["truth"]
        assert car13[0]["plate"] == "EMR7094" and car13[0]["plate_box"] == [692.0, 470.0, 948.0, 598.0]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    cv2.imwrite(str(root / "img1.png"), numbered_frame(1, 160, 120))
    cv2.imwrite(str(root / "img2.jpg"), numbered_frame(2, 160, 120))
    cv2.imwrite(str(root / "img10.png"), numbered_frame(10, 160, 120))
    cv2.imwrite(str(root / "sub" / "img3.png"), numbered_frame(3, 160, 120))
    (root / "img2.txt").write_text("img2.jpg\t10\t20\t30\t15\tABC123\nimg2.jpg\t100\t40\t40\t20\tXYZ9\n")
    (root / "notes.md").write_text("not an image")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    return root


def test_image_folder_natural_order_truth_and_unreadable_files(folder: Path) -> None:
    with StageHarness("source.images", {"path": str(folder)}) as h:
        outs = run_all(h)
        assert [number for _, number in outs] == [1, 2, 10]  # natural order; broken.jpg skipped, notes.md ignored
        assert [Path(env.meta["image_path"]).name for env, _ in outs] == ["img1.png", "img2.jpg", "img10.png"]
        assert [env.frame_id for env, _ in outs] == [1, 2, 3]  # the index in the folder: broken.jpg was 0
        assert "truth" not in outs[0][0].meta
        assert outs[1][0].meta["truth"] == [
            {"vehicle_id": None, "plate": "ABC123", "format": None, "vehicle_box": None,
             "plate_box": [10.0, 20.0, 40.0, 35.0], "plate_visible": True},
            {"vehicle_id": None, "plate": "XYZ9", "format": None, "vehicle_box": None,
             "plate_box": [100.0, 40.0, 140.0, 60.0], "plate_visible": True},
        ]
        assert outs[0][0].camera_id == "under_test"  # default: the stage's name
        assert h.counters["unreadable"] == 1


def test_image_folder_glob_loop_count_resize(folder: Path) -> None:
    params = {"path": str(folder), "glob": "**/*.png", "loop": True, "count": 7, "resize": [320, 240]}
    with StageHarness("source.images", params) as h:
        outs = run_all(h)
        assert [number for _, number in outs] == [1, 10, 3, 1, 10, 3, 1]
        assert [env.frame_id for env, _ in outs] == list(range(7))
        assert outs[0][0].frame.shape == (240, 320, 3)
    with StageHarness("source.images", {"path": str(folder), "glob": "img2.*", "resize": [320, 240]}) as h:
        (env, _), = run_all(h)
        assert env.meta["truth"][0]["plate_box"] == [20.0, 40.0, 80.0, 70.0]  # scaled x2 with the frame


def test_image_folder_fps_pacing(folder: Path) -> None:
    with StageHarness("source.images", {"path": str(folder), "fps": 1}) as h:
        h.run_source(1)
        assert h.stage.produce() is None and h.stage.wait_s() > 0.5


def test_image_folder_errors(tmp_path: Path) -> None:
    h = StageHarness("source.images", {"path": str(tmp_path / "missing")})
    with pytest.raises(FileNotFoundError, match="no such image folder"):
        h.start()
    h.close()
    (tmp_path / "empty").mkdir()
    h = StageHarness("source.images", {"path": str(tmp_path / "empty")})
    with pytest.raises(CaptureError, match="no images matching"):
        h.start()
    h.close()


# -- live streams ------------------------------------------------------------------------------

LIVE = {"reconnect_initial_s": 0.2, "reconnect_max_s": 1.0, "stall_timeout_s": 3.0, "open_timeout_s": 3.0}


def test_mjpeg_stream_cut_and_restored_reconnects(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with MjpegServer(fps=25) as server, \
            StageHarness("source.video", {"url": server.url, "camera_id": "gate", **LIVE}) as h:
        timer = ProduceTimer(h.stage)
        before = drive(h, 30, until=lambda o: len(o) >= 15)
        assert len(before) >= 15, "no frames from the MJPEG stream before the cut"

        server.stop()  # cut: listening socket and client connections closed
        cut_at = server.sent
        assert wait_counter(h, "reconnects", 1, 15) >= 1
        drive(h, 3.0)  # down for a few seconds; the event loop keeps polling meanwhile
        h.stage.wait_s()
        assert h.counters["connected"] == 0
        assert h.counters["reconnects"] >= 2  # retried with backoff (0.2, 0.4, 0.8 s ...)
        server.start()  # restored on the same port

        after = drive(h, 30, until=lambda o: len([n for _, n in o if n >= cut_at]) >= 10)
        restored = [n for _, n in after if n >= cut_at]
        assert len(restored) >= 10, f"no frames after the restore (reconnects={h.counters['reconnects']})"
        ids = [env.frame_id for env, _ in before + after]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert after[-1][0].meta["capture"]["reconnects"] >= 1
        assert after[-1][0].camera_id == "gate"
        assert server.connections >= 2
        # never looked hung: no produce() call blocked (measured outside and inside the stage)
        assert timer.calls > 50
        assert timer.max_s < 1.0
        assert h.counters["produce_max_ms"] < 1000.0
    assert any(server.url in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_mjpeg_stream_that_stalls_is_reopened() -> None:
    with MjpegServer(fps=25) as server, \
            StageHarness("source.video", {"url": server.url, **LIVE, "stall_timeout_s": 1.0, "open_timeout_s": 1.0}) as h:
        timer = ProduceTimer(h.stage)
        assert len(drive(h, 30, until=lambda o: len(o) >= 5)) >= 5
        server.pause()  # connection stays open, nothing arrives
        assert wait_counter(h, "reconnects", 1, 20) >= 1
        server.resume()
        stalled_at = server.sent
        after = drive(h, 30, until=lambda o: any(n >= stalled_at for _, n in o))
        assert any(n >= stalled_at for _, n in after)
        assert timer.max_s < 1.0


def test_live_stream_keeps_only_the_latest_frame_and_counts_drops() -> None:
    with MjpegServer(fps=50) as server, StageHarness("source.video", {"url": server.url, **LIVE}) as h:
        first = drive(h, 30, until=lambda o: len(o) >= 1)
        assert first
        time.sleep(1.0)  # the graph takes nothing for a while: the reader keeps only the newest frame
        (env, number), = drive(h, 10, until=lambda o: len(o) >= 1)[:1]
        wait_counter(h, "dropped", 1, 5)
        assert h.counters["dropped"] >= 10
        assert number > first[0][1] + 10  # not the frame that was next in line a second ago
        assert env.frame_id - first[0][0].frame_id > 10  # ids skip what was dropped


def test_live_stream_skip_and_max_fps_leave_frames_undecoded() -> None:
    with MjpegServer(fps=30) as server, \
            StageHarness("source.video", {"url": server.url, **LIVE, "skip": 3, "count": 6}) as h:
        outs = drive(h, 30)
        assert h.stage.finished and len(outs) == 6
        assert all(env.frame_id % 3 == 0 for env, _ in outs)
        assert all(n % 3 == 0 for _, n in outs)
        assert h.counters["skipped"] >= 10
    with MjpegServer(fps=30) as server, \
            StageHarness("source.video", {"url": server.url, **LIVE, "max_fps": 5, "count": 5}) as h:
        outs = drive(h, 30)
        assert h.stage.finished and len(outs) == 5
        numbers = [n for _, n in outs]
        assert all(b - a >= 2 for a, b in zip(numbers, numbers[1:])), numbers  # 30 fps thinned to 5
        assert h.counters["skipped"] >= 5


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/stream.mjpg", "rtsp://127.0.0.1:{port}/cam", "/dev/video97"])
def test_unreachable_source_keeps_retrying_with_backoff(url: str, caplog: pytest.LogCaptureFixture) -> None:
    url = url.format(port=free_port())
    caplog.set_level(logging.WARNING)
    with StageHarness("source.video", {"url": url, "reconnect_initial_s": 0.05, "reconnect_max_s": 0.2}) as h:
        timer = ProduceTimer(h.stage)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and h.counters.get("reconnects", 0) < 3:
            assert h.stage.produce() is None
            time.sleep(h.stage.wait_s())
        assert h.counters["reconnects"] >= 3
        assert h.counters["connected"] == 0
        assert timer.max_s < 1.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(url in m and "cannot open" in m for m in warnings), warnings


class FakeCapture:
    """A capture whose open fails, or whose reads hang on a gate (a driver ignoring timeouts)."""

    def __init__(self, opens: bool, hang: threading.Event | None = None) -> None:
        self.opens = opens
        self.hang = hang
        self.reads = 0
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return self.opens

    def grab(self) -> bool:
        self.reads += 1
        if self.hang is not None and self.reads > 3:
            self.hang.wait(30)
            return False
        time.sleep(0.01)
        return True

    def retrieve(self, image: np.ndarray | None = None) -> tuple[bool, np.ndarray]:
        return True, numbered_frame(self.reads, 64, 48)

    def release(self) -> None:
        self.released = True


def test_backoff_doubles_up_to_the_maximum(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    opened: list[FakeCapture] = []

    def opener(spec: Any, **kwargs: Any) -> FakeCapture:
        opened.append(FakeCapture(opens=False))
        return opened[-1]

    reader = LiveReader(classify("rtsp://127.0.0.1:9/cam"), logging.getLogger("alpr_topo.test.backoff"), camera="c",
                        open_kwargs={}, reconnect_initial_s=0.05, reconnect_max_s=0.4, stall_timeout_s=1,
                        opener=opener)
    reader.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(opened) < 6:
        time.sleep(0.02)
    reader.stop()
    delays = [float(m) for m in re.findall(r"retrying in ([\d.]+) s", caplog.text)]
    assert delays[:6] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4][: len(delays[:6])] and len(delays) >= 5
    assert reader.snapshot().reconnects == len(opened) - 1
    assert all(c.released for c in opened)


def test_watchdog_replaces_a_reader_stuck_in_a_read() -> None:
    gate = threading.Event()
    opened: list[FakeCapture] = []

    def opener(spec: Any, **kwargs: Any) -> FakeCapture:
        opened.append(FakeCapture(opens=True, hang=gate if not opened else None))
        return opened[-1]

    reader = LiveReader(classify("rtsp://127.0.0.1:9/cam"), logging.getLogger("alpr_topo.test.watchdog"), camera="c",
                        open_kwargs={}, reconnect_initial_s=0.05, reconnect_max_s=0.1, stall_timeout_s=0.3,
                        opener=opener, grace_s=0.2)
    try:
        reader.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(opened) < 2:
            reader.watchdog()  # what produce() does on every call
            time.sleep(0.02)
        assert len(opened) == 2, "the watchdog never replaced the stuck reader"
        stats = reader.snapshot()
        assert stats.abandoned == 1 and stats.reconnects >= 1
        while time.monotonic() < deadline and reader.snapshot().kept < 5:
            time.sleep(0.02)
        assert reader.snapshot().kept >= 5  # the new reader delivers
        gate.set()  # the stuck read returns at last: its thread must let go of its capture, not deliver
        while time.monotonic() < deadline and not opened[0].released:
            time.sleep(0.02)
        assert opened[0].released
    finally:
        gate.set()
        reader.stop()


def test_rate_limiter_caps_the_long_run_rate_without_bursts() -> None:
    limiter = RateLimiter(10)
    kept = [t for t in (i / 30 for i in range(300)) if limiter.keep(t)]
    assert len(kept) == 100  # 30 fps -> 10 fps: every third frame
    limiter = RateLimiter(10)
    assert sum(limiter.keep(i / 12) for i in range(120)) <= 101
    limiter = RateLimiter(10)
    assert limiter.keep(0.0) and limiter.keep(5.0) and not limiter.keep(5.01)  # no burst after a gap


@pytest.mark.slow
def test_rtsp_stream_cut_and_restored_reconnects(caplog: pytest.LogCaptureFixture) -> None:
    """A real RTSP server (GStreamer's, tools/rtsp_server.sh) is stopped and started again."""
    missing = rtsp_server_missing()
    if missing:
        pytest.skip(missing)
    caplog.set_level(logging.INFO)
    server = RtspServer(fps=15).start()
    try:
        with StageHarness("source.video", {"url": server.url, "camera_id": "rtsp-cam", **LIVE,
                                           "open_timeout_s": 8.0}) as h:
            timer = ProduceTimer(h.stage)
            before = drive(h, 60, until=lambda o: len(o) >= 10, numbered=False)
            assert len(before) >= 10, "no frames from the RTSP server"
            assert before[0][0].frame.shape == (240, 320, 3)
            server.stop()
            assert wait_counter(h, "reconnects", 1, 30) >= 1
            drive(h, 1.0, numbered=False)
            assert h.counters["connected"] == 0
            server.start()
            after = drive(h, 60, until=lambda o: len(o) >= 10, numbered=False)
            assert len(after) >= 10, f"no frames after the RTSP server came back (reconnects={h.counters['reconnects']})"
            ids = [env.frame_id for env, _ in before + after]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            assert timer.max_s < 1.0 and h.counters["produce_max_ms"] < 1000.0
    finally:
        server.stop()
    assert any(server.url in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# -- whole runs --------------------------------------------------------------------------------


@pytest.mark.slow
def test_alpr_topo_up_reads_a_video_file(start_run, tmp_path: Path) -> None:
    video = write_numbered_video(tmp_path / "clip.mp4", 30, fps=25)
    run = start_run(f"""
name: capfile-{uuid.uuid4().hex[:6]}
stages:
  cam:
    type: source.video
    params: {{url: {video}, camera_id: clip, realtime: false}}
  out:
    type: sink.jsonl
    inputs: [cam]
    params: {{path: out/frames.jsonl}}
""")
    assert run.wait() == 0, run.output()
    records = read_jsonl(tmp_path / "out/frames.jsonl")
    assert [r["frame_id"] for r in records] == list(range(30))
    assert {r["camera_id"] for r in records} == {"clip"}
    assert records[10]["meta"]["pos_ms"] == pytest.approx(400.0)
    assert records[0]["frame_shape"] == [240, 320, 3]


@pytest.mark.slow
def test_alpr_topo_up_survives_a_stream_cut(start_run, tmp_path: Path) -> None:
    """The whole runtime: the camera process is never killed as hung while its stream is down."""
    with MjpegServer(fps=25) as server:
        run = start_run(f"""
name: capcut-{uuid.uuid4().hex[:6]}
supervisor: {{heartbeat_timeout_s: 3}}
frame_pool: {{when_full: drop}}
stages:
  cam:
    type: source.video
    params: {{url: "{server.url}", camera_id: gate-1, reconnect_initial_s: 0.2, reconnect_max_s: 1.0,
             stall_timeout_s: 3, open_timeout_s: 2}}
  out:
    type: sink.jsonl
    inputs: [cam]
    params: {{path: out/frames.jsonl}}
""")
        run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] >= 20, what="frames before the cut")
        server.stop()
        run.wait_for(lambda: run.stage_rows("cam")[0]["counters"].get("reconnects", 0) >= 2, what="reconnect attempts")
        row = run.stage_rows("cam")[0]
        assert row["counters"]["connected"] == 0, row
        assert row["restarts"] == 0 and row["state"] == "running" and row["errors"] == 0, (row, run.output())
        assert row["counters"]["produce_max_ms"] < 1000, row
        at_cut = run.stage_rows("out")[0]["frames_in"]
        server.start()
        run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] >= at_cut + 20, what="frames after the restore")
        row = run.stage_rows("cam")[0]
        assert row["counters"]["connected"] == 1 and row["restarts"] == 0 and row["errors"] == 0, row
        assert row["counters"]["produce_max_ms"] < 1000, row
        run.close()  # SIGTERM: drain and stop
    output = run.log_path.read_text()
    assert run.proc.returncode == 0, output
    records = read_jsonl(tmp_path / "out/frames.jsonl")
    assert len(records) >= at_cut + 20, output
    ids = [r["frame_id"] for r in records]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {r["camera_id"] for r in records} == {"gate-1"}
    assert records[-1]["meta"]["capture"]["reconnects"] >= 2
    assert "no heartbeat" not in output and "restarting" not in output, output


def test_video_file_read_as_a_live_camera(video: Path) -> None:
    """live: true on a file simulates a camera: paced by a reader thread, latest frame wins, loop."""
    with StageHarness("source.video", {"url": str(video), "live": True, "realtime": False, "loop": False}) as h:
        outs = drive(h, 60)
        assert h.stage.finished
        numbers = [n for _, n in outs]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        assert [env.frame_id for env, _ in outs] == numbers  # ids count the file's frames: gaps where dropped
        assert len(outs) + h.counters["dropped"] == 40
    with StageHarness("source.video", {"url": str(video), "live": True, "loop": True, "count": 50}) as h:
        outs = drive(h, 60)
        assert h.stage.finished and len(outs) == 50
        assert h.counters["reconnects"] == 0  # looping a file is no reconnect
        assert [n for _, n in outs] == [env.frame_id % 40 for env, _ in outs]
        assert outs[-1][0].frame_id >= 49


def test_a_stream_read_as_a_file_must_be_reachable_at_setup() -> None:
    h = StageHarness("source.video", {"url": f"http://127.0.0.1:{free_port()}/clip.mp4", "live": False,
                                      "open_timeout_s": 2})
    with pytest.raises(CaptureError, match=r"cannot open http://127\.0\.0\.1:\d+/clip\.mp4"):
        h.start()
    h.close()
