"""Helpers for the status page and /metrics tests: find a run's page, call it, parse /metrics."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conftest import Run


def page_info(run: Run, name: str, timeout: float = 60) -> dict[str, Any]:
    """The address and token the run's status page wrote to ``<run dir>/webui.json``."""
    path = Path(run.env["ALPR_TOPO_RUNTIME_DIR"]) / name / "webui.json"
    run.wait_for(path.exists, timeout=timeout, what="the status page")
    return json.loads(path.read_text())


def http(url: str, method: str = "GET", token: str | None = None, body: Any = None,
         headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
    """(status code, body) of one request; HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics page: (name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http(url.rstrip("/") + "/metrics")
    assert status == 200, body
    samples: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, frozenset], float], metric: str, /, **labels: str) -> float:
    """The sum of the samples of ``metric`` whose labels include ``labels``."""
    wanted = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == metric and wanted <= ls]
    assert found, f"no sample {metric}{labels} in /metrics"
    return sum(found)


def chromium_path() -> str:
    """Debian's chromium (tools/run-tests.sh installs it); the tests fail, not skip, without it."""
    path = os.environ.get("ALPR_TOPO_CHROMIUM", "/usr/bin/chromium")
    assert os.path.exists(path), (f"{path} is missing: install Debian's chromium (`apt-get install chromium`, "
                                  "as tools/run-tests.sh does) or point ALPR_TOPO_CHROMIUM at a Chromium")
    return path


def wait_until(condition: Any, timeout: float = 60, what: str = "condition", interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
