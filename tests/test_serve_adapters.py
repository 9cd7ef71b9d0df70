"""LoRAs and embeddings on the server: <lora:NAME:M> prompt syntax, the web UI's listing routes and their shapes, and
the warnings for names it does not know."""

import json
import shutil

import pytest
import torch
from adapter_models import write_text_model
from fastapi.testclient import TestClient

from difflab.adapters.embedding import EmbeddingConfig, save_embedding
from difflab.adapters.files import save_adapter
from difflab.adapters.lora import Lora, LoraLayer
from difflab.model import load_model
from difflab.serve.adapters import Adapters, LoraTag, parse_prompt
from difflab.serve.app import create_app
from difflab.serve.catalog import Catalog
from difflab.serve.model import load_served_model
from difflab.text.encoder import TEXT_DIM, text_encoder
from difflab.train.checkpoint import ComponentRef

TOKEN = "<sq>"


@pytest.mark.parametrize("prompt, text, tags", [
    ("a bag <lora:bags:0.8>", "a bag ", [LoraTag("bags", 0.8)]),
    ("<lora:a> x <lora:b:0.5:1.5>", " x ", [LoraTag("a", 1.0), LoraTag("b", 1.5)]),  # te then unet multiplier
    ("<lora:c:unet=0.25> y", " y", [LoraTag("c", 0.25)]),
    ("<lora:d:0.3:dyn=16>", "", [LoraTag("d", 0.3)]),
    ("no tags: <b>a</b>", "no tags: <b>a</b>", []),
])
def test_lora_tags_are_taken_out_of_the_prompt(prompt, text, tags):
    assert parse_prompt(prompt) == (text, tags, [])


def test_other_extra_networks_and_bad_multipliers_are_warnings():
    text, tags, warnings = parse_prompt("x <hypernet:h:1> <lora:e:lots>")
    assert text.strip() == "x" and tags == []
    assert "hypernet" in warnings[0] and "multipliers must be numbers" in warnings[1]


def write_lora(path, base, net_of):
    lora = Lora(net_of)
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_(std=0.3)
    return save_adapter(path, "lora", lora.config, lora.adapter_tensors(), ComponentRef.to("denoiser", base), 1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    base = write_text_model(root / "base" / "model.safetensors")
    other = write_text_model(root / "other.safetensors", seed=1)
    loras, embeddings = root / "loras", root / "embeddings"
    write_lora(loras / "good.safetensors", base, load_model(base).denoiser.net)
    write_lora(loras / "elsewhere.safetensors", other, load_model(other).denoiser.net)
    save_embedding(embeddings / "square.safetensors", EmbeddingConfig(TOKEN, "square", 2), torch.randn(2, TEXT_DIM),
                   ComponentRef.to("denoiser", base), 7)
    (embeddings / "broken.safetensors").write_bytes(b"not a safetensors file")
    model = load_served_model(base)
    adapters = Adapters(loras, embeddings)
    with TestClient(create_app(model, adapters=adapters)) as client:
        yield client, model, base, loras
    text_encoder().embeddings.pop(TOKEN, None)


def generate(client, prompt):
    response = client.post("/sdapi/v1/txt2img", json={"prompt": prompt, "steps": 3, "seed": 3, "batch_size": 2})
    assert response.status_code == 200, response.text
    return response.json()["images"], json.loads(response.json()["info"])


def test_loras_route_has_the_web_uis_shape_and_refresh_rescans(served, tmp_path):
    client, _, base, loras = served
    listed = client.get("/sdapi/v1/loras").json()
    assert [item["name"] for item in listed] == ["elsewhere", "good"]
    assert all(set(item) == {"name", "alias", "path", "metadata"} for item in listed)
    assert listed[1]["metadata"]["kind"] == "lora" and listed[1]["path"].endswith("good.safetensors")
    write_lora(loras / "later.safetensors", base, load_model(base).denoiser.net)
    assert [item["name"] for item in client.get("/sdapi/v1/loras").json()] == ["elsewhere", "good"]
    response = client.post("/sdapi/v1/refresh-loras")
    assert response.status_code == 200 and response.json() is None
    assert "later" in [item["name"] for item in client.get("/sdapi/v1/loras").json()]


def test_embeddings_route_has_the_web_uis_shape(served):
    client, *_ = served
    body = client.get("/sdapi/v1/embeddings").json()
    assert set(body) == {"loaded", "skipped"}
    item = body["loaded"][TOKEN]
    assert {k: item[k] for k in ("step", "shape", "vectors")} == {"step": 7, "shape": TEXT_DIM, "vectors": 2}
    assert set(item) == {"step", "sd_checkpoint", "sd_checkpoint_name", "shape", "vectors"}
    assert "broken" in body["skipped"]


def test_a_lora_in_the_prompt_acts_for_that_request_only(served):
    client, model, *_ = served
    plain, _ = generate(client, "a square")
    adapted, info_lora = generate(client, "a square <lora:good:0.8>")
    assert adapted != plain and not info_lora["warnings"]
    assert info_lora["prompt"] == "a square"
    assert not any(isinstance(m, LoraLayer) for m in model.denoiser.net.modules())  # taken off after the request
    assert generate(client, "a square <lora:good:0>")[0] == plain  # multiplier 0 adds exactly nothing
    assert generate(client, "a square")[0] == plain


def test_unknown_and_foreign_loras_are_warnings_in_info(served):
    client, *_ = served
    plain, _ = generate(client, "a square")
    images, info = generate(client, "a square <lora:nowhere:1> <lora:elsewhere:1>")
    assert images == plain
    assert "Lora not found: nowhere" in info["warnings"]
    assert any(w.startswith("Lora elsewhere skipped") and "another base model" in w for w in info["warnings"])


def test_an_embedding_token_changes_the_prompt_it_is_in(served):
    client, *_ = served
    assert generate(client, f"a {TOKEN}")[0] != generate(client, "a sq")[0]


def test_a_lora_stays_on_the_first_pass_when_hr_checkpoint_name_runs_the_second(served, tmp_path):
    """The second pass on another checkpoint runs without the prompt's LoRAs (they were made for the first model),
    and the answer says so; on the same checkpoint it runs with them, silently."""
    _, model, base, loras = served
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(base.parents[1] / "other.safetensors", models / "other.safetensors")
    hires = {"enable_hr": True, "denoising_strength": 0.5, "hr_second_pass_steps": 2, "hr_upscaler": "Latent",
             "steps": 3, "seed": 3}
    app = create_app(model, catalog=Catalog(model, models), adapters=Adapters(loras, base.parents[1] / "embeddings"))
    with TestClient(app) as client:
        def answer(prompt, checkpoint):
            body = {**hires, "prompt": prompt, "hr_checkpoint_name": checkpoint}
            response = client.post("/sdapi/v1/txt2img", json=body)
            assert response.status_code == 200, response.text
            return response.json()["images"], json.loads(response.json()["info"])["warnings"]

        plain, warnings = answer("a square", "other")
        adapted, lora_warnings = answer("a square <lora:good:1>", "other")
        assert adapted != plain and not warnings  # the LoRA acted on the first pass
        assert lora_warnings == ["hr_checkpoint_name's model runs the second pass without the prompt's LoRAs"]
        assert answer("a square <lora:good:1>", "Use same checkpoint")[1] == []
