"""Run the review app on a local address with uvicorn (what ``chromoseg review`` does)."""
from __future__ import annotations

import ipaddress
import socket
import sys
import threading

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def is_local(host: str) -> bool:
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str, token: str | None = None) -> str:
    port = sock.getsockname()[1]
    if host in ("0.0.0.0", "::", ""):  # every address: name the machine
        host = socket.gethostname()
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


class ReviewServer:
    """The app served by uvicorn on a bound socket, in this thread (:meth:`run`) or in a background
    thread (:meth:`start` / :meth:`stop`, for tests and scripts)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.app = app
        self.host = host
        self.sock = bind(host, port)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                h11_max_incomplete_event_size=64 * 1024, timeout_keep_alive=5)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def url(self, with_token: bool = True) -> str:
        return url_of(self.sock, self.host, self.app.state.token if with_token else None)

    def run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 20.0) -> "ReviewServer":
        import time

        self._thread = threading.Thread(target=self.run, name="chromoseg-review", daemon=True)
        self._thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if time.monotonic() - t0 > timeout or not self._thread.is_alive():
                raise RuntimeError("the review server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sock.close()


def preload() -> None:
    """Import what the page's first requests need and would otherwise import on the way (about 0.6 s
    of CPU: SciPy's ``ndimage`` for the not-a-chromosome rule and the straightened karyogram,
    scikit-image's ``morphology`` for the medial axis, OpenCV, pycocotools), before the address is
    printed, so that the page does not wait for them. torch (``chromoseg.ops``, for edited masks' geometry)
    is left to :meth:`chromoseg.review.render.Renderer.warm_up`, after the page has opened."""
    import cv2  # noqa: F401
    import pycocotools.mask  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import scipy.sparse.csgraph  # noqa: F401
    import skimage.morphology  # noqa: F401

    import chromoseg.karyotype.layout  # noqa: F401
    import chromoseg.karyotype.straighten  # noqa: F401


def serve(app, host: str = "127.0.0.1", port: int = 0, open_browser: bool = True, out=sys.stdout) -> None:
    """Serve ``app`` until Ctrl-C, printing its address (with the token) and opening a browser on it."""
    srv = ReviewServer(app, host, port)
    preload()
    url = srv.url()
    if not is_local(host):
        print(f"warning: serving on {host}, not only this machine: anyone who can reach it and has the address "
              "can see and change this review; the connection is not encrypted (use an SSH tunnel rather than "
              "--host where you can)", file=sys.stderr)
    print(f"chromoseg review: {app.state.store.dir}", file=out)
    print(f"open {url}", file=out)
    print("(the token in the address is needed by every request; Ctrl-C stops the server, every edit is "
          "already saved)", file=out, flush=True)
    if open_browser:
        def opener():
            import time
            import webbrowser

            while not srv.server.started and not srv.server.should_exit:
                time.sleep(0.05)
            if srv.server.started:
                try:
                    webbrowser.open(url)
                except Exception:  # no browser here: the printed address is enough
                    pass
        threading.Thread(target=opener, daemon=True).start()
    try:
        srv.run()
    finally:
        srv.sock.close()
