"""Parse a karyogram image into classified chromosome cut-outs.

A karyogram in the standard layout has four rows of *slots*; a slot is a horizontal underline with the
class label printed under it and the chromosomes of that class standing upright above it:

    row 1: 1 2 3 | 4 5            row 3: 13 14 15 | 16 17 18
    row 2: 6 7 8 9 10 11 12       row 4: 19 20 | 21 22 | X | Y

Rule used to give each chromosome its class (the main signal is the layout, not OCR):

1. *Ink* is the non-background: the background polarity is read from the image border (a light border
   means dark chromosomes, as in G-banding; a dark border means bright ones, as in DAPI), and ink is
   everything that differs from the background by more than an Otsu threshold.
2. *Underlines* are thin horizontal ink structures (they survive a horizontal opening of
   ``line_min_width`` pixels and are at most ``line_max_height`` pixels high).
3. Underlines are grouped into rows by their y; rows are taken top to bottom as rows 1-4.
4. Inside a row, the slots are aligned to the standard template (slot centres as a fraction of the
   span of all underlines, measured on real karyograms) by a monotone alignment that allows template
   slots without an underline (an empty slot whose line is not drawn) and a shift of the whole row
   (a row that is offset). A row with exactly the standard number of slots is taken in order.
5. Small ink components just under an underline are its printed label (kept as the label box, read
   only as a consistency check: the number of glyphs of the label must fit the class name's length).
6. Every other ink component of a useful size belongs to the nearest underline below it whose x-range
   contains its centre; it gets that slot's class. A slot may hold zero, one, two or more
   chromosomes (missing or extra chromosome). A single component whose column profile has a deep
   valley in the middle is split there (touching homologues).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Classes of the four rows of the standard layout (23 = X, 24 = Y).
STANDARD_ROWS: tuple[tuple[int, ...], ...] = (
    (1, 2, 3, 4, 5),
    (6, 7, 8, 9, 10, 11, 12),
    (13, 14, 15, 16, 17, 18),
    (19, 20, 21, 22, 23, 24),
)

#: Slot centres as a fraction of the span of all underlines (measured on the karyograms of
#: ``karyogram-pairs``: 8129A.001.K.TIF; the synthetic generator uses the same positions).
STANDARD_X: tuple[tuple[float, ...], ...] = (
    (0.0761, 0.2510, 0.4265, 0.7484, 0.9244),
    (0.0626, 0.2101, 0.3571, 0.5047, 0.6507, 0.7977, 0.9431),
    (0.0616, 0.2075, 0.3535, 0.6454, 0.7914, 0.9384),
    (0.0616, 0.2075, 0.4259, 0.5735, 0.7914, 0.9384),
)


@dataclass
class Slot:
    """One underline with its class."""

    row: int  # 0-3
    x0: int
    x1: int
    y: int  # top row of the underline
    class_id: int | None = None
    label_box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 (exclusive)
    n_glyphs: int = 0


@dataclass
class KaryoChromosome:
    """One chromosome cut out of the karyogram."""

    index: int
    class_id: int | None
    slot: int | None
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the karyogram (exclusive)
    mask: np.ndarray  # bool crop
    image: np.ndarray  # uint8 grey crop (the karyogram's own polarity)

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class KaryogramLayout:
    shape: tuple[int, int]
    light_background: bool
    slots: list[Slot]
    chromosomes: list[KaryoChromosome]
    warnings: list[str] = field(default_factory=list)

    def class_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for c in self.chromosomes:
            if c.class_id is not None:
                counts[c.class_id] = counts.get(c.class_id, 0) + 1
        return counts


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 grey image from grey/RGB(A), any integer or float dtype."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float32)
    if np.issubdtype(np.asarray(image).dtype, np.integer) and a.max() > 255:
        a = a / np.iinfo(np.asarray(image).dtype).max * 255.0
    elif a.max() <= 1.0:
        a = a * 255.0
    return np.clip(a, 0, 255).astype(np.uint8)


def light_background(grey: np.ndarray) -> bool:
    """True when the image border is light (G-banding: dark chromosomes on white)."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(np.median(border)) >= 128


def ink_image(grey: np.ndarray, light: bool | None = None) -> np.ndarray:
    """Foreground made bright: the inverted image when the background is light."""
    if light is None:
        light = light_background(grey)
    return (255 - grey) if light else grey.copy()


def otsu_foreground(ink: np.ndarray, min_threshold: int = 8) -> np.ndarray:
    """Otsu threshold of a bright-foreground image, as bool."""
    import cv2

    t, _ = cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return ink > max(t, min_threshold)


def _split_touching(mask: np.ndarray, min_valley: float = 0.35) -> list[np.ndarray]:
    """Split a crop holding two side-by-side upright chromosomes at its deepest central column valley."""
    h, w = mask.shape
    if w < 1.1 * h * 0.5 or w < 20:
        return [mask]
    prof = mask.sum(axis=0).astype(float)
    lo, hi = int(0.3 * w), int(0.7 * w)
    if hi - lo < 3:
        return [mask]
    v = lo + int(np.argmin(prof[lo:hi]))
    left, right = prof[:v].max(initial=0), prof[v:].max(initial=0)
    if min(left, right) <= 0 or prof[v] > min_valley * min(left, right):
        return [mask]
    a = mask.copy()
    a[:, v:] = False
    b = mask.copy()
    b[:, :v] = False
    return [a, b]


def _align_row(obs: list[float], template: tuple[float, ...], skip_cost: float = 0.06) -> list[int | None]:
    """Monotone alignment of observed slot centres to template slots (both fractions of the span).

    Returns for each observed slot the index of its template slot (None = extra slot). The row may be
    shifted as a whole: the median offset of a first alignment is removed and the alignment redone.
    """
    n, m = len(obs), len(template)
    if n == m:
        return list(range(n))

    def solve(offset: float) -> tuple[float, list[int | None]]:
        inf = float("inf")
        cost = np.full((n + 1, m + 1), inf)
        back = np.zeros((n + 1, m + 1), dtype=np.int8)
        cost[0, :] = np.arange(m + 1) * skip_cost
        cost[:, 0] = np.arange(n + 1) * 4 * skip_cost
        for i in range(1, n + 1):
            for j in range(1, m + 1):
                c_match = cost[i - 1, j - 1] + abs(obs[i - 1] - offset - template[j - 1])
                c_skip_t = cost[i, j - 1] + skip_cost  # template slot with no underline
                c_skip_o = cost[i - 1, j] + 4 * skip_cost  # extra underline
                best = min(c_match, c_skip_t, c_skip_o)
                cost[i, j] = best
                back[i, j] = 0 if best == c_match else (1 if best == c_skip_t else 2)
        out: list[int | None] = [None] * n
        i, j = n, m
        while i > 0 and j > 0:
            if back[i, j] == 0:
                out[i - 1] = j - 1
                i, j = i - 1, j - 1
            elif back[i, j] == 1:
                j -= 1
            else:
                i -= 1
        return float(cost[n, m]), out

    c0, a0 = solve(0.0)
    offs = [obs[i] - template[j] for i, j in enumerate(a0) if j is not None]
    if offs:
        c1, a1 = solve(float(np.median(offs)))
        if c1 < c0:
            return a1
    return a0


def parse_karyogram(
    image: np.ndarray,
    *,
    line_min_width: int = 40,
    line_max_height: int = 6,
    label_band: int = 40,
    min_area_frac: float = 0.04,
    merge_gap: int = 4,
    split_factor: float = 1.6,
) -> KaryogramLayout:
    """Find slots, labels and chromosomes in a karyogram image (grey or RGB array)."""
    import cv2
    from scipy import ndimage as ndi

    grey = to_grey(image)
    light = light_background(grey)
    ink = ink_image(grey, light)
    fg = otsu_foreground(ink)
    H, W = fg.shape
    warnings: list[str] = []

    # --- underlines
    fg8 = fg.astype(np.uint8)
    # thin: ink not inside any vertical run taller than line_max_height (chromosome bodies go away)
    tall = cv2.morphologyEx(fg8, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, line_max_height + 2)))
    thin = fg8 & (1 - tall)
    opened = cv2.morphologyEx(thin, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (line_min_width, 1)))
    n, lab, st, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    lines = []
    for i in range(1, n):
        x, y, w, h, _a = st[i]
        if h <= line_max_height and w >= line_min_width and w >= 8 * h:
            lines.append((int(x), int(y), int(x + w), int(y + h)))
    line_px = np.zeros_like(fg8)
    for x0, y0, x1, y1 in lines:
        line_px[max(0, y0 - 2): y1 + 2, max(0, x0 - 3): x1 + 3] = 1
    # ticks at the ends of the lines belong to the lines too
    # chromosomes are cut out with a low threshold (pale bands must not split them)
    # the threshold is taken again without the underlines: bright print on a dark background must not
    # raise it above dim (fluorescence) chromosomes
    off_line = ink[~line_px.astype(bool)]
    t_otsu, _ = cv2.threshold(off_line.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    t_otsu = max(float(t_otsu), 8.0)
    fg = ink > t_otsu
    fg_low = ink > max(6.0, 0.3 * t_otsu)
    # a perfectly flat, noise-free background (cut-outs pasted with their masks, as karyogram software
    # writes them): every pixel that differs from it belongs to a chromosome, its dim rim included
    n_flat, n_near = int((ink == 0).sum()), int(((ink > 0) & (ink <= 2)).sum())
    if n_flat >= 0.5 * ink.size and n_near < 0.002 * ink.size:
        fg_low = ink > 0
    rest = fg & ~line_px.astype(bool)
    if not lines:
        warnings.append("no underlines found: not a karyogram in the standard layout")
        return KaryogramLayout((H, W), light, [], [], warnings)

    # --- rows: group lines by y
    lines.sort(key=lambda b: (b[1], b[0]))
    ys = np.array([b[1] for b in lines], float)
    med_w = float(np.median([b[2] - b[0] for b in lines]))
    row_tol = max(12.0, 0.15 * med_w)
    rows: list[list[tuple[int, int, int, int]]] = []
    for b in lines:
        if rows and abs(b[1] - np.mean([r[1] for r in rows[-1]])) <= row_tol:
            rows[-1].append(b)
        else:
            rows.append([b])
    del ys
    if len(rows) != len(STANDARD_ROWS):
        warnings.append(f"found {len(rows)} rows of underlines, expected {len(STANDARD_ROWS)}")
    span0 = min(b[0] for b in lines)
    span1 = max(b[2] for b in lines)
    span = max(1.0, float(span1 - span0))

    slots: list[Slot] = []
    for r, row in enumerate(rows):
        row.sort(key=lambda b: b[0])
        std_r = min(r, len(STANDARD_ROWS) - 1) if len(rows) == len(STANDARD_ROWS) else None
        if std_r is None:
            # pick the standard row whose slot count fits best, in order
            std_r = min(range(len(STANDARD_ROWS)), key=lambda k: (abs(len(STANDARD_ROWS[k]) - len(row)), abs(k - r)))
        obs = [((b[0] + b[2]) / 2 - span0) / span for b in row]
        assign = _align_row(obs, STANDARD_X[std_r])
        if len(row) != len(STANDARD_ROWS[std_r]):
            got = [STANDARD_ROWS[std_r][j] if j is not None else None for j in assign]
            warnings.append(
                f"row {r + 1}: {len(row)} underlines instead of {len(STANDARD_ROWS[std_r])}; "
                f"aligned to the standard positions as classes {got}"
            )
        for b, j in zip(row, assign):
            cid = STANDARD_ROWS[std_r][j] if j is not None else None
            slots.append(Slot(row=r, x0=b[0], x1=b[2], y=b[1], class_id=cid))

    # --- components of the rest: labels and chromosomes
    n, lab, st, cen = cv2.connectedComponentsWithStats(rest.astype(np.uint8), connectivity=8)
    big = [st[i, 4] for i in range(1, n) if st[i, 4] >= 200]
    min_area = max(30.0, min_area_frac * float(np.median(big))) if big else 30.0
    label_parts: dict[int, list[tuple[int, int, int, int]]] = {}
    chrom_parts: list[tuple[int, int]] = []  # (component, slot)
    for i in range(1, n):
        x, y, w, h, a = (int(v) for v in st[i])
        cx = x + w / 2
        # label: small component just under a line
        is_label = False
        for s_i, s in enumerate(slots):
            if s.x0 - 5 <= cx <= s.x1 + 5 and s.y + 2 <= y and y + h <= s.y + label_band and h <= label_band:
                label_parts.setdefault(s_i, []).append((x, y, x + w, y + h))
                is_label = True
                break
        if is_label or a < 5:
            continue
        # chromosome: the nearest line below whose x-range holds its centre
        best, best_d = None, None
        for s_i, s in enumerate(slots):
            if y + h <= s.y + 8 and s.x0 - 0.1 * (s.x1 - s.x0) <= cx <= s.x1 + 0.1 * (s.x1 - s.x0):
                d = s.y - (y + h)
                if best_d is None or d < best_d:
                    best, best_d = s_i, d
        if best is None:
            # nearest line by distance of the bottom centre
            dists = [np.hypot(cx - (s.x0 + s.x1) / 2, (y + h) - s.y) for s in slots]
            best = int(np.argmin(dists))
            warnings.append(f"chromosome at x={x}..{x + w}, y={y}..{y + h} is above no underline; given to the nearest slot")
        chrom_parts.append((i, best))

    for s_i, parts in label_parts.items():
        xs0, ys0, xs1, ys1 = zip(*parts)
        slots[s_i].label_box = (min(xs0), min(ys0), max(xs1), max(ys1))
        # glyphs: count x-separated groups (an "i"-like glyph of two parts stays one)
        spans = sorted((p[0], p[2]) for p in parts)
        g, end = 0, -1
        for a0, a1 in spans:
            if a0 > end:
                g += 1
            end = max(end, a1)
        slots[s_i].n_glyphs = g
    for s_i, s in enumerate(slots):
        if s.class_id is None:
            continue
        from chromoseg.data.classes import class_name

        want = len(class_name(s.class_id))
        if s.label_box is None:
            warnings.append(f"slot of class {class_name(s.class_id)} (row {s.row + 1}) has no printed label")
        elif s.n_glyphs > want:  # touching glyphs may count as one, never as more
            warnings.append(
                f"slot of class {class_name(s.class_id)} (row {s.row + 1}): label has {s.n_glyphs} glyphs, "
                f"expected {want}: the layout may be shifted"
            )

    # --- cut out the chromosomes. Pieces of one upright chromosome (a pale band can cut it) lie one
    # above the other: core pieces of a slot whose x-ranges overlap by half the narrower one are merged;
    # small crumbs join the nearest piece. The final mask takes the halo (low threshold) by watershed.
    by_slot: dict[int, list[int]] = {}
    for comp, s_i in chrom_parts:
        by_slot.setdefault(s_i, []).append(comp)
    groups: dict[int, list[list[int]]] = {}
    for s_i, comps in by_slot.items():
        comps = list(comps)
        parent = {c: c for c in comps}

        def find(c):
            while parent[c] != c:
                parent[c] = parent[parent[c]]
                c = parent[c]
            return c

        for a_i, a in enumerate(comps):
            for b in comps[a_i + 1:]:
                ov = min(st[a, 0] + st[a, 2], st[b, 0] + st[b, 2]) - max(st[a, 0], st[b, 0])
                if ov >= 0.5 * min(st[a, 2], st[b, 2]):
                    parent[find(a)] = find(b)
        gs: dict[int, list[int]] = {}
        for c in comps:
            gs.setdefault(find(c), []).append(c)
        glist = list(gs.values())
        areas = [sum(int(st[c, 4]) for c in g) for g in glist]
        amax = max(areas)
        big = [g for g, a in zip(glist, areas) if a >= 0.15 * amax]
        for g, a in zip(glist, areas):
            if a >= 0.15 * amax:
                continue
            cx = np.mean([cen[c, 0] for c in g])
            cy = np.mean([cen[c, 1] for c in g])
            d = [min(np.hypot(cen[c, 0] - cx, cen[c, 1] - cy) for c in bg) for bg in big]
            big[int(np.argmin(d))].extend(g)
        groups[s_i] = [g for g in big if sum(int(st[c, 4]) for c in g) >= min_area]

    def gbox(g):
        return (min(int(st[c, 0]) for c in g), min(int(st[c, 1]) for c in g),
                max(int(st[c, 0] + st[c, 2]) for c in g), max(int(st[c, 1] + st[c, 3]) for c in g))

    # markers per chromosome (core pixels), with touching homologues split
    markers_by_slot: dict[int, list[np.ndarray]] = {}  # full-image bool masks would be big: keep boxes
    split_slots: set[int] = set()
    for r in {s.row for s in slots}:
        widths = [gbox(g)[2] - gbox(g)[0] for s_i, gl in groups.items() if slots[s_i].row == r and len(gl) == 2 for g in gl]
        if not widths:
            widths = [gbox(g)[2] - gbox(g)[0] for s_i, gl in groups.items() if len(gl) == 2 for g in gl]
        wmed = float(np.median(widths)) if widths else None
        for s_i, gl in groups.items():
            if slots[s_i].row != r:
                continue
            cid = slots[s_i].class_id
            if wmed and len(gl) == 1 and cid is not None and cid <= 22:
                b = gbox(gl[0])
                if b[2] - b[0] >= split_factor * wmed:
                    split_slots.add(s_i)

    chromosomes: list[KaryoChromosome] = []
    from skimage.segmentation import watershed

    from chromoseg.data.classes import class_name as _cn

    halo = 2 * merge_gap
    for s_i in sorted(groups, key=lambda k: (slots[k].row, slots[k].x0)):
        gl = groups[s_i]
        if not gl:
            continue
        boxes = [gbox(g) for g in gl]
        X0 = max(0, min(b[0] for b in boxes) - halo)
        Y0 = max(0, min(b[1] for b in boxes) - halo)
        X1 = min(W, max(b[2] for b in boxes) + halo)
        Y1 = min(H, max(b[3] for b in boxes) + halo)
        sub_lab = lab[Y0:Y1, X0:X1]
        markers = np.zeros(sub_lab.shape, np.int32)
        k = 0
        for g in gl:
            core = np.isin(sub_lab, g)
            pieces = [core]
            if s_i in split_slots:
                ys_, xs_ = np.nonzero(core)
                crop = core[ys_.min(): ys_.max() + 1, xs_.min(): xs_.max() + 1]
                halves = _split_touching(crop, min_valley=1.0)
                if len(halves) == 2:
                    pieces = []
                    for hv in halves:
                        full = np.zeros_like(core)
                        full[ys_.min(): ys_.max() + 1, xs_.min(): xs_.max() + 1] = hv
                        pieces.append(full)
                    warnings.append(f"class {_cn(slots[s_i].class_id)}: one wide piece split in two at its column valley (touching homologues)")
            for pc in pieces:
                k += 1
                markers[pc] = k
        allowed = fg_low[Y0:Y1, X0:X1] & ~line_px[Y0:Y1, X0:X1].astype(bool)
        # never take pixels of another slot's chromosomes or of labels
        other = (lab[Y0:Y1, X0:X1] > 0) & (markers == 0) & fg[Y0:Y1, X0:X1]
        allowed &= ~other
        ws = watershed(-ink[Y0:Y1, X0:X1].astype(np.int32), markers, mask=allowed | (markers > 0))
        parts = []
        for lbl in range(1, k + 1):
            m = ws == lbl
            if m.sum() < min_area:
                continue
            ys_, xs_ = np.nonzero(m)
            box = (X0 + int(xs_.min()), Y0 + int(ys_.min()), X0 + int(xs_.max()) + 1, Y0 + int(ys_.max()) + 1)
            parts.append((box, m[ys_.min(): ys_.max() + 1, xs_.min(): xs_.max() + 1]))
        groups[s_i] = parts  # type: ignore[assignment]
    chromosomes: list[KaryoChromosome] = []
    for s_i in sorted(groups, key=lambda k: (slots[k].row, slots[k].x0)):
        for box, m in sorted(groups[s_i], key=lambda bm: bm[0][0]):
            x0, y0, x1, y1 = box
            m = ndi.binary_fill_holes(m)
            chromosomes.append(
                KaryoChromosome(
                    index=len(chromosomes), class_id=slots[s_i].class_id, slot=s_i, box=box, mask=m,
                    image=grey[y0:y1, x0:x1].copy(),
                )
            )
    from chromoseg.data.classes import class_name

    for s_i, s in enumerate(slots):
        k = len(groups.get(s_i, []))
        if s.class_id is not None and k == 0:
            warnings.append(f"slot of class {class_name(s.class_id)} is empty")
    for cid, k in sorted(_counts(chromosomes).items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        if cid is not None and cid <= 22 and k != 2:
            warnings.append(f"class {class_name(cid)} has {k} chromosomes")
    return KaryogramLayout((H, W), light, slots, chromosomes, warnings)


def _counts(chromosomes: list[KaryoChromosome]) -> dict:
    out: dict = {}
    for c in chromosomes:
        out[c.class_id] = out.get(c.class_id, 0) + 1
    return out
