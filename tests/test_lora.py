"""LoRA layers (Hu et al. 2021): exact no-op at init, the rank of the update, merge/unmerge, several LoRAs, the adapter
file (only adapter tensors, refused on another base), and training on the one loop."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from adapter_models import write_images, write_text_model
from safetensors import safe_open
from torch import nn

from difflab.adapters.files import load_adapter, save_adapter
from difflab.adapters.lora import (Lora, LoraConfig, LoraLayer, LoraUpdate, attach, attached, detach, merge,
                                   target_layers, unmerge)
from difflab.adapters.train import Recipe, subject_data, train_personalized
from difflab.adapters.use import apply_adapters, parse_lora_argument, read_lora
from difflab.conditioning import Condition, TextEmbedding
from difflab.errors import DifflabError
from difflab.model import load_model
from difflab.nets import build_network, network_config
from difflab.train.checkpoint import ComponentRef, load_checkpoint, sha256_file


def text_unet():
    spec = {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_levels": [1],
            "head_dim": 8, "groups": 4, "num_classes": 3, "text_dim": 16}
    net = build_network(network_config(spec))
    for p in net.parameters():
        nn.init.normal_(p, std=0.1)
    return net


def inputs(batch=3):
    text = TextEmbedding(torch.randn(batch, 4, 16), torch.ones(batch, 4, dtype=torch.bool), torch.randn(batch, 16))
    return torch.randn(batch, 1, 12, 12), torch.rand(batch), Condition(torch.tensor([0, 1, 2][:batch]), text)


def randomize(lora: Lora, seed: int) -> Lora:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return lora


def test_default_targets_are_the_attention_projections():
    names = set(target_layers(text_unet(), LoraConfig().targets))
    assert "mid_attn.qkv" in names and "mid_cross_attn.kv" in names and "up.0.cross_attns.1.proj" in names
    assert all(n.rsplit(".", 1)[1] in ("qkv", "q", "kv", "proj") for n in names)
    dit = build_network(network_config({"kind": "dit", "patch_size": 4, "hidden_size": 32, "depth": 2,
                                        "num_heads": 2, "text_dim": 16}))
    assert set(target_layers(dit, LoraConfig().targets)) == {
        f"blocks.{i}.{part}.{proj}" for i in range(2) for part in ("attn", "cross_attn.attn")
        for proj in ("q", "kv", "proj")}


def test_a_fresh_lora_leaves_outputs_bitwise_unchanged():
    net = text_unet()
    x, c_noise, cond = inputs()
    before = net(x, c_noise, cond)
    targets = (r".*\.(qkv|q|kv|proj)", r".*conv1")  # attention and the 3x3 convolutions of the residual blocks
    attach(net, Lora(net, LoraConfig(rank=3, alpha=7.0, targets=targets)), "fresh")
    assert any(isinstance(m.base, nn.Conv2d) and m.base.kernel_size == (3, 3)
               for m in net.modules() if isinstance(m, LoraLayer))
    assert torch.equal(net(x, c_noise, cond), before)


@pytest.mark.parametrize("base", [nn.Linear(12, 10), nn.Conv2d(6, 10, 1), nn.Conv2d(4, 10, 3, padding=1),
                                  nn.Conv2d(4, 10, 3, stride=2, padding=1)])
@pytest.mark.parametrize("rank", [1, 3])
def test_the_update_is_the_rank_r_matrix_it_adds(base, rank):
    update = LoraUpdate(base, rank, scaling=0.5)
    nn.init.normal_(update.lora_B)
    delta = update.delta_weight()
    assert delta.shape == base.weight.shape
    assert torch.linalg.matrix_rank(delta.detach().flatten(1), rtol=1e-5) == rank  # float32 rounding: rtol
    x = torch.randn(2, 12) if isinstance(base, nn.Linear) else torch.randn(2, base.in_channels, 9, 9)
    layer = LoraLayer(base)
    layer.active["u"] = (update, 0.8)
    if isinstance(base, nn.Linear):
        expected = F.linear(x, base.weight + 0.8 * delta, base.bias)
    else:
        expected = F.conv2d(x, base.weight + 0.8 * delta, base.bias, base.stride, base.padding)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)  # W x + m (alpha / r) B A x


def test_merge_then_unmerge_restores_the_weights_and_merged_outputs_match():
    net = text_unet()
    x, c_noise, cond = inputs()
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    attach(net, randomize(Lora(net), 1), "a", 0.7)
    adapted = net(x, c_noise, cond)
    merge(net, "a")
    assert not torch.equal(net.mid_attn.qkv.base.weight, weights["mid_attn.qkv.weight"])
    torch.testing.assert_close(net(x, c_noise, cond), adapted, atol=1e-5, rtol=1e-5)
    unmerge(net, "a")
    detach(net, "a")
    restored = net.state_dict()
    assert restored.keys() == weights.keys()  # the base layers are back under their own names
    for key, value in weights.items():
        torch.testing.assert_close(restored[key], value, atol=1e-6, rtol=0)


def test_several_loras_add_their_weighted_updates():
    net = text_unet()
    x, c_noise, cond = inputs()
    one = randomize(Lora(net), 1)
    attach(net, one, "one", 0.5)
    two = randomize(Lora(net, LoraConfig(rank=2, alpha=1.0)), 2)  # built over the layers "one" has wrapped
    attach(net, two, "two", -1.5)
    assert attached(net) == {"one": 0.5, "two": -1.5}
    mixed = net(x, c_noise, cond)
    for name in ("one", "two"):  # the same network with both updates folded into the weights
        merge(net, name)
    torch.testing.assert_close(net(x, c_noise, cond), mixed, atol=1e-5, rtol=1e-5)
    detach(net, "one")
    detach(net, "two")
    assert not any(isinstance(m, LoraLayer) for m in net.modules())
    with pytest.raises(DifflabError, match="already attached"):
        attach(net, one, "one")
        attach(net, one, "one")


def test_adapter_file_holds_only_the_adapter_and_is_refused_on_another_base(tmp_path):
    base = write_text_model(tmp_path / "base.safetensors")
    other = write_text_model(tmp_path / "other.safetensors", seed=1)
    model = load_model(base)
    net = model.denoiser.net
    lora = randomize(Lora(net), 3)
    path = save_adapter(tmp_path / "lora.safetensors", "lora", lora.config, lora.adapter_tensors(),
                        ComponentRef.to("denoiser", base), step=5)
    with safe_open(path, "pt") as f:
        keys = set(f.keys())
    assert keys == {f"{layer}.lora_{part}" for layer in lora.layer_names for part in "AB"}
    assert path.stat().st_size < 0.1 * base.stat().st_size
    checkpoint = load_checkpoint(path, kind="lora")
    assert checkpoint.config == lora.config and checkpoint.refs["base"].sha256 == sha256_file(base)
    again = read_lora(path, net, sha256_file(base))
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), lora.parameters()))
    with pytest.raises(DifflabError, match="trained on another base model") as err:
        load_adapter(path, "lora", sha256_file(other))
    assert "\n" not in str(err.value)
    with pytest.raises(DifflabError, match="another base"):
        apply_adapters(load_model(other), [f"{path}:0.5"])


def test_lora_argument_takes_an_optional_multiplier():
    assert parse_lora_argument("a/b.safetensors:0.8") == (Path("a/b.safetensors"), 0.8)
    assert parse_lora_argument("a/b.safetensors") == (Path("a/b.safetensors"), 1.0)


def test_train_lora_and_dreambooth_run_on_the_loop(tmp_path):
    base = write_text_model(tmp_path / "base.safetensors")
    data = subject_data(str(write_images(tmp_path / "subject")))
    recipe = Recipe(steps=3, batch=4, lr=1e-2, warmup=1, device="cpu")
    result = train_personalized(base, data, "a sks square", tmp_path / "lora", recipe=recipe, progress=False,
                                class_prompt="a square", num_class_images=2)
    assert result.step == 3 and result.trainable == sum(
        p.numel() for p in Lora(load_model(base).denoiser.net).parameters())
    assert len(list((tmp_path / "lora" / "class_images").rglob("*.png"))) == 2  # drawn once, then cached
    model = load_model(base)
    x, c_noise = torch.randn(2, 1, 8, 8), torch.rand(2)
    before = model.denoiser.net(x, c_noise)
    apply_adapters(model, [f"{result.path}:1"])
    assert not torch.equal(model.denoiser.net(x, c_noise), before)  # trained: B is no longer zero
    full = train_personalized(base, data, "a sks square", tmp_path / "full", lora=None, recipe=recipe,
                              progress=False)
    assert full.trainable == full.total
    tuned = load_model(full.path).denoiser.net.state_dict()
    assert any(not torch.equal(tuned[k], v) for k, v in load_model(base).denoiser.net.state_dict().items())
