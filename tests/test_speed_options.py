"""fp16 autocast with loss scaling, torch.compile with its eager fallback, and --device, on the CPU."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from difflab.cli import main
from difflab.distributed import resolve_device
from difflab.errors import DifflabError
from difflab.train.checkpoint import load_checkpoint
from difflab.train.trainer import Trainer

from test_training import image_config, toy_config

ROOT = Path(__file__).resolve().parent.parent


def tensors(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "checkpoint.safetensors").tensors


def set_loss_scale(trainer: Trainer, scale: float) -> None:
    trainer.scaler.load_state_dict({**trainer.scaler.state_dict(), "scale": scale})


# fp16 ----------------------------------------------------------------------------------------------------------


def test_fp16_resume_is_bitwise_exact_with_the_loss_scale(tmp_path):
    Trainer(toy_config(steps=12, precision="fp16"), tmp_path / "straight", progress=False).run()
    Trainer(toy_config(steps=6, precision="fp16"), tmp_path / "resumed", progress=False).run()
    Trainer(toy_config(steps=12), tmp_path / "resumed", resume=True, progress=False).run()  # fp16 from the checkpoint
    straight, resumed = tensors(tmp_path / "straight"), tensors(tmp_path / "resumed")
    assert {"scaler.scale", "scaler.growth_tracker"} <= straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    # this MLP overflows fp16 at its first step: the scale halved and the clean-step count restarted there
    assert float(straight["scaler.scale"]) == 2.0**15 and int(straight["scaler.growth_tracker"]) == 11


def test_fp16_skipped_step_keeps_weights_and_ema_but_advances_the_step(tmp_path):
    trainer = Trainer(toy_config(steps=5, precision="fp16"), tmp_path, progress=False)
    net, ema = trainer.denoiser.net, trainer.ema.model
    initial = [p.clone() for p in net.parameters()]
    set_loss_scale(trainer, 2.0**8)
    trainer.train_step()  # a clean step: the weights move and the EMA now lags behind them
    assert trainer.scaler.get_scale() == 2.0**8
    assert not any(torch.equal(a, b) for a, b in zip(initial, net.parameters()))
    weights, averaged = [p.clone() for p in net.parameters()], [p.clone() for p in ema.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(weights, averaged))
    set_loss_scale(trainer, 2.0**100)  # the scaled loss overflows fp16 in backward: inf gradients
    _, grad_norm = trainer.train_step()
    assert not torch.isfinite(torch.tensor(grad_norm)) and trainer.scaler.get_scale() == 2.0**99
    assert trainer.step == 2  # data order, noise and learning rate move on
    assert all(torch.equal(a, b) for a, b in zip(weights, net.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(averaged, ema.parameters()))


def test_fp16_clips_the_unscaled_gradient(tmp_path):
    """The gradient norm (and so the clipping) is that of the true gradient, not of S * gradient."""
    norms = {}
    for precision in ("fp32", "fp16"):
        trainer = Trainer(image_config(tmp_path, steps=1, precision=precision), tmp_path / precision, progress=False)
        _, norms[precision] = trainer.train_step()
    assert norms["fp16"] == pytest.approx(norms["fp32"], rel=0.05)


def test_fp16_trains(tmp_path):
    Trainer(toy_config(steps=60, precision="fp16"), tmp_path, progress=False).run()
    losses = [json.loads(r)["loss"] for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.8 * losses[0]
    assert tensors(tmp_path)["model.inp.weight"].dtype == torch.float32


# --compile -----------------------------------------------------------------------------------------------------


class Boom(torch.autograd.Function):
    """Identity whose backward fails, like a backward graph that does not compile."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backward compile failed")


def failing_compile(where: str):
    def compile_(net):
        if where == "wrap":
            raise RuntimeError("torch.compile is not supported on this platform")

        def call(*args):
            torch.rand(3)  # uses the RNG before failing: the fallback must not shift the training's streams
            if where == "forward":
                raise RuntimeError("InductorError: no C++ compiler found\nlong traceback")
            return Boom.apply(net(*args))
        return call
    return compile_


@pytest.mark.parametrize("where", ["wrap", "forward", "backward"])
def test_compile_failure_falls_back_to_eager_with_one_warning(tmp_path, capsys, monkeypatch, where):
    Trainer(toy_config(steps=4), tmp_path / "eager", progress=False).run()
    capsys.readouterr()
    monkeypatch.setattr(torch, "compile", failing_compile(where))
    Trainer(toy_config(steps=4, compile=True), tmp_path / "compiled", progress=False).run()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "--compile" in line]
    assert len(warnings) == 1 and "training continues in eager mode" in warnings[0], warnings
    assert "RuntimeError" in warnings[0] and "long traceback" not in warnings[0]
    eager, compiled = tensors(tmp_path / "eager"), tensors(tmp_path / "compiled")
    for key in eager:
        assert torch.equal(eager[key], compiled[key]), key


def test_compiled_checkpoint_has_the_plain_module_names_and_resume_may_drop_compile(tmp_path):
    trainer = Trainer(toy_config(steps=2, compile=True), tmp_path, progress=False)
    trainer.save()  # torch.compile is lazy: nothing compiles before the first call
    names = set(tensors(tmp_path))
    assert not any("_orig_mod" in name for name in names)
    assert {f"model.{k}" for k in trainer.denoiser.net.state_dict()} <= names
    resumed = Trainer(toy_config(steps=2), tmp_path, resume=True, progress=False)
    assert resumed.config.train.compile is False and resumed.loop.train_module is resumed.denoiser.net


COMPARE = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    from test_training import toy_config
    from difflab.train.trainer import Trainer
    torch.set_num_threads(1)
    runs = [Trainer(toy_config(steps=3, compile=c), {out!r} + str(c), progress=False) for c in (False, True)]
    for run in runs:
        run.run()
    a, b = (r.denoiser.net.state_dict() for r in runs)
    print(max((a[k] - b[k]).abs().max().item() for k in a))
""")


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    """Real torch.compile (inductor, C++ on the CPU): 8 s with a warm cache, about 40 s cold; skipped past 60 s."""
    script = COMPARE.format(tests=str(ROOT / "tests"), out=str(tmp_path / "run"))
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.skip("torch.compile took over 60 s on this machine")
    if "training continues in eager mode" in proc.stderr:
        pytest.skip("torch.compile is unsupported here: " + proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-5


# --device ------------------------------------------------------------------------------------------------------


def test_device_resolution(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DifflabError, match="--device cuda: no CUDA GPU is available"):
        resolve_device("cuda")
    with pytest.raises(DifflabError, match="--device must be cpu, cuda or auto, got 'mps'"):
        resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's second process on this machine takes the second GPU
    assert resolve_device("cuda") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(DifflabError, match="LOCAL_RANK 2 needs GPU 2, but this machine shows 2; give torchrun "
                                           "--nproc-per-node 2 or fewer"):
        resolve_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the error on a machine without CUDA")
@pytest.mark.parametrize("argv", [["train", "--data", "toy:moons", "--steps", "1", "--out", "{tmp}/run"],
                                  ["sample", "--n", "1", "--out", "{tmp}/s.npz"],
                                  ["eval", "{tmp}/c.safetensors", "--n", "100"]])
def test_cuda_without_a_gpu_is_one_clear_error(tmp_path, capsys, argv):
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err.startswith(f"difflab {argv[0]}: error: --device cuda: no CUDA GPU is available"), err


def test_explicit_cpu_device_trains_like_auto_here(tmp_path):
    Trainer(toy_config(steps=3, device="cpu"), tmp_path / "cpu", progress=False).run()
    Trainer(toy_config(steps=3), tmp_path / "auto", progress=False).run()
    a, b = tensors(tmp_path / "cpu"), tensors(tmp_path / "auto")
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("rng.")) and a.keys() == b.keys()


def test_device_field_is_checked():
    with pytest.raises(DifflabError, match="--device must be cpu, cuda or auto, got 'gpu'"):
        toy_config(device="gpu")


# bench ---------------------------------------------------------------------------------------------------------


def test_gpu_bench_dry_run_executes_on_cpu():
    pytest.importorskip("diffusers")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # bench/ runs as a script
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scaling.py"), "--gpu", "--dry-run", "--rounds", "1"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": path})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("difflab", "diffusers"))]
    measured = [r for r in rows if r[-1].endswith("x")]  # ... GFLOP/img images/s MFU ratio
    assert len(rows) == 4 and len(measured) == 2, proc.stdout
    assert all(float(r[-4]) > 0 and float(r[-3]) > 0 for r in measured), proc.stdout
