"""The review page's batch list is remembered (issue 27, page open < 2 s) but never stale: an edit,
undo, a reviewed mark or another server's edit on the same folder shows in the next list; two
callers at once (the warm-up and the page) compute it once; the warm-up waits for the page before
its torch import."""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("starlette")

from chromoseg.review.render import Renderer  # noqa: E402
from chromoseg.review.store import ReviewStore  # noqa: E402
from test_review_api import make_predict_folder  # noqa: E402


def test_the_batch_list_follows_every_edit(tmp_path):
    folder = make_predict_folder(tmp_path)
    store = ReviewStore(folder, user="a")
    r = Renderer(store)
    first = r.batch()
    assert r.batch() == first and r.batch() is not first  # remembered, handed out as copies

    def fresh():  # what a new server on the folder lists
        return Renderer(ReviewStore(folder)).batch()

    store.edit(1, 0, {"op": "class", "id": 1, "category_id": 4})
    after = r.batch()
    assert after[0]["version"] == 1 and after[0]["flags"] != first[0]["flags"] and after == fresh()
    store.undo(1, 1, "a")
    assert r.batch()[0]["flags"] == first[0]["flags"] and r.batch() == fresh()
    store.edit(1, 2, {"op": "reviewed", "reviewed": True}, "a")
    assert r.batch()[0]["reviewed"]["by"] == "a" and r.batch() == fresh()
    other = ReviewStore(folder, user="b")  # another server on the same folder
    other.edit(1, r.batch()[0]["version"], {"op": "delete", "id": 2})
    assert r.batch()[0]["total"] == first[0]["total"] - 1 and r.batch() == fresh()


def test_two_callers_at_once_compute_the_list_once(tmp_path, monkeypatch):
    r = Renderer(ReviewStore(make_predict_folder(tmp_path)))
    calls = []
    real = r._batch_rows

    def slow():
        calls.append(1)
        return real()

    monkeypatch.setattr(r, "_batch_rows", slow)
    out = []
    threads = [threading.Thread(target=lambda: out.append(r.batch())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and out[0] == out[1] == out[2]


def test_the_warm_up_renders_the_first_metaphase_then_waits_for_the_page(tmp_path):
    r = Renderer(ReviewStore(make_predict_folder(tmp_path)))
    done = threading.Event()
    t = threading.Thread(target=lambda: (r.warm_up(import_wait=30), done.set()), daemon=True)
    t.start()
    assert not done.wait(1.5) or r.page_shown.is_set()  # waiting for the page before importing torch
    r.page_shown.set()
    assert done.wait(60)
    assert r._karyograms and r._batch is not None
