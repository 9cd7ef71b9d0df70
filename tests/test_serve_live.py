"""`difflab serve` as a real uvicorn server on 127.0.0.1: the example client, and the page in headless chromium."""

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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


@contextlib.contextmanager
def serving(arguments: list[str], folder: Path):
    """`difflab serve ARGUMENTS` on a free loopback port, its URL while the block runs (its log in folder)."""
    port = free_port()
    log = open(folder / "server.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "difflab", "serve", *arguments, "--port", str(port),
                                "--threads", "1"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`difflab serve` with a tiny checkpoint; stopped when the module's tests are done."""
    folder = tmp_path_factory.mktemp("live")
    checkpoint = write_checkpoint(folder / "checkpoint.safetensors")
    write_checkpoint(folder / "models" / "other.safetensors", CLASSES)
    with serving([str(checkpoint), "--models-dir", str(folder / "models")], folder) as url:
        yield url


def playwright_or_skip():
    """playwright's sync_playwright, or a skip naming what is missing."""
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    return sync_playwright


@contextlib.contextmanager
def browser_page(tmp_path: Path, height: int, screenshot: str):
    """A chromium page (1100 x height) that records page errors; unless the test failed, the page must end with no
    error shown and is saved as `screenshot` in $DIFFLAB_TEST_ARTIFACTS (default tmp_path)."""
    sync_playwright = playwright_or_skip()
    artifacts = Path(os.environ.get("DIFFLAB_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": height})
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            yield page
            assert errors == [] and page.is_hidden("#error")
            page.screenshot(path=str(artifacts / screenshot), full_page=True)
            print(f"screenshot: {artifacts / screenshot}")
        finally:
            browser.close()


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
    with browser_page(tmp_path, 720, "serve_page.png") as page:
        page.goto(server)
        page.wait_for_selector("#sampler option", state="attached")
        page.fill("#prompt", "a coat")
        page.fill("#steps", "30")
        page.fill("#batch", "3")
        page.select_option("#sampler", "DPM++ 2M")
        page.select_option("#scheduler", "Karras")
        page.click("#dice")
        assert int(page.input_value("#seed")) >= 0
        page.click("#generate")
        page.wait_for_selector('#progress[data-state="done"]', timeout=60_000)
        assert page.eval_on_selector("#progress", "p => p.value") == 1
        page.wait_for_function("document.querySelectorAll('#gallery img').length === 3")
        widths = page.eval_on_selector_all("#gallery img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
        assert widths == [16, 16, 16]
        assert "prompt ignored" in page.inner_text("#gallery") and "Karras" in page.inner_text("#gallery")
        assert page.get_attribute("#gallery a.download", "download").endswith(".png")
        assert "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras" in page.inner_text("#gallery pre.infotext")
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


def test_browser_page_hires_fix(server, tmp_path):
    """The Hires. fix panel (txt2img only): its upscalers are the server's latent modes, its checkpoints, samplers and
    schedulers start with the UI's "Use same ..."; on, the images come back at the upscaled size with the UI's
    infotext."""
    with browser_page(tmp_path, 900, "serve_page_hires.png") as page:
        page.goto(server)
        page.wait_for_selector("#hr-upscaler option", state="attached")
        unconditional = next(o for o in page.eval_on_selector_all("#model-select option", "os => os.map(o => o.value)")
                             if "other" not in o)  # another test may have switched to the class model
        page.select_option("#model-select", unconditional)
        page.wait_for_selector("#class-row", state="hidden")
        assert page.is_visible("#hires") and page.is_hidden("#hires-fields") and page.is_hidden("#hr-prompt")
        options = page.eval_on_selector_all("#hr-upscaler option", "os => os.map(o => o.value)")
        assert options[:2] == ["Latent", "Latent (antialiased)"]
        assert page.eval_on_selector("#hr-sampler option", "o => o.value") == "Use same sampler"
        page.check("#hr-enable")
        assert page.is_visible("#hires-fields")
        page.fill("#steps", "4")
        page.fill("#batch", "1")
        page.fill("#hr-steps", "3")
        page.select_option("#hr-sampler", "DDIM")
        page.select_option("#hr-scheduler", "Exponential")
        page.click("#generate")
        page.wait_for_selector('#progress[data-state="done"]', timeout=60_000)
        assert page.eval_on_selector("#gallery img", "i => i.complete && i.naturalWidth") == 32  # 16 x 2
        assert ("Denoising strength: 0.7, Hires sampler: DDIM, Hires schedule type: Exponential, Hires upscale: 2, "
                "Hires steps: 3, Hires upscaler: Latent") in page.inner_text("#gallery pre.infotext")
        assert page.eval_on_selector("#hr-checkpoint option", "o => o.value") == "Use same checkpoint"
        other = next(o for o in page.eval_on_selector_all("#hr-checkpoint option", "os => os.map(o => o.value)")
                     if o.startswith("other ["))
        page.select_option("#hr-checkpoint", other)  # the second pass on the other model
        page.click("#generate")
        page.wait_for_function("document.querySelectorAll('#gallery img').length === 2")
        assert "Denoising strength: 0.7, Hires checkpoint: other [" in page.inner_text("#gallery pre.infotext")
        page.select_option("#hr-checkpoint", "Use same checkpoint")
        page.fill("#hr-prompt", "a bag")  # an unconditional model: ignored, with a warning on the card
        page.click("#generate")
        page.wait_for_function("document.querySelectorAll('#gallery img').length === 3")
        assert "hr_prompt ignored: model" in page.inner_text("#gallery .card .warn")
        page.check("#mode-img2img")
        assert page.is_hidden("#hires")
        page.check("#mode-txt2img")
        assert page.is_visible("#hires-fields")


def test_browser_page_inpaints_a_painted_mask(server, tmp_path):
    """The img2img tab: upload an image, paint a mask over its right side, edit; the unpainted side comes back as is."""
    source = tmp_path / "ramp.png"
    Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8)[None], (16, 1))).save(source)
    with browser_page(tmp_path, 820, "serve_page_inpaint.png") as page:
        page.goto(server)
        page.wait_for_selector("#sampler option", state="attached")
        page.check("#mode-img2img")
        assert page.is_visible("#edit-panel") and page.inner_text("#generate") == "Edit"
        page.set_input_files("#init-file", str(source))
        page.wait_for_function("editor.loaded")
        box = page.locator("#mask-canvas").bounding_box()
        page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.2 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.8 * box["height"], steps=8)
        page.mouse.up()
        assert "inpainting" in page.inner_text("#mask-state")
        page.eval_on_selector("#strength", "e => { e.value = '1'; e.dispatchEvent(new Event('input')); }")
        page.fill("#steps", "4")
        page.fill("#batch", "1")
        page.click("#generate")
        page.wait_for_selector('#progress[data-state="done"]', timeout=60_000)
        page.wait_for_function("document.querySelectorAll('#gallery img').length === 1 && "
                               "document.querySelector('#gallery img').complete")
        text = page.inner_text("#gallery pre.infotext")
        assert "Denoising strength: 1" in text and "Masked content: original" in text
        # the left half was not painted: its pixels are the upload's, read back from the result in the page
        same = page.evaluate("""() => {
            const result = document.querySelector('#gallery img'), canvas = document.createElement('canvas');
            canvas.width = canvas.height = 16;
            const c = canvas.getContext('2d');
            c.drawImage(result, 0, 0);
            const out = c.getImageData(0, 0, 8, 16).data;
            const ref = document.getElementById('init-canvas').getContext('2d').getImageData(0, 0, 8, 16).data;
            return out.every((v, i) => v === ref[i]);
        }""")
        assert same
