"""The paper's loss terms, each in one place.

* eq. (2)  L_R = L_cls + L_box + L_mask + L_RPN: the model returns each term under its own key
  (``loss_classifier``, ``loss_box_reg`` -- or ``loss_box_reg_h`` + ``loss_box_reg_r`` with H&R --,
  ``loss_mask``, ``loss_objectness`` + ``loss_rpn_box_reg``); the training loop sums them.
* eq. (3)  smooth-L1: :func:`smooth_l1` (``beta=1`` is the paper's formula; the RPN uses
  ``beta=1/9`` as torchvision and maskrcnn-benchmark do).
* eq. (4)  endpoint term: :func:`endpoint_loss`, the mean squared error between the predicted
  heatmap and the Gaussian endpoint target over the N x M input image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth_l1(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Eq. (3), element-wise: 0.5 x^2 / beta if |x| < beta else |x| - 0.5 beta (beta = 1: the paper)."""
    ax = x.abs()
    if beta <= 0:
        return ax
    return torch.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


def box_regression_loss(pred: torch.Tensor, target: torch.Tensor, normalizer: int, beta: float = 1.0):
    """Sum of eq. (3) over the box parameters of the positive samples, divided by ``normalizer``
    (the number of sampled RoIs / anchors, as in torchvision's ``fastrcnn_loss``)."""
    if pred.numel() == 0:
        return pred.sum() * 0.0
    return smooth_l1(pred - target, beta).sum() / max(int(normalizer), 1)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, class_known: torch.Tensor | None = None) -> torch.Tensor:
    """L_cls: cross-entropy over background + classes. A positive whose class is unknown
    (``class_known`` False, e.g. an unlabelled chromosome of the BioImLab set) contributes
    ``-log(1 - p_background)``: it must be a chromosome, of any class."""
    if class_known is None or bool(class_known.all()):
        return F.cross_entropy(logits, labels)
    ce = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    unknown = ~class_known & (labels > 0)
    lse = torch.logsumexp(logits, dim=1)
    any_fg = lse - torch.logsumexp(logits[:, 1:], dim=1)  # -log(sum of the foreground probabilities)
    return torch.where(unknown, any_fg, ce).mean()


def mask_loss(mask_logits: torch.Tensor, labels: torch.Tensor, mask_targets: torch.Tensor) -> torch.Tensor:
    """L_mask: average binary cross-entropy of the m x m mask of the ground-truth class.

    ``mask_logits [K, C, m, m]`` (or ``[K, 1, m, m]`` class-agnostic), ``labels [K]``,
    ``mask_targets [K, m, m]`` in [0, 1]."""
    if mask_targets.numel() == 0:
        return mask_logits.sum() * 0.0
    if mask_logits.shape[1] == 1:
        sel = mask_logits[:, 0]
    else:
        sel = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(sel, mask_targets.to(sel.dtype))


def endpoint_loss(heatmap: torch.Tensor, targets: list[dict], image_sizes) -> torch.Tensor:
    """Eq. (4): (1 / NM) sum_ij (x_ij - x^_ij)^2 per image over its N x M (unpadded) area, averaged
    over the images that have endpoint annotations (``has_endpoints``). The target is
    ``target["endpoint_heatmap"]`` or, when absent, rendered from ``target["endpoints"]`` with
    ``chromoseg.ops.endpoint_heatmap``."""
    terms = []
    for i, (t, (h, w)) in enumerate(zip(targets, image_sizes)):
        if "has_endpoints" in t and not bool(t["has_endpoints"]):
            continue
        tgt = t.get("endpoint_heatmap")
        if tgt is None:
            if "endpoints" not in t:
                continue
            from chromoseg.ops import endpoint_heatmap

            tgt = endpoint_heatmap(t["endpoints"], size=(h, w))
        tgt = tgt.reshape(tgt.shape[-2:]).to(heatmap.device, torch.float32)
        pred = heatmap[i, 0, :h, :w].float()
        if tgt.shape != pred.shape:
            tgt = F.interpolate(tgt[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        terms.append(((pred - tgt) ** 2).mean())
    if not terms:
        return heatmap.sum() * 0.0
    return torch.stack(terms).mean()
