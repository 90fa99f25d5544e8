"""``build_model``: every network of the paper's Tables I and II from one function.

=========  ===========================  =====  =====
variant    meaning                      H&R    ED
=========  ===========================  =====  =====
``mr``     Mask R-CNN (axis-aligned)    --     --
``rmr``    Rotated Mask R-CNN = ERM-1   no     no
``erm2``   rotated + endpoint branch    no     yes
``erm3``   rotated + H&R                yes    no
``ermr``   Enhanced RMR = ERM-4         yes    yes
=========  ===========================  =====  =====

``erm1`` and ``erm4`` are aliases of ``rmr`` and ``ermr``; ``hr=`` / ``ed=`` override the switches
of a rotated variant (``ed=True`` also works on ``mr``).

Not from the paper's tables: ``snake`` = Deep Snake (Peng et al., CVPR 2020; the contour-based method
the paper cites as [10]), a CenterNet detector plus circular-convolution contour deformation, built
by :func:`chromoseg.models.snake.build_deep_snake` on the same ResNet-FPN (instead of the original
DLA-34) and ``ChromoTransform``; see :mod:`chromoseg.models.snake`. Of the R-CNN arguments it uses
``num_classes``, ``backbone``, ``backbone_weights``, ``image_size``, ``in_channels``,
``trainable_layers``, ``norm``, ``fpn_channels`` (so ``COMPACT`` thins it too), ``image_mean``,
``image_std``, ``invert``, ``crop_classifier``, ``box_detections_per_img`` (CenterNet's top K) and
``box_score_thresh`` (its peak threshold); the other R-CNN arguments (anchors, proposals, RoIs, heads, ``SMALL``'s counts,
``ed_layers`` ...) are accepted and ignored; ``hr`` / ``ed`` must not be switched on. Its own:
``snake_points`` (N = 128), ``snake_iters`` (3), ``snake_channels`` (128), ``center_head_channels``
(64) and ``snake_box_jitter`` (0.05).
"""
from __future__ import annotations

from typing import Optional

from .variants import NAMES, Variant, get_variant

#: every variant name and alias -> its switches (``rotated``, ``hr``, ``ed``); read from the registry
#: (``chromoseg.models.variants``), where a variant is added
VARIANTS = {name: v.switches for name, v in NAMES.items()}

#: settings for CPU tests and quick runs: few proposals and RoIs
SMALL = dict(rpn_pre_nms_top_n_train=200, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_train=100,
             rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=64, box_batch_size_per_image=32,
             box_detections_per_img=30, ed_channels=32, representation_size=256)

#: the shipped model's sizes: the paper's proposal / RoI counts with thinner layers (128-channel FPN
#: and mask head, 512-d box head, 32-channel endpoint branch); with ResNet-18 about 16 M parameters,
#: 32 MB in half precision
COMPACT = dict(fpn_channels=128, mask_channels=128, representation_size=512, ed_channels=32,
               box_batch_size_per_image=128)


def build_model(variant: str = "ermr", num_classes: int = 24, backbone: str = "resnet50",
                backbone_weights: Optional[str] = None, image_size=(512, 640), hr: Optional[bool] = None,
                ed: Optional[bool] = None, hr_fusion: bool = True, class_agnostic_box: bool = False,
                in_channels: int = 1, trainable_layers: int = 5, norm: str = "bn",
                anchor_sizes=(16.0, 32.0, 64.0, 128.0, 256.0), anchor_ratios=None, anchor_angles=None,
                rpn_pre_nms_top_n_train: int = 1000, rpn_pre_nms_top_n_test: int = 600,
                rpn_post_nms_top_n_train: int = 1000, rpn_post_nms_top_n_test: int = 300,
                rpn_batch_size_per_image: int = 256, box_batch_size_per_image: int = 256,
                box_detections_per_img: int = 100, box_score_thresh: float = 0.05, box_nms_thresh: float = 0.5,
                box_score_mode: str = "class", box_rescore: bool = False, box_fg_iou_thresh: float = 0.5,
                ed_channels: int = 128, ed_layers: int = 6, endpoint_loss_weight: float = 1.0, representation_size: int = 1024,
                fpn_channels: int = 256, mask_channels: int = 256, image_mean: float = 0.5,
                image_std: float = 0.25, crop_classifier: bool = False, crop_classifier_width: int | list[int] = 16,
                crop_classifier_members: int = 1,
                weights_backbone=None, snake_points: int = 128, snake_iters: int = 3, snake_channels: int = 128,
                center_head_channels: int = 64, snake_box_jitter: float = 0.05, invert: bool = False,
                frame: bool = False):
    """Build a model (see the table above). ``num_classes`` excludes the background (24 human
    chromosome classes; 1 for class-agnostic). ``backbone`` is resnet18/34/50/101; no weights are
    downloaded (``weights_backbone`` must stay None); ``backbone_weights`` is a path to a ResNet state
    dict (torchvision's or the file ``chromoseg pretrain`` writes). ``image_size=(H, W)`` is the fixed
    input size (None keeps each image's size). ``endpoint_loss_weight`` multiplies the eq. (4) term
    (1 = the paper). ``fpn_channels`` / ``mask_channels`` / ``representation_size`` set the widths of
    the FPN maps, the four mask-head convolutions and the box head's two FC layers (torchvision's
    256 / 256 / 1024 by default; see ``COMPACT``). ``ed_layers``: convolutions of the endpoint branch
    (6 = the paper; files exported before 2026-11-30 used 5 and are read as such).
    ``box_score_mode``: the RoI heads' inference candidates, "class" (one per RoI and class, the paper)
    or "object" (one per RoI, scored 1 - P(background); ``RotatedRoIHeads``; the other variants ignore
    it); an inference setting, not saved in the model's config. ``box_rescore``: score each final
    detection on its own regressed rotated box (``RotatedRoIHeads.rescore_detections``; the other
    variants ignore it); likewise an inference setting. ``box_fg_iou_thresh``: in training, a sampled
    RoI whose IoU with its best ground truth (rotated IoU for the rotated variants) reaches it is that
    chromosome, below it background (0.5 = the paper and torchvision; a lower value teaches the box head
    to score the looser proposals of long, thin chromosomes as chromosomes).
    ``crop_classifier``: the model carries a second-stage classifier of its final instances
    (``chromoseg.models.crop_classifier``, trained by ``chromoseg train-classifier``);
    ``crop_classifier_members`` > 1: an ensemble of that many; ``crop_classifier_width`` a list: an
    ensemble of one member per width.
    ``frame``: at inference the transform first crops each image to its metaphase
    (``ChromoTransform``; a model trained on framed images, ``chromoseg train --frame``; R-CNN variants).
    ``invert``: a brightfield model (G-band, dark on light); its transform turns every image into
    ``1 - x`` first, so the network sees fluorescence-like images (``ChromoTransform``)."""
    if weights_backbone is not None:
        raise ValueError("weights_backbone must be None (no downloads); use backbone_weights=PATH")
    spec = get_variant(variant)
    kwargs = {k: v for k, v in locals().items() if k not in ("variant", "weights_backbone", "spec")}
    return FAMILY_BUILDERS[spec.family](variant.lower(), spec, **kwargs)



def model_defaults() -> dict:
    """Each :func:`build_model` argument's default (what ``chromoseg train`` shows and compares with)."""
    import inspect

    return {k: p.default for k, p in inspect.signature(build_model).parameters.items()}


def build_snake(v: str, spec: Variant, *, num_classes, backbone, backbone_weights, image_size, hr, ed, in_channels,
                trainable_layers, norm, fpn_channels, image_mean, image_std, box_detections_per_img,
                box_score_thresh, crop_classifier, crop_classifier_width, crop_classifier_members, snake_points,
                snake_iters, snake_channels, center_head_channels, snake_box_jitter, invert, frame, **_rcnn_only):
    """The Deep Snake family (``snake``): :func:`build_model`'s arguments, the R-CNN-only ones ignored."""
    if hr or ed:
        raise ValueError("the snake variant has no H&R or ED switch")
    if frame:
        raise ValueError("framing (frame=True) is for the R-CNN variants, not snake")
    from .snake import build_deep_snake

    config = dict(variant=v, num_classes=num_classes, backbone=backbone, image_size=image_size,
                  in_channels=in_channels, trainable_layers=trainable_layers, norm=norm, fpn_channels=fpn_channels,
                  image_mean=image_mean, image_std=image_std, box_detections_per_img=box_detections_per_img,
                  box_score_thresh=box_score_thresh, snake_points=snake_points, snake_iters=snake_iters,
                  snake_channels=snake_channels, center_head_channels=center_head_channels,
                  snake_box_jitter=snake_box_jitter)
    if invert:  # a brightfield model: the transform inverts every image
        config["invert"] = True
    model = build_deep_snake(num_classes, backbone, backbone_weights, image_size, in_channels, trainable_layers,
                             norm, fpn_channels, image_mean, image_std, box_detections_per_img, box_score_thresh,
                             points=snake_points, iters=snake_iters, snake_channels=snake_channels,
                             head_channels=center_head_channels, box_jitter=snake_box_jitter, invert=invert,
                             config=config)
    if crop_classifier:
        _add_crop_classifier(model, config, num_classes, crop_classifier_width, crop_classifier_members)
    model.config = config
    return model


def build_rcnn(v: str, spec: Variant, *, num_classes, backbone, backbone_weights, image_size, hr, ed, hr_fusion,
               class_agnostic_box, in_channels, trainable_layers, norm, anchor_sizes, anchor_ratios, anchor_angles,
               rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test, rpn_post_nms_top_n_train, rpn_post_nms_top_n_test,
               rpn_batch_size_per_image, box_batch_size_per_image, box_detections_per_img, box_score_thresh,
               box_nms_thresh, box_score_mode, box_rescore, box_fg_iou_thresh, ed_channels, ed_layers,
               endpoint_loss_weight, representation_size, fpn_channels, mask_channels, image_mean, image_std,
               crop_classifier, crop_classifier_width, crop_classifier_members, invert, frame, **_snake_only):
    """The Mask R-CNN family (``mr``, ``rmr``, ``erm2``, ``erm3``, ``ermr``): :func:`build_model`'s
    arguments, the snake-only ones ignored; ``hr`` / ``ed`` override the variant's switches."""
    from torchvision.models.detection.faster_rcnn import TwoMLPHead, FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    from .backbone import BackboneWithEndpoints, EndpointBranch, resnet_fpn
    from .rcnn import ChromoRCNN
    from .transform import ChromoTransform

    sw = spec.switches
    if hr is not None:
        if not sw["rotated"] and hr:
            raise ValueError("H&R needs a rotated variant")
        sw["hr"] = bool(hr)
    if ed is not None:
        sw["ed"] = bool(ed)
    config = dict(variant=v, num_classes=num_classes, backbone=backbone, image_size=image_size, hr=sw["hr"],
                  ed=sw["ed"], rotated=sw["rotated"], hr_fusion=hr_fusion, in_channels=in_channels,
                  class_agnostic_box=class_agnostic_box, anchor_sizes=list(anchor_sizes),
                  endpoint_loss_weight=float(endpoint_loss_weight), ed_layers=int(ed_layers), fpn_channels=fpn_channels,
                  mask_channels=mask_channels, representation_size=representation_size, invert=bool(invert))
    if frame:
        config["frame"] = True
    if not 0.0 < box_fg_iou_thresh < 1.0:
        raise ValueError(f"box_fg_iou_thresh {box_fg_iou_thresh}: use a value in (0, 1)")
    if box_fg_iou_thresh != 0.5:
        config["box_fg_iou_thresh"] = float(box_fg_iou_thresh)

    fpn = resnet_fpn(backbone, in_channels=in_channels, trainable_layers=trainable_layers, norm=norm,
                     backbone_weights=backbone_weights, out_channels=fpn_channels)
    branch = EndpointBranch(fpn.out_channels, ed_channels, ed_layers) if sw["ed"] else None
    body = BackboneWithEndpoints(fpn, branch)
    transform = ChromoTransform(image_size, image_mean, image_std, in_channels=in_channels, invert=invert,
                                frame=frame)
    c = fpn.out_channels
    nc = num_classes + 1
    box_head = TwoMLPHead(c * 7 * 7, representation_size)
    mask_head = MaskRCNNHeads(c, (mask_channels,) * 4, 1)
    mask_predictor = MaskRCNNPredictor(mask_channels, mask_channels, nc)

    if box_score_mode not in ("class", "object"):
        raise ValueError(f"box_score_mode {box_score_mode!r}: use 'class' or 'object'")
    if not sw["rotated"]:
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
        from torchvision.models.detection.roi_heads import RoIHeads

        from .roi_heads import HBoxRoIHeads

        ratios = tuple(anchor_ratios) if anchor_ratios else (0.5, 1.0, 2.0)
        ag = AnchorGenerator(tuple((float(s),) for s in anchor_sizes), (ratios,) * len(anchor_sizes))
        rpn = RegionProposalNetwork(
            ag, RPNHead(c, ag.num_anchors_per_location()[0]), 0.7, 0.3, rpn_batch_size_per_image, 0.5,
            dict(training=rpn_pre_nms_top_n_train, testing=rpn_pre_nms_top_n_test),
            dict(training=rpn_post_nms_top_n_train, testing=rpn_post_nms_top_n_test), 0.7)
        tv = RoIHeads(MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2), box_head,
                      FastRCNNPredictor(representation_size, nc), box_fg_iou_thresh, box_fg_iou_thresh,
                      box_batch_size_per_image, 0.25,
                      None, box_score_thresh, box_nms_thresh, box_detections_per_img,
                      mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2), mask_head=mask_head,
                      mask_predictor=mask_predictor)
        heads = HBoxRoIHeads(tv)
        config.update(anchor_ratios=list(ratios))
    else:
        from .roi_heads import MultiScaleRotatedRoIAlign, RotatedBoxPredictor, RotatedRoIHeads
        from .rpn import DEFAULT_ANGLES, DEFAULT_RATIOS, RotatedAnchorGenerator, RotatedRPN, RotatedRPNHead

        ratios = tuple(anchor_ratios) if anchor_ratios else DEFAULT_RATIOS
        angles = tuple(anchor_angles) if anchor_angles else DEFAULT_ANGLES
        ag = RotatedAnchorGenerator(anchor_sizes, ratios, angles)
        rpn = RotatedRPN(ag, RotatedRPNHead(c, ag.num_anchors_per_location()[0]),
                         batch_size_per_image=rpn_batch_size_per_image,
                         pre_nms_top_n=dict(training=rpn_pre_nms_top_n_train, testing=rpn_pre_nms_top_n_test),
                         post_nms_top_n=dict(training=rpn_post_nms_top_n_train, testing=rpn_post_nms_top_n_test))
        heads = RotatedRoIHeads(
            MultiScaleRotatedRoIAlign(["0", "1", "2", "3"], 7, 2), box_head,
            RotatedBoxPredictor(representation_size, nc, hr=sw["hr"], class_agnostic=class_agnostic_box),
            MultiScaleRotatedRoIAlign(["0", "1", "2", "3"], 14, 2), mask_head, mask_predictor,
            fg_iou_thresh=box_fg_iou_thresh, bg_iou_thresh=box_fg_iou_thresh, batch_size_per_image=box_batch_size_per_image, score_thresh=box_score_thresh,
            nms_thresh=box_nms_thresh, detections_per_img=box_detections_per_img, hr=sw["hr"],
            hr_fusion=hr_fusion, score_mode=box_score_mode, rescore=box_rescore)
        config.update(anchor_ratios=list(ratios), anchor_angles=list(angles))
    model = ChromoRCNN(body, rpn, heads, transform, variant=v, config=config)
    if crop_classifier:
        _add_crop_classifier(model, config, num_classes, crop_classifier_width, crop_classifier_members)
    return model


#: the builder of each family of ``chromoseg.models.variants.REGISTRY``
FAMILY_BUILDERS = {"rcnn": build_rcnn, "snake": build_snake}


def _add_crop_classifier(model, config: dict, num_classes: int, width: int | list[int], members: int) -> None:
    from .crop_classifier import build_crop_classifier

    model.crop_classifier = build_crop_classifier(num_classes, width, members)
    extra = {"crop_classifier": True, "crop_classifier_width": width}
    if members > 1:
        extra["crop_classifier_members"] = members
    config.update(extra)
    if isinstance(getattr(model, "config", None), dict):
        model.config.update(extra)  # ChromoRCNN keeps its own copy of the config
