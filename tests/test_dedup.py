"""dedup.plates: voting, one event per passage, duplicate suppression, tick and flush.

Capture times are chosen by the tests; the stage's clock is replaced for the quiet-camera
tests, so nothing depends on how fast the machine is.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from alpr_topo.core.envelope import Envelope, decode, encode
from alpr_topo.core.testing import StageHarness
from alpr_topo.stages import events
from alpr_topo.stages.dedup import DedupStage
from alpr_topo.stages.dedup_vote import CUT_FACTOR, Read, best_match, quality_score, similarity, vote

T0 = 1714564801.0
CROP = cv2.imencode(".jpg", np.full((24, 96, 3), 220, np.uint8))[1].tobytes()


def plate(text: str, conf: float = 0.9, track: int | None = 1, vehicle: int | None = None,
          region: str | None = "us-ca", width: float = 120, sharpness: float = 150, crop: bytes = CROP,
          box: list[float] | None = None) -> dict[str, Any]:
    return {"text": text, "normalized": text.replace(" ", "").replace("-", ""), "confidence": conf, "region": region,
            "box": box or [100.0, 200.0, 220.0, 230.0], "track_id": track, "vehicle_track_id": vehicle,
            "reader": "test", "quality": {"sharpness": sharpness, "width": width, "height": 30, "angle": 0},
            "crop_jpeg": crop}


class Driver:
    """A StageHarness plus tick/flush (which the harness does not drive), all outputs collected."""

    def __init__(self, **params: Any) -> None:
        self.h = StageHarness(DedupStage, params)
        self.h.start()
        self.stage: DedupStage = self.h.stage  # type: ignore[assignment]
        self.outs: list[Envelope] = []
        self.frame_ids: dict[str, int] = {}

    def feed(self, camera: str, t: float, plates: list[dict] = (), detections: list[dict] = (), **fields) -> list[Envelope]:
        fid = self.frame_ids.get(camera, 0)
        self.frame_ids[camera] = fid + 1
        env = fields.pop("env", None) or Envelope(camera_id=camera, frame_id=fid)
        env.captured_at = t
        env.plates = list(plates)
        env.detections = list(detections)
        for key, value in fields.items():
            setattr(env, key, value)
        outs = self.h.process(env)
        self.outs += outs
        return outs

    def _wire(self, result: Any) -> list[Envelope]:
        outs = [] if result is None else [result] if isinstance(result, Envelope) else list(result)
        outs = [decode(encode(o)) for o in outs]  # what crossing to the next process does
        self.outs += outs
        return outs

    def tick(self) -> list[Envelope]:
        return self._wire(self.stage.tick())

    def flush(self) -> list[Envelope]:
        return self._wire(self.stage.flush())

    def events(self) -> list[dict]:
        return [o.meta["event"] for o in self.outs if "event" in o.meta]

    def updates(self) -> list[dict]:
        return [o.meta["event_update"] for o in self.outs if "event_update" in o.meta]

    def close(self) -> None:
        self.h.close()


@pytest.fixture
def driver():
    made: list[Driver] = []

    def make(**params: Any) -> Driver:
        d = Driver(**params)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def passage(d: Driver, camera: str, start: float, texts: list[str], step: float = 0.1, **kw: Any) -> float:
    """Feed one read per frame; returns the capture time of the last frame."""
    t = start
    for i, text in enumerate(texts):
        t = start + i * step
        d.feed(camera, t, [plate(text, **kw)])
    return t


# -- voting ---------------------------------------------------------------------------------------


def R(text: str, conf: float = 0.9, region: str | None = "us-ca", quality: float = 1.0,
      aspect: float | None = None) -> Read:
    return Read(text=text, normalized=text, confidence=conf, region=region, quality=quality, captured_at=0.0, frame_id=0,
                aspect=aspect)


def test_vote_per_character_recovers_a_text_no_read_had():
    result = vote([R("7ABC12X"), R("7A8C123"), R("ZABC123")])
    assert result is not None
    assert result.normalized == "7ABC123" and not result.exact
    assert result.confidence == pytest.approx(0.9 * 2 / 3, abs=1e-3)  # weakest position: 2 of 3


def test_vote_noisy_reads_of_mixed_lengths():
    reads = [R("7ABC123"), R("7ABC123", 0.8), R("7A8C123", 0.95), R("7ABC1Z3", 0.7), R("1ABC123", 0.6),
             R("7ABC12", 0.99), R("7ABC1234", 0.5)]
    result = vote(reads)
    assert result.normalized == "7ABC123" and result.exact and result.region == "us-ca"
    assert result.reads == 7
    assert 0 < result.confidence < 0.9


def test_vote_truncated_reads_back_the_longer_plate():
    # the last character hidden by a passer-by in five frames, whole in four: still MF13555
    hidden = [R("MF1355", 0.99, "us-il")] * 5 + [R("MF135", 0.99, "us-il"), R("13555", 0.99, "us-il")]
    whole = [R("MF13555", 0.9, "us-il")] * 4
    result = vote(hidden + whole)
    assert result.normalized == "MF13555" and result.exact
    assert result.length_share == 1.0
    # a longer text read once is not enough to outvote what was read many times...
    assert vote(hidden[:6] + whole[:1]).normalized == "MF1355"
    # ...unless other reads' parts of it cover it all: 13555 saw the last 5 as well
    assert vote(hidden + whole[:1]).normalized == "MF13555"
    # nor does a longer text that does not contain the shorter one
    assert vote(hidden + [R("MF13565", 0.9, "us-il")] * 4).normalized == "MF1355"


def test_vote_pieces_a_plate_read_whole_once_from_the_parts_read_of_it():
    """7NND019 of the long synthetic scene (seed 4): a passer-by hid one end of the plate or the
    other until its last three frames; the reads of the whole plate and of its parts agree."""
    parts = [R("7NND", 0.999, None, aspect=1.42), R("7NND", 0.999, None, aspect=1.39),
             R("VND019", 0.997, "us-il", aspect=1.63), R("NND019", 1.0, "us-il", aspect=1.81),
             R("ND019", 0.92, None, aspect=1.48), R("019", 0.62, None, aspect=1.04)]
    whole = R("7NND019", 0.99, "us-ca", aspect=1.95)
    assert vote(parts).normalized == "NND019"
    assert vote(parts + [whole]).normalized == "7NND019"
    # a read once whose first character no other read saw does not win: it may be invented
    assert vote(parts[2:] + [whole]).normalized == "NND019"


def test_vote_reads_of_a_collapsed_doubled_letter_back_the_longer_plate():
    """XJJ9042 of the long synthetic scene (seed 6): both readers read the narrow JJ as one J in
    seven of nine reads."""
    collapsed = [R("XJ9042", 0.99, "us-ca")] * 7
    assert vote(collapsed + [R("XJJ9042", 0.97, "us-ca")] * 2).normalized == "XJJ9042"
    assert vote(collapsed + [R("XJJ9042", 0.97, "us-ca")]).normalized == "XJ9042"  # read once
    # a letter that is not a double of its neighbour is not a collapse
    assert vote(collapsed + [R("XJK9042", 0.97, "us-ca")] * 2).normalized == "XJ9042"


def test_vote_reads_that_back_a_longer_plate_vote_its_characters():
    """Seed 6 again: the two whole reads of XJJ9042 came from the small early views, the one
    large late view read XI19042. The seven collapsed reads back length 7 and also vote J at the
    positions they cover, so the large view's I1 does not win."""
    collapsed = [R("XJ9042", 0.99, None)] * 7
    small_whole = [R("XJJ9042", 0.97, None, quality=0.4)] * 2
    large_wrong = [R("XI19042", 0.93, None)]
    assert vote(small_whole + large_wrong).normalized == "XI19042"  # the whole reads alone
    result = vote(collapsed + small_whole + large_wrong)
    assert result.normalized == "XJJ9042" and result.exact
    # truncated reads vote only the positions they cover: the last character is still voted by
    # the whole reads alone
    cut = [R("MF1355", 0.99, None)] * 5
    assert vote(cut + [R("MF13555", 0.9, None, quality=0.4)] * 2 + [R("MF13556", 0.93, None)]).normalized == "MF13556"


def test_vote_prefers_region_valid_reads():
    # three confident reads that match no plate format against two that match us-ca
    reads = [R("7ABCI23", 0.95, None), R("7ABCI23", 0.95, None), R("7ABCI23", 0.95, None),
             R("7ABC123", 0.8, "us-ca"), R("7ABC123", 0.7, "us-ca")]
    assert vote(reads).normalized == "7ABC123"
    assert vote(reads, region_bonus=1.0, region_min_share=1.0).normalized == "7ABCI23"  # preference off
    # one weak region-valid read among many others (< region_min_share) does not decide alone
    many = [R("7ABCI23", 0.95, None)] * 8 + [R("7ABC123", 0.5, "us-ca")]
    assert vote(many).normalized == "7ABCI23"


def test_vote_discounts_reads_of_a_partly_hidden_plate():
    """WPZ6694 of the long synthetic scene: a passer-by hid the W for most of the passage, the
    detector's box lost its left end and both readers read the W's right stroke as an I; the
    plate was whole (and its box widest) in the last reads only."""
    hidden = [R("IPZ6694", 1.0, "us-az", aspect=a) for a in (1.63, 1.71, 1.75)]
    whole = [R("WPZ6694", 0.95, "us-az", aspect=1.99), R("WPZ6694", 0.9, "us-az", aspect=1.9)]
    assert vote(hidden + whole).normalized == "WPZ6694"
    assert vote(hidden + whole[:1]).normalized == "WPZ6694"
    # without boxes (or with boxes of one width) the three reads win, as before
    assert vote([R(r.normalized, r.confidence, r.region) for r in hidden + whole]).normalized == "IPZ6694"
    assert vote(hidden + [R("WPZ6694", 0.95, "us-az", aspect=1.8)]).normalized == "IPZ6694"


def test_vote_weights_quality():
    blurry = [R("7ABC128", 0.9, quality=0.1), R("7ABC128", 0.9, quality=0.1)]
    sharp = [R("7ABC123", 0.9, quality=1.0)]
    assert vote(blurry + sharp).normalized == "7ABC123"
    assert quality_score({"width": 60, "sharpness": 0, "angle": 0}) == pytest.approx(0.25)
    assert quality_score({"width": 200, "sharpness": 500, "angle": 60}) == pytest.approx(0.5)
    assert quality_score(None) == 1.0
    assert vote([]) is None


def test_similarity():
    assert similarity("7ABC123", "7ABC123") == 1.0
    assert similarity("7ABC123", "7ABC128") == pytest.approx(6 / 7)
    assert similarity("7ABC123", "7ABC12") == pytest.approx(6 / 7)
    assert similarity("7ABC123", "5XYZ999") < 0.3
    assert best_match("7ABC128", [("5XYZ999", "a"), ("7ABC123", "b")], 0.85) == ("b", pytest.approx(6 / 7))
    assert best_match("7ABC128", [("5XYZ999", "a")], 0.85) is None


# -- one event per passage ------------------------------------------------------------------------


def test_noisy_track_gives_exactly_one_event(driver):
    d = driver()
    texts = ["7ABC123", "7A8C123", "7ABC123", "7ABC1Z3", "1ABC123", "7ABC123", "7ABC12"]
    last = passage(d, "cam1", T0, texts)
    assert d.events() == []  # still open
    d.feed("cam1", last + 1.0)
    assert d.events() == []  # 1.0 s < track_timeout_s 1.5
    d.feed("cam1", last + 1.6)
    d.feed("cam1", last + 5.0)
    (ev,) = d.events()
    events.validate(ev)
    assert ev["plate"]["normalized_text"] == "7ABC123" and ev["plate"]["region"] == "us-ca"
    assert ev["track_id"] == 1 and ev["camera_id"] == "cam1" and ev["reads"] == len(texts)
    assert ev["captured_at"] == ev["first_seen"] == events.to_millis(T0)
    assert ev["last_seen"] == events.to_millis(last) and ev["count"] == 1
    assert ev["extras"]["finished"] == "timeout"
    out = next(o for o in d.outs if "event" in o.meta)
    assert out.frame is None and out.camera_id == "cam1"
    assert out.captured_at == pytest.approx(T0)
    assert out.frame_id == 1 and ev["extras"]["frame_id"] == "0"  # output sequence; best read: the first
    assert out.meta["images"]["plate_jpeg"] == CROP
    assert d.h.counters["events"] == 1


def test_interleaved_tracks_give_one_event_each(driver):
    d = driver()
    for i in range(10):
        d.feed("cam1", T0 + i * 0.1, [plate("7ABC123", track=1), plate("5XYZ999" if i % 3 else "5XYZ990", track=2)])
    d.feed("cam1", T0 + 4)
    got = sorted((e["track_id"], e["plate"]["normalized_text"], e["reads"]) for e in d.events())
    assert got == [(1, "7ABC123", 10), (2, "5XYZ999", 10)]
    assert d.updates() == []


def test_plate_track_joins_its_vehicle_passage(driver):
    d = driver()
    car = {"kind": "vehicle", "label": "truck", "score": 0.8, "box": [50, 100, 400, 300], "track_id": 3, "color": "red"}
    d.feed("cam1", T0, [plate("7ABC123", track=5)])  # vehicle not tracked yet
    d.feed("cam1", T0 + 0.1, [plate("7ABC123", track=5, vehicle=3)], [car])
    d.feed("cam1", T0 + 0.2, [plate("7ABC123", track=5)], [car])  # plate track linked to vehicle 3
    d.feed("cam1", T0 + 0.3, [plate("7A8C123", track=6, vehicle=3)], [car])  # plate track switched
    d.feed("cam1", T0 + 2.5)
    (ev,) = d.events()
    assert ev["track_id"] == 3 and ev["reads"] == 4
    assert ev["vehicle"] == {"type": "truck", "color": "red", "make": None, "model": None}
    assert ev["extras"]["plate_track_ids"] == "5,6"


def test_vehicle_detections_keep_a_passage_alive(driver):
    d = driver()
    car = {"kind": "vehicle", "label": "car", "score": 0.9, "box": [0, 0, 100, 100], "track_id": 4}
    d.feed("cam1", T0, [plate("7ABC123", vehicle=4)], [car])
    d.feed("cam1", T0 + 0.1, [plate("7ABC123", vehicle=4)], [car])
    for i in range(1, 6):  # plate unreadable, vehicle still in view for 5 s
        d.feed("cam1", T0 + 0.1 + i, [], [car])
    assert d.events() == []
    d.feed("cam1", T0 + 7.5)
    (ev,) = d.events()
    assert ev["last_seen"] == events.to_millis(T0 + 5.1) and ev["vehicle"]["type"] == "car"


def test_untracked_reads_are_grouped_by_text(driver):
    d = driver()
    for i, (a, b) in enumerate([("7ABC123", "5XYZ999"), ("7ABC128", "5XYZ999"), ("7ABC123", "5XY7999")]):
        d.feed("cam1", T0 + i * 0.1, [plate(a, track=None), plate(b, track=None)])
    d.feed("cam1", T0 + 3)
    got = sorted((e["plate"]["normalized_text"], e["reads"], e["track_id"]) for e in d.events())
    assert got == [("5XYZ999", 3, None), ("7ABC123", 3, None)]


def test_reads_before_the_track_is_confirmed_join_the_track(driver):
    """A tracker gives an id only after a few frames: those first reads are the same passage."""
    d = driver()
    d.feed("cam1", T0, [plate("7ABC123", track=None)])
    d.feed("cam1", T0 + 0.1, [plate("7ABC128", track=None)])
    d.feed("cam1", T0 + 0.2, [plate("5XYZ999", track=None)])  # another plate: stays apart
    for i in range(3):
        d.feed("cam1", T0 + 0.3 + i * 0.1, [plate("7ABC123", track=4)])
    d.feed("cam1", T0 + 3)
    got = sorted((e["plate"]["normalized_text"], e["reads"], e["track_id"]) for e in d.events())
    assert got == [("7ABC123", 5, 4)]  # 5XYZ999 had one read: below min_reads, dropped
    assert d.h.counters.get("untracked_adopted", 0) >= 1



def test_early_reads_of_a_short_plate_with_one_wrong_character_join_the_track(driver):
    """C39VJW of the long synthetic scene (cpu.yaml, seed 6): two reads of C39VJV before the
    track was confirmed made a second event. Six characters with one wrong fall below
    `similarity` (0.83 < 0.85), but an open untracked passage on the same camera is close in time."""
    d = driver()
    d.feed("cam1", T0, [plate("C39VJV", 0.98, track=None)])
    d.feed("cam1", T0 + 0.1, [plate("C39VJV", 0.98, track=None)])
    d.feed("cam1", T0 + 0.2, [plate("C3", 0.9, track=None)])  # a fragment: stays apart
    for i in range(4):
        d.feed("cam1", T0 + 0.3 + i * 0.1, [plate("C39VJW", 0.9, track=55)])
    d.feed("cam1", T0 + 3)
    assert [(e["plate"]["normalized_text"], e["reads"]) for e in d.events()] == [("C39VJW", 6)]
    assert d.h.counters["untracked_adopted"] == 1


def test_throttled_repeats_do_not_vote(driver):
    """The OCR stage repeats a throttled track's best read (skipped: throttled): not a new read."""
    d = driver()
    d.feed("cam1", T0, [plate("7ABC12")])
    for i in range(4):
        d.feed("cam1", T0 + 0.1 * (i + 1), [{**plate("7ABC12"), "skipped": "throttled"}])
    d.feed("cam1", T0 + 0.6, [plate("7ABC123")])
    d.feed("cam1", T0 + 0.7, [plate("7ABC123")])
    d.feed("cam1", T0 + 3)
    [event] = d.events()
    assert event["plate"]["normalized_text"] == "7ABC123" and event["reads"] == 3


def test_plate_touching_the_frame_edge_reads_weakly():
    full = quality_score({"width": 120, "sharpness": 500})
    cut = quality_score({"width": 120, "sharpness": 500, "cut": 1.0})
    assert cut == pytest.approx(full * CUT_FACTOR)


def test_a_cut_plate_does_not_set_the_widest_box(driver):
    """A plate leaving through the frame's bottom edge loses its lower part: its box looks wider
    for its height than the whole plate ever did and would make every whole view count as
    narrow (WPZ6694 of the long synthetic scene, read VPZ6694 by the cut view's neighbours)."""
    d = driver(min_reads=1)
    whole = [plate("WPZ6694", 0.97, region="us-az", box=[100, 200, 290, 300]),  # aspect 1.9
             plate("WPZ6694", 0.97, region="us-az", box=[100, 200, 290, 300])]
    hidden = [plate("VPZ6694", 1.0, region="us-az", box=[110, 200, 270, 300])] * 3  # aspect 1.6
    cut = plate("WPZ6694", 0.99, region="us-az", box=[100, 640, 300, 720])  # aspect 2.5, cut
    cut["quality"]["cut"] = 1.0
    for i, p in enumerate(hidden + whole + [cut]):
        d.feed("cam1", T0 + i * 0.1, [p])
    d.flush()
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["WPZ6694"]


def test_min_reads_and_min_confidence(driver):
    d = driver(min_reads=3, min_confidence=0.5)
    passage(d, "cam1", T0, ["7ABC123", "7ABC123"], track=1)  # too few
    passage(d, "cam1", T0, ["5XYZ999"] * 4, track=2, conf=0.3)  # too unsure
    passage(d, "cam1", T0 + 0.5, ["6DEF456"] * 3, track=3)
    d.feed("cam1", T0 + 5)
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["6DEF456"]
    assert d.h.counters["tracks_dropped"] == 2 and d.h.counters["events"] == 1


def test_a_text_read_unsure_frame_after_frame_votes(driver):
    """The vanity plate SC6 of the long synthetic scene (seed 6): the reader read it right in nine
    frames, each time at about 0.37 (below min_confidence 0.4), and confidently only where the
    frame's edge cut it ("6", "C6", "BSC6"). From its fifth read (repeat_reads) SC6 votes."""
    def cut(text: str, conf: float) -> dict[str, Any]:
        p = plate(text, conf, region=None)
        p["quality"]["cut"] = 1.0
        return p

    reads = [cut("6", 1.0), cut("C6", 1.0)] + [plate("SC6", 0.37, region=None)] * 9 + [cut("BSC6", 0.925)]

    def events(**params: Any) -> list[str]:
        d = driver(**params)
        for i, p in enumerate(reads):
            d.feed("cam1", T0 + i * 0.1, [p])
        d.flush()
        return [e["plate"]["normalized_text"] for e in d.events()]

    assert events() == ["SC6"]
    assert events(repeat_reads=0) == []  # only the cut reads vote: "6" wins, too short for a plate
    assert events(repeat_reads=10) == []  # nine unsure reads are not enough
    # unsure reads of different texts do not add up
    d = driver()
    passage(d, "cam1", T0, ["AB12", "A812", "AB1Z"] * 4, conf=0.35)
    d.flush()
    assert d.events() == [] and d.h.counters["reads_low_confidence"] == 12


def test_fragments_shorter_than_min_length_make_no_event(driver):
    """Both readers read a plate entering the view as the characters inside the frame ("B2" of
    "LDKB2"): too short to be taken for a cut-off part of the plate, and no plate text."""
    d = driver()
    passage(d, "cam1", T0, ["B2", "B2"], track=None)
    passage(d, "cam1", T0 + 0.3, ["LDKB2"] * 4, track=7)
    d.feed("cam1", T0 + 5)
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["LDKB2"]
    assert d.h.counters["fragments_dropped"] == 1
    short = driver(min_length=2)  # where two-character vanity plates matter
    passage(short, "cam1", T0, ["B2", "B2"], track=None)
    short.feed("cam1", T0 + 5)
    assert [e["plate"]["normalized_text"] for e in short.events()] == ["B2"]


def test_reads_longer_than_any_plate_do_not_vote(driver):
    """PP-OCR read a plate leaving the frame as NEWJERSEYT35CVM, state name and all (long
    synthetic scene, seed 6): no plate is that long, so the read only keeps the track alive."""
    d = driver()
    passage(d, "cam1", T0, ["NEWJERSEYT35CVM", "NEWJERSEYT35CVM", "NEWJERSEY"], track=8, conf=0.93)
    passage(d, "cam1", T0 + 0.3, ["T35SYM", "T35SYM"], track=9)
    d.feed("cam1", T0 + 5)
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["T35SYM"]
    assert d.h.counters["reads_too_long"] == 2
    assert d.h.counters["tracks_dropped"] == 1  # NEWJERSEY alone: one read, below min_reads


def test_reads_that_do_not_back_each_other_make_no_event(driver):
    """Seed 6 of the long synthetic scene (cpu-models.yaml): a plate seen only past another
    vehicle, each read a different part of it. One read fit a Dutch format once corrected
    (64IM55) and outvoted the others, which do not back it: no event. Reads with one different
    wrong character each still back their composite."""
    d = driver()
    d.feed("cam1", T0, [plate("1AM5", conf=0.7, track=2, region=None)])
    d.feed("cam1", T0 + 0.1, [plate("64IM55", conf=0.54, track=2, region="eu-nl")])
    d.feed("cam1", T0 + 0.2, [plate("1AM5", conf=0.7, track=2, region=None)])
    passage(d, "cam1", T0 + 0.5, ["7ABX123", "7ABC12B", "8ABC123"], track=3)
    d.feed("cam1", T0 + 5)
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["7ABC123"]
    assert d.h.counters["tracks_unconfirmed"] == 1


def test_emit_partial(driver):
    d = driver(min_reads=2, emit_partial=True)
    d.feed("cam1", T0, [plate("7ABC123", conf=0.8)])
    d.feed("cam1", T0 + 3)
    (ev,) = d.events()
    assert ev["extras"]["partial"] == "true" and ev["reads"] == 1
    events.validate(ev)
    d.feed("cam1", T0 + 10, [plate("1AM5", conf=0.7, track=2, region=None)])
    d.feed("cam1", T0 + 10.1, [plate("64IM55", conf=0.54, track=2, region="eu-nl")])
    d.feed("cam1", T0 + 13)
    unconfirmed = d.events()[1]
    assert unconfirmed["plate"]["normalized_text"] == "64IM55" and unconfirmed["extras"]["partial"] == "true"


# -- duplicates -----------------------------------------------------------------------------------


def test_duplicate_within_window_updates_the_kept_event(driver):
    d = driver(window_s=30)
    passage(d, "cam1", T0, ["7ABC123"] * 3, track=1)
    d.feed("cam1", T0 + 2)
    (kept,) = d.events()
    last = passage(d, "cam1", T0 + 10, ["7ABC128"] * 3, track=2)  # a re-read 10 s later, one char off
    d.feed("cam1", last + 2)
    assert len(d.events()) == 1
    (upd,) = d.updates()
    events.validate(upd)
    assert upd["event_id"] == kept["event_id"] and upd["count"] == 2 and upd["reason"] == "duplicate"
    assert upd["last_seen"] == events.to_millis(last) and upd["track_id"] == 2
    assert upd["normalized_text"] == "7ABC128" and upd["similarity"] == pytest.approx(6 / 7, abs=1e-3)
    assert d.h.counters["duplicates_suppressed"] == 1

    last = passage(d, "cam1", T0 + 20, ["7ABC123"] * 2, track=3)  # a third time: count 3
    d.feed("cam1", last + 2)
    assert [u["count"] for u in d.updates()] == [2, 3]

    last = passage(d, "cam1", last + 31, ["7ABC123"] * 2, track=4)  # after the window: a new event
    d.feed("cam1", last + 2)
    assert len(d.events()) == 2 and d.events()[1]["event_id"] != kept["event_id"]
    assert d.events()[1]["count"] == 1


def test_different_plate_is_not_a_duplicate(driver):
    d = driver()
    passage(d, "cam1", T0, ["7ABC123"] * 3, track=1)
    passage(d, "cam1", T0 + 3, ["7ABX193"] * 3, track=2)  # two characters off: 5/7 < 0.85
    d.feed("cam1", T0 + 8)
    assert len(d.events()) == 2 and d.updates() == []


def feed_two_cameras(d: Driver) -> None:
    passage(d, "cam1", T0, ["7ABC123"] * 3, track=1)
    passage(d, "cam2", T0 + 4, ["7ABC123"] * 3, track=8)
    d.feed("cam1", T0 + 10)
    d.feed("cam2", T0 + 10)


def test_scope_camera_keeps_cameras_apart(driver):
    d = driver(scope="camera")
    feed_two_cameras(d)
    assert sorted(e["camera_id"] for e in d.events()) == ["cam1", "cam2"] and d.updates() == []


def test_scope_site_merges_cameras_of_one_site(driver):
    d = driver(scope="site", site="gate")
    feed_two_cameras(d)
    (ev,) = d.events()
    (upd,) = d.updates()
    assert ev["camera_id"] == "cam1" and ev["node"]["site"] == "gate"
    assert upd["event_id"] == ev["event_id"] and upd["camera_id"] == "cam2" and upd["count"] == 2


def test_scope_site_keeps_other_sites_apart_and_global_does_not(driver):
    d = driver(scope="site", site="north", camera_sites={"cam2": "south"})
    feed_two_cameras(d)
    assert [e["node"]["site"] for e in d.events()] == ["north", "south"]
    d = driver(scope="global", site="north", camera_sites={"cam2": "south"})
    feed_two_cameras(d)
    assert len(d.events()) == 1 and len(d.updates()) == 1


def test_output_frame_ids_increase_per_camera(driver):
    d = driver(scope="global")
    for k in range(4):  # events and updates, out of the frames' order, on two cameras
        passage(d, "cam1", T0 + 3 * k, ["7ABC123", "5XYZ999"][k % 2:k % 2 + 1] * 2, track=k)
        passage(d, "cam2", T0 + 3 * k, ["6DEF456"] * 2, track=k)
    d.feed("cam1", T0 + 20)
    d.feed("cam2", T0 + 20)
    for camera in ("cam1", "cam2"):
        ids = [o.frame_id for o in d.outs if o.camera_id == camera]
        assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 3
    assert len(d.events()) == 3 and len(d.updates()) == 5


def test_window_zero_turns_suppression_off(driver):
    d = driver(window_s=0)
    passage(d, "cam1", T0, ["7ABC123"] * 2, track=1)
    passage(d, "cam1", T0 + 2, ["7ABC123"] * 2, track=2)
    d.feed("cam1", T0 + 6)
    assert len(d.events()) == 2


# -- time: tick, max_track_s, flush ---------------------------------------------------------------


def test_tick_ends_passages_of_a_quiet_camera(driver):
    d = driver(track_timeout_s=1.5)
    now = [100.0]
    d.stage._clock = lambda: now[0]
    passage(d, "cam1", T0, ["7ABC123"] * 3)  # all arrive at clock 100
    now[0] = 101.0
    assert d.tick() == []
    now[0] = 101.7  # the last read was at T0 + 0.2: 1.5 s of capture time have passed
    (out,) = d.tick()
    assert out.meta["event"]["plate"]["normalized_text"] == "7ABC123"
    events.validate(out.meta["event"])
    now[0] = 200.0
    assert d.tick() == []  # sent once


def test_flush_emits_open_passages(driver):
    d = driver()
    passage(d, "cam1", T0, ["7ABC123"] * 3, track=1)
    passage(d, "cam2", T0, ["5XYZ999"] * 2, track=1)
    d.feed("cam1", T0 + 0.5, [plate("6DEF456", track=2)])  # a single read: below min_reads
    outs = d.flush()
    assert sorted(o.meta["event"]["plate"]["normalized_text"] for o in outs) == ["5XYZ999", "7ABC123"]
    assert all(o.meta["event"]["extras"]["finished"] == "drain" for o in outs)
    assert d.h.counters["tracks_dropped"] == 1
    assert d.flush() == [] and d.tick() == []


def test_max_track_emits_then_moves_last_seen(driver):
    d = driver(max_track_s=5, track_timeout_s=1.5)
    for i in range(80):  # a car standing in view for 8 s
        d.feed("cam1", T0 + i * 0.1, [plate("7ABC123")])
    (ev,) = d.events()
    assert ev["extras"]["finished"] == "max_track"
    assert events.to_millis(T0 + 5) - 100 <= ev["last_seen"] <= events.to_millis(T0 + 5)
    d.feed("cam1", T0 + 12)
    (upd,) = d.updates()
    assert upd["reason"] == "continued" and upd["event_id"] == ev["event_id"] and upd["count"] == 1
    assert upd["last_seen"] == events.to_millis(T0 + 7.9)
    assert len(d.events()) == 1


# -- images, truth, latency -----------------------------------------------------------------------


def test_vehicle_and_frame_images_from_the_best_frame(driver):
    d = driver(vehicle_image=True, frame_image=True, frame_max_width=320)
    image = np.zeros((360, 640, 3), np.uint8)
    image[100:300, 50:400] = (0, 0, 255)
    car = {"kind": "vehicle", "label": "car", "score": 0.9, "box": [50, 100, 400, 300], "track_id": 3}
    outs = []
    for i, width in enumerate([60, 140, 90]):  # the second read is the best (widest crop)
        env = d.h.frame_envelope(image, camera_id="cam1", frame_id=i)
        outs += d.feed("cam1", T0 + i * 0.1, [plate("7ABC123", vehicle=3, width=width)], [car], env=env)
    assert outs == []
    outs = d.feed("cam1", T0 + 3)
    (out,) = outs
    assert out.meta["event"]["extras"]["frame_id"] == "1"  # the widest crop's frame
    images = out.meta["images"]
    vehicle = cv2.imdecode(np.frombuffer(images["vehicle_jpeg"], np.uint8), cv2.IMREAD_COLOR)
    frame = cv2.imdecode(np.frombuffer(images["frame_jpeg"], np.uint8), cv2.IMREAD_COLOR)
    assert vehicle.shape == (200, 350, 3) and vehicle[100, 175, 2] > 200
    assert frame.shape == (180, 320, 3)


def test_events_finished_while_a_frame_is_read_leave_with_the_next_call(driver):
    # The runtime voids a call's outputs when the frame it read went stale; so an event that a
    # frame-reading call finishes is held for the next call instead of sharing that risk.
    d = driver(vehicle_image=True)
    image = np.zeros((120, 160, 3), np.uint8)
    car = {"kind": "vehicle", "label": "car", "score": 0.9, "box": [10, 10, 100, 100], "track_id": 9}
    passage(d, "cam1", T0, ["5XYZ999"] * 2, track=1)
    env = d.h.frame_envelope(image, camera_id="cam1", frame_id=50)
    assert d.feed("cam1", T0 + 3, [plate("7ABC123", vehicle=9)], [car], env=env) == []
    (out,) = d.tick()
    assert out.meta["event"]["plate"]["normalized_text"] == "5XYZ999"


def test_truth_only_in_test_mode(driver):
    truth = [{"vehicle_id": 4, "plate": "7ABC123", "format": "us-ca", "vehicle_box": [0, 0, 500, 400],
              "plate_box": [101, 201, 219, 229], "plate_visible": True}]
    found = {}
    for mode in (False, True):
        d = driver(test_mode=mode)
        for i in range(2):
            d.feed("cam1", T0 + i * 0.1, [plate("7ABC128")], meta={"truth": truth})
        d.feed("cam1", T0 + 3)
        (found[mode],) = d.events()
    assert not any(k.startswith("truth") for k in found[False]["extras"])
    assert found[True]["extras"]["truth_plate"] == "7ABC123"
    assert found[True]["extras"]["truth_vehicle_id"] == "4"


def test_latency_fields(driver):
    import time

    d = driver()
    d.stage._wall = lambda: T0 + 2.0  # the wall clock when the event is made
    # the frame left the capture stage 50 ms before it reached dedup (same host's monotonic clock)
    stamps = [("cam", time.monotonic_ns() - 50_000_000, time.monotonic_ns() - 49_000_000)]
    d.feed("cam1", T0, [plate("7ABC123")], stamps=stamps)
    d.feed("cam1", T0 + 0.25, [plate("7ABC123")])
    d.feed("cam1", T0 + 1.9)
    (ev,) = d.events()
    assert ev["latency"]["capture_to_event_ms"] == pytest.approx(1750.0)  # wall - last_seen
    assert ev["latency"]["pipeline_ms"] >= 50.0
    events.validate(ev)


def test_params_are_checked():
    import pydantic

    with pytest.raises(pydantic.ValidationError):
        DedupStage.Params(scope="planet")
    with pytest.raises(pydantic.ValidationError):
        DedupStage.Params(similarity=1.5)
    with pytest.raises(pydantic.ValidationError):
        DedupStage.Params(window=3)  # typo of window_s
    assert DedupStage.ordered is True


# -- a pipeline slower than the camera; truncated reads ---------------------------------------------


def test_tick_follows_the_camera_pace_of_a_slow_pipeline(driver):
    """A file or synthetic scene on a busy machine: frames 0.2 s apart in capture time arrive
    0.6 s apart. Ticks carry the capture clock on at that pace (a third of the wall clock), so
    a stall of 3 s of wall time in the middle does not end the passage (at wall pace it would);
    a camera that then goes quiet still gets its event out."""
    d = driver(track_timeout_s=1.5)
    now = [100.0]
    d.stage._clock = lambda: now[0]
    for i in range(12):
        d.feed("cam1", T0 + i * 0.2, [plate("7ABC123")])
        for _ in range(2):
            now[0] += 0.3
            assert d.tick() == []
        if i == 6:
            now[0] += 3.0  # the pipeline stalls: 1 s of capture time at this pace
            assert d.tick() == []
    assert 0.15 < d.stage.cameras["cam1"].pace() < 0.34  # a third, less while the stall is remembered
    now[0] += 8.0  # quiet: about 1.8 s of capture time at this pace
    (out,) = d.tick()
    assert out.meta["event"]["plate"]["normalized_text"] == "7ABC123"
    assert out.meta["event"]["reads"] == 12 and d.h.counters["events"] == 1


def test_truncation_of():
    from alpr_topo.stages.dedup_vote import substring_distance, truncation_of

    assert substring_distance("72663", "WC72663") == 0 and substring_distance("2YEC", "2YEG655") == 1
    assert truncation_of("72663", "WC72663") and truncation_of("5SHR", "5SHR782") and truncation_of("P07PT", "P07PTX")
    assert truncation_of("MF1855", "MF13555")  # one wrong character from five characters on
    assert not truncation_of("2YEC", "2YEG655")  # four characters: exact only
    assert not truncation_of("AB", "ABC123") and not truncation_of("7ABC123", "7ABC123")
    assert not truncation_of("XYZ99", "7ABC123")


def test_end_part_of():
    from alpr_topo.stages.dedup_vote import end_part_of

    assert end_part_of("9NN", "NN112KR") and end_part_of("NX1", "NN112KR")  # the start, one extra or wrong
    assert end_part_of("12KP", "NN112KR") and end_part_of("2YEC", "2YEG655")  # the end; the start
    assert not end_part_of("112", "NN112KR")  # a middle part with none wrong is truncation_of's
    assert not end_part_of("E02", "HWH9644") and not end_part_of("BS4", "7ABC123")
    assert not end_part_of("9N", "NN112KR") and not end_part_of("NN112KX", "NN112KR")


def test_read_of_a_plate_entering_the_view_joins_the_passage_beside_it(driver):
    """An entering plate read cut ('72663') before the tracker caught it, as an untracked
    passage of its own; the tracked passage of the whole plate follows at once: one event."""
    d = driver(track_timeout_s=1.5)
    cut = {"sharpness": 150, "width": 60, "height": 30, "angle": 0, "cut": 1.0}
    for i in range(2):
        d.feed("cam1", T0 + i * 0.2, [dict(plate("72663", track=None), quality=cut)])
    for i in range(2, 8):
        d.feed("cam1", T0 + i * 0.2, [plate("WC72663", track=4)])
    d.feed("cam1", T0 + 5)
    (ev,) = d.events()
    assert ev["plate"]["normalized_text"] == "WC72663" and d.updates() == []
    assert ev["first_seen"] == events.to_millis(T0)  # the passage's time span took in the cut reads
    assert d.h.counters["truncated_absorbed"] == 1


def test_read_of_a_plate_leaving_the_view_updates_its_event(driver):
    """The whole plate's passage ended; a cut read of it leaving the view right after is an
    update of that event, not an event of its own. Much later the same part is a new event."""
    d = driver(track_timeout_s=1.5)
    passage(d, "cam1", T0, ["5SHR782"] * 4, track=2)
    d.feed("cam1", T0 + 1.0, [plate("5SHR", track=3, region=None)])
    d.feed("cam1", T0 + 1.2, [plate("5SHR", track=3, region=None)])
    d.feed("cam1", T0 + 6)
    (ev,) = d.events()
    (upd,) = d.updates()
    assert ev["plate"]["normalized_text"] == "5SHR782"
    assert upd["reason"] == "duplicate" and upd["event_id"] == ev["event_id"] and upd["normalized_text"] == "5SHR"
    passage(d, "cam1", T0 + 30, ["5SHR"] * 2, track=5, region=None)
    d.feed("cam1", T0 + 40)
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["5SHR782", "5SHR"]


def frames(d: Driver, camera: str, start: float, reads: list[tuple | None], step: float = 0.1) -> float:
    """One frame per item: a read of (text, plate track[, region]), or None for a frame without reads."""
    t = start
    for i, read in enumerate(reads):
        t = start + i * step
        d.feed(camera, t, [plate(read[0], track=read[1], region=read[2] if len(read) > 2 else None)] if read else [])
    return t


HIDDEN_PLATE = [("FRZ1", 2)] * 6 + [None] * 12 + [("510", 3)] * 2 + [("1510", 3)] * 3 + [("Z1510", 3)] * 3 \
    + [("RZ1510", 3)] + [("FRZ1510", 3)] * 3 + [("1510", 3)] * 4


@pytest.mark.parametrize("continuation_s", [1.5, 0.0])
def test_plate_hidden_by_a_passing_vehicle_waits_for_its_continuation(driver, continuation_s):
    """Seed 8 of the long synthetic scene: a plate entered at the frame's left edge and was read
    FRZ1, then a passing vehicle hid it for over a second; a new track read it again from 510 to
    FRZ1510 as it came out. When FRZ1's passage timed out the new one had read only 510..Z1510.
    Waiting for the new passage makes one event; without the wait FRZ1 went out on its own."""
    d = driver(track_timeout_s=1.5, continuation_s=continuation_s)
    last = frames(d, "cam1", T0, HIDDEN_PLATE)
    frames(d, "cam1", last + 0.1, [None] * 40)
    texts = [e["plate"]["normalized_text"] for e in d.events()]
    if continuation_s:
        assert texts == ["FRZ1510"] and d.updates() == []
        assert d.events()[0]["first_seen"] == events.to_millis(T0)  # FRZ1's reads began the passage
        assert d.h.counters["passages_held"] == 1 and d.h.counters["truncated_absorbed"] == 1
    else:
        assert texts == ["FRZ1", "FRZ1510"] and d.h.counters.get("passages_held", 0) == 0


@pytest.mark.parametrize("continuation_s", [1.5, 0.0])
def test_plate_hidden_for_longer_than_the_track_timeout_waits_for_its_continuation(driver, continuation_s):
    """Seed 10 of the long synthetic scene: 4599KDR was read 4599 for 7 frames, then not
    detected for 2 s (longer than track_timeout_s), then read whole by a new track. The 4599
    passage timed out before that one began; it waits for one to begin (continuation_s) and is
    absorbed by it."""
    d = driver(track_timeout_s=1.5, continuation_s=continuation_s)
    last = frames(d, "cam1", T0, [("4599", 2)] * 7 + [None] * 20 + [("4599KD", 3)] * 6 + [("4599KDR", 3, "eu-es")] * 3)
    frames(d, "cam1", last + 0.1, [None] * 40)
    texts = [e["plate"]["normalized_text"] for e in d.events()]
    if continuation_s:
        assert texts == ["4599KDR"] and d.updates() == []
        assert d.events()[0]["first_seen"] == events.to_millis(T0)
        assert d.h.counters["passages_held"] == 1 and d.h.counters["truncated_absorbed"] == 1
    else:
        assert texts == ["4599", "4599KDR"]


def test_short_plate_nobody_continues_goes_out_when_the_wait_is_over(driver):
    d = driver(track_timeout_s=1.5, continuation_s=1.5)
    last = frames(d, "cam1", T0, [("BS4", 2)] * 5)  # last seen T0+0.4, times out at T0+1.9
    frames(d, "cam1", last + 0.1, [None] * 25)  # to T0+2.9
    assert d.events() == [] and d.h.counters["passages_held"] == 1
    d.feed("cam1", T0 + 3.4)  # T0+0.4 + track_timeout_s + continuation_s
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["BS4"]


def test_held_passage_goes_out_when_the_later_one_is_another_plate(driver):
    """The wait ends as soon as the later passage ends with another plate (the held event goes
    out right after that one's), or after continuation_s at the latest; flush sends held ones.
    Only short texts (continuation_max_length) wait: a whole plate's event leaves at once."""
    d = driver(track_timeout_s=1.5, continuation_s=1.5)
    frames(d, "cam1", T0, [("FRZ1", 2)] * 5 + [("5XYZ789", 3)] * 5)
    # FRZ1 times out at T0+1.9 while 5XYZ789 (begun T0+0.5) is open: it waits
    assert frames(d, "cam1", T0 + 1.0, [None] * 14) == pytest.approx(T0 + 2.3) and d.events() == []
    assert d.h.counters["passages_held"] == 1
    d.feed("cam1", T0 + 2.4)  # 5XYZ789 ends: the wait is over
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["5XYZ789", "FRZ1"]

    d = driver(track_timeout_s=1.5, continuation_s=1.5)
    frames(d, "cam1", T0, [("7ABC123", 2)] * 5 + [("5XYZ789", 3)] * 5)
    frames(d, "cam1", T0 + 1.0, [None] * 10)  # to T0+1.9: 7ABC123 times out and leaves
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["7ABC123"]
    assert d.h.counters.get("passages_held", 0) == 0

    d = driver(track_timeout_s=1.5, continuation_s=0.5)
    frames(d, "cam1", T0, [("FRZ1", 2)] * 5 + [("5XYZ789", 3)] * 19)
    assert d.events() == []  # T0+2.3: held since T0+1.9, until T0+2.4
    d.feed("cam1", T0 + 2.4, [plate("5XYZ789", track=3)])
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["FRZ1"]
    d.flush()
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["FRZ1", "5XYZ789"]

    d = driver(track_timeout_s=1.5, continuation_s=5)
    frames(d, "cam1", T0, [("FRZ1", 2)] * 5 + [("5XYZ789", 3)] * 30)
    assert d.events() == [] and d.h.counters["passages_held"] == 1
    d.flush()
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["5XYZ789", "FRZ1"]


@pytest.mark.parametrize("switch_similarity", [0.4, 0.0])
def test_track_given_to_another_plate_splits_its_passage(driver, switch_similarity):
    """Seed 7 of the long scene with cpu.yaml: plate track 1 read HWH9644 leaving at the frame's
    left edge, then took E02URM entering there. Two confident reads of the other plate in a row
    end the first passage; without the rule the passage voted HWH9644 for both (the only reads
    that matched a format of the reader's regions)."""
    d = driver(track_timeout_s=1.5, switch_similarity=switch_similarity)
    frames(d, "cam1", T0, [("HWH9644", 1, "us-ca")] * 3 + [("E02URM", 1)] * 5)
    d.feed("cam1", T0 + 5)
    texts = [e["plate"]["normalized_text"] for e in d.events()]
    if switch_similarity:
        assert texts == ["HWH9644", "E02URM"] and d.h.counters["tracks_switched"] == 1
        first, second = d.events()
        assert first["extras"]["finished"] == "switch" and first["reads"] == 3
        assert second["reads"] == 4  # the first foreign read waited for the second and did not vote
    else:
        assert texts == ["HWH9644"] and d.events()[0]["reads"] == 8


# Vehicle 61 of the long synthetic scene, seed 10 (bench replay): (frame, text, confidence, plate track)
HALF_HIDDEN = [(1840, "NN112KR", 1.0, 68), (1841, "N112KR", 0.57, 68), (1846, "2KR", 1.0, 68),
               (1854, "PNN", 0.71, 69), (1855, "9NN", 0.59, 69), (1856, "NN1", 0.999, 69), (1857, "NN11", 0.9999, 69),
               (1858, "NN117", 0.5, 69), (1859, "NN112", 0.5, 69), (1860, "NN1121", 0.76, 69),
               (1861, "NN112K", 0.6, 69), (1863, "NN112KR", 0.9999, 69), (1864, "NN112KR", 0.99, 69)]


def test_plate_half_hidden_with_its_cut_glyph_misread_does_not_split_it(driver):
    """NN112KR, hidden by a passer-by and coming out from behind it on a new track: read PNN and
    9NN (the glyph at the cut misread), then NN1, NN11, ... NN112KR. NN1 and NN11 share no
    exact part with 9NN or PNN, so they counted as another plate: the track "switched" and 9NN
    went out as an event of its own. A plate's start or end with one character wrong is the
    same plate."""
    d = driver(track_timeout_s=1.5)
    for frame, text, conf, track in HALF_HIDDEN:
        d.feed("cam1", T0 + (frame - 1840) / 10, [plate(text, conf=conf, track=track, region=None)])
    d.feed("cam1", T0 + 5)
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["NN112KR"]
    assert d.h.counters.get("tracks_switched", 0) == 0


def test_untracked_box_around_a_tracked_plate_reads_that_plate(driver):
    """Seed 15 of the long synthetic scene: the detector found plate S769LJ twice, once with
    much of the car around it, and the tracker followed only the tight box (track 32). The
    wide box was read S769LJ, S769L and twice 5769U without a track; 5769U is two characters
    from S769LJ, so it became a passage and an event of its own. A read whose box holds a
    tracked plate's box of the same frame is that plate's."""
    tight = [600.0, 400.0, 821.0, 452.0]

    def run(untracked_box: list[float]) -> Driver:
        d = driver(track_timeout_s=1.5)
        for i in range(20):
            det = {"kind": "plate", "track_id": 32, "box": tight, "score": 0.9}
            plates = [plate("S769LJ", conf=0.99, track=32, region="eu-nl", box=tight)] if i % 5 == 0 else []
            if i in (6, 18):
                plates.append(plate("5769U", conf=0.86, track=None, region=None, box=untracked_box))
            d.feed("cam1", T0 + i / 10, plates, [det])
        d.feed("cam1", T0 + 5)
        return d

    d = run([520.0, 360.0, 880.0, 495.0])  # around the tracked plate
    assert [e["plate"]["normalized_text"] for e in d.events()] == ["S769LJ"]
    assert d.h.counters["untracked_boxed"] == 2

    d = run([900.0, 400.0, 1100.0, 452.0])  # beside the plate, not around it: another plate
    assert sorted(e["plate"]["normalized_text"] for e in d.events()) == ["5769U", "S769LJ"]


def test_misreads_between_reads_of_the_plate_do_not_split_it(driver):
    """A state name or a truck's lettering read between reads of the plate is foreign once at a
    time: the passage stays one. Cut-off parts and one-character misreads are not foreign."""
    d = driver(track_timeout_s=1.5)
    reads = [("7ABC123", 1), ("TEXAS", 1), ("7ABC123", 1), ("SPEEDY", 1), ("7ABC123", 1), ("ABC", 1), ("C123", 1),
             ("7ABC128", 1), ("7ABC123", 1)]
    frames(d, "cam1", T0, reads)
    d.feed("cam1", T0 + 5)
    (ev,) = d.events()
    assert ev["plate"]["normalized_text"] == "7ABC123" and ev["reads"] == 7
    assert d.h.counters["reads_foreign"] == 2 and d.h.counters.get("tracks_switched", 0) == 0
