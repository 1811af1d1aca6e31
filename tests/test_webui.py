"""The status page in a real headless Chromium (Debian's, driven by Playwright): it shows every stage
of a running topology with live numbers, previews, plate events and logs; a swap started from the
page loses no frame; restart, stop and start from the page work; changes without the token are
refused. A screenshot goes to tests/artifacts/status-page.png."""

from __future__ import annotations

import re
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import read_jsonl
from pagehelpers import chromium_path, http, page_info

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

GRAPH = """
name: NAME
plugins: [webui_plugins]
stages:
  cam: {type: source.test_pattern, params: {width: 320, height: 240, fps: FPS, count: 0}}
  work: {type: transform.passthrough, inputs: [cam], replicas: REPLICAS, params: {check_stamps: true}}
  out: {type: sink.jsonl, inputs: [work], params: {path: out/frames.jsonl, check_stamps: true}}
"""
ALPR_BRANCH = """
  alpr: {type: test.fake_alpr, inputs: [work], params: {event_every: 25}}
  pub: {type: test.fake_publisher, inputs: [alpr]}
"""


def topology(name: str, fps: int, replicas: int = 1, alpr: bool = False) -> str:
    text = GRAPH.replace("NAME", name).replace("FPS", str(fps)).replace("REPLICAS", str(replicas))
    return text + (ALPR_BRANCH if alpr else "")


@pytest.fixture(scope="module")
def browser() -> Any:
    from playwright.sync_api import expect, sync_playwright

    # Assertions wait for the page, not the clock: 5 s (Playwright's default) is too short on a
    # loaded 2-core CI box where a stage restart can take several seconds.
    expect.set_options(timeout=30_000)
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def cell(page: Any, stage: str, field: str, replica: int = 0) -> str:
    return page.locator(f'#stages tr[data-stage="{stage}"][data-replica="{replica}"] td[data-field="{field}"]').inner_text()


def wait_all_running(page: Any) -> None:
    page.wait_for_function("""() => {
        const cells = [...document.querySelectorAll('#stages td[data-field="state"]')];
        return cells.length > 0 && cells.every((td) => td.textContent === 'running');
    }""", timeout=90_000)


def wait_cell_above(page: Any, stage: str, field: str, floor: int, timeout_ms: int = 60_000) -> None:
    page.wait_for_function(
        """([stage, field, floor]) => {
            const td = document.querySelector(`#stages tr[data-stage="${stage}"][data-replica="0"] td[data-field="${field}"]`);
            return td && Number(td.textContent) > floor;
        }""", arg=[stage, field, floor], timeout=timeout_ms)


def emitted_by_source(output: str) -> int:
    return int(re.search(r"cam\s+in\s+0\s+out\s+(\d+)", output).group(1))


def test_page_shows_every_stage_with_live_numbers_previews_events_and_logs(start_run, page) -> None:
    from playwright.sync_api import expect

    run = start_run(topology("pg", fps=40, replicas=2, alpr=True), "--status-port", "auto")
    info = page_info(run, "pg")
    assert info["bind"] == "127.0.0.1"  # loopback unless told otherwise
    page.goto(info["url"] + "#token=" + info["token"])
    assert "token" not in page.url  # taken out of the address bar (kept for this tab only)
    expect(page.locator("#token-state")).to_have_text("controls unlocked")
    for stage in ("cam", "work", "out", "alpr", "pub"):
        expect(page.locator(f'#graph .node[data-stage="{stage}"]')).to_be_visible(timeout=30_000)
    for stage, replica in (("cam", 0), ("work", 0), ("work", 1), ("out", 0), ("alpr", 0), ("pub", 0)):
        expect(page.locator(f'#stages tr[data-stage="{stage}"][data-replica="{replica}"]')).to_have_count(1)
    expect(page.locator("#run-name")).to_have_text("pg")
    wait_all_running(page)

    # the numbers move while frames flow: the sink's count in the table, the source's rate in the graph
    wait_cell_above(page, "out", "frames_in", 0)
    seen = int(cell(page, "out", "frames_in"))
    wait_cell_above(page, "out", "frames_in", seen + 20)
    expect(page.locator('#graph .node[data-stage="cam"] .rate')).to_contain_text(re.compile(r"[1-9][\d.]* fps"))
    expect(page.locator('#graph .node[data-stage="work"] .state')).to_have_text("running")

    # an annotated preview of camera "test", and plate events with their crops
    page.wait_for_function("""() => {
        const img = document.querySelector('#previews figure[data-camera="test"] img');
        return img && img.complete && img.naturalWidth > 0;
    }""", timeout=60_000)
    expect(page.locator('#previews figure[data-camera="test"] figcaption')).to_contain_text("after")
    expect(page.locator("#events tbody tr[data-event]").first).to_be_visible(timeout=60_000)
    expect(page.locator("#events tbody tr[data-event] td.plate").first).to_have_text(re.compile(r"^TP\d{4}$"))
    page.wait_for_function("""() => [...document.querySelectorAll('#events img')].some((img) => img.naturalWidth > 0)""",
                           timeout=30_000)

    # per-stage logs, with the frame each line was about
    page.select_option("#log-stage", "alpr")
    expect(page.locator("#log")).to_contain_text(re.compile(r"plate event TP\d{4} \(frame test/\d+\)"), timeout=30_000)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)

    run.cli("down")
    assert run.wait() == 0, run.output()


def test_swap_started_from_the_page_loses_no_frame(start_run, tmp_path: Path, page) -> None:
    from playwright.sync_api import expect

    run = start_run(topology("pgswap", fps=100), "--status-port", "auto")
    info = page_info(run, "pgswap")
    page.goto(info["url"] + "#token=" + info["token"])
    wait_all_running(page)
    wait_cell_above(page, "out", "frames_in", 30)
    before = run.stage_rows("work")[0]

    page.click('button[data-action="swap"][data-stage="work"]')
    expect(page.locator("#swap-dialog")).to_be_visible()
    expect(page.locator("#swap-type")).to_have_value("transform.passthrough")
    assert '"check_stamps": true' in page.input_value("#swap-params")  # the current parameters to edit
    page.fill("#swap-params", '{"delay_ms": 1, "check_stamps": true}')
    page.click("#swap-submit")
    expect(page.locator("#message")).to_contain_text("swapped 'work' to transform.passthrough", timeout=120_000)

    after = run.stage_rows("work")[0]
    assert after["instance"] != before["instance"] and after["pid"] != before["pid"]
    assert run.status()["swap"] is None
    expect(page.locator('#stages tr[data-stage="work"] td[data-field="pid"]')).to_have_text(str(after["pid"]), timeout=10_000)
    frames = run.stage_rows("out")[0]["frames_in"]
    run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] > frames + 30, what="frames after the swap")

    run.cli("down")
    assert run.wait() == 0, run.output()
    records = read_jsonl(tmp_path / "out/frames.jsonl")
    emitted = emitted_by_source(run.output())
    ids = Counter(r["frame_id"] for r in records)
    assert [i for i, n in ids.items() if n > 1] == [], "duplicated frames"
    assert sorted(ids) == list(range(emitted)), f"lost frames: {sorted(set(range(emitted)) - set(ids))[:20]}"
    assert all(r["stamp"] == r["frame_id"] for r in records)
    assert len({r["meta"]["passed"][0] for r in records}) == 2  # the old and the new process both carried frames


def test_restart_stop_start_from_the_page_and_changes_need_the_token(start_run, page) -> None:
    from playwright.sync_api import expect

    run = start_run(topology("pgctl", fps=50), "--status-port", "auto")
    info = page_info(run, "pgctl")
    url, token = info["url"], info["token"]

    # without the token: reads work, changes are refused, also from the page
    assert http(url + "api/status")[0] == 200
    assert http(url + "metrics")[0] == 200
    assert http(url + "api/stages/work/restart", "POST")[0] == 401
    assert http(url + "api/stages/work/stop", "POST", token="not-the-token")[0] == 401
    assert http(url + "api/stages/work/swap", "POST", body={"params": {"delay_ms": 1}})[0] == 401
    assert http(url + "api/token", "POST", token=token)[0] == 200
    assert http(url + "api/status", headers={"Host": "attacker.example"})[0] == 400  # DNS rebinding
    page.goto(url)
    expect(page.locator("#token-state")).to_have_text("read-only")
    wait_all_running(page)
    pid = run.stage_rows("work")[0]["pid"]
    page.click('button[data-action="restart"][data-stage="work"]')
    expect(page.locator("#message")).to_contain_text("refused (401)")
    assert run.stage_rows("work")[0]["pid"] == pid and run.stage_rows("work")[0]["restarts"] == 0

    # a wrong token is not taken; the right one unlocks the controls
    page.fill("#token-input", "wrong")
    page.click("#token-save")
    expect(page.locator("#message")).to_contain_text("not the token")
    page.fill("#token-input", token)
    page.click("#token-save")
    expect(page.locator("#token-state")).to_have_text("controls unlocked")

    page.click('button[data-action="restart"][data-stage="work"]')
    expect(page.locator('#stages tr[data-stage="work"] td[data-field="restarts"]')).to_have_text("1", timeout=60_000)
    wait_all_running(page)
    row = run.stage_rows("work")[0]
    assert row["restarts"] == 1 and row["pid"] != pid and row["state"] == "running"
    frames = int(cell(page, "out", "frames_in"))
    wait_cell_above(page, "out", "frames_in", frames + 20)

    page.click('button[data-action="stop"][data-stage="work"]')
    expect(page.locator('#stages tr[data-stage="work"] td[data-field="state"]')).to_have_text("stopped", timeout=60_000)
    expect(page.locator('#stages tr[data-stage="work"] button[data-action="start"]')).to_have_text("Start")
    assert run.stage_rows("work")[0]["state"] == "stopped" and run.stage_rows("work")[0]["pid"] is None
    page.click('button[data-action="start"][data-stage="work"]')
    wait_all_running(page)
    frames = run.stage_rows("out")[0]["frames_in"]
    run.wait_for(lambda: run.stage_rows("out")[0]["frames_in"] > frames + 20, what="frames after the start")
    assert run.stage_rows("work")[0]["restarts"] == 1  # stop and start are not restarts

    # a restart of a stopped stage starts it again (and counts as a restart)
    page.click('button[data-action="stop"][data-stage="work"]')
    expect(page.locator('#stages tr[data-stage="work"] td[data-field="state"]')).to_have_text("stopped", timeout=60_000)
    page.click('button[data-action="restart"][data-stage="work"]')
    expect(page.locator('#stages tr[data-stage="work"] td[data-field="restarts"]')).to_have_text("2", timeout=60_000)
    wait_all_running(page)
    expect(page.locator('#stages tr[data-stage="work"] button[data-action="stop"]')).to_have_text("Stop")

    run.cli("down")
    assert run.wait() == 0, run.output()


def test_a_status_port_in_use_is_a_clear_error_before_any_stage_starts(start_run) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        run = start_run(topology("pgbusy", fps=10), "--status-port", str(port))
        assert run.wait() == 1
    assert f"cannot serve the status page on 127.0.0.1, port {port}" in run.output()
    assert "--status-port" in run.output()
    assert "is up" not in run.output()


def test_status_port_zero_serves_no_page(start_run, run_env) -> None:
    run = start_run(topology("pgoff", fps=10), "--status-port", "0", "--duration", "1")
    run.wait_for(lambda: run.status()["name"] == "pgoff", what="up")
    assert not (Path(run_env["ALPR_TOPO_RUNTIME_DIR"]) / "pgoff" / "webui.json").exists()
    assert run.wait() == 0
    assert "status page" not in run.output()
