"""Licence-plate formats as data: validation, normalisation and per-position correction of reads.

A *region* (a US state, a European country, anything a user adds) is a set of plate-text
patterns, written in YAML files (``stages/regions/*.yaml`` ship with the package; users drop
more in the folder named by the ``regions_dir`` stage parameter or the ``ALPR_REGIONS_DIR``
environment variable, no code involved). See docs/regions.md for the file schema.

Every pattern is expanded into *slot sequences*: one set of allowed characters per position
(``[1-9]<L>{3}[0-9]{3}`` becomes seven sets). That makes correction a per-position question:

- **validation** (:meth:`RegionSet.match`): the normalised text has a sequence of its length
  whose every set holds its character;
- **correction** (:meth:`RegionSet.correct`): for every sequence of a region, replace each
  character that is not allowed by the cheapest allowed one. With a plain text read
  (:class:`TextScorer`) the replacements come from the region's confusion pairs (``O``/``0``,
  ``B``/``8``, ...: where the pattern wants a digit a letter becomes its look-alike digit and
  vice versa), priced by the reader's confidence in the character. With a reader's own scores
  every allowed character is priced by them: :class:`SlotScorer` for fixed-slot readers
  (fast-plate-ocr; the length may change through the padding slots), :class:`CTCScorer` for CTC
  recognisers (PP-OCR; the best alignment of its frames, so characters may be dropped or
  added). The cheapest candidate over all sequences and regions wins.

Costs are in nats: ``-log`` of how much less likely the reader thought the corrected text was
than its own best read, so ``0`` means "read as is" and a cost of 2.3 means "ten times less
likely than what the reader saw".
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np
import yaml

__all__ = [
    "BUILTIN_DIR", "DEFAULT_CONFUSIONS", "ENV_VAR", "Correction", "Region", "RegionError",
    "RegionSet", "Scorer", "SeqBatch", "SlotScorer", "CTCScorer", "TextScorer", "ctc_runs", "load_regions", "normalize", "parse_pattern",
]

BUILTIN_DIR = Path(__file__).resolve().parent / "regions"
ENV_VAR = "ALPR_REGIONS_DIR"
DIGITS = "0123456789"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ALNUM = DIGITS + LETTERS
#: Pairs of characters that readers mix up, used when a file names none (``defaults.confusions``).
DEFAULT_CONFUSIONS = ("O0", "D0", "Q0", "U0", "I1", "L1", "J1", "T1", "Z2", "B3", "A4", "S5", "G6",
                      "T7", "Z7", "B8", "G9")
#: The plate-shape prior (:meth:`RegionSet.correct`): no cost while the box's aspect is within
#: e^0.3 (x/÷ 1.35) of the region's plates (perspective, loose boxes), then 4 nats per unit of
#: log-ratio: a US-shaped box (2.0) costs a European format (4.7) about 2.2 nats, a box of 3.7
#: costs a US format 1.3.
SHAPE_TOLERANCE = 0.3
SHAPE_WEIGHT = 4.0
MAX_SEQUENCES = 4096  # per pattern: a pattern that expands to more is an error
MAX_LENGTH = 12
BUILTIN_CLASSES = {"D": DIGITS, "L": LETTERS, "A": ALNUM}
_SEPARATORS = re.compile(r"[\s\-\.\u00b7\u2022_:/|,]+")


def normalize(text: str) -> str:
    """Upper-case, separators (spaces, dashes, dots, middle dots) removed; other characters kept
    (a read with a stray ``*`` does not validate, which is what we want)."""
    return _SEPARATORS.sub("", text).upper()


class RegionError(ValueError):
    """A region file is wrong; ``problems`` lists every ``FILE:LINE: message`` found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# -- patterns -------------------------------------------------------------------------------------


class PatternError(ValueError):
    pass


Slots = tuple[frozenset[str], ...]


def _class_chars(body: str) -> set[str]:
    """Characters of a ``[...]`` body (ranges, ``^`` negation against A-Z0-9)."""
    negate = body.startswith("^")
    if negate:
        body = body[1:]
    chars: set[str] = set()
    i = 0
    while i < len(body):
        c = body[i]
        if i + 2 < len(body) and body[i + 1] == "-":
            lo, hi = c, body[i + 2]
            if not (lo in ALNUM and hi in ALNUM and ((lo.isdigit() and hi.isdigit()) or (lo.isalpha() and hi.isalpha()))
                    and lo <= hi):
                raise PatternError(f"bad range {lo}-{hi} in [{body}]")
            chars.update(chr(k) for k in range(ord(lo), ord(hi) + 1))
            i += 3
            continue
        if c == "\\" and body[i + 1:i + 2] == "d":
            chars.update(DIGITS)
            i += 2
            continue
        if c not in ALNUM:
            raise PatternError(f"{c!r} in [{body}]: classes hold only A-Z, 0-9 and ranges")
        chars.add(c)
        i += 1
    if negate:
        chars = set(ALNUM) - chars
    if not chars:
        raise PatternError(f"[{body}] allows no character")
    return chars


class _Parser:
    """Recursive descent over the pattern subset: atoms, ``( | )`` groups, ``{n}``, ``{m,n}``, ``?``."""

    def __init__(self, text: str, classes: Mapping[str, str]) -> None:
        self.text = text.replace(" ", "")
        self.i = 0
        self.classes = classes

    def parse(self) -> list[Slots]:
        seqs = self.alternation()
        if self.i != len(self.text):
            raise PatternError(f"unexpected {self.text[self.i]!r} at position {self.i + 1}")
        return seqs

    def alternation(self) -> list[Slots]:
        options = self.sequence()
        while self.peek() == "|":
            self.i += 1
            options = options + self.sequence()
        return options

    def sequence(self) -> list[Slots]:
        seqs: list[Slots] = [()]
        while self.peek() not in ("", "|", ")"):
            atom = self.atom()
            lo, hi = self.quantifier()
            reps: list[Slots] = []
            for n in range(lo, hi + 1):
                reps.extend(_power(atom, n))
            seqs = _dedupe(a + b for a in seqs for b in reps)
            if len(seqs) > MAX_SEQUENCES:
                raise PatternError(f"expands to more than {MAX_SEQUENCES} sequences; split it")
        return seqs

    def atom(self) -> list[Slots]:
        c = self.text[self.i]
        if c == "(":
            self.i += 1
            inner = self.alternation()
            if self.peek() != ")":
                raise PatternError("a '(' is never closed")
            self.i += 1
            return inner
        if c == "[":
            end = self.text.find("]", self.i)
            if end < 0:
                raise PatternError("a '[' is never closed")
            chars = _class_chars(self.text[self.i + 1:end])
            self.i = end + 1
            return [(frozenset(chars),)]
        if c == "<":
            end = self.text.find(">", self.i)
            if end < 0:
                raise PatternError("a '<' is never closed")
            name = self.text[self.i + 1:end]
            if name not in self.classes:
                close = difflib.get_close_matches(name, list(self.classes), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(self.classes))}"
                raise PatternError(f"unknown class <{name}>{hint}")
            self.i = end + 1
            return [(frozenset(self.classes[name]),)]
        if c == "\\" and self.text[self.i + 1:self.i + 2] == "d":
            self.i += 2
            return [(frozenset(DIGITS),)]
        if c == ".":
            self.i += 1
            return [(frozenset(ALNUM),)]
        if c in ALNUM:
            self.i += 1
            return [(frozenset(c),)]
        raise PatternError(f"unexpected {c!r} at position {self.i + 1} (allowed: A-Z 0-9 [..] <class> \\d . ( | ) "
                           "{n} {m,n} ?)")

    def quantifier(self) -> tuple[int, int]:
        c = self.peek()
        if c == "?":
            self.i += 1
            return 0, 1
        if c == "{":
            end = self.text.find("}", self.i)
            m = re.fullmatch(r"(\d+)(?:,(\d+))?", self.text[self.i + 1:end]) if end > 0 else None
            if not m:
                raise PatternError(f"bad repetition at position {self.i + 1}: use {{n}} or {{m,n}}")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo or hi > MAX_LENGTH:
                raise PatternError(f"bad repetition {{{lo},{hi}}}")
            self.i = end + 1
            return lo, hi
        return 1, 1

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""


def _power(atom: list[Slots], n: int) -> list[Slots]:
    seqs: list[Slots] = [()]
    for _ in range(n):
        seqs = _dedupe(a + b for a in seqs for b in atom)
    return seqs


def _dedupe(seqs: Iterable[Slots]) -> list[Slots]:
    return list(dict.fromkeys(seqs))


def parse_pattern(pattern: str, classes: Mapping[str, str] | None = None) -> list[Slots]:
    """The slot sequences of a pattern (raises ``ValueError`` with what is wrong)."""
    merged = dict(BUILTIN_CLASSES)
    merged.update(classes or {})
    seqs = _Parser(pattern, merged).parse()
    return [s for s in seqs if 0 < len(s) <= MAX_LENGTH]


# -- scorers: what a read says about alternatives -------------------------------------------------


class SeqBatch:
    """Slot sequences grouped by length, with their allowed-character masks per alphabet
    (``[sequences, length, alphabet]`` booleans, built once and cached)."""

    def __init__(self, seqs: Iterable[Slots]) -> None:
        self.seqs: list[Slots] = list(seqs)
        self.by_len: dict[int, list[int]] = {}
        for i, seq in enumerate(self.seqs):
            self.by_len.setdefault(len(seq), []).append(i)
        self._masks: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.seqs)

    def mask(self, length: int, alphabet: str) -> np.ndarray:
        key = (alphabet, length)
        if key not in self._masks:
            members = self.by_len.get(length, [])
            col = {c: i for i, c in enumerate(alphabet)}
            m = np.zeros((len(members), length, len(alphabet)), bool)
            for n, i in enumerate(members):
                for pos, allowed in enumerate(self.seqs[i]):
                    for c in allowed:
                        k = col.get(c)
                        if k is not None:
                            m[n, pos, k] = True
            self._masks[key] = m
        return self._masks[key]


def _batch(seqs: "SeqBatch | Sequence[Slots]") -> SeqBatch:
    return seqs if isinstance(seqs, SeqBatch) else SeqBatch(seqs)


class Scorer(Protocol):
    """Prices slot sequences against one read: for each, ``(text, cost, changed)`` of the
    cheapest text the sequence allows, or None when the read cannot become any of them (or only
    at more than ``limit``)."""

    def best_many(self, seqs: "SeqBatch | Sequence[Slots]", fold: Mapping[str, str],
                  limit: float = math.inf) -> list[tuple[str, float, int] | None]:
        ...


def _fold(text: str, fold: Mapping[str, str]) -> str:
    return "".join(fold.get(c, c) for c in text) if fold else text


class TextScorer:
    """A plain read: only the characters in the region's confusion pairs may replace a character,
    at a price that grows with the reader's confidence in it (see module doc)."""

    def __init__(self, text: str, confidences: Sequence[float] | None = None,
                 confusions: Mapping[str, str] | None = None, min_cost: float = 0.4) -> None:
        self.text = text
        self.conf = list(confidences) if confidences is not None and len(confidences) == len(text) else None
        self.confusions = confusions if confusions is not None else confusion_map(DEFAULT_CONFUSIONS)
        self.min_cost = min_cost

    def char_cost(self, i: int) -> float:
        p = min(max(self.conf[i] if self.conf else 0.8, 0.02), 0.995)
        # the replacement gets (part of) what the reader did not give its own character
        return max(self.min_cost, math.log(p / ((1.0 - p) * 0.5)))

    def best(self, slots: Slots, fold: Mapping[str, str]) -> tuple[str, float, int] | None:
        text = _fold(self.text, fold)
        if len(slots) != len(text):
            return None
        out, cost, changed = [], 0.0, 0
        for i, (c, allowed) in enumerate(zip(text, slots)):
            if c in allowed:
                out.append(c)
                continue
            raw = self.text[i]
            options = [_fold(r, fold) for r in self.confusions.get(raw, "") + self.confusions.get(c, "")]
            options = [r for r in options if r in allowed]
            if not options:
                return None
            out.append(options[0])
            cost += self.char_cost(i)
            changed += 1
        return "".join(out), cost, changed

    def best_many(self, seqs: "SeqBatch | Sequence[Slots]", fold: Mapping[str, str],
                  limit: float = math.inf) -> list[tuple[str, float, int] | None]:
        batch = _batch(seqs)
        out: list[tuple[str, float, int] | None] = [None] * len(batch)
        for i in batch.by_len.get(len(self.text), []):
            got = self.best(batch.seqs[i], fold)
            if got is not None and got[1] <= limit:
                out[i] = got
        return out


class SlotScorer:
    """A reader's full score table: ``logp[position, alphabet index]`` (log-probabilities).

    ``pad`` is the index of the padding class of fixed-slot readers (fast-plate-ocr): the text of
    length L is its first L slots, every later slot must read as padding. Without ``pad`` (a CTC
    reader's per-character table) only sequences of the table's own length are priced.
    """

    def __init__(self, logp: np.ndarray, alphabet: str, pad: int | None = None) -> None:
        self.logp = np.asarray(logp, np.float64)
        self.alphabet = alphabet
        self.pad = pad
        self.top = self.logp.max(axis=1)
        self._folded: dict[tuple[tuple[str, str], ...], tuple[np.ndarray, str]] = {}
        if pad is None:
            self.length = self.logp.shape[0]
        else:
            best = self.logp.argmax(axis=1)
            self.length = int(np.argmax(best == pad)) if (best == pad).any() else self.logp.shape[0]
        # cost of ending the text after L characters: every later slot reads padding
        if pad is not None:
            tail = self.top - self.logp[:, pad]
            self.end_cost = np.concatenate([np.cumsum(tail[::-1])[::-1], [0.0]])

    def table(self, fold: Mapping[str, str]) -> tuple[np.ndarray, str]:
        """The score table with folded characters merged (``O`` counted as ``0`` in the US)."""
        key = tuple(sorted(fold.items()))
        if key not in self._folded:
            if not fold:
                self._folded[key] = (self.logp, self.alphabet)
            else:
                keep = [c for c in self.alphabet if c not in fold or fold[c] not in self.alphabet]
                p = np.exp(self.logp)
                cols = []
                for c in keep:
                    idx = [self.alphabet.index(c)] + [self.alphabet.index(s) for s, t in fold.items()
                                                      if t == c and s in self.alphabet]
                    cols.append(p[:, idx].sum(axis=1))
                self._folded[key] = (np.log(np.maximum(np.stack(cols, axis=1), 1e-12)), "".join(keep))
        return self._folded[key]

    def best(self, slots: Slots, fold: Mapping[str, str]) -> tuple[str, float, int] | None:
        n = len(slots)
        rows = self.logp.shape[0]
        if n > rows or (self.pad is None and n != rows):
            return None
        logp, alphabet = self.table(fold)
        out, cost, changed = [], 0.0, 0
        for i, allowed in enumerate(slots):
            idx = [alphabet.index(c) for c in allowed if c in alphabet]
            if not idx:
                return None
            row = logp[i]
            j = idx[int(np.argmax(row[idx]))]
            out.append(alphabet[j])
            cost += float(row.max() - row[j])
            changed += int(j != int(np.argmax(row)))
        if self.pad is not None:
            cost += float(self.end_cost[n])
            changed += abs(n - self.length)
        return "".join(out), cost, changed

    def best_many(self, seqs: "SeqBatch | Sequence[Slots]", fold: Mapping[str, str],
                  limit: float = math.inf) -> list[tuple[str, float, int] | None]:
        batch = _batch(seqs)
        out: list[tuple[str, float, int] | None] = [None] * len(batch)
        logp, alphabet = self.table(fold)
        rows = logp.shape[0]
        for n, members in batch.by_len.items():
            if n > rows or (self.pad is None and n != rows) or n == 0:
                continue
            mask = batch.mask(n, alphabet)
            table = logp[None, :n, :]
            sub = np.where(mask, table, -np.inf)
            arg = sub.argmax(axis=2)
            val = np.take_along_axis(sub, arg[:, :, None], axis=2)[:, :, 0]
            top = logp[:n].max(axis=1)
            cost = (top[None, :] - val).sum(axis=1)
            changed = (arg != logp[:n].argmax(axis=1)[None, :]).sum(axis=1)
            if self.pad is not None:
                cost = cost + float(self.end_cost[n])
                changed = changed + abs(n - self.length)
            for m in np.flatnonzero(np.isfinite(cost) & (cost <= limit)):
                out[members[m]] = ("".join(alphabet[k] for k in arg[m]), float(cost[m]), int(changed[m]))
        return out


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def ctc_runs(labels: Sequence[int] | np.ndarray) -> list[tuple[int, int, int]]:
    """The characters of a greedy CTC path: ``(label, first frame, last frame)`` per emitted
    character (label 0 is the blank; a label repeated without a blank between is one character)."""
    out: list[tuple[int, int, int]] = []
    prev = 0
    for t, k in enumerate(int(v) for v in labels):
        if k == 0:
            prev = 0
            continue
        if k == prev:
            out[-1] = (k, out[-1][1], t)
            continue
        out.append((k, t, t))
        prev = k
    return out


class CTCScorer:
    """A CTC recogniser's frames: ``logp[frame, 0]`` is the blank (separators merged into it),
    ``logp[frame, 1 + k]`` the character ``alphabet[k]``.

    A slot sequence is priced by the best CTC alignment of the frames to any text it allows
    (Viterbi over the usual blank-interleaved label chain, one state per label and allowed
    character), against the best unconstrained path: so a read may gain or lose characters on
    the way to a valid text (``SHDLR7X`` -> ``SH0R7X``), at the price of the frames that had to
    change their minds. All sequences of one length are aligned together (numpy).
    """

    def __init__(self, logp: np.ndarray, alphabet: str, max_length_change: int = 2) -> None:
        self.logp = np.asarray(logp, np.float64)
        self.alphabet = alphabet
        self.max_length_change = max_length_change
        self.greedy = "".join(alphabet[k - 1] for k, _, _ in ctc_runs(self.logp.argmax(axis=1)))
        self._folded: dict[tuple[tuple[str, str], ...], tuple[np.ndarray, str]] = {}

    @staticmethod
    def _squeeze(logp: np.ndarray, sure: float = math.log(0.995)) -> np.ndarray:
        """Runs of frames that are surely blank become one frame (their log-probabilities
        summed): every plausible alignment spends them on a blank, and fewer frames make the
        alignment cheaper."""
        blank = logp[:, 0] >= sure
        rows, t = [], 0
        while t < len(logp):
            if blank[t]:
                u = t
                while u + 1 < len(logp) and blank[u + 1]:
                    u += 1
                rows.append(logp[t:u + 1].sum(axis=0))
                t = u + 1
            else:
                rows.append(logp[t])
                t += 1
        return np.stack(rows) if rows else logp

    def table(self, fold: Mapping[str, str]) -> tuple[np.ndarray, str]:
        key = tuple(sorted(fold.items()))
        if key not in self._folded:
            if not fold:
                self._folded[key] = (self._squeeze(self.logp), self.alphabet)
            else:
                keep = [c for c in self.alphabet if c not in fold or fold[c] not in self.alphabet]
                p = np.exp(self.logp)
                cols = [p[:, 0]]
                for c in keep:
                    idx = [1 + self.alphabet.index(c)] + [1 + self.alphabet.index(s) for s, t in fold.items()
                                                          if t == c and s in self.alphabet]
                    cols.append(p[:, idx].sum(axis=1))
                table = np.log(np.maximum(np.stack(cols, axis=1), 1e-12))
                self._folded[key] = (self._squeeze(table), "".join(keep))
        return self._folded[key]

    @staticmethod
    def _viterbi(logp: np.ndarray, mask: np.ndarray, keep_back: bool = False):
        """Best alignment scores ``[N]`` (and back-pointers when asked) for label masks
        ``[N, L, K]``: blanks b_0..b_L around labels 0..L-1, each label one character."""
        T = logp.shape[0]
        N, L, K = mask.shape
        neg = -np.inf
        emit_mask = np.where(mask, 0.0, neg)
        lab = np.full((N, L, K), neg)
        blank = np.full((N, L + 1), neg)
        blank[:, 0] = logp[0, 0]
        lab[:, 0, :] = logp[0, 1:] + emit_mask[:, 0, :]
        backs = []
        if not keep_back:  # the fast path: scores only
            prev = np.full((N, L, K), neg)
            for t in range(1, T):
                prev[:, 1:, :] = lab[:, :-1, :]
                part = np.partition(prev, K - 2, axis=2)
                top1, top2 = part[:, :, K - 1:], part[:, :, K - 2:K - 1]
                skip = np.where(prev >= top1, top2, top1)  # best of the *other* characters
                if K == 1:
                    skip = np.full_like(prev, neg)
                new_lab = np.maximum(np.maximum(lab, blank[:, :L, None]), skip)
                new_lab += logp[t, 1:][None, None, :]
                new_lab += emit_mask
                best_lab = lab.max(axis=2)
                blank[:, 1:] = np.maximum(blank[:, 1:], best_lab)
                blank += logp[t, 0]
                lab = new_lab
            final = np.maximum(blank[:, L], lab[:, L - 1, :].max(axis=1))
            return final, (lab, blank, backs)
        for t in range(1, T):
            e_char = logp[t, 1:][None, None, :] + emit_mask
            # into label l: stay, from blank b_l, or straight from label l-1 with another char
            from_blank = blank[:, :L, None]
            prev = np.concatenate([np.full((N, 1, K), neg), lab[:, :-1, :]], axis=1)
            arg1 = prev.argmax(axis=2)[:, :, None]
            top1 = np.take_along_axis(prev, arg1, axis=2)
            masked = prev.copy()
            np.put_along_axis(masked, arg1, neg, axis=2)
            arg2 = masked.argmax(axis=2)[:, :, None]
            top2 = np.take_along_axis(masked, arg2, axis=2)
            skip = np.where(np.arange(K)[None, None, :] == arg1, top2, top1)
            cands = np.stack([lab, np.broadcast_to(from_blank, lab.shape), skip])
            choice = cands.argmax(axis=0)
            new_lab = np.take_along_axis(cands, choice[None], axis=0)[0] + e_char
            # into blank b_l: stay, or from label l-1
            from_lab = np.concatenate([np.full((N, 1), neg), lab.max(axis=2)], axis=1)
            bchoice = (from_lab > blank).astype(np.int8)
            new_blank = np.maximum(blank, from_lab) + logp[t, 0]
            if keep_back:
                backs.append((choice.astype(np.int8), bchoice, lab.argmax(axis=2), arg1[:, :, 0], arg2[:, :, 0]))
            lab, blank = new_lab, new_blank
        final = np.maximum(blank[:, L], lab[:, L - 1, :].max(axis=1))
        return final, (lab, blank, backs)

    def best_many(self, seqs: Sequence[Slots], fold: Mapping[str, str],
                  limit: float = math.inf) -> list[tuple[str, float, int] | None]:
        """Prices every sequence; texts come back for the cheapest ones within ``limit`` (ties),
        None for the others."""
        batch = _batch(seqs)
        seqs = batch.seqs
        out: list[tuple[str, float, int] | None] = [None] * len(seqs)
        if not seqs:
            return out
        logp, alphabet = self.table(fold)
        T = logp.shape[0]
        top = float(logp.max(axis=1).sum())
        near = len(self.greedy)
        costs = np.full(len(seqs), np.inf)
        for n, members in batch.by_len.items():
            # a correction that adds or drops more than max_length_change characters is no
            # correction of this read
            if n == 0 or n > T or abs(n - near) > self.max_length_change:
                continue
            final, _ = self._viterbi(logp, batch.mask(n, alphabet))
            costs[members] = top - final
        if not np.isfinite(costs).any():
            return out
        best = float(costs.min())
        if best > limit:
            return out
        for i in np.flatnonzero(costs <= best + 1e-6):
            text = self._text(seqs[int(i)], logp, alphabet)
            if text is not None:
                out[int(i)] = (text, max(0.0, float(costs[i])), _levenshtein(_fold(self.greedy, fold), text))
        return out

    def _text(self, seq: Slots, logp: np.ndarray, alphabet: str) -> str | None:
        """The characters of the best alignment to ``seq`` (back-tracked)."""
        mask = SeqBatch([seq]).mask(len(seq), alphabet)
        final, (lab, blank, backs) = self._viterbi(logp, mask, keep_back=True)
        if not np.isfinite(final[0]):
            return None
        L = len(seq)
        chars: list[int | None] = [None] * L
        # state: ("b", l) or ("c", l, k)
        if blank[0, L] >= lab[0, L - 1].max():
            state: tuple = ("b", L)
        else:
            state = ("c", L - 1, int(lab[0, L - 1].argmax()))
        for t in range(len(backs), 0, -1):
            choice, bchoice, lab_arg, arg1, arg2 = backs[t - 1]
            if state[0] == "c":
                _, l, k = state
                chars[l] = k
                how = int(choice[0, l, k])
                if how == 1:
                    state = ("b", l)
                elif how == 2:
                    kk = int(arg1[0, l]) if int(arg1[0, l]) != k else int(arg2[0, l])  # order is over label l-1
                    state = ("c", l - 1, kk)
            else:
                _, l = state
                if int(bchoice[0, l]) == 1:
                    state = ("c", l - 1, int(lab_arg[0, l - 1]))
        if state[0] == "c":
            chars[state[1]] = state[2]
        if any(c is None for c in chars):
            return None
        return "".join(alphabet[c] for c in chars)  # type: ignore[index]


def confusion_map(pairs: Iterable[str]) -> dict[str, str]:
    """``["O0", "B8"]`` -> ``{"O": "0", "0": "O", "B": "8", "8": "B"}`` (both ways, in order)."""
    out: dict[str, str] = {}
    for pair in pairs:
        a, b = pair[0], pair[1]
        if b not in out.get(a, ""):
            out[a] = out.get(a, "") + b
        if a not in out.get(b, ""):
            out[b] = out.get(b, "") + a
    return out


# -- regions --------------------------------------------------------------------------------------


@dataclass
class Region:
    """One plate format family (a state, a country)."""

    id: str
    name: str
    group: str
    patterns: list[str]
    sequences: list[Slots]
    country: str | None = None
    aspect: float | None = None  # width / height of the plate as issued (US 2.0, EU 4.7)
    fold: dict[str, str] = field(default_factory=dict)
    confusions: dict[str, str] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    source: str = ""
    by_length: dict[int, list[Slots]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.by_length:
            for seq in self.sequences:
                self.by_length.setdefault(len(seq), []).append(seq)

    def prepare(self, text: str) -> str:
        """Normalised and folded (``O`` written ``0`` where the region says so)."""
        return _fold(normalize(text), self.fold)

    def matches(self, text: str) -> bool:
        t = self.prepare(text)
        return any(all(c in s for c, s in zip(t, seq)) for seq in self.by_length.get(len(t), ()))


@dataclass
class Correction:
    """What :meth:`RegionSet.correct` made of a read."""

    text: str  # the corrected (or, with no region reachable, normalised) text
    regions: list[Region]  # every region whose formats allow ``text`` at the lowest cost
    cost: float  # nats, see the module doc; 0.0 when the read was valid as is
    changed: int  # characters replaced (plus length change)
    raw: str = ""

    @property
    def valid(self) -> bool:
        return bool(self.regions)

    @property
    def region(self) -> str | None:
        """One id: the region's, or its group's when several of one group fit (``us``)."""
        if not self.regions:
            return None
        if len(self.regions) == 1:
            return self.regions[0].id
        groups = {r.group for r in self.regions}
        return next(iter(groups)) if len(groups) == 1 else self.regions[0].id


def _compress(seqs: dict[Slots, list[Region]]) -> dict[Slots, list[Region]]:
    """Fewer sequences for the same texts: two sequences of the same regions that differ at one
    position only become one with the union of the two sets there (``AG``, ``AI``, ``AR`` ->
    ``A[GIR]``). Exact: every text keeps its regions."""
    items = {(seq, tuple(r.id for r in owners)): owners for seq, owners in seqs.items()}
    changed = True
    while changed:
        changed = False
        for length in sorted({len(k[0]) for k in items}):
            for pos in range(length):
                merged: dict[tuple[Any, ...], tuple[set[str], list[Region]]] = {}
                for (seq, ids), owners in items.items():
                    if len(seq) != length:
                        continue
                    key = (seq[:pos], seq[pos + 1:], ids)
                    if key in merged:
                        merged[key][0].update(seq[pos])
                    else:
                        merged[key] = (set(seq[pos]), owners)
                if len(merged) < sum(1 for k in items if len(k[0]) == length):
                    changed = True
                    items = {k: v for k, v in items.items() if len(k[0]) != length}
                    for (head, tail, ids), (chars, owners) in merged.items():
                        items[(head + (frozenset(chars),) + tail, ids)] = owners
    out: dict[Slots, list[Region]] = {}
    for (seq, _), owners in items.items():
        out.setdefault(seq, [])
        out[seq].extend(r for r in owners if r not in out[seq])
    return out


class RegionSet:
    """Regions by id, with their groups; what the OCR stage validates and corrects against."""

    def __init__(self, regions: Iterable[Region]) -> None:
        self.regions: dict[str, Region] = {r.id: r for r in regions}
        self.groups: dict[str, list[str]] = {}
        for r in self.regions.values():
            self.groups.setdefault(r.group, []).append(r.id)
        self._groups: dict[tuple[bool, bool], list[tuple[Region, SeqBatch, list[list[Region]]]]] = {}

    def __len__(self) -> int:
        return len(self.regions)

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions.values())

    def __getitem__(self, rid: str) -> Region:
        return self.regions[rid]

    def select(self, names: Iterable[str]) -> "RegionSet":
        """Regions named by id or group (``us``, ``eu``, ``us-ca``); ``all`` for all of them.

        Raises ``KeyError`` naming the closest known ids for an unknown name.
        """
        chosen: dict[str, Region] = {}
        for name in names:
            key = name.strip().lower()
            if key == "all":
                chosen.update(self.regions)
            elif key in self.groups:
                chosen.update((rid, self.regions[rid]) for rid in self.groups[key])
            elif key in self.regions:
                chosen[key] = self.regions[key]
            else:
                known = list(self.groups) + list(self.regions)
                close = difflib.get_close_matches(key, known, n=4)
                hint = f"did you mean {', '.join(close)}?" if close else f"groups: {', '.join(sorted(self.groups))}"
                raise KeyError(f"unknown region {name!r}; {hint}")
        return RegionSet(chosen.values())

    def _priced_groups(self, by_country: bool, by_shape: bool) -> list[tuple[Region, SeqBatch, list[list[Region]]]]:
        """Regions that price alike (same fold and confusions, and the same country or plate
        shape when that prior applies), each distinct slot sequence once with the regions that
        allow it; the group's first region stands for its fold, confusions, country and shape.
        Built on first use."""
        key = (by_country, by_shape)
        if key not in self._groups:
            grouped: dict[tuple[Any, ...], tuple[Region, dict[Slots, list[Region]]]] = {}
            for region in self.regions.values():
                price = (tuple(sorted(region.fold.items())), tuple(sorted(region.confusions.items())),
                         region.country if by_country else None, region.aspect if by_shape else None)
                first, seqs = grouped.setdefault(price, (region, {}))
                for seq in region.sequences:
                    seqs.setdefault(seq, []).append(region)
            groups = []
            for first, seqs in grouped.values():
                seqs = _compress(seqs)
                batch = SeqBatch(seqs)
                groups.append((first, batch, [seqs[q] for q in batch.seqs]))
            self._groups[key] = groups
        return self._groups[key]

    @property
    def common_fold(self) -> dict[str, str]:
        """The folds every region shares (applied to reads no region accepts)."""
        folds = [r.fold for r in self.regions.values()]
        if not folds:
            return {}
        return {k: v for k, v in folds[0].items() if all(f.get(k) == v for f in folds[1:])}

    def normalize(self, text: str) -> str:
        return _fold(normalize(text), self.common_fold)

    def match(self, text: str) -> list[Region]:
        """Every region whose formats the (normalised) text fits as is."""
        return [r for r in self.regions.values() if r.matches(text)]

    def correct(self, text: str, confidences: Sequence[float] | None = None, *,
                scorer: Scorer | None = None, max_cost: float = math.inf,
                countries: Mapping[str, float] | None = None, country_weight: float = 0.5,
                aspect: float | None = None, shape_weight: float = SHAPE_WEIGHT) -> Correction:
        """The cheapest text any region allows (see the module doc), or the normalised read with
        no region when none is reachable within ``max_cost``.

        ``scorer`` replaces the confusion pairs by a reader's own score table (its text must be
        ``text``); ``countries`` (country name -> probability, e.g. fast-plate-ocr's region head)
        adds ``-country_weight * log(p / p_max)`` to the regions of less likely countries.
        ``aspect`` (width / height of the plate's box in the image) adds
        ``shape_weight * (|log(aspect / region.aspect)| - SHAPE_TOLERANCE)`` to regions whose
        plates have another shape (a wide European plate is no US plate), where positive.
        """
        raw = normalize(text)
        fallback = Correction(self.normalize(raw), [], 0.0, 0, raw=raw)
        if not raw and scorer is None:
            return fallback
        top_country = max(countries.values()) if countries else 0.0
        text_scorers: dict[int, TextScorer] = {}
        jobs = []
        by_shape = bool(aspect and aspect > 0 and shape_weight > 0)
        for first, batch, owners in self._priced_groups(bool(countries), by_shape):
            fold, confusions, country = first.fold, first.confusions, first.country
            sc: Any = scorer
            if sc is None:
                if id(confusions) not in text_scorers:
                    text_scorers[id(confusions)] = TextScorer(raw, confidences, confusions)
                sc = text_scorers[id(confusions)]
            extra = 0.0
            if countries and country:
                p = countries.get(country, 0.0)
                extra = country_weight * -math.log(max(p, 1e-3) / max(top_country, 1e-3))
            if by_shape and first.aspect:
                extra += shape_weight * max(0.0, abs(math.log(aspect / first.aspect)) - SHAPE_TOLERANCE)
            jobs.append((extra, sc, fold, batch, owners))
        found: dict[str, tuple[float, int, list[Region]]] = {}
        best_cost = math.inf
        for extra, sc, fold, batch, owners in sorted(jobs, key=lambda j: j[0]):
            limit = min(max_cost, best_cost + 1e-6) - extra
            if limit < 0:
                continue
            for k, got in enumerate(sc.best_many(batch, fold, limit)):
                if got is None:
                    continue
                cand, cost, _ = got
                cost += extra
                if cost > max_cost or cost > best_cost + 1e-6:
                    continue
                # characters that differ from the read, folds included: between equally cheap
                # texts the one closest to what was read wins (OSEP36 stays German, not US 0SEP36)
                changed = _levenshtein(raw, cand)
                best_cost = min(best_cost, cost)
                prev = found.get(cand)
                if prev is None or cost < prev[0] - 1e-9:
                    found[cand] = (cost, changed, list(owners[k]))
                elif abs(cost - prev[0]) <= 1e-9:
                    prev[2].extend(r for r in owners[k] if r not in prev[2])
        if not found:
            return fallback
        cand, (cost, changed, regions) = min(found.items(), key=lambda kv: (kv[1][0], kv[1][1]))
        return Correction(cand, regions, cost, changed, raw=raw)


# -- loading ---------------------------------------------------------------------------------------

FILE_KEYS = ("group", "defaults", "regions")
DEFAULT_KEYS = ("country", "aspect", "fold", "confusions", "classes")
REGION_KEYS = ("name", "patterns", "examples", "invalid", "country", "aspect", "fold", "confusions", "classes")


class _FileLoader:
    """Turns one YAML file into regions, collecting every problem with its line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []

    def add(self, node: yaml.Node | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.problems.append(f"{self.path}:{line}: {message}")

    def plain(self, node: yaml.Node) -> Any:
        return yaml.safe_load(yaml.serialize(node)) if node is not None else None

    def mapping(self, node: yaml.Node, what: str, allowed: Sequence[str] | None) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.add(node, f"{what} must be a mapping (key: value), got {self.describe(node)}")
            return {}
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            key = str(self.plain(k))
            if key in out:
                self.add(k, f"{key!r} is given twice in {what} (first on line {out[key][0].start_mark.line + 1})")
                continue
            if allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=2)
                hint = f"did you mean {' or '.join(close)}?" if close else f"allowed: {', '.join(allowed)}"
                self.add(k, f"unknown key {key!r} in {what}; {hint}")
                continue
            out[key] = (k, v)
        return out

    def describe(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        return repr(self.plain(node))

    def string(self, node: yaml.Node, what: str) -> str | None:
        if isinstance(node, yaml.SequenceNode) and what.startswith("pattern"):
            self.add(node, f"{what} was read as a YAML list: quote patterns that start with '[' "
                           "(e.g. \"[1-9]<L>{3}[0-9]{3}\")")
            return None
        if not isinstance(node, yaml.ScalarNode):
            self.add(node, f"{what} must be a string, got {self.describe(node)}")
            return None
        value = self.plain(node)
        return str(value) if value is not None else None

    def strings(self, node: yaml.Node, what: str) -> list[tuple[yaml.Node, str]]:
        if isinstance(node, yaml.ScalarNode):
            nodes = [node]
        elif isinstance(node, yaml.SequenceNode):
            nodes = list(node.value)
        else:
            self.add(node, f"{what} must be a list of strings, got {self.describe(node)}")
            return []
        out = []
        for item in nodes:
            s = self.string(item, what)
            if s is not None:
                out.append((item, s))
        return out

    def aspect(self, node: yaml.Node) -> float | None:
        value = self.plain(node)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.5 <= value <= 10:
            self.add(node, f"aspect is the plate's width / height as issued, a number like 2.0 (US) or 4.7 (EU), "
                           f"got {value!r}")
            return None
        return float(value)

    def fold(self, node: yaml.Node) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, (knode, vnode) in self.mapping(node, "fold", None).items():
            value = self.string(vnode, f"fold of {key!r}")
            if len(key) != 1 or key not in ALNUM or value is None or len(value) != 1 or value not in ALNUM:
                self.add(knode, f"fold maps one character to one character (e.g. O: \"0\"), got {key!r}: {value!r}")
                continue
            out[key] = value
        return out

    def confusions(self, node: yaml.Node) -> dict[str, str]:
        pairs = []
        for item, s in self.strings(node, "confusions"):
            s = s.replace(" ", "")
            if len(s) != 2 or s[0] not in ALNUM or s[1] not in ALNUM or s[0] == s[1]:
                self.add(item, f"a confusion is a pair of two different characters like \"O0\" or \"B8\", got {s!r}")
                continue
            pairs.append(s)
        return confusion_map(pairs)

    def classes(self, node: yaml.Node) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, (knode, vnode) in self.mapping(node, "classes", None).items():
            value = self.string(vnode, f"class {key!r}")
            if value is None:
                continue
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                self.add(knode, f"class names are words (letters, digits, _), got {key!r}")
                continue
            try:
                chars = _class_chars(value[1:-1]) if value.startswith("[") and value.endswith("]") else None
            except PatternError as exc:
                self.add(vnode, f"class {key!r}: {exc}")
                continue
            if chars is None:
                self.add(vnode, f"class {key!r} must be a bracket class like \"[A-HJ-NP-Z]\", got {value!r}")
                continue
            out[key] = "".join(sorted(chars))
        return out

    def load(self) -> list[Region]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            self.problems.append(f"{self.path}:1: cannot read: {exc}")
            return []
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            self.problems.append(f"{self.path}:{mark.line + 1 if mark else 1}: not valid YAML: {exc.problem}")
            return []
        if root is None:
            self.problems.append(f"{self.path}:1: the file is empty; expected group:, defaults: and regions:")
            return []
        top = self.mapping(root, "the file", FILE_KEYS)
        if not top:
            return []
        group = None
        if "group" in top:
            group = self.string(top["group"][1], "group")
        if not group:
            self.add(top.get("group", (root,))[0], "missing 'group:' (e.g. group: us)")
            group = self.path.stem
        group = group.lower()
        defaults: dict[str, Any] = {"country": None, "aspect": None, "fold": {}, "confusions": confusion_map(DEFAULT_CONFUSIONS),
                                    "classes": {}}
        if "defaults" in top:
            d = self.mapping(top["defaults"][1], "defaults", DEFAULT_KEYS)
            self._fields(d, defaults)
        if "regions" not in top:
            self.add(root, "missing 'regions:' (a mapping of region id to its formats)")
            return []
        regions = []
        for rid, (knode, vnode) in self.mapping(top["regions"][1], "regions", None).items():
            region = self.region(rid, knode, vnode, group, defaults)
            if region is not None:
                regions.append(region)
        return regions

    def _fields(self, d: dict[str, tuple[yaml.Node, yaml.Node]], into: dict[str, Any]) -> None:
        if "country" in d:
            into["country"] = self.string(d["country"][1], "country")
        if "aspect" in d:
            into["aspect"] = self.aspect(d["aspect"][1])
        if "fold" in d:
            into["fold"] = self.fold(d["fold"][1])
        if "confusions" in d:
            into["confusions"] = self.confusions(d["confusions"][1])
        if "classes" in d:
            into["classes"] = {**into.get("classes", {}), **self.classes(d["classes"][1])}

    def region(self, rid: str, knode: yaml.Node, vnode: yaml.Node, group: str,
               defaults: dict[str, Any]) -> Region | None:
        rid = rid.lower()
        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", rid):
            self.add(knode, f"region ids are lower-case words like 'us-ca' or 'eu-de', got {rid!r}")
            return None
        if rid == group or rid == "all":
            self.add(knode, f"region id {rid!r} clashes with a group name")
            return None
        fields = self.mapping(vnode, f"region {rid!r}", REGION_KEYS)
        if not fields and not isinstance(vnode, yaml.MappingNode):
            return None
        values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in defaults.items()}
        before = len(self.problems)
        self._fields(fields, values)
        name = self.string(fields["name"][1], "name") if "name" in fields else None
        if not name:
            self.add(vnode, f"region {rid!r} needs a 'name:' (e.g. name: California)")
        if "patterns" not in fields:
            self.add(vnode, f"region {rid!r} needs 'patterns:' (a list of quoted patterns)")
            return None
        sequences: list[Slots] = []
        patterns = []
        fold = values["fold"]
        for pnode, pattern in self.strings(fields["patterns"][1], "pattern"):
            try:
                seqs = parse_pattern(pattern, values["classes"])
            except PatternError as exc:
                self.add(pnode, f"pattern {pattern!r}: {exc}")
                continue
            if not seqs:
                self.add(pnode, f"pattern {pattern!r} allows no text of 1 to {MAX_LENGTH} characters")
                continue
            if fold:  # a folded character is written as its fold everywhere
                seqs = _dedupe(tuple(frozenset(fold.get(c, c) for c in s) for s in seq) for seq in seqs)
            patterns.append(pattern)
            sequences.extend(seqs)
        if len(self.problems) > before:
            return None
        region = Region(rid, name or rid, group, patterns, _dedupe(sequences), country=values["country"],
                        aspect=values["aspect"], fold=fold,
                        confusions=values["confusions"], source=f"{self.path}:{knode.start_mark.line + 1}")
        for key, must in (("examples", True), ("invalid", False)):
            if key not in fields:
                continue
            for enode, example in self.strings(fields[key][1], key):
                if region.matches(example) != must:
                    verb = "does not match" if must else "matches"
                    self.add(enode, f"{key[:-1] if must else 'invalid example'} {example!r} of {rid} {verb} "
                                    f"its patterns {', '.join(patterns)}")
                (region.examples if must else region.invalid).append(example)
        return region


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))


def load_regions(extra_dirs: Iterable[str | os.PathLike[str]] | None = None, *, builtin: bool = True,
                 env: Mapping[str, str] | None = None) -> RegionSet:
    """The built-in regions, then every ``*.yaml`` of ``extra_dirs`` and of ``$ALPR_REGIONS_DIR``
    (``os.pathsep``-separated); a later file's region replaces a built-in one of the same id.

    Raises :class:`RegionError` listing every problem (``FILE:LINE: message``).
    """
    env = os.environ if env is None else env
    folders: list[Path] = [BUILTIN_DIR] if builtin else []
    for d in list(extra_dirs or []) + [p for p in env.get(ENV_VAR, "").split(os.pathsep) if p]:
        folders.append(Path(d).expanduser())
    # the same files, unchanged, load once per process (validation and setup both ask)
    stamp: list[Any] = []
    for folder in folders:
        files = _yaml_files(folder) if folder.is_dir() else []
        stamp.append((str(folder), tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)))
    key = tuple(stamp)
    if key in _CACHE:
        return _CACHE[key]
    result = _load(folders)
    _CACHE.clear()
    _CACHE[key] = result
    return result


_CACHE: dict[tuple[Any, ...], RegionSet] = {}


def _load(folders: list[Path]) -> RegionSet:
    problems: list[str] = []
    regions: dict[str, Region] = {}
    seen_in: dict[str, tuple[Path, str]] = {}
    for folder in folders:
        if not folder.is_dir():
            problems.append(f"{folder}:1: not a folder of region files (set by the regions_dir param or ${ENV_VAR})")
            continue
        for path in _yaml_files(folder):
            loader = _FileLoader(path)
            found = loader.load()
            problems.extend(loader.problems)
            for r in found:
                prev = seen_in.get(r.id)
                if prev is not None and prev[0] == folder:
                    problems.append(f"{r.source}: region {r.id!r} is already defined at {prev[1]}")
                    continue
                seen_in[r.id] = (folder, r.source)
                regions[r.id] = r
    if problems:
        raise RegionError(problems)
    return RegionSet(regions.values())
