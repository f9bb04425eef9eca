"""PyTorch reference of the released HSFM recipe (paper Alg. 1), for benchmarks and tests only.

Written the way the authors' released code works: the inner loop is T plain SGD steps of a
linear head (`F.linear`) with `torch.autograd.grad(..., create_graph=True)`, the outer loss is
the cross-entropy of the adapted head on the hard set, `backward()` carries it to the support
embeddings H, then `clip_grad_norm_` and `torch.optim.Adam` update H. `run` is one whole HSFM
run in the same style (hard set per epoch, KH meta-steps, T Adam steps of the head, val/test
group accuracies, selection on val WGA), taking the support rows as input so that its result
can be compared with `hsfm_jax.methods.hsfm.algorithm.run` row for row.

PyTorch is a benchmark/test dependency (the `export` extra); hsfm_jax never imports it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def meta_gradient(
    support: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    support_labels: torch.Tensor,
    query: torch.Tensor,
    query_labels: torch.Tensor,
    *,
    inner_steps: int,
    inner_lr: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_out, dL_out/dH) by differentiating through T SGD steps (create_graph=True).

    Args:
      support: (S, d) H. weight: (C, d). bias: (C,). support_labels: (S,) int64.
      query: (Q, d). query_labels: (Q,) int64.
    """
    H = support.detach().requires_grad_(True)
    outer = _outer_loss(H, weight, bias, support_labels, query, query_labels, inner_steps, inner_lr)
    outer.backward()
    return outer.detach(), H.grad


def _outer_loss(H, weight, bias, support_labels, query, query_labels, inner_steps, inner_lr):
    w = weight.detach().clone().requires_grad_(True)
    b = bias.detach().clone().requires_grad_(True)
    for _ in range(inner_steps):
        inner = F.cross_entropy(F.linear(H, w, b), support_labels)
        gw, gb = torch.autograd.grad(inner, (w, b), create_graph=True)
        w, b = w - inner_lr * gw, b - inner_lr * gb
    return F.cross_entropy(F.linear(query, w, b), query_labels)


def meta_step(
    support: torch.nn.Parameter,
    optimizer: torch.optim.Optimizer,
    weight: torch.Tensor,
    bias: torch.Tensor,
    support_labels: torch.Tensor,
    query: torch.Tensor,
    query_labels: torch.Tensor,
    *,
    inner_steps: int,
    inner_lr: float,
    clip: float,
) -> torch.Tensor:
    """One update of H in place: meta-gradient, `clip_grad_norm_`, optimizer step. -> L_out."""
    optimizer.zero_grad(set_to_none=True)
    outer = _outer_loss(
        support, weight, bias, support_labels, query, query_labels, inner_steps, inner_lr
    )
    outer.backward()
    torch.nn.utils.clip_grad_norm_([support], clip)
    optimizer.step()
    return outer.detach()


def _group_accuracies(weight, bias, features, labels, groups, num_groups):
    correct = (F.linear(features, weight, bias).argmax(-1) == labels).to(features.dtype)
    acc = torch.zeros(num_groups, dtype=features.dtype)
    count = torch.zeros(num_groups, dtype=features.dtype)
    acc.index_add_(0, groups, correct)
    count.index_add_(0, groups, torch.ones_like(correct))
    return acc / count.clamp_min(1), count


def _wga(acc, count):
    return acc[count > 0].min()


def run(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    val_groups: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    test_groups: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    support_indices: torch.Tensor,
    *,
    num_classes: int,
    num_groups: int,
    hard_set_size: int,
    inner_steps: int,
    meta_steps: int,
    epochs: int,
    inner_lr: float,
    meta_lr: float,
    head_lr: float,
    clip: float,
) -> dict:
    """One HSFM run (Alg. 1) with Adam on H and on the head; selection on val WGA (ties: later).

    Args:
      *_features: (N, d); *_labels: (N,) int64; *_groups: (N,) int64 in [0, G).
      weight, bias: the initial head (C, d), (C,).
      support_indices: (S,) int64 train rows of the support set (drawn by the caller).

    Returns:
      dict with support (S, d), weight, bias (last head), best_weight, best_bias, best_epoch,
      val_wga and test_wga (per epoch, lists).
    """
    H = torch.nn.Parameter(train_features[support_indices].clone())
    support_labels = train_labels[support_indices]
    meta_opt = torch.optim.Adam([H], lr=meta_lr)
    w = torch.nn.Parameter(weight.clone())
    b = torch.nn.Parameter(bias.clone())
    head_opt = torch.optim.Adam([w, b], lr=head_lr)
    best = dict(score=-float("inf"), epoch=0, weight=w.detach().clone(), bias=b.detach().clone())
    val_wga, test_wga = [], []
    for epoch in range(epochs):
        with torch.no_grad():
            losses = F.cross_entropy(F.linear(val_features, w, b), val_labels, reduction="none")
            rows = []
            for c in range(num_classes):
                members = torch.nonzero(val_labels == c).squeeze(1)
                rows.append(members[torch.topk(losses[members], hard_set_size).indices])
            rows = torch.cat(rows)
        query, query_labels = val_features[rows], val_labels[rows]
        w0, b0 = w.detach(), b.detach()
        for _ in range(meta_steps):
            meta_step(
                H,
                meta_opt,
                w0,
                b0,
                support_labels,
                query,
                query_labels,
                inner_steps=inner_steps,
                inner_lr=inner_lr,
                clip=clip,
            )
        frozen = H.detach()
        for _ in range(inner_steps):
            head_opt.zero_grad(set_to_none=True)
            F.cross_entropy(F.linear(frozen, w, b), support_labels).backward()
            head_opt.step()
        with torch.no_grad():
            score = _wga(*_group_accuracies(w, b, val_features, val_labels, val_groups, num_groups))
            test = _wga(
                *_group_accuracies(w, b, test_features, test_labels, test_groups, num_groups)
            )
        val_wga.append(float(score))
        test_wga.append(float(test))
        if score >= best["score"]:
            best = dict(
                score=score, epoch=epoch + 1, weight=w.detach().clone(), bias=b.detach().clone()
            )
    return dict(
        support=H.detach(),
        weight=w.detach(),
        bias=b.detach(),
        best_weight=best["weight"],
        best_bias=best["bias"],
        best_epoch=best["epoch"],
        val_wga=val_wga,
        test_wga=test_wga,
    )
