"""Find the karyogram's chromosomes in their metaphase (seed paper, section II.A).

For every cut-out chromosome (``layout.KaryoChromosome``):

1. Both images are brought to *ink* form (chromosomes bright); the cut-outs are rescaled by one global
   factor, ``sqrt(total cut-out area / metaphase foreground area)``, so that SIFT works at one scale.
2. SIFT keypoints of the cut-out are matched to those of the metaphase (``k`` nearest neighbours, no
   ratio test: the two homologues of a class look alike, so a good match has a twin); the metaphase ends
   of the matches are clustered with DBSCAN (``eps`` = half the chromosome's length); every cluster
   gives a pose (rotation, scale, translation) by ``cv2.estimateAffinePartial2D`` with RANSAC.
3. Chromosomes with no acceptable SIFT pose are searched by rotated template matching (normalised
   cross-correlation over 36 angles and three scales at half resolution) -- small chromosomes often have
   too few keypoints.
4. Every pose is polished by ECC (``cv2.findTransformECC``, similarity seed, affine motion) when that
   raises the correlation, and scored: ``ncc`` = normalised cross-correlation of the warped cut-out with
   the metaphase inside the warped mask, ``coverage`` = share of the warped mask on the metaphase's Otsu
   foreground; ``score = max(ncc, 0) * coverage``.
5. Poses are accepted greedily by score: one per cut-out, and a pose whose warped mask lies for more
   than ``max_overlap`` of its area on already accepted ones is refused (a homologue claiming its twin).
6. The accepted warped masks are refined against the metaphase foreground (dilated by ``dilate`` px,
   AND the Otsu foreground, holes filled). Pixels claimed by two instances are kept by both where they
   lie inside both warped masks (a true overlap of two chromosomes), otherwise they go to the instance
   whose warped mask is nearest (ties: higher score).
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
    angle_step: int = 12
    template_scales: tuple[float, ...] = (0.92, 1.0, 1.08)
    template_ds: int = 3
    template_min_good: int = 99  # search by template when SIFT gave fewer good poses than this
    max_candidates: int = 6
    extra_passes: int = 2
    ecc: bool = True
    max_overlap: float = 0.35
    dilate: int = 2
    min_candidate_score: float = 0.15
    sift_contrast: float = 0.02


@dataclass
class Candidate:
    chrom: int
    T: np.ndarray  # 2x3, scaled+padded cut-out coords -> metaphase
    inliers: int
    method: str
    ncc: float = 0.0
    coverage: float = 0.0
    fill: float = 0.0
    score: float = 0.0


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


_RING = np.ones((9, 9), np.uint8)


class _Prepared:
    """A cut-out at metaphase scale, padded, in ink form."""

    def __init__(self, chrom: KaryoChromosome, f: float, light: bool, pad: int = 8):
        import cv2

        ink = ink_image(chrom.image, light).astype(np.float32)
        ink[~chrom.mask] = 0.0
        h, w = chrom.mask.shape
        nw, nh = max(3, int(round(w * f))), max(3, int(round(h * f)))
        fx, fy = nw / w, nh / h
        ink_s = cv2.resize(ink, (nw, nh), interpolation=cv2.INTER_AREA)
        mask_s = cv2.resize(chrom.mask.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA) > 0.5
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


def _evaluate(c: Candidate, prep: _Prepared, meta_ink: np.ndarray, fg: np.ndarray) -> None:
    import cv2

    r = _warp_window(c.T, prep.mask.astype(np.float32), meta_ink.shape, cv2.INTER_LINEAR)
    if r is None:
        c.ncc = c.coverage = c.score = 0.0
        return
    wm, (x0, y0, x1, y1) = r
    m = wm > 0.5
    if m.sum() < 0.5 * prep.area:  # mostly outside the image
        c.ncc = c.coverage = c.score = 0.0
        return
    wi, _ = _warp_window(c.T, prep.ink, meta_ink.shape, cv2.INTER_LINEAR)
    a = wi[m].astype(np.float64)
    b = meta_ink[y0:y1, x0:x1][m].astype(np.float64)
    a -= a.mean()
    b -= b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    c.ncc = float((a * b).sum() / den) if den > 0 else 0.0
    c.coverage = float(fg[y0:y1, x0:x1][m].mean())
    # fill: share of the foreground near the warped mask that it covers (a small cut-out laid on a
    # big chromosome leaves the rest of it uncovered)
    ring = cv2.dilate(m.astype(np.uint8), _RING) > 0
    f_near = fg[y0:y1, x0:x1][ring].sum()
    c.fill = float(fg[y0:y1, x0:x1][m].sum() / f_near) if f_near else 0.0
    c.score = max(c.ncc, 0.0) * c.coverage * c.fill


def _ecc_refine(c: Candidate, prep: _Prepared, meta_ink_f: np.ndarray, meta_ink: np.ndarray, fg: np.ndarray) -> Candidate:
    import cv2

    W = c.T.astype(np.float32).copy()
    try:
        _, W = cv2.findTransformECC(
            prep.ink, meta_ink_f, W, cv2.MOTION_AFFINE,
            (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-4),
            prep.mask.astype(np.uint8), 5,
        )
    except cv2.error:
        return c
    sv = np.linalg.svd(W[:, :2].astype(np.float64), compute_uv=False)
    s0 = np.sqrt(abs(np.linalg.det(c.T[:, :2])))
    if sv.min() < 0.8 * s0 or sv.max() > 1.25 * s0 or np.linalg.norm(W[:, 2] - c.T[:, 2]) > 0.5 * prep.length:
        return c  # ECC drifted away (shear or jump): keep the seed
    n = Candidate(c.chrom, W.astype(np.float64), c.inliers, c.method + "+ecc")
    _evaluate(n, prep, meta_ink, fg)
    return n if n.score > c.score else c


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
    best = []
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
            bx0, by0, bx1, by1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            t, m = t[by0:by1, bx0:bx1], m[by0:by1, bx0:bx1]
            if t.shape[0] >= meta_ds.shape[0] or t.shape[1] >= meta_ds.shape[1]:
                continue
            res = cv2.matchTemplate(meta_ds, np.ascontiguousarray(t), cv2.TM_CCOEFF_NORMED, mask=np.ascontiguousarray(m))
            res[~np.isfinite(res)] = -1.0
            for _ in range(2):
                _, mv, _, ml = cv2.minMaxLoc(res)
                best.append((mv, s, ang, ml, R, (bx0, by0)))
                x, y = ml
                r0 = max(2, int(0.25 * min(t.shape)))
                res[max(0, y - r0): y + r0 + 1, max(0, x - r0): x + r0 + 1] = -1
    best.sort(key=lambda b: -b[0])
    chosen: list = []
    min_sep = 0.35 * prep.length / d
    for b in best:
        # template centre in meta_ds coordinates
        R = b[4]
        c = R @ np.array([cx, cy, 1.0]) - np.array(b[5]) + np.array(b[3])
        if any(np.hypot(*(c - c2)) < min_sep for c2, _ in chosen):
            continue
        chosen.append((c, b))
        if len(chosen) >= top:
            break
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


def match_pair(metaphase: np.ndarray, layout: KaryogramLayout, params: MatchParams | None = None) -> PairMatch:
    """Find every chromosome of ``layout`` in the ``metaphase`` image (grey or RGB array)."""
    import cv2
    from scipy import ndimage as ndi

    p = params or MatchParams()
    grey = to_grey(metaphase)
    H, W = grey.shape
    light = light_background(grey)
    meta_ink = ink_image(grey, light)
    fg = otsu_foreground(meta_ink)
    fg = ndi.binary_fill_holes(cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0)
    notes: list[str] = []
    if layout.light_background != light:
        notes.append("metaphase and karyogram have opposite background polarity; both are compared in ink form")
    chroms = layout.chromosomes
    if not chroms:
        return PairMatch([], [], 1.0, 0, notes + ["no chromosomes in the karyogram"])
    total = sum(c.area for c in chroms)
    f = float(np.sqrt(max(fg.sum(), 1) / max(total, 1)))
    f = float(np.clip(f, 0.1, 10.0))
    s_lo, s_hi = p.scale_range
    preps = [_Prepared(c, f, layout.light_background) for c in chroms]

    sift = cv2.SIFT_create(contrastThreshold=p.sift_contrast)
    meta_mask = cv2.dilate(fg.astype(np.uint8), np.ones((7, 7), np.uint8))
    kp_m, des_m = sift.detectAndCompute(meta_ink, meta_mask)
    meta_ink_f = meta_ink.astype(np.float32)
    meta_ds = cv2.resize(meta_ink_f, None, fx=1 / p.template_ds, fy=1 / p.template_ds, interpolation=cv2.INTER_AREA)

    def candidates(i: int, ink: np.ndarray, ink_f: np.ndarray, ink_ds: np.ndarray, fgm: np.ndarray, use_sift: bool):
        prep = preps[i]
        cs: list[Candidate] = []
        if use_sift:
            cs, _ = _sift_candidates(i, prep, kp_m, des_m, sift, p, s_lo, s_hi)
            for c in cs:
                _evaluate(c, prep, ink, fgm)
        good = [c for c in cs if c.score >= p.min_candidate_score]
        if p.template_fallback and len(good) < p.template_min_good:
            ts = _template_candidates(i, prep, ink_ds, p)
            for c in ts:
                _evaluate(c, prep, ink, fgm)
            cs += ts
        cs = [c for c in cs if c.score > 0]
        cs.sort(key=lambda c: -c.score)
        cs = cs[: p.max_candidates]
        if p.ecc:
            cs = [_ecc_refine(c, prep, ink_f, ink, fgm) for c in cs]
        return [c for c in cs if c.score >= p.min_candidate_score]

    taken = np.zeros((H, W), bool)
    accepted: dict[int, tuple[Candidate, np.ndarray]] = {}

    def accept(cands: list[Candidate]) -> None:
        """Greedy one-to-one acceptance by score."""
        nonlocal taken
        cands.sort(key=lambda c: -c.score)
        for c in cands:
            if c.chrom in accepted:
                continue
            r = _warp_window(c.T, preps[c.chrom].mask.astype(np.float32), (H, W), cv2.INTER_LINEAR)
            if r is None:
                continue
            wm, (x0, y0, x1, y1) = r
            full = np.zeros((H, W), bool)
            full[y0:y1, x0:x1] = wm > 0.5
            a = full.sum()
            if a == 0 or (full & taken).sum() > p.max_overlap * a:
                continue
            accepted[c.chrom] = (c, full)
            taken |= full

    cands: list[Candidate] = []
    for i in range(len(preps)):
        cands += candidates(i, meta_ink, meta_ink_f, meta_ds, fg, True)
    accept(cands)
    # second pass: the cut-outs still unmatched are searched again with the claimed pixels blanked out
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
        accept(cands)
        if len(accepted) == n0:
            break

    # refine against the metaphase foreground and settle contested pixels
    order = sorted(accepted, key=lambda k: -accepted[k][0].score)
    k_el = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * p.dilate + 1, 2 * p.dilate + 1))
    refined = {}
    for k in order:
        c, full = accepted[k]
        m = (cv2.dilate(full.astype(np.uint8), k_el) > 0) & fg
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
    return PairMatch(matches, unmatched, f, len(kp_m), notes)
