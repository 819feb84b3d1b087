"""Safe by default: loopback bind; anything wider needs auth."""

from __future__ import annotations

import os

import pytest

from studio.cli import main
from studio.launch import LaunchError, check_exposure


def test_loopback_needs_no_auth():
    assert check_exposure("127.0.0.1", None, False) is None
    assert check_exposure("localhost", "ann:pw", False) == ("ann", "pw")


def test_wide_bind_without_auth_is_refused():
    with pytest.raises(LaunchError, match=r"^refusing to bind 0.0.0.0 without --auth USER:PASSWORD"):
        check_exposure("0.0.0.0", None, False)


def test_share_without_auth_is_refused():
    with pytest.raises(LaunchError, match="^refusing a public share link without --auth"):
        check_exposure("127.0.0.1", None, True)


def test_cli_serve_refuses_before_building_anything(tmp_path, capsys):
    assert main(["serve", "--host", "0.0.0.0", "--home", str(tmp_path / "h")]) == 2
    assert capsys.readouterr().err.startswith("error: refusing to bind 0.0.0.0 without --auth")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", "0", "2130706433", "0x7f000001", "127.1",
                                  "192.168.1.10", "::ffff:0.0.0.0", "example.com"])
def test_every_other_address_is_refused_without_auth(host):
    with pytest.raises(LaunchError, match=f"^refusing to bind {host.replace('[', '.').replace(']', '.')} without"):
        check_exposure(host, None, False)


def test_ipv6_loopback_is_this_machine_only():
    assert check_exposure("::1", None, False) is None


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """A studio served the default way (no password), with GRADIO_SERVER_NAME asking for every
    address: the studio binds what it was told (127.0.0.1), never what the environment says."""
    import os
    import socket

    from studio.core import Studio
    from studio.launch import serve

    studio = Studio(tmp_path_factory.mktemp("open") / "home")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = os.environ.get("GRADIO_SERVER_NAME")
    os.environ["GRADIO_SERVER_NAME"] = "0.0.0.0"
    try:
        app = serve(studio, port=port, block=False)
    finally:
        if before is None:
            os.environ.pop("GRADIO_SERVER_NAME")
        else:
            os.environ["GRADIO_SERVER_NAME"] = before
    yield port, studio
    app.close()


def test_gradio_server_name_in_the_environment_does_not_widen_the_bind(open_server):
    import socket

    port, _ = open_server
    with socket.socket() as s:
        s.connect(("127.0.0.1", port))  # served here
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # picks the outward interface; nothing is sent
            outside = probe.getsockname()[0]
        except OSError:
            outside = "127.0.0.1"
    if outside.startswith("127."):
        pytest.skip("this machine has no address other than loopback")
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(3)
        s.connect((outside, port))


TRAVERSALS = [
    "/gradio_api/file=/etc/passwd", "/gradio_api/file=../../../../etc/passwd",
    "/gradio_api/file=..%2f..%2f..%2f..%2fetc%2fpasswd", "/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/gradio_api/file=....//....//....//etc/passwd", "/gradio_api/file=/etc/../etc/passwd",
    "/gradio_api/file=%2fetc%2fpasswd", "/gradio_api/file=%252e%252e%252fetc%252fpasswd",
    "/gradio_api/file=..%5c..%5c..%5cetc%5cpasswd", "/gradio_api/file=/proc/self/environ",
    "/gradio_api/file={home}/studio.db", "/gradio_api/file={home}/datasets",
    "/file=/etc/passwd", "/file=../../../../etc/passwd", "/gradio_api/file/etc/passwd",
    "/static/../../../../etc/passwd", "/assets/..%2f..%2f..%2fetc%2fpasswd",
    "/gradio_api/upload_progress?upload_id=../../etc/passwd", "/favicon.ico/../../etc/passwd",
    "/gradio_api/file=//etc/passwd",
]


def test_file_routes_refuse_every_path_traversal_form(open_server):
    import httpx

    port, studio = open_server
    assert len(TRAVERSALS) == 20
    for form in TRAVERSALS:
        url = f"http://127.0.0.1:{port}{form.format(home=studio.home)}"
        answer = httpx.get(url, timeout=30)
        assert answer.status_code in (403, 404), (form, answer.status_code)
        assert "root:x:0:0" not in answer.text and "SQLite format" not in answer.text, form


def test_a_proxy_in_the_environment_does_not_stop_the_launch(tmp_path, monkeypatch):
    """With HTTP(S)_PROXY pointing at nothing, Gradio's own check that the page answers went to the
    proxy and the launch failed ("When localhost is not accessible, a shareable link must be created")."""
    import socket

    import httpx

    from studio.core import Studio
    from studio.launch import serve

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens there
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = serve(Studio(tmp_path / "home"), port=port, block=False)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30, trust_env=False).status_code == 200
    finally:
        app.close()


def test_an_uploaded_file_is_never_served_back_by_its_path(open_server):
    import httpx

    port, _ = open_server
    base = f"http://127.0.0.1:{port}"
    uploaded = httpx.post(f"{base}/gradio_api/upload", timeout=30,
                          files={"files": ("faq.jsonl", b'{"prompt": "secret question", "completion": "a"}\n')})
    assert uploaded.status_code == 200
    path = uploaded.json()[0]
    for form in (f"/gradio_api/file={path}", f"/file={path}", f"/gradio_api/file={path.replace('/', '%2F')}",
                 f"/gradio_api/file={path.replace('/faq.jsonl', '/./faq.jsonl')}"):
        answer = httpx.get(base + form, timeout=30)
        assert answer.status_code in (403, 404) and "secret question" not in answer.text, (form, answer.status_code)


def test_an_upload_over_the_size_limit_is_refused_with_the_limit_named(tmp_path, monkeypatch):
    import socket

    import httpx

    from studio.core import Studio
    from studio.launch import serve

    monkeypatch.setenv("STUDIO_MAX_UPLOAD_MB", "0.001")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = serve(Studio(tmp_path / "home"), port=port, block=False)
    try:
        answer = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", timeout=30,
                            files={"files": ("big.jsonl", b"x" * 5000)})
        assert (answer.status_code, answer.text) == (413, "File size exceeded maximum allowed size of 1000 bytes.")
    finally:
        app.close()


def test_a_page_slower_than_gradios_three_seconds_still_launches():
    """On two cores busy training, the page can take over 3 s to answer Gradio's one check."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from gradio import networking

    from studio.launch import patient_page_check

    asked = []

    class Slow(BaseHTTPRequestHandler):
        def do_HEAD(self):
            asked.append(time.monotonic())
            if len(asked) == 1:
                time.sleep(3.5)  # the first answer comes after Gradio's timeout
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        patient_page_check()
        assert networking.url_ok(url) is True
        assert len(asked) >= 1
    finally:
        server.shutdown()


def test_the_servers_terminal_shows_no_libraries_deprecation_notices(tmp_path, monkeypatch):
    """transformers' 'past_key_values is deprecated' came at every chat reply, and weight-loading bars
    at every model load: the terminal is read by people, as a run's log is."""
    import socket
    import warnings

    from studio.core import Studio
    from studio.launch import serve

    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        app = serve(Studio(tmp_path / "home"), port=port, block=False)
        try:
            warnings.warn("`past_key_values` is deprecated", FutureWarning)
            warnings.warn("a real problem", UserWarning)
        finally:
            app.close()
    assert [str(w.message) for w in shown if w.category in (FutureWarning, UserWarning)] == ["a real problem"]
    assert os.environ["TQDM_DISABLE"] == "1"


def test_requests_for_another_name_or_from_another_site_are_refused(open_server):
    """A loopback server answered any Host (a site rebound to 127.0.0.1 read it as its own) and took an
    event's JSON from any site's cross-site POST: runs could be started, datasets deleted, files imported."""
    import httpx

    port, _ = open_server
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/", timeout=30).status_code == 200
    assert httpx.get(f"{base}/", headers={"Host": f"localhost:{port}"}, timeout=30).status_code == 200
    rebound = httpx.get(f"{base}/", headers={"Host": f"evil.example:{port}"}, timeout=30)
    assert rebound.status_code == 400 and rebound.json() == {
        "detail": f"refused: unknown host 'evil.example:{port}' (a name this server may answer to goes in "
                  "STUDIO_ALLOWED_HOSTS)"}
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        posted = httpx.post(f"{base}/gradio_api/queue/join", content=b"{}", headers=headers, timeout=30)
        assert posted.status_code == 403 and posted.json() == {"detail": "refused: a request from another site"}
    same = httpx.post(f"{base}/gradio_api/queue/join", content=b"{}", headers={"Origin": base}, timeout=30)
    assert same.status_code not in (400, 403) or "refused" not in same.text  # the page's own: Gradio answers it


def test_uploads_stay_in_the_workspace_for_its_user_and_no_file_route_serves_them(open_server):
    """Gradio kept every upload in /tmp/gradio for good, its folders open to every user, and its other file
    route (/gradio_api/file/PATH) served them back."""
    import stat

    import httpx

    port, studio = open_server
    base = f"http://127.0.0.1:{port}"
    uploaded = httpx.post(f"{base}/gradio_api/upload", timeout=30,
                          files={"files": ("faq.jsonl", b'{"prompt": "secret question", "completion": "a"}\n')})
    path = uploaded.json()[0]
    assert path.startswith(str(studio.home / "uploads") + "/")
    assert stat.S_IMODE((studio.home / "uploads").stat().st_mode) == 0o700
    for form in (f"/gradio_api/file/{path.lstrip('/')}", f"/gradio_api/file/{path}"):
        answer = httpx.get(base + form, timeout=30)
        assert answer.status_code in (403, 404) and "secret question" not in answer.text, (form, answer.status_code)


def test_a_served_studio_takes_no_file_path_for_a_dataset(open_server, tmp_path):
    """A page's request naming a path (a dropdown's value edited in the browser) imported any file the server
    could read into the catalogue, where every browser saw its rows."""
    from pipelines.data import DataError

    _, studio = open_server
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"prompt": "the password?", "completion": "hunter2"}\n')
    with pytest.raises(DataError) as err:
        studio.resolve_dataset(str(secret))
    assert str(err.value).startswith(f"dataset '{secret}' is not a catalogue id, a sample (quillpad_faq")
    assert "(import a file on the Data tab)" in str(err.value)
    assert studio.list_datasets() == []


def test_a_proxys_name_is_answered_once_allowed_and_every_loopback_bind_is_guarded(monkeypatch):
    """Behind a reverse proxy (TLS) every request carries the proxy's public name: STUDIO_ALLOWED_HOSTS names it.
    A bind to 127.0.0.2 or a long IPv6 loopback form skipped the Host check."""
    import asyncio

    from studio.launch import SameOriginOnly

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def ask(guard, host, method="GET", origin=None):
        headers = [(b"host", host.encode())] + ([(b"origin", origin.encode())] if origin else [])
        said = []

        async def send(message):
            said.append(message)

        asyncio.run(guard({"type": "http", "method": method, "path": "/", "headers": headers}, None, send))
        return said[0]["status"]

    monkeypatch.setenv("STUDIO_ALLOWED_HOSTS", "studio.example.com, lab.example.org")
    guard = SameOriginOnly(app, host="127.0.0.1")
    assert ask(guard, "studio.example.com") == 200
    assert ask(guard, "studio.example.com", "POST", "https://studio.example.com") == 200
    assert ask(guard, "127.0.0.1:7860", "POST", "https://studio.example.com") == 200  # a proxy that rewrites Host
    assert ask(guard, "evil.example") == 400
    assert ask(guard, "127.0.0.1:7860", "POST", "https://evil.example") == 403
    assert ask(guard, "[::1]:7860") == ask(guard, "LOCALHOST:7860") == 200
    for bound, other in (("127.0.0.2", "127.0.0.2:7860"), ("0:0:0:0:0:0:0:1", "[::1]:7860")):
        assert ask(SameOriginOnly(app, host=bound), other) == 200
        assert ask(SameOriginOnly(app, host=bound), "evil.example:7860") == 400


def test_uploads_a_day_old_go_when_the_server_starts(tmp_path):
    """Gradio removes only the uploads it saw made: a server killed or a reboot left the rest for good."""
    import os
    import time

    from studio.launch import sweep_uploads

    old, new = tmp_path / "a" / "old.csv", tmp_path / "b" / "new.csv"
    for path in (old, new):
        path.parent.mkdir()
        path.write_text("x")
    past = time.time() - 2 * 86400
    os.utime(old, (past, past))
    sweep_uploads(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["b", "b/new.csv"]


@pytest.mark.parametrize("content, mode, said", [
    ("ann:pw\n", 0o644, "--auth-file {f}: other users of this machine can read it (mode 644); make it yours alone "
                        "with: chmod 600 {f}"),
    ("# nobody yet\n\n", 0o600, "--auth-file {f}: no USER:PASSWORD line in it"),
    ("ann:pw\nbob\n", 0o600, "{f}, line 2: expected USER:PASSWORD"),
    ("ann:pw\n:pw\n", 0o600, "{f}, line 2: expected USER:PASSWORD"),
    ("ann:pw\n# bob\nann:other\n", 0o600, "{f}, line 3: user 'ann' is on line 1 already"),
])
def test_an_auth_file_that_cannot_be_used_is_refused_in_one_line(tmp_path, content, mode, said):
    accounts = tmp_path / "users"
    accounts.write_text(content)
    accounts.chmod(mode)
    with pytest.raises(LaunchError) as err:
        check_exposure("0.0.0.0", None, False, str(accounts))
    assert str(err.value) == said.format(f=accounts)


def test_an_auth_file_gives_one_account_a_line_and_stands_for_auth(tmp_path, capsys):
    from studio.cli import main

    accounts = tmp_path / "users"
    accounts.write_bytes("\ufeffann:correct horse\r\n# labelers\n bob : a:b \n".encode())  # (Notepad's BOM)
    accounts.chmod(0o600)
    assert check_exposure("0.0.0.0", None, True, str(accounts)) == [("ann", "correct horse"), ("bob", "a:b")]
    with pytest.raises(LaunchError, match="^give --auth or --auth-file, not both$"):
        check_exposure("127.0.0.1", "ann:pw", False, str(accounts))
    assert main(["serve", "--host", "0.0.0.0", "--auth-file", str(tmp_path / "none"),
                 "--home", str(tmp_path / "home")]) == 2
    assert capsys.readouterr().err == f"error: --auth-file {tmp_path / 'none'}: no such file\n"
