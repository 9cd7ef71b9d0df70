"""One generation at a time: the bounded queue (503 + Retry-After), progress while running, and interrupt."""

import base64
import io
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from difflab.serve.app import create_app
from difflab.serve.model import load_served_model
from test_serve_api import write_checkpoint


class Gate:
    """Makes the network wait for a permit before each evaluation, so a test decides how far sampling gets."""

    def __init__(self, net):
        self.permits = threading.Semaphore(0)
        forward = net.forward

        def gated(*args):
            assert self.permits.acquire(timeout=30), "the test never released the gate"
            return forward(*args)

        net.forward = gated

    def release(self, n=1000):
        for _ in range(n):
            self.permits.release()


@pytest.fixture
def gated(tmp_path):
    model = load_served_model(write_checkpoint(tmp_path / "checkpoint.safetensors"))
    gate = Gate(model.denoiser.net)
    app = create_app(model, queue_size=1)
    with TestClient(app) as client:
        yield client, gate
        gate.release()


def in_background(client, body):
    """POST txt2img on a thread; returns a function that waits for and returns the response."""
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("r", client.post("/sdapi/v1/txt2img", json=body)))
    thread.start()

    def result():
        thread.join(60)
        return box["r"]

    return result


def wait_for(client, condition, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = client.get("/sdapi/v1/progress").json()
        if condition(progress):
            return progress
        time.sleep(0.02)
    raise AssertionError(f"progress never matched; last {progress}")


def test_a_full_queue_answers_503_with_retry_after(gated):
    client, gate = gated
    running = in_background(client, {"steps": 2, "seed": 1})
    wait_for(client, lambda p: p["state"]["job"] == "txt2img")
    queued = in_background(client, {"steps": 2, "seed": 2})
    wait_for(client, lambda p: p["state"]["queued"] == 1)
    refused = client.post("/sdapi/v1/txt2img", json={"steps": 2, "seed": 3})
    assert refused.status_code == 503 and "busy" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert client.get("/sdapi/v1/samplers").status_code == 200  # the rest of the API stays responsive
    gate.release()
    assert running().status_code == queued().status_code == 200
    assert client.post("/sdapi/v1/txt2img", json={"steps": 2, "seed": 3}).status_code == 200  # room again


def test_progress_and_interrupt_keep_the_finished_batches(gated):
    client, gate = gated
    gate.release(3)  # euler: batch 1 takes 2 evaluations, then batch 2 stops inside its 2nd step
    response = in_background(client, {"steps": 2, "seed": 5, "n_iter": 3, "sampler_name": "Euler"})
    progress = wait_for(client, lambda p: p["state"]["job_no"] == 1 and p["state"]["sampling_step"] == 1)
    assert progress["progress"] == pytest.approx(3 / 6) and progress["state"]["job_count"] == 3
    assert Image.open(io.BytesIO(base64.b64decode(progress["current_image"]))).size == (16, 16)
    assert wait_for(client, lambda p: True)["current_image"] is not None
    assert client.get("/sdapi/v1/progress", params={"skip_current_image": True}).json()["current_image"] is None
    assert client.post("/sdapi/v1/interrupt").json() == {"interrupted": True}
    assert client.get("/sdapi/v1/progress").json()["state"]["interrupted"] is True
    gate.release()
    result = response()
    info = json.loads(result.json()["info"])
    assert result.status_code == 200 and info["interrupted"] is True
    assert len(result.json()["images"]) == 1 and info["all_seeds"] == [5]
    whole = client.post("/sdapi/v1/txt2img", json={"steps": 2, "seed": 5, "n_iter": 3, "sampler_name": "Euler"})
    assert whole.json()["images"][0] == result.json()["images"][0]  # the kept batch is the one a full run makes
    assert json.loads(whole.json()["info"])["interrupted"] is False
