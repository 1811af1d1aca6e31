"""Stage-to-stage links (``core/transport.py``): credit-based ROUTER/DEALER over real ZeroMQ
``ipc://`` sockets, in this process.

:class:`Net` owns the sockets of one test and :meth:`Net.pump` plays every worker's and router's
event loop (poll, ``handle``, ``receive``, ``credit``, ``ping`` when due) until a condition holds.
Assertions that something does *not* happen are made after :meth:`Net.settle`, which runs the
loops through several ping rounds, and are backed by the router's own counters, so they do not
depend on timing.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
import zlib
from typing import Any, Callable

import msgpack
import numpy as np
import pytest
import zmq

from alpr_topo.core import transport
from alpr_topo.core.envelope import Envelope, FrameRef, InlineFrame, encode
from alpr_topo.core.framepool import FramePool, PoolReader, segment_prefix, unlink_segments
from alpr_topo.core.transport import GroupSpec, InputPort, OutputPort, endpoint


class Worker:
    """One downstream instance: an InputPort plus what it received, crediting as it goes.

    With ``auto_credit`` every envelope counts as processed as soon as it arrives; without it
    the tokens wait in ``pending`` until :meth:`credit` is called.
    """

    def __init__(self, net: "Net", endpoints: list[str], group: str, replica: int = 0,
                 window: int = 4, auto_credit: bool = True, host: str = "", paused: bool = False) -> None:
        self.name = f"{group}-{replica}-{uuid.uuid4().hex[:6]}"
        self.inp = InputPort(net.zctx, endpoints, self.name, group, replica, host, window=window, paused=paused)
        self.auto_credit = auto_credit
        self.received: list[Envelope] = []
        self.pending: list[tuple[int, int]] = []

    def ids(self, camera: str | None = None) -> list[int]:
        return [e.frame_id for e in self.received if camera is None or e.camera_id == camera]

    def credit(self, n: int = 1) -> None:
        for _ in range(n):
            self.inp.credit(self.pending.pop(0))

    def on_readable(self, sock: zmq.Socket) -> None:
        for env, token in self.inp.receive(sock):
            self.received.append(env)
            if self.auto_credit:
                self.inp.credit(token)
            else:
                self.pending.append(token)


class Net:
    """The sockets of one test, in a short temporary folder, and a loop that drives them."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="tt-", dir="/tmp")
        self.zctx = zmq.Context()
        self.outs: list[OutputPort] = []
        self.workers: list[Worker] = []
        self._n = 0

    def endpoint(self, name: str = "") -> str:
        self._n += 1
        ep = f"ipc://{self.dir}/{name or 'o'}{self._n}"
        assert len(ep) < 100, ep
        return ep

    def output(self, groups: dict[str, GroupSpec], bind: str | None = None, instance: str | None = None,
               host: str = "", **kwargs: Any) -> OutputPort:
        out = OutputPort(self.zctx, bind or self.endpoint(), instance or f"up-{uuid.uuid4().hex[:6]}",
                         host, groups, **kwargs)
        self.outs.append(out)
        return out

    def worker(self, endpoints: str | list[str], group: str, replica: int = 0, **kwargs: Any) -> Worker:
        w = Worker(self, [endpoints] if isinstance(endpoints, str) else endpoints, group, replica, **kwargs)
        self.workers.append(w)
        return w

    def _once(self, timeout_ms: int) -> None:
        poller = zmq.Poller()
        outs = [o for o in self.outs if not o.sock.closed]
        for out in outs:
            poller.register(out.sock, zmq.POLLIN)
        owners: dict[Any, Worker] = {}
        for w in self.workers:
            for sock in w.inp.sockets:
                if not sock.closed:
                    poller.register(sock, zmq.POLLIN)
                    owners[sock] = w
        for w in self.workers:
            if w.inp.ping_due():
                w.inp.ping()
        for out in outs:
            out.handle()
        for sock, _ in poller.poll(timeout_ms):
            if sock in owners:
                owners[sock].on_readable(sock)
        for out in outs:
            out.handle()

    def pump(self, until: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        """Run every loop until ``until()`` holds; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self._once(10)

    def settle(self, pings: int = 3) -> None:
        """Run the loops through ``pings`` forced ping rounds, so that whatever could still
        arrive has had every chance to."""
        for _ in range(pings):
            for w in self.workers:
                if not any(s.closed for s in w.inp.sockets):
                    w.inp.ping()
            for _ in range(5):
                self._once(10)

    def close(self) -> None:
        for w in self.workers:
            w.inp.close()
        for out in self.outs:
            if not out.sock.closed:
                out.sock.close(linger=0)
        self.zctx.term()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def net() -> Any:
    n = Net()
    yield n
    n.close()


def env(frame_id: int, camera: str = "cam") -> Envelope:
    return Envelope(camera_id=camera, frame_id=frame_id, captured_at=float(frame_id))


def cameras_for(replicas: int, per_replica: int = 2) -> dict[int, list[str]]:
    """Camera names that a keyed group routes to each replica (the first few found)."""
    found: dict[int, list[str]] = {r: [] for r in range(replicas)}
    i = 0
    while any(len(v) < per_replica for v in found.values()):
        name = f"cam{i}"
        r = zlib.crc32(name.encode()) % replicas
        if len(found[r]) < per_replica:
            found[r].append(name)
        i += 1
    return found


def ready(out: OutputPort, n_peers: int) -> Callable[[], bool]:
    """The router knows ``n_peers`` workers and has credit from each (so each was welcomed)."""
    return lambda: len(out.peers) == n_peers and all(p.window_end > 0 for p in out.peers.values())


def linked(*workers: Worker) -> Callable[[], bool]:
    """Every link of these workers was welcomed by its upstream."""
    return lambda: all(link.upstream for w in workers for link in w.inp.links)


def test_endpoint_names() -> None:
    assert endpoint("/tmp/x", "detect", 1, 0) == "ipc:///tmp/x/detect.1.0"
    assert endpoint("10.0.0.2", "detect", 1, 1, tcp_port=7000) == "tcp://10.0.0.2:7001"


# -- credits -----------------------------------------------------------------------------------


def test_credits_bound_what_is_in_flight(net: Net) -> None:
    out = net.output({"g": GroupSpec()})
    w = net.worker(out.endpoint, "g", window=2, auto_credit=False)
    net.pump(ready(out, 1), what="link")
    for i in range(10):
        out.put(env(i))
    net.pump(lambda: len(w.received) >= 2, what="the first window")
    net.settle()
    assert w.ids() == [0, 1]  # exactly the window, however many wait
    assert out.sent["g"] == 2 and out.pending() == 8

    w.credit(1)  # one processed: exactly one more may come
    net.pump(lambda: len(w.received) >= 3, what="one more after a credit")
    net.settle()
    assert w.ids() == [0, 1, 2] and out.sent["g"] == 3

    w.credit(2)  # everything received so far is processed: a full window again
    net.pump(lambda: len(w.received) >= 5, what="two more")
    net.settle()
    assert w.ids() == list(range(5)) and out.pending() == 5


def test_pings_repeat_credit_without_granting_more(net: Net) -> None:
    out = net.output({"g": GroupSpec()})
    w = net.worker(out.endpoint, "g", window=3, auto_credit=False)
    for i in range(10):
        out.put(env(i))
    net.pump(lambda: len(w.received) >= 3, what="the window")
    net.settle(pings=6)
    assert len(w.received) == 3 and out.sent["g"] == 3


def test_everything_arrives_once_in_order_with_credits(net: Net) -> None:
    out = net.output({"g": GroupSpec()}, queue_limit=1000)
    w = net.worker(out.endpoint, "g", window=3)
    for i in range(200):
        out.put(env(i))  # queued before the link exists: nothing is lost waiting for it
    net.pump(lambda: len(w.received) >= 200, what="200 envelopes")
    net.settle()
    assert w.ids() == list(range(200))
    assert [e.captured_at for e in w.received[:3]] == [0.0, 1.0, 2.0]


# -- fan-out, replicas, keyed groups -----------------------------------------------------------


def test_fan_out_gives_every_group_every_envelope_in_order(net: Net) -> None:
    out = net.output({"a": GroupSpec(), "b": GroupSpec()}, queue_limit=100)
    wa = net.worker(out.endpoint, "a", window=2)
    wb = net.worker(out.endpoint, "b", window=5)
    net.pump(out.connected, what="both groups")
    for i in range(50):
        out.put(env(i))
    net.pump(lambda: len(wa.received) >= 50 and len(wb.received) >= 50, what="both groups served")
    net.settle()
    assert wa.ids() == list(range(50)) and wb.ids() == list(range(50))
    assert out.sent == {"a": 50, "b": 50} and out.pending() == 0


def test_replicas_share_the_load_exactly_once(net: Net) -> None:
    out = net.output({"w": GroupSpec(replicas=3)}, queue_limit=100)
    workers = [net.worker(out.endpoint, "w", replica=r, window=2) for r in range(3)]
    net.pump(ready(out, 3), what="three workers")
    for i in range(60):
        out.put(env(i))
    net.pump(lambda: sum(len(w.received) for w in workers) >= 60, what="60 envelopes")
    net.settle()
    got = [i for w in workers for i in w.ids()]
    assert sorted(got) == list(range(60))  # all of them, none twice
    assert all(w.ids() for w in workers), [len(w.received) for w in workers]
    for w in workers:
        assert w.ids() == sorted(w.ids())  # one link keeps the order it was sent in


def test_keyed_group_keeps_each_camera_on_one_replica_in_order(net: Net) -> None:
    out = net.output({"k": GroupSpec(replicas=2, keyed=True)}, queue_limit=1000)
    workers = [net.worker(out.endpoint, "k", replica=r, window=3) for r in range(2)]
    net.pump(out.connected, what="both replicas")
    cams = [c for names in cameras_for(2, 3).values() for c in names]
    n = 0
    for round_ in range(20):
        for cam in cams:
            out.put(env(round_, cam))
            n += 1
    net.pump(lambda: sum(len(w.received) for w in workers) >= n, what="every envelope")
    net.settle()
    owner: dict[str, int] = {}
    for r, w in enumerate(workers):
        for e in w.received:
            assert owner.setdefault(e.camera_id, r) == r, f"{e.camera_id} went to two replicas"
    assert set(owner) == set(cams)
    assert set(owner.values()) == {0, 1}  # both replicas got cameras
    for r, w in enumerate(workers):
        for cam in {c for c, o in owner.items() if o == r}:
            assert w.ids(cam) == list(range(20)), cam


def test_keyed_routing_agrees_between_upstream_instances(net: Net) -> None:
    """Two replicas of the upstream stage must send a camera to the same downstream replica,
    or per-camera order could not hold after them."""
    spec = {"k": GroupSpec(replicas=2, keyed=True)}
    outs = [net.output(dict(spec)), net.output(dict(spec))]
    eps = [o.endpoint for o in outs]
    workers = [net.worker(eps, "k", replica=r, window=4) for r in range(2)]
    net.pump(lambda: all(o.connected() for o in outs), what="both upstreams linked")
    cams = [f"camera-{i}" for i in range(12)]
    for i, cam in enumerate(cams):
        outs[0].put(env(2 * i, cam))
        outs[1].put(env(2 * i + 1, cam))
    net.pump(lambda: sum(len(w.received) for w in workers) >= 24, what="24 envelopes")
    net.settle()
    seen = [{e.camera_id for e in w.received} for w in workers]
    assert not seen[0] & seen[1], "a camera went to both replicas"
    assert seen[0] | seen[1] == set(cams)
    for w in workers:
        for cam in {e.camera_id for e in w.received}:
            i = cams.index(cam)
            assert sorted(w.ids(cam)) == [2 * i, 2 * i + 1], cam


def test_keyed_replica_without_credit_does_not_block_the_other(net: Net) -> None:
    """Head of line: camera A's replica is out of credit; camera B's items queued behind A's still go."""
    out = net.output({"k": GroupSpec(replicas=2, keyed=True)}, queue_limit=100)
    by_replica = cameras_for(2, 1)
    cam_a, cam_b = by_replica[0][0], by_replica[1][0]
    slow = net.worker(out.endpoint, "k", replica=0, window=1, auto_credit=False)
    fast = net.worker(out.endpoint, "k", replica=1, window=2)
    net.pump(out.connected, what="both replicas")
    for i in range(5):
        out.put(env(i, cam_a))
    for i in range(5):
        out.put(env(i, cam_b))
    net.pump(lambda: len(fast.received) >= 5 and len(slow.received) >= 1, what="B's items past A's")
    net.settle()
    assert fast.ids(cam_b) == list(range(5)) and fast.ids(cam_a) == []
    assert slow.ids() == [0] and out.pending() == 4  # A's rest waits, in order
    for k in range(1, 5):
        slow.credit(1)
        net.pump(lambda: len(slow.received) > k, what=f"A's item {k}")
    net.settle()
    assert slow.ids(cam_a) == [0, 1, 2, 3, 4] and out.pending() == 0


def test_keyed_group_holds_a_camera_whose_replica_is_missing(net: Net) -> None:
    out = net.output({"k": GroupSpec(replicas=2, keyed=True)}, queue_limit=100)
    by_replica = cameras_for(2, 1)
    only = net.worker(out.endpoint, "k", replica=1, window=4)
    net.pump(ready(out, 1), what="replica 1")
    assert not out.connected()
    out.put(env(0, by_replica[0][0]))
    out.put(env(0, by_replica[1][0]))
    net.pump(lambda: len(only.received) >= 1, what="replica 1's camera")
    net.settle()
    assert [e.camera_id for e in only.received] == [by_replica[1][0]]  # not re-routed
    late = net.worker(out.endpoint, "k", replica=0, window=4)
    net.pump(lambda: len(late.received) >= 1, what="replica 0 takes its camera")
    assert [e.camera_id for e in late.received] == [by_replica[0][0]]


# -- pausing and forgetting ----------------------------------------------------------------------


def test_paused_worker_takes_nothing_until_resumed(net: Net) -> None:
    out = net.output({"g": GroupSpec()})
    w = net.worker(out.endpoint, "g", window=2, paused=True)  # as a stage starts: linked, no credit
    out.put(env(0))
    net.pump(linked(w), what="link")
    net.settle()
    assert out.connected() and w.received == [] and out.pending() == 1
    w.inp.resume()
    net.pump(lambda: len(w.received) >= 1, what="the envelope after resume")
    assert w.ids() == [0]


def test_forgotten_worker_is_welcomed_again_by_its_next_ping(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    out = net.output({"g": GroupSpec()})
    w = net.worker(out.endpoint, "g", window=2)
    for i in range(3):
        out.put(env(i))
    net.pump(lambda: len(w.received) >= 3, what="the first three")
    monkeypatch.setattr(transport, "PEER_TIMEOUT_S", -1.0)
    out.expire_peers()  # as if the worker had been silent too long
    monkeypatch.undo()
    assert out.peers == {} and not out.connected()
    epoch = w.inp.links[0].epoch
    for i in range(3, 6):
        out.put(env(i))
    net.pump(lambda: len(w.received) >= 6, what="the next three")
    net.settle()
    assert w.ids() == list(range(6)) and w.inp.links[0].epoch == epoch + 1


# -- hand-over ---------------------------------------------------------------------------------


def test_hand_over_loses_and_duplicates_nothing(net: Net) -> None:
    out = net.output({"w": GroupSpec(replicas=2)}, queue_limit=1000)
    old = net.worker(out.endpoint, "w", replica=0, window=4)
    new = net.worker(out.endpoint, "w", replica=0, window=4)  # the replacement instance
    net.pump(ready(out, 2), what="both instances")
    for i in range(40):
        out.put(env(i))  # the old one now has envelopes in flight
    assert out.sent["w"] == 8  # both windows filled at once
    old.inp.leave()
    assert not old.inp.left(dead_after_s=600)  # nothing acknowledged yet
    net.pump(lambda: old.inp.left(dead_after_s=600), what="the bye to be acknowledged")
    assert all(link.bye_acked for link in old.inp.links)
    done_by_old = len(old.received)
    assert done_by_old == 4  # what was in flight before the bye arrived; no credit after it

    for i in range(40, 60):
        out.put(env(i))
    net.pump(lambda: len(old.received) + len(new.received) >= 60, what="all 60")
    net.settle()
    assert len(old.received) == done_by_old  # nothing after the acknowledgement
    everything = old.ids() + new.ids()
    assert sorted(everything) == list(range(60))
    assert out.pending() == 0 and out.sent["w"] == 60


def test_leaving_worker_no_longer_counts_as_connected(net: Net) -> None:
    out = net.output({"w": GroupSpec()})
    w = net.worker(out.endpoint, "w")
    net.pump(linked(w), what="link")
    assert out.connected()
    w.inp.leave()
    net.pump(lambda: w.inp.left(dead_after_s=600), what="bye acknowledged")
    assert not out.connected()
    out.put(env(0))
    net.settle()
    assert w.received == [] and out.pending() == 1


def test_bye_to_an_endpoint_never_welcomed_is_answered(net: Net) -> None:
    """A worker leaving before its link formed still gets an answer (it may exit at once)."""
    ep = net.endpoint()
    w = net.worker(ep, "w")  # no router yet: the link has no upstream
    w.inp.leave()
    assert w.inp.left(dead_after_s=600)  # nothing was welcomed, so nothing to wait for
    out = net.output({"w": GroupSpec()}, bind=ep)
    out.put(env(0))
    net.settle()
    assert w.received == [] and out.pending() == 1


# -- upstream restart and close -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "crash"])
def test_link_re_forms_with_a_restarted_upstream(net: Net, how: str) -> None:
    ep = net.endpoint()
    first = net.output({"g": GroupSpec()}, bind=ep, instance="first")
    w = net.worker(ep, "g", window=2)
    net.pump(lambda: w.inp.links[0].upstream == "first", what="first welcome")
    first.put(env(0))
    net.pump(lambda: len(w.received) >= 1, what="from the first")
    if how == "close":
        first.close()
        net.pump(lambda: w.inp.links[0].upstream == "", what="the closing bye")
    else:
        first.sock.close(linger=0)  # gone without a word, as under kill -9
    epoch = w.inp.links[0].epoch

    second = net.output({"g": GroupSpec()}, bind=ep, instance="second")
    for i in range(1, 6):
        second.put(env(i))
    net.pump(lambda: len(w.received) >= 6, what="from the second")
    net.settle()
    assert w.inp.links[0].upstream == "second" and w.inp.links[0].epoch == epoch + 1
    assert w.ids() == list(range(6))
    assert second.sent["g"] == 5


def test_connected_needs_every_group_and_every_keyed_replica(net: Net) -> None:
    out = net.output({"plain": GroupSpec(replicas=2), "keyed": GroupSpec(replicas=2, keyed=True)})
    assert not out.connected()
    net.worker(out.endpoint, "plain", replica=1)
    net.pump(ready(out, 1), what="plain worker")
    assert not out.connected()  # no worker for the keyed group
    net.worker(out.endpoint, "keyed", replica=0)
    net.pump(ready(out, 2), what="keyed replica 0")
    assert not out.connected()  # keyed replica 1 missing
    net.worker(out.endpoint, "keyed", replica=1)
    net.pump(ready(out, 3), what="keyed replica 1")
    assert out.connected()  # one replica is enough for an unkeyed group


def test_workers_of_unknown_groups_are_ignored(net: Net) -> None:
    out = net.output({"g": GroupSpec()})
    stranger = net.worker(out.endpoint, "other")
    net.settle()
    assert out.peers == {} and not out.connected()
    assert stranger.inp.links[0].upstream == ""


def test_has_room_is_false_once_a_group_without_worker_is_full(net: Net) -> None:
    out = net.output({"served": GroupSpec(), "absent": GroupSpec()}, queue_limit=3)
    w = net.worker(out.endpoint, "served", window=10)
    net.pump(ready(out, 1), what="served worker")
    for i in range(3):
        assert out.has_room()
        out.put(env(i))
    net.pump(lambda: len(w.received) >= 3, what="served group")
    assert not out.has_room()  # "served" is empty but "absent" holds queue_limit items
    assert len(out.queues["absent"]) == 3 and len(out.queues["served"]) == 0
    late = net.worker(out.endpoint, "absent", window=1)
    net.pump(lambda: len(late.received) >= 1, what="the late worker's first")
    assert out.has_room()


def test_close_tells_the_workers(net: Net) -> None:
    out = net.output({"a": GroupSpec(), "b": GroupSpec()})
    wa, wb = net.worker(out.endpoint, "a"), net.worker(out.endpoint, "b")
    net.pump(linked(wa, wb), what="both links")
    assert not wa.inp.links[0].bye_acked
    out.close()
    net.pump(lambda: all(w.inp.links[0].bye_acked for w in (wa, wb)), what="bye from the closing port")
    for w in (wa, wb):
        assert w.inp.links[0].upstream == ""
        assert w.inp.left(dead_after_s=600)


# -- robustness --------------------------------------------------------------------------------


def test_undecodable_data_is_credited_and_skipped(net: Net) -> None:
    ep = net.endpoint()
    w = net.worker(ep, "g", window=1, auto_credit=False)
    fake = net.zctx.socket(zmq.ROUTER)  # a hand-driven upstream
    fake.bind(ep)
    try:
        assert fake.poll(5000)
        identity, kind, _ = fake.recv_multipart()
        assert kind == transport.CREDIT
        fake.send_multipart([identity, transport.WELCOME, msgpack.packb({"instance": "fake"})])
        fake.send_multipart([identity, transport.DATA, b"\xc1"])  # not msgpack
        fake.send_multipart([identity, transport.DATA, *encode(env(5))])
        net.pump(lambda: len(w.received) >= 1, what="the good envelope")
        assert w.ids() == [5]
        # The bad one counted as processed: the credit grants one past the first window.
        windows = []
        while fake.poll(200):
            _, kind, body = fake.recv_multipart()
            if kind == transport.CREDIT:
                windows.append(msgpack.unpackb(body)["window_end"])
        assert 2 in windows
    finally:
        fake.close(0)


@pytest.mark.parametrize("parts", [
    [b"only-one-part"],
    [transport.CREDIT, b"\xc1\xc1"],  # not msgpack
    [transport.CREDIT, msgpack.packb([1, 2])],  # msgpack, but not a map
    [transport.CREDIT, msgpack.packb({"group": "g", "replica": "x"})],  # a replica that is no number
], ids=["one-part", "not-msgpack", "not-a-map", "bad-replica"])
def test_garbage_control_message_does_not_break_the_router(net: Net, parts: list[bytes]) -> None:
    """Anything that can reach the endpoint (a tcp port, across hosts) may send junk: the router
    must ignore it and go on serving real workers."""
    out = net.output({"g": GroupSpec()})
    rogue = net.zctx.socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.connect(out.endpoint)
    try:
        rogue.send_multipart(parts)
        w = net.worker(out.endpoint, "g")
        out.put(env(1))
        net.pump(lambda: len(w.received) >= 1, what="a real worker served after garbage")
        assert w.ids() == [1]
    finally:
        rogue.close(0)


# -- across hosts ------------------------------------------------------------------------------


def test_remote_worker_gets_frame_bytes_local_worker_the_ref(net: Net) -> None:
    run = f"t{uuid.uuid4().hex[:10]}"
    pool = FramePool(segment_prefix(run, "cam"), "ipc://unused", paths=2, slots=2)
    reader = PoolReader()
    try:
        ref, array = pool.allocate((16, 12, 3))
        image = np.random.default_rng(3).integers(0, 255, size=(16, 12, 3), dtype=np.uint8)
        array[...] = image
        pool.publish(ref)
        del array
        sent: list[tuple[FrameRef, int, Any]] = []
        out = net.output(
            {"near": GroupSpec(), "far": GroupSpec(paths=1, host="h2")}, host="h1",
            frame_source=lambda r: memoryview(reader.view(r)).cast("B"),
            on_remote_sent=lambda r, n, tracker: sent.append((r, n, tracker)),
        )
        near = net.worker(out.endpoint, "near", host="h1")
        far = net.worker(out.endpoint, "far", host="h2")
        net.pump(out.connected, what="both workers")
        out.put(Envelope(camera_id="c", frame_id=1, frame=ref))
        net.pump(lambda: near.received and far.received, what="both deliveries")
        assert near.received[0].frame == ref  # same host: only the reference travels
        inline = far.received[0].frame
        assert isinstance(inline, InlineFrame) and inline.shape == (16, 12, 3) and inline.dtype == "uint8"
        got = np.frombuffer(inline.data, dtype=inline.dtype).reshape(inline.shape)
        np.testing.assert_array_equal(got, image)
        assert len(sent) == 1 and sent[0][0] == ref and sent[0][1] == 1
        net.pump(lambda: sent[0][2].done, what="the zero-copy send to finish")
        del got, inline, far.received[:]
    finally:
        reader.close()
        pool.close()
        unlink_segments(f"alpr.{run}.")
