"""The synthetic traffic source: determinism, exact truth boxes, plate formats, occlusion,
the stage in StageHarness, and the video / benchmark-folder writers."""

from __future__ import annotations

import hashlib
import json
import os
import re

import cv2
import numpy as np
import pydantic
import pytest
from click.testing import CliRunner

from alpr_topo.core.testing import StageHarness
from alpr_topo.stages.synthetic import (
    FAMILIES, OCCLUDED_ABOVE, PLATE_FORMATS, SceneRenderer, SyntheticParams, SyntheticSource, canonical,
)
from alpr_topo.stages.synth_plates import _text_mask, resolve_fonts
from alpr_topo.tools.synth import synth_command, write_images, write_video

SMALL = {"width": 320, "height": 192, "plate_width": (40, 90), "count": 24, "vehicles": 6, "max_simultaneous": 3,
         "crossing_s": (1.0, 2.0)}
MAGENTA = "#ff00ff"
EXACT = {"plate_fill": MAGENTA, "noise": 0, "shutter_s": 0, "low_light": 0}


def digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def run(params: dict, **more) -> list[tuple[np.ndarray, list[dict]]]:
    return list(SceneRenderer({**params, **more}).frames())


def magenta(image: np.ndarray) -> np.ndarray:
    """Pixels that are mostly plate: more than half magenta over whatever is behind."""
    b, g, r = (image[..., i].astype(np.int16) for i in range(3))
    return (r - g > 127) & (b - g > 127)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def fully_inside(box: list[int] | None, width: int, height: int) -> bool:
    return box is not None and box[0] > 0 and box[1] > 0 and box[2] < width and box[3] < height


# --- determinism --------------------------------------------------------------------------------

def test_same_seed_gives_identical_frames_and_truth():
    a = run(SMALL, seed=11)
    b = run(SMALL, seed=11)
    assert len(a) == len(b) == SMALL["count"]
    assert [digest(i) for i, _ in a] == [digest(i) for i, _ in b]
    assert json.dumps([t for _, t in a]) == json.dumps([t for _, t in b])
    assert any(t for _, t in a), "the scene shows no vehicle at all"


def test_different_seed_gives_different_frames_and_truth():
    a = run(SMALL, seed=1, count=6)
    b = run(SMALL, seed=2, count=6)
    assert all(digest(x) != digest(y) for (x, _), (y, _) in zip(a, b))
    assert [o["plate"] for _, t in a for o in t] != [o["plate"] for _, t in b for o in t]


def test_render_into_a_given_array_matches_frames():
    renderer = SceneRenderer(SMALL, count=4, seed=3)
    out = np.zeros((192, 320, 3), np.uint8)
    expected = run(SMALL, count=4, seed=3)
    for image, truth in expected:
        got, got_truth = renderer.render(out=out)
        assert got is out
        assert digest(out) == digest(image) and got_truth == truth
    assert renderer.finished


# --- truth ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("direction", ["ltr", "rtl", "towards", "away"])
def test_truth_boxes_match_rendered_plate_pixels(direction):
    params = {**SMALL, **EXACT, "directions": [direction], "occlusion": 0.0, "count": 40, "vehicles": 8}
    checked = 0
    for image, truth in run(params, seed=5):
        mask = magenta(image)
        H, W = mask.shape
        covered = np.zeros_like(mask)
        for obj in truth:
            pb, vb = obj["plate_box"], obj["vehicle_box"]
            assert 0 <= vb[0] < vb[2] <= W and 0 <= vb[1] < vb[3] <= H
            if pb is None:
                continue
            assert vb[0] <= pb[0] and vb[1] <= pb[1] and pb[2] <= vb[2] and pb[3] <= vb[3], (obj, "plate outside vehicle")
            covered[max(0, pb[1] - 2): pb[3] + 2, max(0, pb[0] - 2): pb[2] + 2] = True
            if not fully_inside(pb, W, H) or obj["occlusion"] > 0:
                continue
            assert obj["plate_visible"]
            window = np.zeros_like(mask)
            window[max(0, pb[1] - 4): pb[3] + 4, max(0, pb[0] - 4): pb[2] + 4] = True
            found = bbox(mask & window)
            assert found is not None, obj
            assert max(abs(f - t) for f, t in zip(found, pb)) <= 1, (found, pb, obj)
            area = (pb[2] - pb[0]) * (pb[3] - pb[1])
            assert np.count_nonzero(mask[pb[1]:pb[3], pb[0]:pb[2]]) >= 0.7 * area
            checked += 1
        # every plate pixel on screen belongs to a plate in the truth
        assert not np.any(mask & ~covered)
    assert checked >= 10


def test_plate_widths_stay_in_range_while_visible():
    lo, hi = 40, 90
    widths = [o["plate_box"][2] - o["plate_box"][0]
              for _, truth in run({**SMALL, "directions": ["ltr", "towards", "away"], "count": 60}, seed=9)
              for o in truth if o["plate_visible"]]
    assert widths and min(widths) >= lo - 2 and max(widths) <= hi + 2


def test_truth_objects_follow_the_vision_conventions():
    for _, truth in run(SMALL, seed=4):
        for obj in truth:
            assert {"vehicle_id", "plate", "format", "vehicle_box", "plate_box", "plate_visible"} <= set(obj)
            assert isinstance(obj["vehicle_id"], int) and isinstance(obj["plate_visible"], bool)
            assert obj["plate"] == canonical(obj["plate_display"])
            assert re.fullmatch(r"[0-9A-Z]+", obj["plate"])
            assert PLATE_FORMATS[obj["format"]].matches(obj["plate"])
            if obj["plate_visible"]:
                assert obj["occlusion"] <= OCCLUDED_ABOVE
        assert [o["vehicle_id"] for o in truth] == sorted(o["vehicle_id"] for o in truth)


def test_partly_out_of_frame_plates_are_not_visible():
    seen_partial = False
    for _, truth in run({**SMALL, "directions": ["ltr", "rtl"], "count": 40}, seed=2):
        for obj in truth:
            pb = obj["plate_box"]
            if pb is None:
                assert not obj["plate_visible"]
            elif obj["occlusion"] > 0 and (pb[0] == 0 or pb[2] == 320) and obj["occlusion"] < 1:
                seen_partial = True
                assert not obj["plate_visible"]
    assert seen_partial


# --- plate formats -------------------------------------------------------------------------------

@pytest.mark.parametrize("format_id", sorted(PLATE_FORMATS))
def test_plate_texts_match_their_format(format_id):
    fmt = PLATE_FORMATS[format_id]
    rng = np.random.default_rng(0)
    assert fmt.matches(canonical(fmt.example))
    for _ in range(300):
        text, display = fmt.random_text(rng)
        assert text == canonical(display) and " " not in text and "-" not in text
        assert fmt.matches(text), (format_id, display)


@pytest.mark.parametrize("font", resolve_fonts([]))
def test_plate_characters_stand_in_the_cap_band_apart(font):
    """Plate type has no descenders and its characters do not touch: DejaVu Sans' J dips a
    quarter of a capital below the baseline and hooks under the letter before it, and the plate
    reader read it I, L or U (sessions 7-10), an error of the synthetic font, not of readers."""
    mask, cap_row, cap_h = _text_mask("HJQH", font)
    assert cap_row <= 0.05 * cap_h and mask.shape[0] <= 1.06 * cap_h
    for pair in ("AJ", "LJ", "VJ", "J7"):
        ink_columns = (_text_mask(pair, font)[0] > 64).any(axis=0)
        assert not ink_columns.all(), f"{pair!r} in {font} runs together"


def test_format_families_and_scene_formats():
    assert set(FAMILIES["us"]) >= {"us-ca", "us-ny", "us-tx"}
    assert set(FAMILIES["eu"]) >= {"eu-de", "eu-fr", "eu-uk", "eu-nl", "eu-it"}
    seen = set()
    for _, truth in run({**SMALL, "count": 60, "vehicles": 24, "max_simultaneous": 6, "formats": ["eu-nl", "us-ca"]}, seed=1):
        for obj in truth:
            seen.add(obj["format"])
            assert PLATE_FORMATS[obj["format"]].matches(obj["plate"])
    assert seen == {"eu-nl", "us-ca"}


def test_bad_parameters_are_rejected():
    with pytest.raises(pydantic.ValidationError, match="unknown plate format"):
        SyntheticParams(formats=["us", "xx-yy"])
    with pytest.raises(pydantic.ValidationError):
        SyntheticParams(directions=["sideways"])
    with pytest.raises(pydantic.ValidationError, match="too wide"):
        SyntheticParams(width=200, height=120, plate_width=(40, 150))
    with pytest.raises(pydantic.ValidationError, match="not found"):
        SyntheticParams(fonts=["/no/such/font.ttf"])
    with pytest.raises(pydantic.ValidationError):
        SyntheticParams(plate_fill="magenta")


def test_default_scene_is_a_realistic_alpr_test():
    renderer = SceneRenderer()
    p = renderer.params
    assert (p.width, p.height, p.fps) == (1280, 720, 15.0) and renderer.total_frames == 900
    assert p.vehicles == 20 and tuple(p.plate_width) == (90, 220) and set(FAMILIES["us"] + FAMILIES["eu"]) <= set(renderer.format_ids)
    assert p.occlusion > 0 and p.shutter_s > 0
    image, truth = renderer.render()
    assert image.shape == (720, 1280, 3)
    visible = [o for o in truth if o["plate_visible"]]
    assert visible and all(88 <= o["plate_box"][2] - o["plate_box"][0] <= 222 for o in visible)


# --- occlusion ------------------------------------------------------------------------------------

def test_occlusion_hides_plates_and_clears_plate_visible():
    params = {**SMALL, **EXACT, "occlusion": 1.0, "directions": ["ltr", "rtl"], "count": 60, "vehicles": 4,
              "max_simultaneous": 1}
    hidden_frames = 0
    visible_ids, hidden_ids = set(), set()
    for image, truth in run(params, seed=3):
        mask = magenta(image)
        for obj in truth:
            pb = obj["plate_box"]
            if not fully_inside(pb, 320, 192):
                continue
            area = (pb[2] - pb[0]) * (pb[3] - pb[1])
            shown = np.count_nonzero(mask[pb[1]:pb[3], pb[0]:pb[2]]) / area
            if obj["plate_visible"]:
                visible_ids.add(obj["vehicle_id"])
                assert shown >= 1 - OCCLUDED_ABOVE - 0.1
            else:
                assert obj["occlusion"] > OCCLUDED_ABOVE
                assert shown < 1 - OCCLUDED_ABOVE + 0.05, (obj, shown)
                hidden_ids.add(obj["vehicle_id"])
                hidden_frames += 1
    assert hidden_frames >= 2
    assert hidden_ids & visible_ids, "an occluded plate should be readable before or after the occluder passes"


# --- the stage --------------------------------------------------------------------------------------

def test_stage_in_harness_emits_frames_with_truth_and_finishes():
    params = {**SMALL, "count": 5, "fps": 0, "seed": 8, "camera_id": "cam-synth"}
    expected = run(params)
    with StageHarness("source.synthetic", params) as h:
        assert isinstance(h.stage, SyntheticSource)
        outs = h.run_source(100)
        assert h.stage.finished
        assert [e.frame_id for e in outs] == list(range(5))
        for env, (image, truth) in zip(outs, expected):
            assert env.camera_id == "cam-synth"
            frame = h.frame(env)
            assert frame.shape == (192, 320, 3) and frame.dtype == np.uint8
            assert digest(frame) == digest(image)
            assert env.meta["truth"] == truth
        assert any(env.meta["truth"] for env in outs)
        # stamped with scene time (unpaced: the renderer's simulation rate), not production time
        step = 1 / h.stage.renderer.fps
        assert [b.captured_at - a.captured_at for a, b in zip(outs, outs[1:])] == pytest.approx([step] * 4, abs=1e-5)


def test_stage_is_registered_with_its_schema():
    info = SyntheticSource.describe()
    assert info["type"] == "source.synthetic" and info["source"]
    assert {"width", "height", "fps", "count", "duration_s", "seed", "camera_id", "vehicles", "formats",
            "plate_width", "occlusion", "low_light", "shutter_s", "noise", "fonts", "directions"} <= set(info["params"])


# --- writers ----------------------------------------------------------------------------------------

def test_write_video_is_readable_and_truth_aligned(tmp_path):
    out, truth = tmp_path / "scene.mp4", tmp_path / "scene.jsonl"
    params = {**SMALL, "count": 12, "seed": 6, "camera_id": "cam7"}
    calls = []
    summary = write_video(str(out), str(truth), params, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (12, 12)
    assert summary["frames"] == 12 and summary["width"] == 320 and summary["height"] == 192
    video = summary["video"]
    assert os.path.exists(video)
    cap = cv2.VideoCapture(video)
    assert cap.isOpened()
    decoded = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame)
    cap.release()
    assert len(decoded) == 12 and decoded[0].shape == (192, 320, 3)
    lines = [json.loads(line) for line in truth.read_text().splitlines()]
    assert [line["frame_id"] for line in lines] == list(range(12))
    assert all(line["camera_id"] == "cam7" for line in lines)
    rendered = run(params)
    for frame, line, (image, objects) in zip(decoded, lines, rendered):
        assert line["objects"] == objects
        assert np.abs(frame.astype(np.int16) - image).mean() < 12  # lossy, but the same picture


def test_write_video_falls_back_to_mjpg_avi_when_mp4_cannot_be_opened(tmp_path, monkeypatch):
    real = cv2.VideoWriter

    def writer(path, fourcc, fps, size):
        if fourcc == cv2.VideoWriter_fourcc(*"mp4v"):
            return real(str(tmp_path / "no-such-dir" / "x" / "y.mp4"), fourcc, fps, size)  # does not open
        return real(path, fourcc, fps, size)

    monkeypatch.setattr(cv2, "VideoWriter", writer)
    messages = []
    summary = write_video(str(tmp_path / "scene.mp4"), str(tmp_path / "scene.jsonl"), {**SMALL, "count": 5},
                          on_message=messages.append)
    assert summary["codec"] == "MJPG" and summary["video"] == str(tmp_path / "scene.avi")
    assert messages and "MJPG" in messages[0] and summary["warnings"] == messages
    monkeypatch.setattr(cv2, "VideoWriter", real)
    cap = cv2.VideoCapture(summary["video"])
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 5


def test_write_images_uses_the_openalpr_layout(tmp_path):
    folder = tmp_path / "bench"
    summary = write_images(str(folder), {**SMALL, "count": 30, "seed": 12}, every=3)
    jpgs = sorted(p for p in os.listdir(folder) if p.endswith(".jpg"))
    assert jpgs and summary["images"] == len(jpgs)
    plates = 0
    for name in jpgs:
        stem = name[:-4]
        image = cv2.imread(str(folder / name))
        H, W = image.shape[:2]
        lines = (folder / f"{stem}.txt").read_text().splitlines()
        assert lines
        for line in lines:
            fields = line.split("\t")
            assert len(fields) == 6 and fields[0] == name
            x, y, w, h = (int(v) for v in fields[1:5])
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= W and y + h <= H
            assert any(f.matches(fields[5]) for f in PLATE_FORMATS.values())
            plates += 1
    assert plates == summary["image_plates"]


def test_synth_command_writes_video_images_and_summary(tmp_path):
    result = CliRunner().invoke(synth_command, [
        "--out", str(tmp_path / "v.mp4"), "--images", str(tmp_path / "img"), "--frames", "6", "--size", "320x192",
        "--plate-width", "40-90", "--formats", "us", "--seed", "4", "--set", "plate_rotation_deg=0", "--json", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames"] == 6 and summary["truth"] == str(tmp_path / "v.truth.jsonl")
    assert len((tmp_path / "v.truth.jsonl").read_text().splitlines()) == 6
    bad = CliRunner().invoke(synth_command, ["--out", str(tmp_path / "x.mp4"), "--formats", "mars"])
    assert bad.exit_code != 0 and "unknown plate format" in bad.output
    assert CliRunner().invoke(synth_command, []).exit_code != 0
