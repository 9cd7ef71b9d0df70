"""Speed options of the training loop: fp16 loss scaling, the memory layout and torch.compile (autocast itself is
difflab.precision's)."""

from __future__ import annotations

import sys

import torch
from torch import nn

def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Dynamic loss scaling for fp16 (Micikevicius et al. 2018, Sec. 3.2): backward of S * loss, a step with
    inf/nan gradients is skipped and S halves, S doubles after 2000 clean steps. A no-op for fp32 and bf16."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def memory_format(device: torch.device, precision: str) -> torch.memory_format:
    """The layout of image batches and convolution weights in training: channels_last (about 10 % faster float32
    convolutions on the CPU), except under bf16/fp16 autocast on the CPU, where oneDNN's low-precision convolutions
    run faster contiguous (bf16 on AMX, bench/train_throughput.py: 1.36x over channels_last)."""
    return torch.contiguous_format if device.type == "cpu" and precision != "fp32" else torch.channels_last


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:200]


class CompiledNetwork(nn.Module):
    """`net` under torch.compile, or `net` itself, after one warning line, where compiling fails (no C compiler,
    an unsupported platform or operator).

    The first call compiles forward and backward on its inputs (a throwaway gradient, the RNG states restored),
    so a failure in either shows there and not in the middle of training. The weights are `net`'s alone: save
    `net.state_dict()`, which has no `_orig_mod.` prefixes.
    """

    def __init__(self, net: nn.Module, warn: bool = True):
        super().__init__()
        self.net = net
        self.warn = warn
        self.checked = False
        try:
            compiled = torch.compile(net)
        except Exception as err:  # torch.compile refuses this platform or Python at once
            compiled = None
            self._fall_back(err)
        self.__dict__["compiled"] = compiled  # not a submodule: its parameters are net's

    def _fall_back(self, err: Exception) -> None:
        self.__dict__["compiled"] = None
        if self.warn:
            print(f"difflab: warning: --compile: torch.compile failed ({type(err).__name__}: {_first_line(err)}); "
                  "training continues in eager mode", file=sys.stderr, flush=True)

    def _check(self, *args) -> None:
        device = next(self.net.parameters()).device
        params = [p for p in self.net.parameters() if p.requires_grad]
        try:
            with torch.random.fork_rng(devices=[device] if device.type != "cpu" else [], device_type=device.type):
                out = self.compiled(*args)
                if out.requires_grad:
                    torch.autograd.grad(out.float().sum(), params, allow_unused=True)  # leaves .grad alone
        except Exception as err:
            self._fall_back(err)

    def forward(self, *args):
        if self.compiled is not None and not self.checked:
            self.checked = True
            self._check(*args)
        return (self.net if self.compiled is None else self.compiled)(*args)
