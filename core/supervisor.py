"""The supervisor: one process per stage replica, heartbeats, restarts, drain, hot swap.

It never touches frames. It spawns workers (``python -m alpr_topo.core.worker SPEC``) in their own
session (a terminal Ctrl-C reaches only the supervisor, which then drains the graph in order),
reads their heartbeats on a ZeroMQ ROUTER, and answers the CLI and the status page on another
(``status``, ``swap``, ``restart``, ``stop``, ``start``, ``down``, ``topology``, ``metrics``).

Shutdown is a drain in topological order: sources stop first; a stage is asked to drain once every
instance of its upstream stages has exited, so everything in flight reaches the sinks. A finite
source that has finished starts the same drain, which is how ``alpr-topo up`` ends on its own.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import psutil
import zmq

from .framepool import segment_prefix, unlink_segments
from .metrics import totals
from .plugins import stage_types
from .runs import RunDir
from .topology import StageDecl, Topology
from .transport import endpoint

log = logging.getLogger("alpr_topo.supervisor")

LIVE_STATES = ("starting", "paused", "running", "draining")


@dataclass
class Instance:
    """One worker process of one stage replica."""

    stage: str
    replica: int
    instance: str
    parity: int
    proc: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    state: str = "starting"
    last_beat: float = field(default_factory=time.monotonic)
    stats: dict[str, Any] = field(default_factory=dict)
    fps_in: float = 0.0
    fps_out: float = 0.0
    expected_exit: bool = False
    drain_since: float = 0.0
    ps: psutil.Process | None = None  # kept so cpu_percent measures since the previous call

    def usage(self) -> tuple[float | None, float | None]:
        """(RSS in MiB, CPU percent since the last call) of the worker process."""
        try:
            if self.ps is None:
                self.ps = psutil.Process(self.pid)
            return round(self.ps.memory_info().rss / 2**20, 1), self.ps.cpu_percent(None)
        except psutil.Error:
            return None, None

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class ReplicaSlot:
    """The history of one (stage, replica): restarts and the current instance."""

    current: Instance | None = None
    restarts: int = 0
    restart_times: list[float] = field(default_factory=list)
    restart_due: float | None = None
    failed: bool = False
    stopped: bool = False  # stopped on request (`stop`): not restarted until `start`
    retired: dict[str, Any] = field(default_factory=dict)  # counters of its exited processes, for /metrics


@dataclass
class SwapJob:
    stage: str
    old_decl: StageDecl
    reply_to: bytes
    replica: int = 0
    phase: str = "spawn"  # spawn -> starting -> draining -> done
    new: Instance | None = None
    old: Instance | None = None
    error: str | None = None


class Supervisor:
    """Runs the stages of a topology, or with ``host`` only those placed on that host.

    With a host, the run is called ``<name>-<host>`` (its folder, control sockets and segment
    names), so one supervisor per host can run the same topology; the tcp transport links them.
    """

    def __init__(self, topology: Topology, duration: float | None = None, console_level: str = "WARNING",
                 host: str | None = None, log_format: str = "text") -> None:
        if host is not None and host not in topology.hosts:
            known = ", ".join(topology.hosts) or "none: the topology has no hosts section"
            raise ValueError(f"unknown host '{host}' (hosts of {topology.path}: {known})")
        self.topo = topology
        self.run_id = topology.name if host is None else f"{topology.name}-{host}"
        self.run = RunDir(self.run_id)
        self.duration = duration
        self.console_level = console_level
        self.log_format = log_format
        self.cfg = topology.supervisor
        self.slots: dict[tuple[str, int], ReplicaSlot] = {
            (name, r): ReplicaSlot() for name, decl in topology.stages.items() for r in range(decl.replicas)
            if host is None or decl.host == host
        }
        self.instances: dict[str, Instance] = {}  # every live instance, by id
        self.finished: dict[str, Instance] = {}  # exited instances (for final counters)
        self.counter = 0
        self.zctx = zmq.Context.instance()
        self.shutting_down = False
        self.hard_stop = False
        self.exit_code = 0
        self.swap: SwapJob | None = None
        self.started = time.monotonic()
        self.flowing_since: float | None = None  # when every stage first ran: --duration counts from here

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        pid = self.run.live_pid()
        if pid is not None:
            raise RuntimeError(
                f"a run named '{self.run_id}' is already up (supervisor pid {pid}); "
                f"stop it with `alpr-topo down {self.run_id}` or rename this topology"
            )
        unlink_segments(f"alpr.{self.run_id}.")  # what a killed supervisor's run may have left
        self.run.prepare({"pid": os.getpid(), "name": self.run_id, "topology": os.path.abspath(self.topo.path),
                          "started": time.time()})
        self.control = self.zctx.socket(zmq.ROUTER)
        self.control.bind(self.run.control)
        self.api = self.zctx.socket(zmq.ROUTER)
        self.api.bind(self.run.api)
        for (stage, replica) in self.slots:
            self._spawn(stage, replica, parity=0, paused=False)

    def serve(self) -> int:
        """Run until the graph has drained; returns the process exit code."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.api, zmq.POLLIN)
        try:
            while True:
                for sock, _ in poller.poll(100):
                    if sock is self.control:
                        self._on_control()
                    else:
                        self._on_api()
                self._check_processes()
                self._restart_due()
                if self.swap is not None:
                    self._advance_swap()
                if not self.shutting_down:
                    if self.flowing_since is None and all(s.stopped or (s.current and s.current.state == "running")
                                                          for s in self.slots.values()):
                        self.flowing_since = time.monotonic()
                        log.info("every stage is up after %.1f s", self.flowing_since - self.started)
                    if (self.duration is not None and self.flowing_since is not None
                            and time.monotonic() - self.flowing_since >= self.duration):
                        log.warning("duration of %.0f s reached: draining", self.duration)
                        self.shutdown()
                    elif self._sources_finished():
                        log.warning("all sources finished: draining")
                        self.shutdown()
                if self.shutting_down:
                    self._advance_shutdown()
                    if not self.instances:
                        break
        finally:
            self._cleanup()
        return self.exit_code

    def shutdown(self, hard: bool = False) -> None:
        self.shutting_down = True
        if hard:
            self.hard_stop = True
            for inst in list(self.instances.values()):
                inst.expected_exit = True
                self._send(inst, {"t": "stop"})

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.shutting_down:
            log.warning("second signal: stopping without draining")
            self.shutdown(hard=True)
        else:
            log.warning("signal %s: draining in-flight frames, then stopping (again to force)", signum)
            self.shutdown()

    def _cleanup(self) -> None:
        for inst in list(self.instances.values()):
            try:
                inst.proc.kill()
                inst.proc.wait(5)
            except Exception:
                pass
            unlink_segments(segment_prefix(self.run_id, inst.stage, inst.pid))
        unlink_segments(f"alpr.{self.run_id}.")
        for sock in (self.control, self.api):
            sock.close(linger=0)
        self.run.remove()

    # -- spawning ------------------------------------------------------------------------------

    def _spawn(self, stage: str, replica: int, parity: int, paused: bool) -> Instance:
        self.counter += 1
        instance_id = f"{stage}-{replica}-{self.counter}"
        spec = self.spec_for(stage, replica, parity, instance_id, paused)
        spec_path = self.run.specs / f"{instance_id}.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.Popen([sys.executable, "-m", "alpr_topo.core.worker", str(spec_path)], start_new_session=True)
        inst = Instance(stage, replica, instance_id, parity, proc)
        self.instances[instance_id] = inst
        slot = self.slots[(stage, replica)]
        if not paused:
            slot.current = inst
        log.info("started %s (pid %d)", instance_id, proc.pid)
        return inst

    def spec_for(self, stage: str, replica: int, parity: int, instance_id: str, paused: bool) -> dict[str, Any]:
        """Everything a worker needs, resolved here so workers never parse the topology."""
        topo = self.topo
        decl = topo.stages[stage]
        types = stage_types()
        cls = types[decl.type]
        outputs = {
            d: {
                "replicas": topo.stages[d].replicas,
                "keyed": types[topo.stages[d].type].ordered,
                "paths": topo.paths(d),
                "host": topo.stages[d].host,
            }
            for d in topo.outputs(stage)
        }
        inputs = [self.endpoint_of(u, r, p) for u in decl.inputs for r in range(topo.stages[u].replicas) for p in (0, 1)]
        upstream_processes = sum(topo.stages[u].replicas for u in decl.inputs)
        # Frames of one camera can overtake each other by at most what all upstream stages hold
        # (credits plus output queue per process); a reorder window that size only gives up on
        # real gaps (dropped frames), and then after at most max_wait_s.
        in_flight = sum(topo.stages[a].replicas * (topo.transport.window + topo.transport.queue_limit + 1)
                        for a in topo.ancestors(stage))
        return {
            "run": self.run_id,
            "rundir": str(self.run.path),
            "stage": stage,
            "type": decl.type,
            "params": decl.params,
            "replica": replica,
            "instance": instance_id,
            "host": decl.host,
            "control": self.run.control,
            "inputs": inputs,
            "bind": self.endpoint_of(stage, replica, parity, bind=True) if outputs else None,
            "outputs": outputs,
            "paths": topo.paths(stage),
            "reorder": {"window": in_flight, "max_wait_s": 0.5} if cls.ordered and upstream_processes > 1 else None,
            "window": topo.transport.window,
            "queue_limit": topo.transport.queue_limit,
            "pool": topo.frame_pool,
            "plugins": topo.plugins,
            "paused": paused,
            "log_file": str(self.run.logs / f"{stage}.{replica}.log"),
            "log_format": self.log_format,
            "console_level": self.console_level,
        }

    def endpoint_of(self, stage: str, replica: int, parity: int, bind: bool = False) -> str:
        topo = self.topo
        if topo.transport.kind == "tcp":
            host = topo.hosts.get(topo.stages[stage].host, "127.0.0.1")
            port = topo.transport.base_port + 2 * topo.stage_index(stage, replica)
            return endpoint(host, stage, replica, parity, tcp_port=port)
        return endpoint(str(self.run.path), stage, replica, parity)

    # -- messages from workers -----------------------------------------------------------------

    def _on_control(self) -> None:
        while True:
            try:
                identity, body = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            inst = self.instances.get(identity.decode())
            if inst is None:
                continue
            msg = msgpack.unpackb(body)
            kind = msg.get("t")
            inst.last_beat = time.monotonic()
            if kind == "ready":
                inst.state = "paused" if self.swap and self.swap.new is inst else "running"
                if inst.state == "running":
                    self._after_ready(inst)
            elif kind in ("hb", "exit"):
                self._update_stats(inst, msg["stats"])
                if kind == "exit":
                    inst.expected_exit = inst.expected_exit or inst.state == "draining" or self.shutting_down

    def _after_ready(self, inst: Instance) -> None:
        if self.shutting_down and not self.topo.stages[inst.stage].inputs:
            self._drain(inst)  # a source restarted during shutdown: do not produce

    def _drain(self, inst: Instance) -> None:
        """Ask an instance to finish what it holds and exit; its exit is then not a crash."""
        inst.state = "draining"
        inst.drain_since = time.monotonic()
        inst.expected_exit = True
        self._send(inst, {"t": "drain"})

    def _update_stats(self, inst: Instance, stats: dict[str, Any]) -> None:
        now = time.monotonic()
        previous = inst.stats
        if previous and "_at" in previous:
            dt = max(1e-3, now - previous["_at"])
            inst.fps_in = (stats["frames_in"] - previous["frames_in"]) / dt
            inst.fps_out = (stats["frames_out"] - previous["frames_out"]) / dt
        inst.stats = {**stats, "_at": now}
        if stats.get("state") in LIVE_STATES and inst.state != "draining":
            inst.state = stats["state"]

    def _send(self, inst: Instance, msg: dict[str, Any]) -> None:
        try:
            self.control.send_multipart([inst.instance.encode(), msgpack.packb(msg)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    # -- health --------------------------------------------------------------------------------

    def _check_processes(self) -> None:
        now = time.monotonic()
        for inst in list(self.instances.values()):
            code = inst.proc.poll()
            if code is None:
                timeout = self.cfg["startup_timeout_s"] if inst.state == "starting" else self.cfg["heartbeat_timeout_s"]
                if now - inst.last_beat > timeout and inst.state != "draining":
                    log.error("%s sent no heartbeat for %.0f s: killing it", inst.instance, now - inst.last_beat)
                    inst.proc.kill()
                elif inst.state == "draining" and now - inst.drain_since > self.cfg["drain_timeout_s"]:
                    log.error("%s did not drain within %.0f s: killing it", inst.instance, self.cfg["drain_timeout_s"])
                    inst.expected_exit = True
                    inst.proc.kill()
                continue
            self._on_exit(inst, code)

    def _on_exit(self, inst: Instance, code: int) -> None:
        self._on_control()  # its last message (exit, with its final counters) before it is filed away
        del self.instances[inst.instance]
        self.finished[inst.instance] = inst
        slot = self.slots[(inst.stage, inst.replica)]
        slot.retired = totals([slot.retired, inst.stats])
        removed = unlink_segments(segment_prefix(self.run_id, inst.stage, inst.pid))
        inst.state = "stopped" if inst.expected_exit else "crashed"
        if removed and code != 0:
            log.info("removed %d shared-memory segment(s) left by %s", len(removed), inst.instance)
        if inst.expected_exit or self.hard_stop:  # asked to stop (drain, restart, swap): not a crash
            if slot.current is inst:
                slot.current = None
            return
        log.error("%s (pid %d) exited with code %s", inst.instance, inst.pid, code)
        if self.swap is not None and self.swap.new is inst:
            self.swap.error = f"the new instance of '{inst.stage}' failed to start (exit code {code}); see its log"
            return
        if self.swap is not None and self.swap.old is inst:
            return  # it was being replaced anyway: the new instance takes over
        if slot.current is not inst:
            return
        slot.current = None
        self._schedule_restart(inst.stage, inst.replica)

    def _schedule_restart(self, stage: str, replica: int) -> None:
        if self.shutting_down:
            log.warning("not restarting '%s' replica %d: the run is stopping", stage, replica)
            return
        slot = self.slots[(stage, replica)]
        now = time.monotonic()
        window = self.cfg["restart_window_s"]
        slot.restart_times = [t for t in slot.restart_times if now - t < window]
        if len(slot.restart_times) >= self.cfg["restart_budget"]:
            slot.failed = True
            log.error(
                "stage '%s' replica %d crashed %d times within %.0f s: giving up and stopping the run",
                stage, replica, len(slot.restart_times), window,
            )
            self.exit_code = 1
            self.shutdown()
            return
        delay = min(self.cfg["restart_backoff_max_s"], self.cfg["restart_backoff_s"] * (2 ** len(slot.restart_times)))
        slot.restart_times.append(now)
        slot.restart_due = now + delay
        log.warning("restarting '%s' replica %d in %.1f s", stage, replica, delay)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for (stage, replica), slot in self.slots.items():
            if slot.restart_due is not None and now >= slot.restart_due and not self.hard_stop:
                slot.restart_due = None
                if self._stage_gone_upstream(stage) and self.shutting_down:
                    continue
                parity = 1 - (self._last_parity(stage, replica))
                slot.restarts += 1
                self._spawn(stage, replica, parity=parity, paused=False)

    def _last_parity(self, stage: str, replica: int) -> int:
        mine = [i for i in [*self.finished.values(), *self.instances.values()] if i.stage == stage and i.replica == replica]
        return max(mine, key=lambda i: int(i.instance.rsplit("-", 1)[1])).parity if mine else 1

    # -- shutdown ------------------------------------------------------------------------------

    def _sources_finished(self) -> bool:
        sources = self.topo.sources()
        current = [s.current for (name, _), s in self.slots.items() if name in sources]
        return bool(current) and all(i is not None and i.stats.get("finished") for i in current)

    def _stage_gone_upstream(self, stage: str) -> bool:
        """True when no instance of any upstream stage of ``stage`` is alive or due to restart
        (stages on other hosts count as gone: their own supervisor drains them)."""
        for up in self.topo.stages[stage].inputs:
            if any(i.stage == up for i in self.instances.values()):
                return False
            if any(s.restart_due is not None for (n, _), s in self.slots.items() if n == up):
                return False
        return True

    def _advance_shutdown(self) -> None:
        if self.hard_stop or self.swap is not None:
            return
        for stage in self.topo.order():
            if not self._stage_gone_upstream(stage):
                continue
            for inst in self.instances.values():
                if inst.stage == stage and inst.state != "draining" and inst.state != "starting":
                    self._drain(inst)
            for (name, _), slot in self.slots.items():
                if name == stage:
                    slot.restart_due = None

    # -- hot swap ------------------------------------------------------------------------------

    def begin_swap(self, stage: str, type_name: str | None, params: dict[str, Any], reply_to: bytes) -> str | None:
        """Validate and start replacing ``stage``; returns an error message or None."""
        from pydantic import ValidationError

        if self.swap is not None:
            return f"a swap of '{self.swap.stage}' is still in progress"
        if self.shutting_down:
            return "the run is shutting down"
        decl = self.topo.stages.get(stage)
        if decl is None:
            return f"no stage named '{stage}' (stages: {', '.join(self.topo.stages)})"
        types = stage_types()
        new_type = type_name or decl.type
        cls = types.get(new_type)
        if cls is None:
            import difflib

            close = difflib.get_close_matches(new_type, list(types), n=3)
            hint = f", did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            return f"unknown stage type '{new_type}'{hint} (known: {', '.join(types)})"
        old_cls = types.get(decl.type)
        if old_cls is not None and (cls.is_source != old_cls.is_source or cls.ordered != old_cls.ordered):
            return (f"cannot swap '{decl.type}' for '{new_type}': one is a source or ordered and the other is not; "
                    "restart the topology for that change")
        merged = dict(params) if type_name and type_name != decl.type else {**decl.params, **params}
        try:
            validated = cls.Params(**merged).model_dump()
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors())
            return f"bad parameters for '{new_type}': {problems}"
        self.swap = SwapJob(stage, StageDecl(**vars(decl)), reply_to)
        decl.type, decl.params = new_type, validated
        log.warning("swapping '%s' to %s %s", stage, new_type, validated)
        return None

    def _advance_swap(self) -> None:
        job = self.swap
        assert job is not None
        decl = self.topo.stages[job.stage]
        if job.error:
            if job.new is not None and job.new.proc.poll() is None:
                job.new.expected_exit = True
                job.new.proc.kill()
            self.topo.stages[job.stage] = job.old_decl
            self._finish_swap({"ok": False, "error": job.error})
            return
        if job.phase == "spawn":
            if job.replica >= decl.replicas:
                self._finish_swap({"ok": True, "stage": job.stage, "type": decl.type, "params": decl.params})
                return
            slot = self.slots[(job.stage, job.replica)]
            job.old = slot.current
            parity = 1 - (job.old.parity if job.old else self._last_parity(job.stage, job.replica))
            job.new = self._spawn(job.stage, job.replica, parity=parity, paused=True)
            job.phase = "starting"
        elif job.phase == "starting":
            assert job.new is not None
            if job.new.state == "paused":  # set up, connected, waiting: now hand over
                if job.old is not None and job.old.instance in self.instances:
                    self._drain(job.old)
                job.phase = "draining"
            elif time.monotonic() - job.new.started > self.cfg["startup_timeout_s"]:
                job.error = f"the new instance of '{job.stage}' did not become ready in time"
        elif job.phase == "draining":
            assert job.new is not None
            if job.old is None or job.old.instance not in self.instances:
                slot = self.slots[(job.stage, job.replica)]
                slot.current = job.new
                job.new.state = "running"
                self._send(job.new, {"t": "resume"})
                log.warning("swapped %s -> %s", job.old.instance if job.old else "-", job.new.instance)
                job.replica += 1
                job.phase = "spawn"

    def _finish_swap(self, reply: dict[str, Any]) -> None:
        job = self.swap
        assert job is not None
        self.swap = None
        self._reply(job.reply_to, reply)

    # -- CLI requests --------------------------------------------------------------------------

    def _on_api(self) -> None:
        while True:
            try:
                identity, _, body = self.api.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            try:
                request = msgpack.unpackb(body)
                self._handle_request(identity, request)
            except Exception as exc:  # a bad request must never take the supervisor down
                log.exception("bad API request")
                self._reply(identity, {"ok": False, "error": f"bad request: {exc}"})

    def _handle_request(self, identity: bytes, request: dict[str, Any]) -> None:
        cmd = request.get("cmd")
        if cmd == "status":
            self._reply(identity, {"ok": True, **self.status()})
        elif cmd == "swap":
            error = self.begin_swap(request["stage"], request.get("type"), request.get("params") or {}, identity)
            if error:
                self._reply(identity, {"ok": False, "error": error})
        elif cmd == "restart":
            self._reply(identity, self.restart_stage(request["stage"]))
        elif cmd == "stop":
            self._reply(identity, self.stop_stage(request["stage"]))
        elif cmd == "start":
            self._reply(identity, self.start_stage(request["stage"]))
        elif cmd == "topology":
            self._reply(identity, {"ok": True, **self.describe()})
        elif cmd == "metrics":
            self._reply(identity, {"ok": True, "status": self.status(), "replicas": self.replica_totals()})
        elif cmd == "down":
            self._reply(identity, {"ok": True, "pid": os.getpid()})
            self.shutdown(hard=bool(request.get("hard")))
        else:
            self._reply(identity, {"ok": False, "error": f"unknown command {cmd!r}"})

    def restart_stage(self, stage: str) -> dict[str, Any]:
        """Kill and restart every replica of a stage (for a wedged stage; loses what it held)."""
        if stage not in self.topo.stages:
            return {"ok": False, "error": f"no stage named '{stage}'"}
        for (name, replica), slot in self.slots.items():
            if name == stage and slot.current is not None:
                inst = slot.current
                inst.expected_exit = True
                inst.proc.kill()
                slot.current = None
                slot.restart_due = time.monotonic()
            if name == stage and slot.stopped:  # stopped by `stop`: a restart starts it again
                slot.stopped = False
                slot.restart_due = time.monotonic()
        return {"ok": True, "stage": stage}

    def stop_stage(self, stage: str) -> dict[str, Any]:
        """Drain every replica of a stage (it finishes what it holds) and keep it stopped until
        `start`. Upstream stages then queue up to their limits and backpressure reaches the sources."""
        if stage not in self.topo.stages:
            return {"ok": False, "error": f"no stage named '{stage}'"}
        if self.swap is not None and self.swap.stage == stage:
            return {"ok": False, "error": f"'{stage}' is being swapped"}
        for (name, _), slot in self.slots.items():
            if name == stage:
                slot.stopped = True
                slot.restart_due = None
                if slot.current is not None and slot.current.state != "draining":
                    self._drain(slot.current)
        log.warning("stopping '%s' on request", stage)
        return {"ok": True, "stage": stage}

    def start_stage(self, stage: str) -> dict[str, Any]:
        """Start the replicas of a stage stopped by `stop` again."""
        if stage not in self.topo.stages:
            return {"ok": False, "error": f"no stage named '{stage}'"}
        if self.shutting_down:
            return {"ok": False, "error": "the run is shutting down"}
        slots = [(replica, slot) for (name, replica), slot in self.slots.items() if name == stage]
        if not any(slot.stopped for _, slot in slots):
            return {"ok": False, "error": f"'{stage}' is not stopped"}
        if any(i.stage == stage for i in self.instances.values()):
            return {"ok": False, "error": f"'{stage}' is still stopping; try again in a moment"}
        for replica, slot in slots:
            slot.stopped = False
            self._spawn(stage, replica, parity=1 - self._last_parity(stage, replica), paused=False)
        log.warning("starting '%s' again on request", stage)
        return {"ok": True, "stage": stage}

    def _reply(self, identity: bytes, body: dict[str, Any]) -> None:
        try:
            self.api.send_multipart([identity, b"", msgpack.packb(body, default=str)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def status(self) -> dict[str, Any]:
        """The run at a glance, per stage replica (what `alpr-topo status` prints)."""
        rows = []
        for (stage, replica), slot in self.slots.items():
            inst = slot.current
            if inst is None:
                candidates = [i for i in self.instances.values() if i.stage == stage and i.replica == replica]
                inst = candidates[-1] if candidates else None
            stats = inst.stats if inst else {}
            rss, cpu = inst.usage() if inst else (None, None)
            rows.append({
                "stage": stage,
                "replica": replica,
                "type": self.topo.stages[stage].type,
                "instance": inst.instance if inst else None,
                "pid": inst.pid if inst else None,
                "state": "failed" if slot.failed else (inst.state if inst else "restarting" if slot.restart_due else "stopped"),
                "frames_in": stats.get("frames_in", 0),
                "frames_out": stats.get("frames_out", 0),
                "fps_in": round(inst.fps_in, 1) if inst else 0.0,
                "fps_out": round(inst.fps_out, 1) if inst else 0.0,
                "queue_in": stats.get("queue_in", 0),
                "queue_out": stats.get("queue_out", 0),
                "latency_p50_ms": stats.get("latency_p50_ms"),
                "latency_p99_ms": stats.get("latency_p99_ms"),
                "e2e_p50_ms": stats.get("e2e_p50_ms"),
                "e2e_p99_ms": stats.get("e2e_p99_ms"),
                "errors": stats.get("errors", 0),
                "stale": stats.get("stale", 0),
                "restarts": slot.restarts,
                "rss_mb": rss,
                "cpu_percent": cpu,
                "reorder_late": stats.get("reorder_late", 0),
                "pool": stats.get("pool"),
                "counters": stats.get("counters", {}),
            })
        return {
            "name": self.run_id,
            "topology": os.path.abspath(self.topo.path),
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "shutting_down": self.shutting_down,
            "swap": self.swap.stage if self.swap else None,
            "stages": rows,
        }

    def describe(self) -> dict[str, Any]:
        """The graph as it runs now (types and parameters change with swaps) and the stage types a
        swap may choose from, for the status page."""
        types = stage_types()
        stages = [{
            "name": name,
            "type": decl.type,
            "inputs": list(decl.inputs),
            "replicas": decl.replicas,
            "params": decl.params,
            "host": decl.host,
            "source": bool(types[decl.type].is_source) if decl.type in types else not decl.inputs,
            "here": (name, 0) in self.slots,
        } for name in self.topo.order() for decl in [self.topo.stages[name]]]
        return {"name": self.run_id, "stages": stages, "types": [cls.describe() for cls in types.values()]}

    def replica_totals(self) -> list[dict[str, Any]]:
        """Counters per stage replica over every process that ran there (see core/metrics.py)."""
        return [{"stage": stage, "replica": replica,
                 "totals": totals([slot.retired, *(i.stats for i in self.instances.values()
                                                  if i.stage == stage and i.replica == replica)])}
                for (stage, replica), slot in self.slots.items()]

    def totals(self) -> dict[str, dict[str, int]]:
        """Frames in/out per stage over every instance that ever ran (for the end-of-run summary)."""
        out: dict[str, dict[str, int]] = {name: {"frames_in": 0, "frames_out": 0, "errors": 0}
                                          for name in self.topo.stages if (name, 0) in self.slots}
        for inst in [*self.finished.values(), *self.instances.values()]:
            for key in out[inst.stage]:
                out[inst.stage][key] += int(inst.stats.get(key, 0))
        return out
