"""Metric sanity on distributions whose answer is known: FD closed forms, KID unbiasedness, precision/recall of
identical, disjoint and mode-dropping sets, toy-data distances, class coverage."""

import math

import pytest
import torch

from difflab.eval.classes import class_coverage, label_accuracy
from difflab.eval.frechet import frechet_distance, frechet_distance_of, gaussian_moments, paired_gap_std
from difflab.eval.kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from difflab.eval.manifold import precision_recall
from difflab.eval.toy_metrics import energy_distance, knn_kl_divergence, ks_per_axis, sliced_wasserstein


def gaussian(n, mean, cov, seed):
    g = torch.Generator().manual_seed(seed)
    cholesky = torch.linalg.cholesky(torch.as_tensor(cov, dtype=torch.float64))
    eps = torch.randn(n, len(mean), generator=g, dtype=torch.float64)
    return torch.as_tensor(mean, dtype=torch.float64) + eps @ cholesky.T


def test_fd_of_a_set_against_itself_is_zero():
    x = gaussian(2000, [0.0] * 16, torch.eye(16) + 0.5, seed=0)
    assert abs(frechet_distance_of(x, x)) < 1e-8
    assert frechet_distance_of(x, x + 0.1) == pytest.approx(16 * 0.01, rel=1e-6)  # a shift adds |mu1 - mu2|^2


def test_fd_matches_closed_forms_between_known_gaussians():
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2
    assert frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([0.0]), torch.tensor([[1.0]])) \
        == pytest.approx(1 + 1)
    # 2x2 covariances that do not commute: tr (S1 S2)^1/2 = (tr S1 S2 + 2 (det S1 det S2)^1/2)^1/2
    s1 = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[1.0, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    assert not torch.allclose(s1 @ s2, s2 @ s1)
    cross = math.sqrt(float((s1 @ s2).trace()) + 2 * math.sqrt(float(torch.det(s1) * torch.det(s2))))
    mu1, mu2 = torch.tensor([0.5, -1.0]), torch.tensor([0.0, 1.0])
    expected = 0.25 + 4.0 + float(s1.trace() + s2.trace()) - 2 * cross
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    # and from samples, the fitted Gaussians approach the closed form
    x, y = gaussian(200_000, mu1, s1, seed=1), gaussian(200_000, mu2, s2, seed=2)
    assert frechet_distance_of(x, y) == pytest.approx(expected, rel=0.01)


def test_fd_is_stable_for_singular_covariances():
    x = gaussian(500, [0.0] * 4, torch.eye(4), seed=3)
    x = torch.cat([x, torch.zeros(500, 60, dtype=torch.float64)], 1)  # rank 4 in 64 dimensions
    assert abs(frechet_distance_of(x, x)) < 1e-8
    mu, sigma = gaussian_moments(x)
    assert sigma.shape == (64, 64) and torch.allclose(sigma, sigma.T)


def test_fd_grows_monotonically_with_added_noise():
    x = gaussian(3000, [0.0] * 8, torch.eye(8), seed=4)
    noisy = [frechet_distance_of(x, x + s * gaussian(3000, [0.0] * 8, torch.eye(8), seed=5)) for s in (0, 0.2, 0.5, 1)]
    assert all(a < b for a, b in zip(noisy, noisy[1:]))


def test_paired_bootstrap_gap_std_cancels_the_shared_noise():
    """Rows that share their noise: the gap's std is far below either FD's own resampling std, and 0 for one set."""
    g = torch.Generator().manual_seed(0)
    reference = gaussian_moments(torch.randn(4000, 4, generator=g))
    base = torch.randn(500, 4, generator=g)
    moved = base + 0.1 * torch.randn(500, 4, generator=g)  # the same rows, slightly changed
    assert paired_gap_std(base, base, reference, 50) == 0
    paired = paired_gap_std(moved, base, reference, 200)
    unpaired = paired_gap_std(torch.randn(500, 4, generator=g), base, reference, 200)  # rows of other noise
    assert 0 < paired < 0.3 * unpaired


def test_mmd_is_unbiased_where_the_v_statistic_is_not():
    x = gaussian(200 * 40, [0.0] * 8, torch.eye(8), seed=6).reshape(200, 40, 8)
    y = gaussian(200 * 40, [0.0] * 8, torch.eye(8), seed=7).reshape(200, 40, 8)
    unbiased = mmd2_unbiased(x, y)  # 200 independent pairs of sets of 40
    assert unbiased.shape == (200,) and float(unbiased[7]) == pytest.approx(float(mmd2_unbiased(x[7], y[7])))
    stderr = unbiased.std() / math.sqrt(len(unbiased))
    assert abs(unbiased.mean()) < 3 * stderr

    # the V-statistic keeps the k(x_i, x_i) terms, so its mean is positive for equal distributions
    biased = (polynomial_kernel(x, x).mean((1, 2)) + polynomial_kernel(y, y).mean((1, 2))
              - 2 * polynomial_kernel(x, y).mean((1, 2)))
    assert biased.mean() > 10 * stderr


def test_kid_mean_and_std_separate_equal_from_shifted():
    x, y = gaussian(3000, [0.0] * 16, torch.eye(16), seed=8), gaussian(3000, [0.0] * 16, torch.eye(16), seed=9)
    same, same_std = kernel_inception_distance(x, y, subsets=50, subset_size=500)
    shifted, shifted_std = kernel_inception_distance(x, y + 0.3, subsets=50, subset_size=500)
    assert abs(same) < 2 * same_std and same_std > 0
    assert shifted > 5 * shifted_std
    assert kernel_inception_distance(x, y, subsets=50, subset_size=500) == (same, same_std)  # seeded


def test_precision_recall_identical_disjoint_and_dropped_modes():
    centres = 10 * torch.eye(4, dtype=torch.float64)
    modes = torch.arange(2000) % 4
    real = centres[modes] + gaussian(2000, [0.0] * 4, torch.eye(4), seed=10)
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, real + 100) == (0.0, 0.0)
    half = centres[modes % 2] + gaussian(2000, [0.0] * 4, torch.eye(4), seed=11)  # only two of the four modes
    precision, recall = precision_recall(real, half)
    assert precision > 0.9 and 0.4 < recall < 0.6


def test_toy_distances_are_near_zero_for_one_distribution_and_grow_with_a_shift():
    x = gaussian(3000, [0.0, 0.0], torch.eye(2), seed=12)
    y = gaussian(3000, [0.0, 0.0], torch.eye(2), seed=13)
    shifted = y + torch.tensor([0.5, 0.0], dtype=torch.float64)
    assert sliced_wasserstein(x, x) == 0
    assert sliced_wasserstein(x, y) < 0.06 < 0.3 < sliced_wasserstein(x, shifted)
    assert abs(energy_distance(x, y)) < 0.01 < 0.1 < energy_distance(x, shifted)
    ks_x, ks_y = ks_per_axis(x, shifted)
    assert ks_x > 0.15 and ks_y < 0.05  # only the first axis moved


def test_knn_kl_estimate_matches_the_gaussian_closed_form():
    x = gaussian(4000, [0.0, 0.0], torch.eye(2), seed=14)
    y = gaussian(4000, [1.0, 0.0], torch.eye(2), seed=15)
    assert knn_kl_divergence(x, y) == pytest.approx(0.5, abs=0.1)  # KL(N(0, I) || N(mu, I)) = |mu|^2 / 2
    assert abs(knn_kl_divergence(x, gaussian(4000, [0.0, 0.0], torch.eye(2), seed=16))) < 0.05


def test_class_coverage_and_accuracy():
    probs = torch.nn.functional.one_hot(torch.tensor([0] * 50 + [1] * 45 + [2] * 5), 10).double()
    assert class_coverage(probs) == 0.3  # classes 0, 1, 2 each hold >= 5% of the samples
    assert class_coverage(probs, min_share=0.4) == 0.2
    assert label_accuracy(probs, torch.tensor([0] * 50 + [2] * 50)) == 0.55
