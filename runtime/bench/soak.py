"""Soak test: does `daad run` keep its memory flat over a long run? (Not a unit test: it takes minutes.)

Runs `daad run --loop` over a small folder of frames for `--frames` frames (default 200,000) in a
subprocess, reads the process's resident memory (/proc/PID/status VmRSS, Linux) each time the run
prints a stats line, and fits RSS = a + b * frames by least squares over the samples after the
warm-up. `b` (bytes per frame) is the growth a line camera would see over months; flat means b
is zero within the noise of the allocator. The result is printed as JSON (and written to --json).

    python -m runtime.bench.soak --bundle BUNDLE [--frames 200000] [--json soak.json]

Use a tiny bundle so the run is about the loop, not the model (tests/tiny_bundle.py writes one:
`write_tiny_bundle(Path("/tmp/tiny"), 32, 32)`), and run it niced on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from runtime.atomic import atomic_write_json
from runtime.bundle import open_bundle
from runtime.optional import cv2

FRAMES_DONE = re.compile(r"OK (\d+) NG (\d+) FAULT (\d+)")


@dataclass
class SoakResult:
    frames: int
    samples: int
    warmup_frames: int
    rss_start_mb: float
    rss_end_mb: float
    growth_bytes_per_frame: float  # least-squares slope of RSS over frames after the warm-up
    growth_stderr_bytes_per_frame: float  # its standard error: growth within ~2 of these is noise
    elapsed_s: float
    exit_code: int
    rss_mb_by_frames: list[tuple[int, float]]  # every sample after the warm-up, to see the shape of any growth


def rss_bytes(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) * 1024 if match else None


def write_frames(folder: Path, bundle_root: Path, count: int = 16) -> None:
    """`count` mid-grey frames at the model's own size, a few with a bright square (NG, so NG paths run too)."""
    config = open_bundle(bundle_root).preprocess
    for index in range(count):
        frame = np.full(config.shape, 128, dtype=np.uint8)
        if index % 4 == 0:
            frame[config.height // 3 : config.height // 2, config.width // 3 : config.width // 2] = 250
        cv2().imwrite(str(folder / f"{index:03d}.png"), frame)


def fit_growth(samples: list[tuple[int, int]]) -> tuple[float, float]:
    """Least-squares slope of RSS (bytes) over frames, and its standard error."""
    frames, rss = (np.asarray(column, dtype=np.float64) for column in zip(*samples))
    design = np.vstack([frames, np.ones_like(frames)]).T
    (slope, _), residuals, *_ = np.linalg.lstsq(design, rss, rcond=None)
    dof = max(len(frames) - 2, 1)
    variance = (residuals[0] / dof) if residuals.size else 0.0
    spread = float(((frames - frames.mean()) ** 2).sum())
    return float(slope), float(np.sqrt(variance / spread)) if spread > 0 else float("nan")


def soak(bundle: Path, frames: int, warmup: float = 0.1) -> SoakResult:
    with tempfile.TemporaryDirectory(prefix="daad-soak-") as scratch:
        folder = Path(scratch) / "frames"
        folder.mkdir()
        write_frames(folder, bundle)
        command = [sys.executable, "-m", "runtime", "run", "--bundle", str(bundle), "--source", str(folder),
                   "--loop", "--max-frames", str(frames), "--threshold", "0.3", "--threads", "1",
                   "--events", str(Path(scratch) / "events.jsonl"), "--stats-every", "1"]
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        samples: list[tuple[int, int]] = []
        for line in process.stderr:  # one stats line a second
            done, rss = FRAMES_DONE.search(line), rss_bytes(process.pid)
            if done and rss is not None:
                samples.append((sum(int(value) for value in done.groups()), rss))
        exit_code = process.wait()
    elapsed = time.monotonic() - started
    warmup_frames = int(frames * warmup)
    steady = [sample for sample in samples if sample[0] >= warmup_frames]
    slope, stderr = fit_growth(steady) if len(steady) >= 3 else (float("nan"), float("nan"))
    return SoakResult(frames=samples[-1][0] if samples else 0, samples=len(steady), warmup_frames=warmup_frames,
                      rss_start_mb=round(steady[0][1] / 2**20, 2) if steady else float("nan"),
                      rss_end_mb=round(steady[-1][1] / 2**20, 2) if steady else float("nan"),
                      growth_bytes_per_frame=round(slope, 4), growth_stderr_bytes_per_frame=round(stderr, 4),
                      elapsed_s=round(elapsed, 1), exit_code=exit_code,
                      rss_mb_by_frames=[(done, round(rss / 2**20, 3)) for done, rss in steady])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="a (tiny) bundle folder")
    parser.add_argument("--frames", type=int, default=200_000, help="frames to run (default 200000)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    result = asdict(soak(args.bundle, args.frames))
    print(json.dumps({key: value for key, value in result.items() if key != "rss_mb_by_frames"}, indent=2))
    if args.json is not None:
        atomic_write_json(args.json, result)
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    from runtime.cli import run_script

    run_script(main, "soak")
