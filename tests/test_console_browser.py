"""End to end in a real headless Chromium: `daad run --console` on a synthetic video, driven like a technician.

Debian's chromium and chromium-driver (the Makefile installs them where apt is available) and
Selenium from PyPI; no downloaded browser. Set DAAD_SCREENSHOTS=DIR to keep a screenshot of each
page (docs/CONSOLE.md's pictures are made that way: `make console-screenshots`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: make venv installs it")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from runtime.optional import cv2  # noqa: E402
from tiny_bundle import write_tiny_bundle  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver (make venv does)",
)
TOKEN = "line3-secret"
WAIT_S = 60


def write_line_video(path: Path, frames: int = 120, defect_every: int = 30) -> Path:
    """A belt of mid-grey parts with sensor noise; every `defect_every`-th part has a bright spot."""
    rng = np.random.default_rng(3)
    writer = cv2().VideoWriter(str(path), cv2().VideoWriter_fourcc(*"MJPG"), 15.0, (320, 240))
    for index in range(frames):
        image = np.clip(128 + rng.normal(0, 4 + index % 5, (240, 320, 3)), 0, 255).astype(np.uint8)
        if index % defect_every == defect_every - 1:
            cv2().circle(image, (120 + index % 80, 100), 14, (250, 250, 250), -1)
        writer.write(image)
    writer.release()
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def running_line(tmp_path):
    """`daad run --console` on the video, looping, niced; yields (url, bundle, events, process)."""
    bundle = write_tiny_bundle(tmp_path / "bundle", 48, 64)
    video = write_line_video(tmp_path / "line.avi")
    events = tmp_path / "events.jsonl"
    port = free_port()
    command = [sys.executable, "-m", "runtime", "run", "--bundle", str(bundle), "--source", str(video), "--loop",
               "--threshold", "0.3", "--threads", "1", "--events", str(events), "--stats-every", "0",
               "--console", f"127.0.0.1:{port}", "--console-token", TOKEN]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               preexec_fn=lambda: os.nice(10))
    try:
        announced = process.stderr.readline() + process.stderr.readline()
        assert f"http://127.0.0.1:{port}/" in announced, announced
        yield f"http://127.0.0.1:{port}", bundle, events, process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=WAIT_S)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def text_of(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def screenshot(driver, name: str, settle: bool = True) -> None:
    """`settle`: wait for one more poll, so the page shows current numbers (not for a passing moment)."""
    folder = os.environ.get("DAAD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        time.sleep(1.0 if settle else 0.0)
        driver.save_screenshot(str(Path(folder) / f"console-{name}.png"))


def test_watch_calibrate_from_the_line_save_and_the_loop_switches(running_line, browser) -> None:
    url, bundle, events, process = running_line
    wait = WebDriverWait(browser, WAIT_S)

    browser.get(f"{url}/#token={TOKEN}")
    wait.until(lambda d: d.execute_script("const i = document.getElementById('frame'); return i.complete && i.naturalWidth > 0"))
    wait.until(lambda d: int(text_of(d, "count-OK")) > 0)
    first = int(text_of(browser, "count-OK"))
    wait.until(lambda d: int(text_of(d, "count-OK")) > first)  # the counters move
    assert text_of(browser, "threshold") == "0.3000" and text_of(browser, "verdict") in ("OK", "NG")
    assert browser.find_elements(By.CSS_SELECTOR, "#trend circle")
    screenshot(browser, "live")

    browser.find_element(By.LINK_TEXT, "Calibrate").click()
    parts = browser.find_element(By.ID, "collect-parts")
    parts.clear()
    parts.send_keys("240")
    browser.find_element(By.ID, "collect-button").click()
    wait.until(lambda d: "240 of 240 parts collected - done" in text_of(d, "collect-progress"))
    frr = browser.find_element(By.ID, "target-frr")
    frr.clear()
    frr.send_keys("0.05")
    browser.find_element(By.ID, "propose-button").click()
    wait.until(lambda d: d.find_element(By.ID, "proposal").is_displayed() and text_of(d, "proposal-threshold"))
    proposed = float(text_of(browser, "proposal-threshold"))
    assert 0 < proposed < 0.3 and "false rejects per 1000" in text_of(browser, "proposal-lines")
    browser.find_element(By.ID, "saved-by").send_keys("anna")
    browser.find_element(By.ID, "note").send_keys("first calibration from the line")
    screenshot(browser, "calibrate")
    browser.find_element(By.ID, "save-button").click()
    wait.until(lambda d: "saved: the line now uses threshold" in text_of(d, "message"))

    record = json.loads((bundle / "threshold.json").read_text())
    assert record["saved_by"] == "anna" and record["note"] == "first calibration from the line"
    assert record["counts"]["good"] == 240 and f"{record['threshold']:.4g}" == f"{proposed:.4g}"
    browser.find_element(By.LINK_TEXT, "Live").click()
    def shows_new_threshold(driver) -> bool:
        shown = text_of(driver, "threshold")  # "-" until the page's first poll
        return shown != "-" and float(shown) == pytest.approx(record["threshold"], rel=1e-3)

    wait.until(shows_new_threshold)

    def judged_with_new_threshold() -> list[dict]:
        lines = [json.loads(line) for line in events.read_text().splitlines()[:-1]]  # the last may be in flight
        return [line for line in lines if line.get("threshold") == record["threshold"] and "verdict" in line]

    wait.until(lambda d: judged_with_new_threshold())
    switches = [json.loads(line) for line in events.read_text().splitlines() if '"threshold_switch"' in line]
    assert len(switches) == 1 and switches[0]["threshold"] == record["threshold"] and switches[0]["previous"] == 0.3
    assert switches[0]["origin"] == "console save by anna"
    assert process.poll() is None  # the line never stopped

    if os.environ.get("DAAD_SCREENSHOTS"):
        for page in ("review", "history"):
            browser.find_element(By.LINK_TEXT, page.capitalize()).click()
            time.sleep(1.0)
            if page == "review":  # listed pictures stay put: mark a spot as a defect, a faint one as a false reject
                cards = browser.find_elements(By.CSS_SELECTOR, ".picture")
                scores = [float(card.text.split("score ")[1].split()[0]) for card in cards]
                for index, label in ((scores.index(max(scores)), "defect"), (scores.index(min(scores)), "good")):
                    cards[index].find_element(By.CSS_SELECTOR, f"button[data-label={label}]").click()
                    wait.until(lambda d, i=index: d.find_elements(By.CSS_SELECTOR, ".picture .label")[i].text)
            if page == "history":
                browser.find_element(By.ID, "drift-button").click()
                wait.until(lambda d: text_of(d, "drift-lines"))
            screenshot(browser, page)


def test_after_a_restart_review_lists_the_earlier_run_and_a_damaged_threshold_offers_the_roll_back(
        tmp_path, browser) -> None:
    """A run ends; the station restarts with `daad console`: its Review page shows the run's NG parts
    and marks one, and with threshold.json damaged by hand the History page says so and rolls back."""
    from runtime.bundle import open_bundle
    from runtime.threshold import ThresholdRecord, write_threshold

    bundle = write_tiny_bundle(tmp_path / "bundle", 48, 64)
    video = write_line_video(tmp_path / "line.avi", frames=60, defect_every=30)  # two defects
    run = subprocess.run([sys.executable, "-m", "runtime", "run", "--bundle", str(bundle), "--source", str(video),
                          "--threshold", "0.3", "--threads", "1", "--stats-every", "0", "--console", "0",
                          "--console-token", TOKEN], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and json.loads(run.stdout)["review_saved"] == 4, run.stderr
    opened = open_bundle(bundle)
    for value in (0.25, 0.3):
        write_threshold(opened, ThresholdRecord(threshold=value, model_sha256=opened.sha256, backend="onnxruntime",
                                                precision="fp32", saved_by=f"at {value}"))
    (bundle / "threshold.json").write_text((bundle / "threshold.json").read_text().replace('"threshold": 0.3',
                                                                                            '"threshold": 1e308'))
    port = free_port()
    console = subprocess.Popen([sys.executable, "-m", "console", "console", "--bundle", str(bundle), "--port", str(port),
                                "--console-token", TOKEN], stderr=subprocess.PIPE, text=True)
    try:
        assert f":{port}/" in console.stderr.readline()
        wait = WebDriverWait(browser, WAIT_S)
        browser.get(f"http://127.0.0.1:{port}/review#token={TOKEN}")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".picture")) == 2)
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('.picture img')].every((i) => i.complete && i.naturalWidth > 0)"))
        cards = browser.find_elements(By.CSS_SELECTOR, ".picture")
        assert all("earlier run" in card.text for card in cards) and "#59" in cards[0].text
        cards[0].find_element(By.CSS_SELECTOR, "button[data-label=defect]").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".picture .label")[0].text == "marked: real defect")
        assert len(list((bundle / "review" / "defect").glob("*.png"))) == 1

        browser.find_element(By.LINK_TEXT, "History").click()
        wait.until(lambda d: "threshold.json" in text_of(d, "message") and "Roll back" in text_of(d, "message"))
        buttons = browser.find_elements(By.XPATH, "//button[text()='Roll back']")
        assert len(buttons) == 2  # nothing is active: both earlier thresholds are offered
        buttons[0].click()
        alert = wait.until(lambda d: d.switch_to.alert)
        alert.send_keys("carl")
        alert.accept()
        wait.until(lambda d: "rolled back: the line now uses threshold 0.3000" in text_of(d, "message"))
        assert json.loads((bundle / "threshold.json").read_text())["saved_by"] == "carl"
    finally:
        console.send_signal(signal.SIGINT)
        console.wait(timeout=WAIT_S)


def test_the_technician_switches_the_product_and_rolls_it_back_from_the_live_page(tmp_path, browser) -> None:
    """`daad run --products` with the console: the Live page switches to product b (refused without the token),
    the line judges by b from a frame boundary on, the Calibrate page is then b's, and one click rolls it back to a,
    whose History page it then is."""
    from runtime.bundle import open_bundle
    from runtime.threshold import ThresholdRecord, write_threshold

    products = tmp_path / "products"
    for name, threshold in (("a", 0.3), ("b", 0.9)):
        bundle = open_bundle(write_tiny_bundle(products / name, 48, 64))
        write_threshold(bundle, ThresholdRecord(threshold=threshold, model_sha256=bundle.sha256, backend="onnxruntime",
                                                precision="fp32"))
    video, events, port = write_line_video(tmp_path / "line.avi"), tmp_path / "events.jsonl", free_port()
    process = subprocess.Popen([sys.executable, "-m", "runtime", "run", "--products", str(products), "--product", "a",
                                "--source", str(video), "--loop", "--threads", "1", "--events", str(events),
                                "--stats-every", "0", "--console", f"127.0.0.1:{port}", "--console-token", TOKEN],
                               stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.nice(10))
    try:
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda _: socket.socket().connect_ex(("127.0.0.1", port)) == 0)
        browser.get(f"http://127.0.0.1:{port}/#token={TOKEN}")
        wait.until(lambda d: text_of(d, "product") == "a")
        assert not browser.find_element(By.ID, "rollback-button").is_enabled()
        token = browser.find_element(By.ID, "token")
        token.clear()
        browser.find_element(By.ID, "product-choice").send_keys("b")
        browser.find_element(By.ID, "switch-button").click()  # without the token
        wait.until(lambda d: "needs the console token" in text_of(d, "message"))
        assert text_of(browser, "product") == "a"

        token.send_keys(TOKEN)
        browser.find_element(By.ID, "product-by").send_keys("anna")
        browser.find_element(By.ID, "switch-button").click()
        wait.until(lambda d: "'b' is loaded and checked" in text_of(d, "message"))
        wait.until(lambda d: text_of(d, "product") == "b" and text_of(d, "product-previous") == "a")
        bundle_shown = browser.find_element(By.CSS_SELECTOR, "header .bundle")
        wait.until(lambda _: bundle_shown.text == str(products / "b"))  # the pages follow the product on the line
        screenshot(browser, "product")
        browser.find_element(By.LINK_TEXT, "Calibrate").click()
        wait.until(lambda d: "of product b" in d.find_element(By.TAG_NAME, "h1").text)
        assert str(products / "b" / "review" / "good") in browser.page_source
        browser.find_element(By.LINK_TEXT, "Live").click()
        wait.until(lambda d: text_of(d, "product") == "b" and d.find_element(By.ID, "rollback-button").is_enabled())
        browser.find_element(By.ID, "product-by").send_keys("anna")
        browser.find_element(By.ID, "rollback-button").click()
        wait.until(lambda d: text_of(d, "product") == "a" and text_of(d, "product-previous") == "b")
        browser.find_element(By.LINK_TEXT, "History").click()
        wait.until(lambda d: "of product a" in d.find_element(By.TAG_NAME, "h1").text)
        assert process.poll() is None  # the line never stopped
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=WAIT_S)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    switches = [(line["product"], line["origin"]) for line in lines if line.get("event") == "product_switch"]
    assert switches == [("b", "console switch by anna"), ("a", "console roll back by anna")]
    frames = [line for line in lines if "verdict" in line]
    assert [line["frame"] for line in frames] == list(range(len(frames)))
    assert {line["threshold"] for line in frames if line["product"] == "b"} == {0.9}


def test_the_technician_teaches_a_new_product_from_the_line_and_switches_to_it(tmp_path, backbone_part, browser) -> None:
    """`daad run --products --console` on a taught product: name a new one, take the next parts of the line, drop
    the spotted ones, watch the fit, read the calibration, save; then switch the line to it from the Live page."""
    from runtime.bundle import open_bundle
    from runtime.cli import main as daad
    from runtime.threshold import read_threshold

    products, good = tmp_path / "products", tmp_path / "good"
    good.mkdir()
    rng = np.random.default_rng(5)
    for index in range(25):  # the line's product a, taught on the same backbone part (the console's default)
        cv2().imwrite(str(good / f"{index:03d}.png"), np.clip(128 + rng.normal(0, 5, (240, 320, 3)), 0, 255).astype(np.uint8))
    assert daad(["teach", "--backbone", str(backbone_part), "--good", str(good), "--out", str(products / "a"),
                 "--holdout", "0.4", "--memory-size", "150", "--no-progress"]) == 0  # fmt: skip
    video, events, port = write_line_video(tmp_path / "line.avi"), tmp_path / "events.jsonl", free_port()
    process = subprocess.Popen([sys.executable, "-m", "runtime", "run", "--products", str(products), "--product", "a",
                                "--source", str(video), "--loop", "--threads", "1", "--events",
                                str(events), "--stats-every", "0", "--console", f"127.0.0.1:{port}", "--console-token",
                                TOKEN],
                               stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.nice(10))
    try:
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda _: socket.socket().connect_ex(("127.0.0.1", port)) == 0)
        browser.get(f"http://127.0.0.1:{port}/#token={TOKEN}")
        browser.find_element(By.LINK_TEXT, "New product").click()
        wait.until(lambda d: text_of(d, "teach-products") == str(products))
        browser.find_element(By.ID, "teach-name").send_keys("../cap")
        browser.find_element(By.ID, "take-button").click()
        wait.until(lambda d: "product name '../cap'" in text_of(d, "message"))

        browser.find_element(By.ID, "teach-name").clear()
        browser.find_element(By.ID, "teach-name").send_keys("cap-blue")
        parts = browser.find_element(By.ID, "teach-parts")
        parts.clear()
        parts.send_keys("56")
        browser.find_element(By.ID, "take-button").click()
        wait.until(lambda d: text_of(d, "teach-count").startswith("56 of 56 parts taken"))
        thumbnails = browser.find_elements(By.CSS_SELECTOR, "#teach-grid .thumb")
        assert len(thumbnails) == 56
        # the technician drops the parts with a spot (every 30th of the video) and the first one
        spotted = [index for index, thumb in enumerate(thumbnails) if int(thumb.text.split()[-1]) % 30 == 29]
        dropped = sorted({0, *spotted})
        dropped_names = {thumbnails[index].text for index in dropped}
        for index in dropped:
            thumbnails[index].click()
        assert text_of(browser, "teach-count") == f"56 of 56 parts taken, {len(dropped)} dropped"
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#teach-grid img')].every((i) => i.complete && i.naturalWidth > 0)"))
        screenshot(browser, "teach-parts")

        browser.find_element(By.ID, "fit-button").click()
        wait.until(lambda d: d.find_element(By.ID, "teach-fit-section").is_displayed())
        browser.execute_script("document.getElementById('teach-fit-section').scrollIntoView()")
        screenshot(browser, "teach-fit", settle=False)
        wait.until(lambda d: d.find_element(By.ID, "teach-evidence").is_displayed()
                   or "error" in d.find_element(By.ID, "message").get_attribute("class"))
        assert text_of(browser, "message") == "", text_of(browser, "message")
        assert "false rejects per 1000 good parts" in text_of(browser, "teach-lines")
        wait.until(lambda d: d.execute_script("const i = document.getElementById('teach-plot'); "
                                              "return i.complete && i.naturalWidth > 0"))
        browser.execute_script("document.getElementById('teach-evidence').scrollIntoView()")
        screenshot(browser, "teach-evidence")
        assert not (products / "cap-blue").exists()

        browser.find_element(By.ID, "save-product-button").click()
        wait.until(lambda d: text_of(d, "teach-saved").startswith(f"saved as {products / 'cap-blue'}"))
        screenshot(browser, "teach-saved")

        browser.find_element(By.LINK_TEXT, "Live").click()
        wait.until(lambda d: "cap-blue" in text_of(d, "product-choice"))
        browser.find_element(By.ID, "product-choice").send_keys("cap-blue")
        browser.find_element(By.ID, "product-by").send_keys("anna")
        browser.find_element(By.ID, "switch-button").click()
        wait.until(lambda d: text_of(d, "product") == "cap-blue")
        assert process.poll() is None  # the line never stopped
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=WAIT_S)
    bundle = open_bundle(products / "cap-blue")
    assert read_threshold(bundle) is not None and bundle.metadata.training["product"] == "cap-blue"
    used = bundle.metadata.training["memory_parts"] + bundle.metadata.training["calibration_parts"]
    assert len(used) == 56 - len(dropped) and not dropped_names & set(used)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    switches = [(line["product"], line["origin"]) for line in lines if line.get("event") == "product_switch"]
    assert switches == [("cap-blue", "console switch by anna")]
    frames = [line for line in lines if "verdict" in line]
    assert [line["frame"] for line in frames] == list(range(len(frames)))  # no frame lost while it taught
    assert frames[-1]["product"] == "cap-blue" and frames[-1]["threshold"] == read_threshold(bundle).threshold
