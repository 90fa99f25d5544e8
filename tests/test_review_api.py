"""``chromoseg review``: the JSON API with Starlette's test client and against a real server on
localhost: edits (class, delete, join, split, draw, turn, reviewed), undo/redo, the karyogram
straightened or as cut, saving and reloading, version conflicts, the token, path traversal,
validation, size limits and the export (read back by chromoseg's dataset loader). The predict folder is synthetic (no model is run)."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from starlette.testclient import TestClient  # noqa: E402

from chromoseg.review.app import create_app, safe_file  # noqa: E402
from chromoseg.review.store import Conflict, ReviewStore  # noqa: E402

TOKEN = "test-token-0123456789abcdef"
H, W = 160, 200
#: the synthetic metaphase's chromosomes: (class, rows, cols) of a rectangle
RODS = [(1, (20, 28), (20, 70)), (1, (40, 100), (100, 108)), (7, (120, 128), (20, 60)), (7, (120, 128), (62, 100)),
        (23, (40, 48), (140, 190))]


def make_predict_folder(root: Path) -> Path:
    """A tiny ``chromoseg predict`` output: one 200 x 160 fluorescence-like metaphase with five
    rectangular chromosomes (classes 1, 1, 7, 7, X) in results.json / images.json, no model run."""
    from PIL import Image

    from chromoseg.data.classes import coco_categories
    from chromoseg.data.coco import derive_geometry, encode_mask, mask_bbox

    out = root / "pred"
    out.mkdir(parents=True)
    img = np.full((H, W), 20, np.uint8)
    results = []
    for k, (c, (y0, y1), (x0, x1)) in enumerate(RODS):
        m = np.zeros((H, W), bool)
        m[y0:y1, x0:x1] = True
        img[m] = 200
        rbox, ends = derive_geometry(m)
        scores = [0.002] * 24
        scores[c - 1] = 0.9
        results.append({"image_id": 1, "file_name": str(root / "meta.png"), "category_id": c,
                        "score": 0.95 - 0.3 * (k == 2), "segmentation": encode_mask(m), "bbox": mask_bbox(m),
                        "rbox": rbox, "endpoints": ends, "area": int(m.sum()), "class_scores": scores})
    Image.fromarray(img).save(root / "meta.png")
    (out / "results.json").write_text(json.dumps(results))
    (out / "images.json").write_text(json.dumps({"images": [
        {"id": 1, "file_name": str(root / "meta.png"), "height": H, "width": W, "instances": len(RODS),
         "stem": "meta", "summary": "5,X,?", "flags": []}], "categories": coco_categories()}))
    (out / "report.html").write_text("<html><body>report</body></html>")
    return out


@pytest.fixture
def folder(tmp_path):
    return make_predict_folder(tmp_path)


@pytest.fixture
def client(folder):
    app = create_app(folder, token=TOKEN, user="tester")
    with TestClient(app, headers={"X-Chromoseg-Token": TOKEN}) as c:
        yield c


def edit(client, version, **op):
    return client.post("/api/images/1/edit", json={"version": version, **op})


def saved(folder: Path) -> dict:
    """What the store wrote (format 2): ``{"images": {"<id>": review/<id>.json}, "journal": review/journal.jsonl's lines}``."""
    meta = json.loads((folder / "review.json").read_text())
    assert meta["format"] == "chromoseg-review" and meta["format_version"] == 2
    d = folder / "review"
    images = {p.stem: json.loads(p.read_text()) for p in d.glob("*.json")}
    journal = [json.loads(line) for line in (d / "journal.jsonl").read_text().splitlines()]
    return {"images": images, "journal": journal}


def nothing_saved(folder: Path) -> bool:
    return not (folder / "review.json").exists() and not (folder / "review").exists()


def labels(view) -> dict[int, str]:
    return {i["id"]: i["label"] for i in view["instances"]}


# ------------------------------------------------------------------------------------------ reading
def test_batch_and_view(client):
    b = client.get("/api/batch").json()
    assert [im["id"] for im in b["images"]] == [1] and b["images"][0]["flagged"]
    v = client.get("/api/images/1").json()
    assert (v["width"], v["height"], v["version"]) == (W, H, 0)
    assert labels(v) == {1: "1", 2: "1", 3: "7", 4: "7", 5: "X"}
    assert v["karyotype"]["summary"].startswith("5,X")
    first = v["instances"][0]
    assert first["outlines"] and len(first["outlines"][0]) >= 8  # a rectangle's contour: 4 corners
    xs, ys = first["outlines"][0][0::2], first["outlines"][0][1::2]
    assert (min(xs), max(xs), min(ys), max(ys)) == (20, 69, 20, 27)  # pixel indices of the rod's border
    assert client.get("/api/images/1/image.png").content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/api/images/1/karyogram.png").content[:4] == b"\x89PNG"
    lay = client.get("/api/images/1/karyogram.json").json()
    assert sorted(p["id"] for p in lay["placements"]) == [1, 2, 3, 4, 5]
    page = client.get("/")
    assert page.status_code == 200 and TOKEN in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert client.get("/api/images/2").status_code == 404


# ------------------------------------------------------------------------------------------ edits
def test_class_change_updates_the_karyotype_and_journal(client, folder):
    r = client.post("/api/images/1/edit", json={"version": 0, "op": "class", "id": 5, "category_id": 24},
                    headers={"X-Chromoseg-User": urllib.parse.quote("Dr. Ünal")})
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["version"] == 1 and labels(v)[5] == "Y"
    assert "X" not in v["karyotype"]["summary"].split(",")[1] or v["karyotype"]["sex"] == "Y"
    assert v["karyotype"]["sex"] == "Y" and v["undo"] == "#5: class X -> Y"
    state = saved(folder)
    entry = state["journal"][-1]
    assert entry["by"] == "Dr. Ünal" and entry["op"] == "class" and entry["at"].endswith("Z")
    inst = next(i for i in state["images"]["1"]["instances"] if i["id"] == 5)
    assert (inst["category_id"], inst["class_by"], inst["model_category_id"]) == (24, "Dr. Ünal", 23)
    # with the page's default user
    v = edit(client, 1, op="class", id=1, category_id=2).json()
    assert v["history"][0]["by"] == "tester"


def test_delete_join_split_draw_undo_redo(client):
    v = edit(client, 0, op="delete", id=2).json()
    assert 2 not in labels(v) and v["karyotype"]["total"] == 4
    v = edit(client, 1, op="join", ids=[3, 4]).json()
    assert sorted(labels(v)) == [1, 5, 6] and labels(v)[6] == "7"
    joined = next(i for i in v["instances"] if i["id"] == 6)
    assert joined["area"] == 8 * 40 + 8 * 38 and joined["origin"] == "join"
    # split the joined one again along a vertical line at x = 61
    v = edit(client, 2, op="split", id=6, line=[[61.5, 110], [61.5, 140]]).json()
    pieces = [i for i in v["instances"] if i["id"] in (7, 8)]
    assert len(pieces) == 2 and sum(p["area"] for p in pieces) == 8 * 40 + 8 * 38
    assert all(p["label"] == "7" for p in pieces)
    v = edit(client, 3, op="draw", polygon=[[120, 130], [180, 130], [180, 150], [120, 150]], category_id=22).json()
    drawn = next(i for i in v["instances"] if i["origin"] == "drawn")
    assert drawn["label"] == "22" and drawn["id"] == 9 and drawn["area"] == 60 * 20
    v = edit(client, 4, op="reviewed", reviewed=True).json()
    assert v["reviewed"]["by"] == "tester" and v["karyotype"]["weak"] == []
    # undo everything, back to the prediction
    for n in range(5, 10):
        r = client.post("/api/images/1/undo", json={"version": n})
        assert r.status_code == 200, r.text
    v = r.json()
    assert labels(v) == {1: "1", 2: "1", 3: "7", 4: "7", 5: "X"} and v["reviewed"] is None and v["undo"] is None
    assert client.post("/api/images/1/undo", json={"version": 10}).status_code == 400  # nothing to undo
    v = client.post("/api/images/1/redo", json={"version": 10}).json()
    assert 2 not in labels(v) and v["redo"] == "joined #3 + #4 into #6"
    v = client.post("/api/images/1/redo", json={"version": 11}).json()
    assert 6 in labels(v)
    v = edit(client, 12, op="class", id=6, category_id=8).json()  # a new edit empties the redo list
    assert v["redo"] is None and labels(v)[6] == "8"


def test_brush_paints_a_missed_chromosome(client, folder):
    # a horizontal stroke from x 120 to 180 at y 140, radius 4: a 60 x 8 band with round ends
    v = edit(client, 0, op="brush", stroke=[[120.5, 140.5], [150.5, 140.5], [180.5, 140.5]], radius=4,
             category_id=21).json()
    new = next(i for i in v["instances"] if i["origin"] == "drawn")
    assert new["label"] == "21" and new["id"] == 6 and v["undo"] == "brushed #6 (21)"
    assert abs(new["area"] - (60 * 9 + 3.14 * 16)) < 60
    xs, ys = new["outlines"][0][0::2], new["outlines"][0][1::2]
    assert 114 <= min(xs) <= 117 and 183 <= max(xs) <= 186 and 135 <= min(ys) <= 137 and 143 <= max(ys) <= 145
    # a ring of strokes around an outline takes its inside too
    ring = [[60 + 15 * np.cos(t), 140 + 10 * np.sin(t)] for t in np.linspace(0, 2 * np.pi, 40)]
    v = edit(client, 1, op="brush", stroke=[[float(x), float(y)] for x, y in ring], radius=2, category_id=22).json()
    filled = next(i for i in v["instances"] if i["id"] == 7)
    assert filled["area"] > 3.14 * 15 * 10  # the inside too, not only the 4-px-wide ring
    state = saved(folder)
    assert next(i for i in state["images"]["1"]["instances"] if i["id"] == 6)["drawn_with"] == "brush"
    # a drawn chromosome is a confirmed one: its class is not weak evidence
    assert 6 not in v["karyotype"]["weak"]
    v = client.post("/api/images/1/undo", json={"version": 2}).json()
    assert 7 not in labels(v) and 6 in labels(v)


def test_turn_end_for_end_and_the_straightened_switch(client, folder):
    """The karyogram's layout says which image point is shown at each chromosome's top and bottom;
    a turn sends the bottom as the new top, the karyogram then shows it the other way up (straightened
    or as cut), undo takes it back, the export keeps it (``top_end``)."""
    lay = client.get("/api/images/1/karyogram.json").json()
    assert lay["straighten"] is True
    plain = client.get("/api/images/1/karyogram.json", params={"straight": 0}).json()
    assert plain["straighten"] is False and not any(p["straightened"] for p in plain["placements"])
    assert client.get("/api/images/1/karyogram.json", params={"straight": "maybe"}).status_code == 400
    assert client.get("/api/images/1/karyogram.png", params={"straight": 0}).content[:4] == b"\x89PNG"
    p = next(q for q in lay["placements"] if q["id"] == 1)  # the rod at rows 20-27, columns 20-69
    ends = sorted([p["top"], p["bottom"]])
    assert ends[0][0] < 23 and ends[1][0] > 67 and all(20 <= e[1] <= 28 for e in ends)
    r = edit(client, 0, op="turn", id=1, top=p["bottom"])
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["undo"] == "#1 (1) turned end for end" and v["instances"][0]["turned_by"] == "tester"
    for straight in (1, 0):
        after = client.get("/api/images/1/karyogram.json", params={"straight": straight, "v": 1}).json()
        q = next(q for q in after["placements"] if q["id"] == 1)
        assert np.allclose(q["top"], p["bottom"], atol=2), (straight, q, p)
    state = saved(folder)
    inst = next(i for i in state["images"]["1"]["instances"] if i["id"] == 1)
    assert inst["top_end"] == [round(v, 2) for v in p["bottom"]]
    edit(client, 1, op="reviewed", reviewed=True)
    client.post("/api/export", json={})
    res = json.loads((folder / "reviewed" / "results.json").read_text())
    turned = [r for r in res if r.get("top_end")]
    assert len(turned) == 1 and turned[0]["review"]["turned_by"] == "tester"
    v = client.post("/api/images/1/undo", json={"version": 2}).json()
    v = client.post("/api/images/1/undo", json={"version": 3}).json()
    assert v["undo"] is None
    back = client.get("/api/images/1/karyogram.json", params={"v": 4}).json()
    assert next(q for q in back["placements"] if q["id"] == 1)["top"] == p["top"]


def test_edits_are_saved_and_found_after_a_reload(folder, client):
    edit(client, 0, op="class", id=3, category_id=8)
    edit(client, 1, op="delete", id=1)
    # a new server on the same folder (a restart) finds them
    app2 = create_app(folder, token=TOKEN)
    with TestClient(app2, headers={"X-Chromoseg-Token": TOKEN}) as c2:
        v = c2.get("/api/images/1").json()
        assert labels(v) == {2: "1", 3: "8", 4: "7", 5: "X"} and v["version"] == 2
        assert v["undo"] == "#1 (1) deleted"
        b = c2.get("/api/batch").json()["images"][0]
        assert b["version"] == 2 and b["summary"] == v["karyotype"]["summary"]
        j = c2.get("/api/journal", params={"image_id": 1}).json()["journal"]
        assert [e["op"] for e in j] == ["class", "delete"] and all(e["by"] == "tester" for e in j)
    assert not list(folder.glob("**/.*.tmp"))  # no temporary file left behind


def test_an_edit_writes_only_its_metaphase(tmp_path):
    """Two metaphases: editing the first leaves the second's file as it was (saving does not grow with
    the number of edited metaphases), and a journal line cut short by a crash is left out."""
    folder = make_predict_folder(tmp_path)
    meta = json.loads((folder / "images.json").read_text())
    second = dict(meta["images"][0], id=2, file_name=str(tmp_path / "meta2.png"), stem="meta2")
    (tmp_path / "meta2.png").write_bytes((tmp_path / "meta.png").read_bytes())
    meta["images"].append(second)
    (folder / "images.json").write_text(json.dumps(meta))
    results = json.loads((folder / "results.json").read_text())
    results += [dict(r, image_id=2, file_name=second["file_name"]) for r in results]
    (folder / "results.json").write_text(json.dumps(results))
    store = ReviewStore(folder, user="a")
    store.edit(2, 0, {"op": "delete", "id": 1})
    before = (folder / "review" / "2.json").stat()
    store.edit(1, 0, {"op": "class", "id": 1, "category_id": 4})
    store.edit(1, 1, {"op": "class", "id": 1, "category_id": 5})
    after = (folder / "review" / "2.json").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    with open(folder / "review" / "journal.jsonl", "a") as fh:
        fh.write('{"seq": 4, "by": "cut sh')  # a crash while a line was appended
    other = ReviewStore(folder)
    assert [e["seq"] for e in other.journal()] == [1, 2, 3] and other.version == 3
    assert {i["id"] for i in other.snapshot(2)["instances"]} == {2, 3, 4, 5}
    assert other.snapshot(1)["instances"][0]["category_id"] == 5


def test_a_format_1_review_file_is_read_and_moved(folder):
    """review.json as the first version wrote it (every metaphase and the journal in it) is read as it
    is; the next edit moves it into review/ and carries on (versions, undo, journal)."""
    store = ReviewStore(folder, user="old")
    store.edit(1, 0, {"op": "class", "id": 5, "category_id": 24})
    store.edit(1, 1, {"op": "delete", "id": 2})
    state = saved(folder)
    v1 = {"format": "chromoseg-review", "format_version": 1, "version": 2, "results_sha256": "x" * 64,
          "images": state["images"], "journal": state["journal"]}
    import shutil

    shutil.rmtree(folder / "review")
    (folder / "review.json").write_text(json.dumps(v1))
    old = ReviewStore(folder, user="new")
    assert any("results.json changed" in w for w in old.warnings)  # the sha recorded in the old file
    snap = old.snapshot(1)
    assert snap["version"] == 2 and snap["undo"] == ["#5: class X -> Y", "#2 (1) deleted"]
    assert old.version == 2 and [e["by"] for e in old.journal()] == ["old", "old"]
    old.undo(1, 2)
    state = saved(folder)
    assert json.loads((folder / "review.json").read_text()).get("moved_from_format") == 1
    assert "images" not in json.loads((folder / "review.json").read_text())
    assert [e["seq"] for e in state["journal"]] == [1, 2, 3] and state["journal"][-1]["by"] == "new"
    assert {i["id"] for i in state["images"]["1"]["instances"]} == {1, 2, 3, 4, 5}
    assert ReviewStore(folder).snapshot(1)["version"] == 3


def test_stale_version_is_refused_with_409(client, folder):
    assert edit(client, 0, op="class", id=1, category_id=3).status_code == 200
    r = edit(client, 0, op="delete", id=2)  # a second tab that still shows version 0
    assert r.status_code == 409 and r.json()["version"] == 1
    assert client.post("/api/images/1/undo", json={"version": 0}).status_code == 409
    v = client.get("/api/images/1").json()
    assert labels(v)[1] == "3" and 2 in labels(v) and v["version"] == 1


def test_two_servers_on_one_folder_take_turns(folder):
    """Two stores (as two processes would) on one folder: the second reads the first's edit before
    its own and refuses its stale one; neither overwrites the other."""
    a, b = ReviewStore(folder, user="a"), ReviewStore(folder, user="b")
    assert b.snapshot(1)["version"] == 0
    a.edit(1, 0, {"op": "class", "id": 1, "category_id": 4})
    with pytest.raises(Conflict):
        b.edit(1, 0, {"op": "delete", "id": 2})
    b.edit(1, 1, {"op": "delete", "id": 2})
    snap = ReviewStore(folder).snapshot(1)
    assert {i["id"]: i["category_id"] for i in snap["instances"]} == {1: 4, 3: 7, 4: 7, 5: 23}
    assert [e["by"] for e in ReviewStore(folder).journal()] == ["a", "b"]


@pytest.mark.parametrize("op,status", [
    ({"op": "class", "id": 1, "category_id": 0}, 400),
    ({"op": "class", "id": 1, "category_id": 25}, 400),
    ({"op": "class", "id": 1, "category_id": "7"}, 400),
    ({"op": "class", "id": 1, "category_id": 7.0}, 400),
    ({"op": "class", "id": 1, "category_id": True}, 400),
    ({"op": "class", "id": 99, "category_id": 7}, 404),
    ({"op": "class", "id": "1", "category_id": 7}, 400),
    ({"op": "class", "id": 1}, 400),
    ({"op": "class", "id": 1, "category_id": 7, "extra": 1}, 400),
    ({"op": "delete", "id": 42}, 404),
    ({"op": "join", "ids": [1, 1]}, 400),
    ({"op": "join", "ids": [1]}, 400),
    ({"op": "join", "ids": [1, 77]}, 404),
    ({"op": "split", "id": 1, "line": [[0, 0], [1, 1]]}, 400),  # does not cross the chromosome
    ({"op": "split", "id": 1, "line": [[0, 0]]}, 400),
    ({"op": "draw", "polygon": [[0, 0], [1, 0]], "category_id": 3}, 400),
    ({"op": "draw", "polygon": [[0, 0], ["a", 0], [1, 1]], "category_id": 3}, 400),
    ({"op": "draw", "polygon": [[10, 10], [30, 10], [30, 30]], "category_id": 0}, 400),
    ({"op": "brush", "stroke": [[10, 10]], "category_id": 3}, 400),  # no radius
    ({"op": "brush", "stroke": [[10, 10]], "radius": 0, "category_id": 3}, 400),
    ({"op": "brush", "stroke": [[10, 10]], "radius": 500, "category_id": 3}, 400),
    ({"op": "brush", "stroke": [[10, 10]], "radius": True, "category_id": 3}, 400),
    ({"op": "brush", "stroke": [], "radius": 4, "category_id": 3}, 400),
    ({"op": "brush", "stroke": [[-500, -500], [-400, -500]], "radius": 4, "category_id": 3}, 400),  # outside
    ({"op": "brush", "stroke": [[10, 10]], "radius": 4, "category_id": 25}, 400),
    ({"op": "turn", "id": 1}, 400),
    ({"op": "turn", "id": 1, "top": [10, "a"]}, 400),
    ({"op": "turn", "id": 1, "top": [10, 10, 10]}, 400),
    ({"op": "turn", "id": 1, "top": [W + 5, 10]}, 400),  # outside the image
    ({"op": "turn", "id": 9, "top": [10, 10]}, 404),
    ({"op": "reviewed", "reviewed": "yes"}, 400),
    ({"op": "rename"}, 400),
])
def test_edits_are_validated(client, folder, op, status):
    r = client.post("/api/images/1/edit", json={"version": 0, **op})
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert nothing_saved(folder)  # nothing was written


def test_bad_requests(client):
    assert client.post("/api/images/1/edit", json={"op": "delete", "id": 1}).status_code == 400  # no version
    assert client.post("/api/images/1/edit", json={"version": "0", "op": "delete", "id": 1}).status_code == 400
    assert client.post("/api/images/1/edit", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/api/images/1/edit", content=b"version=0", headers={"content-type": "text/plain"}).status_code == 400
    assert client.post("/api/images/1/edit", json=[1, 2]).status_code == 400
    r = client.post("/api/images/1/edit", content=b'{"version": 0, "op": "draw", "category_id": 3, '
                    b'"polygon": [[NaN, 0], [5, 5], [9, 0]]}', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert client.post("/api/images/7/edit", json={"version": 0, "op": "delete", "id": 1}).status_code == 404
    assert client.request("DELETE", "/api/images/1").status_code == 405
    assert client.post("/api/export", json={"all": True}).status_code == 400


def test_request_size_limits(folder):
    app = create_app(folder, token=TOKEN, max_body=4096)
    with TestClient(app, headers={"X-Chromoseg-Token": TOKEN}) as c:
        big = {"version": 0, "op": "draw", "category_id": 3, "polygon": [[1.5, 2.5]] * 2000}
        r = c.post("/api/images/1/edit", json=big)
        assert r.status_code == 413 and "4096" in r.json()["error"]

        def chunks():  # no Content-Length: counted while it arrives
            for _ in range(10):
                yield b" " * 1000
        r = c.post("/api/images/1/edit", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert edit(c, 0, op="delete", id=1).status_code == 200  # small ones pass
    assert not any(e["op"] == "draw" for e in ReviewStore(folder).journal())


# ------------------------------------------------------------------------------------------ security
def test_token_is_required_on_every_request(folder):
    app = create_app(folder, token=TOKEN)
    with TestClient(app) as c:
        for path in ("/", "/api/batch", "/api/images/1", "/api/images/1/image.png", "/static/app.js",
                     "/files/report.html", "/no/such/page"):
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"X-Chromoseg-Token": "wrong-" + TOKEN}).status_code == 401, path
        assert c.post("/api/images/1/edit", json={"version": 0, "op": "delete", "id": 1}).status_code == 401
        assert c.get("/api/batch", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/api/batch", params={"token": TOKEN}).status_code == 200
        # the printed address sets the cookie and takes the token out of the address bar
        r = c.get("/", params={"token": TOKEN}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
        assert c.get("/api/batch").status_code == 200  # the cookie now
        # a change needs the header: the cookie alone (what a forged cross-site request would carry) is refused
        r = c.post("/api/images/1/edit", json={"version": 0, "op": "delete", "id": 1})
        assert r.status_code == 403
        r = c.post("/api/images/1/edit", json={"version": 0, "op": "delete", "id": 1}, params={"token": TOKEN})
        assert r.status_code == 403
    assert nothing_saved(folder)


def test_only_files_of_the_folder_are_served(client, folder, tmp_path):
    assert client.get("/files/report.html").text.startswith("<html>")
    assert client.get("/files/results.json").status_code == 200
    (tmp_path / "secret.txt").write_text("secret")
    (folder / "link.txt").symlink_to(tmp_path / "secret.txt")
    for raw in ("/files/..%2Fsecret.txt", "/files/%2e%2e/secret.txt", "/files/%2E%2E%2Fsecret.txt",
                "/files/sub/..%2F..%2Fsecret.txt", "/files/%2Fetc%2Fpasswd", "/files/.review.lock",
                "/files/link.txt", "/files/..%5Csecret.txt"):
        r = client.get(raw)
        assert r.status_code in (403, 404), raw
        assert "secret" not in r.text, raw
    assert client.get("/files/%2e%2e/secret.txt").status_code == 403
    for bad in ("../secret.txt", "/etc/passwd", "a/../../secret.txt", ".review.lock", "link.txt", "..\\secret.txt",
                "x\x00y", "C:/x"):
        with pytest.raises(Exception) as err:
            safe_file(folder, bad)
        assert getattr(err.value, "status", None) in (403, 404), bad
    assert safe_file(folder, "report.html") == (folder / "report.html").resolve()


# ------------------------------------------------------------------------------------------ export
def test_export_is_readable_by_the_dataset_loader(client, folder):
    from chromoseg.data.coco import load_coco
    from chromoseg.data.dataset import ChromosomeDataset
    from chromoseg.data.report import ProblemLog

    edit(client, 0, op="class", id=5, category_id=24)
    edit(client, 1, op="delete", id=2)
    edit(client, 2, op="join", ids=[3, 4])
    r = client.post("/api/export", json={})
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["reviewed"] == 0 and s["dataset_images"] == 0  # nothing marked reviewed yet
    edit(client, 3, op="reviewed", reviewed=True)
    s = client.post("/api/export", json={}).json()
    assert (s["reviewed"], s["dataset_images"], s["dataset_annotations"]) == (1, 1, 3) and not s["problems"]
    out = folder / "reviewed"
    for name in ("results.json", "images.json", "dataset.json", "meta.karyogram.png", "meta.overlay.png",
                 "meta.labels.tif", "report.html", "report.csv", "export.json"):
        assert (out / name).is_file(), name
    assert "reviewed/dataset.json" in s["files"]
    results = json.loads((out / "results.json").read_text())
    assert sorted(r["category_id"] for r in results) == [1, 7, 24]
    assert next(r for r in results if r["category_id"] == 24)["review"]["class_by"] == "tester"
    meta = json.loads((out / "images.json").read_text())["images"][0]
    assert meta["reviewed"]["by"] == "tester" and meta["summary"].startswith("3,")
    problems = ProblemLog()
    data = load_coco(out / "dataset.json", problems)
    assert not len(problems) and len(data["annotations"]) == 3
    ds = ChromosomeDataset(out / "dataset.json")
    image, target = ds[0]
    assert tuple(image.shape) == (1, H, W)
    assert sorted(target["labels"].tolist()) == [1, 7, 24]
    areas = sorted(int(m.sum()) for m in target["masks"])
    assert areas == sorted([8 * 50, 8 * 40 + 8 * 38, 8 * 50])
    assert client.get("/files/reviewed/dataset.json").status_code == 200


def test_cli_export_and_help(folder, capsys):
    from chromoseg.cli import main

    ReviewStore(folder, user="cli").edit(1, 0, {"op": "reviewed", "reviewed": True})
    assert main(["review", str(folder), "--export"]) == 0
    assert "1 reviewed" in capsys.readouterr().out
    assert json.loads((folder / "reviewed" / "dataset.json").read_text())["images"]
    assert main(["review", str(folder / "nope"), "--no-browser"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_a_folder_that_is_not_a_predict_output_is_refused(tmp_path):
    from chromoseg.review.store import ReviewError

    with pytest.raises(ReviewError, match="not a chromoseg predict folder"):
        ReviewStore(tmp_path)
    d = make_predict_folder(tmp_path)
    (d / "review.json").write_text("{broken")
    with pytest.raises(ReviewError, match="not readable"):
        ReviewStore(d)
    assert (d / "review.json").read_text() == "{broken"  # never overwritten


# ------------------------------------------------------------------------------------------ a real server
def test_real_server_on_localhost(folder):
    from chromoseg.review.server import ReviewServer

    srv = ReviewServer(create_app(folder, token=TOKEN, user="http"), "127.0.0.1", 0).start()
    try:
        base = f"http://127.0.0.1:{srv.port}"
        assert srv.url() == f"{base}/?token={TOKEN}"

        def call(path, body=None, token=TOKEN):
            req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                         headers={"X-Chromoseg-Token": token, "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())

        status, batch = call("/api/batch")
        assert status == 200 and batch["images"][0]["id"] == 1
        status, v = call("/api/images/1/edit", {"version": 0, "op": "class", "id": 2, "category_id": 23})
        assert status == 200 and labels(v)[2] == "X"
        with pytest.raises(urllib.error.HTTPError) as err:
            call("/api/images/1/edit", {"version": 0, "op": "delete", "id": 1})
        assert err.value.code == 409
        with pytest.raises(urllib.error.HTTPError) as err:
            call("/api/batch", token="nope")
        assert err.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as err:  # the raw path reaches the server unnormalised
            call("/files/../../../etc/passwd")
        assert err.value.code in (403, 404)
    finally:
        srv.stop()
    assert saved(folder)["journal"][0]["by"] == "http"


def test_the_folder_must_be_writable(folder):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    folder.chmod(0o555)
    try:
        from chromoseg.review.store import ReviewError

        with pytest.raises(ReviewError, match="cannot write"):
            ReviewStore(folder)
    finally:
        folder.chmod(0o755)


def test_the_known_karyotype_is_compared(tmp_path):
    """A case_info.txt beside the image (M-FISH's layout) is the known karyotype, as in predict's report."""
    folder = make_predict_folder(tmp_path)
    (tmp_path / "case_info.txt").write_text("46,XX\n")
    app = create_app(folder, token=TOKEN)
    with TestClient(app, headers={"X-Chromoseg-Token": TOKEN}) as c:
        k = c.get("/api/images/1").json()["karyotype"]
        assert k["truth"] == "46,XX" and k["truth_summary"] == "46,XX"
        assert any(f.startswith("truth:") for f in k["flags"])
        assert any(f.startswith("truth:") for f in c.get("/api/batch").json()["images"][0]["flags"])


def test_a_metaphase_with_every_chromosome_deleted(client, folder):
    for n, i in enumerate(range(1, 6)):
        assert edit(client, n, op="delete", id=i).status_code == 200
    v = client.get("/api/images/1").json()
    assert v["instances"] == [] and v["karyotype"]["total"] == 0
    assert client.get("/api/images/1/karyogram.png").status_code == 200
    assert client.get("/api/images/1/karyogram.json").json()["placements"] == []
    edit(client, 5, op="reviewed", reviewed=True)
    s = client.post("/api/export", json={}).json()
    assert s["dataset_images"] == 1 and s["dataset_annotations"] == 0
    assert json.loads((folder / "reviewed" / "results.json").read_text()) == []


def test_the_review_page_leaves_out_what_predict_leaves_out(tmp_path):
    """Issue 30: the review page applies predict's not-a-chromosome rule (the karyotype package's
    function on the current masks): an unedited metaphase shows predict's karyotype line, without the
    nucleus in the counts or the karyogram; a reviewer who sets its class counts it as that class;
    marking the metaphase reviewed does not; the export marks and leaves it out as the page does."""
    import csv

    from test_karyotype_nucleus import predict_nucleus_folder

    folder = predict_nucleus_folder(tmp_path)
    (predicted,) = list(csv.DictReader((folder / "report.csv").open()))
    assert predicted["summary"] == "46,XX"
    app = create_app(folder, token=TOKEN, user="tester")
    with TestClient(app, headers={"X-Chromoseg-Token": TOKEN}) as c:
        (row,) = c.get("/api/batch").json()["images"]
        assert row["summary"] == predicted["summary"] and row["total"] == 46
        v = c.get("/api/images/1").json()
        k = v["karyotype"]
        assert k["summary"] == "46,XX" and k["total"] == 46 and list(k["not_chromosome"]) == ["47"]
        assert any(f.startswith("not_chromosome") for f in k["flags"])
        nucleus = next(i for i in v["instances"] if i["id"] == 47)
        assert "nucleus" in nucleus["not_chromosome"] and nucleus["label"] == "?" and nucleus["category_id"] == 2
        lay = c.get("/api/images/1/karyogram.json").json()
        assert 47 not in {p["id"] for p in lay["placements"]} and len(lay["placements"]) == 46
        # marking it reviewed confirms the page as shown: the nucleus stays out
        v = edit(c, 0, op="reviewed", reviewed=True).json()
        assert v["karyotype"]["summary"] == "46,XX"
        r = c.post("/api/export", json={})
        assert r.status_code == 200
        exported = json.loads((folder / "reviewed" / "results.json").read_text())
        assert [("not_chromosome" in e) for e in exported] == [False] * 46 + [True]
        dataset = json.loads((folder / "reviewed" / "dataset.json").read_text())
        assert len(dataset["annotations"]) == 46
        # a reviewer's word wins over the rule: set its class, and it counts as that class
        v = edit(c, 1, op="class", id=47, category_id=2).json()
        assert v["karyotype"]["summary"] == "47,XX,+2" and v["karyotype"]["not_chromosome"] == {}
        assert c.get("/api/batch").json()["images"][0]["summary"] == "47,XX,+2"
        lay = c.get("/api/images/1/karyogram.json").json()
        assert 47 in {p["id"] for p in lay["placements"]}
