"""Stage-to-stage links over ZeroMQ: credit-based ROUTER/DEALER.

Each stage instance binds one ROUTER for its output (:class:`OutputPort`); each downstream
instance connects one DEALER per upstream instance (:class:`InputPort`). PUSH/PULL would be
simpler but loses the messages queued for a peer that goes away and lets a second process bind
over an ``ipc://`` path silently; the explicit protocol below makes hand-over exact:

* A worker grants credits (``C``): "send while your count for me is below ``window_end``". It
  grants more only after *processing*, so queues are bounded end to end (backpressure) and an
  idle replica gets the next message (load balancing by readiness, not round robin).
* The router answers an unknown peer with ``W`` (welcome, its instance id); the worker then
  restarts its counts for that link. Workers repeat their credit state every ``PING_S``, so a
  link to a restarted or swapped upstream instance re-forms by itself.
* Hand-over (hot swap, shutdown): the worker sends ``B`` (bye); the router stops sending to it
  and answers ``A``. Everything sent before ``A`` arrives before it, so once a worker holds every
  ``A`` and has processed its queue it may exit: nothing in flight is lost or duplicated.
* Endpoints are ``<stage>.<replica>.<parity>``: a replacement instance binds the other parity,
  so the old and the new instance never share an endpoint, and downstream workers connect to
  both parities of every upstream replica once, at start.

Fan-out: every downstream stage (a *group*) gets each output; within a group the replicas share
the load, or, for ordered stages, each camera always goes to the same replica.
"""

from __future__ import annotations

import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import msgpack
import zmq

from .envelope import Envelope, FrameRef, InlineFrame, encode, decode

PING_S = 0.25
PEER_TIMEOUT_S = 3.0

DATA, CREDIT, WELCOME, BYE, BYE_ACK = b"D", b"C", b"W", b"B", b"A"


def readable(sock: zmq.Socket) -> bool:
    """Cheap check before a non-blocking receive: a receive that raises zmq.Again costs ~50 µs."""
    return bool(sock.getsockopt(zmq.EVENTS) & zmq.POLLIN)


def endpoint(base: str, stage: str, replica: int, parity: int, tcp_port: int | None = None) -> str:
    """The output endpoint of one stage instance: ipc path in ``base``, or tcp host:port."""
    if tcp_port is not None:
        return f"tcp://{base}:{tcp_port + parity}"
    return f"ipc://{base}/{stage}.{replica}.{parity}"


@dataclass
class GroupSpec:
    """A downstream stage as seen by its upstream: how many replicas, keyed or not, its paths."""

    replicas: int = 1
    keyed: bool = False
    paths: int = 1
    host: str = ""


@dataclass
class _Peer:
    identity: bytes
    group: str
    replica: int
    host: str
    window_end: int = 0
    sent: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    leaving: bool = False

    @property
    def credit(self) -> int:
        return 0 if self.leaving else self.window_end - self.sent


@dataclass
class _Item:
    env: Envelope
    local_parts: list[Any] | None = None


class OutputPort:
    """The sending side of a stage: one queue per downstream group, dispatched on credits."""

    def __init__(
        self,
        zctx: zmq.Context,
        bind: str,
        instance: str,
        host: str,
        groups: dict[str, GroupSpec],
        queue_limit: int = 32,
        frame_source: Callable[[FrameRef], memoryview] | None = None,
        on_remote_sent: Callable[[FrameRef, int, Any], None] | None = None,
    ) -> None:
        self.sock = zctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.SNDHWM, 10000)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.bind(bind)
        self.endpoint = bind
        self.instance = instance
        self.host = host
        self.groups = groups
        self.queue_limit = queue_limit
        self.queues: dict[str, deque[_Item]] = {g: deque() for g in groups}
        self.peers: dict[bytes, _Peer] = {}
        self.sent: dict[str, int] = {g: 0 for g in groups}
        self._frame_source = frame_source
        self._on_remote_sent = on_remote_sent

    # -- producer side -------------------------------------------------------------------------

    def has_room(self) -> bool:
        return all(len(q) < self.queue_limit for q in self.queues.values())

    def pending(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def connected(self) -> bool:
        """Every downstream group has a worker (every replica, for keyed groups) to send to.

        A stage takes no input before this, so frames never wait in a stage for a downstream
        replica that is still starting (which would also break per-camera order).
        """
        for group, spec in self.groups.items():
            replicas = {p.replica for p in self.peers.values() if p.group == group and not p.leaving}
            needed = set(range(spec.replicas)) if spec.keyed else {next(iter(replicas), -1)}
            if not replicas or not needed <= replicas:
                return False
        return True

    def put(self, env: Envelope) -> None:
        """Queue one envelope for every downstream group (the same object, encoded once)."""
        item = _Item(env)
        for queue in self.queues.values():
            queue.append(item)
        self.dispatch()

    # -- socket side ---------------------------------------------------------------------------

    def handle(self) -> None:
        """Read every waiting control message from workers, then send what credits allow."""
        while readable(self.sock):
            try:
                identity, kind, body = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            except ValueError:
                continue  # malformed multipart from a foreign client: ignore
            self._on_message(identity, kind, body)
        self.dispatch()

    def _on_message(self, identity: bytes, kind: bytes, body: bytes) -> None:
        try:
            info = msgpack.unpackb(body) if body else {}
            replica = int(info.get("replica", 0))
            window_end = int(info.get("window_end", 0))
        except Exception:  # not one of our workers (any tcp peer can connect): ignore it
            return
        peer = self.peers.get(identity)
        if peer is None:
            if kind == BYE:  # a worker leaving a link it never completed
                self._send(identity, [BYE_ACK])
                return
            group = info.get("group")
            if group not in self.groups:
                return  # a worker of a stage we do not feed (stale endpoint reuse): ignore
            peer = _Peer(identity, group, replica, str(info.get("host", "")))
            if self._send(identity, [WELCOME, msgpack.packb({"instance": self.instance})]):
                self.peers[identity] = peer
            return
        peer.last_seen = time.monotonic()
        if kind == CREDIT:
            peer.window_end = max(peer.window_end, window_end)
        elif kind == BYE:
            peer.leaving = True
            self._send(identity, [BYE_ACK])

    def expire_peers(self) -> None:
        """Forget workers not heard from for ``PEER_TIMEOUT_S`` (crashed or gone)."""
        now = time.monotonic()
        for identity, peer in list(self.peers.items()):
            if now - peer.last_seen > PEER_TIMEOUT_S:
                del self.peers[identity]

    def dispatch(self) -> None:
        for group, queue in self.queues.items():
            spec = self.groups[group]
            if spec.keyed and spec.replicas > 1:
                self._dispatch_keyed(group, spec, queue)
                continue
            while queue:
                candidates = [p for p in self.peers.values() if p.group == group and p.credit > 0]
                if not candidates:
                    break
                peer = max(candidates, key=lambda p: p.credit)  # the least busy replica
                if not self._send_item(peer, spec, queue[0]):
                    self.peers.pop(peer.identity, None)  # peer vanished: try another
                    continue
                queue.popleft()
                self._count(peer, group)

    def _dispatch_keyed(self, group: str, spec: GroupSpec, queue: deque[_Item]) -> None:
        """Each camera goes to one replica. Items for a replica without credit stay queued but do
        not block other replicas' items behind them; one replica's items keep their order."""
        by_replica = {p.replica: p for p in self.peers.values() if p.group == group and not p.leaving}
        kept: deque[_Item] = deque()
        while queue:
            item = queue.popleft()
            peer = by_replica.get(zlib.crc32(item.env.camera_id.encode()) % spec.replicas)
            if peer is None or peer.credit <= 0 or not self._send_item(peer, spec, item):
                kept.append(item)
                continue
            self._count(peer, group)
        queue.extend(kept)

    def _count(self, peer: _Peer, group: str) -> None:
        peer.sent += 1
        self.sent[group] += 1

    def _send_item(self, peer: _Peer, spec: GroupSpec, item: _Item) -> bool:
        env = item.env
        remote = isinstance(env.frame, FrameRef) and peer.host != self.host
        if not remote:
            if item.local_parts is None:
                item.local_parts = encode(env)
            return self._send(peer.identity, [DATA, *item.local_parts])
        # Across hosts: the frame's bytes go in the message, straight from shared memory.
        assert self._frame_source is not None and isinstance(env.frame, FrameRef)
        ref = env.frame
        data = self._frame_source(ref)
        inline = env.derive(frame=InlineFrame(data, ref.shape, ref.dtype))
        parts = [DATA, *encode(inline)]
        try:
            tracker = self.sock.send_multipart([peer.identity, *parts], copy=False, track=True, flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        if self._on_remote_sent is not None:
            self._on_remote_sent(ref, spec.paths, tracker)
        return True

    def _send(self, identity: bytes, parts: Iterable[Any]) -> bool:
        try:  # copy=True: for small parts pyzmq's zero-copy Frame objects cost more than the copy
            self.sock.send_multipart([identity, *parts], flags=zmq.NOBLOCK)
            return True
        except zmq.ZMQError:  # EHOSTUNREACH: the peer is gone; EAGAIN: its pipe is full
            return False

    def close(self) -> None:
        """Tell every worker nothing more comes from this instance, then close."""
        for identity in list(self.peers):
            self._send(identity, [BYE_ACK])
        self.sock.close(linger=1000)


@dataclass
class _Link:
    """One DEALER connection to one upstream endpoint."""

    sock: zmq.Socket
    endpoint: str
    upstream: str = ""  # instance id of the router that welcomed us ("" = not yet)
    epoch: int = 0  # bumped on every welcome, so stale messages do not credit the new link
    received: int = 0
    processed: int = 0
    bye_acked: bool = False


class InputPort:
    """The receiving side of a stage: DEALERs to every upstream endpoint, credits on processing."""

    def __init__(
        self,
        zctx: zmq.Context,
        endpoints: list[str],
        identity: str,
        group: str,
        replica: int,
        host: str,
        window: int = 4,
        paused: bool = False,
    ) -> None:
        self.window = window
        self.paused = paused
        self.leaving = False
        self._hello = {"group": group, "replica": replica, "host": host}
        self.links: list[_Link] = []
        for ep in endpoints:
            sock = zctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.ROUTING_ID, identity.encode())
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RECONNECT_IVL, 50)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
            sock.connect(ep)
            self.links.append(_Link(sock, ep))
        self.received_total = 0
        self._last_ping = 0.0
        self._left_at = 0.0
        self.ping()

    @property
    def sockets(self) -> list[zmq.Socket]:
        return [link.sock for link in self.links]

    def receive(self, sock: zmq.Socket) -> list[tuple[Envelope, tuple[int, int]]]:
        """Drain one socket; returns envelopes with the ``(link, epoch)`` to credit later."""
        index = next(i for i, link in enumerate(self.links) if link.sock is sock)
        link = self.links[index]
        got: list[tuple[Envelope, tuple[int, int]]] = []
        while readable(sock):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            kind = parts[0].bytes
            if kind == DATA:
                link.received += 1
                self.received_total += 1
                try:
                    env = decode(parts[1:])
                except ValueError:
                    self.credit((index, link.epoch))  # undecodable: count it as done
                    continue
                got.append((env, (index, link.epoch)))
            elif kind == WELCOME:
                info = msgpack.unpackb(parts[1].bytes)
                link.upstream = info["instance"]
                link.epoch += 1
                link.received = link.processed = 0
                link.bye_acked = False
                self._grant(link)
                if self.leaving:
                    link.sock.send_multipart([BYE, b""])
            elif kind == BYE_ACK:  # answer to our bye, or the upstream closing for good
                link.bye_acked = True
                if not self.leaving:
                    link.upstream = ""
        return got

    def credit(self, token: tuple[int, int]) -> None:
        """One envelope from this link is fully processed: let the upstream send another."""
        index, epoch = token
        link = self.links[index]
        if link.epoch == epoch:
            link.processed += 1
            self._grant(link)

    def _grant(self, link: _Link) -> None:
        if not link.upstream or self.leaving:
            return
        window_end = link.processed + (0 if self.paused else self.window)
        body = msgpack.packb({**self._hello, "window_end": window_end})
        try:
            link.sock.send_multipart([CREDIT, body], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    def ping(self) -> None:
        """Repeat our state on every link: finds new upstream instances, keeps old ones alive."""
        self._last_ping = time.monotonic()
        for link in self.links:
            if self.leaving:
                if link.upstream and not link.bye_acked:
                    link.sock.send_multipart([BYE, b""])
            elif link.upstream:
                self._grant(link)
            else:
                try:
                    link.sock.send_multipart([CREDIT, msgpack.packb({**self._hello, "window_end": 0})], flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass

    def ping_due(self) -> bool:
        return time.monotonic() - self._last_ping >= PING_S

    def resume(self) -> None:
        self.paused = False
        for link in self.links:
            self._grant(link)

    def leave(self) -> None:
        """Ask every upstream to stop sending (hand-over); see :meth:`left`."""
        self.leaving = True
        self._left_at = time.monotonic()
        for link in self.links:
            if link.upstream:
                link.sock.send_multipart([BYE, b""])

    def left(self, dead_after_s: float = 2.0) -> bool:
        """True once every welcomed upstream acknowledged the bye (nothing more is in flight).

        A live upstream answers within milliseconds; one silent for ``dead_after_s`` is gone.
        """
        if self.leaving and time.monotonic() - self._left_at > dead_after_s:
            return True
        return all(link.bye_acked or not link.upstream for link in self.links)

    def close(self) -> None:
        for link in self.links:
            link.sock.close(linger=0)
