"""``chromoseg review`` in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright opens a synthetic predict folder, changes chromosomes' classes with keys (one and two
digits), deletes one, joins two, splits one along a clicked line, reloads the page and finds the edits
(on the page and in the files of ``review/``), undoes the last, switches the karyogram between straightened
and as cut, turns one chromosome end for end, paints a missed one with the brush, and exports.

Skipped, with the reason, when Chromium or Playwright is missing (``make test`` installs Chromium with
apt-get where it can)."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMOSEG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium not found ({CHROMIUM}): install Debian's `chromium` (apt-get install chromium) "
                    "to run the browser test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                                                   "(pip install -e '.[test]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


def test_change_a_class_delete_join_split_reload_and_find_the_edits(browser, tmp_path):
    from playwright.sync_api import expect
    from test_review_api import TOKEN, make_predict_folder, saved

    from chromoseg.review.app import create_app
    from chromoseg.review.server import ReviewServer

    folder = make_predict_folder(tmp_path)
    srv = ReviewServer(create_app(folder, token=TOKEN, user="browser"), "127.0.0.1", 0).start()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(srv.url(), wait_until="load")
        assert "token" not in page.url  # the token went into a cookie
        page.wait_for_selector("g.chrom[data-id='5']", timeout=30_000)
        assert page.locator("g.chrom").count() == 5
        expect(page.locator("#ksvg rect.kp")).to_have_count(5, timeout=30_000)  # the karyogram's layout came
        assert page.locator("#karyogram").evaluate("img => img.naturalWidth") > 0
        summary0 = page.inner_text("#iscn")

        # select the X (#5) and make it a Y with the key
        page.click("g.chrom[data-id='5'] text")
        page.wait_for_selector("g.chrom.sel[data-id='5']")
        page.keyboard.press("y")
        expect(page.locator("g.chrom[data-id='5'] text")).to_have_text("Y", timeout=30_000)
        assert page.inner_text("#iscn") != summary0 and "Saved" in page.inner_text("#status")

        # select #1 and delete it with the Delete key
        page.click("g.chrom[data-id='1'] text")
        page.wait_for_selector("g.chrom.sel[data-id='1']")
        page.keyboard.press("Delete")
        expect(page.locator("g.chrom[data-id='1']")).to_have_count(0, timeout=30_000)

        # two digits make a two-digit class: #3 becomes 12
        page.click("g.chrom[data-id='3'] text")
        page.keyboard.type("12")
        expect(page.locator("g.chrom[data-id='3'] text")).to_have_text("12", timeout=30_000)

        # join #2 and #4: J, then a click on the other; the new #6 keeps #2's class
        page.click("g.chrom[data-id='2'] text")
        page.keyboard.press("j")
        page.click("g.chrom[data-id='4'] text")
        expect(page.locator("g.chrom[data-id='6'] text")).to_have_text("1", timeout=30_000)
        assert page.locator("g.chrom[data-id='2'], g.chrom[data-id='4']").count() == 0

        # split the Y (#5, x 140-190, y 40-48) across x = 165: S, two clicks, Enter
        page.click("g.chrom[data-id='5'] text")
        page.keyboard.press("s")
        box = page.locator("#svg").bounding_box()
        f = box["width"] / 200  # image pixels -> page pixels (the picture is 200 wide)
        page.mouse.click(box["x"] + 165 * f, box["y"] + 34 * f)
        page.mouse.click(box["x"] + 165 * f, box["y"] + 54 * f)
        page.keyboard.press("Enter")
        expect(page.locator("g.chrom[data-id='8']")).to_have_count(1, timeout=30_000)

        page.reload(wait_until="load")
        page.wait_for_selector("g.chrom[data-id='8']", timeout=30_000)
        assert sorted(int(i) for i in page.locator("g.chrom").evaluate_all("gs => gs.map(g => g.dataset.id)")) == [3, 6, 7, 8]
        assert page.text_content("g.chrom[data-id='3'] text") == "12"
        assert page.text_content("g.chrom[data-id='7'] text") == "Y" and page.text_content("g.chrom[data-id='8'] text") == "Y"
        assert "class 7 -> 12" in page.text_content("#history")
        # undo from the page takes the last edit (the split) back
        page.click("#undo")
        expect(page.locator("g.chrom[data-id='5'] text")).to_have_text("Y", timeout=30_000)

        # V: the karyogram as cut, and back to straightened; T turns the selected one end for end
        assert "straight=1" in page.get_attribute("#karyogram", "src")
        page.keyboard.press("v")
        expect(page.locator("#karyogram")).to_have_attribute("src", re.compile("straight=0"), timeout=30_000)
        assert not page.is_checked("#straight")
        page.keyboard.press("v")
        expect(page.locator("#karyogram")).to_have_attribute("src", re.compile("straight=1"), timeout=30_000)
        expect(page.locator("#ksvg rect.kp")).to_have_count(3, timeout=30_000)
        page.click("g.chrom[data-id='6'] text")
        page.keyboard.press("t")
        expect(page.locator("#history li").first).to_contain_text("turned end for end", timeout=30_000)

        # the brush: paint a missed chromosome of class 21 along y = 140 from x = 120 to 180
        page.select_option("#draw-class", "21")
        page.click("#brush")
        box = page.locator("#svg").bounding_box()
        f = box["width"] / 200
        page.mouse.move(box["x"] + 120 * f, box["y"] + 140 * f)
        page.mouse.down()
        for x in range(125, 185, 5):
            page.mouse.move(box["x"] + x * f, box["y"] + 140 * f)
        page.mouse.up()
        expect(page.locator("g.chrom[data-id='9'] text")).to_have_text("21", timeout=30_000)

        # export from the page: the links to the corrected results and the report
        page.click("#export")
        expect(page.locator("#export-out a")).not_to_have_count(0, timeout=60_000)
        assert "reviewed/results.json" in page.inner_text("#export-out")
        assert not errors, errors
    finally:
        srv.stop()
    state = saved(folder)
    insts = {i["id"]: i["category_id"] for i in state["images"]["1"]["instances"]}
    assert insts == {3: 12, 5: 24, 6: 1, 9: 21}
    assert [e["op"] for e in state["journal"]] == ["class", "delete", "class", "join", "split", "undo", "turn", "brush"]
    brushed = next(i for i in state["images"]["1"]["instances"] if i["id"] == 9)
    assert brushed["drawn_with"] == "brush" and brushed["category_id"] == 21 and brushed["area"] > 50 * 8
    assert next(i for i in state["images"]["1"]["instances"] if i["id"] == 6)["top_end"]
    assert (folder / "reviewed" / "results.json").is_file() and (folder / "reviewed" / "meta.karyogram.png").is_file()
    assert all(e["by"] == "browser" for e in state["journal"])
