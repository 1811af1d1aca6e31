"""``alert.rules``: match plate events against a YAML rules file and fire webhook, Slack and
email actions (the engine is :mod:`alpr_topo.backend.alerts`; docs/alerts.md).

Takes envelopes carrying ``env.meta["event"]`` (as ``dedup.plates``, ``publish.local`` with
``forward`` and the Kafka source give them); updates and other envelopes are ignored. Actions
run in a worker thread behind a bounded queue, so a slow or dead receiver never holds up the
stream. The rules file is checked for changes in ``tick()`` (mtime and size); a new version
replaces the rules only when it is valid, otherwise the error (``FILE:LINE: ...``) is logged,
``rule_errors`` counted, and the old rules stay in force.

Counters: ``alerts_fired``, ``alerts_suppressed`` (rate limit), ``actions_sent``,
``action_retries``, ``action_errors``, ``actions_dropped``, ``rules_reloaded``, ``rule_errors``.
"""

from __future__ import annotations

import os
import time
from pydantic import Field

from ..backend import alerts
from ..core.envelope import Envelope
from ..core.stage import Stage, StageParams

__all__ = ["AlertRulesParams", "AlertRules", "STAGE_TYPES"]


class AlertRulesParams(StageParams):
    rules: str = Field(..., min_length=1, description="YAML rules file (docs/alerts.md); reloaded when it changes")
    reload_check_s: float = Field(2.0, ge=0, description="seconds between checks of the file's mtime; 0 = never reload")
    queue_size: int = Field(1000, ge=1, description="actions waiting for the worker thread before new ones are dropped (counted)")
    retries: int = Field(3, ge=0, description="retries of a failed action (webhook, Slack, email)")
    retry_backoff_s: float = Field(1.0, ge=0, description="wait before the first retry; doubles each time")
    timeout_s: float = Field(10.0, gt=0, description="network timeout of one action attempt (an action's own timeout_s wins)")
    forward: bool = Field(False, description="pass envelopes on to stages downstream, with env.meta['alerts'] listing the rules that fired")


class AlertRules(Stage):
    """Fires webhook / Slack / email alerts for plate events that match YAML rules."""

    type_name = "alert.rules"
    Params = AlertRulesParams
    params: AlertRulesParams

    def setup(self) -> None:
        # A bad file at start is an error of the topology: fail now, with FILE:LINE.
        self.engine = alerts.AlertEngine(alerts.load_rules(self.params.rules))
        self._stamp = self._file_stamp()
        self._next_check = time.monotonic() + self.params.reload_check_s
        p = self.params
        self.dispatcher = alerts.ActionDispatcher(queue_size=p.queue_size, retries=p.retries,
                                                  backoff_s=p.retry_backoff_s, timeout_s=p.timeout_s)
        self.log.info("%d alert rules from %s", len(self.engine.ruleset.rules), p.rules)

    def process(self, env: Envelope) -> Envelope | None:
        event = env.meta.get("event")
        if not isinstance(event, dict):
            self.ctx.count("ignored")
            return env if self.params.forward else None
        fired = []
        for alert in self.engine.evaluate(event):
            if alert.suppressed:
                self.ctx.count("alerts_suppressed")
                continue
            self.ctx.count("alerts_fired")
            fired.append(alert.rule)
            self.log.info(alert.message)
            for name in alert.actions:
                self.dispatcher.submit(self.engine.ruleset.actions[name], alert)
        self._collect()
        if self.params.forward:
            if fired:
                env.meta["alerts"] = fired
            return env
        return None

    def tick(self) -> None:
        self._collect()
        if self.params.reload_check_s and time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.params.reload_check_s
            self.reload_if_changed()
        return None

    def teardown(self) -> None:
        dispatcher = getattr(self, "dispatcher", None)
        if dispatcher is not None:
            dispatcher.close()
            self._collect()

    # -- helpers ---------------------------------------------------------------------------------

    def reload_if_changed(self) -> bool:
        """Load the rules file again when its mtime or size changed; True when replaced."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            ruleset = alerts.load_rules(self.params.rules)
        except alerts.RulesError as exc:
            self.ctx.count("rule_errors")
            self.log.error("rules file not reloaded, the previous rules stay in force:\n%s", exc)
            return False
        self.engine.replace(ruleset)
        self.ctx.count("rules_reloaded")
        self.log.info("reloaded %d alert rules from %s", len(ruleset.rules), self.params.rules)
        return True

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.params.rules)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _collect(self) -> None:
        """Counters of the worker thread, added from this (the stage's) thread."""
        for name, value in self.dispatcher.take_counts().items():
            self.ctx.count(name, value)


STAGE_TYPES = [AlertRules]

