"""A screenshot of the review page of a predict folder, taken with headless Chromium (Playwright
driving the system's ``chromium``; no browser download). It only looks: nothing is edited.

    python -m chromoseg.review.screenshot out/gband docs/review.png --select 12
"""
from __future__ import annotations

import argparse
import re
import secrets
import tempfile
from pathlib import Path

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def screenshot(folder, out, *, chromium: str = "/usr/bin/chromium", width: int = 1600, height: int = 1000,
               select: int | None = None, image_id: int | None = None, user: str = "reviewer",
               timeout_s: float = 120) -> Path:
    """Open ``folder`` in the review app and save the page as PNG ``out``; ``select``: a chromosome id
    to select (highlighted in the metaphase and the karyogram); ``image_id``: the metaphase shown."""
    from playwright.sync_api import expect, sync_playwright

    from chromoseg.review.app import create_app
    from chromoseg.review.server import ReviewServer

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    srv = ReviewServer(create_app(folder, token=secrets.token_urlsafe(24), user=user), "127.0.0.1", 0).start()
    ms = int(timeout_s * 1000)
    try:
        with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium, headless=True, args=ARGS,
                                                       viewport={"width": width, "height": height}, timeout=ms)
            try:
                page = ctx.new_page()
                url = srv.url()
                page.goto(url, wait_until="load", timeout=ms)
                if image_id is not None:
                    page.goto(f"http://127.0.0.1:{srv.port}/#image={int(image_id)}", wait_until="load", timeout=ms)
                page.wait_for_selector("g.chrom", timeout=ms)
                n = page.locator("g.chrom").count()
                expect(page.locator("#ksvg rect.kp")).to_have_count(n, timeout=ms)
                expect(page.locator("#kwrap")).not_to_have_class(re.compile("stale"), timeout=ms)
                if select is not None:
                    page.click(f"#ksvg rect.kp[data-id='{int(select)}']", timeout=ms)  # always inside its box
                page.wait_for_timeout(300)
                page.screenshot(path=str(out), timeout=ms)
            finally:
                ctx.close()
    finally:
        srv.stop()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="a chromoseg predict output folder")
    ap.add_argument("out", help="the PNG to write")
    ap.add_argument("--select", type=int, default=None, help="a chromosome id to select")
    ap.add_argument("--image", type=int, default=None, help="the metaphase (image id) to show")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--user", default="reviewer", help="the reviewer's name shown")
    ap.add_argument("--size", default="1600x1000", help="viewport WxH")
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    print(screenshot(a.dir, a.out, chromium=a.chromium, width=w, height=h, select=a.select, image_id=a.image,
                     user=a.user))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
