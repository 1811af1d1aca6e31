"""Voting over the plate reads of one passage, and the fuzzy text match used for duplicates.

Pure functions, no stage machinery: :func:`vote` turns the reads of one track into one plate
text, :func:`similarity` / :func:`best_match` compare plate texts (rapidfuzz's normalized
Levenshtein similarity; a small pure-Python fallback keeps the module importable without it).
docs/dedup.md explains the rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, TypeVar

try:  # rapidfuzz is a dependency; the fallback only keeps imports working without it
    from rapidfuzz.distance import Levenshtein as _Lev
except ModuleNotFoundError:  # pragma: no cover - exercised only where rapidfuzz is missing
    _Lev = None

__all__ = ["Read", "Vote", "quality_score", "vote", "similarity", "one_wrong", "best_match", "substring_distance",
           "supports", "truncation_of", "end_part_of"]

T = TypeVar("T")

CUT_FACTOR = 0.2  # quality factor of a read whose plate touches the frame's edge
NARROW_SHARE = 0.9  # a box narrower than this share of the passage's widest box hides part of its plate
NARROW_FACTOR = 0.3  # vote weight factor of such a read


@dataclass(slots=True)
class Read:
    """One OCR read of a plate, reduced to what the vote needs."""

    text: str
    normalized: str
    confidence: float
    region: str | None
    quality: float  # 0..1, see quality_score
    captured_at: float
    frame_id: int
    aspect: float | None = None  # width / height of the plate's box, where known

    @property
    def weight(self) -> float:
        return self.confidence * self.quality


@dataclass(slots=True)
class Vote:
    """The outcome of a vote: text, region, confidence and how it was reached."""

    normalized: str
    text: str
    region: str | None
    confidence: float
    reads: int  # reads that took part
    agreement: float  # weakest per-character share of the winning characters (1 = unanimous)
    length_share: float  # weight share of reads with the winning length
    exact: bool  # some read has exactly the voted text (False: per-character composite)
    support: int = 0  # reads that speak for the voted text (see :func:`supports`)


def quality_score(quality: Mapping[str, Any] | None, ref_width: float = 120.0, ref_sharpness: float = 500.0) -> float:
    """0..1 from an OCR read's ``quality`` dict; 1 where nothing is known.

    size: ``width / ref_width`` capped at 1; sharpness (the OCR stage's variance of the Laplacian
    at 64 px crop height: a few hundred for soft crops, thousands for crisp ones):
    ``0.5 + 0.5 * min(1, sharpness / ref_sharpness)`` so a soft but large crop still counts;
    angle (degrees): ``cos(angle)``; ``cut`` (the plate touches the frame's edge, so characters
    may be missing): ``CUT_FACTOR``. The product, at least 0.05.
    """
    if not quality:
        return 1.0
    score = 1.0
    width = _num(quality.get("width"))
    if width is not None and ref_width > 0:
        score *= min(1.0, max(width, 0.0) / ref_width)
    sharp = _num(quality.get("sharpness"))
    if sharp is not None and ref_sharpness > 0:
        score *= 0.5 + 0.5 * min(1.0, max(sharp, 0.0) / ref_sharpness)
    angle = _num(quality.get("angle"))
    if angle is not None:
        score *= max(0.0, math.cos(math.radians(min(abs(angle), 90.0))))
    if quality.get("cut"):
        score *= CUT_FACTOR
    return max(0.05, min(1.0, score))


def _num(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _argmax(weights: Mapping[T, float], tiebreak: Mapping[T, float]) -> T:
    return max(weights, key=lambda k: (weights[k], tiebreak.get(k, 0.0)))


def vote(reads: Sequence[Read], region_bonus: float = 2.0, region_min_share: float = 0.25) -> Vote | None:
    """One text from the reads of a passage; None without reads.

    1. Region-valid reads (``region`` set: the text matched a known plate format) are preferred:
       when they carry at least ``region_min_share`` of the total weight, only they vote;
       otherwise all reads vote, region-valid ones with ``region_bonus`` times their weight.
       A read's weight is ``confidence x quality``.
    2. The length with the most weight wins; among reads of that length every position is voted
       by weight (per-character voting), so three reads with one different error each give
       the right text. A read whose text is a contiguous part of a longer text that was read at
       least twice (``MF1355`` beside ``MF13555``: the last character hidden by a passer-by or
       cut by the frame's edge), or read once and pieced together by other reads' parts of it
       (``7NND`` and ``NND019`` beside one ``7NND019``: a fast plate whole in view for three
       frames), backs the longer length, and so does a read of that text with
       one of its doubled letters read once (``XJ9042`` beside ``XJJ9042``): readers merge two
       narrow equal letters far more often than they invent a second one. Such a read also votes
       the longer text's characters at the positions it covers (all of them for a doubled
       letter read once), so many partial reads outvote one large wrong whole read.
    3. A read whose box is clearly narrower for its height than the passage's widest box
       (aspect below ``NARROW_SHARE`` of it) counts ``NARROW_FACTOR`` as much: a passer-by
       hiding one end of the plate narrows the detector's box, and the reader then reads a
       confident wrong text (the right stroke of a W as an I) that no region rule can catch.
       The widest view of one plate is its whole, frontal view.
    4. ``confidence`` = the highest confidence of the reads that read exactly the voted text (the
       weighted mean confidence of same-length reads when none did) x the weakest position's
       weight share x the winning length's weight share.
    """
    reads = [r for r in reads if r.normalized]
    if not reads:
        return None

    widest = max((r.aspect for r in reads if r.aspect), default=0.0)

    def weight(r: Read) -> float:
        narrow = NARROW_FACTOR if r.aspect and r.aspect < NARROW_SHARE * widest else 1.0
        return max(r.weight, 1e-9) * (region_bonus if r.region else 1.0) * narrow

    total = sum(weight(r) for r in reads)
    valid = [r for r in reads if r.region]
    if valid and sum(weight(r) for r in valid) >= region_min_share * total:
        candidates = valid
    else:
        candidates = reads
    cand_total = sum(weight(r) for r in candidates)

    # hiding a plate (a passer-by, the frame's edge) drops characters, never adds them: a text
    # that is a contiguous part of a longer text read at least twice backs the longer length
    counts: dict[str, int] = {}
    for r in candidates:
        counts[r.normalized] = counts.get(r.normalized, 0) + 1
    texts = {r.normalized for r in reads}
    longer = sorted((t for t, n in counts.items() if n >= 2 or _pieced(t, texts)), key=lambda t: (-len(t), -counts[t]))
    backs = [next((t for t in longer if _lost_from(r.normalized, t)), "") for r in candidates]  # "": none
    by_len: dict[int, float] = {}
    best_single: dict[int, float] = {}
    for r, target in zip(candidates, backs):
        n = len(target or r.normalized)
        by_len[n] = by_len.get(n, 0.0) + weight(r)
        best_single[n] = max(best_single.get(n, 0.0), weight(r))

    length = _argmax(by_len, best_single)
    # every read of the winning length votes each position; a read that backs it votes the
    # positions it covers (with the characters of the text it backs)
    same = [r for r in candidates if len(r.normalized) == length]
    voters = [(r, list(r.normalized)) for r in same] + [
        (r, _aligned(r.normalized, target)) for r, target in zip(candidates, backs) if len(target) == length]
    len_total = sum(weight(r) for r in same)

    chars: list[str] = []
    agreement = 1.0
    for k in range(length):
        tally: dict[str, float] = {}
        top: dict[str, float] = {}
        for r, aligned in voters:
            c = aligned[k]
            if c:
                tally[c] = tally.get(c, 0.0) + weight(r)
                top[c] = max(top.get(c, 0.0), weight(r))
        winner = _argmax(tally, top)
        chars.append(winner)
        agreement = min(agreement, tally[winner] / sum(tally.values()))
    normalized = "".join(chars)

    exact = [r for r in same if r.normalized == normalized]
    if exact:
        best = max(exact, key=weight)
        base = max(r.confidence for r in exact)
        text = best.text or normalized
        pool = exact
    else:
        base = sum(r.confidence * weight(r) for r in same) / len_total
        text = normalized
        pool = same
    regions: dict[str, float] = {}
    for r in pool:
        if r.region:
            regions[r.region] = regions.get(r.region, 0.0) + weight(r)
    region = _argmax(regions, {}) if regions else None
    length_share = by_len[length] / cand_total
    return Vote(
        normalized=normalized,
        text=text,
        region=region,
        confidence=round(max(0.0, min(1.0, base * agreement * length_share)), 4),
        reads=len(reads),
        agreement=round(agreement, 4),
        length_share=round(length_share, 4),
        exact=bool(exact),
        support=sum(1 for r in reads if supports(r.normalized, normalized)),
    )


def supports(read: str, text: str) -> bool:
    """Whether a read of ``read`` speaks for ``text``: at most one character different (wrong,
    lost or extra), or a cut-off part of it (:func:`truncation_of`), or a doubled letter of it
    read once. Reads of a plate that was never whole in view (a passer-by or another vehicle in
    front of it) rarely back each other like this: each shows a different part."""
    return similarity(read, text) >= one_wrong(max(len(read), len(text))) \
        or truncation_of(read, text) or _lost_from(read, text)


def _pieced(text: str, reads: set[str]) -> bool:
    """Whether shorter ``reads`` (of at least TRUNCATION_MIN_CHARS) that are contiguous parts of
    ``text`` cover every character of it: each character was then read twice, once in ``text``
    and once in a part, so a reader that invented a character would have had to invent it twice."""
    covered = [False] * len(text)
    for part in reads:
        start = text.find(part) if TRUNCATION_MIN_CHARS <= len(part) < len(text) else -1
        if start >= 0:
            covered[start: start + len(part)] = [True] * len(part)
    return bool(text) and all(covered)


def _aligned(short: str, long: str) -> list[str]:
    """The characters of ``long`` that a read ``short`` lost from it (see :func:`_lost_from`)
    covers, with "" at the positions it does not: a cut-off read covers its part, a read of a
    doubled letter read once covers all of it."""
    start = long.find(short)
    if start < 0:
        return list(long)
    return [c if start <= k < start + len(short) else "" for k, c in enumerate(long)]


def _lost_from(short: str, long: str) -> bool:
    """Whether ``short`` is ``long`` with characters lost: cut off at its ends, or one doubled
    letter read once."""
    if len(long) <= len(short):
        return False
    if short in long:
        return True
    return len(long) == len(short) + 1 and any(
        long[i] == long[i + 1] and long[:i] + long[i + 1:] == short for i in range(len(long) - 1))


def similarity(a: str, b: str) -> float:
    """Normalized Levenshtein similarity, 0..1: ``1 - distance / max(len(a), len(b))``."""
    if _Lev is not None:
        return float(_Lev.normalized_similarity(a, b))
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b))


def one_wrong(length: int) -> float:
    """The :func:`similarity` of two texts of ``length`` characters one character apart."""
    return 1.0 - 1.0 / max(length, 1)


def best_match(text: str, candidates: Iterable[tuple[str, T]], threshold: float) -> tuple[T, float] | None:
    """The candidate whose text is most similar to ``text`` (at least ``threshold``); ties go
    to the later candidate (the most recent one when candidates are in time order)."""
    found: tuple[T, float] | None = None
    for other, item in candidates:
        score = similarity(text, other)
        if score >= threshold and (found is None or score >= found[1]):
            found = (item, score)
    return found


def substring_distance(short: str, long: str, from_start: bool = False) -> int:
    """Edit distance of ``short`` to the closest contiguous part of ``long`` (free start and end
    in ``long``; ``from_start``: to the closest prefix): 0 when ``short`` is a substring of ``long``."""
    prev = list(range(len(long) + 1)) if from_start else [0] * (len(long) + 1)  # where a match may start
    for i, cs in enumerate(short, 1):
        cur = [i]
        for j, cl in enumerate(long, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (cs != cl)))
        prev = cur
    return min(prev)  # ... and end anywhere


TRUNCATION_MIN_CHARS = 3  # shorter reads say too little to be a part of a given plate


def truncation_of(short: str, long: str) -> bool:
    """Whether ``short`` reads like a cut-off part of ``long``: a plate entering or leaving the
    view, or read with its first or last characters missing. ``short`` has at least
    ``TRUNCATION_MIN_CHARS`` characters, fewer than ``long``, and is a contiguous part of it,
    with one wrong character allowed from five characters on."""
    if len(short) < TRUNCATION_MIN_CHARS or len(short) >= len(long):
        return False
    return substring_distance(short, long) <= (1 if len(short) >= 5 else 0)


def end_part_of(short: str, long: str) -> bool:
    """Whether ``short`` reads like the start or the end of ``long`` with at most one character
    wrong, lost or extra: what a reader makes of a plate half hidden by a passer-by, the glyph at
    the cut read as something else (the long synthetic scene, seed 10: ``9NN`` of ``NN112KR``).
    Looser than :func:`truncation_of` for three and four characters, so it only keeps such reads
    from counting as another plate; it never merges passages."""
    if len(short) < TRUNCATION_MIN_CHARS or len(short) >= len(long):
        return False
    return min(substring_distance(short, long, True), substring_distance(short[::-1], long[::-1], True)) <= 1
