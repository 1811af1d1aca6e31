"""The ``alpr-topo`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from .. import __version__

PACKAGED_TOPOLOGIES = Path(__file__).resolve().parent.parent / "topologies"


def resolve_topology(path: str) -> str:
    """A topology path as given, or a ready one by name (`cpu`, `jetson.yaml`) from the package."""
    if os.path.exists(path):
        return path
    base = os.path.basename(path)
    for candidate in (PACKAGED_TOPOLOGIES / base, PACKAGED_TOPOLOGIES / f"{base}.yaml"):
        if candidate.exists():
            return str(candidate)
    return path


def load_or_exit(path: str, host: str | None = None, input_uri: str | None = None):
    """The checked topology, or its problems printed and exit 1. ``input_uri`` replaces its source."""
    from ..core.topology import TopologyError, load

    try:
        if input_uri is None:
            return load(resolve_topology(path), host=host)
        from ..core.overrides import load_changed, use_input

        return load_changed(resolve_topology(path), lambda data: use_input(data, input_uri), host=host)
    except TopologyError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def pick_run(name: str | None):
    """The run to talk to: the one named, or the only one that is up."""
    from ..core.runs import RunDir, live_runs

    if name:
        run = RunDir(name)
        if run.live_pid() is None:
            raise click.ClickException(f"no run named '{name}' is up")
        return run
    runs = live_runs()
    if not runs:
        raise click.ClickException("no run is up (start one with `alpr-topo up TOPOLOGY`)")
    if len(runs) > 1:
        raise click.ClickException(f"several runs are up ({', '.join(r.name for r in runs)}): say which one "
                                   "(`--name NAME`, or `alpr-topo down NAME`)")
    return runs[0]


def request(run, body: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    """One request to a supervisor's control API."""
    from ..core.runs import ApiError, control_request

    try:
        return control_request(run.api, body, timeout_s, who=f"the supervisor of '{run.name}'")
    except ApiError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="alpr-topo")
def cli() -> None:
    """Run license-plate recognition as a graph of processes described by a YAML topology.

    \b
    Quick start:
      alpr-topo validate topologies/demo.yaml   check a topology, with file:line errors
      alpr-topo up topologies/demo.yaml         run it (Ctrl-C drains and stops)
      alpr-topo status                          what every stage is doing
      alpr-topo swap STAGE --set key=value      replace a stage while the graph runs
    """


@cli.command()
@click.argument("topology")
@click.option("--no-model-files", is_flag=True,
              help="do not require the model files to exist (check a topology for another machine; "
                   "`alpr-topo models TOPOLOGY` lists them)")
def validate(topology: str, no_model_files: bool) -> None:
    """Check TOPOLOGY and report every mistake as FILE:LINE: problem, expected."""
    from ..stages.detect import model_file_checks

    with model_file_checks(not no_model_files):
        topo = load_or_exit(topology)
    replicas = sum(s.replicas for s in topo.stages.values())
    click.echo(f"{topology}: OK, topology '{topo.name}' with {len(topo.stages)} stages ({replicas} processes)")


@cli.command()
@click.argument("topology")
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid"]), default="text", show_default=True,
              help="text for the terminal, dot for Graphviz, mermaid for Markdown pages")
def graph(topology: str, fmt: str) -> None:
    """Draw the stage graph of TOPOLOGY."""
    from .graph import render

    click.echo(render(load_or_exit(topology), fmt))


class StatusPort(click.ParamType):
    """``--status-port``: a port number, ``auto`` (any free port) or 0 (no status page)."""

    name = "PORT|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if isinstance(value, int) or str(value).lower() == "auto":
            return value if isinstance(value, int) else "auto"
        try:
            port = int(value)
        except ValueError:
            self.fail(f"expected a port number, 'auto' or 0, got {value!r}", param, ctx)
        if not 0 <= port <= 65535:
            self.fail(f"port {port} is out of range 0..65535", param, ctx)
        return port


def status_listener(topo: Any, port: int | str | None, bind: str | None) -> Any:
    """The status page's listening socket, bound before any stage starts (None: no page).

    An explicit port (option or the topology's ``status.port``) that is taken is an error; the
    default port 8480 falls back to the next free one (several runs on one host) and, when all are
    taken, the run goes on without a page.
    """
    from ..core.webui import DEFAULT_PORT, open_listener

    bind = bind or topo.status.get("bind") or "127.0.0.1"
    configured = int(topo.status.get("port") or 0)
    if port == 0:
        return None
    try:
        if port == "auto":
            return open_listener(bind, None)
        if port is not None or configured:
            return open_listener(bind, int(port or configured))
        return open_listener(bind, DEFAULT_PORT, fallback=True)
    except OSError as exc:
        if port is None and not configured:
            click.echo(f"alpr-topo: {exc}; running without a status page", err=True)
            return None
        raise click.ClickException(f"{exc} (choose another with --status-port PORT or auto, or 0 for no page)") from exc


@cli.command()
@click.argument("topology")
@click.option("--duration", type=float, help="drain and stop after this many seconds (default: run until the sources finish or Ctrl-C)")
@click.option("--input", "input_uri", metavar="FILE|DIR|URL",
              help="replace the topology's source: a video file (every frame read), a folder of images, "
                   "an rtsp:// or http:// stream (live, reconnects) or a camera number")
@click.option("--host", help="run only the stages placed on this host (multi-host topologies: one `up --host` per machine)")
@click.option("-v", "--verbose", is_flag=True, help="show every stage's INFO log lines, not only warnings")
@click.option("--status-port", type=StatusPort(), default=None,
              help="status page and /metrics: a port, 'auto' for any free one, 0 for none "
                   "[default: the topology's status.port, else 8480 or the next free port]")
@click.option("--status-bind", metavar="ADDRESS",
              help="address of the status page [default: the topology's status.bind, 127.0.0.1]; another "
                   "address opens the read-only views to that network (changes always need the token)")
@click.option("--status-token", envvar="ALPR_TOPO_STATUS_TOKEN", metavar="TOKEN",
              help="token for the page's buttons and other changing requests [default: a new random one, printed; "
                   "env ALPR_TOPO_STATUS_TOKEN]")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="stage log files as text lines or JSON lines (with camera, frame and event ids)")
def up(topology: str, duration: float | None, input_uri: str | None, host: str | None, verbose: bool, status_port: int | str | None,
       status_bind: str | None, status_token: str | None, log_format: str) -> None:
    """Start every stage of TOPOLOGY as its own process and supervise them.

    Crashed or hung stages restart with backoff. Ctrl-C (or SIGTERM, or `alpr-topo down`) drains
    the frames in flight and stops; a second Ctrl-C stops at once. The run ends by itself when
    every source has finished. Serves a status page with /metrics (docs/status-page.md). Logs:
    <runtime dir>/<name>/logs/ (`alpr-topo logs STAGE`).
    """
    from ..core.supervisor import Supervisor

    topo = load_or_exit(topology, host=host, input_uri=input_uri)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [supervisor] %(message)s")
    logging.getLogger().handlers[0].setLevel(logging.INFO if verbose else logging.WARNING)
    listener = status_listener(topo, status_port, status_bind)
    try:
        supervisor = Supervisor(topo, duration=duration, console_level="INFO" if verbose else "WARNING", host=host,
                                log_format=log_format)
        supervisor.start()
    except (RuntimeError, ValueError) as exc:
        if listener is not None:
            listener.close()
        raise click.ClickException(str(exc)) from exc
    supervisor_log = logging.FileHandler(supervisor.run.logs / "supervisor.log")  # `alpr-topo logs supervisor`
    supervisor_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [supervisor] %(message)s"))
    logging.getLogger().addHandler(supervisor_log)
    stages = {stage for stage, _ in supervisor.slots}
    click.echo(f"alpr-topo: '{supervisor.run_id}' is up: {len(stages)} stages, {len(supervisor.slots)} processes "
               f"(`alpr-topo status` to watch, Ctrl-C to stop)", err=True)
    page = None
    if listener is not None:
        from ..core.webui import StatusServer

        page = StatusServer(supervisor.run, listener, token=status_token)
        page.start()
        shown = "  (token as configured)" if status_token else f"#token={page.token}"
        click.echo(f"alpr-topo: status page {page.url}{shown}  metrics {page.url}metrics", err=True)
    try:
        code = supervisor.serve()
    finally:
        if page is not None:
            page.stop()
    click.echo(f"alpr-topo: '{supervisor.run_id}' stopped", err=True)
    for stage, counts in supervisor.totals().items():
        click.echo(f"  {stage:<20} in {counts['frames_in']:>8}  out {counts['frames_out']:>8}  errors {counts['errors']}", err=True)
    sys.exit(code)


@cli.command()
@click.argument("name", required=False)
@click.option("--hard", is_flag=True, help="stop at once instead of draining in-flight frames")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="seconds to wait for the run to end")
def down(name: str | None, hard: bool, timeout: float) -> None:
    """Stop a run (the only one that is up, or NAME): drain in-flight frames, then stop."""
    run = pick_run(name)
    pid = request(run, {"cmd": "down", "hard": hard})["pid"]
    deadline = time.monotonic() + timeout
    while _alive(pid):  # not psutil.wait: a zombie whose parent has not reaped it counts as stopped
        if time.monotonic() > deadline:
            raise click.ClickException(f"'{run.name}' is still stopping after {timeout:.0f} s (pid {pid})")
        time.sleep(0.1)
    click.echo(f"'{run.name}' stopped")


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@cli.command()
@click.option("--name", help="the run to show (default: the only one that is up)")
@click.option("--json", "as_json", is_flag=True, help="print the full status as JSON")
def status(name: str | None, as_json: bool) -> None:
    """Per stage replica: pid, state, frames in/out, fps, queues, p50/p99 latency, restarts, RSS."""
    run = pick_run(name)
    reply = request(run, {"cmd": "status"})
    reply.pop("ok", None)
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    try:
        page = json.loads(run.webui_file.read_text())  # the status page's address (core/webui.py)
    except (OSError, ValueError):
        page = None
    click.echo(f"{reply['name']}  pid {reply['pid']}  up {reply['uptime_s']:.0f} s"
               + ("  (shutting down)" if reply["shutting_down"] else "") + (f"  (swapping {reply['swap']})" if reply["swap"] else "")
               + (f"  page {page['url']}" if page else ""))
    header = f"{'stage':<16}{'pid':>8} {'state':<10}{'in':>9}{'out':>9}{'fps':>8}{'q in':>6}{'q out':>6}{'p50 ms':>8}{'p99 ms':>8}{'restarts':>9}{'rss MB':>8}"
    click.echo(header)
    for row in reply["stages"]:
        label = row["stage"] + (f"[{row['replica']}]" if row["replica"] or any(r["stage"] == row["stage"] and r["replica"] for r in reply["stages"]) else "")
        click.echo(f"{label:<16}{_fmt(row['pid']):>8} {row['state']:<10}{row['frames_in']:>9}{row['frames_out']:>9}"
                   f"{_fmt(row['fps_out']):>8}{row['queue_in']:>6}{row['queue_out']:>6}{_fmt(row['latency_p50_ms'], 2):>8}"
                   f"{_fmt(row['latency_p99_ms'], 2):>8}{row['restarts']:>9}{_fmt(row['rss_mb']):>8}")


def parse_settings(settings: tuple[str, ...]) -> dict[str, Any]:
    """`key=value` pairs into parameters; values are YAML scalars (numbers, booleans, lists)."""
    import yaml

    params: dict[str, Any] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--set")
        target = params
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = yaml.safe_load(value) if value else ""
    return params


@cli.command()
@click.argument("stage")
@click.option("--type", "type_name", help="switch to another stage type (parameters then start from its defaults)")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="parameter to change (repeatable)")
@click.option("--name", help="the run (default: the only one that is up)")
@click.option("--timeout", type=float, default=300.0, show_default=True)
def swap(stage: str, type_name: str | None, settings: tuple[str, ...], name: str | None, timeout: float) -> None:
    """Replace STAGE while the graph runs, losing and duplicating no frame.

    Each replica in turn: a new process starts (new code, new type or parameters), sets up and
    connects while paused; the old one stops taking frames, finishes what it holds and exits;
    then the new one takes over.
    """
    params = parse_settings(settings)  # a typo is reported before anything is asked of the run
    started = time.monotonic()
    reply = request(pick_run(name), {"cmd": "swap", "stage": stage, "type": type_name, "params": params}, timeout_s=timeout)
    click.echo(f"swapped '{stage}' to {reply['type']} {json.dumps(reply['params'])} in {time.monotonic() - started:.1f} s")


@cli.command()
@click.argument("stage")
@click.option("--name", help="the run (default: the only one that is up)")
def restart(stage: str, name: str | None) -> None:
    """Kill and restart every replica of STAGE (for a wedged stage; frames it held are lost)."""
    request(pick_run(name), {"cmd": "restart", "stage": stage})
    click.echo(f"restarting '{stage}'")


@cli.command("stop")
@click.argument("stage")
@click.option("--name", help="the run (default: the only one that is up)")
def stop_stage(stage: str, name: str | None) -> None:
    """Drain STAGE and keep it stopped (upstream waits, or live sources drop) until `alpr-topo start`."""
    request(pick_run(name), {"cmd": "stop", "stage": stage})
    click.echo(f"stopping '{stage}'")


@cli.command("start")
@click.argument("stage")
@click.option("--name", help="the run (default: the only one that is up)")
def start_stage(stage: str, name: str | None) -> None:
    """Start STAGE again after `alpr-topo stop`."""
    request(pick_run(name), {"cmd": "start", "stage": stage})
    click.echo(f"starting '{stage}'")


def run_with_logs(name: str | None):
    """The run whose logs to show: NAME, the only run that is up, or the only run folder with logs
    (logs stay after a run ends)."""
    from ..core.runs import RunDir, live_runs, runtime_dir

    if name:
        run = RunDir(name)
        if not run.logs.exists():
            raise click.ClickException(f"no logs for a run named '{name}' in {runtime_dir()}")
        return run
    runs = live_runs() or [RunDir(p.parent.name) for p in sorted(runtime_dir().glob("*/logs"))
                           if p.is_dir() and any(p.iterdir())]
    if len(runs) != 1:
        known = ", ".join(r.name for r in runs) or "none"
        raise click.ClickException(f"say which run with --name (runs with logs: {known})")
    return runs[0]


@cli.command()
@click.argument("stage")
@click.option("-f", "--follow", is_flag=True, help="keep printing lines as they are written (Ctrl-C to stop)")
@click.option("-n", "--lines", type=int, default=50, show_default=True, help="lines to show from the end first")
@click.option("--name", help="the run (default: the only one that is up, or the only one with logs)")
@click.option("--json", "as_json", is_flag=True, help="print JSON log lines as written (`up --log-format json`), for jq")
def logs(stage: str, follow: bool, lines: int, name: str | None, as_json: bool) -> None:
    """Show the log of STAGE: every replica, merged by time (`supervisor` for the supervisor's own)."""
    from ..core.logs import as_text, log_files, stages_with_logs, tail_many
    from ..core.logs import follow as follow_files

    run = run_with_logs(name)
    files = log_files(run.logs, stage)
    if not files:
        known = ", ".join(stages_with_logs(run.logs)) or "none"
        raise click.ClickException(f"no log of '{stage}' in {run.logs} (logs there: {known})")
    label = len(files) > 1
    for line in tail_many(files, lines, label, text=not as_json):
        click.echo(line)
    if follow:
        try:
            for path, line in follow_files(files):
                shown = line if as_json else as_text(line)
                click.echo(f"[{path.stem}] {shown}" if label else shown)
        except KeyboardInterrupt:
            pass


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print types and parameter schemas as JSON")
def plugins(as_json: bool) -> None:
    """List every stage type with its parameters and the plugin that provides it."""
    from ..core.plugins import plugin_of, stage_types

    described = [{**cls.describe(), "plugin": plugin_of(name)} for name, cls in stage_types().items()]
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    for info in described:
        kind = "source" if info["source"] else "stage"
        click.echo(f"{info['type']}  ({kind}, plugin {info['plugin']}){'  ordered per camera' if info['ordered'] else ''}")
        if info["summary"]:
            click.echo(f"    {info['summary']}")
        for pname, schema in info["params"].items():
            required = pname in info["required"]
            default = "required" if required else f"default {json.dumps(schema.get('default'))}"
            ptype = schema.get("type") or "/".join(a.get("type", "?") for a in schema.get("anyOf", [])) or "any"
            click.echo(f"    {pname}: {ptype}, {default}" + (f" - {schema['description']}" if schema.get("description") else ""))


@cli.command("new-plugin")
@click.argument("name")
@click.option("--dest", type=click.Path(file_okay=False), default=".", show_default=True, help="folder to create the package in")
@click.option("--force", is_flag=True, help="overwrite an existing folder")
def new_plugin(name: str, dest: str, force: bool) -> None:
    """Write a ready plugin package NAME (stage, tests, example topology, entry point)."""
    from .newplugin import next_steps, write_plugin

    try:
        path = write_plugin(name, dest, force=force)
    except (ValueError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(next_steps(path))


@cli.group()
def bench() -> None:
    """Benchmarks; each prints a JSON object with --json."""


@bench.command("transport")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
@click.option("--frames", type=int, default=300, show_default=True, help="frames per method and size")
@click.option("--size", "sizes", multiple=True, default=["1920x1080"], show_default=True, metavar="WxH",
              help="frame size, 3 channels (repeatable)")
def bench_transport(as_json: bool, frames: int, sizes: tuple[str, ...]) -> None:
    """Per-hop latency and throughput: shared memory + ZeroMQ vs pickle over ZeroMQ vs multiprocessing.Queue."""
    from . import bench_transport as bt

    shapes = []
    for size in sizes:
        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError as exc:
            raise click.BadParameter(f"expected WxH such as 1920x1080, got {size!r}", param_hint="--size") from exc
        shapes.append((h, w, 3))
    result = bt.run(sizes=shapes, frames=frames, progress=lambda msg: click.echo(msg, err=True))
    click.echo(json.dumps(result, indent=2) if as_json else bt.main_text(result))


@bench.command("accuracy")
@click.option("--dataset", required=True, type=click.Path(exists=True, file_okay=False),
              help="folder in the OpenALPR benchmark layout (NAME.jpg + NAME.txt)")
@click.option("--topology", help="use the detect and OCR stages of this topology (default: the embedded default)")
@click.option("--limit", type=int, help="only the first N images")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_accuracy(dataset: str, topology: str | None, limit: int | None, as_json: bool) -> None:
    """Plate detection recall (IoU > 0.4), exact-match reads and ms per image on DATASET."""
    from . import bench_accuracy as ba

    result = ba.run(dataset, topology=resolve_topology(topology) if topology else None, limit=limit,
                    progress=lambda msg: click.echo(msg, err=True))
    click.echo(json.dumps(result, indent=2) if as_json else ba.main_text(result))


@bench.command("synthetic")
@click.option("--topology", help="topology with a source.synthetic, a dedup.plates and a publish.local stage "
                                 "[default: topologies/cpu.yaml]")
@click.option("--seconds", type=float, default=60.0, show_default=True, help="length of the synthetic scene")
@click.option("--vehicles", type=int, default=16, show_default=True, help="vehicles driving through it")
@click.option("--seed", type=int, default=1, show_default=True, help="scene seed (the same seed, the same scene)")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="another parameter of the scene (source.synthetic), e.g. --set shutter_s=0.02 for night-long "
                   "exposures (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_synthetic(topology: str | None, seconds: float, vehicles: int, seed: int, settings: tuple[str, ...],
                    as_json: bool) -> None:
    """Plate events of a whole running topology against synthetic ground truth: event recall,
    precision, duplicate events and wrong-text events."""
    from . import bench_synthetic as bs

    try:
        result = bs.run(resolve_topology(topology) if topology else None, seconds=seconds, vehicles=vehicles,
                        seed=seed, scene=parse_settings(settings), progress=lambda msg: click.echo(msg, err=True))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result, indent=2) if as_json else bs.main_text(result))


@bench.command("replay")
@click.option("--topology", help="topology with a source.synthetic and an ocr.* stage [default: topologies/cpu.yaml]")
@click.option("--seconds", type=float, default=60.0, show_default=True, help="length of the synthetic scene")
@click.option("--vehicles", type=int, default=16, show_default=True, help="vehicles driving through it")
@click.option("--seed", type=int, default=1, show_default=True, help="scene seed (the same as bench synthetic's)")
@click.option("--vehicle", type=int,
              help="print every read of this vehicle (its id in bench synthetic's JSON); stops once it has left")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="another parameter of the scene (source.synthetic), as for bench synthetic (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_replay(topology: str | None, seconds: float, vehicles: int, seed: int, vehicle: int | None,
                 settings: tuple[str, ...], as_json: bool) -> None:
    """Replay the scene of bench synthetic through the detect, track and OCR stages in this
    process and list what was read of each vehicle, frame by frame with --vehicle: for finding
    out why an event of bench synthetic is wrong.

    \b
    Example (bench synthetic said vehicle 23 was read I028SI):
      alpr-topo bench replay --topology topologies/cpu-models.yaml --seconds 300 --vehicles 80 --seed 8 --vehicle 23
    """
    from . import bench_replay as br

    try:
        result = br.replay(resolve_topology(topology) if topology else None, seconds=seconds, vehicles=vehicles,
                           seed=seed, scene=parse_settings(settings), progress=lambda msg: click.echo(msg, err=True),
                           vehicle=vehicle)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result, indent=2) if as_json else br.main_text(result, vehicle))


@bench.command("pipeline")
@click.option("--topology", help="topology with one source.synthetic stage [default: topologies/cpu.yaml]")
@click.option("--frames", type=int, default=150, show_default=True, help="frames in each run")
@click.option("--size", default="1920x1080", show_default=True, metavar="WxH", help="frame size")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_pipeline(topology: str | None, frames: int, size: str, as_json: bool) -> None:
    """Frames/s and latency of the staged graph against the same stages run one after the other
    in one process, in the same run."""
    from . import bench_pipeline as bp

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError as exc:
        raise click.BadParameter(f"expected WxH such as 1920x1080, got {size!r}", param_hint="--size") from exc
    try:
        result = bp.run(resolve_topology(topology) if topology else None, frames=frames, width=w, height=h,
                        progress=lambda msg: click.echo(msg, err=True))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result, indent=2) if as_json else bp.main_text(result))


from .bench_backend import bench_backend_command; bench.add_command(bench_backend_command)  # noqa: E402,E702


class _TopologyOrCommand(click.Group):
    """`models TOPOLOGY` and `models pull NAME` side by side: a first word that is not a
    sub-command is the topology."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            ctx.meta["topology"] = args[0]
            args = args[1:]
        return super().parse_args(ctx, args)


@cli.group(cls=_TopologyOrCommand, invoke_without_command=True, subcommand_metavar="[TOPOLOGY | COMMAND ...]")
@click.option("--no-checksum", is_flag=True, help="skip computing sha256 of model files")
@click.pass_context
def models(ctx: click.Context, no_checksum: bool) -> None:
    """`models TOPOLOGY`: which model each stage uses, whether it is there, where it comes from.

    Without TOPOLOGY: the models alpr-topo knows how to fetch (`alpr-topo models pull NAME`).
    """
    if ctx.invoked_subcommand is not None:
        return
    topology = ctx.meta.get("topology")
    from . import models as m

    if topology is None:
        click.echo(m.list_text())
        return
    click.echo(m.main_text(m.describe(load_or_exit(topology), checksum=not no_checksum)))


@models.command("pull")
@click.argument("name")
@click.option("--dest", default="models", show_default=True, help="folder to download into")
@click.option("--force", is_flag=True, help="download again even if a good copy is there")
def models_pull(name: str, dest: str, force: bool) -> None:
    """Download the official release asset(s) of model NAME (needs internet; never used by tests)."""
    from . import models as m

    try:
        paths = m.pull(name, dest, force=force, progress=lambda msg: click.echo(msg, err=True))
    except KeyError as exc:  # str(KeyError) would quote the message
        raise click.ClickException(str(exc.args[0])) from exc
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    for path in paths:
        click.echo(str(path))


@models.command("build-engine")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--fp32", is_flag=True, help="build an FP32 engine instead of FP16")
@click.option("--max-batch", type=int, default=8, show_default=True)
@click.option("--force", is_flag=True, help="rebuild even if a cached engine exists")
def models_build_engine(model: str, fp32: bool, max_batch: int, force: bool) -> None:
    """Build (and cache beside MODEL) a TensorRT engine for this GPU and TensorRT version."""
    from . import models as m

    try:
        path = m.build_engine(model, fp16=not fp32, max_batch=max_batch, force=force)
    except Exception as exc:  # TensorRTUnavailable and build errors: say what is missing
        raise click.ClickException(str(exc)) from exc
    click.echo(str(path))


from .synth import synth_command  # noqa: E402  (click only; the renderer loads when the command runs)

cli.add_command(synth_command)
from .services import services_command; cli.add_command(services_command)  # noqa: E402,E702
from ..backend.api import api_command; cli.add_command(api_command)  # noqa: E402,E702


def main() -> None:
    from ..core.plugins import plugin_manager

    plugin_manager().hook.alpr_topo_cli_commands(cli=cli)
    cli(prog_name="alpr-topo")


if __name__ == "__main__":
    main()
