"""ResNet-FPN backbone for grey images, and the paper's endpoint-detection branch (ED).

The backbone is torchvision's ResNet + FPN (``_resnet_fpn_extractor``) with two changes:

* the first convolution takes the 1-channel grey image (chromosome images are grey; a 3-channel
  torchvision state dict is accepted by :func:`load_backbone_weights`, which sums the RGB filters);
* no weights are ever downloaded (``weights=None``); start from a file with ``backbone_weights``.

It returns five named maps ``"0" .. "3", "pool"`` (strides 4, 8, 16, 32, 64), 256 channels each,
exactly like torchvision's ``resnet_fpn_backbone``.

Endpoint branch (paper Sec. II-B, eq. 4): six 3x3 convolutions, **shared across the five FPN maps**
(the same weights run on every level, like the RPN head). Layers 1-4 are 256->C->C->C->C with ReLU
(C = ``ed_channels``, 128 by default, to keep the branch cheap), layer 5 maps back to the FPN width
(256) with ReLU and its output is **added to the FPN map it was computed from** (so the RPN and RoI
heads read the enriched maps), layer 6 (``predictor``) predicts a 1-channel heatmap per level from
layer 5's output. The five per-level heatmaps are
bilinearly interpolated to the (padded) input size and averaged: that (linear, no sigmoid -- a sigmoid
saturates at the mostly-zero target and the branch then does not learn) is the heatmap compared with
the Gaussian endpoint target by the mean squared error of eq. (4). The model outputs it clamped to
[0, 1]. eq. (4) is a mean over all N x M pixels, so its gradient is small; ``endpoint_loss_weight``
(build_model; default 1 = the paper's eq. 4) scales the term.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")


def build_resnet(name: str = "resnet50", in_channels: int = 1, norm: str = "bn", num_classes: int = 1000):
    """A torchvision ResNet with ``in_channels`` input channels and no downloaded weights."""
    from torchvision.models import resnet
    from torchvision.ops import misc

    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    norm_layer = {"bn": nn.BatchNorm2d, "frozen_bn": misc.FrozenBatchNorm2d}.get(norm)
    if norm_layer is None:
        raise ValueError(f"unknown norm {norm!r} (bn, frozen_bn)")
    net = getattr(resnet, name)(weights=None, norm_layer=norm_layer, num_classes=num_classes)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net


def adapt_state_dict(state: dict, in_channels: int = 1) -> dict:
    """Prepare a ResNet state dict for our backbone.

    Accepts a plain torchvision ResNet state dict, the file ``chromoseg pretrain`` writes
    (``{"backbone": ..., ...}`` or a plain dict), a ``chromoseg train`` checkpoint (its ResNet
    trunk, ``backbone.fpn.body.*``), and keys prefixed with ``body.``, ``backbone.body.``
    or ``module.``. The ``fc`` classifier is dropped; a 3-channel ``conv1`` is summed over RGB when
    the backbone takes ``in_channels=1`` (and a 1-channel one repeated / 3 when it takes 3).
    """
    if "backbone" in state and isinstance(state["backbone"], dict):
        state = state["backbone"]
    elif "model" in state and isinstance(state["model"], dict):  # a `chromoseg train` checkpoint
        state = state["model"]
    elif "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    out = OrderedDict()
    for k, v in state.items():
        for prefix in ("module.", "backbone.fpn.body.", "backbone.body.", "body."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.startswith("fc."):
            continue
        out[k] = v
    w = out.get("conv1.weight")
    if w is not None and w.shape[1] != in_channels:
        if in_channels == 1:
            out["conv1.weight"] = w.sum(dim=1, keepdim=True)
        elif w.shape[1] == 1:
            out["conv1.weight"] = w.repeat(1, in_channels, 1, 1) / in_channels
    return out


def load_backbone_weights(body: nn.Module, path: str | Path, in_channels: int = 1) -> None:
    """Load a ResNet state dict (torchvision or ``chromoseg pretrain``) into ``body`` (the ResNet
    trunk of the FPN backbone). Raises ``ValueError`` naming the file when nothing fits."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a full `chromoseg train` checkpoint also holds RNG states and the config
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as err:  # noqa: BLE001 - corrupted / not a checkpoint
                raise ValueError(f"{path}: cannot read weights ({err})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    state = adapt_state_dict(state, in_channels)
    own = body.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"{path}: no tensor matches the backbone (wrong architecture?)")
    missing = [k for k in own if k not in usable and not k.endswith("num_batches_tracked") and not k.startswith("fc.")]
    body.load_state_dict(usable, strict=False)
    log.info("loaded %d backbone tensors from %s (%d not in file)", len(usable), path, len(missing))
    if missing:
        log.warning("%s: %d backbone tensors not found or of another shape, e.g. %s",
                    path, len(missing), missing[:3])


def resnet_fpn(name: str = "resnet50", in_channels: int = 1, trainable_layers: int = 5, norm: str = "bn",
               backbone_weights: str | Path | None = None, out_channels: int = 256):
    """torchvision ``BackboneWithFPN`` over a grey-input ResNet: five maps (strides 4-64) of
    ``out_channels`` channels (256 as in torchvision; the compact model uses 128)."""
    from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor

    net = build_resnet(name, in_channels=in_channels, norm=norm)
    if backbone_weights:
        load_backbone_weights(net, backbone_weights, in_channels)
    fpn = _resnet_fpn_extractor(net, trainable_layers)  # freezes layers, picks the returned stages
    if out_channels != fpn.out_channels:
        stages = [net.inplanes // 8 * 2 ** i for i in range(4)]
        fpn = BackboneWithFPN(net, {f"layer{k + 1}": str(k) for k in range(4)}, stages, out_channels)
    return fpn


class EndpointBranch(nn.Module):
    """Six 3x3 conv layers shared over the FPN levels (see module docstring)."""

    def __init__(self, in_channels: int = 256, channels: int = 128, num_layers: int = 6):
        super().__init__()
        if num_layers < 3:
            raise ValueError("the endpoint branch needs at least 3 layers")
        chans = [in_channels] + [channels] * (num_layers - 2) + [in_channels]  # layers 1..5
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans[:-1], chans[1:]))
        self.predictor = nn.Conv2d(in_channels, 1, 3, padding=1)  # layer 6
        self.num_layers = len(self.convs) + 1
        for m in list(self.convs) + [self.predictor]:
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, features: "OrderedDict[str, torch.Tensor]", out_size):
        """Returns (enriched features, heatmap [B,1,H,W] at ``out_size``; linear output, trained
        towards the [0, 1] Gaussian target)."""
        new = OrderedDict()
        logits = 0.0
        for name, x in features.items():
            y = x
            for conv in self.convs:
                y = F.relu(conv(y))
            new[name] = x + y  # layer-5 features added back into the FPN map
            logit = self.predictor(y)
            logits = logits + F.interpolate(logit, size=tuple(out_size), mode="bilinear", align_corners=False)
        return new, logits / len(features)


class BackboneWithEndpoints(nn.Module):
    """Wraps an FPN backbone; when ``endpoint_branch`` is set, ``forward`` also stores the heatmap
    in ``self.last_heatmap`` (the model reads it right after the call)."""

    def __init__(self, fpn: nn.Module, endpoint_branch: EndpointBranch | None = None):
        super().__init__()
        self.fpn = fpn
        self.out_channels = fpn.out_channels
        self.endpoint_branch = endpoint_branch

    @property
    def body(self):
        return self.fpn.body

    def forward(self, x):
        feats = self.fpn(x)
        heat = None
        if self.endpoint_branch is not None:
            feats, heat = self.endpoint_branch(feats, x.shape[-2:])
        return feats, heat
