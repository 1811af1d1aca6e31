"""The ``paddleocr`` reader (:mod:`alpr_topo.stages.ocr_paddle`): PaddleOCR's PP-OCRv4 recogniser
on Paddle's runtime, from a model folder on disk (no download), on the OpenALPR US plates and
through the ``ocr.plate`` stage.

Needs ``pip install '.[paddle]'`` (tools/run-tests.sh installs it); without it the reading tests
skip with the reason, the checks of folders and messages still run. Accuracy printed with::

    pytest -s tests/test_ocr_paddle.py
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

import numpy as np
import pytest
from pydantic import ValidationError
# the OpenALPR US plates and their helpers, shared with the other readers' tests
from test_ocr import _det, draw_plate, in_scene, truth  # noqa: F401  (truth: a fixture)

from alpr_topo.core.testing import StageHarness
from alpr_topo.stages import ocr_paddle
from alpr_topo.stages import ocr_prep as prep
from alpr_topo.stages.ocr import OcrParams, OcrStage
from alpr_topo.stages.ocr_paddle import PaddleReader, find_characters, find_model_files, paddle_available, paddle_problem
from alpr_topo.stages.ocr_readers import PPOCRReader
from alpr_topo.stages.regions import CTCScorer

PROBLEM = paddle_problem()
needs_paddle = pytest.mark.skipif(PROBLEM is not None, reason=f"optional reader not installed: {PROBLEM}")


# -- without Paddle: folders and messages --------------------------------------------------------------


def test_missing_runtime_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(ocr_paddle.importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in ("paddle", "rapidocr_paddle") else real(name, *a))
    ocr_paddle._runtime_problem.cache_clear()
    try:
        assert not paddle_available()
        with pytest.raises(ValidationError, match=r"paddlepaddle.*pip install 'alpr-topo\[paddle\]'"):
            OcrParams(reader="paddleocr")
        with pytest.raises(RuntimeError, match=r"alpr-topo\[paddle\]"):
            PaddleReader()
    finally:
        ocr_paddle._runtime_problem.cache_clear()


def test_model_folder_and_character_list(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        find_model_files(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds no inference.json or inference.pdmodel"):
        find_model_files(tmp_path)
    (tmp_path / "inference.pdmodel").write_bytes(b"")
    (tmp_path / "inference.pdiparams").write_bytes(b"")
    assert find_model_files(tmp_path) == (tmp_path / "inference.pdmodel", tmp_path / "inference.pdiparams")
    (tmp_path / "inference.json").write_bytes(b"")  # a Paddle 3 export wins
    assert find_model_files(tmp_path)[0] == tmp_path / "inference.json"
    with pytest.raises(FileNotFoundError, match="no character list.*en_dict.txt"):
        find_characters(tmp_path)
    (tmp_path / "en_dict.txt").write_text("0\n1\nA\n")
    assert find_characters(tmp_path) == ["0", "1", "A"]
    (tmp_path / "ppocr_keys_v1.txt").write_text("B\n")
    with pytest.raises(ValueError, match="several character lists"):
        find_characters(tmp_path)
    (tmp_path / "inference.yml").write_text("PostProcess:\n  name: CTCLabelDecode\n  character_dict: ['7', 'Z']\n")
    assert find_characters(tmp_path) == ["7", "Z"]  # a PaddleOCR 3 export says it itself


@needs_paddle
def test_params_check_the_model_folder(tmp_path):
    assert OcrParams(reader="paddleocr").paddle_model_dir is None  # the default model is there
    with pytest.raises(ValidationError, match="holds no inference.json or inference.pdmodel"):
        OcrParams(reader="paddleocr", paddle_model_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="not found"):
        PaddleReader(tmp_path / "nowhere")


@needs_paddle
def test_a_character_list_that_is_not_the_models_is_refused(tmp_path):
    model, params = find_model_files(ocr_paddle.default_model_dir())
    for f in (model, params):
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "en_dict.txt").write_text("".join(f"{c}\n" for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    with pytest.raises(ValueError, match="scores 6625 classes but its character list has 36"):
        PaddleReader(tmp_path)


# -- reading ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paddle_reader():
    if PROBLEM:
        pytest.skip(f"optional reader not installed: {PROBLEM}")
    reader = PaddleReader()
    yield reader
    reader.close()


@needs_paddle
def test_reads_a_synthetic_plate_with_a_score_table(paddle_reader):
    read = paddle_reader.read([draw_plate("ABC1234")])[0]
    assert read.text == "ABC1234" and read.reader == "paddleocr"
    assert len(read.char_confidences) == 7 and all(0.5 < c <= 1 for c in read.char_confidences)
    assert 0.5 < read.confidence <= 1
    assert isinstance(read.scorer, CTCScorer) and read.scorer.greedy == "ABC1234"
    assert read.char_logp.shape == (7, 36) and "".join(sorted(read.char_alphabet)) == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert paddle_reader.read([]) == []


@needs_paddle
def test_reads_the_benchmark_plates_like_ppocr(paddle_reader, truth):  # noqa: F811
    """Each of the 58 plates cut out with its ground-truth box (the stage's 10 % margin), read raw
    (no regions, no strategies) by both runtimes of the same PP-OCRv4 recogniser."""
    crops = [prep.crop_box(image, box, 0.1) for _, image, box, _ in truth]
    t0 = time.perf_counter()
    paddle = [paddle_reader.read([c])[0] for c in crops]
    ms = (time.perf_counter() - t0) * 1000 / len(crops)
    ppocr = PPOCRReader()
    onnx = [ppocr.read([c])[0] for c in crops]
    hits = sum(r.text == plate for r, (_, _, _, plate) in zip(paddle, truth))
    onnx_hits = sum(r.text == plate for r, (_, _, _, plate) in zip(onnx, truth))
    print(f"\npaddleocr raw: {hits}/{len(truth)} exact, {ms:.0f} ms/plate; ppocr (onnxruntime): {onnx_hits}/{len(truth)}")
    assert hits / len(truth) >= 0.70, [(p, r.text) for r, (_, _, _, p) in zip(paddle, truth) if r.text != p]
    assert hits >= onnx_hits - 1
    # one model, two runtimes: the same reads, the same score tables up to float rounding
    assert sum(a.text == b.text for a, b in zip(paddle, onnx)) >= len(truth) - 1
    same = [(a, b) for a, b in zip(paddle, onnx) if a.scorer.logp.shape == b.scorer.logp.shape]
    assert len(same) >= len(truth) - 1
    assert max(float(np.abs(a.scorer.logp - b.scorer.logp).max()) for a, b in same) < 0.05


# -- the stage ----------------------------------------------------------------------------------------------


@needs_paddle
def test_stage_reads_a_synthetic_plate_with_paddleocr():
    scene, box = in_scene(draw_plate("ABC1234"))
    with StageHarness(OcrStage, {"reader": "paddleocr", "regions": ["us"]}) as h:
        out = h.process(h.frame_envelope(scene, detections=[_det(box, 4)]))
    p = out[0].plates[0]
    assert (p["text"], p["normalized"], p["region"], p["reader"]) == ("ABC1234", "ABC1234", "us", "paddleocr")
    assert 0.5 < p["confidence"] <= 1


@needs_paddle
def test_stage_on_the_benchmark_photos_with_paddleocr(truth):  # noqa: F811
    hits = 0
    misses = []
    with StageHarness(OcrStage, {"reader": "paddleocr", "regions": ["us"], "crop_jpeg": False}) as h:
        for n, (name, image, box, plate) in enumerate(truth):
            out = h.process(h.frame_envelope(image, camera_id="bench", frame_id=n, detections=[_det(box, n)]))
            plates = out[0].plates
            got = plates[0]["normalized"] if plates else ""
            assert not plates or plates[0]["reader"] == "paddleocr"
            hits += got == plate
            if got != plate:
                misses.append((plate, got))
    print(f"\nocr.plate, reader paddleocr, us rules + strategies: {hits}/{len(truth)} exact; misses {misses}")
    assert hits / len(truth) >= 0.80, misses  # PP-OCR's bar in test_ocr.py (same model)


@needs_paddle
def test_a_paddle_stage_still_stops_on_sigterm():
    """Paddle's import installs a C handler for SIGTERM that aborts with a C++ trace; the reader
    puts Python's back, so a stage's worker still stops cleanly when its supervisor asks."""
    code = ("import os, signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))  # like core/worker.py: stop when asked\n"
            "from alpr_topo.stages.ocr_paddle import PaddleReader\n"
            "PaddleReader().read([__import__('numpy').zeros((40, 120, 3), 'uint8')])\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(5)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 7, done.stderr[-2000:]
