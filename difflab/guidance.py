"""Guidance as denoiser wrappers: classifier-free guidance, classifier guidance and static/dynamic thresholding.

Every wrapper is what a sampler sees, D(x, sigma) -> x0_hat in VE coordinates with the condition fixed for the
batch. A sampler-facing denoiser may also offer
  with_variance(x, sigma) -> (x0_hat, v | None)   the network's learned-variance output v, if it has one, and
  mean_shift(x, sigma, sigma_next, variance)       a shift of the ancestral (DDPM) mean, applied by sample_ddpm;
every wrapper here offers the first (passing v through), and classifier guidance in its "mean" form the second.

Guidance scale conventions: here w is Ho & Salimans' weight, eps~ = (1 + w) eps(x, c) - w eps(x); w = 0 is the
conditional model. diffusers' guidance_scale and the AUTOMATIC1111 UI's cfg_scale are 1 + w (cfg_scale 7.5 is
w = 6.5, and cfg_scale 1 is no guidance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from difflab.conditioning import Condition
from difflab.errors import DifflabError
from difflab.schedules import DiscreteSchedule, ScheduleConfig, append_dims, vp_coefficients

Threshold = Literal["static", "dynamic"]
ClassifierForm = Literal["eps", "mean"]
THRESHOLDS: tuple[Threshold, ...] = ("static", "dynamic")
CLASSIFIER_FORMS: tuple[ClassifierForm, ...] = ("eps", "mean")
MEAN_FORM_SAMPLERS = ("ddpm",)  # the samplers that apply a denoiser's mean_shift
DEFAULT_PERCENTILE = 0.995  # Saharia et al. 2022, Sec. 2.3 / Appendix E


def denoise_with_variance(denoiser: nn.Module, x: torch.Tensor, sigma: torch.Tensor,
                          cond: Condition | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x0_hat, v) of a conditional denoiser D(x, sigma, cond); v is None where it has no learned variance."""
    with_variance = getattr(denoiser, "with_variance", None)
    if with_variance is None:
        return denoiser(x, sigma, cond), None
    return with_variance(x, sigma, cond)


def tile_rows(cond: Condition | None, n: int) -> Condition | None:
    """A B-row condition for n = k B rows, k stacked copies of the batch (row r is sample r mod B): a parallel sampler
    (difflab.samplers.paradigms) evaluates a window of steps in one call."""
    if cond is None or len(cond) == n:
        return cond
    return cond[torch.arange(n) % len(cond)]


class SamplerDenoiser(nn.Module):
    """Base of the sampler-facing wrappers: forward is the x0_hat part of with_variance."""

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.with_variance(x, sigma)[0]


class ConditionedDenoiser(SamplerDenoiser):
    """Fixes the condition of a denoiser for one batch, so samplers see D(x, sigma)."""

    def __init__(self, denoiser: nn.Module, cond: Condition | None):
        super().__init__()
        self.denoiser, self.cond = denoiser, cond

    def with_variance(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return denoise_with_variance(self.denoiser, x, sigma, tile_rows(self.cond, x.shape[0]))


class ClassifierFreeGuidance(ConditionedDenoiser):
    """x0~ = x0(x, c) + w (x0(x, c) - x0(x, negative)), the conditional and negative (default: null) rows in one
    forward of 2B rows; w = 0 runs the conditional rows alone.

    Ho & Salimans 2022, Eq. 6: eps~ = (1 + w) eps(x, c) - w eps(x, null). With x and sigma shared by both terms,
    eps = (x - x0) / sigma is affine in x0 and the weights (1 + w, -w) sum to 1, so the same combination of the two
    x0_hat is exactly x - sigma eps~ (and likewise for v or score predictions).
    """

    def __init__(self, denoiser: nn.Module, cond: Condition | None, negative: Condition | None, w: float):
        super().__init__(denoiser, cond)
        self.negative, self.w = negative, w
        self.joint: tuple[int, Condition | None] | None = None  # (n, cond rows then negative rows), built once

    def joint_condition(self, n: int) -> Condition | None:
        """The 2n-row condition of the batched forward; the same at every step, so concatenated only once."""
        if self.joint is None or self.joint[0] != n:
            self.joint = n, Condition.cat([tile_rows(self.cond, n), tile_rows(self.negative, n)], [n, n])
        return self.joint[1]

    def with_variance(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.w == 0:
            return super().with_variance(x, sigma)
        n = x.shape[0]
        both = self.joint_condition(n)
        sigma = sigma.expand(n)
        x0_hat, v = denoise_with_variance(self.denoiser, torch.cat([x, x]), torch.cat([sigma, sigma]), both)
        x0_cond, x0_negative = x0_hat[:n], x0_hat[n:]
        x0_guided = x0_cond + self.w * (x0_cond - x0_negative)  # = (1 + w) x0_c - w x0_neg (Eq. 6 on x0)
        # the learned variance is the conditional half's (Nichol et al. 2022, GLIDE, Sec. 2.3)
        return x0_guided, None if v is None else v[:n]


def static_threshold(x0_hat: torch.Tensor) -> torch.Tensor:
    # Saharia et al. 2022 (Imagen), Sec. 2.3: static thresholding clips x0_hat to [-1, 1]
    return x0_hat.clamp(-1, 1)


def quantile_per_sample(values: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of each row of values [B, N], interpolating linearly between order statistics (numpy's
    default); unlike torch.quantile it takes rows of any length."""
    ordered = values.sort(dim=1).values
    position = q * (values.shape[1] - 1)
    low = math.floor(position)
    high = min(low + 1, values.shape[1] - 1)
    return ordered[:, low] + (position - low) * (ordered[:, high] - ordered[:, low])


def dynamic_threshold(x0_hat: torch.Tensor, percentile: float = DEFAULT_PERCENTILE) -> torch.Tensor:
    """Imagen's dynamic thresholding: s = max(1, p-th quantile of |x0_hat| per sample), x0_hat -> clip(x0_hat, -s, s)/s.

    The result lies in [-1, 1]. Where s = 1 (the p-quantile of |x0_hat| is <= 1) it equals static thresholding.
    With p = 1, s = max(1, max |x0_hat|): nothing is clipped, x0_hat is only divided by s, so it equals static
    thresholding exactly on the samples that already lie in [-1, 1] (both are then the identity) and rescales,
    where static clips, the others.
    """
    # Saharia et al. 2022 (Imagen), Sec. 2.3: s = max(1, percentile(|x0_hat|, p)); x0_hat = clip(x0_hat, -s, s) / s
    s = quantile_per_sample(x0_hat.abs().flatten(1), percentile).clamp(min=1)
    s = append_dims(s, x0_hat.ndim)
    return torch.minimum(torch.maximum(x0_hat, -s), s) / s


class Thresholded(SamplerDenoiser):
    """Static or dynamic thresholding of the wrapped sampler denoiser's x0_hat; v passes through."""

    def __init__(self, inner: nn.Module, kind: Threshold, percentile: float = DEFAULT_PERCENTILE):
        super().__init__()
        self.inner, self.kind, self.percentile = inner, kind, percentile

    def with_variance(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x0_hat, v = self.inner.with_variance(x, sigma)
        if self.kind == "static":
            return static_threshold(x0_hat), v
        return dynamic_threshold(x0_hat, self.percentile), v


class NoisyClassifier(nn.Module):
    """Adapts a noise-aware classifier net(x_t, timestep) -> logits, trained on a discrete schedule, to
    logits(x, sigma) in VE coordinates: x_t = x / sqrt(1 + sigma^2), the timestep found from sigma."""

    def __init__(self, net: nn.Module, schedule: DiscreteSchedule):
        super().__init__()
        self.net, self.schedule = net, schedule

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        dtype = next(self.net.parameters()).dtype
        alpha, _ = vp_coefficients(append_dims(sigma.to(x.dtype), x.ndim))
        return self.net((alpha * x).to(dtype), self.schedule.timestep_from_sigma(sigma).to(dtype))


def describe(schedule: ScheduleConfig) -> str:
    return f"{schedule.kind} ({schedule.timesteps} steps, beta {schedule.beta_start:g}..{schedule.beta_end:g})"


def classifier_grad(classifier: nn.Module, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """grad_x log p(y | x; sigma) of a classifier(x, sigma) -> logits, in x's dtype (also under torch.no_grad)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        log_p = F.log_softmax(classifier(x, sigma).double(), dim=1).gather(1, labels[:, None]).sum()
        return torch.autograd.grad(log_p, x)[0]


class ClassifierGuided(SamplerDenoiser):
    """Base of the two forms of classifier guidance: the wrapped denoiser, the classifier, the labels, the scale."""

    def __init__(self, inner: nn.Module, classifier: nn.Module, labels: torch.Tensor, scale: float):
        super().__init__()
        self.inner, self.classifier, self.labels, self.scale = inner, classifier, labels, scale

    def grad_log_p(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return classifier_grad(self.classifier, x, sigma, self.labels.repeat(x.shape[0] // len(self.labels)))


class ClassifierGuidance(ClassifierGuided):
    """Classifier guidance in its eps form, x0_hat' = x0_hat + s sigma^2 grad_x log p(y | x); any sampler.

    Dhariwal & Nichol 2021, Alg. 2: eps' = eps - sqrt(1 - alpha_bar) s grad_{x_t} log p(y | x_t). In VE coordinates
    x_t = alpha x, so grad_{x_t} = grad_x / alpha, sqrt(1 - alpha_bar) / alpha = sigma, and x0 = x - sigma eps gives
    x0' = x0 + s sigma^2 grad_x log p(y | x). With s = 1 this is Bayes' rule for Tweedie's formula:
    D(x | y) = D(x) + sigma^2 grad_x log p(y | x).
    """

    def with_variance(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x0_hat, v = self.inner.with_variance(x, sigma)
        sigma = sigma.expand(x.shape[0])
        grad = self.grad_log_p(x, sigma)
        return x0_hat + self.scale * append_dims(sigma, x.ndim) ** 2 * grad, v  # x0' = x0 + s sigma^2 grad_x log p


class ClassifierMeanGuidance(ClassifierGuided):
    """Classifier guidance in its ancestral form: x0_hat unchanged, the DDPM mean shifted (sample_ddpm only).

    Dhariwal & Nichol 2021, Alg. 1: x_s ~ N(mu + s Sigma grad_{x_t} log p(y | x_t), Sigma). In VE coordinates
    x_s = alpha_s x_s', Sigma = alpha_s^2 Sigma_VE and grad_{x_t} = grad_x / alpha_t, so the VE mean moves by
    s Sigma_VE (alpha_s / alpha_t) grad_x log p(y | x).
    """

    def with_variance(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.inner.with_variance(x, sigma)

    def mean_shift(self, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
                   variance: torch.Tensor) -> torch.Tensor:
        """The shift of the VE mean of the step sigma -> sigma_next ([B] each) whose VE variance is `variance`."""
        n = x.shape[0]
        sigma, sigma_next = sigma.expand(n), sigma_next.expand(n)
        grad = self.grad_log_p(x, sigma)
        alpha_t, _ = vp_coefficients(append_dims(sigma.to(x.dtype), x.ndim))
        alpha_s, _ = vp_coefficients(append_dims(sigma_next.to(x.dtype), x.ndim))
        return self.scale * variance * (alpha_s / alpha_t) * grad  # s Sigma_VE (alpha_s / alpha_t) grad_x log p


@dataclass(frozen=True, eq=False)
class Guidance:
    """How to guide a sampling run; wrap() turns a denoiser and one batch's conditions into what the sampler sees.

    cfg: classifier-free guidance weight w >= 0 (0: none); negative: the condition that replaces the null one in
    CFG, one row (for every sample) or one per sample; threshold: None, "static" or "dynamic" (at `percentile`),
    applied to x0_hat after CFG and classifier guidance; classifier: a noise-aware classifier(x, sigma) -> logits
    guiding towards cond.labels with `classifier_scale`, in the "eps" form (every sampler) or "mean" (ddpm).
    """

    cfg: float = 0.0
    negative: Condition | None = None
    threshold: Threshold | None = None
    percentile: float = DEFAULT_PERCENTILE
    classifier: nn.Module | None = None
    classifier_scale: float = 1.0
    classifier_form: ClassifierForm = "eps"

    def __post_init__(self) -> None:
        if not self.cfg >= 0:
            raise DifflabError(f"--cfg must be >= 0, got {self.cfg}")
        if self.threshold not in (None, *THRESHOLDS):
            raise DifflabError(f"--threshold must be static or dynamic, got {self.threshold!r}")
        if not 0 < self.percentile <= 1:
            raise DifflabError(f"--threshold-percentile must lie in (0, 1], got {self.percentile}")
        if not self.classifier_scale >= 0:
            raise DifflabError(f"--classifier-scale must be >= 0, got {self.classifier_scale}")
        if self.classifier_form not in CLASSIFIER_FORMS:
            raise DifflabError(f"--classifier-form must be eps or mean, got {self.classifier_form!r}")

    def check_sampler(self, sampler: str) -> None:
        if self.classifier is not None and self.classifier_form == "mean" and sampler not in MEAN_FORM_SAMPLERS:
            raise DifflabError(f"--classifier-form mean shifts the ancestral mean and needs --sampler "
                               f"{' or '.join(MEAN_FORM_SAMPLERS)}, got {sampler!r}; use --classifier-form eps")

    def check(self, sampler: str, denoiser: nn.Module, cond: Condition | None) -> None:
        """Everything wrap() would refuse for this run, before any sampling starts."""
        self.check_sampler(sampler)
        if self.classifier is not None:
            self._classifier_labels(denoiser, cond)

    def negative_rows(self, start: int, stop: int) -> Condition | None:
        """The negative condition for samples start..stop-1 (a one-row negative stands for every sample)."""
        if self.negative is None:
            return None
        if len(self.negative) == 1:
            return self.negative.repeat(stop - start)
        if len(self.negative) < stop:
            raise DifflabError(f"guidance.negative must hold 1 row or one per sample, got {len(self.negative)} "
                               f"rows for sample {stop - 1}")
        return self.negative[start:stop]

    def select(self, start: int, stop: int) -> Guidance:
        """The guidance of samples start..stop-1 of a run (for a shard of it)."""
        return replace(self, negative=self.negative_rows(start, stop))

    def wrap(self, denoiser: nn.Module, cond: Condition | None, negative: Condition | None = None) -> SamplerDenoiser:
        """The sampler-facing denoiser for one batch: condition (with CFG), classifier guidance, thresholding."""
        guided = (ClassifierFreeGuidance(denoiser, cond, negative, self.cfg) if self.cfg > 0
                  else ConditionedDenoiser(denoiser, cond))
        classify = self.classifier is not None and self.classifier_scale > 0  # s = 0 needs no gradients
        if self.classifier is not None:
            labels = self._classifier_labels(denoiser, cond)
            classifier = self.classifier.to(labels.device)  # where this batch is sampled
        if classify and self.classifier_form == "eps":
            guided = ClassifierGuidance(guided, classifier, labels, self.classifier_scale)
        if self.threshold is not None:
            guided = Thresholded(guided, self.threshold, self.percentile)
        if classify and self.classifier_form == "mean":
            guided = ClassifierMeanGuidance(guided, classifier, labels, self.classifier_scale)
        return guided

    def _classifier_labels(self, denoiser: nn.Module, cond: Condition | None) -> torch.Tensor:
        if isinstance(self.classifier, NoisyClassifier):
            if not isinstance(denoiser.schedule, DiscreteSchedule):
                raise DifflabError("--classifier was trained on a discrete VP schedule, and this model's noise levels "
                                   "are continuous (EDM); classifier guidance needs a VP model of that schedule")
            ours, theirs = self.classifier.schedule.config, denoiser.schedule.config
            if ours != theirs:
                raise DifflabError(f"--classifier was trained for schedule {describe(ours)}, but the model uses "
                                   f"{describe(theirs)}: train one with `difflab train-classifier --for-model MODEL`")
        if cond is None or cond.labels is None or bool((cond.labels < 0).any()):
            raise DifflabError("classifier guidance needs a class label for every sample: give --class K")
        return cond.labels
