"""Trainer, checkpoints and resume: short runs on toy data and a tiny U-Net on Fashion-MNIST-shaped images."""

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.data import load_dataset
from difflab.errors import DifflabError
from difflab.eval.toy_metrics import sliced_wasserstein
from difflab.grids import make_grid
from difflab.pipelines.generate import generate
from difflab.precision import resolve_precision
from difflab.samplers.ancestral import sample_ddpm
from difflab.train.checkpoint import load_checkpoint, load_denoiser
from difflab.train.config import ExperimentConfig, load_config
from difflab.train.loop import batch_indices
from difflab.train.optim import param_groups, set_learning_rate
from difflab.train.trainer import Trainer

RECIPES = Path(__file__).resolve().parents[1] / "difflab" / "configs"


def toy_config(**train) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "network": {"kind": "mlp", "hidden": 64, "depth": 2},
        "schedule": {"kind": "linear", "timesteps": 1000},
        "train": {"data": "toy:8gaussians", "batch": 256, "lr": 2e-3, "warmup": 50, "ema_decay": 0.99,
                  "log_every": 10, "sample_every": 10_000, "checkpoint_every": 10_000, **train},
    })


def image_config(tmp_path, **train) -> ExperimentConfig:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(32):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return ExperimentConfig.from_dict({
        "network": {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                    "attention_levels": [1], "head_dim": 8, "groups": 4, "dropout": 0.1},
        "train": {"data": str(folder), "batch": 8, "warmup": 5, "log_every": 5, "sample_every": 10_000,
                  "checkpoint_every": 10_000, "sample_steps": 2, **train},
    })


def test_toy_training_lowers_loss_and_ddpm_reproduces_the_data(tmp_path):
    result = Trainer(toy_config(steps=1200), tmp_path, progress=False).run()
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert np.mean([r["loss"] for r in log[-10:]]) < 0.6 * np.mean([r["loss"] for r in log[:3]])
    denoiser, checkpoint = load_denoiser(result.checkpoint)
    samples = generate(denoiser, checkpoint.config.data_shape, 1500, sampler="ddpm", steps=1000, batch=1500)
    data = load_dataset("toy:8gaussians", split="test").data[:1500]
    prior = torch.randn(1500, 2, generator=torch.Generator().manual_seed(5))
    model_distance = sliced_wasserstein(samples, data)
    prior_distance = sliced_wasserstein(prior, data)
    assert model_distance < 0.3 * prior_distance, (model_distance, prior_distance)
    assert (tmp_path / "loss.png").stat().st_size > 0 and result.samples.is_file()


def test_batch_indices_cover_each_epoch_once():
    seen = torch.cat([batch_indices(100, 10, step, seed=3) for step in range(10)])
    assert sorted(seen.tolist()) == list(range(100))
    assert not torch.equal(batch_indices(100, 10, 0, 3), batch_indices(100, 10, 10, 3))  # a new epoch reshuffles


def test_label_table_steps_at_its_scaled_rate():
    from difflab.conditioning import Condition
    from difflab.nets.mlp import MLPConfig, MLPDenoiserNet

    net = MLPDenoiserNet(MLPConfig(hidden=16, depth=1, num_classes=3))
    torch.nn.init.normal_(net.embed.class_embedding.weight)  # a non-zero table passes gradient to every layer
    optimizer = torch.optim.AdamW(param_groups(net, label_lr_scale=10.0), lr=1e-3, weight_decay=0.0)
    set_learning_rate(optimizer, 1e-3)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    net(torch.randn(32, 2), torch.rand(32) * 999, Condition(torch.tensor([0, 1] * 16))).square().sum().backward()
    optimizer.step()
    # Adam's first step moves every coordinate that has a gradient by lr (up to eps): 10 lr for the label rows
    moved = {name: (p.detach() - before[name]).abs() for name, p in net.named_parameters()}
    assert torch.allclose(moved["embed.class_embedding.weight"][:2], torch.tensor(1e-2), rtol=1e-3)
    assert moved["embed.class_embedding.weight"][2:].abs().max() == 0  # unused rows (class 2, null) stay put
    assert torch.allclose(moved["out.bias"], torch.tensor(1e-3), rtol=1e-3)
    assert len(param_groups(net, label_lr_scale=1.0)) == 1


def _weights(path):
    return load_checkpoint(path).tensors


def hybrid_toy_config(**train) -> ExperimentConfig:
    """L_hybrid with a learned variance (the vlb and edm objectives have resume tests of their own)."""
    spec = toy_config(**train).to_dict()
    spec["network"]["learned_variance"], spec["train"]["loss"] = True, "hybrid"
    return ExperimentConfig.from_dict(spec)


@pytest.mark.parametrize("kind", ["toy", "image", "image_bf16", "hybrid"])
def test_resume_is_bitwise_exact(tmp_path, kind):
    make = {"toy": toy_config, "image": lambda **t: image_config(tmp_path, **t), "hybrid": hybrid_toy_config,
            "image_bf16": lambda **t: image_config(tmp_path, precision="bf16", **t)}[kind]
    Trainer(make(steps=20), tmp_path / "straight", progress=False).run()
    Trainer(make(steps=10), tmp_path / "resumed", progress=False).run()
    Trainer(make(steps=20), tmp_path / "resumed", resume=True, progress=False).run()
    straight = _weights(tmp_path / "straight" / "checkpoint.safetensors")
    resumed = _weights(tmp_path / "resumed" / "checkpoint.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    logs = [(tmp_path / d / "log.jsonl").read_text() for d in ("straight", "resumed")]
    assert [json.loads(r)["step"] for r in logs[0].splitlines()] == [json.loads(r)["step"] for r in logs[1].splitlines()]


def test_checkpoint_round_trip(tmp_path):
    trainer = Trainer(image_config(tmp_path, steps=3), tmp_path / "run", progress=False)
    trainer.run()
    denoiser, checkpoint = load_denoiser(tmp_path / "run" / "checkpoint.safetensors", prefer_ema=False)
    assert checkpoint.step == 3 and checkpoint.config == trainer.config
    assert ExperimentConfig.from_dict(json.loads((tmp_path / "run" / "config.json").read_text())) == trainer.config
    x = torch.randn(2, 1, 28, 28)
    sigma = torch.tensor([0.5, 20.0])
    trainer.denoiser.eval()
    saved = trainer.denoiser.net.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in denoiser.net.state_dict().items())
    # the trainer's copy is channels_last, the loaded one contiguous: same weights, other conv kernels
    assert torch.allclose(denoiser(x, sigma), trainer.denoiser(x, sigma), atol=1e-5)


def test_corrupt_and_foreign_checkpoints_are_rejected(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(DifflabError, match="damaged"):
        load_checkpoint(path)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(DifflabError, match="not a difflab checkpoint"):
        load_checkpoint(path)
    with pytest.raises(DifflabError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_kill_during_save_leaves_previous_checkpoint_loadable(tmp_path):
    """A real process is SIGKILLed after writing the new checkpoint's temporary file but before the rename."""
    Trainer(toy_config(steps=5), tmp_path, progress=False).run()
    before = (tmp_path / "checkpoint.safetensors").read_bytes()
    script = textwrap.dedent(f"""
        import json, os, signal
        import difflab.images as images
        from difflab.train.config import ExperimentConfig, load_config
        from difflab.train.trainer import Trainer
        real_replace = os.replace
        def die_before_rename(src, dst):
            if str(dst).endswith("checkpoint.safetensors"):
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)
        images.os.replace = die_before_rename
        config = ExperimentConfig.from_dict(json.loads({json.dumps(toy_config(steps=9).to_dict())!r}))
        Trainer(config, {str(tmp_path)!r}, resume=True, progress=False).run()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == before
    assert load_checkpoint(tmp_path / "checkpoint.safetensors").step == 5
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the torn write stayed a temporary file
    Trainer(toy_config(steps=7), tmp_path, resume=True, progress=False).run()  # and training goes on
    assert load_checkpoint(tmp_path / "checkpoint.safetensors").step == 7


def test_ddpm_full_chain_matches_prior_scale_and_is_deterministic_per_seed(tmp_path):
    result = Trainer(toy_config(steps=5), tmp_path, progress=False).run()
    denoiser, checkpoint = load_denoiser(result.checkpoint)
    a = generate(denoiser, (2,), 6, sampler="ddpm", steps=20, seed=7, batch=6)
    b = generate(denoiser, (2,), 6, sampler="ddpm", steps=20, seed=7, batch=4)
    c = generate(denoiser, (2,), 6, sampler="ddpm", steps=20, seed=8, batch=6)
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, c)
    sigmas = make_grid(denoiser.schedule, 20, "trailing")
    x = torch.zeros(3, 2, dtype=torch.float64)
    assert sample_ddpm(lambda x, s: x * 0, x, sigmas).shape == (3, 2)


def test_export_keeps_ema_weights_and_config_only(tmp_path):
    from difflab.train.checkpoint import export_weights

    result = Trainer(toy_config(steps=4), tmp_path / "run", progress=False).run()
    export_weights(result.checkpoint, tmp_path / "model.safetensors")
    exported = load_checkpoint(tmp_path / "model.safetensors")
    full = load_checkpoint(result.checkpoint)
    assert set(exported.tensors) == {f"model.{k}" for k in full.section("ema")}
    assert all(torch.equal(exported.tensors[f"model.{k}"], v) for k, v in full.section("ema").items())
    assert exported.config == full.config and exported.step == 4


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    Trainer(toy_config(steps=5), tmp_path / "full", progress=False).run()
    Trainer(toy_config(steps=5, accumulate=4), tmp_path / "parts", progress=False).run()
    full, parts = _weights(tmp_path / "full" / "checkpoint.safetensors"), _weights(tmp_path / "parts" / "checkpoint.safetensors")
    for key in full:
        if key.startswith(("model.", "ema.")):
            assert torch.allclose(full[key], parts[key], atol=1e-5), key


def test_bf16_autocast_trains(tmp_path):
    Trainer(toy_config(steps=60), tmp_path, progress=False).run()
    Trainer(toy_config(steps=60, precision="bf16"), tmp_path / "bf16", progress=False).run()
    fp32 = [json.loads(r)["loss"] for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    bf16 = [json.loads(r)["loss"] for r in (tmp_path / "bf16" / "log.jsonl").read_text().splitlines()]
    assert bf16[-1] < 0.8 * bf16[0] and abs(bf16[-1] - fp32[-1]) < 0.2 * fp32[-1]
    assert load_checkpoint(tmp_path / "bf16" / "checkpoint.safetensors").tensors["model.inp.weight"].dtype == torch.float32


@pytest.mark.parametrize("amx", [True, False])
def test_auto_precision_is_bf16_on_a_cpu_with_amx_and_the_checkpoint_says_which(tmp_path, monkeypatch, amx):
    capabilities = torch.cpu.get_capabilities()
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {**capabilities, "amx_bf16": amx})
    expected = "bf16" if amx else "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert [resolve_precision(p, torch.device("cpu")) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    Trainer(image_config(tmp_path, steps=2, precision="auto"), tmp_path / "run", progress=False).run()
    assert load_checkpoint(tmp_path / "run" / "checkpoint.safetensors").config.train.precision == expected
    assert load_config(RECIPES / "fashion_mnist.json").train.precision == "auto"  # the default recipe's


@pytest.mark.parametrize("precision, layout", [("fp32", torch.channels_last), ("bf16", torch.contiguous_format)])
def test_image_training_layout_follows_the_precision(tmp_path, precision, layout):
    """channels_last for float32 convolutions on the CPU, contiguous under bf16 autocast (oneDNN's faster layout
    there); the batches follow the weights."""
    trainer = Trainer(image_config(tmp_path, steps=1, precision=precision), tmp_path / precision, progress=False)
    other = torch.contiguous_format if layout == torch.channels_last else torch.channels_last
    convs = [p for p in trainer.denoiser.net.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] > 1]
    assert convs and all(p.is_contiguous(memory_format=layout) and not p.is_contiguous(memory_format=other)
                         for p in convs)
    assert trainer.loop.layout == layout


@pytest.mark.parametrize("train,message", [({"accumulate": 3}, "--batch 256 must be divisible by --accumulate 3"),
                                           ({"precision": "fp8"}, "--precision must be fp32, bf16, fp16 or auto")])
def test_speed_option_errors(train, message):
    with pytest.raises(DifflabError, match=message):
        toy_config(**train)


def test_batch_split_over_processes_and_micro_batches():
    from difflab.train.loop import check_batch_split

    check_batch_split(64, 2, 4)
    with pytest.raises(DifflabError, match="divisible by the 2 processes"):
        check_batch_split(63, 2, 1)
    with pytest.raises(DifflabError, match="leaves 3 examples each, which --accumulate 2 cannot split evenly"):
        check_batch_split(6, 2, 2)
