"""`difflab serve` as a real uvicorn server on 127.0.0.1: the example client, and the page in headless chromium."""

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from test_serve_api import CLASSES, write_checkpoint

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`difflab serve` on a free loopback port with a tiny checkpoint; stopped when the module's tests are done."""
    folder = tmp_path_factory.mktemp("live")
    checkpoint = write_checkpoint(folder / "checkpoint.safetensors")
    write_checkpoint(folder / "models" / "other.safetensors", CLASSES)
    port = free_port()
    log = open(folder / "server.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "difflab", "serve", str(checkpoint), "--port", str(port),
                                "--threads", "1", "--models-dir", str(folder / "models")],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"difflab serve did not come up:\n{log.read()}")
            try:
                requests.get(f"{url}/sdapi/v1/progress", timeout=1).raise_for_status()
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_example_client_runs_unchanged(server, tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "a1111_client.py"), "--url", server,
                          "--prompt", "a coat", "--steps", "4", "--seed", "11", "--batch-size", "2",
                          "--out", str(tmp_path / "img")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "img-1.png: seed 12" in run.stdout and "warning: prompt ignored" in run.stdout
    image = Image.open(tmp_path / "img-0.png")
    assert image.size == (16, 16) and "Seed: 11," in image.text["parameters"]


def test_workflow_client_runs_unchanged(server, tmp_path):
    """Only the web UI's routes and fields: switch checkpoint, sampler + scheduler, 64x48, task progress, png-info."""
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "a1111_workflow_client.py"), "--url", server,
                          "--model", "other", "--prompt", "Bag", "--cfg-scale", "3", "--steps", "4", "--seed", "3",
                          "--width", "64", "--height", "48", "--out", str(tmp_path / "wf")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "schedulers: Automatic, Uniform, Karras, Exponential, Normal" in lines
    assert any(line.startswith("model: other [") for line in lines) and "task completed: True" in lines
    assert "Sampler=DPM++ 2M, Schedule type=Karras, CFG scale=3, Seed=3, Size-1=64, Size-2=48" in run.stdout
    assert "fashion_mnist_cond [" in run.stdout  # the bundled models are offered too
    assert Image.open(tmp_path / "wf-0.png").size == (64, 48)
    first = requests.get(f"{server}/sdapi/v1/sd-models", timeout=30).json()[0]["title"]
    requests.post(f"{server}/sdapi/v1/options", json={"sd_model_checkpoint": first}, timeout=30).raise_for_status()


def test_browser_page_generates_an_image(server, tmp_path):
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    artifacts = Path(os.environ.get("DIFFLAB_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 720})
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(server)
            page.wait_for_selector("#sampler option", state="attached")
            page.fill("#prompt", "a coat")
            page.fill("#steps", "30")
            page.fill("#batch", "3")
            page.select_option("#sampler", "DPM++ 2M Karras")
            page.click("#dice")
            assert int(page.input_value("#seed")) >= 0
            page.click("#generate")
            page.wait_for_selector('#progress[data-state="done"]', timeout=60_000)
            assert page.eval_on_selector("#progress", "p => p.value") == 1
            page.wait_for_function("document.querySelectorAll('#gallery img').length === 3")
            widths = page.eval_on_selector_all("#gallery img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
            assert widths == [16, 16, 16]
            assert "prompt ignored" in page.inner_text("#gallery") and "DPM++ 2M Karras" in page.inner_text("#gallery")
            assert page.get_attribute("#gallery a.download", "download").endswith(".png")
            assert "Steps: 30, Sampler: DPM++ 2M Karras" in page.inner_text("#gallery pre.infotext")
            # the checkpoint selector switches to the class-conditional model of --models-dir
            other = next(o for o in page.eval_on_selector_all("#model-select option", "os => os.map(o => o.value)")
                         if "other" in o)
            page.select_option("#model-select", other)
            page.wait_for_selector("#class-row:not([hidden])")
            assert page.inner_text("#model").startswith("other") and "classes" in page.inner_text("#model")
            page.select_option("#class", CLASSES[1])
            page.fill("#batch", "1")
            page.click("#generate")
            page.wait_for_function("document.querySelectorAll('#gallery img').length === 4")
            assert page.inner_text("#gallery pre.infotext").startswith(CLASSES[1])  # the newest image's text first
            assert errors == [] and page.is_hidden("#error")
            screenshot = artifacts / "serve_page.png"
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"screenshot: {screenshot}")
        finally:
            browser.close()
