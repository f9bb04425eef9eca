"""Full-network objectives of train_erm (GroupDRO, JTT, LISA) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from feature_export import objectives


def test_group_dro_step_matches_hand_computation():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    groups = torch.tensor([0, 0, 1, 2])
    q = torch.full((4,), 0.25)  # group 3 absent from the batch
    loss, new_q = objectives.group_dro_loss(losses, groups, q, step_size=0.01)
    group_loss = [1.5, 3.0, 4.0, 0.0]
    unnormalized = [0.25 * math.exp(0.01 * g) for g in group_loss]
    expected_q = [u / sum(unnormalized) for u in unnormalized]
    np.testing.assert_allclose(new_q.numpy(), expected_q, rtol=1e-6)
    assert float(loss.detach()) == pytest.approx(
        sum(a * b for a, b in zip(expected_q, group_loss, strict=True)), 1e-6
    )
    loss.backward()  # d loss / d loss_i = q'_g / n_g (q' treated as a constant)
    want = [expected_q[0] / 2, expected_q[0] / 2, expected_q[1], expected_q[2]]
    np.testing.assert_allclose(losses.grad.numpy(), want, rtol=1e-6)

    adj = objectives.group_adjustment(np.array([0, 0, 1]), 3, 2.0)
    np.testing.assert_allclose(adj.numpy(), [2 / math.sqrt(2), 2.0, 0.0], rtol=1e-6)
    _, q_adj = objectives.group_dro_loss(
        losses.detach(), groups, q[:3] / q[:3].sum(), step_size=0.5, adjustment=adj
    )
    raw = [math.exp(0.5 * (g + a)) for g, a in zip(group_loss[:3], adj.tolist(), strict=True)]
    np.testing.assert_allclose(q_adj.numpy(), [r / sum(raw) for r in raw], rtol=1e-6)


def test_jtt_upsamples_the_error_set():
    rows = np.array([3, 5, 7, 9])
    errors = np.array([False, True, False, True])
    np.testing.assert_array_equal(objectives.jtt_rows(rows, errors, 3), [3, 5, 5, 5, 7, 9, 9, 9])
    np.testing.assert_array_equal(objectives.jtt_rows(rows, errors, 1), rows)


def test_lisa_partners_mix_and_loss_match_hand_computation():
    labels, attrs = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(objectives.lisa_partners(labels, attrs, True, rng), [1, 0, 3, 2])
    np.testing.assert_array_equal(objectives.lisa_partners(labels, attrs, False, rng), [2, 3, 0, 1])
    # no partner in the batch: left unmixed
    np.testing.assert_array_equal(
        objectives.lisa_partners(np.array([0, 0]), np.array([1, 1]), True, rng), [0, 1]
    )

    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    lam = np.array([0.25, 0.5, 1.0, 0.75])
    mixed, targets = objectives.lisa_mix(x, y, np.array([2, 3, 0, 1]), lam, 2)
    np.testing.assert_allclose(mixed[0].numpy(), 0.25 * np.array([1, 0]) + 0.75 * np.array([3, 1]))
    np.testing.assert_allclose(targets.numpy(), [[0.25, 0.75], [0.5, 0.5], [0, 1], [0.25, 0.75]])

    w = torch.tensor([[0.5, -1.0], [0.2, 0.3]])  # a tiny linear model
    logits = mixed @ w.T
    loss = objectives.soft_cross_entropy(logits, targets)
    z = logits.numpy()
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    assert float(loss) == pytest.approx(float(-(targets.numpy() * log_p).sum(1).mean()), 1e-6)


def test_lisa_needs_groups_laid_out_by_label():
    groups, labels = np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1])
    np.testing.assert_array_equal(objectives.attributes_of(groups, labels, 4, 2), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="label \\* A \\+ attribute"):
        objectives.attributes_of(groups, np.array([0, 1, 0, 1]), 4, 2)
    np.testing.assert_allclose(objectives.group_balanced_weights([0, 0, 0, 1]), [1 / 3] * 3 + [1])


@pytest.mark.parametrize(
    "objective, overrides, message",
    [
        ("group_dro", {"dro_step_size": 0.0}, "dro_step_size out of range"),
        ("jtt", {"jtt_up_weight": 0}, "jtt_up_weight out of range"),
        ("lisa", {"mix_ratio": 1.5}, "mix_ratio out of range"),
        ("mixup", {}, "objective must be one of"),
    ],
)
def test_bad_objective_settings(objective, overrides, message):
    with pytest.raises(ValueError, match=message):
        objectives.objective_settings("waterbirds", objective, overrides)


def test_paper_settings_per_dataset():
    assert objectives.objective_settings("waterbirds", "jtt", {}) == dict(
        jtt_epochs=60, jtt_up_weight=100
    )
    assert objectives.objective_settings("celeba", "jtt", {"jtt_epochs": 2}) == dict(
        jtt_epochs=2, jtt_up_weight=50
    )
    assert objectives.objective_settings("dominoes", "lisa", {}) == dict(
        mix_ratio=0.5, mix_alpha=2.0
    )
