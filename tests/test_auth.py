"""With a password (issue #18): before login the server shows the login page and nothing else, wrong
passwords are slowed per client without holding up anyone else, and the page after login stays small."""

from __future__ import annotations

import concurrent.futures
import socket

import httpx
import pytest

from studio.launch import LoginThrottle
from tests.conftest import FAQ

USER, PASSWORD = "ann", "correct horse"
OTHER, OTHER_PASSWORD = "bob", "battery: staple"
PAGE_BOUND = 1_500_000  # bytes of the page after login (it was 17.6 MB of API description in the page)


class Clock:
    """The server's clock for failed logins: it moves only when a test moves it, so the waits
    checked below do not depend on how fast this machine answers."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


CLOCK = Clock()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from studio.core import Studio
    from studio.launch import serve

    studio = Studio(tmp_path_factory.mktemp("auth") / "home")
    dataset = studio.import_dataset(FAQ, name="payroll questions")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    accounts = tmp_path_factory.mktemp("accounts") / "users"  # (one account a person: --auth-file)
    accounts.write_text(f"# who may sign in\n{USER}:{PASSWORD}\n\n{OTHER}:{OTHER_PASSWORD}\n")
    accounts.chmod(0o600)
    app = serve(studio, port=port, auth_file=str(accounts), block=False, login_throttle=LoginThrottle(clock=CLOCK))
    yield f"http://127.0.0.1:{port}", dataset["id"]
    app.close()


def login(base, password, client=None):
    """POST the login form, as `client` (an address uvicorn takes from X-Forwarded-For: the request
    itself comes from loopback, a trusted proxy, as the share tunnel's do)."""
    headers = {"X-Forwarded-For": client} if client else {}
    return httpx.post(f"{base}/login", data={"username": USER, "password": password}, headers=headers, timeout=30)


def test_before_login_only_the_login_page_is_served(server):
    base, dataset_id = server
    for query in ("", "?all_endpoints=true", "?deep_link=abc&all_endpoints=1", "?page="):
        page = httpx.get(f"{base}/{query}", timeout=30)
        assert page.status_code == 200, query
        assert len(page.content) < 20_000, (query, len(page.content))
        assert '"auth_required":true' in page.text
        # no catalogue, no API description, no component config
        for secret in (dataset_id, "payroll questions", "quillpad_faq", "on_start", "param-learning_rate"):
            assert secret not in page.text, (query, secret)
        assert '"named_endpoints":{}' in page.text and '"components":[]' in page.text
    # what the login page is drawn with stays open (Gradio's own files, the same for every app)
    assert httpx.get(f"{base}/theme.css", timeout=30).status_code == 200
    script = next(part.split('"')[0] for part in page.text.split('src="./')[1:] if part.startswith("assets/"))
    assert httpx.get(f"{base}/{script}", timeout=30).status_code == 200
    # everything else says 401 and shows nothing
    gets = ["/config", "/gradio_api/info", "/gradio_api/info?all_endpoints=true", "/gradio_api/openapi.json",
            "/gradio_api/runs?all_endpoints=true", "/gradio_api/runs", "/gradio_api/app_id", "/gradio_api/token",
            "/gradio_api/user", "/gradio_api/heartbeat/abc", "/gradio_api/queue/data?session_hash=abc",
            "/gradio_api/file=studio.db", "/gradio_api/run-history/buckets", "/gradio_api/vibe-code",
            "/monitoring", "/monitoring/abc", "/gradio_api/upload_progress?upload_id=x", "/docs", "/nowhere",
            "/studio-download/x20260101-000000-abcd?file=Modelfile"]
    posts = ["/gradio_api/queue/join", "/gradio_api/upload", "/gradio_api/run/on_start", "/gradio_api/cancel",
             "/gradio_api/reset", "/gradio_api/call/on_start", "/gradio_api/vibe-edit"]
    with httpx.Client(base_url=base, timeout=30) as client:
        answers = [(p, client.get(p)) for p in gets] + [(p, client.post(p, json={})) for p in posts]
    for path, answer in answers:
        assert answer.status_code == 401, (path, answer.status_code, answer.text[:200])
        assert dataset_id not in answer.text and "on_start" not in answer.text


def test_after_login_the_page_is_whole_and_small(server):
    base, dataset_id = server
    with httpx.Client(base_url=base, timeout=60) as client:
        assert client.post("/login", data={"username": USER, "password": PASSWORD},
                           headers={"X-Forwarded-For": "10.1.0.1"}).status_code == 200
        page, config = client.get("/"), client.get("/config")
        squeezed = client.get("/", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert page.status_code == config.status_code == 200
    # the app itself, so the checks before login mean something
    assert dataset_id in page.text and "param-learning_rate" in page.text
    assert len(page.content) < PAGE_BOUND and len(config.content) < PAGE_BOUND, (len(page.content), len(config.content))
    # what crosses a slow link: Gradio compresses only paths with a file extension, not the page
    assert squeezed.headers.get("content-encoding") == "gzip" and squeezed.content == page.content
    assert int(squeezed.headers["content-length"]) < 200_000, squeezed.headers["content-length"]


def test_wrong_passwords_are_slowed_per_client_and_others_get_in_at_once(server):
    base, _ = server
    answers = [login(base, f"guess {i}", "10.2.0.1") for i in range(20)]
    assert [a.status_code for a in answers] == [400] * 5 + [429] * 15
    assert {a.headers["Retry-After"] for a in answers[5:]} == {"1"}
    assert "Too many failed logins from this address; try again in 1 s." in answers[5].text
    # another client is not affected, and the locked one cannot log in even with the right password
    assert login(base, PASSWORD, "10.2.0.2").status_code == 200
    assert login(base, PASSWORD, "10.2.0.1").status_code == 429
    CLOCK.now += 1  # the wait it was told: one more try, which fails and doubles the wait
    assert login(base, "guess 20", "10.2.0.1").status_code == 400
    again = login(base, PASSWORD, "10.2.0.1")
    assert again.status_code == 429 and again.headers["Retry-After"] == "2"
    CLOCK.now += 1
    assert login(base, PASSWORD, "10.2.0.1").headers["Retry-After"] == "1"
    CLOCK.now += 1
    assert login(base, PASSWORD, "10.2.0.1").status_code == 200  # a success forgets the failures
    assert [login(base, "wrong", "10.2.0.1").status_code for _ in range(6)] == [400] * 5 + [429]


def test_each_person_of_an_auth_file_signs_in_with_their_own_password(server):
    """--auth-file: an account a line (a labeler each, under their own name), no password on the command line."""
    base, _ = server
    with httpx.Client(base_url=base, timeout=60) as client:
        answer = client.post("/login", data={"username": OTHER, "password": OTHER_PASSWORD},
                             headers={"X-Forwarded-For": "10.4.0.1"})
        assert answer.status_code == 200 and client.get("/config").status_code == 200
    assert httpx.post(f"{base}/login", data={"username": OTHER, "password": PASSWORD},
                      headers={"X-Forwarded-For": "10.4.0.2"}, timeout=30).status_code == 400


def test_a_burst_of_parallel_guesses_is_checked_one_at_a_time(server):
    base, _ = server
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda i: login(base, f"burst {i}", "10.3.0.1").status_code, range(32)))
    assert set(codes) <= {400, 429} and codes.count(400) <= 5, codes


def test_throttle_numbers():
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    waits = []
    for _ in range(12):
        throttle.failed("a")
        waits.append(throttle.wait_s("a"))
    assert waits == [0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert throttle.wait_s("b") == 0
    now[0] = 30.0
    assert throttle.wait_s("a") == 30.0
    now[0] = 30.0 + 900.1  # a quiet window forgets the client
    assert throttle.wait_s("a") == 0 and "a" not in throttle.failures
    for _ in range(5):
        throttle.failed("c")
    throttle.succeeded("c")
    assert throttle.wait_s("c") == 0
    small = LoginThrottle(clock=lambda: now[0], max_clients=3)
    for client in ("x", "y", "z"):
        small.failed(client)
    now[0] += 1000
    small.failed("w")  # the table is full: clients quiet for a window are dropped first
    assert set(small.failures) == {"w"}
