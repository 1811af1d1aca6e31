"""Plate formats as data: the built-in US and European regions, normalisation, per-position
correction, the scorers, and user region folders with their validation errors."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from alpr_topo.stages.regions import (
    ENV_VAR, CTCScorer, RegionError, SeqBatch, SlotScorer, load_regions, normalize, parse_pattern,
)

US_STATES = ["al", "ak", "az", "ar", "ca", "co", "ct", "de", "fl", "ga", "hi", "id", "il", "in", "ia", "ks", "ky",
             "la", "me", "md", "ma", "mi", "mn", "ms", "mo", "mt", "ne", "nv", "nh", "nj", "nm", "ny", "nc", "nd",
             "oh", "ok", "or", "pa", "ri", "sc", "sd", "tn", "tx", "ut", "vt", "va", "wa", "wv", "wi", "wy", "dc"]
EU_REQUIRED = ["de", "fr", "uk", "it", "es", "nl", "pl", "be", "at", "ch", "se"]


@pytest.fixture(scope="module")
def builtin():
    return load_regions(env={})


@pytest.fixture(scope="module")
def us(builtin):
    return builtin.select(["us"])


@pytest.fixture(scope="module")
def eu(builtin):
    return builtin.select(["eu"])


# -- the built-in data --------------------------------------------------------------------------


def test_every_state_and_dc_and_the_required_countries(builtin):
    ids = set(r.id for r in builtin)
    assert {f"us-{s}" for s in US_STATES} <= ids
    assert {f"eu-{c}" for c in EU_REQUIRED} <= ids
    assert len(builtin.groups["us"]) == 51
    assert len(builtin.groups["eu"]) >= 28  # the EU 27 plus the UK, Switzerland, Norway
    assert set(builtin.groups["mercosur"]) == {"mercosur-br", "mercosur-ar", "mercosur-uy", "mercosur-py"}
    assert {r.aspect for r in builtin.select(["mercosur"])} == {3.08}


@pytest.mark.parametrize("rid", sorted(r.id for r in load_regions(env={})))
def test_each_format_validates_its_examples_and_rejects_bad_ones(builtin, rid):
    region = builtin[rid]
    assert region.name and region.patterns
    assert region.examples, f"{rid} has no examples"
    assert region.invalid, f"{rid} has no invalid examples"
    for good in region.examples:
        assert region.matches(good), (rid, good)
        assert region in builtin.match(good)
    for bad in region.invalid:
        assert not region.matches(bad), (rid, bad)


@pytest.mark.parametrize("text, region", [
    ("7ABC123", "us-ca"), ("ABC-1234", "us-ny"), ("AB1 C2D", "us-mo"), ("A12-BCD", "us-nj"), ("AB 12345", "us-il"),
    ("B MW 1234", "eu-de"), ("AB-123-CD", "eu-fr"), ("AB12 CDE", "eu-uk"), ("AB 123 CD", "eu-it"),
    ("1234 BCD", "eu-es"), ("GB-123-K", "eu-nl"), ("WA 12345", "eu-pl"), ("1-ABC-123", "eu-be"),
    ("W 12345 A", "eu-at"), ("ZH 123456", "eu-ch"), ("ABC 123", "eu-se"), ("ABC 12D", "eu-se"),
    ("BRA 2E19", "mercosur-br"), ("ABC-1234", "mercosur-br"), ("AB 123 CD", "mercosur-ar"), ("ABCD 123", "mercosur-py"),
])
def test_typical_plates_match_their_region(builtin, text, region):
    assert builtin[region] in builtin.match(text)


@pytest.mark.parametrize("text, region", [
    ("7ABC1234", "us-ca"), ("0ABC123", "us-ca"), ("AB12345", "us-ny"), ("ABD1C2", "us-mo"),
    ("B MW 0123", "eu-de"), ("AB-123-IO", "eu-fr"), ("AB12 CDQ", "eu-uk"), ("AB 123 QU", "eu-it"),
    ("1234 ABC", "eu-es"), ("XX 123456", "eu-ch"), ("ABQ 123", "eu-se"),
])
def test_wrong_plates_do_not_match(builtin, text, region):
    assert builtin[region] not in builtin.match(text)


def test_normalize_strips_separators_and_upper_cases():
    assert normalize("ab-123 cd") == "AB123CD"
    assert normalize(" 7·abc.123 ") == "7ABC123"
    assert normalize("AB_12:3/4") == "AB1234"
    assert normalize("A*1") == "A*1"  # a stray symbol stays, so it cannot validate


def test_us_reads_o_as_zero_everywhere(us):
    # the US files fold O into 0: the plate glyph is shared and the OpenALPR convention writes 0
    assert us.correct("5LOD951").text == "5L0D951"
    assert us.correct("ABC-1O23").text == "ABC1023"
    assert us.normalize("OOO") == "000"
    assert "us-ca" in [r.id for r in us.match("5LOD951")]


# -- per-position correction with look-alike pairs ----------------------------------------------


def test_correction_per_position_california(builtin):
    ca = builtin.select(["us-ca"])
    c = ca.correct("7ABC12O")
    assert (c.text, c.region) == ("7ABC120", "us-ca")  # the US fold writes O as 0 anyway
    c = ca.correct("7ABC12D")  # D where a digit must be: its look-alike 0
    assert (c.text, c.region) == ("7ABC120", "us-ca") and c.cost > 0 and c.changed == 1
    c = ca.correct("8ABC123")  # valid as is: the leading 8 stays a digit
    assert (c.text, c.cost, c.changed) == ("8ABC123", 0.0, 0)
    assert ca.correct("7A8C123").text == "7ABC123"  # a digit where a letter must be
    assert ca.correct("SABC123").text == "5ABC123"  # a letter where a digit must be
    assert ca.correct("7ABC1Z3").text == "7ABC123"
    assert ca.correct("7ABC1G3").text == "7ABC163"


def test_correction_per_position_europe(builtin):
    assert builtin.select(["eu-fr"]).correct("AB-I23-CD").text == "AB123CD"
    assert builtin.select(["eu-uk"]).correct("AB12 CD8").text == "AB12CDB"
    assert builtin.select(["eu-es"]).correct("I234 BCD").text == "1234BCD"
    assert builtin.select(["eu-it"]).correct("AB 12S CD").text == "AB125CD"
    assert builtin.select(["eu-de"]).correct("M AB 12S4").text == "MAB1254"


def test_correction_needs_a_confusion_pair(builtin):
    it = builtin.select(["eu-it"])
    c = it.correct("AB12XCD")  # X has no look-alike digit: nothing valid is reachable
    assert not c.valid and c.region is None and c.text == "AB12XCD"


def test_confident_characters_cost_more_to_change(builtin):
    ca = builtin.select(["us-ca"])
    unsure = ca.correct("7ABC12D", [0.9] * 6 + [0.4])
    sure = ca.correct("7ABC12D", [0.9] * 6 + [0.99])
    assert unsure.text == sure.text == "7ABC120"
    assert unsure.cost < sure.cost
    assert not ca.correct("7ABC12D", [0.9] * 6 + [0.99], max_cost=1.0).valid


def test_prefer_the_cheapest_region_and_report_groups(us):
    c = us.correct("ABC1234")
    assert c.valid and c.cost == 0 and c.region == "us"  # many states: the group
    assert {"us-ny", "us-tx", "us-pa"} <= {r.id for r in c.regions}
    assert us.correct("AB1C2D").region == "us-mo"


def test_the_plate_shape_prior_weighs_regions_by_the_box_aspect(builtin):
    """A read valid in Europe and one look-alike away from a US format: the box's shape decides.
    (LGLS168 is how PP-OCR read the US plate 4GLS168 of the OpenALPR photos; OSEP36 is German,
    0SEP36 its US fold.)"""
    both = builtin.select(["us", "eu"])
    assert {r.aspect for r in builtin.select(["us"])} == {2.0}
    assert {r.aspect for r in builtin.select(["eu"])} == {4.7}
    read = ("LGLS168", [0.6] + [0.97] * 6)
    assert both.correct(*read).region == "eu"  # no shape: valid as read (Austria, Germany, ...) wins
    us_box = both.correct(*read, aspect=2.0)
    assert (us_box.text, us_box.region) == ("1GLS168", "us") and us_box.cost > 0
    assert both.correct(*read, aspect=4.7).text == "LGLS168"
    assert both.correct(*read, aspect=2.0, shape_weight=0).text == "LGLS168"
    assert both.correct("OSEP36", [0.95] * 6, aspect=2.0).text == "0SEP36"
    assert both.correct("OSEP36", [0.95] * 6, aspect=4.5).text == "OSEP36"
    # within the tolerance a shape costs nothing; a European text on a square box still reads
    assert both.correct("7ABC123", [0.95] * 7, aspect=2.5).cost == 0
    square = both.correct("AB123CD", [0.95] * 7, aspect=1.8)
    assert square.text == "AB123CD" and 0 < square.cost < 4


# -- scorers ----------------------------------------------------------------------------------------


def _table(rows: list[dict[str, float]], alphabet: str, floor: float = 1e-4) -> np.ndarray:
    p = np.full((len(rows), len(alphabet)), floor)
    for i, row in enumerate(rows):
        for c, v in row.items():
            p[i, alphabet.index(c)] = v
    p /= p.sum(1, keepdims=True)
    return np.log(p)


def test_slot_scorer_uses_the_readers_second_choice(builtin):
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
    text = "7ABC12Z"
    rows = [{c: 0.97} for c in text[:-1]] + [{"Z": 0.6, "2": 0.3, "7": 0.1}] + [{"_": 0.99}] * 3
    sc = SlotScorer(_table(rows, alphabet), alphabet, pad=alphabet.index("_"))
    c = builtin.select(["us-ca"]).correct(text, scorer=sc)
    assert c.text == "7ABC122"  # the reader's own second choice, not the 7 of the Z7 pair
    assert math.isclose(c.cost, math.log(0.6 / 0.3), rel_tol=0.05)


def test_slot_scorer_can_change_the_length():
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
    # the last character is nearly a pad: "ABC1234" with a doubtful 4
    rows = [{c: 0.98} for c in "ABC123"] + [{"4": 0.45, "_": 0.55}] + [{"_": 0.99}] * 3
    sc = SlotScorer(_table(rows, alphabet), alphabet, pad=alphabet.index("_"))
    seqs = parse_pattern("<L>{3}[0-9]{4}")
    got = sc.best_many(seqs, {})
    assert got[0] is not None and got[0][0] == "ABC1234" and 0 < got[0][1] < 1


def test_ctc_scorer_aligns_with_insertions_and_deletions():
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    cols = "_" + alphabet  # blank first
    frames = []
    for c in "SHDLR7X":  # a stray L between D and R, and D where a 0 must be
        weak = {"L": {"L": 0.55, "_": 0.45}, "D": {"D": 0.6, "0": 0.4}}.get(c, {c: 0.97})
        frames += [weak, {"_": 0.98}]
    sc = CTCScorer(_table(frames, cols), alphabet)
    assert sc.greedy == "SHDLR7X"
    seqs = parse_pattern("<L>{2}[0-9]<L>[0-9]<L>")  # Missouri
    got = sc.best_many(SeqBatch(seqs), {})
    assert got[0] is not None
    text, cost, changed = got[0]
    assert text == "SH0R7X" and changed == 2 and cost < 2.0
    # a repeated character needs a blank between its frames: "00" is not one run of 0s
    frames = [{"1": 0.97}, {"0": 0.97}, {"0": 0.97}, {"2": 0.97}]
    sc = CTCScorer(_table(frames, cols), alphabet)
    cost_1002 = sc.best_many(parse_pattern("1002"), {})[0]
    cost_102 = sc.best_many(parse_pattern("102"), {})[0]
    assert cost_102 is not None and cost_102[1] < 0.01
    assert cost_1002 is None or cost_1002[1] > 1.0


def test_ctc_scorer_merges_folded_characters(builtin):
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    cols = "_" + alphabet
    frames = [{"5": 0.97}, {"L": 0.97}, {"O": 0.5, "0": 0.3, "D": 0.2}, {"_": 0.9}, {"D": 0.97}, {"9": 0.97},
              {"5": 0.97}, {"1": 0.97}]
    sc = CTCScorer(_table(frames, cols), alphabet)
    assert sc.greedy == "5LOD951"
    c = builtin.select(["us-ca"]).correct(sc.greedy, scorer=sc)  # the region folds its patterns too
    assert (c.text, c.cost) == ("5L0D951", 0.0)


# -- patterns -----------------------------------------------------------------------------------------


def test_pattern_syntax():
    assert len(parse_pattern("[1-9]<L>{3}[0-9]{3}")) == 1
    assert len(parse_pattern("<L>{1,3}[0-9]")) == 3
    assert len(parse_pattern("(AB|CD)\\d?")) == 4
    seq = parse_pattern("[^A-Y0-8]")[0]
    assert seq[0] == frozenset("Z9")
    assert parse_pattern("A B")[0] == (frozenset("A"), frozenset("B"))  # spaces are ignored
    for bad in ("[A-", "A{2", "<X>", "a", "(AB", "[9-0]", "A{3,1}"):
        with pytest.raises(ValueError):
            parse_pattern(bad)


# -- user regions ---------------------------------------------------------------------------------------


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


GOOD = """
    group: test
    defaults:
      confusions: [O0, I1]
      classes:
        V: "[AEIOU]"
    regions:
      xx-vowel:
        name: Vowel land
        patterns: ["<V>{2}[0-9]{3}"]
        examples: [AE123, "OU-999"]
        invalid: [BC123]
"""

CALIFORNIA = """
    group: us
    regions:
      us-ca:
        name: California, replaced
        country: United States
        patterns: ["[0-9]{7}"]
        examples: ["1234567"]
"""


def test_user_folder_adds_and_replaces_regions(tmp_path):
    _write(tmp_path, "mine.yaml", GOOD)
    _write(tmp_path, "california.yaml", CALIFORNIA)
    rs = load_regions([tmp_path], env={})
    assert rs["xx-vowel"].name == "Vowel land"
    assert rs["xx-vowel"].group == "test"
    assert rs.select(["test"]).correct("AE12O").text == "AE120"
    assert rs["us-ca"].name == "California, replaced"  # a user file replaces a built-in id
    assert rs["us-ca"].matches("1234567") and not rs["us-ca"].matches("7ABC123")
    assert len(rs.select(["us"])) == 51


def test_user_folder_from_the_environment(tmp_path):
    _write(tmp_path, "mine.yml", GOOD)
    rs = load_regions(env={ENV_VAR: str(tmp_path)})
    assert "xx-vowel" in [r.id for r in rs]


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(RegionError, match="not a folder of region files"):
        load_regions([tmp_path / "nope"], env={})


@pytest.mark.parametrize("text, line, message", [
    ("group: t\nregions:\n  xx-a:\n    name: A\n    paterns: ['A']\n", 5, "unknown key 'paterns'.*did you mean patterns"),
    ("group: t\nregions:\n  xx-a:\n    name: A\n    patterns: ['A{2']\n", 5, "pattern 'A{2': bad repetition"),
    ("group: t\nregions:\n  xx-a:\n    name: A\n    patterns:\n      - [A-Z]\n", 6, "read as a YAML list: quote"),
    ("group: t\nregions:\n  xx-a:\n    name: A\n    patterns: ['[A-Z]{3}']\n    examples: [AB1]\n", 6,
     "example 'AB1' of xx-a does not match"),
    ("group: t\nregions:\n  xx-a:\n    name: A\n    patterns: ['[A-Z]{3}']\n    invalid: [ABC]\n", 6,
     "invalid example 'ABC' of xx-a matches"),
    ("group: t\nregions:\n  xx-a:\n    patterns: ['A']\n", 4, "needs a 'name:'"),
    ("group: t\nregions:\n  xx-a:\n    name: A\n", 4, "needs 'patterns:'"),
    ("group: t\ndefaults:\n  confusions: [O0, ABC]\nregions:\n  xx-a: {name: A, patterns: ['A']}\n", 3,
     "a confusion is a pair"),
    ("group: t\nregions:\n  xx-a: {name: A, patterns: ['<Q>']}\n", 3, "unknown class <Q>"),
    ("group: t\ndefaults:\n  aspect: wide\nregions:\n  xx-a: {name: A, patterns: ['A']}\n", 3,
     "aspect is the plate's width / height"),
    ("group: t\nregions:\n  xx-a: {name: A, patterns: ['A']}\n  xx-a: {name: B, patterns: ['B']}\n", 4,
     "given twice"),
    ("group: t\nregions:\n  XX A: {name: A, patterns: ['A']}\n", 3, "lower-case words"),
    ("group: t\nregions: [\n", 3, "not valid YAML"),
    ("group: t\nregion:\n  xx-a: {name: A, patterns: ['A']}\n", 2, "unknown key 'region'.*did you mean regions"),
])
def test_validation_errors_name_file_and_line(tmp_path, text, line, message):
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(RegionError) as err:
        load_regions([tmp_path], env={})
    first = err.value.problems[0]
    assert first.startswith(f"{path}:{line}: "), err.value.problems
    assert re.search(message, first), first


def test_every_problem_is_reported_at_once(tmp_path):
    _write(tmp_path, "a.yaml", "group: t\nregions:\n  xx-a: {name: A, patterns: ['A{2']}\n")
    _write(tmp_path, "b.yaml", "group: t\nregions:\n  xx-b: {name: B}\n")
    with pytest.raises(RegionError) as err:
        load_regions([tmp_path], env={})
    assert len(err.value.problems) == 2
    assert "a.yaml:3:" in str(err.value) and "b.yaml:3:" in str(err.value)


def test_select_unknown_region_suggests(builtin):
    with pytest.raises(KeyError, match="did you mean.*us-ca"):
        builtin.select(["us-cal"])
    assert len(builtin.select(["all"])) == len(builtin)
    assert [r.id for r in builtin.select(["us-ca", "eu-de"])] == ["us-ca", "eu-de"]
