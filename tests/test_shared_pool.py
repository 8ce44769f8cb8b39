"""The counter behind a backbone shared by the products of a line (ONNX Runtime sessions, TensorRT engines)."""

from __future__ import annotations

import threading

from runtime.backends.shared import SharedPool


def test_the_first_holder_loads_the_last_drops_and_a_second_release_counts_nothing() -> None:
    loads, dropped = [], []
    pool: SharedPool[str, object] = SharedPool(dropped=lambda key, value: dropped.append(key))
    first = pool.lease("lite0", lambda: loads.append(1) or object())
    second = pool.lease("lite0", lambda: loads.append(1) or object())
    assert second.value is first.value and loads == [1] and pool.holders() == {"lite0": 2}
    first.release()
    first.release()  # a backend closed twice
    assert pool.holders() == {"lite0": 1} and first.value is None and second.value is not None and dropped == []
    second.release()
    assert pool.holders() == {} and dropped == ["lite0"]
    third = pool.lease("lite0", lambda: loads.append(1) or object())
    assert loads == [1, 1] and third.value is not None  # loaded again once nothing held it


def test_holders_racing_for_one_key_load_it_once() -> None:
    loads = []
    pool: SharedPool[str, int] = SharedPool()
    start = threading.Barrier(8)

    def hold() -> None:
        start.wait()
        pool.lease("part", lambda: loads.append(1) or len(loads))

    threads = [threading.Thread(target=hold) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [1] and pool.holders() == {"part": 8}
