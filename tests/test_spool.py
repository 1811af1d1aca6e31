"""The durable spool of publish.kafka: order, acknowledgement, bound, torn tails, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alpr_topo.backend.spool import HEADER_BYTES, Spool, SpoolError, SpoolLocked


def payload(i: int, pad: int = 40) -> bytes:
    return json.dumps({"i": i, "pad": "x" * pad}).encode()


def numbers(records: list[tuple[int, bytes]]) -> list[int]:
    return [json.loads(data)["i"] for _, data in records]


def read_all(spool: Spool) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    seq = 0
    while True:
        batch = spool.read(seq, max_records=7)
        if not batch:
            return out
        out.extend(batch)
        seq = batch[-1][0] + 1


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def test_append_read_in_order_across_segments_and_reopen(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=4096, max_bytes=1 << 20) as spool:
        seqs = [spool.append(payload(i)) for i in range(300)]
        assert seqs == list(range(1, 301))
        assert len(segments(tmp_path)) > 2  # the test covers several segments
        assert numbers(read_all(spool)) == list(range(300))
        assert spool.records == 300
        assert spool.bytes == sum(p.stat().st_size for p in segments(tmp_path))
    with Spool(tmp_path, segment_bytes=4096, max_bytes=1 << 20) as spool:
        assert numbers(read_all(spool)) == list(range(300))
        assert spool.append(payload(300)) == 301
        assert numbers(spool.read(299, max_records=10)) == [298, 299, 300]


def test_read_limits_and_random_access(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=4096) as spool:
        for i in range(100):
            spool.append(payload(i))
        assert numbers(spool.read(0, max_records=5)) == [0, 1, 2, 3, 4]
        assert numbers(spool.read(51, max_records=3)) == [50, 51, 52]
        assert numbers(spool.read(10, max_records=3)) == [9, 10, 11]  # backwards: rescans
        big = spool.read(0, max_records=1000, max_bytes=200)
        assert 1 <= len(big) < 10
        assert spool.read(101) == []


def test_ack_removes_records_and_segments_and_survives_reopen(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=4096) as spool:
        for i in range(200):
            spool.append(payload(i))
        before = len(segments(tmp_path))
        spool.ack(120)
        assert spool.records == 80
        assert numbers(spool.read(0, max_records=3)) == [120, 121, 122]
        assert len(segments(tmp_path)) < before
        spool.ack(50)  # going back is a no-op
        assert spool.records == 80
    with Spool(tmp_path, segment_bytes=4096) as spool:
        assert spool.records == 80
        assert numbers(read_all(spool)) == list(range(120, 200))
        spool.ack(spool.next_seq - 1)
        assert spool.records == 0 and spool.bytes == 0 and segments(tmp_path) == []
        assert spool.append(payload(200)) == 201  # sequence numbers never repeat
    with Spool(tmp_path) as spool:
        assert numbers(read_all(spool)) == [200]


def test_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    max_bytes = 16 * 1024
    with Spool(tmp_path, max_bytes=max_bytes, segment_bytes=2048) as spool:
        for i in range(2000):
            spool.append(payload(i))
            assert spool.bytes <= max_bytes
        kept = numbers(read_all(spool))
        assert spool.dropped > 0
        assert spool.dropped + len(kept) == 2000
        assert kept == list(range(2000 - len(kept), 2000))  # the newest, in order, no gap
        assert len(kept) * (HEADER_BYTES + len(payload(0))) > max_bytes // 2
        with pytest.raises(SpoolError):
            spool.append(b"x" * max_bytes)
    with Spool(tmp_path, max_bytes=max_bytes, segment_bytes=2048) as spool:
        assert numbers(read_all(spool)) == kept


def test_dropping_records_the_reader_holds(tmp_path: Path) -> None:
    """A reader that read records which are then dropped just moves on: acks behind the head
    are no-ops, the next read starts at the oldest record still held."""
    with Spool(tmp_path, max_bytes=8192, segment_bytes=1024) as spool:
        first = spool.read(0) if spool.append(payload(0)) else []
        for i in range(1, 400):
            spool.append(payload(i))
        spool.ack(first[-1][0])
        held = numbers(read_all(spool))
        assert held[-1] == 399 and held == list(range(held[0], 400))
        assert numbers(spool.read(first[-1][0] + 1, max_records=1)) == [held[0]]


@pytest.mark.parametrize("cut", [1, 5, HEADER_BYTES, HEADER_BYTES + 3])
def test_torn_tail_is_cut_and_appends_continue(tmp_path: Path, cut: int) -> None:
    with Spool(tmp_path) as spool:
        for i in range(10):
            spool.append(payload(i))
    [seg] = segments(tmp_path)
    data = seg.read_bytes()
    record = HEADER_BYTES + len(payload(9))
    seg.write_bytes(data[: len(data) - record + cut])  # the last record only partly written
    with Spool(tmp_path) as spool:
        assert numbers(read_all(spool)) == list(range(9))
        assert spool.torn_bytes == cut
        assert spool.append(payload(99)) == 10
        assert numbers(read_all(spool)) == list(range(9)) + [99]
    with Spool(tmp_path) as spool:
        assert numbers(read_all(spool)) == list(range(9)) + [99]
        assert spool.torn_bytes == 0


def test_garbage_and_bit_flips_are_cut(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        for i in range(5):
            spool.append(payload(i))
    [seg] = segments(tmp_path)
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF  # last record's payload damaged: its CRC no longer matches
    seg.write_bytes(bytes(data) + os.urandom(37))
    with Spool(tmp_path) as spool:
        assert numbers(read_all(spool)) == [0, 1, 2, 3]
        assert spool.append(payload(5)) == 5


def test_damage_in_an_older_segment_keeps_later_segments(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=4096) as spool:
        for i in range(200):
            spool.append(payload(i))
    first = segments(tmp_path)[0]
    data = bytearray(first.read_bytes())
    one = HEADER_BYTES + len(payload(0))
    data[3 * one + HEADER_BYTES + 2] ^= 0xFF  # the fourth record of the first segment
    first.write_bytes(bytes(data))
    with Spool(tmp_path, segment_bytes=4096) as spool:
        got = numbers(read_all(spool))
        assert got[:3] == [0, 1, 2]
        assert 3 not in got
        assert got[-1] == 199 and got == sorted(got)
        assert spool.records == len(got)


def test_damaged_head_file_replays_everything(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        for i in range(5):
            spool.append(payload(i))
        spool.ack(2)
    (tmp_path / "head").write_bytes(b"\x01\x02")
    with Spool(tmp_path) as spool:  # at-least-once: acknowledged records may come again
        assert numbers(read_all(spool)) == [0, 1, 2, 3, 4]


def test_one_owner_at_a_time(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(SpoolLocked):
        Spool(tmp_path)
    spool.close()
    with Spool(tmp_path) as again:
        again.append(b"x")
    with pytest.raises(SpoolError):
        spool.append(b"closed")


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_fsync_policies_store_the_same(tmp_path: Path, fsync: str) -> None:
    with Spool(tmp_path, fsync=fsync, fsync_interval_s=0.0) as spool:  # type: ignore[arg-type]
        for i in range(20):
            spool.append(payload(i))
            spool.sync_if_due()
        spool.sync()
    with Spool(tmp_path) as spool:
        assert numbers(read_all(spool)) == list(range(20))


WRITER = textwrap.dedent("""
    import json, sys
    from alpr_topo.backend.spool import Spool
    spool = Spool(sys.argv[1], segment_bytes=8192, max_bytes=1 << 30, fsync=sys.argv[2])
    i = 0
    while True:
        spool.append(json.dumps({"i": i, "pad": "y" * (i % 300)}).encode())
        if i % 50 == 0:
            spool.ack(spool.next_seq - 40)   # a consumer acknowledging behind the writer
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
        i += 1
""")


@pytest.mark.parametrize("fsync", ["never", "batch"])
def test_kill_9_while_writing_loses_nothing_appended(tmp_path: Path, fsync: str) -> None:
    """SIGKILL a process in the middle of appending and acknowledging: every record whose
    append returned is there, intact and in order, and the spool takes appends again."""
    folder = tmp_path / "spool"
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), fsync],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        last = -1
        for line in proc.stdout:  # let it run through several segments and acks
            last = int(line)
            if last >= 1500 + 311 * round_:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with Spool(folder, segment_bytes=8192) as spool:
            got = [json.loads(d) for _, d in read_all(spool)]
            nums = [g["i"] for g in got]
            assert all(g["pad"] == "y" * (g["i"] % 300) for g in got)
            assert nums == list(range(nums[0], nums[-1] + 1))  # in order, no gap
            assert nums[-1] >= last  # everything reported as appended survived
            assert nums[0] > 0  # the acknowledged part stayed gone
            spool.ack(spool.next_seq - 1)  # start the next round empty
