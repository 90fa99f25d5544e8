"""The review web app (Starlette): the page, its JSON API and the files of the predict folder.

Security (a local app that can change files):

- **a token on every request**: ``X-Chromoseg-Token: T`` or ``Authorization: Bearer T``; for GET also
  the cookie the page sets (``GET /?token=T`` sets it, HttpOnly and SameSite=Strict, and redirects to
  ``/`` so the token leaves the address bar) or ``?token=T``. A POST needs the header: a cookie alone is
  refused (no cross-site request can forge it). Compared in constant time.
- **only files of DIR**: ``/files/PATH`` serves regular files under DIR and nothing else (``..``,
  absolute paths, hidden names, links leading out of DIR are refused with 403); the metaphase pictures
  are served by image id, from the files ``images.json`` names, never by a path from the request.
- **every edit validated** (:mod:`chromoseg.review.store`): class ids 1-24 (integers), instance ids that
  exist, known fields only, points finite and at most :data:`chromoseg.review.geometry.MAX_POINTS`;
  a stale version is refused with 409.
- **request size limits**: bodies over ``max_body`` bytes (default 1 MiB) are refused with 413, by
  their Content-Length or while they arrive; JSON bodies only (415 otherwise).
- every response: ``Content-Security-Policy`` (scripts, styles, pictures from the app only),
  ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``.

API (JSON; errors are ``{"error": message}`` with the status):

=========================================  ============================================================
``GET /api/batch``                         the metaphases, flagged first: karyotype line, flags, reviewed
``GET /api/images/{id}``                   one metaphase: chromosomes (outlines, label, class, score,
                                           weak), karyotype line, counts, flags, version, undo/redo, history
``GET /api/images/{id}/image.png``         the metaphase picture
``GET /api/images/{id}/karyogram.png``     the karyogram of the current chromosomes (``?download=1``;
                                           ``?straight=0``: as cut, not straightened along their axis)
``GET /api/images/{id}/karyogram.json``    where each chromosome lies on it, and which image point is
                                           shown at its top and its bottom (``?straight=0`` as above)
``POST /api/images/{id}/edit``             ``{"version": n, "op": ...}`` (see ``ReviewStore.edit``) ->
                                           the metaphase as ``GET /api/images/{id}``
``POST /api/images/{id}/undo`` / ``redo``  ``{"version": n}`` -> the metaphase
``POST /api/export``                       write ``DIR/reviewed/`` -> what was written
``GET /api/journal?image_id=``             who did what when
``GET /files/{path}``                      a file of DIR (report.html, reviewed/results.json, ...)
=========================================  ============================================================

The reviewer's name comes from the ``X-Chromoseg-User`` header (percent-encoded UTF-8), else the
server's ``user``.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import threading
import urllib.parse
from pathlib import Path, PurePosixPath

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from chromoseg.review import static
from chromoseg.review.render import Renderer
from chromoseg.review.store import Conflict, NotFound, ReviewError, ReviewStore, check_user

#: the largest request body accepted, in bytes
MAX_BODY = 1 << 20

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
#: served files of DIR run nothing and reach nothing (the predict report has its own inline style)
FILE_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"
SECURITY_HEADERS = (("content-security-policy", CSP), ("x-content-type-options", "nosniff"),
                    ("x-frame-options", "DENY"), ("referrer-policy", "no-referrer"), ("cache-control", "no-store"))


class Forbidden(ReviewError):
    status = 403


class _BodyTooLarge(Exception):
    pass


def cookie_name(token: str) -> str:
    """The token cookie's name: one per server (cookies do not tell ports apart)."""
    return "chromoseg_review_" + hashlib.sha256(token.encode()).hexdigest()[:12]


class Guard:
    """ASGI middleware: the token on every request, body size limits, security headers."""

    def __init__(self, app, token: str, max_body: int = MAX_BODY):
        self.app = app
        self.token = token.encode()
        self.cookie = cookie_name(token)
        self.max_body = int(max_body)

    def _is_token(self, value) -> bool:
        return bool(value) and secrets.compare_digest(str(value).encode(), self.token)

    @staticmethod
    async def _reply(scope, receive, send, status: int, message: str, headers=None) -> None:
        resp = JSONResponse({"error": message}, status_code=status, headers=headers)
        await resp(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return

        started = False

        async def send_secured(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS:
                    if k not in headers:
                        headers[k] = v
            await send(message)

        request = Request(scope)
        method = scope["method"]
        auth = request.headers.get("authorization", "")
        header_token = request.headers.get("x-chromoseg-token") or (auth[7:] if auth.lower().startswith("bearer ") else "")
        if method in ("GET", "HEAD"):
            ok = (self._is_token(header_token) or self._is_token(request.cookies.get(self.cookie))
                  or self._is_token(request.query_params.get("token")))
        else:
            ok = self._is_token(header_token)
        if not ok:
            if method not in ("GET", "HEAD") and self._is_token(request.cookies.get(self.cookie)):
                await self._reply(scope, receive, send_secured, 403,
                                  "a change needs the token in the X-Chromoseg-Token header, not only the cookie")
            else:
                await self._reply(scope, receive, send_secured, 401,
                                  "a token is required: open the address `chromoseg review` printed (it ends in "
                                  "?token=...)", headers={"www-authenticate": "Bearer"})
            return
        if method not in ("GET", "HEAD", "POST"):
            await self._reply(scope, receive, send_secured, 405, f"method {method} not allowed")
            return
        length = request.headers.get("content-length")
        try:
            too_long = length is not None and int(length) > self.max_body
        except ValueError:
            await self._reply(scope, receive, send_secured, 400, "bad Content-Length")
            return
        if too_long:
            await self._reply(scope, receive, send_secured, 413, f"request body over {self.max_body} bytes")
            return
        received = 0

        async def receive_limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, receive_limited, send_secured)
        except _BodyTooLarge:
            if not started:
                await self._reply(scope, receive, send_secured, 413, f"request body over {self.max_body} bytes")


def safe_file(root: Path, rel: str) -> Path:
    """The regular file ``rel`` under ``root`` (resolved); :class:`Forbidden` for anything that leaves
    ``root`` or names a hidden file, :class:`NotFound` for a missing one."""
    root = Path(root).resolve()
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/") or ":" in rel.split("/")[0]:
        raise Forbidden("only files of the review folder are served")
    parts = PurePosixPath(rel).parts
    if any(p in ("..", ".") or p.startswith(".") for p in parts):
        raise Forbidden("only files of the review folder are served")
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise Forbidden("only files of the review folder are served")
    if not path.is_file():
        raise NotFound(f"no file {rel} in the review folder")
    return path


async def read_json(request: Request) -> dict:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ReviewError("send JSON (Content-Type: application/json)")
    body = await request.body()
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ReviewError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ReviewError("the body must be a JSON object")
    return data


def create_app(folder, token: str | None = None, user: str = "reviewer", image_roots=(),
               max_body: int = MAX_BODY, store: ReviewStore | None = None) -> Starlette:
    """The app for the predict folder ``folder``. ``token``: the access token (default: a new random
    one, in ``app.state.token``); ``user``: the reviewer named when a request names none."""
    store = store or ReviewStore(folder, image_roots=image_roots, user=user)
    renderer = Renderer(store)
    token = token or secrets.token_urlsafe(24)
    cookie = cookie_name(token)
    export_lock = threading.Lock()

    def reviewer(request: Request) -> str:
        raw = request.headers.get("x-chromoseg-user")
        return check_user(urllib.parse.unquote(raw) if raw else None, store.user)

    def iid(request: Request) -> int:
        return store.image(request.path_params["iid"])["id"]

    async def index(request: Request):
        if "token" in request.query_params:  # the printed address: keep the token in a cookie, out of the URL
            resp = RedirectResponse("/", status_code=303)
            resp.set_cookie(cookie, token, httponly=True, samesite="strict", path="/")
            return resp
        return HTMLResponse(static.INDEX_HTML.replace("__TOKEN__", token))

    async def asset(request: Request):
        name = request.path_params["name"]
        if name == "app.js":
            return Response(static.APP_JS, media_type="text/javascript; charset=utf-8")
        if name == "app.css":
            return Response(static.APP_CSS, media_type="text/css; charset=utf-8")
        raise NotFound(f"no static file {name}")

    async def batch(request: Request):
        rows = await run_in_threadpool(renderer.batch)
        return JSONResponse({"folder": str(store.dir), "user": store.user, "version": store.version,
                             "warnings": store.warnings, "images": rows})

    async def image_view(request: Request):
        return JSONResponse(await run_in_threadpool(renderer.view, iid(request)))

    async def image_png(request: Request):
        png = await run_in_threadpool(renderer.image_png, iid(request))
        return Response(png, media_type="image/png", headers={"cache-control": "private, max-age=3600"})

    def straight(request: Request) -> bool:
        v = request.query_params.get("straight", "1").strip().lower()
        if v not in ("0", "1", "true", "false", "yes", "no"):
            raise ReviewError("straight: use 1 (straightened along the axis) or 0 (as cut)")
        return v in ("1", "true", "yes")

    async def karyogram_png(request: Request):
        i = iid(request)
        png, _ = await run_in_threadpool(renderer.karyogram, i, "", straight(request))
        headers = {}
        if request.query_params.get("download"):
            headers["content-disposition"] = f'attachment; filename="{store.image(i)["stem"]}.karyogram.png"'
        return Response(png, media_type="image/png", headers=headers)

    async def karyogram_json(request: Request):
        _, layout = await run_in_threadpool(renderer.karyogram, iid(request), "", straight(request))
        renderer.page_shown.set()  # the page's last request: the warm-up may import torch now
        return JSONResponse(layout)

    async def edit(request: Request):
        i = iid(request)
        body = await read_json(request)
        who = reviewer(request)
        op = {k: v for k, v in body.items() if k != "version"}
        await run_in_threadpool(store.edit, i, body.get("version"), op, who)
        return JSONResponse(await run_in_threadpool(renderer.view, i))

    def stepper(which: str):
        async def step(request: Request):
            i = iid(request)
            body = await read_json(request)
            extra = set(body) - {"version"}
            if extra:
                raise ReviewError(f"{which}: unknown field(s) {', '.join(sorted(extra))}")
            await run_in_threadpool(getattr(store, which), i, body.get("version"), reviewer(request))
            return JSONResponse(await run_in_threadpool(renderer.view, i))
        return step

    async def export(request: Request):
        body = await read_json(request)
        if body:
            raise ReviewError("export takes an empty object {}")
        who = reviewer(request)
        if not export_lock.acquire(blocking=False):
            raise Conflict("an export is already running: wait for it")
        try:
            from chromoseg.review.export import export_reviewed

            summary = await run_in_threadpool(export_reviewed, store, renderer, None, who)
        finally:
            export_lock.release()
        return JSONResponse(summary)

    async def journal(request: Request):
        q = request.query_params.get("image_id")
        entries = store.journal(q if q else None, limit=1000)
        return JSONResponse({"journal": entries})

    async def files(request: Request):
        path = safe_file(store.dir, request.path_params["path"])
        return FileResponse(path, headers={"content-security-policy": FILE_CSP})

    async def review_error(request: Request, exc: ReviewError):
        return JSONResponse({"error": str(exc), **exc.extra}, status_code=exc.status)

    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail or "error"}, status_code=exc.status_code)

    routes = [
        Route("/", index),
        Route("/static/{name}", asset),
        Route("/api/batch", batch),
        Route("/api/images/{iid:int}", image_view),
        Route("/api/images/{iid:int}/image.png", image_png),
        Route("/api/images/{iid:int}/karyogram.png", karyogram_png),
        Route("/api/images/{iid:int}/karyogram.json", karyogram_json),
        Route("/api/images/{iid:int}/edit", edit, methods=["POST"]),
        Route("/api/images/{iid:int}/undo", stepper("undo"), methods=["POST"]),
        Route("/api/images/{iid:int}/redo", stepper("redo"), methods=["POST"]),
        Route("/api/export", export, methods=["POST"]),
        Route("/api/journal", journal),
        Route("/files/{path:path}", files),
    ]
    app = Starlette(routes=routes, exception_handlers={ReviewError: review_error, HTTPException: http_error})
    app.add_middleware(Guard, token=token, max_body=max_body)
    app.state.store = store
    app.state.renderer = renderer
    app.state.token = token
    app.state.cookie = cookie
    return app
