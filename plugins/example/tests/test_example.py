"""Unit tests of the example stages, run in-process with real shared-memory frames."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from alpr_topo.core.framepool import StaleFrame
from alpr_topo.core.testing import StageHarness
from alpr_topo_example.plugin import Brightness, Grayscale, mean_brightness


def test_measures_brightness_into_meta() -> None:
    image = np.full((48, 64, 3), 100, np.uint8)
    with StageHarness(Brightness, {"sample_step": 1}) as h:
        [out] = h.process(h.frame_envelope(image, frame_id=7))
    assert out.frame_id == 7
    assert out.meta["brightness"] == pytest.approx(100.0)


def test_drops_and_counts_dark_frames() -> None:
    with StageHarness(Brightness, {"min_brightness": 50}) as h:
        dark = h.process(h.frame_envelope(np.full((48, 64, 3), 10, np.uint8), frame_id=0))
        light = h.process(h.frame_envelope(np.full((48, 64, 3), 200, np.uint8), frame_id=1))
        assert dark == []
        assert [e.frame_id for e in light] == [1]
        assert h.counters == {"dark_dropped": 1}


def test_passes_the_frame_on_in_place() -> None:
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with StageHarness(Brightness) as h:
        env = h.frame_envelope(image)
        [out] = h.process(env)
        assert out.frame == env.frame  # the same shared-memory slot, not a copy
        assert np.array_equal(h.frame(out), image)


def test_luma_weights_follow_bgr_order() -> None:
    blue = np.zeros((4, 4, 3), np.uint8)
    blue[..., 0] = 255
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 2] = 255
    assert mean_brightness(blue) < mean_brightness(red)


def test_rejects_bad_params() -> None:
    with pytest.raises(pydantic.ValidationError):
        StageHarness(Brightness, {"min_brightness": 300})
    with pytest.raises(pydantic.ValidationError):
        StageHarness(Brightness, {"min_brightnes": 3})  # typo: unknown keys are errors


def test_grayscale_writes_a_new_frame_and_releases_the_input() -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    image[..., 1] = 200  # green
    with StageHarness(Grayscale) as h:
        env = h.frame_envelope(image)
        source = env.derive()  # keeps the input's frame reference; process() re-points env
        [out] = h.process(env)
        gray = h.frame(out)
        assert gray.shape == (48, 64)
        assert int(gray[0, 0]) == round(200 * 0.587)
        with pytest.raises(StaleFrame):  # the input slot went back to its pool
            h.frame(source)
