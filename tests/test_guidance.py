"""Guidance wrappers against closed forms: CFG in x0 vs eps form, thresholding, classifier guidance by Bayes' rule
on Gaussian classes, the ancestral mean shift against a direct VP computation, and the guidance flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from samplers_exact import MixtureDenoiser
from test_serve_api import write_checkpoint

from difflab.cli import main
from difflab.conditioning import NULL_LABEL, Condition
from difflab.denoiser import Denoiser, VPPrecond
from difflab.errors import DifflabError
from difflab.guidance import (ClassifierFreeGuidance, ClassifierGuidance, ConditionedDenoiser, Guidance,
                              NoisyClassifier, Thresholded, dynamic_threshold, static_threshold)
from difflab.nets import network_config, build_network
from difflab.pipelines.generate import generate
from difflab.samplers import SAMPLERS
from difflab.schedules import DiscreteSchedule, ScheduleConfig

SCHEDULE = DiscreteSchedule(ScheduleConfig(timesteps=100))


def class_denoiser(tiny_unet_spec, prediction="eps", num_classes=3) -> Denoiser:
    net = build_network(network_config({**tiny_unet_spec, "num_classes": num_classes})).double()
    for p in net.parameters():  # the zero-initialised output layers would make every prediction 0
        torch.nn.init.normal_(p, std=0.1)
    return Denoiser(net, VPPrecond(SCHEDULE, prediction)).eval()


def noisy_batch(n=3, sigma=2.0):
    x = torch.randn(n, 1, 8, 8, dtype=torch.float64) * (1 + sigma**2) ** 0.5
    return x, torch.full((n,), sigma, dtype=torch.float64)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_cfg_on_x0_equals_the_eps_form(tiny_unet_spec, prediction):
    denoiser = class_denoiser(tiny_unet_spec, prediction)
    x, sigma = noisy_batch()
    cond, w = Condition(torch.tensor([0, 1, 2])), 2.5
    with torch.no_grad():
        guided = ClassifierFreeGuidance(denoiser, cond, None, w)(x, sigma)
        eps_c = (x - denoiser(x, sigma, cond)) / 2.0
        eps_u = (x - denoiser(x, sigma, cond.drop(torch.ones(3, dtype=torch.bool)))) / 2.0
    eps = (1 + w) * eps_c - w * eps_u  # Ho & Salimans 2022, Eq. 6
    torch.testing.assert_close(guided, x - 2.0 * eps, rtol=0, atol=1e-12)
    assert (guided - denoiser(x, sigma, cond)).abs().max() > 1e-3  # the guidance does something


def test_cfg_weight_zero_is_the_conditional_model_exactly(tiny_unet_spec):
    denoiser = class_denoiser(tiny_unet_spec)
    x, sigma = noisy_batch()
    cond = Condition(torch.tensor([2, 0, 1]))
    with torch.no_grad():
        expected = denoiser(x, sigma, cond)
        with_negative = ClassifierFreeGuidance(denoiser, cond, Condition(torch.tensor([1])), 0.0)
        assert torch.equal(with_negative(x, sigma), expected)
        assert torch.equal(Guidance().wrap(denoiser, cond)(x, sigma), expected)


class Recorder(torch.nn.Module):
    """D(x, sigma, cond) = label of each row (broadcast), recording the batches it is called with."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, sigma, cond):
        self.calls.append((x.shape[0], cond.labels.tolist()))
        return cond.labels.to(x.dtype).view(-1, *[1] * (x.ndim - 1)).expand_as(x).clone()


def test_cfg_is_one_forward_of_2b_rows_per_step():
    recorder = Recorder()
    guided = ClassifierFreeGuidance(recorder, Condition(torch.tensor([4, 5])), None, 1.5)
    sigmas = torch.tensor([10.0, 3.0, 1.0, 0.3, 0.0], dtype=torch.float64)
    SAMPLERS["ddim"].fn(guided, torch.zeros(2, 1, 2, 2, dtype=torch.float64), sigmas)
    assert recorder.calls == [(4, [4, 5, NULL_LABEL, NULL_LABEL])] * 4


def test_negative_condition_replaces_the_null_one():
    x, sigma = noisy_batch(2)
    cond, w = Condition(torch.tensor([5, 5])), 2.0
    null = ClassifierFreeGuidance(Recorder(), cond, None, w)(x, sigma)
    negative = ClassifierFreeGuidance(Recorder(), cond, Condition(torch.tensor([3, 1])), w)(x, sigma)
    assert torch.equal(null, torch.full_like(x, 5 + w * (5 - NULL_LABEL)))
    assert torch.equal(negative[0], torch.full_like(x[0], 5 + w * (5 - 3)))
    assert torch.equal(negative[1], torch.full_like(x[1], 5 + w * (5 - 1)))


def test_generate_slices_negatives_like_cond(tiny_unet_spec):
    denoiser = class_denoiser(tiny_unet_spec).float()
    cond = Condition(torch.tensor([0, 1, 2, 0, 1]))
    per_row = Guidance(cfg=2.0, negative=Condition(torch.tensor([2, 2, 2, 2, 2])))
    one_row = Guidance(cfg=2.0, negative=Condition(torch.tensor([2])))
    run = dict(sampler="ddim", steps=3, cond=cond)
    a = generate(denoiser, (1, 8, 8), 5, batch=2, guidance=per_row, **run)
    b = generate(denoiser, (1, 8, 8), 5, batch=5, guidance=one_row, **run)
    c = generate(denoiser, (1, 8, 8), 5, batch=5, guidance=Guidance(cfg=2.0), **run)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert (a - c).abs().max() > 1e-3
    with pytest.raises(DifflabError, match="1 row or one per sample"):
        generate(denoiser, (1, 8, 8), 5, guidance=Guidance(cfg=1.0, negative=Condition(torch.tensor([1, 2]))), **run)


class VarianceDenoiser(torch.nn.Module):
    """with_variance(x, sigma, cond) -> (x0 = label, v = 10 * label), the learned-variance protocol."""

    def forward(self, x, sigma, cond):
        return self.with_variance(x, sigma, cond)[0]

    def with_variance(self, x, sigma, cond):
        label = cond.labels.to(x.dtype).view(-1, *[1] * (x.ndim - 1)).expand_as(x)
        return label.clone(), 10 * label


def test_wrappers_pass_the_learned_variance_through():
    x, sigma = noisy_batch(2)
    cond = Condition(torch.tensor([3, 4]))
    x0, v = ClassifierFreeGuidance(VarianceDenoiser(), cond, None, 1.0).with_variance(x, sigma)
    # the conditional half's variance
    assert torch.equal(v, 10 * torch.tensor([3.0, 4.0], dtype=x.dtype).view(2, 1, 1, 1).expand_as(x))
    assert torch.equal(x0, 2 * torch.tensor([3.0, 4.0], dtype=x.dtype).view(2, 1, 1, 1).expand_as(x) + 1)
    x0, v_thresholded = Thresholded(ConditionedDenoiser(VarianceDenoiser(), cond), "static").with_variance(x, sigma)
    assert torch.equal(v_thresholded, v) and x0.abs().max() <= 1
    points = torch.randn(2, 2, dtype=torch.float64)
    _, v_guided = ClassifierGuidance(ConditionedDenoiser(VarianceDenoiser(), cond), GaussianClasses(1.0, 5.0),
                                     torch.tensor([0, 1]), 2.0).with_variance(points, sigma)
    assert torch.equal(v_guided, torch.tensor([[30.0, 30.0], [40.0, 40.0]], dtype=torch.float64))
    assert ConditionedDenoiser(Recorder(), cond).with_variance(x, sigma)[1] is None


def test_thresholds_keep_x0_in_range():
    x0 = torch.randn(4, 1, 8, 8, dtype=torch.float64) * 3
    for thresholded in (static_threshold(x0), dynamic_threshold(x0), dynamic_threshold(x0, 0.5)):
        assert thresholded.abs().max() <= 1
    assert torch.equal(static_threshold(x0), x0.clamp(-1, 1))


def test_dynamic_threshold_is_imagens_formula():
    x0 = torch.randn(3, 1, 8, 8, dtype=torch.float64) * 2
    s = np.maximum(1, np.percentile(x0.abs().flatten(1).numpy(), 99.5, axis=1))  # numpy's linear interpolation
    expected = np.clip(x0.numpy(), -s[:, None, None, None], s[:, None, None, None]) / s[:, None, None, None]
    np.testing.assert_allclose(dynamic_threshold(x0, 0.995).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_dynamic_equals_static_exactly_where_its_s_is_one():
    inside = torch.rand(1, 1, 10, 10, dtype=torch.float64) * 1.8 - 0.9  # |x0| <= 0.9
    outliers = inside.clone()
    outliers.view(-1)[:3] = torch.tensor([5.0, -4.0, 3.0], dtype=torch.float64)  # 3% beyond [-1, 1]
    x0 = torch.cat([inside, outliers])
    # with p = 0.95 the quantile of |x0| is <= 1 in both samples, so s = 1 and dynamic clips like static
    assert torch.equal(dynamic_threshold(x0, 0.95), static_threshold(x0))
    # with p = 1, s = max(1, max |x0|): identical to static where x0 lies in [-1, 1] (both the identity) ...
    at_one = dynamic_threshold(x0, 1.0)
    assert torch.equal(at_one[0], x0[0]) and torch.equal(static_threshold(x0)[0], x0[0])
    # ... and elsewhere a pure rescale by max |x0|, which is not static's clipping
    torch.testing.assert_close(at_one[1], x0[1] / 5.0, rtol=0, atol=1e-15)
    assert not torch.allclose(at_one[1], static_threshold(x0)[1])


class GaussianClasses(torch.nn.Module):
    """Two classes x0 | y ~ N(mu_y, s^2 I) in 2-D, equal priors: p(y | x; sigma) is a logistic regression."""

    def __init__(self, s: float, distance: float):
        super().__init__()
        self.s = s
        self.means = torch.tensor([[-distance / 2, 0.0], [distance / 2, 1.0]], dtype=torch.float64)

    def forward(self, x, sigma):
        var = self.s**2 + sigma.to(x.dtype)[:, None] ** 2  # x | y ~ N(mu_y, (s^2 + sigma^2) I)
        return -0.5 * ((x[:, None, :] - self.means) ** 2).sum(-1) / var  # log p(y | x) up to a constant

    def mixture(self) -> MixtureDenoiser:
        return MixtureDenoiser([0.5, 0.5], self.means, [self.s, self.s])

    def conditional(self, x, sigma, labels):
        gain = self.s**2 / (self.s**2 + sigma[:, None] ** 2)
        return self.means[labels] + gain * (x - self.means[labels])  # D(x | y) of one Gaussian


def unconditional(mixture):
    return ConditionedDenoiser(lambda x, sigma, cond: mixture(x, sigma), None)


@pytest.mark.parametrize("sigma", [0.05, 0.7, 3.0, 40.0])
def test_classifier_guidance_at_scale_one_is_the_exact_conditional_denoiser(sigma):
    classes = GaussianClasses(0.6, 3.0)
    x = torch.randn(64, 2, dtype=torch.float64) * (1 + sigma)
    sigmas, labels = torch.full((64,), sigma, dtype=torch.float64), torch.arange(64) % 2
    guided = ClassifierGuidance(unconditional(classes.mixture()), classes, labels, 1.0)
    # Bayes: D(x | y) = D(x) + sigma^2 grad_x log p(y | x)
    torch.testing.assert_close(guided(x, sigmas), classes.conditional(x, sigmas, labels), rtol=0, atol=1e-10)
    assert (classes.mixture()(x, sigmas) - classes.conditional(x, sigmas, labels)).abs().max() > 1e-3


def test_classifier_eps_form_equals_the_vp_eps_shift():
    classes, schedule, t, scale = GaussianClasses(0.6, 3.0), DiscreteSchedule(), 400, 2.5
    alpha, sigma_vp, sigma = schedule.alpha[t], schedule.sigma_vp[t], schedule.sigmas[t]
    x_t = torch.randn(16, 2, dtype=torch.float64)
    labels = torch.arange(16) % 2
    sigmas = torch.full((16,), float(sigma), dtype=torch.float64)
    x0_hat = classes.mixture()(x_t / alpha, sigmas)
    eps = (x_t - alpha * x0_hat) / sigma_vp
    x_t_ = x_t.clone().requires_grad_(True)  # grad_{x_t} log p(y | x_t) taken directly in VP coordinates
    log_p = torch.log_softmax(classes(x_t_ / alpha, sigmas), 1).gather(1, labels[:, None]).sum()
    grad_vp = torch.autograd.grad(log_p, x_t_)[0]
    eps_guided = eps - sigma_vp * scale * grad_vp  # Dhariwal & Nichol 2021, Alg. 2
    expected = (x_t - sigma_vp * eps_guided) / alpha
    guided = ClassifierGuidance(unconditional(classes.mixture()), classes, labels, scale)(x_t / alpha, sigmas)
    torch.testing.assert_close(guided, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_ddpm_mean_shift_matches_the_vp_ancestral_step(variance):
    classes, schedule, t, scale = GaussianClasses(0.6, 3.0), DiscreteSchedule(), 300, 3.0
    x_t = torch.randn(16, 2, dtype=torch.float64)
    labels = torch.arange(16) % 2
    mixture = classes.mixture()
    guided = Guidance(classifier=classes, classifier_scale=scale, classifier_form="mean").wrap(
        lambda x, sigma, cond: mixture(x, sigma), Condition(labels))
    sigmas = schedule.sigmas[[t, t - 1]]
    x_s = SAMPLERS["ddpm"].fn(guided, x_t / schedule.alpha[t], sigmas, generator=torch.Generator().manual_seed(7),
                              variance=variance)
    # the same step in VP coordinates: Ho et al. 2020, Eq. 7 plus Dhariwal & Nichol 2021, Alg. 1
    sigma_t = torch.full((16,), float(schedule.sigmas[t]), dtype=torch.float64)
    x0_hat = mixture(x_t / schedule.alpha[t], sigma_t)
    mu = schedule.posterior_c_x0[t] * x0_hat + schedule.posterior_c_xt[t] * x_t
    Sigma = schedule.beta_tilde[t] if variance == "beta_tilde" else schedule.betas[t]
    x_t_ = x_t.clone().requires_grad_(True)
    log_p = torch.log_softmax(classes(x_t_ / schedule.alpha[t], sigma_t), 1).gather(1, labels[:, None]).sum()
    grad_vp = torch.autograd.grad(log_p, x_t_)[0]
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    expected = mu + scale * Sigma * grad_vp + Sigma.sqrt() * z
    torch.testing.assert_close(schedule.alpha[t - 1] * x_s, expected, rtol=0, atol=1e-10)
    unguided = SAMPLERS["ddpm"].fn(unconditional(mixture), x_t / schedule.alpha[t], sigmas,
                                   generator=torch.Generator().manual_seed(7), variance=variance)
    assert (unguided - x_s).abs().max() > 1e-4


def test_noisy_classifier_sees_vp_input_and_timestep():
    seen = []

    class Net(torch.nn.Linear):
        def forward(self, x_t, timestep):
            seen.append((x_t, timestep))
            return torch.zeros(len(x_t), 2)

    x = torch.randn(2, 3, dtype=torch.float64)
    NoisyClassifier(Net(1, 1), SCHEDULE)(x, SCHEDULE.sigmas[[10, 60]])
    x_t, timestep = seen[0]
    torch.testing.assert_close(x_t, (x * SCHEDULE.alpha[[10, 60]][:, None]).float())
    torch.testing.assert_close(timestep, torch.tensor([10.0, 60.0]))


def test_guidance_checks_its_fields_and_the_sampler():
    for kwargs, words in [({"cfg": -1.0}, "--cfg must be >= 0"), ({"percentile": 0.0}, "must lie in (0, 1]"),
                          ({"threshold": "soft"}, "static or dynamic"),
                          ({"classifier_scale": -2.0}, "--classifier-scale must be >= 0")]:
        with pytest.raises(DifflabError, match=words.replace("(", r"\(").replace("]", r"\]")):
            Guidance(**kwargs)
    mean = Guidance(classifier=GaussianClasses(1.0, 1.0), classifier_form="mean")
    mean.check_sampler("ddpm")
    with pytest.raises(DifflabError, match="needs --sampler ddpm"):
        mean.check_sampler("heun")
    with pytest.raises(DifflabError, match="needs a class label"):
        mean.wrap(Recorder(), None)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("guidance")
    return {"uncond": write_checkpoint(root / "u" / "checkpoint.safetensors"),
            "class": write_checkpoint(root / "c" / "checkpoint.safetensors", ("Coat", "Bag", "Sneaker"))}


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("model, argv, words", [
    ("uncond", ["--cfg", "2"], "--cfg needs a conditional model; this checkpoint is unconditional"),
    ("class", ["--cfg", "-1"], "--cfg must be >= 0, got -1.0"),
    ("class", ["--negative-class", "1"], "--negative-class needs --cfg > 0"),
    ("class", ["--cfg", "2", "--negative-class", "3"], "--negative-class must lie in 0..2"),
    ("class", ["--threshold", "dynamic", "--threshold-percentile", "1.5"], "--threshold-percentile must lie in (0, 1]"),
    ("class", ["--threshold", "static", "--threshold-percentile", "0.9"], "applies only to --threshold dynamic"),
    ("class", ["--threshold", "soft"], "argument --threshold: invalid choice"),
    ("class", ["--classifier-scale", "3"], "--classifier-scale needs --classifier CKPT"),
    ("class", ["--classifier", "{missing}"], "not found"),
    ("class", ["--classifier", "{model}"], "holds a denoiser, not a classifier"),
])
def test_bad_guidance_flags_give_one_line(capsys, tmp_path, checkpoints, model, argv, words):
    path = checkpoints[model]
    argv = [a.format(missing=tmp_path / "none.safetensors", model=path) for a in argv]
    code, _, err = run_cli(capsys, "sample", str(path), "--steps", "2", "--n", "2",
                           "--out", str(tmp_path / "s.png"), *argv)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_sample_with_cfg_negative_class_and_threshold_runs(capsys, tmp_path, checkpoints):
    out = tmp_path / "s.npz"
    code, stdout, err = run_cli(capsys, "sample", str(checkpoints["class"]), "--steps", "2", "--n", "3", "--class", "1",
                                "--cfg", "3", "--negative-class", "0", "--threshold", "dynamic", "--out", str(out))
    assert code == 0 and "wrote 3 samples" in stdout, err
    assert np.load(out)["images"].shape == (3, 16, 16)


def test_eval_takes_the_same_guidance_flags(capsys, tmp_path, checkpoints):
    samples = tmp_path / "s.npz"
    np.savez(samples, images=np.zeros((12, 28, 28), dtype=np.uint8))
    code, _, err = run_cli(capsys, "eval", str(samples), "--cfg", "2")
    assert code == 2 and "--cfg applies only when sampling from a checkpoint" in err
    code, _, err = run_cli(capsys, "eval", str(checkpoints["uncond"]), "--cfg", "2", "--n", "12")
    assert code == 2 and "--cfg needs a conditional model" in err
