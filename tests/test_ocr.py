"""Plate reading: readers, preprocessing, the engine's accuracy on real plates, and the
``ocr.plate`` stage (env.plates, throttling, best shot) through the StageHarness.

The accuracy tests read every plate of the OpenALPR US benchmark (``../shared/data/openalpr-us``,
58 photos) cut out with its ground-truth box, and print exact-match accuracy per reader::

    pytest -s tests/test_ocr.py -k accuracy
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from alpr_topo.core.testing import StageHarness
from alpr_topo.stages import ocr_prep as prep
from alpr_topo.stages.det_base import box_aspect
from alpr_topo.stages.ocr import OcrParams, OcrStage, shot_score
from alpr_topo.stages.ocr_engine import STRATEGIES, PlateOCR
from alpr_topo.stages.ocr_readers import (
    CombinedReader, FastPlateConfig, FastPlateReader, PPOCRReader, Read, Reader,
)
from alpr_topo.stages.ocr_doubles import collapsed_double
from alpr_topo.stages.regions import load_regions
from alpr_topo.stages.synth_plates import PLATE_FORMATS, render_plate, resolve_font

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data" / "openalpr-us"
MODEL = SHARED / "models" / "plate-ocr-cct-xs-v2-global.onnx"


def _load_truth() -> list[tuple[str, np.ndarray, list[float], str]]:
    items = []
    for txt in sorted(DATA.glob("*.txt")):
        for line in txt.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 6:
                continue
            image = cv2.imread(str(DATA / parts[0]))
            assert image is not None, parts[0]
            x, y, w, h = (float(v) for v in parts[1:5])
            items.append((parts[0], image, [x, y, x + w, y + h], parts[5].strip()))
    return items


@pytest.fixture(scope="module")
def truth():
    if not DATA.is_dir():
        pytest.skip(f"benchmark photos not found at {DATA} (the shared data folder beside the repository)")
    items = _load_truth()
    assert len(items) == 58
    return items


@pytest.fixture(scope="module")
def model() -> str:
    if not MODEL.is_file():
        pytest.skip(f"fast-plate-ocr model not found at {MODEL} (the shared models folder beside the repository)")
    return str(MODEL)


@pytest.fixture(scope="module")
def us():
    return load_regions(env={}).select(["us"])


# -- synthetic plates (no data needed) ------------------------------------------------------------


def draw_plate(text: str = "ABC1234", w: int = 260, h: int = 130, rows: tuple[str, ...] | None = None) -> np.ndarray:
    img = np.full((h, w, 3), 235, np.uint8)
    cv2.rectangle(img, (3, 3), (w - 4, h - 4), (40, 40, 40), 3)
    if rows:
        for i, t in enumerate(rows):
            cv2.putText(img, t, (25, 55 + i * 55), cv2.FONT_HERSHEY_DUPLEX, 1.6, (20, 20, 20), 3)
    else:
        cv2.putText(img, text, (14, 88), cv2.FONT_HERSHEY_DUPLEX, 1.7, (20, 20, 20), 4)
    return img


def in_scene(plate: np.ndarray, angle: float = 0.0, persp: float = 0.0) -> tuple[np.ndarray, list[float]]:
    """The plate on a grey background three times its size, tilted; and a loose box around it."""
    H, W = plate.shape[:2]
    src = np.float32([[0, 0], [W, 0], [W, H], [0, H]])
    dst = src + np.float32([W, H])
    dst[1, 1] += persp * H
    dst[2, 1] -= persp * H
    m = cv2.getPerspectiveTransform(src, dst)
    scene = cv2.warpPerspective(plate, m, (3 * W, 3 * H), dst=np.full((3 * H, 3 * W, 3), 90, np.uint8),
                                borderMode=cv2.BORDER_TRANSPARENT)
    rot = cv2.getRotationMatrix2D((1.5 * W, 1.5 * H), angle, 1.0)
    scene = cv2.warpAffine(scene, rot, (3 * W, 3 * H), borderValue=(90, 90, 90))
    return scene, [0.95 * W, 0.8 * H, 2.05 * W, 2.2 * H]


# -- preprocessing ------------------------------------------------------------------------------------


def test_crop_box_clips_and_copies():
    frame = np.arange(100 * 200 * 3, dtype=np.uint8).reshape(100, 200, 3)
    frame.flags.writeable = False
    c = prep.crop_box(frame, [10, 10, 50, 30], 0.1)
    assert c.shape == (24, 48, 3) and c.flags.writeable and c.base is None
    assert prep.crop_box(frame, [-20, -20, 30, 30], 0.5).shape[:2] == (55, 55)  # clipped at 0
    assert prep.crop_box(frame, [300, 300, 400, 400]).shape == (1, 1, 3)  # outside: a dummy pixel


def test_character_row_and_quality():
    plate = draw_plate()
    rows = prep.char_rows(plate)
    assert rows and rows[0].count >= 6 and abs(rows[0].angle) < 2
    band = prep.row_crop(plate, 0.1)
    assert band is not None and band.shape[1] == plate.shape[1] and band.shape[0] < 0.7 * plate.shape[0]
    q = prep.quality(plate)
    assert set(q) == {"sharpness", "width", "height", "angle"} and q["width"] == 260 and q["sharpness"] > 0
    blurred = prep.quality(cv2.GaussianBlur(plate, (0, 0), 3))
    assert blurred["sharpness"] < q["sharpness"]
    scene, box = in_scene(plate, angle=10)
    tilted = prep.char_rows(prep.crop_box(scene, box, 0.1))
    assert tilted and 6 < abs(tilted[0].angle) < 14


def test_rectify_levels_a_tilted_plate():
    scene, box = in_scene(draw_plate(), angle=12, persp=0.1)
    crop = prep.crop_box(scene, box, 0.1)
    flat = prep.rectify(crop)
    assert flat is not None
    rows = prep.char_rows(flat)
    assert rows and abs(rows[0].angle) < 3
    assert prep.rectify(draw_plate()) is None  # nothing to straighten


def test_two_line_rows():
    plate = draw_plate(rows=("AB12", "CDE3"))
    rows = prep.split_rows(plate)
    assert rows is not None and len(rows) == 2 and rows[0].shape[0] < 0.6 * plate.shape[0]
    joined = prep.two_line(plate)
    assert joined is not None and joined.shape[1] > 1.5 * joined.shape[0]
    assert prep.split_rows(draw_plate()) is None


def _rendered(fmt_id: str, display: str, width: int = 180, ground: tuple[int, int, int] = (90, 90, 90),
              pad: int = 12) -> tuple[np.ndarray, int]:
    """A plate of the synthetic source's styles on a plain ground (BGR), and the pad around it."""
    fmt = PLATE_FORMATS[fmt_id]
    height = round(width / fmt.aspect)
    bgr, _ = render_plate(fmt, display, width, height, resolve_font("DejaVuSans-Bold"), np.random.default_rng(0))
    return cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=ground), pad


def test_strip_bands_cuts_the_european_bands_off():
    crop, pad = _rendered("eu-fr", "TX-286-NS")  # country band left, department band right
    w = crop.shape[1]
    left, right = pad + 0.085 * 180, pad + 0.915 * 180  # where the synthetic bands end and begin
    out = prep.strip_bands(crop)
    x1 = next(x for x in range(w) if np.array_equal(crop[:, x:x + out.shape[1]], out))
    assert left - 2 <= x1 <= left + 6
    assert right - 6 <= x1 + out.shape[1] <= right + 2
    only_left, _ = _rendered("eu-de", "B MW 1234")  # no right band
    out = prep.strip_bands(only_left)
    assert out.shape[1] < only_left.shape[1] and np.array_equal(out, only_left[:, -out.shape[1]:])
    # and the line recogniser reads the plate, not the bands' letters and numbers
    assert PPOCRReader().read([crop])[0].text == "TX286NS"


def test_strip_bands_keeps_plates_without_bands():
    for plate in (_rendered("us-ca", "7ABC123")[0],                   # navy characters
                  _rendered("us-ny", "ABC-1234")[0],                  # navy, a header in navy too
                  prep.crop_box(*in_scene(draw_plate("ABC1234")), 0.1)):
        assert prep.strip_bands(plate) is plate
    all_blue = np.full((50, 200, 3), (160, 60, 10), np.uint8)  # a plate printed blue: no end to the blue
    cv2.putText(all_blue, "AB1234", (20, 38), cv2.FONT_HERSHEY_DUPLEX, 1.2, (250, 250, 250), 2)
    assert prep.strip_bands(all_blue) is all_blue
    # a blue car around a navy-lettered plate: at most the paint beside the plate goes
    crop, pad = _rendered("us-ca", "7ABC123", ground=(150, 60, 20))
    out = prep.strip_bands(crop)
    x1 = next(x for x in range(crop.shape[1]) if np.array_equal(crop[:, x:x + out.shape[1]], out))
    assert x1 <= pad and x1 + out.shape[1] >= crop.shape[1] - pad


def test_contrast_scale_noise_keep_shapes():
    plate = draw_plate()
    assert prep.clahe(plate).shape == plate.shape
    assert prep.denoise(plate).shape == plate.shape
    small = cv2.resize(plate, (52, 26))
    assert prep.upscale(small, 48).shape[0] == 48 and prep.upscale(plate, 48) is plate
    assert prep.stretch_gray(plate // 4 + 50).max() == 255


# -- readers --------------------------------------------------------------------------------------------


def test_ppocr_reads_a_synthetic_plate_offline():
    reader = PPOCRReader()
    reads = reader.read([draw_plate("ABC1234"), draw_plate("7XYZ890")])
    assert [r.text for r in reads] == ["ABC1234", "7XYZ890"]
    assert all(len(r.char_confidences) == 7 and 0.5 < r.confidence <= 1 for r in reads)
    assert reads[0].scorer is not None and reads[0].char_logp.shape == (7, 36)
    opts = reader.session.get_session_options()
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1


def test_ppocr_keeps_a_doubled_letter_it_would_collapse():
    """PP-OCR reads the narrow "JJ" of DejaVu Sans Bold as one J; the row's blobs restore it."""
    font = resolve_font("DejaVuSans-Bold")
    reader = PPOCRReader()
    for width in (110, 180):
        bgr, _ = render_plate(PLATE_FORMATS["us-tx"], "JJZ-4273", 2 * width, width, font, np.random.default_rng(0))
        plate = cv2.resize(bgr, (width, width // 2), interpolation=cv2.INTER_AREA)
        crop = cv2.copyMakeBorder(plate, 10, 10, 10, 10, cv2.BORDER_CONSTANT, value=(90, 90, 90))
        read = reader.read([crop])[0]
        assert (read.text, read.extra.get("doubled")) == ("JJZ4273", "J")
        assert len(read.char_confidences) == 7 and read.scorer.greedy == "JJZ4273"


def _line_and_row(text: str) -> tuple[np.ndarray, prep.CharRow]:
    line = np.full((60, 40 + 34 * len(text), 3), 235, np.uint8)
    cv2.putText(line, text, (12, 48), cv2.FONT_HERSHEY_DUPLEX, 1.6, (20, 20, 20), 4)
    return line, prep.char_rows(line)[0]


def _labels_on(row: prep.CharRow, owners: list[list[int]], frame_px: float, frames: int) -> np.ndarray:
    """A greedy CTC path with one character per group of blobs, at the groups' centre."""
    labels = np.zeros(frames, np.int64)
    boxes = sorted(row.boxes)
    for k, group in enumerate(owners, start=1):
        centre = np.mean([boxes[i][0] + boxes[i][2] / 2 for i in group])
        labels[int(centre / frame_px)] = k
    return labels


def test_collapsed_double_needs_two_alike_blobs_on_one_character():
    line, row = _line_and_row("HH123")
    assert row.count == 5
    frames = line.shape[1] // 4
    one_for_two = _labels_on(row, [[0, 1], [2], [3], [4]], 4.0, frames)
    assert collapsed_double(one_for_two, row, line, 4.0) == 0
    # every blob read: nothing to restore
    assert collapsed_double(_labels_on(row, [[0], [1], [2], [3], [4]], 4.0, frames), row, line, 4.0) is None
    # a different letter that the read dropped beside its neighbour is no double
    line, row = _line_and_row("YH123")
    assert collapsed_double(_labels_on(row, [[0, 1], [2], [3], [4]], 4.0, frames), row, line, 4.0) is None
    # two characters missing: not one collapsed double
    line, row = _line_and_row("HH1234")
    assert collapsed_double(_labels_on(row, [[0, 1], [2], [3, 4], [5]], 4.0, line.shape[1] // 4), row, line, 4.0) is None


def test_fast_plate_reader_loads_its_config(model, truth):
    reader = FastPlateReader(model, threads=1)
    assert reader.config_path == MODEL.with_suffix(".yaml")
    cfg = reader.config
    assert (cfg.max_plate_slots, cfg.pad_char, cfg.img_height, cfg.img_width) == (10, "_", 64, 128)
    assert cfg.image_color_mode == "rgb" and "United States" in cfg.plate_regions
    assert reader.session.get_session_options().intra_op_num_threads == 1
    name, image, box, plate = truth[0]
    read = reader.read([prep.crop_box(image, box, 0.1)])[0]
    assert read.text == plate and read.countries and max(read.countries, key=read.countries.get) == "United States"
    assert read.scorer is not None and len(read.char_confidences) == len(read.text)


def test_fast_plate_reader_missing_model_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="fast-plate-ocr release assets"):
        FastPlateReader(tmp_path / "nope.onnx")


def test_fast_plate_config_keep_aspect_ratio(tmp_path, model):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(MODEL.with_suffix(".yaml").read_text().replace("keep_aspect_ratio: false", "keep_aspect_ratio: true"))
    reader = FastPlateReader(model, cfg, threads=1)
    assert reader.config.keep_aspect_ratio
    out = reader.prepare(np.full((20, 200, 3), 255, np.uint8))
    assert out.shape == (64, 128, 3)
    assert (out[0] == 114).all() and (out[32] == 255).all()  # letterboxed with padding grey
    bad = tmp_path / "bad.yaml"
    bad.write_text("alphabet: 'AB'\npad_char: '_'\n")
    with pytest.raises(ValueError, match="pad_char"):
        FastPlateConfig.load(bad)


def _read(text: str, confs: list[float], alphabet: str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", second: str = "",
          name: str = "r") -> Read:
    logp = np.full((len(text), len(alphabet)), np.log(1e-4))
    for i, (c, p) in enumerate(zip(text, confs)):
        logp[i, alphabet.index(c)] = np.log(p)
        if second:
            logp[i, alphabet.index(second[i])] = np.log(max(1e-4, 1 - p))
    logp -= np.logaddexp.reduce(logp, axis=1, keepdims=True)
    return Read(text, confs, float(np.prod(confs) ** (1 / len(confs))), name, char_logp=logp, char_alphabet=alphabet)


def test_combined_reader_votes_per_character(us):
    comb = CombinedReader(PPOCRReader.__new__(PPOCRReader), PPOCRReader.__new__(PPOCRReader), us)
    agree = comb.combine(_read("ABC1234", [0.9] * 7), _read("ABC1234", [0.8] * 7))
    assert agree.text == "ABC1234" and agree.confidence > 0.9 and agree.extra["agree"]
    # same length: each position goes to the more confident reader
    a = _read("ABC1Z34", [0.9, 0.9, 0.9, 0.9, 0.55, 0.9, 0.9], second="ABC1234")
    b = _read("A8C1234", [0.9, 0.5, 0.9, 0.9, 0.95, 0.9, 0.9], second="ABC1234")
    voted = comb.combine(a, b)
    assert voted.text == "ABC1234" and voted.extra["how"] == "product"
    # different lengths: the one that fits a region
    c = comb.combine(_read("ABC12345", [0.99] * 8), _read("ABC1234", [0.8] * 7))
    assert c.text == "ABC1234" and c.extra["how"] == "pick"
    # neither fits a region: the primary's, not a confident fragment of the plate
    assert not us.match("ZZ") and not us.match("9")
    assert comb.combine(_read("ZZ", [0.6, 0.6]), _read("9", [0.99])).text == "ZZ"


# -- the engine -------------------------------------------------------------------------------------------


def test_engine_strategies_straighten_a_tilted_plate(us):
    scene, box = in_scene(draw_plate("ABC1234"), angle=12, persp=0.12)
    engine = PlateOCR(PPOCRReader(), us, accept_confidence=1.01)  # never sure: every strategy runs
    res = engine.read_frame(scene, [box])[0]
    assert res.normalized == "ABC1234" and res.region == "us"
    tried = [a.strategy for a in res.attempts]
    assert tried[:3] == ["base", "pad", "pad"] and "rectify" in tried and "clahe" in tried
    rectified = next(a for a in res.attempts if a.strategy == "rectify")
    assert rectified.text == "ABC1234"
    sure = PlateOCR(PPOCRReader(), us).read_frame(draw_plate("ABC1234"), [[0, 0, 260, 130]])[0]
    assert [a.strategy for a in sure.attempts] == ["base"]  # confident at once: nothing else tried
    with pytest.raises(ValueError, match="unknown strategies"):
        PlateOCR(PPOCRReader.__new__(PPOCRReader), us, strategies=["pad", "magic"])


def test_engine_two_line_plate(us):
    plate = draw_plate(rows=("AB12", "CDE3"))
    engine = PlateOCR(PPOCRReader(), None, region_mode="off", strategies=["two_line"], accept_confidence=1.01)
    res = engine.read_frame(plate, [[0, 0, plate.shape[1], plate.shape[0]]])[0]
    two = [a for a in res.attempts if a.strategy == "two_line"]
    assert two and two[0].read.extra["rows"] == ["AB12", "CDE3"] and two[0].text == "AB12CDE3"


# -- accuracy on the 58 OpenALPR US plates ---------------------------------------------------------


def _accuracy(engine: PlateOCR, truth) -> tuple[float, float, list[tuple[str, str, str]]]:
    misses = []
    t0 = time.perf_counter()
    for name, image, box, plate in truth:
        res = engine.read_frame(image, [box])[0]
        if res.normalized != plate:
            misses.append((name, plate, res.normalized))
    ms = (time.perf_counter() - t0) * 1000 / len(truth)
    return 1 - len(misses) / len(truth), ms, misses


@pytest.fixture(scope="module")
def accuracy(truth, us):
    """Exact-match accuracy and ms per plate for each reader, raw and with regions + strategies."""
    results: dict[str, tuple[float, float, list]] = {}
    pp = PPOCRReader()
    results["ppocr, raw"] = _accuracy(PlateOCR(pp, None, region_mode="off", strategies=[]), truth)
    results["ppocr + us rules"] = _accuracy(PlateOCR(pp, us, strategies=[]), truth)
    results["ppocr + us rules + strategies"] = _accuracy(PlateOCR(pp, us), truth)
    if MODEL.is_file():
        fp = FastPlateReader(str(MODEL))
        both = CombinedReader(fp, pp, us)
        everywhere = load_regions(env={}).select(["us", "eu"])
        results["fast-plate-ocr, raw"] = _accuracy(PlateOCR(fp, None, region_mode="off", strategies=[]), truth)
        results["fast-plate-ocr + us rules"] = _accuracy(PlateOCR(fp, us, strategies=[]), truth)
        results["fast-plate-ocr + us rules + strategies"] = _accuracy(PlateOCR(fp, us), truth)
        results["fast-plate-ocr + us,eu rules + strategies"] = _accuracy(PlateOCR(fp, everywhere), truth)
        results["both + us rules + strategies"] = _accuracy(PlateOCR(both, us), truth)
        gated = CombinedReader(fp, _Counting(pp), us, unsure_below=0.98)
        results["both where unsure + us rules + strategies"] = _accuracy(PlateOCR(gated, us), truth)
    print("\nexact match on the 58 OpenALPR US plates (ground-truth boxes):")
    for name, (acc, ms, misses) in results.items():
        print(f"  {name:44s} {acc:6.1%}  {ms:6.1f} ms/plate  misses: {[(t, r) for _, t, r in misses]}")
    if MODEL.is_file():
        print(f"  both where unsure: PP-OCR read {gated.secondary.crops} crops for {len(truth)} plates")
        results["both where unsure: crops ppocr read"] = (gated.secondary.crops, 0.0, [])
    return results


def test_accuracy_fast_plate_ocr_with_us_rules_and_strategies(accuracy, model):
    acc, _, misses = accuracy["fast-plate-ocr + us rules + strategies"]
    assert acc >= 0.92, misses
    assert acc >= accuracy["fast-plate-ocr, raw"][0]
    assert accuracy["fast-plate-ocr + us,eu rules + strategies"][0] >= 0.92


def test_accuracy_ppocr_default(accuracy):
    acc, _, misses = accuracy["ppocr + us rules + strategies"]
    assert acc >= 0.80, misses
    assert acc > accuracy["ppocr, raw"][0]


def test_accuracy_both_readers(accuracy, model, truth):
    acc, _, misses = accuracy["both + us rules + strategies"]
    assert acc >= 0.92, misses
    gated, _, misses = accuracy["both where unsure + us rules + strategies"]
    assert gated >= accuracy["fast-plate-ocr + us rules + strategies"][0] and gated >= 0.92, misses
    second = accuracy["both where unsure: crops ppocr read"][0]
    assert 0 < second < len(truth) / 2  # PP-OCR read only the crops fast-plate-ocr was unsure of


class _Counting(Reader):
    """A reader that counts the crops it was given."""

    def __init__(self, inner: Reader) -> None:
        self.inner, self.name, self.crops = inner, inner.name, 0

    def read(self, crops):
        self.crops += len(crops)
        return self.inner.read(crops)


class _Fixed(Reader):
    """A reader that gives the same read for every crop."""

    def __init__(self, read: Read) -> None:
        self.fixed, self.name, self.crops = read, read.reader, 0

    def read(self, crops):
        self.crops += len(crops)
        return [self.fixed for _ in crops]


def test_combined_reader_asks_the_second_reader_only_where_the_first_is_unsure(us):
    crop = np.zeros((20, 60, 3), np.uint8)
    second = _Fixed(_read("ABC1234", [0.9] * 7, name="second"))

    def second_reads(first: Read) -> int:
        second.crops = 0
        CombinedReader(_Fixed(first), second, us, unsure_below=0.9).read([crop, crop])
        return second.crops

    assert second_reads(_read("ABC1234", [0.95] * 7)) == 0  # sure and fits a US format
    assert second_reads(_read("ABC1234", [0.95] * 6 + [0.85])) == 2  # one character below 0.9
    assert second_reads(_read("AB12", [0.99] * 4)) == 2  # confident, but fits no format
    combined = CombinedReader(_Fixed(_read("ABC1Z34", [0.95] * 4 + [0.6] + [0.95] * 2)), second, us, unsure_below=0.9)
    assert combined.read([crop])[0].text == "ABC1234"  # the unsure read was combined
    everywhere = CombinedReader(_Fixed(_read("ABC1234", [0.99] * 7)), second, us)
    second.crops = 0
    everywhere.read([crop])
    assert second.crops == 1  # unsure_below 1 (the default): every crop


def test_second_reader_only_on_the_crop_itself(us, model):
    """second_strategies false: the strategies' variants of an unsure crop (pad, clahe, denoise,
    ...) are read by the first reader alone; the slow second reader reads the crop once."""
    crop = np.random.default_rng(1).integers(0, 255, (40, 120, 3), dtype=np.uint8)
    first = _Fixed(_read("ABC1234", [0.3] * 7))  # both unsure: never accepted
    second = _Fixed(_read("ABC1234", [0.3] * 7, name="second"))
    combined = CombinedReader(first, second, us, unsure_below=0.9)
    PlateOCR(combined, us).read_crops([crop])
    assert second.crops > 3 and first.crops == second.crops  # every variant read by both
    first.crops = second.crops = 0
    PlateOCR(combined, us, strategy_reader=first).read_crops([crop])
    assert second.crops == 1 and first.crops > 3
    with StageHarness(OcrStage, {"model": model, "reader": "both", "second_strategies": False}) as h:
        assert h.stage.engine.strategy_reader is h.stage.reader.primary
    with StageHarness(OcrStage, {"model": model, "reader": "both"}) as h:
        assert h.stage.engine.strategy_reader is h.stage.reader


# -- the stage ------------------------------------------------------------------------------------------------


def _det(box, track_id=None, vehicle_track_id=None, kind="plate"):
    return {"box": [float(v) for v in box], "score": 0.9, "kind": kind, "label": kind, "detector": "test",
            "vehicle": None, "track_id": track_id, "vehicle_track_id": vehicle_track_id}


def test_stage_params_are_checked(tmp_path):
    with pytest.raises(ValidationError, match="fast-plate-ocr release assets"):
        OcrParams(model=str(tmp_path / "missing.onnx"))
    with pytest.raises(ValidationError, match="needs `model`"):
        OcrParams(reader="fast-plate-ocr")
    with pytest.raises(ValidationError, match="unknown region 'us-cal'"):
        OcrParams(regions=["us-cal"])
    with pytest.raises(ValidationError, match="unknown strategies"):
        OcrParams(strategies=["pad", "sharpen"])
    with pytest.raises(ValidationError):
        OcrParams(region_mode="maybe")
    (tmp_path / "r.yaml").write_text("group: mine\nregions:\n  xx-a: {name: A, patterns: ['[A-Z]{3}[0-9]{3}']}\n")
    assert OcrParams(regions=["mine"], regions_dir=str(tmp_path)).regions == ["mine"]
    assert set(OcrParams().strategies) == set(STRATEGIES)


def test_stage_reads_a_synthetic_plate_with_the_offline_default():
    scene, box = in_scene(draw_plate("ABC1234"))
    with StageHarness(OcrStage, {"regions": ["us"]}) as h:
        out = h.process(h.frame_envelope(scene, detections=[_det(box, 4, 9), _det([0, 0, 50, 50], kind="vehicle")]))
    plates = out[0].plates
    assert len(plates) == 1
    p = plates[0]
    assert (p["text"], p["normalized"], p["region"], p["reader"]) == ("ABC1234", "ABC1234", "us", "ppocr")
    assert (p["track_id"], p["vehicle_track_id"], p["detection"]) == (4, 9, 0)
    assert 0.5 < p["confidence"] <= 1 and p["best_shot"] is True
    assert set(p["quality"]) == {"sharpness", "width", "height", "angle"}
    jpeg = cv2.imdecode(np.frombuffer(p["crop_jpeg"], np.uint8), cv2.IMREAD_COLOR)
    assert jpeg is not None and jpeg.shape[0] > 10 and len(p["crop_jpeg"]) < 30000
    assert h.counters["plates_read"] == 1


@pytest.mark.parametrize("fmt_id, display, text, region", [
    ("eu-fr", "TX-286-NS", "TX286NS", "eu"),  # also valid in Italy and Bulgaria
    ("eu-it", "KY 987 PJ", "KY987PJ", "eu"),
    ("us-ny", "KJL-4530", "KJL4530", "us"),  # PP-OCR reads this synthetic J first on the plate U (0.68 to 0.24)
])
def test_stage_offline_default_reads_european_and_us_plates(fmt_id, display, text, region):
    """The offline reader with both groups of formats, end to end: European plates with their
    bands and a US plate each read as their own format (strip_bands and the shape prior have
    their own tests above and in test_regions.py)."""
    plate, pad = _rendered(fmt_id, display, width=200, pad=0)
    h, w = plate.shape[:2]
    scene = np.full((3 * h, 2 * w, 3), 90, np.uint8)
    scene[h:2 * h, w // 2: w // 2 + w] = plate
    with StageHarness(OcrStage, {"reader": "ppocr", "regions": ["us", "eu"]}) as harness:
        out = harness.process(harness.frame_envelope(scene, detections=[_det([w // 2, h, w // 2 + w, 2 * h], 1)]))
    p = out[0].plates[0]
    assert (p["normalized"], p["region"]) == (text, region)


def test_stage_on_the_benchmark_photos(truth, model):
    hits = american = 0
    with StageHarness(OcrStage, {"model": model, "regions": ["us"]}) as h:
        for n, (name, image, box, plate) in enumerate(truth):
            out = h.process(h.frame_envelope(image, camera_id="bench", frame_id=n, detections=[_det(box, n)]))
            plates = out[0].plates
            assert len(plates) == 1, name
            p = plates[0]
            hits += p["normalized"] == plate
            assert p["reader"] == "fast-plate-ocr" and p["box"] == [float(v) for v in box]
            american += p["country"]["name"] == "United States"  # the model's region head
            assert p["quality"]["width"] > 0 and isinstance(p["crop_jpeg"], bytes)
    assert hits / len(truth) >= 0.92, hits
    assert american >= 50


def test_stage_modes(truth, model):
    name, image, box, plate = next(t for t in truth if t[3] == "EMR7094")
    with StageHarness(OcrStage, {"model": model, "region_mode": "off", "crop_jpeg": False}) as h:
        p = h.process(h.frame_envelope(image, detections=[_det(box)]))[0].plates[0]
        assert p["region"] is None and p["normalized"] == "EMR7094" and "crop_jpeg" not in p
    # only Swiss plates wanted: a US plate fits none and is dropped
    with StageHarness(OcrStage, {"model": model, "regions": ["eu-ch"], "region_mode": "require"}) as h:
        assert h.process(h.frame_envelope(image, detections=[_det(box)]))[0].plates == []
        assert h.counters["plates_no_region"] == 1
    with StageHarness(OcrStage, {"model": model, "regions": ["us", "eu"], "reader": "both"}) as h:
        p = h.process(h.frame_envelope(image, detections=[_det(box)]))[0].plates[0]
        assert p["normalized"] == "EMR7094" and p["reader"] == "fast-plate-ocr+ppocr"


def test_stage_throttles_tracks_and_keeps_the_best_shot(truth, model):
    name, image, box, plate = next(t for t in truth if t[3] == "EMR7094")  # a 128 px high plate
    small = cv2.resize(image, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    small_box = [v * 0.25 for v in box]
    params = {"model": model, "regions": ["us"], "reread_every_s": 0.5, "reread_gain": 0.2}
    with StageHarness(OcrStage, params) as h:
        def run(img, b, fid, tid=7):  # a 10 fps camera
            env = h.frame_envelope(img, camera_id="cam", frame_id=fid, captured_at=1000.0 + fid / 10,
                                   detections=[_det(b, tid, 2)])
            return h.process(env)[0].plates

        first = run(small, small_box, 0)[0]  # a small, soft crop: read, the track's best so far
        assert "skipped" not in first and first["best_shot"]
        again = run(small, small_box, 1)[0]  # the same crop again: not read
        assert again["skipped"] == "throttled" and again["normalized"] == first["normalized"]
        assert again["read_frame_id"] == 0 and "crop_jpeg" not in again
        big = run(image, box, 2)[0]  # a much larger, sharper crop: read again, the new best shot
        assert "skipped" not in big and big["best_shot"] and big["normalized"] == "EMR7094"
        assert shot_score(big["quality"]) > 1.2 * shot_score(first["quality"])
        later = run(small, small_box, 3)[0]  # worse again: throttled, repeating the best shot
        assert later["skipped"] == "throttled" and later["read_frame_id"] == 2
        assert later["normalized"] == "EMR7094"
        assert run(small, small_box, 6)[0]["skipped"] == "throttled"  # 0.4 s after the last read
        due = run(small, small_box, 7)[0]  # reread_every_s (0.5 s) after the last read: read anyway
        assert "skipped" not in due and due["best_shot"] is False
        assert run(small, small_box, 8, tid=None)[0].get("skipped") is None  # untracked: always read
        assert h.counters["plates_read"] == 4 and h.counters["plates_throttled"] == 3
    with StageHarness(OcrStage, {**params, "throttle": False}) as h:
        outs = [h.process(h.frame_envelope(small, frame_id=i, detections=[_det(small_box, 1)]))[0].plates
                for i in range(3)]
        assert all("skipped" not in p[0] for p in outs) and h.counters["plates_read"] == 3
    with StageHarness(OcrStage, {**params, "report_throttled": False}) as h:
        h.process(h.frame_envelope(small, frame_id=0, detections=[_det(small_box, 1)]))
        assert h.process(h.frame_envelope(small, frame_id=1, detections=[_det(small_box, 1)]))[0].plates == []


@pytest.mark.parametrize("share", [0.35, 0.07])
def test_stage_reads_a_track_again_when_more_of_its_plate_comes_into_view(truth, model, share):
    """A passer-by hides the left third of the plate (or 7% of its box: its first character; a
    detector's box of the rest takes in a little of the passer-by, so the box grows by less than
    the character's 1/7 of the text), then steps away: the whole plate's box is wider for its
    height, so it is read again at once, though its shot score is no better."""
    name, image, box, plate = next(t for t in truth if t[3] == "EMR7094")
    x1, y1, x2, y2 = box
    edge = x1 + share * (x2 - x1)
    hidden = image.copy()
    hidden[:, : int(edge)] = 90  # the passer-by
    visible = [edge, y1, x2, y2]

    def reads(**params):
        with StageHarness(OcrStage, {"model": model, "regions": ["us"], **params}) as h:
            out = []
            for fid, (img, b) in enumerate([(hidden, visible), (image, box), (image, box)]):
                env = h.frame_envelope(img, camera_id="cam", frame_id=fid, captured_at=1000.0 + fid / 10,
                                       detections=[_det(b, 7, 2)])
                out += h.process(env)[0].plates
            return out

    part, whole, same = reads()
    assert part["normalized"] != plate or share < 0.1
    assert "skipped" not in part
    assert "skipped" not in whole and whole["normalized"] == plate
    assert same["skipped"] == "throttled"  # no wider than the last read
    assert shot_score(whole["quality"]) <= 1.2 * shot_score(part["quality"])  # the shot score alone would not
    assert reads(reread_wider=10.0)[1]["skipped"] == "throttled"  # nor does the stage without the rule


def test_a_plate_cut_by_the_frame_edge_does_not_set_the_widest_box(truth, model):
    """A plate entering at the top of the frame: its box has lost height, so it looks wider than
    the whole plate will ever be. Counting it would keep reread_wider silent for the rest of the
    track (here: the whole plate after a passer-by had hidden a third of it)."""
    name, image, box, plate = next(t for t in truth if t[3] == "EMR7094")
    x1, y1, x2, y2 = box
    top = int(y1 + 0.45 * (y2 - y1))
    entering = image[top:].copy()  # the frame's top edge cuts the plate
    cut_box = [x1, 0.0, x2, y2 - top]
    edge = x1 + 0.35 * (x2 - x1)
    hidden = image.copy()
    hidden[:, : int(edge)] = 90
    views = [(entering, cut_box), (hidden, [edge, y1, x2, y2]), (image, box)]
    with StageHarness(OcrStage, {"model": model, "regions": ["us"]}) as h:
        out = []
        for fid, (img, b) in enumerate(views):
            env = h.frame_envelope(img, camera_id="cam", frame_id=fid, captured_at=1000.0 + fid / 10,
                                   detections=[_det(b, 7, 2)])
            out += h.process(env)[0].plates
    cut, part, whole = out
    assert cut["quality"].get("cut") and box_aspect(cut_box) > 1.1 * box_aspect(box)
    assert "skipped" not in part and "skipped" not in whole
    assert whole["normalized"] == plate


def test_stage_forgets_old_tracks(truth, model):
    name, image, box, plate = truth[0]
    with StageHarness(OcrStage, {"model": model, "regions": ["us"], "track_max_age": 10}) as h:
        h.process(h.frame_envelope(image, camera_id="a", frame_id=0, detections=[_det(box, 1)]))
        h.process(h.frame_envelope(image, camera_id="b", frame_id=0, detections=[_det(box, 1)]))
        assert len(h.stage.tracks) == 2
        h.process(h.frame_envelope(image, camera_id="a", frame_id=50, detections=[]))
        h.process(h.frame_envelope(image, camera_id="a", frame_id=51, detections=[_det(box, 2)]))
        assert set(h.stage.tracks) == {("a", 2), ("b", 1)}


def test_stage_passes_envelopes_without_plates():
    with StageHarness(OcrStage, {"regions": ["us"]}) as h:
        env = h.frame_envelope(np.zeros((40, 60, 3), np.uint8), detections=[_det([0, 0, 30, 20], kind="vehicle")])
        out = h.process(env)
        assert out[0].plates == [] and h.ctx.frames_read == 0


def test_a_plate_touching_the_frame_edge_is_a_weak_shot():
    """A vehicle entering or leaving shows part of its plate: such a crop must not be the best shot."""
    shape = (720, 1280, 3)
    assert not prep.touches_edge([100, 100, 220, 140], shape)
    assert prep.touches_edge([0, 100, 120, 140], shape) and prep.touches_edge([1200, 680, 1280, 720], shape)
    q = {"height": 40, "sharpness": 400.0, "angle": 0.0}
    assert shot_score({**q, "cut": 1.0}) < 0.5 * shot_score(q)
