import time

from alpr_topo.core.reorder import Reorderer


def test_in_order_items_pass_once_the_first_is_known() -> None:
    r: Reorderer[int] = Reorderer(window=8, max_wait_s=0.05)
    assert r.push("a", 0, 0) == []  # the first frame waits: an earlier one may be in flight
    time.sleep(0.06)
    assert r.poll() == [0]
    assert r.push("a", 1, 1) == [1]
    assert r.push("a", 3, 3) == []
    assert r.push("a", 2, 2) == [2, 3]


def test_gap_is_skipped_after_the_wait_counted_from_the_last_progress() -> None:
    r: Reorderer[int] = Reorderer(window=100, max_wait_s=0.1)
    r.push("a", 0, 0)
    r.push("a", 1, 1)
    r.push("a", 3, 3)  # 2 is missing
    time.sleep(0.11)
    assert r.poll() == [0, 1]  # first flush: the first frame's wait ran out
    assert r.poll() == []  # 3 still waits for 2: the clock restarted at the last release
    assert r.push("a", 2, 2) == [2, 3]
    r.push("a", 5, 5)
    time.sleep(0.11)
    assert r.poll() == [5]  # 4 never came
    assert r.push("a", 4, 4) == [4] and r.late == 1


def test_window_overflow_skips_the_gap_at_once_and_cameras_are_independent() -> None:
    r: Reorderer[str] = Reorderer(window=2, max_wait_s=10)
    r.push("a", 0, "a0")
    assert r.push("b", 0, "b0") == []
    assert r.push("a", 1, "a1") == []
    assert r.push("a", 2, "a2") == ["a0", "a1", "a2"]  # three held > window of two
    assert r.held() == 1 and r.push("b", 1, "b1") == []
