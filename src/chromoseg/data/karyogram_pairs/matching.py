"""Find the karyogram's chromosomes in their metaphase (seed paper, section II.A).

For every cut-out chromosome (``layout.KaryoChromosome``):

1. Both images are compared in *ink* form (chromosomes bright). The metaphase's foreground is a white
   top-hat (disc of ~3 chromosome widths) thresholded at ``fg_factor`` x Otsu; blobs far bigger than
   any cut-out (nuclei) are left out. The cut-outs are rescaled by one global factor: first
   ``sqrt(foreground area / cut-out area)``, then refined by a coarse rotated-template search over
   ``scale_search`` factors with the biggest cut-outs (the area misleads on blurred images).
2. SIFT keypoints of the cut-out are matched to those of the metaphase (``k`` nearest neighbours, no
   ratio test: the two homologues of a class look alike, so a good match has a twin); the metaphase ends
   of the matches are clustered with DBSCAN (``eps`` = half the chromosome's length); every cluster gives
   a pose (rotation, scale, translation) by ``cv2.estimateAffinePartial2D`` with RANSAC.
3. A full-resolution rotated search adds poses for every cut-out SIFT did not already place with
   ``ncc >= dense_skip_ncc``: normalised cross-correlation *inside the cut-out's mask only*, every
   ``dense_angle_step`` degrees, over the foreground's bounding box (long cut-outs at 1/(length //
   ``dense_len``) resolution), the best ``dense_top`` separate places. A cut-out is a copy of the
   metaphase's own pixels, so its true place correlates well even inside a cluster of touching
   chromosomes, where a ring of background around it (which the old coarse search also compared, and
   which ``dense=False`` still uses) is no background. Cut-outs are resampled normalised by their mask
   (their outline is not darkened by the background around them).
4. Every pose is polished by a small exhaustive search (rotation +-``refine_angle``, scale x
   ``refine_scales``, shift +-``refine_shift`` px, sub-pixel) and by ECC (affine, projected back to
   rotation + scale within 5 % of the seed), each kept where the correlation rises, and scored:
   ``ncc`` = correlation of the warped cut-out with the metaphase inside the warped mask, ``ncc_ext`` =
   the same over the mask plus a 3-px ring, ``silhouette`` = IoU of the warped mask with the foreground
   near it, and (``photometric``) ``rms`` = the RMS difference between the metaphase and ``a * cutout + b``
   inside the mask, relative to the chromosomes' mean ink, where ``(a, b)`` is one intensity map for the
   whole pair fitted by least squares on the pixels of the better half of the cut-outs' best poses.
   Brightness is what tells look-alike chromosomes apart when there is no banding (DAPI): at the true
   place ``rms`` is ~0.1, at a look-alike 0.2-0.5. ``score = ncc * exp(-(rms / rms_scale)^2) *
   silhouette^w_sil`` (``photometric=False``: the old ``ncc * ncc_ext * sqrt(silhouette)``); the best
   ``photo_refine_top`` poses per cut-out are polished once more by the squared difference under the
   intensity map. A pose with ``ncc < min_ncc``, or with ``score < min_candidate_score`` and ``ncc <
   strong_ncc``, is no match: on the real pairs right poses have ncc > 0.98, the best poses of a
   karyogram in a *different* metaphase 0.6-0.8, which is how a mismatched pair is recognised.
5. Placement (``assign="greedy"``): all poses of all cut-outs, best score first; a pose is taken unless
   its cut-out is placed already or its warped mask lies for more than ``max_overlap`` on pixels already
   claimed (crossing chromosomes share pixels, so this is generous), else the cut-out's next pose is
   tried. (``assign="hungarian"``: one-to-one over places, poses whose centres are close being one
   place.) Up to ``extra_passes`` more searches run for the cut-outs left, with the accepted
   chromosomes blanked out.
6. The transferred mask is the warped cut-out silhouette plus foreground pixels within ``refine_grow``
   px of it, holes filled (``refine_tol``: also cut warped pixels farther than that from the
   foreground; off by default - the silhouette is the better mask). Pixels claimed by two instances
   are kept by both where they lie inside both warped masks (chromosomes that cross), otherwise they go
   to the instance whose warped mask is nearest (ties: the higher score).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .layout import KaryogramLayout, KaryoChromosome, ink_image, light_background, otsu_foreground, to_grey


@dataclass
class MatchParams:
    knn: int = 3
    knn_slack: float = 1.3  # keep the k nearest while distance <= slack * best distance
    dbscan_eps_frac: float = 0.5
    dbscan_min_samples: int = 3
    min_inliers: int = 4
    ransac_thresh: float = 4.0
    scale_range: tuple[float, float] = (0.7, 1.45)
    template_fallback: bool = True
    angle_step: int = 15
    template_scales: tuple[float, ...] = (0.94, 1.06)
    template_ds: int = 2
    template_ring: int = 2  # px (at 1/template_ds) of background around the mask seen by the search
    template_min_good: int = 99  # template search when SIFT gave fewer good poses than this (99: always)
    max_candidates: int = 12
    template_top: int = 12
    extra_passes: int = 2
    ecc: bool = True
    max_overlap: float = 0.6
    min_candidate_score: float = 0.6  # a pose scoring lower is no match (right pairs score ~0.85-0.95, wrong ones ~0.5)
    strong_ncc: float = 0.95  # ... unless its texture agrees this well (a lab may retouch a cut-out's contrast)
    min_ncc: float = 0.85  # nor one whose cut-out correlates less with the metaphase (right: >0.9, wrong: <0.85)
    sift_contrast: float = 0.02
    fg_factor: float = 0.7
    max_blob: float = 8.0  # foreground blobs bigger than this many biggest cut-outs are no chromosomes
    scale_search: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.0, 1.12, 1.25, 1.4)  # () = trust the area
    scale_search_n: int = 6
    dense: bool = True  # full-resolution rotated search, correlation inside the cut-out's mask
    dense_angle_step: float = 6.0
    dense_top: int = 6
    dense_skip_ncc: float = 0.97  # no dense search for a cut-out SIFT already placed with this ncc
    dense_len: int = 48  # cut-outs longer than this (px, metaphase scale) are searched at 1/(length // this)
    dense_nms: float = 0.35  # peaks closer than this x the cut-out's length are one place
    photometric: bool = True  # score the intensity agreement too (a cut-out is a copy of the metaphase's pixels)
    rms_scale: float = 0.25
    w_ext: float = 0.0
    w_sil: float = 0.25
    local_refine: bool = True  # polish every pose by a small exhaustive search (rotation, scale, shift)
    refine_angle: float = 4.0
    refine_angle_step: float = 1.0
    refine_scales: tuple[float, ...] = (0.97, 1.0, 1.03)
    refine_shift: int = 3
    photo_refine_top: int = 3  # poses per cut-out polished by the squared difference once the intensity map is known
    assign: str = "greedy"  # "greedy" (best pose first, with exclusion) or "hungarian" (over places)
    scale_sigma: float = 0.0  # prior on log(scale / typical scale of the pair); 0 = none (it hurt on M-FISH)
    refine_tol: int | None = None  # warped-mask pixels farther than this from the foreground are cut (None: none)
    refine_grow: int = 1  # foreground pixels this close to the warped mask are added


@dataclass
class Candidate:
    chrom: int
    T: np.ndarray  # 2x3, scaled+padded cut-out coords -> metaphase
    inliers: int
    method: str
    ncc: float = 0.0
    coverage: float = 0.0
    ncc_ext: float = 0.0
    ring_bg: float = 0.0
    silhouette: float = 0.0
    scale: float = 1.0
    base: float = 0.0  # score before the scale prior
    score: float = 0.0
    search: float = 0.0  # correlation found by the search that proposed the pose
    rms: float = 0.0  # intensity disagreement with the metaphase (relative RMS after the global intensity map)
    mom: tuple | None = None  # moments of (cut-out, metaphase) pixels inside the warped mask


@dataclass
class Match:
    """One karyogram chromosome found in the metaphase."""

    chrom: int  # index into layout.chromosomes
    class_id: int | None
    transform: np.ndarray  # 2x3: karyogram cut-out pixel coords -> metaphase coords
    mask: np.ndarray  # bool [H, W] refined
    warped: np.ndarray  # bool [H, W] warped cut-out mask
    score: float
    ncc: float
    coverage: float
    inliers: int
    method: str

    @property
    def scale(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.transform[:, :2]))))

    @property
    def angle(self) -> float:
        """Rotation of the cut-out in the metaphase, degrees (counter-clockwise on screen)."""
        return float(np.degrees(np.arctan2(-self.transform[1, 0], self.transform[0, 0])))


@dataclass
class PairMatch:
    matches: list[Match]
    unmatched: list[int]  # indices of cut-outs not found
    global_scale: float
    n_keypoints: int
    notes: list[str] = field(default_factory=list)
    candidates: list = field(default_factory=list)  # every pose considered (for diagnostics)


_RING = np.ones((7, 7), np.uint8)  # 3-px ring around a warped mask


class _Prepared:
    """A cut-out at metaphase scale, padded, in ink form."""

    def __init__(self, chrom: KaryoChromosome, f: float, light: bool, pad: int = 8):
        import cv2

        ink = ink_image(chrom.image, light).astype(np.float32)
        ink[~chrom.mask] = 0.0
        h, w = chrom.mask.shape
        nw, nh = max(3, int(round(w * f))), max(3, int(round(h * f)))
        fx, fy = nw / w, nh / h
        cover = cv2.resize(chrom.mask.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)
        mask_s = cover > 0.5
        # normalised resampling: pixels at the outline are not darkened by the background around the cut-out
        ink_s = cv2.resize(ink, (nw, nh), interpolation=cv2.INTER_AREA) / np.maximum(cover, 1e-3)
        ink_s[~mask_s] = 0.0
        self.ink = cv2.copyMakeBorder(ink_s, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        self.mask = cv2.copyMakeBorder(mask_s.astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0) > 0
        # original crop coords -> padded scaled coords (cv2.resize pixel-centre convention)
        self.S = np.array([[fx, 0, 0.5 * fx - 0.5 + pad], [0, fy, 0.5 * fy - 0.5 + pad]], np.float64)
        self.length = float(max(nh, nw))
        self.area = int(mask_s.sum())


def _compose(T: np.ndarray, S: np.ndarray) -> np.ndarray:
    A = np.vstack([T, [0, 0, 1]]) @ np.vstack([S, [0, 0, 1]])
    return A[:2]


def _warp_window(T: np.ndarray, src: np.ndarray, shape: tuple[int, int], interp: int):
    """Warp `src` by T into the metaphase, only over the bounding window of the result."""
    import cv2

    h, w = src.shape
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ T.T
    x0 = int(max(0, np.floor(corners[:, 0].min()) - 1))
    y0 = int(max(0, np.floor(corners[:, 1].min()) - 1))
    x1 = int(min(shape[1], np.ceil(corners[:, 0].max()) + 2))
    y1 = int(min(shape[0], np.ceil(corners[:, 1].max()) + 2))
    if x1 <= x0 or y1 <= y0:
        return None
    Tw = T.copy()
    Tw[:, 2] -= (x0, y0)
    out = cv2.warpAffine(src, Tw, (x1 - x0, y1 - y0), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, (x0, y0, x1, y1)


def _evaluate(c: Candidate, prep: _Prepared, meta_ink: np.ndarray, fg: np.ndarray, prior=None, photo=None,
              p: "MatchParams | None" = None) -> None:
    import cv2

    r = _warp_window(c.T, prep.mask.astype(np.float32), meta_ink.shape, cv2.INTER_LINEAR)
    if r is None:
        c.ncc = c.coverage = c.score = c.base = 0.0
        c.rms = float("inf")
        return
    wm, (x0, y0, x1, y1) = r
    m = wm > 0.5
    if m.sum() < 0.5 * prep.area:  # mostly outside the image
        c.ncc = c.coverage = c.score = c.base = 0.0
        c.rms = float("inf")
        return
    wi, _ = _warp_window(c.T, prep.ink, meta_ink.shape, cv2.INTER_LINEAR)
    mi = meta_ink[y0:y1, x0:x1]
    c.ncc = _ncc(wi[m], mi[m])
    # shape-aware correlation: the mask plus a ring of background around it (the cut-out is 0 there)
    ext = cv2.dilate(m.astype(np.uint8), _RING) > 0
    c.ncc_ext = _ncc(wi[ext], mi[ext])
    fgw = fg[y0:y1, x0:x1]
    c.coverage = float(fgw[m].mean())
    ring = ext & ~m
    c.ring_bg = float(1.0 - fgw[ring].mean()) if ring.any() else 1.0
    # silhouette agreement near the pose: IoU of the warped mask and the foreground inside mask + ring
    inter = float((fgw & m).sum())
    union = float(((fgw & ext) | m).sum())
    c.silhouette = inter / union if union else 0.0
    c.scale = float(np.sqrt(abs(np.linalg.det(c.T[:, :2]))))
    x = wi[m].astype(np.float64)
    y = mi[m].astype(np.float64)
    c.mom = (float(len(x)), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum())
    _rescore(c, photo, p)
    c.score = c.base * _scale_prior(c.scale, prior)


def _rel_rms(mom, photo) -> float:
    """RMS of ``meta - (a * cutout + b)`` over the warped mask, relative to ``norm`` (the mean ink of the
    metaphase's chromosomes: a pale chromosome is not held to a tighter standard than a dark one)."""
    n, sx, sy, sxx, syy, sxy = mom
    a, b, norm = photo
    e = syy - 2 * a * sxy - 2 * b * sy + a * a * sxx + 2 * a * b * sx + n * b * b
    return float(np.sqrt(max(e, 0.0) / n) / max(norm, 1e-3))


def _rescore(c: Candidate, photo, p: "MatchParams | None") -> None:
    if p is None or not p.photometric:
        c.base = max(c.ncc, 0.0) * max(c.ncc_ext, 0.0) * float(np.sqrt(c.silhouette))
        return
    c.rms = _rel_rms(c.mom, photo) if photo is not None and c.mom is not None else 0.0
    c.base = (max(c.ncc, 0.0) * float(np.exp(-(c.rms / p.rms_scale) ** 2)) * max(c.ncc_ext, 0.0) ** p.w_ext
              * max(c.silhouette, 0.0) ** p.w_sil)


def _fit_photo(cands: list, n_keep: float = 0.5):
    """Global intensity map karyogram ink -> metaphase ink (``meta = a * cutout + b``), least squares over the
    pixels of each cut-out's best pose (by ncc), the better half by ncc, one round of outlier rejection."""
    best: dict[int, Candidate] = {}
    for c in cands:
        if c.mom is not None and (c.chrom not in best or c.ncc > best[c.chrom].ncc):
            best[c.chrom] = c
    sel = sorted(best.values(), key=lambda c: -c.ncc)
    sel = sel[: max(3, int(round(n_keep * len(sel))))]
    if len(sel) < 3:
        return None

    def fit(cs):
        M = np.sum([c.mom for c in cs], axis=0)
        n, sx, sy, sxx, syy, sxy = M
        var = sxx / n - (sx / n) ** 2
        if var <= 0:
            return None
        a = (sxy / n - sx * sy / n / n) / var
        return float(a), float(sy / n - a * sx / n), float(sy / n)

    photo = fit(sel)
    if photo is None:
        return None
    r = np.array([_rel_rms(c.mom, photo) for c in sel])
    keep = [c for c, v in zip(sel, r) if v <= 2.0 * np.median(r)]
    return fit(keep) if len(keep) >= 3 else photo


def _scale_prior(s: float, prior) -> float:
    if prior is None:
        return 1.0
    ref, sigma = prior
    return float(np.exp(-0.5 * (np.log(s / ref) / sigma) ** 2))


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def _ecc_refine(c: Candidate, prep: _Prepared, meta_ink_f: np.ndarray, meta_ink: np.ndarray, fg: np.ndarray,
                max_scale_change: float = 0.05, p: "MatchParams | None" = None) -> Candidate:
    """Polish a pose by ECC (affine motion) over the cut-out and a thin background ring around it."""
    import cv2

    W = c.T.astype(np.float32).copy()
    motion = cv2.MOTION_AFFINE
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-5)
    try:
        if hasattr(cv2, "findTransformECCWithMask"):
            tmask = cv2.dilate(prep.mask.astype(np.uint8), np.ones((7, 7), np.uint8))
            _, W = cv2.findTransformECCWithMask(prep.ink, meta_ink_f, tmask, None, W, motion, crit, 3)
        else:  # older OpenCV: the whole padded cut-out is the template
            _, W = cv2.findTransformECC(prep.ink, meta_ink_f, W, motion, crit, None, 3)
    except cv2.error:
        return c
    W = W.astype(np.float64)
    s0 = np.sqrt(abs(np.linalg.det(c.T[:, :2])))
    if not np.isfinite(W).all() or np.linalg.norm(W[:, 2] - c.T[:, 2]) > 0.5 * prep.length:
        return c  # ECC drifted away: keep the seed
    # back to a similarity (rotation + scale), the scale kept within max_scale_change of the seed's:
    # a free affine lets a cut-out shrink or shear onto a wrong, smaller chromosome
    U, S, Vt = np.linalg.svd(W[:, :2])
    Rot = U @ Vt
    if np.linalg.det(Rot) < 0:
        return c
    sc = float(np.clip(S.mean(), s0 * (1 - max_scale_change), s0 * (1 + max_scale_change)))
    centre = np.array([prep.ink.shape[1] / 2, prep.ink.shape[0] / 2])
    new_c = W[:, :2] @ centre + W[:, 2]  # keep where ECC put the cut-out's centre
    A = sc * Rot
    W = np.hstack([A, (new_c - A @ centre)[:, None]])
    n = Candidate(c.chrom, W, c.inliers, c.method + "+ecc")
    _evaluate(n, prep, meta_ink, fg, p=p)
    if p is not None and p.photometric:
        return n if n.ncc > c.ncc else c
    return n if n.base > c.base else c


def _local_refine(c: Candidate, prep: _Prepared, meta_ink_f: np.ndarray, p: "MatchParams", photo=None) -> Candidate:
    """Polish a pose by a small exhaustive search: rotation +-``refine_angle`` (steps of ``refine_angle_step``),
    scale x ``refine_scales``, translation within ``refine_shift`` px (sub-pixel by a parabola through the
    best value). Without ``photo`` the criterion is the correlation inside the cut-out's mask, as in the
    dense search; with ``photo = (a, b)`` (the pair's intensity map) it is the squared difference between
    the metaphase and ``a * cutout + b`` inside the mask, which also sees brightness and is sharper on
    blurred chromosomes with little texture."""
    import cv2

    A0, t0 = c.T[:, :2], c.T[:, 2]
    h, w = prep.ink.shape
    c0 = np.array([(w - 1) / 2, (h - 1) / 2])
    centre = A0 @ c0 + t0
    s0 = float(np.sqrt(abs(np.linalg.det(A0))))
    diag = int(np.ceil(np.hypot(h, w) * s0 * max(p.refine_scales))) + 4
    r = p.refine_shift
    H, W = meta_ink_f.shape
    best = (-np.inf, None)
    mask_f = prep.mask.astype(np.float32)
    angles = np.arange(-p.refine_angle, p.refine_angle + 1e-6, p.refine_angle_step)
    for k in p.refine_scales:
        for da in angles:
            Rd = cv2.getRotationMatrix2D((0.0, 0.0), float(da), float(k))[:, :2]
            A = Rd @ A0
            tc = np.array([(diag - 1) / 2, (diag - 1) / 2]) - A @ c0  # cut-out centre -> template centre
            M = np.hstack([A, tc[:, None]])
            t = cv2.warpAffine(prep.ink, M, (diag, diag), flags=cv2.INTER_LINEAR)
            m = cv2.warpAffine(mask_f, M, (diag, diag), flags=cv2.INTER_LINEAR) > 0.5
            ys, xs = np.nonzero(m)
            if len(xs) < 6:
                continue
            bx0, by0, bx1, by1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            tt = (t * m)[by0:by1, bx0:bx1]
            if photo is not None:
                tt = (photo[0] * tt + photo[1]) * m[by0:by1, bx0:bx1]
            tt = np.ascontiguousarray(tt, dtype=np.float32)
            # window of the metaphase: the template's top-left may move by +-r around the current place
            x0 = int(round(centre[0] - ((diag - 1) / 2 - bx0))) - r
            y0 = int(round(centre[1] - ((diag - 1) / 2 - by0))) - r
            th, tw = tt.shape
            if x0 < 0 or y0 < 0 or x0 + tw + 2 * r > W or y0 + th + 2 * r > H:
                continue
            win = meta_ink_f[y0: y0 + th + 2 * r, x0: x0 + tw + 2 * r]
            mm = m[by0:by1, bx0:bx1].astype(np.float32)
            if photo is None:
                res = cv2.matchTemplate(win, tt, cv2.TM_CCOEFF_NORMED, mask=mm)
            else:  # minus the mean squared difference: bigger is better
                res = -cv2.matchTemplate(win, tt, cv2.TM_SQDIFF, mask=mm) / max(float(mm.sum()), 1.0)
            res[~np.isfinite(res)] = -1e9
            _, mv, _, (mx, my) = cv2.minMaxLoc(res)
            if mv > best[0]:
                fx = fy = 0.0
                if 0 < mx < res.shape[1] - 1:
                    a_, b_, c_ = res[my, mx - 1], res[my, mx], res[my, mx + 1]
                    den = a_ - 2 * b_ + c_
                    fx = float(np.clip(0.5 * (a_ - c_) / den, -0.5, 0.5)) if den < 0 else 0.0
                if 0 < my < res.shape[0] - 1:
                    a_, b_, c_ = res[my - 1, mx], res[my, mx], res[my + 1, mx]
                    den = a_ - 2 * b_ + c_
                    fy = float(np.clip(0.5 * (a_ - c_) / den, -0.5, 0.5)) if den < 0 else 0.0
                # template top-left at (x0 + mx + fx, y0 + my + fy): its centre is the cut-out's centre
                cm = np.array([x0 + mx + fx + (diag - 1) / 2 - bx0, y0 + my + fy + (diag - 1) / 2 - by0])
                best = (mv, np.hstack([A, (cm - A @ c0)[:, None]]))
    if best[1] is None:
        return c
    n = Candidate(c.chrom, best[1], c.inliers, c.method + "+local")
    n.search = c.search
    return n


def _sift_candidates(i, prep, kp_m, des_m, sift, p: MatchParams, s_lo, s_hi):
    import cv2
    from sklearn.cluster import DBSCAN

    img8 = np.clip(prep.ink, 0, 255).astype(np.uint8)
    mk = cv2.dilate(prep.mask.astype(np.uint8), np.ones((5, 5), np.uint8))
    kp, des = sift.detectAndCompute(img8, mk)
    if des is None or len(kp) < p.min_inliers or des_m is None:
        return [], 0
    bf = cv2.BFMatcher(cv2.NORM_L2)
    knn = bf.knnMatch(des, des_m, k=min(p.knn, len(kp_m)))
    src, dst = [], []
    for ms in knn:
        if not ms:
            continue
        d0 = max(ms[0].distance, 1e-6)
        for m in ms:
            if m.distance <= p.knn_slack * d0:
                src.append(kp[m.queryIdx].pt)
                dst.append(kp_m[m.trainIdx].pt)
    if len(src) < p.min_inliers:
        return [], len(kp)
    src = np.float32(src)
    dst = np.float32(dst)
    labels = DBSCAN(eps=p.dbscan_eps_frac * prep.length, min_samples=p.dbscan_min_samples).fit_predict(dst)
    out = []
    for lbl in set(labels.tolist()) - {-1}:
        sel = labels == lbl
        if sel.sum() < p.min_inliers:
            continue
        T, inl = cv2.estimateAffinePartial2D(
            src[sel], dst[sel], method=cv2.RANSAC, ransacReprojThreshold=p.ransac_thresh, maxIters=2000, confidence=0.99
        )
        if T is None:
            continue
        n_in = int(inl.sum())
        s = float(np.sqrt(abs(np.linalg.det(T[:, :2]))))
        if n_in < p.min_inliers or not (s_lo <= s <= s_hi):
            continue
        out.append(Candidate(i, T.astype(np.float64), n_in, "sift"))
    return out, len(kp)


def _fold_response(res: np.ndarray, diag: int, bx0: int, by0: int, maxmap: np.ndarray, argmap: np.ndarray,
                   pose_index: int) -> tuple[int, int] | None:
    """Fold one ``cv2.matchTemplate`` response of a rotated cut-out (cropped at ``bx0, by0`` from its
    ``diag`` x ``diag`` canvas) into the running best-score map ``maxmap`` indexed by the cut-out's
    centre, recording ``pose_index`` in ``argmap`` where it wins. ``res[y, x]`` puts the template's
    top-left at (x, y), so its centre is at (x + ox, y + oy). Returns (ox, oy), or None when no
    centre falls inside the map."""
    res[~np.isfinite(res)] = -1.0
    ox = int(round((diag - 1) / 2 - bx0))
    oy = int(round((diag - 1) / 2 - by0))
    rh, rw = res.shape
    H, W = maxmap.shape
    ya, xa = max(0, oy), max(0, ox)
    yb, xb = min(H, oy + rh), min(W, ox + rw)
    if yb <= ya or xb <= xa:
        return None
    sub = res[ya - oy: yb - oy, xa - ox: xb - ox]
    cur = maxmap[ya:yb, xa:xb]
    better = sub > cur
    cur[better] = sub[better]
    argmap[ya:yb, xa:xb][better] = pose_index
    return ox, oy


def _template_candidates(i, prep, meta_ds, p: MatchParams, top: int = 8):
    """Rotated NCC template search at 1/template_ds resolution."""
    import cv2

    out = []
    d = float(p.template_ds)
    ink_ds = cv2.resize(prep.ink, None, fx=1 / d, fy=1 / d, interpolation=cv2.INTER_AREA)
    mask_ds = cv2.resize(prep.mask.astype(np.float32), None, fx=1 / d, fy=1 / d, interpolation=cv2.INTER_AREA)
    h, w = ink_ds.shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    diag = int(np.ceil(np.hypot(h, w))) + 2
    # best correlation over all angles and scales at every position of the template's centre
    Hd, Wd = meta_ds.shape
    maxmap = np.full((Hd, Wd), -1.0, np.float32)
    argmap = np.full((Hd, Wd), -1, np.int32)
    poses = []
    for s in p.template_scales:
        for ang in range(0, 360, p.angle_step):
            R = cv2.getRotationMatrix2D((cx, cy), ang, s)
            R[:, 2] += ((diag - 1) / 2 - cx, (diag - 1) / 2 - cy)
            t = cv2.warpAffine(ink_ds, R, (diag, diag), flags=cv2.INTER_LINEAR)
            m = cv2.warpAffine(mask_ds, R, (diag, diag), flags=cv2.INTER_LINEAR)
            m = (m > 0.5).astype(np.uint8)
            ys, xs = np.nonzero(m)
            if len(xs) < 6:
                continue
            mg = 2  # a margin of background: the search sees the outline, not only the inside
            bx0, by0 = max(0, xs.min() - mg), max(0, ys.min() - mg)
            bx1, by1 = min(diag, xs.max() + 1 + mg), min(diag, ys.max() + 1 + mg)
            t = t[by0:by1, bx0:bx1] * (m[by0:by1, bx0:bx1] > 0)
            if t.shape[0] >= Hd or t.shape[1] >= Wd:
                continue
            if p.template_ring:  # compare over the mask and a thin ring around it, not the whole rectangle
                ring_m = cv2.dilate(m[by0:by1, bx0:bx1], np.ones((2 * p.template_ring + 1,) * 2, np.uint8))
                res = cv2.matchTemplate(meta_ds, np.ascontiguousarray(t, dtype=np.float32), cv2.TM_CCOEFF_NORMED,
                                        mask=ring_m.astype(np.float32))
            else:
                res = cv2.matchTemplate(meta_ds, np.ascontiguousarray(t, dtype=np.float32), cv2.TM_CCOEFF_NORMED)
            offset = _fold_response(res, diag, bx0, by0, maxmap, argmap, len(poses))
            if offset is not None:
                poses.append((R, bx0, by0, *offset))
    _template_candidates.last_maxmap = maxmap
    chosen: list = []
    r0 = max(2, int(round(0.35 * prep.length / d)))
    work = maxmap.copy()
    for _ in range(top):
        _, mv, _, (xc, yc) = cv2.minMaxLoc(work)
        if mv <= 0 or argmap[yc, xc] < 0:
            break
        R, bx0, by0, ox, oy = poses[argmap[yc, xc]]
        chosen.append((None, (mv, None, None, (xc - ox, yc - oy), R, (bx0, by0))))
        cv2.circle(work, (int(xc), int(yc)), r0, -1.0, -1)
    for _, (mv, s, ang, (x, y), R, (bx0, by0)) in chosen:
        # full-res transform: padded-scaled cut-out -> metaphase
        # ds coords: p_ds = (p + 0.5) / 2 - 0.5; template placed at (x - bx0, y - by0) in meta_ds
        D = np.array([[1 / d, 0, 0.5 / d - 0.5], [0, 1 / d, 0.5 / d - 0.5], [0, 0, 1]])
        Rm = np.vstack([R, [0, 0, 1]])
        Tt = np.array([[1, 0, x - bx0], [0, 1, y - by0], [0, 0, 1]], float)
        U = np.array([[d, 0, 0.5 * d - 0.5], [0, d, 0.5 * d - 0.5], [0, 0, 1]])
        T = (U @ Tt @ Rm @ D)[:2]
        out.append(Candidate(i, T, 0, "template"))
    return out


def _dense_candidates(i, prep, roi_ink: np.ndarray, roi_allowed: np.ndarray | None, off: tuple[int, int],
                      p: "MatchParams", top: int, ds: int = 1):
    """Rotated template search at full resolution, the correlation taken inside the cut-out's mask only.

    A cut-out is a (rescaled) copy of the metaphase's own pixels, so at its true place the correlation
    inside its silhouette is close to 1 even where the place is part of a cluster of touching chromosomes
    (a ring of background around it, as the coarse search uses, is then no background). ``roi_ink`` is
    the part of the metaphase searched (its top-left at ``off`` in the metaphase); ``roi_allowed`` (same
    shape) says where the cut-out's centre may lie (near the foreground). Long cut-outs are searched at
    1/``ds`` resolution (the poses are then polished at full resolution by :func:`_local_refine`).
    """
    import cv2

    if ds > 1:
        q = _Prepared.__new__(_Prepared)
        q.ink = cv2.resize(prep.ink, None, fx=1 / ds, fy=1 / ds, interpolation=cv2.INTER_AREA)
        q.mask = cv2.resize(prep.mask.astype(np.float32), None, fx=1 / ds, fy=1 / ds, interpolation=cv2.INTER_AREA) > 0.5
        q.length = prep.length / ds
        roi_d = cv2.resize(roi_ink, None, fx=1 / ds, fy=1 / ds, interpolation=cv2.INTER_AREA)
        al_d = None
        if roi_allowed is not None:
            al_d = cv2.resize(roi_allowed.astype(np.uint8), (roi_d.shape[1], roi_d.shape[0]),
                              interpolation=cv2.INTER_NEAREST) > 0
        out = _dense_candidates(i, q, roi_d, al_d, (0, 0), p, top, 1)
        # ds coords: p_d = (p + 0.5) / ds - 0.5
        D = np.array([[1 / ds, 0, 0.5 / ds - 0.5], [0, 1 / ds, 0.5 / ds - 0.5], [0, 0, 1]])
        U = np.array([[ds, 0, 0.5 * ds - 0.5 + off[0]], [0, ds, 0.5 * ds - 0.5 + off[1]], [0, 0, 1]])
        for c in out:
            c.T = (U @ np.vstack([c.T, [0, 0, 1]]) @ D)[:2]
        return out

    h, w = prep.ink.shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    diag = int(np.ceil(np.hypot(h, w))) + 2
    Hr, Wr = roi_ink.shape
    maxmap = np.full((Hr, Wr), -1.0, np.float32)
    argmap = np.full((Hr, Wr), -1, np.int32)
    poses = []
    mask_f = prep.mask.astype(np.float32)
    for ang in np.arange(0.0, 360.0, p.dense_angle_step):
        R = cv2.getRotationMatrix2D((cx, cy), float(ang), 1.0)
        R[:, 2] += ((diag - 1) / 2 - cx, (diag - 1) / 2 - cy)
        t = cv2.warpAffine(prep.ink, R, (diag, diag), flags=cv2.INTER_LINEAR)
        m = cv2.warpAffine(mask_f, R, (diag, diag), flags=cv2.INTER_LINEAR) > 0.5
        ys, xs = np.nonzero(m)
        if len(xs) < 6:
            continue
        bx0, by0, bx1, by1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        tt = np.ascontiguousarray((t * m)[by0:by1, bx0:bx1], dtype=np.float32)
        if tt.shape[0] >= Hr or tt.shape[1] >= Wr:
            continue
        res = cv2.matchTemplate(roi_ink, tt, cv2.TM_CCOEFF_NORMED, mask=m[by0:by1, bx0:bx1].astype(np.float32))
        offset = _fold_response(res, diag, bx0, by0, maxmap, argmap, len(poses))
        if offset is not None:
            poses.append((R, bx0, by0, *offset))
    if roi_allowed is not None:
        maxmap[~roi_allowed] = -1.0
    out = []
    r0 = max(2, int(round(p.dense_nms * prep.length)))
    for _ in range(top):
        _, mv, _, (xc, yc) = cv2.minMaxLoc(maxmap)
        if mv <= 0 or argmap[yc, xc] < 0:
            break
        R, bx0, by0, ox, oy = poses[argmap[yc, xc]]
        T = R.copy()
        T[:, 2] += (xc - ox - bx0 + off[0], yc - oy - by0 + off[1])
        c = Candidate(i, T, 0, "dense")
        c.search = float(mv)
        out.append(c)
        cv2.circle(maxmap, (int(xc), int(yc)), r0, -1.0, -1)
    return out


def _search_scale(chroms, f0: float, light: bool, meta_ink_f: np.ndarray, p: "MatchParams") -> float:
    """Global cut-out -> metaphase scale: the factor around ``f0`` at which the biggest cut-outs find their
    best rotated-template correlation (the foreground area misleads when the metaphase is blurred or
    the masks are tight)."""
    import cv2

    q = MatchParams(template_ds=3, angle_step=30, template_scales=(1.0,), template_ring=2)
    meta_ds = cv2.resize(meta_ink_f, None, fx=1 / 3, fy=1 / 3, interpolation=cv2.INTER_AREA)
    big = sorted(chroms, key=lambda c: -c.area)[: p.scale_search_n]
    curve = []
    for k in p.scale_search:
        f = f0 * k
        vals = []
        for c in big:
            prep = _Prepared(c, f, light)
            if max(prep.ink.shape) / 3 < 6:
                continue
            _template_candidates(0, prep, meta_ds, q, top=1)
            vals.append(float(_template_candidates.last_maxmap.max()))
        curve.append((f, float(np.mean(vals)) if vals else -1.0))
    return max(curve, key=lambda fv: fv[1])[0]


def metaphase_foreground(ink: np.ndarray, width: float, factor: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Background-corrected ink (white top-hat, disc of ~3 chromosome widths) and its foreground.

    The foreground is ``tophat > factor * Otsu(tophat)``, opened by 3x3, holes filled. The top-hat removes
    the glow and uneven illumination of fluorescence images; on a flat G-band background it changes little.
    """
    import cv2
    from scipy import ndimage as ndi

    k = int(np.clip(3.0 * width, 15, 101)) | 1
    bg = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    th = cv2.subtract(ink, bg)
    t, _ = cv2.threshold(th, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = th > max(factor * t, 4)
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    return th, ndi.binary_fill_holes(fg)


def match_pair(metaphase: np.ndarray, layout: KaryogramLayout, params: MatchParams | None = None) -> PairMatch:
    """Find every chromosome of ``layout`` in the ``metaphase`` image (grey or RGB array)."""
    import cv2
    from scipy import ndimage as ndi

    p = params or MatchParams()
    grey = to_grey(metaphase)
    H, W = grey.shape
    light = light_background(grey)
    raw_ink = ink_image(grey, light)
    notes: list[str] = []
    if layout.light_background != light:
        notes.append("metaphase and karyogram have opposite background polarity; both are compared in ink form")
    chroms = layout.chromosomes
    if not chroms:
        return PairMatch([], [], 1.0, 0, notes + ["no chromosomes in the karyogram"])
    total = sum(c.area for c in chroms)
    # cut-out width (they stand upright): area / height, in karyogram pixels
    width_k = float(np.median([c.area / max(1, c.mask.shape[0]) for c in chroms]))
    f = float(np.clip(np.sqrt(max(otsu_foreground(raw_ink).sum(), 1) / max(total, 1)), 0.1, 10.0))
    amax_k = max(c.area for c in chroms)
    for _ in range(4):  # scale <-> foreground: background-corrected foreground needs the chromosome width
        _, fg = metaphase_foreground(raw_ink, width_k * f, p.fg_factor)
        # interphase nuclei and debris far bigger than the biggest cut-out are not chromosomes: they stay
        # out of the foreground (and of the scale estimate: clusters of touching chromosomes count there
        # only up to 4 biggest cut-outs)
        lab, n = ndi.label(fg)
        if n:
            areas = np.bincount(lab.ravel())[1:]
            amax = amax_k * f * f
            huge = np.nonzero(areas > p.max_blob * amax)[0] + 1
            if len(huge):
                fg = fg & ~np.isin(lab, huge)
            used = np.minimum(areas[areas <= p.max_blob * amax], 4 * amax).sum()
        else:
            used = 0
        f_new = float(np.clip(np.sqrt(max(used, 1) / max(total, 1)), 0.05, 10.0))
        if abs(f_new - f) < 0.01 * f:
            f = f_new
            break
        f = f_new
    if n and len(huge):
        notes.append(f"{len(huge)} blobs far bigger than any chromosome (nuclei?) left out of the foreground")
    if p.scale_search:
        f2 = _search_scale(chroms, f, layout.light_background, raw_ink.astype(np.float32), p)
        if abs(f2 - f) > 0.05 * f:
            notes.append(f"scale from the foreground area {f:.3f}, from a template search {f2:.3f}: using the latter")
            f = f2
            _, fg = metaphase_foreground(raw_ink, width_k * f, p.fg_factor)
    # matching compares the raw ink (a cut-out is a copy of the metaphase's own pixels); the top-hat is
    # used for the foreground only
    meta_ink = raw_ink
    s_lo, s_hi = p.scale_range
    preps = [_Prepared(c, f, layout.light_background) for c in chroms]

    sift = cv2.SIFT_create(contrastThreshold=p.sift_contrast)
    meta_mask = cv2.dilate(fg.astype(np.uint8), np.ones((7, 7), np.uint8))
    kp_m, des_m = sift.detectAndCompute(meta_ink, meta_mask)
    meta_ink_f = meta_ink.astype(np.float32)
    meta_ds = cv2.resize(meta_ink_f, None, fx=1 / p.template_ds, fy=1 / p.template_ds, interpolation=cv2.INTER_AREA)

    # the part of the metaphase searched densely: the foreground's bounding box and a margin
    ys_, xs_ = np.nonzero(fg)
    mg_ = int(max(pr.length for pr in preps))
    if len(xs_):
        rx0, ry0 = max(0, int(xs_.min()) - mg_), max(0, int(ys_.min()) - mg_)
        rx1, ry1 = min(W, int(xs_.max()) + 1 + mg_), min(H, int(ys_.max()) + 1 + mg_)
    else:
        rx0, ry0, rx1, ry1 = 0, 0, W, H

    def candidates(i: int, ink: np.ndarray, ink_f: np.ndarray, ink_ds: np.ndarray, fgm: np.ndarray, use_sift: bool):
        prep = preps[i]
        cs: list[Candidate] = []
        if use_sift:
            cs, _ = _sift_candidates(i, prep, kp_m, des_m, sift, p, s_lo, s_hi)
            for c in cs:
                _evaluate(c, prep, ink, fgm, p=p)
        good = [c for c in cs if c.score >= p.min_candidate_score]
        strong = [c for c in cs if c.ncc >= p.dense_skip_ncc]
        if p.dense and not strong:  # SIFT found no near-exact copy (few keypoints, little texture)
            allowed = cv2.dilate(fgm[ry0:ry1, rx0:rx1].astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            ds = max(1, int(prep.length // p.dense_len))
            ts = _dense_candidates(i, prep, np.ascontiguousarray(ink_f[ry0:ry1, rx0:rx1]), allowed, (rx0, ry0), p,
                                   top=p.dense_top, ds=ds)
            for c in ts:
                _evaluate(c, prep, ink, fgm, p=p)
            cs += ts
        elif not p.dense and p.template_fallback and len(good) < p.template_min_good:
            ts = _template_candidates(i, prep, ink_ds, p, top=p.template_top)
            for c in ts:
                _evaluate(c, prep, ink, fgm, p=p)
            cs += ts
        cs = [c for c in cs if c.base > 0]
        cs.sort(key=lambda c: -c.base)
        cs = cs[: p.max_candidates]
        if p.local_refine:
            ref = []
            for c in cs:
                n = _local_refine(c, prep, ink_f, p)
                if n is not c:
                    _evaluate(n, prep, ink, fgm, p=p)
                    if n.ncc > c.ncc:
                        c = n
                ref.append(c)
            cs = sorted(ref, key=lambda c: -c.base)
        if p.ecc:  # the right place shows only at a fine pose: polish every candidate before ranking
            cs = [_ecc_refine(c, prep, ink_f, ink, fgm, p=p) for c in cs]
            cs.sort(key=lambda c: -c.base)
        return cs

    taken = np.zeros((H, W), bool)
    accepted: dict[int, tuple[Candidate, np.ndarray]] = {}

    def warped_mask(c: Candidate) -> np.ndarray | None:
        r = _warp_window(c.T, preps[c.chrom].mask.astype(np.float32), (H, W), cv2.INTER_LINEAR)
        if r is None:
            return None
        wm, (x0, y0, x1, y1) = r
        full = np.zeros((H, W), bool)
        full[y0:y1, x0:x1] = wm > 0.5
        return full if full.any() else None

    def accept(cands: list[Candidate], ink, ink_f, fgm) -> None:
        """One-to-one assignment of cut-outs to metaphase locations, maximising the total score."""
        nonlocal taken
        from scipy.optimize import linear_sum_assignment
        from sklearn.cluster import DBSCAN

        cands = [c for c in cands if c.chrom not in accepted and c.ncc >= p.min_ncc
                 and (c.score >= p.min_candidate_score or c.ncc >= p.strong_ncc)]
        if not cands:
            return
        if p.assign == "greedy":
            # best pose first; a pose whose warped mask lies mostly on pixels already claimed is refused
            # and the cut-out's next pose is tried
            for c in sorted(cands, key=lambda c: -c.score):
                if c.chrom in accepted:
                    continue
                full = warped_mask(c)
                if full is None or (full & taken).sum() > p.max_overlap * full.sum():
                    continue
                accepted[c.chrom] = (c, full)
                taken |= full
            return
        # locations: candidate poses whose centres are close are one place in the metaphase
        centres = np.array([c.T @ np.array([preps[c.chrom].ink.shape[1] / 2, preps[c.chrom].ink.shape[0] / 2, 1.0])
                            for c in cands])
        eps = 0.25 * float(np.median([pr.length for pr in preps]))
        loc = DBSCAN(eps=max(eps, 2.0), min_samples=1).fit_predict(centres)
        chroms_ = sorted({c.chrom for c in cands})
        row = {k: r for r, k in enumerate(chroms_)}
        S = np.zeros((len(chroms_), int(loc.max()) + 1))
        pick: dict[tuple[int, int], Candidate] = {}
        for c, l in zip(cands, loc):
            r = row[c.chrom]
            if c.score > S[r, l]:
                S[r, l] = c.score
                pick[(r, l)] = c
        rr, ll = linear_sum_assignment(-S)
        chosen = sorted(((pick[(r, l)]) for r, l in zip(rr, ll) if S[r, l] > 0), key=lambda c: -c.score)
        for c in chosen:
            full = warped_mask(c)
            if full is None or (full & taken).sum() > p.max_overlap * full.sum():
                continue
            accepted[c.chrom] = (c, full)
            taken |= full

    cands: list[Candidate] = []
    for i in range(len(preps)):
        cands += candidates(i, meta_ink, meta_ink_f, meta_ds, fg, True)
    # typical scale of the pair: median over the cut-outs of their best pose's scale
    best: dict[int, Candidate] = {}
    for c in cands:
        if c.chrom not in best or c.base > best[c.chrom].base:
            best[c.chrom] = c
    prior = None
    if best and p.scale_sigma:
        prior = (float(np.median([c.scale for c in best.values()])), p.scale_sigma)
    photo = _fit_photo(cands) if p.photometric else None

    def photo_polish(cs: list[Candidate], ink_f, ink, fgm) -> list[Candidate]:
        """Rescore with the intensity map and polish each cut-out's best poses by the squared difference."""
        for c in cs:
            _rescore(c, photo, p)
        if photo is None or not p.photo_refine_top:
            return cs
        by: dict[int, list[Candidate]] = {}
        for c in cs:
            by.setdefault(c.chrom, []).append(c)
        out = []
        for k, lst in by.items():
            lst.sort(key=lambda c: -c.base)
            for j, c in enumerate(lst):
                if j < p.photo_refine_top:
                    n = _local_refine(c, preps[k], ink_f, p, photo)
                    if n is not c:
                        _evaluate(n, preps[k], ink, fgm, photo=photo, p=p)
                        if n.rms < c.rms:
                            c = n
                out.append(c)
        return out

    cands = photo_polish(cands, meta_ink_f, meta_ink, fg)
    for c in cands:
        c.score = c.base * _scale_prior(c.scale, prior)
    all_cands = list(cands)
    accept(cands, meta_ink, meta_ink_f, fg)
    # further passes: the cut-outs still unmatched are searched again with the claimed pixels blanked out
    for _ in range(p.extra_passes):
        rest = [i for i in range(len(preps)) if i not in accepted]
        if not rest:
            break
        core = cv2.erode(taken.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        ink2 = meta_ink.copy()
        ink2[core] = 0
        fg2 = fg & ~core
        ink2_f = ink2.astype(np.float32)
        ink2_ds = cv2.resize(ink2_f, None, fx=1 / p.template_ds, fy=1 / p.template_ds, interpolation=cv2.INTER_AREA)
        n0 = len(accepted)
        cands = []
        for i in rest:
            cands += candidates(i, ink2, ink2_f, ink2_ds, fg2, False)
        cands = photo_polish(cands, ink2_f, ink2, fg2)
        for c in cands:
            c.score = c.base * _scale_prior(c.scale, prior)
        all_cands += cands
        accept(cands, ink2, ink2_f, fg2)
        if len(accepted) == n0:
            break

    # refine against the metaphase foreground and settle contested pixels
    order = sorted(accepted, key=lambda k: -accepted[k][0].score)
    refined = {}
    if p.refine_tol is None:
        fg_near = np.ones((H, W), bool)
    else:
        fg_near = cv2.dilate(fg.astype(np.uint8), cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * p.refine_tol + 1, 2 * p.refine_tol + 1))) > 0
    k_grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * p.refine_grow + 1, 2 * p.refine_grow + 1))
    for k in order:
        c, full = accepted[k]
        # cut what lies far from the metaphase's foreground, add foreground right at the edge
        m = (full & fg_near) | ((cv2.dilate(full.astype(np.uint8), k_grow) > 0) & fg)
        m = ndi.binary_fill_holes(m)
        refined[k] = m
    claims = np.zeros((H, W), np.int32)
    for k in order:
        claims += refined[k]
    contested = claims > 1
    if contested.any():
        inside = np.zeros((H, W), np.int32)
        for k in order:
            inside += accepted[k][1]
        shared = contested & (inside >= 2)  # true overlap: both keep it
        todo = contested & ~shared
        if todo.any():
            dists = []
            for k in order:
                d = ndi.distance_transform_edt(~accepted[k][1])
                d = np.where(refined[k], d, np.inf)
                dists.append(d[todo])
            dists = np.stack(dists)  # order is by score: argmin picks the higher score on ties
            win = np.argmin(dists, axis=0)
            ys, xs = np.nonzero(todo)
            for j, k in enumerate(order):
                lose = win != j
                refined[k][ys[lose], xs[lose]] = False
    matches = []
    for k in order:
        c, full = accepted[k]
        m = refined[k]
        # keep the pieces that touch the warped mask's core
        lab, n = ndi.label(m)
        if n > 1:
            keep = np.unique(lab[m & full])
            m = np.isin(lab, keep[keep > 0])
        matches.append(
            Match(
                chrom=k, class_id=chroms[k].class_id, transform=_compose(c.T, preps[k].S), mask=m, warped=full,
                score=round(c.score, 4), ncc=round(c.ncc, 4), coverage=round(c.coverage, 4), inliers=c.inliers,
                method=c.method,
            )
        )
    matches.sort(key=lambda m: m.chrom)
    unmatched = [i for i in range(len(chroms)) if i not in accepted]
    return PairMatch(matches, unmatched, f, len(kp_m), notes, all_cands)
