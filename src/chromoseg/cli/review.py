"""``chromoseg review``: review and correct a predict folder in the browser.

Heavy imports (Starlette, uvicorn, numpy, OpenCV) happen inside the command function so that
``chromoseg --help`` stays fast.
"""
from __future__ import annotations

import argparse

from chromoseg.cli import COMMANDS, nonneg_int

DESCRIPTION = """\
Open a `chromoseg predict` output folder DIR in a local web app: one metaphase per page (the batch
in a list, flagged ones first), every chromosome outlined and labelled on the image, the karyogram
beside it re-drawn after every edit (straightened along each chromosome's axis, or as cut: V),
the karyotype line and counts. Change a chromosome's class (keys 1-22, X, Y), delete one, join two,
split one along a line, draw a missed one (polygon, or brush: B), turn one end for end in the
karyogram (T), mark the metaphase reviewed; undo / redo.

Every edit is saved at once, atomically, in DIR/review/ (a file per edited metaphase and a journal of
who did what when; DIR/review.json says which format); images.json and results.json are never
changed. Each metaphase has a version, and an edit made on a stale one (another tab) is refused, so
nothing is overwritten. Export writes
DIR/reviewed/: the corrected results.json, karyograms, overlays, label images, report, and
dataset.json, the reviewed metaphases as a COCO dataset for `chromoseg train --extra-train`.

The server listens on 127.0.0.1 by default and prints its address with an access token, which
every request needs; only the files of DIR are served.
"""

EPILOG = """\
examples:
  chromoseg predict examples/cil-gband/103203.jpg --model gband --out out/gband
  chromoseg review out/gband                  # prints http://127.0.0.1:PORT/?token=... and opens it
  chromoseg review out/gband --port 8765 --no-browser
  ssh -L 8765:127.0.0.1:8765 HOST             # then open the printed address here (better than --host)
  chromoseg review out/gband --export         # write out/gband/reviewed/ and exit, no server
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "review",
        help=COMMANDS["review"][1],
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", metavar="DIR", help="a `chromoseg predict` output folder (images.json, results.json)")
    p.add_argument("--port", type=nonneg_int, default=0, help="port to listen on (default 0: a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; any other prints a warning)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser, only print the address")
    p.add_argument("--user", default=None,
                   help="reviewer named in the journal when the page names none (default: the login name)")
    p.add_argument("--images", nargs="+", default=[], metavar="FOLDER",
                   help="folders where the metaphase files are looked up when they are not where images.json says")
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)  # tests and scripts: a fixed token
    p.add_argument("--export", action="store_true",
                   help="write DIR/reviewed/ (corrected results, karyograms, dataset.json) and exit")
    p.set_defaults(func=run_review)


def run_review(args) -> int:
    import getpass
    from pathlib import Path

    from chromoseg.cli import CliError
    from chromoseg.review.store import ReviewError, ReviewStore, check_user

    for d in args.images:
        if not Path(d).is_dir():
            raise CliError(f"--images {d}: no such folder")
    try:
        default_user = getpass.getuser()
    except (KeyError, OSError):
        default_user = "reviewer"
    try:
        user = check_user(args.user, default_user)
        store = ReviewStore(args.dir, image_roots=args.images, user=user)
    except ReviewError as err:
        raise CliError(str(err)) from err
    if args.export:
        from chromoseg.review.export import export_reviewed

        summary = export_reviewed(store, user=user)
        for p in summary["problems"]:
            print(f"problem: {p}")
        print(f"{summary['images']} metaphases ({summary['reviewed']} reviewed) exported to {summary['out']}; "
              f"dataset.json: {summary['dataset_images']} metaphases, {summary['dataset_annotations']} chromosomes")
        return 0 if not summary["problems"] else 3
    try:
        from chromoseg.review.app import create_app
        from chromoseg.review.server import serve
    except ImportError as err:  # the web packages are dependencies; a broken install says what is missing
        raise CliError(f"the review app needs {err.name} (pip install starlette uvicorn)") from err
    if args.token is not None and len(args.token) < 16:
        raise CliError("--token: at least 16 characters")
    for w in store.warnings:
        print(f"warning: {w}")
    app = create_app(None, token=args.token, store=store)
    import threading

    # the first metaphase's karyogram and the heavy imports while the browser opens (page open < 2 s)
    threading.Thread(target=app.state.renderer.warm_up, name="chromoseg-review-warm-up", daemon=True).start()
    try:
        serve(app, host=args.host, port=args.port, open_browser=not args.no_browser)
    except OSError as err:
        raise CliError(f"cannot listen on {args.host}:{args.port} ({err.strerror or err})") from err
    return 0
