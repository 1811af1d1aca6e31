"""Alert rules for plate events: load a YAML rules file, match events, rate-limit, run actions.

Why this shape: matching must be cheap and synchronous (it runs for every event in the
``alert.rules`` stage), while actions talk to the network (webhooks, Slack, SMTP) and may hang
or fail for minutes. So :class:`AlertEngine` is pure logic (event in, alerts out, with the
rate-limit state), and :class:`ActionDispatcher` runs actions in one worker thread behind a
bounded queue with retries; the stage never waits for a server.

A rules file (docs/alerts.md has the full reference)::

    actions:
      ops:   {type: webhook, url: "http://127.0.0.1:9000/hook"}
      chat:  {type: slack, url: "https://hooks.slack.com/services/..."}
      mail:  {type: email, host: 127.0.0.1, port: 25, from: alpr@example.org, to: [ops@example.org]}
    watchlists:
      stolen: [7ABC123, KX52LMN]
    rules:
      - name: stolen-cars
        match: fuzzy              # exact | prefix | suffix | contains | regex | fuzzy
        watchlist: stolen         # or values: [...]
        threshold: 85             # fuzzy only: rapidfuzz ratio 0..100
        cameras: [gate-1]         # optional filters
        sites: [north]
        hours: ["22:00-06:00"]    # time-of-day windows (capture time, in `timezone`)
        actions: [ops, chat, mail]
        rate_limit_s: 300         # per rule and plate

Every mistake in the file is reported as ``FILE:LINE: what is wrong`` (:class:`RulesError`),
so a reload with a typo can say exactly where it is while the old rules keep working.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import smtplib
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

__all__ = ["RulesError", "Action", "Rule", "RuleSet", "Alert", "AlertEngine", "ActionDispatcher",
           "load_rules", "parse_rules", "normalize_plate", "run_action", "MATCH_KINDS", "ACTION_TYPES"]

log = logging.getLogger(__name__)

MATCH_KINDS = ("exact", "prefix", "suffix", "contains", "regex", "fuzzy")
ACTION_TYPES = ("webhook", "slack", "email")
_NOT_ALNUM = re.compile(r"[^0-9A-Z]")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class RulesError(ValueError):
    """A rules file that cannot be used; ``problems`` holds every ``FILE:LINE: ...`` line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def normalize_plate(text: str) -> str:
    """Upper-case letters and digits only, the form of ``plate.normalized_text``: so a rule
    written as ``7abc-123`` matches the read ``7ABC123``."""
    return _NOT_ALNUM.sub("", str(text).upper())


# -- YAML with line numbers -----------------------------------------------------------------------


class _LineDict(dict):
    """A mapping that remembers the line of itself and of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[str(key)] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line(obj: Any, key: str | None = None, default: int = 1) -> int:
    if isinstance(obj, _LineDict):
        return obj.key_lines.get(key, obj.line) if key is not None else obj.line
    return default


# -- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """A named action of the file: ``webhook`` (JSON POST of the alert), ``slack``
    (``{"text": ...}`` POST) or ``email`` (SMTP)."""

    name: str
    type: str
    config: Mapping[str, Any]


@dataclass
class Rule:
    name: str
    match: str
    values: list[str]
    actions: list[str]
    threshold: float = 85.0
    cameras: frozenset[str] = frozenset()
    sites: frozenset[str] = frozenset()
    hours: list[tuple[int, int]] = field(default_factory=list)  # (start, end) minutes of the day
    rate_limit_s: float = 300.0
    message: str | None = None
    line: int = 0
    pattern: re.Pattern[str] | None = None

    def match_plate(self, plate: str) -> tuple[str, float] | None:
        """``(matched watchlist value or pattern, score 0..100)`` when ``plate`` (normalized)
        matches, else None."""
        if not plate:
            return None
        if self.match == "regex":
            assert self.pattern is not None
            return (self.pattern.pattern, 100.0) if self.pattern.search(plate) else None
        if self.match == "fuzzy":
            from rapidfuzz import fuzz, process

            best = process.extractOne(plate, self.values, scorer=fuzz.ratio, score_cutoff=self.threshold)
            return (best[0], float(best[1])) if best else None
        test: Callable[[str], bool] = {
            "exact": lambda v: plate == v,
            "prefix": plate.startswith,
            "suffix": plate.endswith,
            "contains": lambda v: v in plate,
        }[self.match]
        for value in self.values:
            if test(value):
                return value, 100.0
        return None

    def in_hours(self, minute_of_day: int) -> bool:
        """Inside any window; a window whose end is before its start wraps past midnight."""
        if not self.hours:
            return True
        for start, end in self.hours:
            if start <= end and start <= minute_of_day < end:
                return True
            if start > end and (minute_of_day >= start or minute_of_day < end):
                return True
        return False


@dataclass
class RuleSet:
    rules: list[Rule]
    actions: dict[str, Action]
    tz: Any = timezone.utc
    path: str = "<string>"


@dataclass
class Alert:
    """One rule matched one event; ``suppressed`` when the rate limit held it back."""

    rule: str
    plate: str
    matched: str
    score: float
    event: Mapping[str, Any]
    actions: list[str]
    message: str
    suppressed: bool = False

    def payload(self) -> dict[str, Any]:
        """The JSON body of a generic webhook (and the attachment of an email)."""
        try:
            from ..stages.events import to_json_obj

            event = to_json_obj(self.event)
        except Exception:  # an event that does not follow the schema is still worth alerting on
            event = dict(self.event)
        return {"rule": self.rule, "plate": self.plate, "matched": self.matched,
                "score": round(self.score, 1), "message": self.message, "event": event}


# -- parsing --------------------------------------------------------------------------------------


def load_rules(path: str | Path) -> RuleSet:
    """Read and check a rules file; raises :class:`RulesError` (``FILE:LINE: ...``)."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError([f"{path}: cannot read the rules file: {exc.strerror or exc}"]) from exc
    return parse_rules(text, path)


def parse_rules(text: str, path: str = "<string>") -> RuleSet:
    """Check a rules document and build the :class:`RuleSet`; every problem is collected."""
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise RulesError([f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"]) from exc
    problems: list[str] = []

    def bad(obj: Any, key: str | None, message: str) -> None:
        problems.append(f"{path}:{_line(obj, key)}: {message}")

    if doc is None:
        doc = _LineDict()
    if not isinstance(doc, dict):
        raise RulesError([f"{path}:1: expected a mapping with 'rules' (and 'actions', 'watchlists')"])
    for key in doc:
        if key not in ("rules", "actions", "watchlists", "defaults", "timezone"):
            bad(doc, key, f"unknown top-level key {key!r}; expected rules, actions, watchlists, defaults, timezone")

    tz: Any = timezone.utc
    if "timezone" in doc:
        try:
            tz = ZoneInfo(str(doc["timezone"]))
        except (ZoneInfoNotFoundError, ValueError):
            bad(doc, "timezone", f"unknown time zone {doc['timezone']!r} (expected e.g. UTC, Europe/Berlin)")

    actions = _parse_actions(doc.get("actions") or _LineDict(), bad)
    watchlists = _parse_watchlists(doc.get("watchlists") or _LineDict(), bad, path)
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        bad(doc, "defaults", "defaults: expected a mapping (e.g. {rate_limit_s: 300, actions: [ops]})")
        defaults = {}

    rules: list[Rule] = []
    raw_rules = doc.get("rules")
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, list):
        bad(doc, "rules", "rules: expected a list of rules")
        raw_rules = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        rule = _parse_rule(raw, index, defaults, actions, watchlists, bad, doc)
        if rule is None:
            continue
        if rule.name in seen:
            bad(raw, "name", f"rule name {rule.name!r} is used twice (rate limits are kept per name)")
        seen.add(rule.name)
        rules.append(rule)
    if problems:
        raise RulesError(problems)
    return RuleSet(rules=rules, actions=actions, tz=tz, path=path)


def _parse_actions(raw: Any, bad: Callable[[Any, str | None, str], None]) -> dict[str, Action]:
    actions: dict[str, Action] = {}
    if not isinstance(raw, dict):
        bad(raw, None, "actions: expected a mapping of name -> {type: webhook|slack|email, ...}")
        return actions
    for name, conf in raw.items():
        if not isinstance(conf, dict):
            bad(raw, name, f"action {name!r}: expected a mapping with 'type'")
            continue
        kind = conf.get("type")
        if kind not in ACTION_TYPES:
            bad(conf, "type" if "type" in conf else None,
                f"action {name!r}: type {kind!r} is not one of {', '.join(ACTION_TYPES)}")
            continue
        if kind in ("webhook", "slack"):
            url = conf.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                bad(conf, "url" if "url" in conf else None, f"action {name!r}: url must be an http(s) URL, got {url!r}")
                continue
            allowed = {"type", "url", "headers", "timeout_s"}
        else:
            missing = [k for k in ("host", "from", "to") if k not in conf]
            if missing:
                bad(conf, None, f"action {name!r}: email needs {', '.join(missing)}")
                continue
            allowed = {"type", "host", "port", "from", "to", "username", "password", "starttls", "ssl",
                       "subject", "timeout_s"}
        for key in conf:
            if key not in allowed:
                bad(conf, key, f"action {name!r}: unknown key {key!r}; expected one of {', '.join(sorted(allowed))}")
        actions[str(name)] = Action(name=str(name), type=kind, config=dict(conf))
    return actions


def _parse_watchlists(raw: Any, bad: Callable[[Any, str | None, str], None], path: str) -> dict[str, list[str]]:
    """A watchlist is a list of plates or ``{file: plates.txt}`` (one plate a line, ``#``
    comments; relative to the rules file)."""
    lists: dict[str, list[str]] = {}
    if not isinstance(raw, dict):
        bad(raw, None, "watchlists: expected a mapping of name -> list of plates")
        return lists
    for name, value in raw.items():
        if isinstance(value, dict) and "file" in value:
            target = Path(path).parent / str(value["file"])
            try:
                lines = target.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                bad(value, "file", f"watchlist {name!r}: cannot read {target}: {exc.strerror or exc}")
                continue
            plates = [normalize_plate(line.split("#", 1)[0]) for line in lines]
            lists[str(name)] = [p for p in plates if p]
        elif isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
            lists[str(name)] = [p for p in (normalize_plate(str(v)) for v in value) if p]
        else:
            bad(raw, name, f"watchlist {name!r}: expected a list of plates or {{file: PATH}}")
    return lists


def _str_list(value: Any) -> list[str] | None:
    if isinstance(value, (str, int)):
        return [str(value)]
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return [str(v) for v in value]
    return None


def _parse_rule(raw: Any, index: int, defaults: Mapping[str, Any], actions: dict[str, Action],
                watchlists: dict[str, list[str]], bad: Callable[[Any, str | None, str], None],
                doc: Any) -> Rule | None:
    if not isinstance(raw, dict):
        bad(doc, "rules", f"rule #{index + 1}: expected a mapping with name, match, values or watchlist, actions")
        return None
    allowed = {"name", "match", "values", "watchlist", "threshold", "cameras", "sites", "hours",
               "actions", "rate_limit_s", "message", "enabled"}
    ok = True
    for key in raw:
        if key not in allowed:
            bad(raw, key, f"rule #{index + 1}: unknown key {key!r}; expected one of {', '.join(sorted(allowed))}")
            ok = False
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        bad(raw, "name" if "name" in raw else None, f"rule #{index + 1}: needs a name")
        return None
    match = raw.get("match")
    if match not in MATCH_KINDS:
        bad(raw, "match" if "match" in raw else None,
            f"rule {name!r}: match {match!r} is not one of {', '.join(MATCH_KINDS)}")
        return None
    values: list[str] = []
    if "values" in raw:
        got = _str_list(raw["values"])
        if got is None:
            bad(raw, "values", f"rule {name!r}: values must be a plate or a list of plates")
            ok = False
        else:
            values.extend(got if match == "regex" else [normalize_plate(v) for v in got])
    if "watchlist" in raw:
        wl = raw["watchlist"]
        if wl not in watchlists:
            known = ", ".join(watchlists) or "none defined"
            bad(raw, "watchlist", f"rule {name!r}: unknown watchlist {wl!r} (known: {known})")
            ok = False
        else:
            values.extend(watchlists[wl])
    if not values and ok and "values" not in raw and "watchlist" not in raw:
        bad(raw, None, f"rule {name!r}: needs values: [...] or watchlist: NAME")
        ok = False
    pattern = None
    if match == "regex" and values:
        if len(values) != 1:
            bad(raw, "values", f"rule {name!r}: regex takes one pattern")
            ok = False
        else:
            try:
                pattern = re.compile(values[0])
            except re.error as exc:
                bad(raw, "values", f"rule {name!r}: bad regular expression {values[0]!r}: {exc}")
                ok = False
    threshold = raw.get("threshold", defaults.get("threshold", 85))
    if not isinstance(threshold, (int, float)) or not 0 < threshold <= 100:
        bad(raw, "threshold", f"rule {name!r}: threshold must be a number in (0, 100], got {threshold!r}")
        ok = False
    filters: dict[str, frozenset[str]] = {}
    for key in ("cameras", "sites"):
        got = _str_list(raw.get(key, []))
        if got is None:
            bad(raw, key, f"rule {name!r}: {key} must be a name or a list of names")
            ok = False
            got = []
        filters[key] = frozenset(got)
    hours: list[tuple[int, int]] = []
    for window in _str_list(raw.get("hours", [])) or []:
        m = _HOURS.match(window)
        if not m or int(m[1]) > 24 or int(m[3]) > 24 or int(m[2]) > 59 or int(m[4]) > 59:
            bad(raw, "hours", f"rule {name!r}: time window {window!r} is not HH:MM-HH:MM")
            ok = False
            continue
        hours.append((int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])))
    rule_actions = _str_list(raw.get("actions", defaults.get("actions", [])))
    if rule_actions is None:
        bad(raw, "actions", f"rule {name!r}: actions must be a list of action names")
        ok = False
        rule_actions = []
    for action in rule_actions:
        if action not in actions:
            known = ", ".join(actions) or "none defined"
            bad(raw, "actions" if "actions" in raw else None, f"rule {name!r}: unknown action {action!r} (known: {known})")
            ok = False
    rate = raw.get("rate_limit_s", defaults.get("rate_limit_s", 300))
    if not isinstance(rate, (int, float)) or rate < 0:
        bad(raw, "rate_limit_s", f"rule {name!r}: rate_limit_s must be a number >= 0, got {rate!r}")
        ok = False
    message = raw.get("message")
    if message is not None:
        try:
            str(message).format(**_message_fields("R", "P", "M", 1.0, {}))
        except (KeyError, IndexError, ValueError) as exc:
            bad(raw, "message", f"rule {name!r}: message template: unknown or bad field {exc}; "
                "use {rule} {plate} {matched} {score} {camera} {site} {time} {event_id}")
            ok = False
    if raw.get("enabled", True) is False or not ok:
        return None
    return Rule(name=name, match=match, values=values, actions=rule_actions, threshold=float(threshold),
                cameras=filters["cameras"], sites=filters["sites"], hours=hours, rate_limit_s=float(rate),
                message=None if message is None else str(message), line=_line(raw), pattern=pattern)


def _message_fields(rule: str, plate: str, matched: str, score: float, event: Mapping[str, Any]) -> dict[str, Any]:
    node = event.get("node") if isinstance(event.get("node"), Mapping) else {}
    captured = event.get("captured_at")
    when = (datetime.fromtimestamp(captured / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            if isinstance(captured, (int, float)) else "?")
    return {"rule": rule, "plate": plate, "matched": matched, "score": round(score, 1),
            "camera": event.get("camera_id", "?"), "site": node.get("site", "?"), "time": when,
            "event_id": event.get("event_id", "?")}


# -- the engine -----------------------------------------------------------------------------------


class AlertEngine:
    """Matches events against a :class:`RuleSet` and applies the rate limit.

    The rate limit is kept per (rule name, plate) and survives :meth:`replace` (a reload), so
    editing the file does not re-fire every alert. ``clock`` is monotonic seconds (tests pass
    their own).
    """

    def __init__(self, ruleset: RuleSet, clock: Callable[[], float] = time.monotonic) -> None:
        self.ruleset = ruleset
        self.clock = clock
        self._last_fired: dict[tuple[str, str], float] = {}

    def replace(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        names = {r.name for r in ruleset.rules}
        self._last_fired = {k: v for k, v in self._last_fired.items() if k[0] in names}

    def evaluate(self, event: Mapping[str, Any]) -> list[Alert]:
        """Every rule that matches ``event``; rate-limited ones come back with ``suppressed``."""
        plate_obj = event.get("plate") if isinstance(event.get("plate"), Mapping) else {}
        plate = normalize_plate(plate_obj.get("normalized_text") or plate_obj.get("text") or "")
        camera = str(event.get("camera_id", ""))
        node = event.get("node") if isinstance(event.get("node"), Mapping) else {}
        site = str(node.get("site", ""))
        minute = self._minute_of_day(event.get("captured_at"))
        now = self.clock()
        alerts: list[Alert] = []
        for rule in self.ruleset.rules:
            if rule.cameras and camera not in rule.cameras:
                continue
            if rule.sites and site not in rule.sites:
                continue
            if rule.hours and (minute is None or not rule.in_hours(minute)):
                continue
            hit = rule.match_plate(plate)
            if hit is None:
                continue
            key = (rule.name, plate)
            last = self._last_fired.get(key)
            suppressed = last is not None and now - last < rule.rate_limit_s
            if not suppressed:
                self._last_fired[key] = now
            fields = _message_fields(rule.name, plate, hit[0], hit[1], event)
            template = rule.message or "ALPR alert {rule}: plate {plate} (matched {matched}, score {score}) at camera {camera}, site {site}, {time}"
            alerts.append(Alert(rule=rule.name, plate=plate, matched=hit[0], score=hit[1], event=event,
                                actions=list(rule.actions), message=template.format(**fields),
                                suppressed=suppressed))
        if len(self._last_fired) > 100_000:  # forget entries whose limit has long passed
            longest = max((r.rate_limit_s for r in self.ruleset.rules), default=0.0)
            self._last_fired = {k: v for k, v in self._last_fired.items() if now - v < longest}
        return alerts

    def _minute_of_day(self, captured_at: Any) -> int | None:
        if not isinstance(captured_at, (int, float)):
            return None
        moment = datetime.fromtimestamp(captured_at / 1000, timezone.utc).astimezone(self.ruleset.tz)
        return moment.hour * 60 + moment.minute


# -- actions --------------------------------------------------------------------------------------


def _post_json(url: str, body: Mapping[str, Any], headers: Mapping[str, str], timeout_s: float) -> None:
    data = json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "alpr-topo-alerts",
                                          **{str(k): str(v) for k, v in headers.items()}})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310  (URL from the operator's file)
        if resp.status >= 300:
            raise OSError(f"HTTP {resp.status} from {url}")


def run_action(action: Action, alert: Alert, default_timeout_s: float = 10.0) -> None:
    """Perform one action for one alert, raising on failure (the dispatcher retries)."""
    c = action.config
    timeout = float(c.get("timeout_s", default_timeout_s))
    if action.type == "webhook":
        _post_json(c["url"], alert.payload(), c.get("headers") or {}, timeout)
    elif action.type == "slack":
        _post_json(c["url"], {"text": alert.message}, c.get("headers") or {}, timeout)
    elif action.type == "email":
        msg = EmailMessage()
        msg["From"] = str(c["from"])
        to = c["to"] if isinstance(c["to"], list) else [c["to"]]
        msg["To"] = ", ".join(str(t) for t in to)
        subject = str(c.get("subject", "ALPR alert {rule}: {plate}"))
        msg["Subject"] = subject.format(**_message_fields(alert.rule, alert.plate, alert.matched, alert.score, alert.event))
        msg.set_content(alert.message + "\n\n" + json.dumps(alert.payload(), indent=2, default=str))
        port = int(c.get("port", 465 if c.get("ssl") else 25))
        smtp_cls = smtplib.SMTP_SSL if c.get("ssl") else smtplib.SMTP
        with smtp_cls(str(c["host"]), port, timeout=timeout) as smtp:
            if c.get("starttls"):
                smtp.starttls()
            if c.get("username"):
                smtp.login(str(c["username"]), str(c.get("password", "")))
            smtp.send_message(msg)
    else:  # parse_rules rejects other types
        raise ValueError(f"unknown action type {action.type!r}")


class ActionDispatcher:
    """Runs actions in one background thread: ``submit`` never blocks.

    A full queue (a receiver down for long) drops the new job and counts it as an
    ``action_errors`` (``actions_dropped`` too), because delaying the event stream would be
    worse. A failing action is retried ``retries`` times with doubling backoff from
    ``backoff_s``. Counters are kept here under a lock and read with :meth:`take_counts`, so
    the stage adds them to its (single-threaded) ``ctx.count`` from its own thread.
    """

    def __init__(self, *, queue_size: int = 1000, retries: int = 3, backoff_s: float = 1.0,
                 timeout_s: float = 10.0, runner: Callable[[Action, Alert, float], None] = run_action) -> None:
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.runner = runner
        self._queue: queue.Queue[tuple[Action, Alert] | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._counts: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-actions", daemon=True)
        self._thread.start()

    def submit(self, action: Action, alert: Alert) -> bool:
        try:
            self._queue.put_nowait((action, alert))
            return True
        except queue.Full:
            self._add("action_errors")
            self._add("actions_dropped")
            log.error("alert action queue full: dropped %s for rule %s, plate %s", action.name, alert.rule, alert.plate)
            return False

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """True once every submitted action finished (tests, drain)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._queue.unfinished_tasks

    def take_counts(self) -> dict[str, float]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish what is queued (up to ``timeout_s``), then stop the thread."""
        self.wait_idle(timeout_s)
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=1.0)

    def _add(self, name: str, value: float = 1.0) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0.0) + value

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._attempt(*job)
            finally:
                self._queue.task_done()

    def _attempt(self, action: Action, alert: Alert) -> None:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                self.runner(action, alert, self.timeout_s)
                self._add("actions_sent")
                return
            except Exception as exc:  # network, HTTP status, SMTP: all retried the same way
                if attempt == self.retries:
                    self._add("action_errors")
                    log.error("alert action %s (%s) for rule %s failed after %d attempts: %s",
                              action.name, action.type, alert.rule, attempt + 1, exc)
                    return
                self._add("action_retries")
                if self._stop.wait(delay):
                    self._add("action_errors")
                    return
                delay *= 2
