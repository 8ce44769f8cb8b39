"""`daad run --metrics-port`: a real run in a subprocess, scraped over HTTP while it runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import cv2
import pytest
from test_run_cli import ROOT
from test_sources import part_frames, write_video
from tiny_bundle import grey_frame

from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.bundle import open_bundle
from runtime.line.events import EventLog
from runtime.line.loop import RunStats, open_reader, run_loop
from runtime.line.sources import open_source
from runtime.plant.metrics import MetricsServer

parser = pytest.importorskip("prometheus_client.parser", reason="prometheus-client is not installed (extra `plant`)")


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in parser.text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_of_a_running_station(tiny_bundle, tmp_path, mqtt_broker) -> None:
    video = write_video(tmp_path / "line.avi", part_frames(12))
    command = [sys.executable, "-m", "runtime", "run", "--bundle", str(tiny_bundle), "--source", str(video), "--loop",
               "--threshold", "0.3", "--threads", "1", "--events", str(tmp_path / "events.jsonl"),
               "--save-ng", str(tmp_path / "ng"), "--station", "cap-1", "--stats-every", "0",
               "--publish", f"mqtt://127.0.0.1:{mqtt_broker.port}/plant",
               "--metrics-port", "0", "--metrics-host", "127.0.0.1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:  # the metrics line names the port the system chose
            if match := re.search(r"metrics on (http://\S+/metrics)", line):
                break
        assert match, "no metrics line on stderr"
        first = scrape(match.group(1))
        deadline = time.monotonic() + 60
        while (second := scrape(match.group(1)))[("daad_frames_total", (("verdict", "NG"),))] < 10:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0
    frames = {verdict: second[("daad_frames_total", (("verdict", verdict),))] for verdict in ("OK", "NG", "FAULT")}
    assert frames["NG"] >= 10 and frames["OK"] >= 3 * frames["NG"] - 3 and frames["FAULT"] == 0
    assert first[("daad_frames_total", (("verdict", "NG"),))] <= frames["NG"]  # counters only grow
    judged = sum(frames.values())
    assert second[("daad_stage_latency_seconds_count", (("stage", "infer"),))] >= judged  # scraped a moment later
    assert second[("daad_stage_latency_seconds_bucket", (("le", "+Inf"), ("stage", "total")))] >= judged
    assert second[("daad_threshold", ())] == 0.3
    info = next(dict(labels) for (name, labels), _ in second.items() if name == "daad_station_info")
    assert info["station"] == "cap-1" and info["model_sha256"] == open_bundle(tiny_bundle).sha256
    for counter in ("daad_read_total", "daad_dropped_total", "daad_read_errors_total", "daad_artefacts_dropped_total",
                    "daad_ng_saved_total", "daad_published_total"):
        assert (counter, ()) in second, counter
    assert ("daad_pending", ()) in second and second[("daad_read_total", ())] >= judged


def test_faults_are_counted_by_cause(tiny_bundle, tmp_path) -> None:
    """Through the loop: a damaged image and a too-small one are FAULTs of cause bad_frame, from the start at 0."""
    folder = tmp_path / "parts"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), grey_frame(32, 32))
    (folder / "damaged.png").write_bytes(b"not an image")
    cv2.imwrite(str(folder / "tiny.png"), grey_frame(4, 4))
    bundle = open_bundle(tiny_bundle)
    server = MetricsServer(0, "127.0.0.1", lambda: {"station": "cap-1"}, lambda: 0.3, dict)
    try:
        with OnnxRuntimeBackend(bundle, threads=1) as backend, EventLog(None) as events, \
                open_reader(open_source(str(folder)), "lossless", bundle.preprocess) as reader:
            run_loop(reader, backend, bundle.preprocess, 0.3, "parts", events, [server], RunStats(every_s=0))
        samples = scrape(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.close()
    faults = {dict(labels)["cause"]: value for (name, labels), value in samples.items() if name == "daad_faults_total"}
    assert faults == {"bad_frame": 2, "inference_failed": 0, "score_not_finite": 0, "threshold_not_finite": 0}
