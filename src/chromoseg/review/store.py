"""The reviewed state of a ``chromoseg predict`` folder, kept in ``DIR/review.json`` and ``DIR/review/``.

The predict folder's ``images.json`` and ``results.json`` are never changed. A metaphase that was
never edited is as predicted; its first edit copies its instances into its own file,
``DIR/review/<image id>.json``, and from then on that file holds them. Instance ids are 1, 2, ... in
``results.json``'s order per image; an instance made by an edit (join, split, draw, brush) gets a new
id, and ids are never reused.

Every edit is one *diff*: the instances it removes and those it adds (a class change removes the
instance and adds it back with its new class), plus the reviewed mark where that changes. Undo applies
a diff backwards, redo forwards again; a new edit empties the redo list. Per metaphase the last
:data:`MAX_UNDO` diffs are kept.

Files (format 2)::

    review.json                 {"format": "chromoseg-review", "format_version": 2,
                                 "results_sha256": "..."}    # the results.json the first edit was made on
    review/<image id>.json      {"version": n, "next_id": k, "reviewed": null | {"by", "at"},
                                 "instances": [...], "undo": [diff, ...], "redo": [diff, ...]}
    review/journal.jsonl        one line per edit: {"seq", "at", "by", "image_id", "file_name", "op",
                                 "label", "image_version"}

An edit writes only its metaphase's file (and a line of the journal), so saving takes as long for the
hundredth edited metaphase as for the first (format 1 kept every metaphase in ``review.json`` and
wrote it all for every edit: 150 ms of JSON per edit once 100 metaphases were edited). A format-1
``review.json`` is read as it is and moved into this layout by the next edit.

Nothing is lost: every edit is written at once, atomically (a temporary file, flushed to disk, then
renamed over the metaphase's file; the diff in it says who and when), the journal line appended and
flushed after it, under an exclusive lock (``DIR/.review.lock``) so two servers on one folder take
turns; a file another process changed is read again. Each metaphase has a version; an edit names the
version it was made on, and a stale one is refused (:class:`Conflict`, HTTP 409), so two tabs cannot
overwrite each other's work.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import json
import os
import threading
from pathlib import Path

from chromoseg.review.geometry import GeometryError

FORMAT = "chromoseg-review"
FORMAT_VERSION = 2
STATE_FILE = "review.json"
#: the folder of the per-metaphase files and the journal
STATE_DIR = "review"
JOURNAL_FILE = "journal.jsonl"
LOCK_FILE = ".review.lock"
#: undo steps kept per metaphase
MAX_UNDO = 100
#: at most this many instances in one join
MAX_JOIN = 10
#: the smallest drawn chromosome, in pixels
MIN_DRAWN_AREA = 4
#: class ids: 1-22, 23 = X, 24 = Y
CLASS_IDS = range(1, 25)


class ReviewError(Exception):
    """An edit or request that cannot be done; ``status`` is its HTTP status."""

    status = 400

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.extra = extra


class NotFound(ReviewError):
    status = 404


class Conflict(ReviewError):
    """The edit was made on a stale version of the metaphase."""

    status = 409


class StorageError(ReviewError):
    """``review.json`` could not be read or written."""

    status = 500


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def class_label(c) -> str:
    c = int(c or 0)
    return str(c) if 1 <= c <= 22 else {23: "X", 24: "Y"}.get(c, "?")


def check_class(value) -> int:
    """A class id 1-24 (an ``int``, never a bool, a float or a string), or a :class:`ReviewError`."""
    if type(value) is not int or value not in CLASS_IDS:
        raise ReviewError(f"category_id {value!r}: expected a class id 1-24 (1-22, 23 = X, 24 = Y)")
    return value


def check_user(name, default: str) -> str:
    """A reviewer's name: printable, at most 64 characters; ``default`` when empty."""
    if name is None:
        return default
    name = str(name).strip()
    if not name:
        return default
    if len(name) > 64 or not name.isprintable():
        raise ReviewError("reviewer name: at most 64 printable characters")
    return name


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat_of(path: Path):
    """What tells one version of a file from another (a rename makes a new inode); None when missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # the rename itself on disk
        dfd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class ReviewStore:
    """The images, their current instances and the edits of one predict folder.

    ``image_roots``: more folders where an image's ``file_name`` is looked up (by its relative path,
    then by its name) when it is not found as written, beside ``DIR`` or beside ``DIR``'s parent.
    ``user``: the reviewer named in the journal when a request names none.
    """

    def __init__(self, folder, image_roots=(), user: str = "reviewer"):
        self.dir = Path(folder).resolve()
        if not self.dir.is_dir():
            raise ReviewError(f"{folder}: no such folder")
        self.image_roots = [Path(r) for r in image_roots]
        self.user = user
        self.state_path = self.dir / STATE_FILE
        self.state_dir = self.dir / STATE_DIR
        self.journal_path = self.state_dir / JOURNAL_FILE
        self.lock_path = self.dir / LOCK_FILE
        self._lock = threading.RLock()
        self.warnings: list[str] = []
        self._load_predict_folder()
        self._meta: dict | None = None  # review.json (None: nothing edited yet)
        self._meta_stat = None
        self._legacy: dict | None = None  # a format-1 review.json's images and journal, until the next edit
        self._entries: dict[int, dict | None] = {}
        self._entry_stats: dict[int, tuple | None] = {}
        self._journal: list[dict] = []
        self._journal_stat = None
        self._refresh()
        try:  # the folder must be writable: every edit is saved at once
            with open(self.lock_path, "a"):
                pass
        except OSError as err:
            raise ReviewError(f"{self.dir}: cannot write here ({err.strerror}); edits could not be saved") from err
        sha = (self._meta or {}).get("results_sha256")
        if sha and sha != self.results_sha256:
            self.warnings.append("results.json changed since the first edit; edited metaphases keep their edited "
                                 "chromosomes, the others show the new results")

    # ------------------------------------------------------------------------------- predict folder
    def _load_predict_folder(self) -> None:
        from chromoseg.data.coco import ImageIndex

        ip, rp = self.dir / "images.json", self.dir / "results.json"
        if not ip.is_file() or not rp.is_file():
            raise ReviewError(f"{self.dir}: not a chromoseg predict folder (it needs images.json and results.json; "
                              "make one with `chromoseg predict IMAGES --out DIR`)")
        try:
            meta = json.loads(ip.read_text())
            results = json.loads(rp.read_text())
        except (OSError, ValueError) as err:
            raise ReviewError(f"{self.dir}: images.json or results.json is not readable JSON ({err})") from err
        images = meta.get("images") if isinstance(meta, dict) else meta
        if isinstance(results, dict):
            results = results.get("annotations")
        if not isinstance(images, list) or not isinstance(results, list):
            raise ReviewError(f"{self.dir}: images.json needs an 'images' list and results.json a list of results")
        self.images: list[dict] = []
        self._by_id: dict[int, dict] = {}
        for im in images:
            try:
                iid, h, w, fn = int(im["id"]), int(im["height"]), int(im["width"]), str(im["file_name"])
            except (KeyError, TypeError, ValueError):
                self.warnings.append(f"images.json: an entry without id/file_name/height/width was left out")
                continue
            if h <= 0 or w <= 0 or iid in self._by_id:
                self.warnings.append(f"images.json: image {iid} left out (bad size or repeated id)")
                continue
            entry = dict(im, id=iid, height=h, width=w, file_name=fn, stem=str(im.get("stem") or Path(fn).stem),
                         name=Path(fn).name)
            self.images.append(entry)
            self._by_id[iid] = entry
        if not self.images:
            raise ReviewError(f"{self.dir}: images.json lists no usable image")
        index = ImageIndex(self.images)
        self._base: dict[int, list[dict]] = {iid: [] for iid in self._by_id}
        for r in results:
            if not isinstance(r, dict):
                continue
            iid = index.image_of(r)
            if iid not in self._base:
                continue
            inst = {k: v for k, v in r.items() if k not in ("image_id", "file_name", "id")}
            inst["id"] = len(self._base[iid]) + 1
            try:
                inst["category_id"] = int(r.get("category_id") or 0)
            except (TypeError, ValueError):
                inst["category_id"] = 0
            inst.setdefault("origin", "model")
            self._base[iid].append(inst)
        self.results_sha256 = _file_sha256(rp)
        self._paths: dict[int, Path | None] = {}

    def image(self, iid) -> dict:
        """The ``images.json`` entry of an image id (a :class:`NotFound` when there is none)."""
        try:
            return self._by_id[int(iid)]
        except (KeyError, TypeError, ValueError):
            raise NotFound(f"no image {iid!r} in this folder") from None

    def locate_image(self, iid) -> Path | None:
        """The image file of ``iid``: its ``file_name`` as written (absolute, or relative to the current
        folder), relative to DIR or DIR's parent, then under each image root (its path, then its name)."""
        img = self.image(iid)
        if img["id"] in self._paths:
            return self._paths[img["id"]]
        p = Path(img["file_name"])
        cands = [p] if p.is_absolute() else [Path.cwd() / p, self.dir / p, self.dir.parent / p]
        for root in self.image_roots:
            cands += [root / p, root / p.name] if not p.is_absolute() else [root / p.name]
        cands.append(self.dir / p.name)
        found = next((c for c in cands if c.is_file()), None)
        self._paths[img["id"]] = found
        return found

    # ----------------------------------------------------------------------------------------- state
    def _read_json(self, path: Path, what: str):
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise StorageError(f"{path} is not readable ({err}); move it away to start the review of {what} "
                               "afresh (nothing else is changed)") from err

    def _refresh(self) -> None:
        """Read ``review.json`` again when another process (or a person) changed it; the metaphases'
        files and the journal are checked when they are used."""
        with self._lock:
            st = _stat_of(self.state_path)
            if st == self._meta_stat and (st is not None or self._meta is None):
                return
            data = self._read_json(self.state_path, "this folder")
            if data is not None:
                if not isinstance(data, dict) or data.get("format") != FORMAT:
                    raise StorageError(f"{self.state_path} is not a chromoseg review file; move it away to start afresh")
                try:
                    fv = int(data.get("format_version", 0))
                except (TypeError, ValueError):
                    fv = 0
                if fv > FORMAT_VERSION:
                    raise StorageError(f"{self.state_path} was written by a newer chromoseg (format "
                                       f"{data.get('format_version')}); update chromoseg")
                if fv <= 1 and not isinstance(data.get("images"), dict):
                    raise StorageError(f"{self.state_path} is not a chromoseg review file; move it away to start afresh")
            self._meta = data
            self._legacy = ({"images": data["images"], "journal": list(data.get("journal", []))}
                            if data is not None and int(data.get("format_version", 0)) <= 1 else None)
            self._meta_stat = st
            self._entries.clear()
            self._entry_stats.clear()
            self._journal, self._journal_stat = [], None

    def _entry_path(self, iid: int) -> Path:
        return self.state_dir / f"{int(iid)}.json"

    def _entry(self, iid: int) -> dict | None:
        """The edited state of metaphase ``iid`` (None: never edited), read again when its file changed."""
        if self._legacy is not None:
            return self._legacy["images"].get(str(iid))
        path = self._entry_path(iid)
        st = _stat_of(path)
        if iid in self._entry_stats and self._entry_stats[iid] == st:
            return self._entries[iid]
        entry = None if st is None else self._read_json(path, f"image {iid}")
        if entry is not None and (not isinstance(entry, dict) or not isinstance(entry.get("instances"), list)
                                  or type(entry.get("version")) is not int):
            raise StorageError(f"{path} is not a chromoseg review file; move it away to start the review of image "
                               f"{iid} afresh")
        self._entries[iid], self._entry_stats[iid] = entry, st
        return entry

    def _journal_entries(self) -> list[dict]:
        if self._legacy is not None:
            return self._legacy["journal"]
        st = _stat_of(self.journal_path)
        if st != self._journal_stat:
            lines = []
            if st is not None:
                try:
                    text = self.journal_path.read_text(encoding="utf-8")
                except OSError as err:
                    raise StorageError(f"{self.journal_path} is not readable ({err})") from err
                for line in text.splitlines():
                    try:  # a line cut short by a crash while it was appended is left out
                        e = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(e, dict):
                        lines.append(e)
            self._journal, self._journal_stat = lines, st
        return self._journal

    @contextlib.contextmanager
    def _locked(self):
        """This process's lock and the folder's file lock, with the state read afresh."""
        with self._lock:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                try:
                    import fcntl

                    fcntl.flock(fd, fcntl.LOCK_EX)
                except ImportError:  # no fcntl (Windows): this process's lock only
                    pass
                self._refresh()
                yield
            finally:
                os.close(fd)  # closing releases the flock

    def _write_json(self, path: Path, obj) -> None:
        """``obj`` as JSON in ``path``, atomically (temporary file, fsync, rename, the folder fsynced)."""
        from chromoseg.atomic import atomic_path

        text = json.dumps(obj, separators=(",", ":"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        _fsync_dir(path.parent)

    def _prepare_writes(self) -> None:
        """Before the first write: ``review.json`` (format 2) made, or a format-1 one moved into the
        per-metaphase files (its entries, then its journal, then ``review.json`` itself, so an interrupted
        move is simply made again)."""
        if self._legacy is None and self._meta is not None:
            return
        try:
            meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
                    "results_sha256": (self._meta or {}).get("results_sha256") or self.results_sha256}
            if self._legacy is not None:
                for key, entry in self._legacy["images"].items():
                    self._write_json(self._entry_path(int(key)), entry)
                from chromoseg.atomic import atomic_path

                self.state_dir.mkdir(parents=True, exist_ok=True)
                with atomic_path(self.journal_path) as tmp:
                    with open(tmp, "w", encoding="utf-8") as fh:
                        fh.write("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in self._legacy["journal"]))
                        fh.flush()
                        os.fsync(fh.fileno())
                meta["moved_from_format"] = 1
            self._write_json(self.state_path, meta)
        except OSError as err:
            raise StorageError(f"could not write in {self.dir} ({err}); the edit was not made") from err
        self._meta_stat = None
        self._refresh()

    @property
    def version(self) -> int:
        """How many edits were saved in this folder (the journal's length)."""
        with self._lock:
            self._refresh()
            return len(self._journal_entries())

    def snapshot(self, iid) -> dict:
        """A copy of one metaphase's current state: ``instances``, ``version``, ``reviewed``,
        ``undo`` / ``redo`` (the labels of the steps), ``edited`` (it has an entry in review.json)."""
        img = self.image(iid)
        with self._lock:
            self._refresh()
            e = self._entry(img["id"])
            if e is None:
                return {"instances": copy.deepcopy(self._base[img["id"]]), "version": 0, "reviewed": None,
                        "undo": [], "redo": [], "edited": False}
            return {"instances": copy.deepcopy(e["instances"]), "version": int(e["version"]),
                    "reviewed": copy.deepcopy(e.get("reviewed")), "undo": [d.get("label", "") for d in e["undo"]],
                    "redo": [d.get("label", "") for d in e["redo"]], "edited": True}

    def summary_state(self) -> dict[int, dict]:
        """Per image id: ``version``, ``reviewed`` and the instances' class fields and ``segmentation``
        (not decoded: the not-a-chromosome rule counts their pixels), cheaply."""
        keys = ("id", "category_id", "score", "class_scores", "class_by", "origin", "segmentation")
        with self._lock:
            self._refresh()
            out = {}
            for img in self.images:
                e = self._entry(img["id"])
                insts = e["instances"] if e is not None else self._base[img["id"]]
                out[img["id"]] = {"version": int(e["version"]) if e else 0, "reviewed": e.get("reviewed") if e else None,
                                  "instances": [{k: i.get(k) for k in keys} for i in insts]}
            return out

    def journal(self, iid=None, limit: int = 200) -> list[dict]:
        with self._lock:
            self._refresh()
            j = self._journal_entries()
            if iid is not None:
                iid = self.image(iid)["id"]
                j = [e for e in j if e.get("image_id") == iid]
            return copy.deepcopy(j[-limit:])

    # ----------------------------------------------------------------------------------------- edits
    def edit(self, iid, version, op: dict, user: str | None = None) -> dict:
        """Make one edit on metaphase ``iid`` as of its ``version``; saved before this returns.

        ``op``: ``{"op": "class", "id": I, "category_id": C}``, ``{"op": "delete", "id": I}``,
        ``{"op": "join", "ids": [I, J, ...]}``, ``{"op": "split", "id": I, "line": [[x, y], ...]}``,
        ``{"op": "draw", "polygon": [[x, y], ...], "category_id": C}``, ``{"op": "brush", "stroke":
        [[x, y], ...], "radius": R, "category_id": C}`` (a missed chromosome painted with a round brush
        of R image pixels; see :func:`chromoseg.review.geometry.brush_mask`), ``{"op": "turn", "id": I,
        "top": [x, y]}`` (turn it end for end in the karyogram: the end nearer the image point ``top``
        goes up - the page sends the ``bottom`` of its karyogram placement), ``{"op": "reviewed",
        "reviewed": true|false}``. Returns the new :meth:`snapshot`."""
        user = check_user(user, self.user)
        if not isinstance(op, dict):
            raise ReviewError("an edit is a JSON object with an 'op'")
        img = self.image(iid)
        with self._locked():
            # a shallow copy: the cached entry stays as saved until the new one is (edits replace its lists)
            entry = copy.copy(self._entry(img["id"]) or self._new_entry(img["id"]))
            self._check_version(entry, version)
            diff = self._make_diff(img, entry, op, user)
            self._apply(entry, diff, backwards=False)
            entry["undo"] = (entry["undo"] + [diff])[-MAX_UNDO:]
            entry["redo"] = []
            self._commit(img, entry, diff["op"], diff["label"], user)
        return self.snapshot(img["id"])

    def undo(self, iid, version, user: str | None = None) -> dict:
        """Take back the last edit of ``iid`` (``Conflict`` when ``version`` is stale, ``ReviewError``
        when there is nothing to undo)."""
        return self._step(iid, version, user, "undo")

    def redo(self, iid, version, user: str | None = None) -> dict:
        return self._step(iid, version, user, "redo")

    def _step(self, iid, version, user, which: str) -> dict:
        user = check_user(user, self.user)
        img = self.image(iid)
        with self._locked():
            entry = copy.copy(self._entry(img["id"]) or self._new_entry(img["id"]))
            self._check_version(entry, version)
            if not entry[which]:
                raise ReviewError(f"nothing to {which}")
            entry[which] = list(entry[which])
            diff = entry[which].pop()
            self._apply(entry, diff, backwards=which == "undo")
            other = "redo" if which == "undo" else "undo"
            entry[other] = (entry[other] + [diff])[-MAX_UNDO:]
            self._commit(img, entry, which, f"{which}: {diff.get('label', '')}", user)
        return self.snapshot(img["id"])

    def _new_entry(self, iid: int) -> dict:
        base = self._base[iid]
        return {"version": 0, "next_id": max((i["id"] for i in base), default=0) + 1, "reviewed": None,
                "instances": copy.deepcopy(base), "undo": [], "redo": []}

    @staticmethod
    def _check_version(entry: dict, version) -> None:
        if type(version) is not int:
            raise ReviewError("'version' (an integer: the metaphase's version the edit was made on) is required")
        if version != int(entry["version"]):
            raise Conflict(f"this metaphase was changed elsewhere (version {entry['version']}, the edit was made on "
                           f"version {version}): reload it and make the edit again", version=int(entry["version"]))

    def _commit(self, img: dict, entry: dict, op: str, label: str, user: str) -> None:
        """Save the metaphase's new state (atomically), then append its journal line."""
        self._prepare_writes()
        iid = img["id"]
        entry["version"] = int(entry["version"]) + 1
        path = self._entry_path(iid)
        try:
            self._write_json(path, entry)
        except OSError as err:
            self._entries.pop(iid, None)  # read the file again next time
            self._entry_stats.pop(iid, None)
            raise StorageError(f"could not save {path} ({err}); the edit was not made") from err
        self._entries[iid], self._entry_stats[iid] = entry, _stat_of(path)
        journal = self._journal_entries()
        line = {"seq": (int(journal[-1].get("seq", len(journal))) if journal else 0) + 1, "at": now_iso(), "by": user,
                "image_id": iid, "file_name": img["file_name"], "op": op, "label": label,
                "image_version": entry["version"]}
        try:
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, (json.dumps(line, separators=(",", ":")) + "\n").encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:  # the edit itself is saved (its diff says who and when)
            self.warnings.append(f"the journal {self.journal_path} could not be written ({err.strerror or err})")
            return
        journal.append(line)
        self._journal_stat = _stat_of(self.journal_path)

    @staticmethod
    def _apply(entry: dict, diff: dict, backwards: bool) -> None:
        remove, add = (diff["add"], diff["remove"]) if backwards else (diff["remove"], diff["add"])
        have = {i["id"] for i in entry["instances"]}
        gone = {i["id"] for i in remove}
        if not gone <= have or (have - gone) & {i["id"] for i in add}:
            raise StorageError("review.json is inconsistent with this step (instances missing or present twice)")
        insts = [i for i in entry["instances"] if i["id"] not in gone] + copy.deepcopy(add)
        entry["instances"] = sorted(insts, key=lambda i: i["id"])
        if "reviewed" in diff:
            entry["reviewed"] = copy.deepcopy(diff["reviewed"][0 if backwards else 1])

    def _find(self, entry: dict, inst_id) -> dict:
        if type(inst_id) is not int:
            raise ReviewError(f"instance id {inst_id!r}: expected an integer")
        for i in entry["instances"]:
            if i["id"] == inst_id:
                return i
        raise NotFound(f"no chromosome #{inst_id} in this metaphase (deleted or joined?)")

    def _make_diff(self, img: dict, entry: dict, op: dict, user: str) -> dict:
        from chromoseg.review import geometry

        kind = op.get("op")
        allowed = {"class": {"id", "category_id"}, "delete": {"id"}, "join": {"ids"}, "split": {"id", "line"},
                   "draw": {"polygon", "category_id"}, "brush": {"stroke", "radius", "category_id"},
                   "turn": {"id", "top"}, "reviewed": {"reviewed"}}
        if kind not in allowed:
            raise ReviewError(f"op {kind!r}: use one of {', '.join(allowed)}")
        extra = set(op) - allowed[kind] - {"op", "version"}
        if extra:
            raise ReviewError(f"op {kind!r}: unknown field(s) {', '.join(sorted(map(str, extra)))}")
        missing = allowed[kind] - set(op)
        if missing:
            raise ReviewError(f"op {kind!r}: missing field(s) {', '.join(sorted(missing))}")
        H, W = img["height"], img["width"]
        at = now_iso()
        diff = {"op": kind, "by": user, "at": at, "remove": [], "add": []}
        if kind == "class":
            c = check_class(op["category_id"])
            old = self._find(entry, op["id"])
            new = dict(copy.deepcopy(old), category_id=c, class_by=user, class_at=at)
            new.setdefault("model_category_id", old.get("category_id"))
            diff.update(remove=[old], add=[new],
                        label=f"#{old['id']}: class {class_label(old.get('category_id'))} -> {class_label(c)}")
        elif kind == "delete":
            old = self._find(entry, op["id"])
            diff.update(remove=[old], label=f"#{old['id']} ({class_label(old.get('category_id'))}) deleted")
        elif kind == "join":
            ids = op["ids"]
            if not isinstance(ids, list) or not 2 <= len(ids) <= MAX_JOIN or len(set(map(repr, ids))) != len(ids):
                raise ReviewError(f"join: 'ids' must list 2 to {MAX_JOIN} different chromosome ids")
            olds = [self._find(entry, i) for i in ids]
            mask = geometry.decode(olds[0], H, W)
            for o in olds[1:]:
                mask |= geometry.decode(o, H, W)
            if not mask.any():
                raise ReviewError("join: these chromosomes have no pixels")
            scores = [float(o["score"]) for o in olds if isinstance(o.get("score"), (int, float))]
            new = {"id": entry["next_id"], "category_id": olds[0].get("category_id", 0),
                   "score": max(scores) if scores else 1.0, **geometry.instance_geometry(mask), "origin": "join",
                   "joined_from": [o["id"] for o in olds], "edited_by": user, "edited_at": at}
            if olds[0].get("class_by"):
                new["class_by"] = olds[0]["class_by"]
            entry["next_id"] += 1
            diff.update(remove=olds, add=[new],
                        label=f"joined {' + '.join('#%d' % o['id'] for o in olds)} into #{new['id']}")
        elif kind == "split":
            old = self._find(entry, op["id"])
            try:
                pieces = geometry.split_mask(geometry.decode(old, H, W), op["line"])
            except GeometryError as err:
                raise ReviewError(f"split: {err}") from None
            news = []
            for m in pieces:
                news.append({k: copy.deepcopy(v) for k, v in old.items() if k in ("category_id", "score", "class_scores",
                                                                                "class_by", "model_category_id")}
                            | {"id": entry["next_id"], **geometry.instance_geometry(m), "origin": "split",
                               "split_from": old["id"], "edited_by": user, "edited_at": at})
                entry["next_id"] += 1
            diff.update(remove=[old], add=news,
                        label=f"split #{old['id']} into {', '.join('#%d' % n['id'] for n in news)}")
        elif kind in ("draw", "brush"):
            c = check_class(op["category_id"])
            try:
                if kind == "draw":
                    mask = geometry.polygon_mask(op["polygon"], H, W)
                else:
                    mask = geometry.brush_mask(op["stroke"], op["radius"], H, W)
            except GeometryError as err:
                raise ReviewError(f"{kind}: {err}") from None
            if mask.sum() < MIN_DRAWN_AREA:
                raise ReviewError(f"{kind}: the {'outline encloses' if kind == 'draw' else 'stroke covers'} fewer than "
                                  f"{MIN_DRAWN_AREA} pixels of the image")
            new = {"id": entry["next_id"], "category_id": c, "score": 1.0, **geometry.instance_geometry(mask),
                   "origin": "drawn", "class_by": user, "class_at": at, "edited_by": user, "edited_at": at}
            if kind == "brush":
                new["drawn_with"] = "brush"
            entry["next_id"] += 1
            diff.update(add=[new], label=f"{'drew' if kind == 'draw' else 'brushed'} #{new['id']} ({class_label(c)})")
        elif kind == "turn":
            old = self._find(entry, op["id"])
            try:
                top = geometry.check_points([op["top"]], "top", 1)[0]
            except GeometryError as err:
                raise ReviewError(f"turn: {err}") from None
            if not (0 <= top[0] <= W and 0 <= top[1] <= H):
                raise ReviewError(f"turn: the point {top.tolist()} lies outside the {W} x {H} image")
            new = dict(copy.deepcopy(old), top_end=[round(float(v), 2) for v in top], turned_by=user, turned_at=at)
            diff.update(remove=[old], add=[new], label=f"#{old['id']} ({class_label(old.get('category_id'))}) "
                                                       "turned end for end")
        elif kind == "reviewed":
            flag = op["reviewed"]
            if type(flag) is not bool:
                raise ReviewError("reviewed: expected true or false")
            old = copy.deepcopy(entry.get("reviewed"))
            new = {"by": user, "at": at} if flag else None
            diff.update(reviewed=[old, new], label="marked reviewed" if flag else "review mark taken back")
        return diff
