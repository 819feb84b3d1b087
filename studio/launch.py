"""Serving the app: loopback by default, auth required for anything wider."""

from __future__ import annotations

import ipaddress
import math
import os
import time
from pathlib import Path

from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from pipelines.run import quiet_libraries
from studio import adapter_download
from studio.app import CSS_PATH, build_app, head
from studio.frontend_fix import FixFrontend


class LaunchError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    if not auth:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise LaunchError("--auth must look like USER:PASSWORD")
    return user, password


def read_auth_file(path) -> list[tuple[str, str]]:
    """The accounts of an --auth-file: one USER:PASSWORD a line (blank lines and lines starting with # left
    out), so each labeler signs in under their own name, and no password is on the command line, where
    `ps` shows it to every user of the machine. The file must be readable by its owner only."""
    file = Path(path).expanduser()
    try:
        mode = file.stat().st_mode
        text = file.read_text(encoding="utf-8-sig")  # (Notepad's byte-order mark is no part of the first name)
    except FileNotFoundError:
        raise LaunchError(f"--auth-file {path}: no such file") from None
    except IsADirectoryError:
        raise LaunchError(f"--auth-file {path}: is a folder; expected a file of USER:PASSWORD lines") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LaunchError(f"--auth-file {path}: cannot be read ({getattr(err, 'strerror', None) or err})") from None
    if mode & 0o077:
        raise LaunchError(f"--auth-file {path}: other users of this machine can read it (mode {mode & 0o777:o}); "
                          f"make it yours alone with: chmod 600 {path}")
    accounts, lines = [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, password = line.partition(":")  # (a password may hold a colon; spaces around each go)
        user, password = user.strip(), password.strip()
        if not sep or not user or not password:
            raise LaunchError(f"{path}, line {number}: expected USER:PASSWORD")
        if user in lines:
            raise LaunchError(f"{path}, line {number}: user '{user}' is on line {lines[user]} already")
        lines[user] = number
        accounts.append((user, password))
    if not accounts:
        raise LaunchError(f"--auth-file {path}: no USER:PASSWORD line in it")
    return accounts


def check_exposure(host: str, auth: str | None, share: bool, auth_file=None):
    """Refuse to expose an unauthenticated studio beyond this machine. The credentials: (user, password), a
    list of them from `auth_file`, or None."""
    if auth and auth_file:
        raise LaunchError("give --auth or --auth-file, not both")
    credentials = read_auth_file(auth_file) if auth_file else parse_auth(auth)
    if not is_loopback(host) and credentials is None:
        raise LaunchError(f"refusing to bind {host} without --auth USER:PASSWORD (or --auth-file FILE); "
                          "anyone on the network could use this machine")
    if share and credentials is None:
        raise LaunchError("refusing a public share link without --auth USER:PASSWORD (or --auth-file FILE)")
    return credentials


class LoginThrottle:
    """Failed logins, counted per client address: the first `free` are answered at once; after that
    the client must wait `base_s`, then twice as long after each further failure (at most `max_s`)
    before its next try is even checked. A right password resets the count; so does `window_s`
    without a failure. Nothing sleeps: a try that comes too soon is refused with its wait."""

    def __init__(self, free: int = 5, base_s: float = 1.0, max_s: float = 60.0, window_s: float = 900.0,
                 clock=time.monotonic, max_clients: int = 10_000):
        self.free, self.base_s, self.max_s, self.window_s = free, base_s, max_s, window_s
        self.clock, self.max_clients = clock, max_clients
        self.failures: dict[str, tuple[int, float]] = {}  # client -> (failures, time of the last one)
        self.trying: set[str] = set()  # clients whose login is being checked now: one at a time each

    def lock_s(self, count: int) -> float:
        return 0.0 if count < self.free else min(self.max_s, self.base_s * 2 ** (count - self.free))

    def wait_s(self, client: str) -> float:
        """Seconds before this client may try again (0: now)."""
        count, last = self.failures.get(client, (0, 0.0))
        now = self.clock()
        if count and now - last > self.window_s:
            del self.failures[client]
            return 0.0
        return max(0.0, last + self.lock_s(count) - now)

    def failed(self, client: str) -> None:
        now = self.clock()
        if len(self.failures) >= self.max_clients:  # forget the quiet ones before growing further
            self.failures = {c: (n, t) for c, (n, t) in self.failures.items() if now - t <= self.window_s}
        self.failures[client] = (self.failures.get(client, (0, 0.0))[0] + 1, now)

    def succeeded(self, client: str) -> None:
        self.failures.pop(client, None)


def _not_authenticated():
    return JSONResponse({"detail": "Not authenticated"}, status_code=401)


class LoginGate:
    """In front of Gradio when a password is set. Before login only the login page and the files it is
    drawn with are served: `/` without its query (Gradio answers `/?all_endpoints=true` with the whole
    API description, example values and all, even to a stranger) and every other route gets 401.
    Logins are throttled per client (LoginThrottle); the client is the connecting address, or the
    forwarded one when a local proxy such as the share tunnel connects (uvicorn's trusted-proxy rule)."""

    # launch() itself calls startup-events (once, before anyone can log in; later calls do nothing)
    OPEN = {"/", "/login", "/login/", "/theme.css", "/favicon.ico", "/manifest.json", "/gradio_api/startup-events"}
    OPEN_PREFIXES = ("/assets/", "/static/")  # Gradio's own front-end files, the same for every app

    def __init__(self, app, throttle: LoginThrottle | None = None):
        self.app = app
        self.throttle = throttle or LoginThrottle()

    @staticmethod
    def logged_in(scope) -> bool:
        gradio_app = scope.get("app")
        cookie_id = getattr(gradio_app, "cookie_id", None)
        tokens = getattr(gradio_app, "tokens", None)
        if cookie_id is None or tokens is None:
            return False
        cookies = HTTPConnection(scope).cookies
        token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
        return token is not None and token in tokens

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path in ("/login", "/login/") and scope["type"] == "http" and scope.get("method") == "POST":
            return await self.login(scope, receive, send)
        if self.logged_in(scope):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        if path == "/":
            return await self.app({**scope, "query_string": b""}, receive, send)
        if path in self.OPEN or path.startswith(self.OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        return await _not_authenticated()(scope, receive, send)

    async def login(self, scope, receive, send):
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.throttle.wait_s(client)
        if wait > 0 or client in self.throttle.trying:
            seconds = max(1, math.ceil(wait))
            said = (f"Too many failed logins from this address; try again in {seconds} s." if wait > 0 else
                    # (several people behind one address, signing in at once: one is checked at a time)
                    "Another login from this address is being checked; try again in 1 s.")
            response = JSONResponse({"detail": said}, status_code=429, headers={"Retry-After": str(seconds)})
            return await response(scope, receive, send)
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.throttle.trying.add(client)
        try:
            await self.app(scope, receive, watch)
        finally:
            self.throttle.trying.discard(client)
            if status.get("code") == 200:
                self.throttle.succeeded(client)
            elif status.get("code") == 400:  # Gradio's answer to wrong credentials
                self.throttle.failed(client)


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
USERS_TEMP_DIR = os.environ.get("GRADIO_TEMP_DIR")  # where the user asked Gradio to keep uploads, if anywhere


class SameOriginOnly:
    """Requests for this studio only, from its own pages. A loopback server answered any Host (a site whose
    name was rebound to 127.0.0.1 read it as its own: DNS rebinding), and Gradio takes an event's JSON from a
    cross-site POST without a preflight (any site's page could start runs, delete datasets, import files).
    Bound to loopback: the Host must be a loopback name, the bound one, or one named in STUDIO_ALLOWED_HOSTS
    (a reverse proxy's public name, comma-separated). Any state change (a POST, PUT, PATCH, DELETE or a
    websocket) from an Origin other than its Host or an allowed name, from `Origin: null` (a sandboxed or
    privacy-stripped page, never the studio's own), or marked cross-site by the browser, is refused. Not with
    --share: its tunnel's names are Gradio's (the password guards it)."""

    def __init__(self, app, host: str = "127.0.0.1"):
        self.app, self.host = app, host
        self.loopback = is_loopback(host.strip("[]").lower())
        extra = [h.strip() for h in os.environ.get("STUDIO_ALLOWED_HOSTS", "").split(",") if h.strip()]
        self.allowed = [*LOOPBACK_NAMES, host, *extra]

    @staticmethod
    def _name(netloc: str) -> str:
        """The host name of a Host header or an Origin's authority, lower case, without port or brackets."""
        netloc = netloc.strip().lower().rstrip(".")
        if netloc.startswith("["):
            return netloc[1:netloc.index("]")] if "]" in netloc else netloc
        return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc

    @classmethod
    def _same(cls, a: str, b: str) -> bool:
        a, b = cls._name(a), cls._name(b)
        try:
            return ipaddress.ip_address(a) == ipaddress.ip_address(b)
        except ValueError:
            return a == b

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.loopback and host and not any(self._same(host, name) for name in self.allowed):
            return await self._refuse(scope, receive, send, 400, f"unknown host '{host}' (a name this server may "
                                                                 "answer to goes in STUDIO_ALLOWED_HOSTS)")
        changes = scope["type"] == "websocket" or scope.get("method") in ("POST", "PUT", "PATCH", "DELETE")
        origin = headers.get("origin")
        if changes and origin is not None:
            authority = origin.split("://", 1)[-1]
            ours = origin != "null" and (authority.lower() == host.lower()
                                         or any(self._same(authority, name) for name in self.allowed[len(LOOPBACK_NAMES) + 1:]))
            if not ours:
                return await self._refuse(scope, receive, send, 403, "a request from another site")
        if changes and headers.get("sec-fetch-site") == "cross-site":
            return await self._refuse(scope, receive, send, 403, "a request from another site")
        return await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope, receive, send, code: int, why: str):
        print(f"refused {scope.get('method', 'websocket')} {scope.get('path', '')}: {why}", flush=True)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        return await JSONResponse({"detail": f"refused: {why}"}, status_code=code)(scope, receive, send)


class NoUploadsBack:
    """An uploaded file is read by the studio on the server and never sent back: Gradio would serve
    it to anyone who asks for its path (/gradio_api/file=/tmp/gradio/<hash>/name). The paths the
    upload route hands out are remembered and refused on the file routes (404); files the studio
    itself offers (an export's download) are served as before."""

    FILE_ROUTES = ("/gradio_api/file=", "/file=", "/gradio_api/file/", "/file/")  # (Gradio has both forms)
    REMEMBERED = 100_000

    def __init__(self, app):
        self.app = app
        self.uploaded: dict[str, None] = {}  # insertion-ordered: the oldest are forgotten first

    @staticmethod
    def normal(path: str) -> str:
        from urllib.parse import unquote

        return os.path.realpath(unquote(path))

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        route = next((r for r in self.FILE_ROUTES if path.startswith(r)), None)
        if route is not None:
            from gradio.utils import get_upload_folder

            asked, folder = self.normal(path[len(route):]), os.path.realpath(get_upload_folder())
            # an upload this server took, or any file in the upload folder (one from before a restart too)
            if asked in self.uploaded or asked == folder or asked.startswith(folder + os.sep):
                return await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
        if path.rstrip("/") == "/gradio_api/upload" and scope.get("method") == "POST":
            return await self.remember_upload(scope, receive, send)
        return await self.app(scope, receive, send)

    async def remember_upload(self, scope, receive, send):
        import json

        body = []

        async def watch(message):
            if message["type"] == "http.response.body":
                body.append(message.get("body", b""))
                if not message.get("more_body"):
                    try:
                        for item in json.loads(b"".join(body)):
                            self.uploaded[self.normal(str(item))] = None
                    except (ValueError, TypeError):
                        pass  # an error answer: nothing was stored
                    while len(self.uploaded) > self.REMEMBERED:
                        self.uploaded.pop(next(iter(self.uploaded)))
            await send(message)

        await self.app(scope, receive, watch)


class Downloads:
    """An export's files, streamed from the workspace as they are (GET/HEAD DOWNLOAD_ROUTE/<export id>?file=
    <name>; byte ranges too, so a cut download resumes). Handed to Gradio as a File's value, each file was
    read through for a hash and copied into Gradio's cache on every pick of the export: seconds and a
    second copy of a multi-gigabyte GGUF (bench/download_cost.py). Only a completed export's own files
    are served; behind LoginGate when a password is set. The name is in the query, not the path: Gradio's
    outer compression picks responses by the path's extension, and would compress a tokenizer.json
    (a part of one, for a resumed download) on the way."""

    def __init__(self, app, studio=None):
        self.app = app
        self.studio = studio

    async def __call__(self, scope, receive, send):
        from studio.export_service import DOWNLOAD_ROUTE, download_path

        path = scope.get("path", "") if scope["type"] == "http" else ""
        if self.studio is None or not path.startswith(DOWNLOAD_ROUTE + "/"):
            return await self.app(scope, receive, send)
        from urllib.parse import parse_qs

        import anyio
        from starlette.responses import FileResponse

        job_id = path[len(DOWNLOAD_ROUTE) + 1:]
        names = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("file", [])
        found = archive = None
        if scope.get("method") in ("GET", "HEAD") and len(names) == 1:
            # off the event loop: reading the job's state may wait on a lock or the database
            found = await anyio.to_thread.run_sync(download_path, self.studio, job_id, names[0])
            if found is None:  # a finished run's adapter, as one .zip written as it is sent
                archive = await anyio.to_thread.run_sync(adapter_download.download, self.studio, job_id, names[0])
        if archive is not None:
            return await self.zipped(*archive, head=scope["method"] == "HEAD")(scope, receive, send)
        if found is None:
            return await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
        return await FileResponse(found, filename=found.name)(scope, receive, send)

    @staticmethod
    def zipped(name: str, folder: Path, readme: str, head: bool = False):
        """The archive as it is written (no length known before, so no byte ranges: an adapter is small)."""
        from starlette.responses import Response, StreamingResponse

        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        if head:  # (no length: the archive's is known once written; "0" told a client the file was empty)
            answer = Response(media_type="application/zip", headers=headers)
            del answer.headers["content-length"]
            return answer
        return StreamingResponse(adapter_download.stream(folder, name.removesuffix(".zip"), readme),
                                 media_type="application/zip", headers=headers)


class CompressPage:
    """Gzip the page and its config. Gradio compresses only paths that end in a file extension
    (.js, .css, ...), so `/` (the page with every component's config inlined, ~1 MB) crossed the
    wire uncompressed; gzipped it is ~10x smaller."""

    PATHS = {"/", "/config", "/config/", "/gradio_api/info", "/gradio_api/info/"}

    def __init__(self, app):
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=1000, compresslevel=6)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path") in self.PATHS:
            return await self.gzip(scope, receive, send)
        return await self.app(scope, receive, send)


def bypass_proxy_for_this_machine(host: str) -> None:
    """Gradio checks that the page answers on this machine with an HTTP client that honours
    HTTP(S)_PROXY; with a proxy set and this machine not excluded, the check goes to the proxy, fails,
    and the launch stops ("When localhost is not accessible, a shareable link must be created").
    Requests to this machine never need a proxy: exclude it, as NO_PROXY does."""
    for var in ("NO_PROXY", "no_proxy"):
        listed = [h.strip() for h in os.environ.get(var, "").split(",") if h.strip()]
        missing = [h for h in ("127.0.0.1", "localhost", "::1", host) if h not in listed]
        if missing:
            os.environ[var] = ",".join([*listed, *missing])


def patient_page_check(seconds: float = 60.0) -> None:
    """Gradio's launch asks the page for its headers once, with a 3-second timeout, and on a timeout
    stops with "When localhost is not accessible, a shareable link must be created". Rendering the
    page takes 0.3 s on a quiet machine, but more than 3 s on two cores busy with a training run (one
    resumed at start, or still going from a previous session). Ask again until it answers, for up to a
    minute."""
    import httpx
    from gradio import networking

    if getattr(networking.url_ok, "patient", False):
        return

    def url_ok(url: str) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            try:
                status = httpx.head(url, timeout=10, verify=False).status_code
                if status in (200, 401, 301, 302, 303, 307, 308):
                    return True
            except (httpx.ConnectError, httpx.TimeoutException):
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)

    url_ok.patient = True
    networking.url_ok = url_ok


UPLOADS_KEPT_S = 86400


def sweep_uploads(folder, age_s: float = UPLOADS_KEPT_S) -> None:
    """Files in the uploads folder older than `age_s`, then the folders left empty, removed."""
    now = time.time()
    for path in sorted(Path(folder).rglob("*"), key=lambda p: -len(p.parts)):
        try:
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            elif now - path.lstat().st_mtime > age_s:
                path.unlink()
        except OSError:
            continue  # (in use, or gone meanwhile: the next start looks again)


def serve(studio, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None,
          share: bool = False, block: bool = True, login_throttle: LoginThrottle | None = None, auth_file=None):
    credentials = check_exposure(host, auth, share, auth_file)
    # the terminal is read by people too: no libraries' deprecation notices or weight-loading bars,
    # as in a run's log
    quiet_libraries()
    bypass_proxy_for_this_machine(host)
    patient_page_check()
    # uploads in the workspace, readable by this user only (Gradio's /tmp/gradio kept every upload for good,
    # its folders open to every user of the machine); a day old, they go (Blocks' delete_cache, below)
    uploads = studio.home / "uploads"
    uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
    sweep_uploads(uploads)  # (what a server killed or a reboot left: Gradio only removes what it saw made)
    os.environ["GRADIO_TEMP_DIR"] = USERS_TEMP_DIR or str(uploads)
    studio.file_paths = False  # a page names datasets by id or sample, never by a path on this machine
    app = build_app(studio)
    app.delete_cache = (3600, UPLOADS_KEPT_S)
    app.queue(default_concurrency_limit=4)
    # the first run starts without waiting for the libraries to load; made after everything above
    # that sets the environment (the proxy bypass, Gradio's own), or the first Start could not use it
    studio.prepare_worker()
    # with a password, nothing but the login page before login, and failed logins slowed per client
    middleware = [*([] if share else [Middleware(SameOriginOnly, host=host)]),
                  Middleware(CompressPage), Middleware(FixFrontend), Middleware(NoUploadsBack),
                  *([Middleware(LoginGate, throttle=login_throttle)] if credentials else []),
                  Middleware(Downloads, studio=studio)]  # last: inside the login gate
    app.launch(
        app_kwargs={"middleware": middleware}, server_name=host, server_port=port, auth=credentials, share=share,
        max_file_size=studio.max_upload_bytes, allowed_paths=[], show_error=True, css_paths=[CSS_PATH], head=head(),
        prevent_thread_lock=not block, quiet=not block,
        # Gradio 6 otherwise keeps every event's inputs in the browser's localStorage (chat prompts,
        # uploaded files' names, the voter's name) and offers to copy them to a Hugging Face bucket:
        # a local-first studio keeps them in its workspace only
        run_history=False,
    )
    return app
