"""Alert engine and the ``alert.rules`` stage, against a real HTTP receiver (http.server in a
thread) and a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from alpr_topo.backend import alerts
from alpr_topo.core.envelope import Envelope
from alpr_topo.core.testing import StageHarness
from alpr_topo.stages import events

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd is in the test extra")


# -- real receivers -------------------------------------------------------------------------------


class Receiver:
    """An HTTP server collecting POSTed JSON bodies; ``fail_first`` answers 500 that many times."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.fail_first = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if owner.fail_first > 0:
                    owner.fail_first -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                owner.bodies.append(json.loads(data))
                owner.paths.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.bodies

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with socket.socket() as probe:  # aiosmtpd's readiness check needs the real port up front
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = aiosmtpd_controller.Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def event(plate: str, camera: str = "gate-1", site: str = "north", hour: int = 12, minute: int = 0) -> dict[str, Any]:
    when = datetime(2024, 5, 1, hour, minute, tzinfo=timezone.utc).timestamp()
    return events.make_event(camera_id=camera, captured_at=when, track_id=1, site=site, host="h",
                             plate={"text": plate, "normalized_text": plate, "confidence": 0.9})


def engine(text: str) -> alerts.AlertEngine:
    return alerts.AlertEngine(alerts.parse_rules(text, "rules.yaml"))


def fired(eng: alerts.AlertEngine, ev: dict[str, Any]) -> list[str]:
    return [a.rule for a in eng.evaluate(ev) if not a.suppressed]


# -- matchers and filters (pure logic) ------------------------------------------------------------


MATCHERS = """
actions: {}
watchlists:
  stolen: [7ABC123, "KX52-LMN"]
rules:
  - {name: exact, match: exact, values: [7abc-123]}
  - {name: prefix, match: prefix, values: ["KX"]}
  - {name: suffix, match: suffix, values: ["999"]}
  - {name: contains, match: contains, values: ["DIPL"]}
  - {name: regex, match: regex, values: ['^[0-9]{3}[A-Z]{3}$']}
  - {name: fuzzy, match: fuzzy, watchlist: stolen, threshold: 80}
"""


@pytest.mark.parametrize("plate, expected", [
    ("7ABC123", ["exact", "fuzzy"]),
    ("7ABC128", ["fuzzy"]),               # one character off: ratio 85.7
    ("KX52LMN", ["prefix", "fuzzy"]),
    ("KA52LMN", ["fuzzy"]),
    ("AB999", ["suffix"]),
    ("XDIPLX", ["contains"]),
    ("123XYZ", ["regex"]),
    ("ZZZZ", []),
])
def test_each_matcher(plate: str, expected: list[str]) -> None:
    assert fired(engine(MATCHERS), event(plate)) == expected


def test_fuzzy_threshold_and_score() -> None:
    eng = engine("rules:\n  - {name: f, match: fuzzy, values: [7ABC123], threshold: 95}\n")
    assert fired(eng, event("7ABC128")) == []
    [alert] = eng.evaluate(event("7ABC123"))
    assert alert.matched == "7ABC123" and alert.score == 100.0


def test_camera_site_and_hour_filters() -> None:
    eng = engine("""
defaults: {rate_limit_s: 0}
rules:
  - {name: cam, match: exact, values: [AAA111], cameras: [gate-1]}
  - {name: site, match: exact, values: [AAA111], sites: [south]}
  - {name: night, match: exact, values: [AAA111], hours: ["22:00-06:00"]}
  - {name: lunch, match: exact, values: [AAA111], hours: ["12:00-13:00", "18:00-18:30"]}
""")
    assert fired(eng, event("AAA111", camera="gate-1", site="north", hour=12)) == ["cam", "lunch"]
    assert fired(eng, event("AAA111", camera="gate-2", site="south", hour=23)) == ["site", "night"]
    assert fired(eng, event("AAA111", camera="gate-2", site="north", hour=3)) == ["night"]
    assert fired(eng, event("AAA111", camera="gate-2", site="north", hour=6)) == []
    assert fired(eng, event("AAA111", camera="gate-2", site="north", hour=18, minute=29)) == ["lunch"]


def test_time_zone_of_hours() -> None:
    eng = engine("timezone: America/New_York\ndefaults: {rate_limit_s: 0}\nrules:\n  - {name: morning, match: exact, values: [A1], hours: ['08:00-09:00']}\n")
    assert fired(eng, event("A1", hour=12, minute=30)) == ["morning"]  # 08:30 EDT
    assert fired(eng, event("A1", hour=8, minute=30)) == []


def test_rate_limit_per_rule_and_plate() -> None:
    now = [1000.0]
    eng = alerts.AlertEngine(alerts.parse_rules("""
rules:
  - {name: a, match: prefix, values: [X], rate_limit_s: 60}
  - {name: b, match: prefix, values: [X], rate_limit_s: 0}
"""), clock=lambda: now[0])
    assert fired(eng, event("X1")) == ["a", "b"]
    assert [(a.rule, a.suppressed) for a in eng.evaluate(event("X1"))] == [("a", True), ("b", False)]
    assert fired(eng, event("X2")) == ["a", "b"]  # another plate: its own limit
    now[0] += 61
    assert fired(eng, event("X1")) == ["a", "b"]


BAD_FILES = [
    ("rules:\n  - name: x\n    match: exakt\n    values: [A]\n", 3, "match 'exakt' is not one of"),
    ("rules:\n  - name: x\n    match: exact\n    values: [A]\n    actions: [nope]\n", 5, "unknown action 'nope'"),
    ("rules:\n  - name: x\n    match: regex\n    values: ['([A-Z']\n", 4, "bad regular expression"),
    ("rules:\n  - name: x\n    match: fuzzy\n    watchlist: missing\n", 4, "unknown watchlist 'missing'"),
    ("rules:\n  - name: x\n    match: exact\n    values: [A]\n    hours: ['25-7']\n", 5, "not HH:MM-HH:MM"),
    ("actions:\n  a: {type: webhook, url: ftp://x}\nrules: []\n", 2, "url must be an http(s) URL"),
    ("actions:\n  a:\n    type: pager\n", 3, "type 'pager' is not one of"),
    ("rules:\n  - name: x\n    match: exact\n    valuez: [A]\n", 4, "unknown key 'valuez'"),
    ("rules:\n  - name: x\n    match: exact\n  values: [A]\n", 4, "not valid YAML"),
]


@pytest.mark.parametrize("text, line, message", BAD_FILES)
def test_bad_file_says_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(alerts.RulesError) as info:
        alerts.load_rules(path)
    assert any(p.startswith(f"{path}:{line}: ") and message in p for p in info.value.problems), info.value.problems


def test_watchlist_file(tmp_path: Path) -> None:
    (tmp_path / "stolen.txt").write_text("# stolen\n7abc123\n\nKX52 LMN  # plate with a space\n")
    path = tmp_path / "rules.yaml"
    path.write_text("watchlists:\n  stolen: {file: stolen.txt}\nrules:\n  - {name: s, match: exact, watchlist: stolen}\n")
    eng = alerts.AlertEngine(alerts.load_rules(path))
    assert fired(eng, event("KX52LMN")) == ["s"] and fired(eng, event("7ABC123")) == ["s"]


# -- the stage, with real receivers ---------------------------------------------------------------


def env_of(ev: dict[str, Any]) -> Envelope:
    return Envelope(camera_id=ev["camera_id"], frame_id=0, meta={"event": ev})


def rules_text(receiver_url: str, smtp_port: int, rate_limit_s: float = 3600, plates: str = "[7ABC123]") -> str:
    return f"""
actions:
  hook: {{type: webhook, url: "{receiver_url}/hook", headers: {{X-Token: secret}}}}
  chat: {{type: slack, url: "{receiver_url}/slack"}}
  mail: {{type: email, host: 127.0.0.1, port: {smtp_port}, from: alpr@example.org, to: [ops@example.org],
          subject: "Plate {{plate}} on {{camera}}"}}
rules:
  - name: stolen
    match: fuzzy
    values: {plates}
    threshold: 80
    actions: [hook, chat, mail]
    rate_limit_s: {rate_limit_s}
    message: "{{rule}}: {{plate}} at {{camera}}"
"""


def wait_for(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_stage_fires_webhook_slack_and_email(tmp_path: Path, receiver: Receiver, smtp: tuple[Mailbox, int]) -> None:
    box, port = smtp
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text(receiver.url, port))
    with StageHarness("alert.rules", {"rules": str(path), "retry_backoff_s": 0.05}) as h:
        ev = event("7ABC128")
        assert h.process(env_of(ev)) == []
        h.process(env_of(event("ZZZ999")))  # no match
        h.process(Envelope(camera_id="gate-1", frame_id=1, meta={"event_update": {"event_id": "x"}}))
        assert h.stage.dispatcher.wait_idle(10)
        h.stage.tick()
        bodies = receiver.wait(2)
        by_path = dict(zip(receiver.paths, bodies))
        assert by_path["/hook"]["rule"] == "stolen" and by_path["/hook"]["plate"] == "7ABC128"
        assert by_path["/hook"]["matched"] == "7ABC123" and by_path["/hook"]["event"]["event_id"] == ev["event_id"]
        assert by_path["/hook"]["event"]["captured_at"] == "2024-05-01T12:00:00.000Z"
        assert by_path["/slack"] == {"text": "stolen: 7ABC128 at gate-1"}
        assert wait_for(lambda: len(box.messages) == 1)
        mail = box.messages[0]
        assert mail.mail_from == "alpr@example.org" and mail.rcpt_tos == ["ops@example.org"]
        content = mail.content.decode()
        assert "Subject: Plate 7ABC128 on gate-1" in content and ev["event_id"] in content
        assert h.counters["alerts_fired"] == 1 and h.counters["actions_sent"] == 3
        assert h.counters["ignored"] == 1
        assert "action_errors" not in h.counters


def test_stage_rate_limit(tmp_path: Path, receiver: Receiver, smtp: tuple[Mailbox, int]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text(receiver.url, smtp[1], plates="[7ABC123, KX52LMN]"))
    with StageHarness("alert.rules", {"rules": str(path)}) as h:
        for plate in ("7ABC123", "7ABC123", "7ABC123", "KX52LMN"):
            h.process(env_of(event(plate)))
        assert h.stage.dispatcher.wait_idle(10)
        h.stage.tick()
        assert h.counters["alerts_fired"] == 2 and h.counters["alerts_suppressed"] == 2
        assert sorted(b["text"] for b in receiver.wait(4) if "text" in b) == ["stolen: 7ABC123 at gate-1", "stolen: KX52LMN at gate-1"]


def test_stage_retries_and_counts_errors(tmp_path: Path, smtp: tuple[Mailbox, int]) -> None:
    receiver = Receiver()
    receiver.fail_first = 2  # the webhook succeeds on its third attempt
    path = tmp_path / "rules.yaml"
    path.write_text(f"""
actions:
  hook: {{type: webhook, url: "{receiver.url}/hook"}}
  dead: {{type: slack, url: "http://127.0.0.1:9/nothing", timeout_s: 1}}
rules:
  - {{name: r, match: exact, values: [A1], actions: [hook, dead], rate_limit_s: 0}}
""")
    try:
        with StageHarness("alert.rules", {"rules": str(path), "retries": 2, "retry_backoff_s": 0.05}) as h:
            t0 = time.monotonic()
            h.process(env_of(event("A1")))
            assert time.monotonic() - t0 < 0.5  # actions never block the stage
            assert h.stage.dispatcher.wait_idle(20)
            h.stage.tick()
            assert receiver.wait(1) and receiver.paths == ["/hook"]
            assert h.counters["actions_sent"] == 1 and h.counters["action_errors"] == 1
            assert h.counters["action_retries"] == 4  # 2 for the hook, 2 for the dead one
    finally:
        receiver.close()


def test_queue_full_drops_and_counts() -> None:
    gate = threading.Event()
    dispatcher = alerts.ActionDispatcher(queue_size=1, runner=lambda a, al, t: gate.wait(5))
    action = alerts.Action("a", "webhook", {"url": "http://x"})
    alert = alerts.Alert("r", "P", "P", 100.0, {}, ["a"], "m")
    results = [dispatcher.submit(action, alert) for _ in range(5)]
    gate.set()
    dispatcher.close()
    assert results[0] and not results[-1]
    counts = dispatcher.take_counts()
    assert counts["actions_dropped"] >= 3 and counts["action_errors"] == counts["actions_dropped"]


def test_stage_reloads_rules_and_keeps_old_ones_on_error(tmp_path: Path, receiver: Receiver,
                                                         smtp: tuple[Mailbox, int], caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(f'actions:\n  chat: {{type: slack, url: "{receiver.url}/s"}}\nrules:\n'
                    "  - {name: one, match: exact, values: [AAA111], actions: [chat], rate_limit_s: 0}\n")
    with StageHarness("alert.rules", {"rules": str(path), "reload_check_s": 0.01}) as h:
        h.process(env_of(event("AAA111")))
        h.process(env_of(event("BBB222")))
        assert h.counters["alerts_fired"] == 1
        # a valid change: a new rule for BBB222
        path.write_text(f'actions:\n  chat: {{type: slack, url: "{receiver.url}/s"}}\nrules:\n'
                        "  - {name: two, match: prefix, values: [BBB], actions: [chat], rate_limit_s: 0}\n")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
        time.sleep(0.02)
        h.stage.tick()
        assert h.counters["rules_reloaded"] == 1
        h.process(env_of(event("AAA111")))
        h.process(env_of(event("BBB222")))
        assert h.counters["alerts_fired"] == 2
        # a broken change: logged with FILE:LINE, rules "two" stay
        path.write_text("rules:\n  - name: three\n    match: nonsense\n")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000_000))
        time.sleep(0.02)
        with caplog.at_level("ERROR"):
            h.stage.tick()
        assert h.counters["rule_errors"] == 1
        assert f"{path}:3: rule 'three': match 'nonsense'" in caplog.text
        h.process(env_of(event("BBB333")))
        assert h.counters["alerts_fired"] == 3
        assert h.stage.dispatcher.wait_idle(10)
        assert [b["text"].split(":")[0] for b in receiver.wait(3)] == ["ALPR alert one", "ALPR alert two", "ALPR alert two"]


def test_stage_refuses_bad_file_at_setup(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: x\n    match: exact\n")
    with pytest.raises(alerts.RulesError, match=rf"{path}:2: rule 'x': needs values"):
        with StageHarness("alert.rules", {"rules": str(path)}):
            pass


def test_stage_forwards_with_alert_names(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: r, match: exact, values: [A1]}\n")
    with StageHarness("alert.rules", {"rules": str(path), "forward": True}) as h:
        [out] = h.process(env_of(event("A1")))
        assert out.meta["alerts"] == ["r"]
        [out] = h.process(env_of(event("B2")))
        assert "alerts" not in out.meta


def test_stage_type_is_registered() -> None:
    from alpr_topo.core.plugins import stage_types

    assert "alert.rules" in stage_types()
