"""Prometheus ``/metrics`` for a run, aggregated over every stage process.

Three parts, split by where they run:

- :class:`Histogram` lives in every worker: latency bucket counts with fixed bounds
  (:data:`LATENCY_BUCKETS_S`), sent in each heartbeat. Fixed bounds are what let the supervisor
  add up the histograms of several processes.
- :func:`totals` runs in the supervisor: it adds up the stats of the processes of one stage
  replica (the live one plus everything that has exited there), so a counter never goes back when
  a stage is restarted or swapped. Prometheus' ``rate()`` would survive a reset, but a sum over
  ``stage`` would not.
- :func:`render` runs in the status page's thread: it turns one reply of the supervisor's
  ``metrics`` API command into the Prometheus text format through a custom collector.

Only :func:`render` needs ``prometheus_client``; it is imported there, so workers do not pay for it.
The metric names are listed in docs/metrics.md.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Iterator

#: Upper bounds (seconds) of the latency buckets, shared by every worker; +Inf is implied.
LATENCY_BUCKETS_S: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1.0, 2.5, 5.0, 10.0)

#: Stage counters (``ctx.count`` / ``ctx.counters``) that are levels rather than counts (a spool's
#: size, a connection flag): these names, and names ending in one of the suffixes, are exported as
#: gauges with the live process's value; all others count up and are exported as ``_total``
#: counters summed over the replica's processes (docs/metrics.md, "Stage counters").
LEVEL_NAMES: frozenset[str] = frozenset({"spool_records", "spool_bytes", "connected", "crops_pending"})
LEVEL_SUFFIXES: tuple[str, ...] = ("_bytes", "_size", "_depth", "_pending", "_level", "_gauge")

#: Per-process stats that count up; summed over a replica's processes by :func:`totals`.
CUMULATIVE = ("frames_in", "frames_out", "errors", "stale", "reorder_late", "batches", "batched_frames")
POOL_CUMULATIVE = ("allocated", "released", "reclaimed", "dropped_full", "stale_releases", "resized")

STATES = ("starting", "paused", "running", "draining", "restarting", "failed", "stopped")


class Histogram:
    """Bucket counts of one latency series in one worker (not cumulative: one count per bucket,
    the last one for values above every bound)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1  # Prometheus buckets are "<= bound"
        self.total += seconds

    def to_wire(self) -> list[Any]:
        return [list(self.counts), self.total]


def is_level(counter: str) -> bool:
    return counter in LEVEL_NAMES or counter.endswith(LEVEL_SUFFIXES)


def totals(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up the counting stats of several processes of one stage replica (heartbeat stats, or an
    earlier result of this function). Levels (queues, gauges, pool in use) are left out: only the
    live process knows them."""
    out: dict[str, Any] = {key: 0 for key in CUMULATIVE}
    out.update(pool={key: 0 for key in POOL_CUMULATIVE}, cameras={}, hist={}, counters={})
    for part in parts:
        for key in CUMULATIVE:
            out[key] += int(part.get(key) or 0)
        for key in POOL_CUMULATIVE:
            out["pool"][key] += int((part.get("pool") or {}).get(key) or 0)
        for camera, (frames_in, frames_out) in (part.get("cameras") or {}).items():
            seen = out["cameras"].setdefault(camera, [0, 0])
            seen[0] += frames_in
            seen[1] += frames_out
        for name, (counts, total) in (part.get("hist") or {}).items():
            have = out["hist"].setdefault(name, [[0] * len(counts), 0.0])
            have[0] = [a + b for a, b in zip(have[0], counts)]
            have[1] += total
        for name, value in (part.get("counters") or {}).items():
            if not is_level(name):
                out["counters"][name] = out["counters"].get(name, 0) + value
    return out


def render(reply: dict[str, Any]) -> tuple[bytes, str]:
    """The Prometheus text exposition of one ``metrics`` reply, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(reply))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST


class RunCollector:
    """A prometheus_client collector over one snapshot of the supervisor (no state of its own:
    every scrape asks the supervisor afresh)."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.status = reply["status"]
        self.totals = {(t["stage"], t["replica"]): t["totals"] for t in reply["replicas"]}

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        st = self.status
        sr = ["stage", "replica"]

        def gauge(name: str, doc: str, labels: list[str] = sr) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"alpr_topo_{name}", doc, labels=labels)

        def counter(name: str, doc: str, labels: list[str] = sr) -> CounterMetricFamily:
            return CounterMetricFamily(f"alpr_topo_{name}", doc, labels=labels)

        run = gauge("run_info", "1, labelled with the run's name and topology file", ["run", "topology"])
        run.add_metric([st["name"], st["topology"]], 1)
        uptime = gauge("uptime_seconds", "seconds since the supervisor started", [])
        uptime.add_metric([], st["uptime_s"])
        stopping = gauge("shutting_down", "1 while the run drains to stop", [])
        stopping.add_metric([], int(bool(st["shutting_down"])))
        swapping = gauge("swap_in_progress", "1 while a stage is being hot-swapped", [])
        swapping.add_metric([], int(bool(st.get("swap"))))

        up = gauge("stage_up", "1 while the replica's process is running (taking frames)", [*sr, "type"])
        state = gauge("stage_state", "1 for the replica's current state", [*sr, "state"])
        restarts = counter("restarts", "restarts of the replica (crashes, hangs, restart requests; not swaps)")
        frames_in = counter("frames_in", "envelopes processed", [*sr, "camera"])
        frames_out = counter("frames_out", "envelopes emitted", [*sr, "camera"])
        errors = counter("errors", "exceptions raised by the stage (the envelope is dropped)")
        drops = counter("drops", "envelopes or frames dropped: pool_full (live source skipped a frame), "
                                 "stale (frame slot reused), late (ordered stage gave up waiting)", [*sr, "reason"])
        queue = gauge("queue_depth", "envelopes waiting: in (received, reorder buffer), out (for downstream credit)",
                      [*sr, "queue"])
        latency = HistogramMetricFamily("alpr_topo_stage_latency_seconds",
                                        "time from taking an envelope to emitting it", labels=sr)
        e2e = HistogramMetricFamily("alpr_topo_e2e_latency_seconds",
                                    "time from the source to this stage's output (one host's clock)", labels=sr)
        rss = gauge("process_resident_memory_bytes", "resident memory of the replica's process")
        cpu = gauge("process_cpu_percent", "CPU use of the replica's process since the previous scrape or status call")
        slots = gauge("pool_slots", "shared-memory frame slots of the replica's pool")
        in_use = gauge("pool_slots_in_use", "slots holding a frame that is still leased")
        allocated = counter("pool_allocated", "frames written into the pool")
        reclaimed = counter("pool_reclaimed", "leases that expired (a consumer crashed or hung)")
        stage_counter = counter("stage_counter", "a stage's own counters (ctx.count), by name", [*sr, "name"])
        stage_gauge = gauge("stage_gauge", "a stage's own levels (counters named *_bytes, *_size, ...), by name",
                            [*sr, "name"])

        for row in st["stages"]:
            key = (row["stage"], row["replica"])
            labels = [row["stage"], str(row["replica"])]
            total = self.totals.get(key) or totals([])
            up.add_metric([*labels, row["type"]], int(row["state"] == "running"))
            for s in STATES:
                state.add_metric([*labels, s], int(row["state"] == s))
            restarts.add_metric(labels, row["restarts"])
            for camera, (n_in, n_out) in sorted(total["cameras"].items()):
                frames_in.add_metric([*labels, camera], n_in)
                frames_out.add_metric([*labels, camera], n_out)
            errors.add_metric(labels, total["errors"])
            drops.add_metric([*labels, "pool_full"], total["pool"]["dropped_full"])
            drops.add_metric([*labels, "stale"], total["stale"])
            drops.add_metric([*labels, "late"], total["reorder_late"])
            queue.add_metric([*labels, "in"], row["queue_in"])
            queue.add_metric([*labels, "out"], row["queue_out"])
            for family, name in ((latency, "latency"), (e2e, "e2e")):
                counts, seconds = total["hist"].get(name) or ([0] * (len(LATENCY_BUCKETS_S) + 1), 0.0)
                running, buckets = 0, []
                for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), counts):
                    running += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
                family.add_metric(labels, buckets, seconds)
            if row.get("rss_mb") is not None:
                rss.add_metric(labels, row["rss_mb"] * 2**20)
            if row.get("cpu_percent") is not None:
                cpu.add_metric(labels, row["cpu_percent"])
            if row.get("pool"):  # a live process that produces frames
                slots.add_metric(labels, row["pool"].get("slots", 0))
                in_use.add_metric(labels, row["pool"].get("in_use", 0))
            if row.get("pool") or total["pool"]["allocated"]:  # ... or one that did
                allocated.add_metric(labels, total["pool"]["allocated"])
                reclaimed.add_metric(labels, total["pool"]["reclaimed"])
            for name, value in sorted(total["counters"].items()):
                stage_counter.add_metric([*labels, name], value)
            for name, value in sorted((row.get("counters") or {}).items()):
                if is_level(name):
                    stage_gauge.add_metric([*labels, name], value)
        yield from (run, uptime, stopping, swapping, up, state, restarts, frames_in, frames_out, errors, drops, queue,
                    latency, e2e, rss, cpu, slots, in_use, allocated, reclaimed, stage_counter, stage_gauge)
