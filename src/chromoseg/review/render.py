"""What the review page shows of a metaphase: the karyotype line, counts and flags of the current
instances, their outlines and labels, the metaphase picture and the karyogram.

Counting uses :func:`chromoseg.karyotype.counts.count_karyotype` and the karyogram
:func:`chromoseg.karyotype.layout.render_karyogram`, as ``chromoseg predict`` does, with one
difference: a chromosome whose class a reviewer set (or drew) is no longer weak evidence, and once a
metaphase is marked reviewed none of its chromosomes is: a person has confirmed them.

The not-a-chromosome rule (:func:`chromoseg.karyotype.counts.not_chromosomes`: a large compact blob,
a nucleus) is applied to the current masks as ``chromoseg predict`` applies it
(:func:`not_chromosome_ids`), so an unedited metaphase shows predict's karyotype line: what it leaves
out is in no count, not in the karyogram, grey ``?`` on the metaphase and named in the
``not_chromosome`` flag. A reviewer's word wins over the rule: an instance whose class a reviewer set
(or that a reviewer drew or brushed) is never left out, so setting a class on a left-out blob counts
it as that class. Marking the metaphase reviewed does not override the rule (it confirms the page as
shown, the blob left out); a join or a split is judged again (the new masks are the model's pieces).
"""
from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict

import numpy as np

from chromoseg.review.store import NotFound, ReviewStore, class_label


def confirmed(inst: dict, reviewed) -> bool:
    """True when a person vouches for this chromosome's class."""
    return bool(reviewed) or bool(inst.get("class_by")) or inst.get("origin") == "drawn"


def counting_instances(instances: list[dict], reviewed) -> list[dict]:
    """The instances as :func:`count_karyotype` sees them: confirmed ones without score and class scores."""
    out = []
    for i in instances:
        conf = confirmed(i, reviewed)
        out.append({"id": i.get("id"), "category_id": int(i.get("category_id") or 0),
                    "score": None if conf else i.get("score"), "class_scores": None if conf else i.get("class_scores")})
    return out


def vouched(inst: dict) -> bool:
    """True when a reviewer said what this instance is (set its class, drew or brushed it): the
    not-a-chromosome rule never leaves it out."""
    return bool(inst.get("class_by")) or inst.get("origin") == "drawn"


def not_chromosome_ids(instances: list[dict], height: int, width: int) -> dict:
    """The instances the not-a-chromosome rule leaves out, ``{instance id: why}``: the karyotype
    package's :func:`chromoseg.karyotype.counts.not_chromosomes` on their masks (decoded only for a
    detection large enough to be judged; the others are counted on their RLE), with the instances a
    reviewer vouched for (:func:`vouched`) judged by no one: they count as the reviewer says."""
    from chromoseg.karyotype.counts import not_chromosomes
    from chromoseg.review.geometry import decode, mask_pixels

    judged = [{"score": None if vouched(i) else i.get("score"), "mask_area": mask_pixels(i, height, width),
               "mask": functools.partial(decode, i, height, width)} for i in instances]
    return {instances[k]["id"]: why for k, why in not_chromosomes(judged).items()}


def karyotype_view(instances: list[dict], reviewed, truth: str | None = None, excluded: dict | None = None) -> dict:
    """Karyotype line, total, sex, per-class counts (against the expected), flags, findings, the ids
    of the weak chromosomes and ``not_chromosome`` (``{id: why}`` of those left out), as JSON-ready
    values; with the known karyotype ``truth`` also ``truth``, ``truth_summary`` and a flag where the
    line differs from it (as ``chromoseg predict``). ``excluded``: :func:`not_chromosome_ids` of the
    instances (None: nothing is left out, e.g. instances without masks)."""
    from chromoseg.karyotype.counts import count_karyotype

    insts = counting_instances(instances, reviewed)
    excluded = dict(excluded or {})
    c = count_karyotype(insts, excluded={k: excluded[i["id"]] for k, i in enumerate(insts) if i["id"] in excluded})
    view = {"summary": c.summary, "total": c.total, "sex": c.sex, "unassigned": c.unassigned,
            "flags": list(c.flags), "findings": list(c.findings),
            "counts": [{"id": k, "name": class_label(k), "n": c.counts[k], "expected": c.expected[k]} for k in range(1, 25)],
            "weak": [insts[k]["id"] for k in c.weak], "truth": truth, "truth_summary": None,
            "not_chromosome": {str(insts[k]["id"]): why for k, why in c.excluded.items()}}
    if truth:
        from chromoseg.karyotype.iscn import karyotype_summary, parse_karyotype

        try:
            view["truth_summary"] = karyotype_summary(parse_karyotype(truth))
        except ValueError:
            pass
        ts = view["truth_summary"]
        if ts is not None and ts.replace("?", "") != c.summary.replace("?", ""):
            from chromoseg.karyotype.pipeline import truth_flag

            view["flags"].append(truth_flag(c.summary, truth, ts))
    return view


def encode_png(arr: np.ndarray) -> bytes:
    """PNG bytes of a grey or RGB uint8 array."""
    import cv2

    a = np.ascontiguousarray(arr)
    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", a, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


class Renderer:
    """Pictures and views of a :class:`ReviewStore`'s metaphases, with small caches (the metaphase
    picture per image, outlines per mask, the karyogram per image version)."""

    def __init__(self, store: ReviewStore, chrom_height: int = 120, cache_images: int = 8):
        self.store = store
        self.chrom_height = chrom_height
        self._lock = threading.Lock()
        self._images: OrderedDict = OrderedDict()
        self._outlines: OrderedDict = OrderedDict()
        self._karyograms: OrderedDict = OrderedDict()
        self._truths: dict = {}
        self._verdicts: OrderedDict = OrderedDict()
        self._rendering: dict = {}
        self._cache_images = cache_images
        self._batch_lock = threading.Lock()  # one batch list computed at a time (the warm-up and the page's)
        self._batch: tuple | None = None  # (the folder's version, the rows)
        #: set when a page has asked for a karyogram's layout (the last thing the page loads): the
        #: warm-up's torch import waits for it, not to compete with the page's own work as it opens
        self.page_shown = threading.Event()

    @staticmethod
    def _put(cache: OrderedDict, key, value, size: int) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > size:
            cache.popitem(last=False)

    def image_array(self, iid) -> np.ndarray:
        """The metaphase as read from its file (``chromoseg.data.io.read_image_with_info``), from the
        channel predict read it from (its ``images.json`` entry's ``channel_index``; none: the default)."""
        from chromoseg.data.io import ImageReadError, read_image_with_info

        img = self.store.image(iid)
        with self._lock:
            if img["id"] in self._images:
                self._images.move_to_end(img["id"])
                return self._images[img["id"]]
        path = self.store.locate_image(img["id"])
        if path is None:
            raise NotFound(f"image file {img['file_name']} not found (looked as written, beside {self.store.dir} and in "
                           "the --images folders): start `chromoseg review` with --images FOLDER")
        try:
            arr, _ = read_image_with_info(path, channel=img.get("channel_index"))
        except (ImageReadError, TypeError) as err:
            raise NotFound(f"image file {path}: {err}") from None
        if arr.shape[:2] != (img["height"], img["width"]):
            raise NotFound(f"image file {path} is {arr.shape[1]}x{arr.shape[0]}, images.json says "
                           f"{img['width']}x{img['height']}")
        with self._lock:
            self._put(self._images, img["id"], arr, self._cache_images)
        return arr

    def truth(self, iid) -> str | None:
        """The known karyotype of a metaphase: its images.json ``karyotype``, else the
        ``case_info.txt`` beside its file (M-FISH), else None (:func:`chromoseg.karyotype.pipeline.truth_for`)."""
        from chromoseg.karyotype.pipeline import truth_for

        img = self.store.image(iid)
        with self._lock:
            if img["id"] in self._truths:
                return self._truths[img["id"]]
        t = truth_for(img, self.store.locate_image(img["id"]))
        with self._lock:
            self._truths[img["id"]] = t
        return t

    def not_chromosomes(self, iid, instances: list[dict], version: int) -> dict:
        """:func:`not_chromosome_ids` of metaphase ``iid``'s current ``instances`` (its ``version``),
        remembered while they are unchanged."""
        img = self.store.image(iid)
        key = (img["id"], int(version), tuple((i.get("id"), vouched(i)) for i in instances))
        with self._lock:
            if key in self._verdicts:
                self._verdicts.move_to_end(key)
                return self._verdicts[key]
        value = not_chromosome_ids(instances, img["height"], img["width"])
        with self._lock:
            self._put(self._verdicts, key, value, 4096)
        return value

    def image_png(self, iid) -> bytes:
        from chromoseg.karyotype.layout import to_display_gray

        return encode_png(to_display_gray(self.image_array(iid)))

    def _outline(self, iid: int, inst: dict, height: int, width: int) -> tuple[list, list]:
        from chromoseg.review.geometry import decode, outlines

        seg = inst.get("segmentation")
        key = (iid, inst["id"], hashlib.sha1(repr(seg).encode()).hexdigest())
        with self._lock:
            hit = self._outlines.get(key)
        if hit is not None:
            return hit
        from chromoseg.karyotype.counts import _bounds

        mask = decode(inst, height, width)
        crop, x0, y0 = _bounds(mask)  # decoded once, then only its bounding box
        polys = [[v + (y0 if k % 2 else x0) for k, v in enumerate(p)] for p in outlines(crop)]
        center = None
        rb = inst.get("rbox")
        if isinstance(rb, list) and len(rb) == 5:
            center = [float(rb[0]), float(rb[1])]
        if crop.size:
            ys, xs = np.nonzero(crop)
            ys, xs = ys + y0, xs + x0
            if center is None or not mask[min(max(int(center[1]), 0), height - 1), min(max(int(center[0]), 0), width - 1)]:
                ref = center or [float(xs.mean()), float(ys.mean())]
                k = int(np.argmin((xs + 0.5 - ref[0]) ** 2 + (ys + 0.5 - ref[1]) ** 2))
                center = [float(xs[k]) + 0.5, float(ys[k]) + 0.5]
        value = (polys, center or [0.0, 0.0])
        with self._lock:
            self._put(self._outlines, key, value, 5000)
        return value

    def view(self, iid) -> dict:
        """Everything the page shows of one metaphase (JSON-ready)."""
        from chromoseg.karyotype.counts import instance_weakness
        from chromoseg.karyotype.overlay import class_color

        img = self.store.image(iid)
        snap = self.store.snapshot(img["id"])
        reviewed = snap["reviewed"]
        excluded = self.not_chromosomes(img["id"], snap["instances"], snap["version"])
        insts = []
        for inst, ci in zip(snap["instances"], counting_instances(snap["instances"], reviewed)):
            polys, center = self._outline(img["id"], inst, img["height"], img["width"])
            c = int(inst.get("category_id") or 0)
            shown = 0 if inst["id"] in excluded else c  # left out: grey "?", as in predict's overlay
            insts.append({"id": inst["id"], "category_id": c, "label": class_label(shown),
                          "color": "#%02x%02x%02x" % class_color(shown), "score": inst.get("score"),
                          "not_chromosome": excluded.get(inst["id"]),
                          "origin": inst.get("origin", "model"), "class_by": inst.get("class_by"),
                          "model_class": class_label(inst["model_category_id"]) if inst.get("model_category_id") else None,
                          "weak": instance_weakness(ci), "outlines": polys, "center": center,
                          "area": inst.get("area"), "turned_by": inst.get("turned_by")})
        return {"id": img["id"], "file_name": img["file_name"], "name": img["name"], "stem": img["stem"],
                "width": img["width"], "height": img["height"], "version": snap["version"], "reviewed": reviewed,
                "edited": snap["edited"], "undo": snap["undo"][-1] if snap["undo"] else None,
                "redo": snap["redo"][-1] if snap["redo"] else None, "instances": insts,
                "karyotype": karyotype_view(snap["instances"], reviewed, self.truth(img["id"]), excluded),
                "history": self.store.journal(img["id"], limit=30)[::-1]}

    def karyogram(self, iid, title_extra: str = "", straighten: bool = True) -> tuple[bytes, dict]:
        """(PNG bytes, layout) of the current karyogram, its chromosomes straightened along their medial
        axis or as cut (``straighten``); layout: ``width``, ``height``, ``version``, ``straighten`` and
        ``placements`` (instance ``id``, ``x``, ``y``, ``w``, ``h`` on the picture, ``straightened``,
        ``top`` / ``bottom``: the image points shown at its upper / lower end)."""
        img = self.store.image(iid)
        snap = self.store.snapshot(img["id"])
        key = (img["id"], snap["version"], snap["edited"], title_extra, bool(straighten))
        with self._lock:
            hit = self._karyograms.get(key)
            if hit is not None:
                return hit
            flight = self._rendering.setdefault(key, threading.Lock())
        with flight:  # the page asks for the picture and its layout at once: render once
            with self._lock:
                hit = self._karyograms.get(key)
            if hit is not None:
                return hit
            try:
                rgb, placements, _ = self.karyogram_array(img["id"], snap, title_extra, straighten=straighten)
                layout = {"width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "version": snap["version"],
                          "straighten": bool(straighten), "placements": placements}
                value = (encode_png(rgb), layout)
                with self._lock:
                    self._put(self._karyograms, key, value, 16)
            finally:
                with self._lock:
                    self._rendering.pop(key, None)
        return value

    def karyogram_array(self, iid, snap: dict | None = None, title_extra: str = "", image=None,
                        straighten: bool = True):
        """(RGB karyogram, placements with instance ids, the counts' view) of the current instances;
        ``straighten``: chromosomes resampled along their medial axis (else as cut). A chromosome a
        reviewer turned end for end (``top_end``) is shown with that end up; an instance the
        not-a-chromosome rule leaves out (:meth:`not_chromosomes`) is not shown."""
        from chromoseg.karyotype.layout import render_karyogram
        from chromoseg.review.geometry import decode

        img = self.store.image(iid)
        snap = snap or self.store.snapshot(img["id"])
        arr = self.image_array(img["id"]) if image is None else image
        excluded = self.not_chromosomes(img["id"], snap["instances"], snap["version"])
        view = karyotype_view(snap["instances"], snap["reviewed"], self.truth(img["id"]), excluded)
        insts = []
        for inst, ci in zip(snap["instances"], counting_instances(snap["instances"], snap["reviewed"])):
            if inst["id"] in excluded:  # not a chromosome: not in the karyogram (as predict's)
                continue
            mask = decode(inst, img["height"], img["width"])
            insts.append(dict(ci, mask=mask if mask.any() else None, rbox=inst.get("rbox"),
                              endpoints=inst.get("endpoints"), bbox=inst.get("bbox"), top_end=inst.get("top_end")))
        title = f"{img['name']}   {view['summary']}"
        if snap["reviewed"]:
            title += f"   reviewed by {snap['reviewed'].get('by')} {str(snap['reviewed'].get('at', ''))[:10]}"
        if title_extra:
            title += "   " + title_extra
        rgb, placements = render_karyogram(arr, insts, title=title, chrom_height=self.chrom_height, return_layout=True,
                                           straighten=bool(straighten))
        places = [{"id": insts[p["index"]]["id"], "x": int(p["x"]), "y": int(p["y"]), "w": int(p["w"]), "h": int(p["h"]),
                   "straightened": bool(p["straightened"]), "top": p["top"], "bottom": p["bottom"]}
                  for p in placements]
        return rgb, places, view

    def warm_up(self, import_wait: float = 20.0) -> None:
        """Render the metaphase the page opens on (the batch list, the batch's first metaphase: its view,
        picture and straightened karyogram), so that the page does not wait for them, then import what
        the first mask edit needs (torch, through ``chromoseg.ops``: about 3 s of CPU) once the page has
        shown its first metaphase (:attr:`page_shown`) or after ``import_wait`` seconds, not while the
        browser opens the page. ``chromoseg review`` runs this in a background thread as the server
        starts (the slow imports of the page itself, SciPy and scikit-image, are done before the address
        is printed: :func:`chromoseg.review.server.preload`); a request for the same batch list or
        karyogram meanwhile waits for this rendering instead of doing it twice. Errors are left to the
        page's own requests to report."""
        try:
            rows = self.batch()
            if rows:
                iid = rows[0]["id"]
                self.view(iid)
                self.image_array(iid)
                self.karyogram(iid)
            self.page_shown.wait(import_wait)
            import chromoseg.ops  # noqa: F401  (torch: after what the page shows first)
        except Exception:  # noqa: BLE001 - the page asks again and reports what fails
            pass

    def batch(self) -> list[dict]:
        """One entry per metaphase (name, karyotype line, flags, reviewed, version), flagged ones first
        (most flags first), then in ``images.json``'s order. Remembered until the folder's version (its
        journal's length, read before the state) changes; computed by one caller at a time (a second
        one waits, then finds it)."""
        with self._batch_lock:
            version = self.store.version  # before the state: an edit saved meanwhile makes it stale
            hit = self._batch
            if hit is not None and hit[0] == version:
                return [dict(r) for r in hit[1]]
            rows = self._batch_rows()
            self._batch = (version, rows)
            return [dict(r) for r in rows]

    def _batch_rows(self) -> list[dict]:
        states = self.store.summary_state()
        rows = []
        for k, img in enumerate(self.store.images):
            st = states[img["id"]]
            kv = karyotype_view(st["instances"], st["reviewed"], self.truth(img["id"]),
                                self.not_chromosomes(img["id"], st["instances"], st["version"]))
            rows.append({"id": img["id"], "name": img["name"], "file_name": img["file_name"], "stem": img["stem"],
                         "summary": kv["summary"], "total": kv["total"], "flags": kv["flags"],
                         "flagged": bool(kv["flags"]), "reviewed": st["reviewed"], "version": st["version"],
                         "order": k})
        rows.sort(key=lambda r: (not r["flagged"], -len(r["flags"]), r["order"]))
        return rows
