"""What the console costs the loop: frames per second with and without browsers watching.

    python -m console.overhead --bundle BUNDLE [--frames 600] [--size 640x480] [--viewers 2] [--interval 0.5]

Runs the camera loop over in-memory frames (no capture or decode noise) alternately bare and with
the console attached while `--viewers` clients fetch /api/live and /live.jpg every `--interval`
seconds (0.5 is what the live page does; 0 fetches back to back, a worst case no browser reaches).
Prints the median fps of each, the throughput lost in percent (median and quartiles over
neighbouring bare/watched pairs), and the CPU time per frame of the loop's thread and of the
whole process (loop + web server; the viewers run in other processes). CPU time is what a busy
neighbour on the machine disturbs least: the process's extra CPU per frame, over the bare loop's,
bounds the throughput a CPU-bound line loses even if the server had no core of its own;
`console_cpu_pct_of_a_core` is the same per second of running.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
import urllib.request

import numpy as np

from console.actions import Console
from console.line_view import LineView
from console.routes import build_app
from console.server import Address, ConsoleServer
from runtime.backends import open_backend
from runtime.backends.options import BackendOptions
from runtime.bundle import open_bundle
from runtime.line.events import EventLog
from runtime.line.live_threshold import LiveThreshold
from runtime.line.loop import RunStats, run_loop
from runtime.line.sources import Frame


def frames(count: int, width: int, height: int, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    pool = [np.clip(rng.normal(128, 8, (height, width, 3)), 0, 255).astype(np.uint8) for _ in range(16)]
    return [Frame(pool[index % len(pool)], index=index, started_at=time.perf_counter()) for index in range(count)]


def watch(url: str, interval: float, stop, fetched) -> None:
    """A viewer, in its own process so that its CPU time is not counted as the console's."""
    while not stop.wait(interval):
        for path in ("/api/live", "/live.jpg"):
            try:
                with urllib.request.urlopen(url + path, timeout=5) as answer:
                    answer.read()
                with fetched.get_lock():
                    fetched.value += 1
            except OSError:
                time.sleep(0.01)  # no frame yet


def measure(bundle, backend, frame_list, view: LineView | None = None, url: str = "", viewers: int = 0,
            interval: float = 0.5) -> tuple[float, float, float, int, float]:
    """(fps, loop and process CPU ms per frame, fetches, process CPU share of one core) of one run.

    With a view, the console is fed and watched.
    """
    stop, fetched = multiprocessing.Event(), multiprocessing.Value("i", 0)
    watchers = [multiprocessing.Process(target=watch, args=(url, interval, stop, fetched)) for _ in range(viewers)]
    for watcher in watchers:
        watcher.start()
    started, cpu, process_cpu = time.perf_counter(), time.thread_time(), time.process_time()
    with EventLog(None) as events:
        stats = run_loop(frame_list, backend, bundle.preprocess, LiveThreshold(0.5, "overhead"), "overhead", events,
                         [view] if view is not None else [], RunStats(every_s=0))
    elapsed, cpu, process_cpu = (time.perf_counter() - started, time.thread_time() - cpu,
                                 time.process_time() - process_cpu)
    stop.set()
    for watcher in watchers:
        watcher.join()
    return (stats.frames / elapsed, 1e3 * cpu / stats.frames, 1e3 * process_cpu / stats.frames, fetched.value,
            process_cpu / elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m console.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the frames")
    parser.add_argument("--viewers", type=int, default=2, help="clients fetching the picture and the state")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between a viewer's fetches")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args(argv)
    width, height = (int(value) for value in args.size.lower().split("x"))
    bundle = open_bundle(args.bundle)
    frame_list = frames(args.frames, width, height)
    bare, watched = [], []
    address = Address("127.0.0.1", args.port)
    with open_backend(bundle, "onnxruntime", threads=args.threads) as backend:
        # One server for all runs, idle during the bare ones, as on a line where nobody is watching.
        view = LineView(bundle.preprocess)
        options = BackendOptions(backend.name, backend.precision)
        server = ConsoleServer(build_app(Console(bundle, options, "token", view)), address)
        try:
            measure(bundle, backend, frame_list[: args.frames // 10], view, address.url(), args.viewers)  # warm up
            for _ in range(args.repeats):  # alternate, so a busy neighbour hurts both alike
                bare.append(measure(bundle, backend, frame_list))
                watched.append(measure(bundle, backend, frame_list, view, address.url(), args.viewers, args.interval))
        finally:
            server.close()
    median = lambda runs, column: statistics.median(run[column] for run in runs)  # noqa: E731
    # Each watched run against the bare run just before it: neighbours' load changes slowly, so the
    # pairs share it, and the median of the pairs' losses is steadier than a ratio of two medians.
    losses = sorted(100 * (1 - watched_run[0] / bare_run[0]) for bare_run, watched_run in zip(bare, watched))
    quartiles = statistics.quantiles(losses, n=4) if len(losses) > 1 else losses * 3
    result = {
        "bundle": str(bundle.root), "frames": args.frames, "size": args.size, "viewers": args.viewers,
        "interval_s": args.interval, "repeats": args.repeats,
        "fps_bare": round(median(bare, 0), 1), "fps_with_console": round(median(watched, 0), 1),
        "overhead_pct": round(statistics.median(losses), 2),
        "overhead_pct_quartiles": [round(quartiles[0], 2), round(quartiles[2], 2)],
        "loop_cpu_ms_per_frame_bare": round(median(bare, 1), 4),
        "loop_cpu_ms_per_frame_with_console": round(median(watched, 1), 4),
        "loop_cpu_overhead_pct": round(100 * (median(watched, 1) / median(bare, 1) - 1), 2),
        "process_cpu_ms_per_frame_bare": round(median(bare, 2), 4),
        "process_cpu_ms_per_frame_with_console": round(median(watched, 2), 4),
        "process_cpu_overhead_pct": round(100 * (median(watched, 2) / median(bare, 2) - 1), 2),
        "fetches_per_run": median(watched, 3),
        # the console's CPU, as a share of one core: what a loop that has that core to itself would lose at most
        "console_cpu_pct_of_a_core": round(100 * (median(watched, 4) - median(bare, 4)), 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
