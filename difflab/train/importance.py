"""Importance sampling of the timestep for L_vlb from a history of per-timestep losses (Nichol & Dhariwal 2021)."""

from __future__ import annotations

import torch

HISTORY = 10  # losses kept per timestep (Nichol & Dhariwal 2021, Sec. 3.3)
UNIFORM_SHARE = 0.001  # mixed into p_t so every t keeps some mass (improved-diffusion's LossSecondMomentResampler)


class LossHistorySampler:
    """t ~ p_t with p_t proportional to sqrt(E[L_t^2]) over the last 10 losses of each t; uniform until every t has
    10 (Nichol & Dhariwal 2021, Eq. 18). The loss of a t drawn this way is weighted by 1 / (T p_t), which keeps the
    estimate of L_vlb = sum_t L_t unbiased: E_p[L_t / (T p_t)] = (1/T) sum_t L_t.
    State (the history and its counts) is a dict of tensors for the checkpoint, so a resumed run draws the same t.
    """

    def __init__(self, timesteps: int):
        self.history = torch.zeros(timesteps, HISTORY, dtype=torch.float64)  # oldest first
        self.counts = torch.zeros(timesteps, dtype=torch.long)

    @property
    def timesteps(self) -> int:
        return self.history.shape[0]

    @property
    def warm(self) -> bool:
        return bool((self.counts == HISTORY).all())

    def probabilities(self) -> torch.Tensor:
        """p_t [T] (float64): uniform while warming up, then sqrt(E[L_t^2]) normalised, mixed with 0.001 uniform."""
        if not self.warm:
            return torch.full((self.timesteps,), 1.0 / self.timesteps, dtype=torch.float64)
        # Nichol & Dhariwal 2021, Eq. 18: p_t proportional to sqrt(E[L_t^2])
        p = self.history.pow(2).mean(1).sqrt()
        p = p / p.sum()
        return p * (1 - UNIFORM_SHARE) + UNIFORM_SHARE / self.timesteps

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n timesteps [n] drawn from p_t."""
        return torch.multinomial(self.probabilities(), n, replacement=True, generator=generator)

    def weights(self, timestep: torch.Tensor) -> torch.Tensor:
        """1 / (T p_t) [n] for drawn timesteps (float64), taken before the draws' losses update the history."""
        return 1.0 / (self.timesteps * self.probabilities()[timestep.cpu()])

    def update(self, timestep: torch.Tensor, losses: torch.Tensor) -> None:
        """Append each sample's loss to its timestep's history, in batch order, dropping the oldest when full."""
        for t, loss in zip(timestep.tolist(), losses.detach().to(torch.float64).cpu().tolist()):
            if self.counts[t] == HISTORY:
                self.history[t] = torch.roll(self.history[t], -1)
                self.history[t, -1] = loss
            else:
                self.history[t, self.counts[t]] = loss
                self.counts[t] += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"history": self.history.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["history"].shape != self.history.shape:
            raise ValueError(f"importance history has shape {tuple(state['history'].shape)}, "
                             f"expected {tuple(self.history.shape)}")
        self.history, self.counts = state["history"].clone(), state["counts"].clone()
