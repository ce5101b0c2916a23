"""Paged REST APIs against a real HTTP server on 127.0.0.1 (the standard library's).

The server serves one API of 100 pages three ways (Link header, cursor in the body,
offset/limit), and endpoints that answer 429 or 500 once, 503 always, or 401. Its
records are nested and leave fields out, as real APIs' do.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pandas as pd
import pytest
from guide_snippets import guide_module
from prefect.blocks.system import Secret
from test_faults import QUICK_RETRIES, SLOW_RETRIES, run_in_a_flow

from toolkit import connections, delivery, rest, retries
from toolkit.rest import ApiConnection, CursorPaging, LinkPaging, OffsetPaging

pytestmark = pytest.mark.rest

PAGES = 100
PAGE_SIZE = 50
TOKEN = "api-token-7f3e9a-never-logged"
API_KEY = "query-key-b81d-never-logged"


def record(number: int) -> dict:
    """One record: nested fields, a list, and an e-mail on even numbers only."""
    item = {
        "id": number,
        "name": f"course {number}",
        "owner": {"login": f"prof{number % 7}", "id": number % 7},
        "tags": ["core", f"t{number % 3}"],
        "credits": number % 5 + 0.5,
    }
    if number % 2 == 0:
        item["email"] = f"c{number}@campus.example"
    return item


RECORDS = [record(number) for number in range(1, PAGES * PAGE_SIZE + 1)]


class Api(BaseHTTPRequestHandler):
    """The API's endpoints; counts every request by path in the server's `seen`."""

    protocol_version = "HTTP/1.1"  # keep-alive, as APIs serve
    # Headers and body leave in two writes: without this, each page waits for the
    # client's delayed ACK (40 ms).
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        """Quiet: the test reads the counts."""

    def do_GET(self):  # pylint: disable=invalid-name
        """Route by path."""
        url = urlsplit(self.path)
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        seen = self.server.seen
        seen[url.path] = seen.get(url.path, 0) + 1
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.answer(401, {"error": "bad token"})
        if self.headers.get("X-Api-Key", API_KEY) != API_KEY:
            return self.answer(401, {"error": "bad key"})
        route = {
            "/link/courses": self.link_page,
            "/cursor/courses": self.cursor_page,
            "/offset/courses": self.offset_page,
            **self.hostile_routes(),
        }.get(url.path)
        if route is not None:
            return route(query)
        if url.path.startswith("/flaky/"):
            return self.flaky(int(url.path.rsplit("/", 1)[1]), seen[url.path])
        return self.answer(404, {"error": "no such path"})

    def answer(self, status: int, body, headers: dict | None = None):
        """Send `body` as JSON."""
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {
            "Content-Type": "application/json",
            **(headers or {}),
        }.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def link_page(self, query):
        """?page=N; the next page in the Link header, its query holding the key."""
        page = int(query.get("page", 1))
        headers = {}
        if page < PAGES:
            port = self.server.server_address[1]
            following = f"http://127.0.0.1:{port}/link/courses?page={page + 1}"
            headers["Link"] = f'<{following}&api_key={API_KEY}>; rel="next"'
        start = (page - 1) * PAGE_SIZE
        self.answer(200, {"data": RECORDS[start : start + PAGE_SIZE]}, headers)

    def cursor_page(self, query):
        """?cursor=c<N>; the next cursor in meta.next_cursor, null on the last page."""
        page = int(query.get("cursor", "c1")[1:])
        start = (page - 1) * PAGE_SIZE
        following = f"c{page + 1}" if page < PAGES else None
        body = {
            "result": {"items": RECORDS[start : start + PAGE_SIZE]},
            "meta": {"next_cursor": following},
        }
        self.answer(200, body)

    def offset_page(self, query):
        """?offset=&limit=: a bare list of records."""
        offset, limit = int(query["offset"]), int(query["limit"])
        self.answer(200, RECORDS[offset : offset + limit])

    def hostile_routes(self) -> dict:
        """Endpoints that page or redirect as a careless or hostile API would."""
        elsewhere = f"http://127.0.0.1:{self.server.elsewhere_port}"
        own = f"http://127.0.0.1:{self.server.server_address[1]}"

        def link_to(target: str):
            return lambda query: self.answer(
                200, {"data": RECORDS[:2]}, {"Link": f'<{target}>; rel="next"'}
            )

        def redirect_to(target: str):
            return lambda query: self.answer(302, {}, {"Location": target})

        return {
            "/foreign-next": link_to(f"{elsewhere}/p2"),
            "/self-next": link_to(f"{own}/self-next"),
            "/redirect-away": redirect_to(f"{elsewhere}/landing"),
            "/redirect-home": redirect_to(f"{own}/link/courses?page={PAGES}"),
            "/stuck-cursor": lambda query: self.answer(
                200, {"items": RECORDS[:2], "next": "c1"}
            ),
            "/ignored-offset": lambda query: self.answer(200, RECORDS[:PAGE_SIZE]),
            "/filtered": self.filtered_page,
            "/superscript-retry": lambda query: self.flaky_with("²"),
        }

    def filtered_page(self, query):
        """?status=open&offset=&limit=: every request must keep the filter."""
        if query.get("status") != "open":
            return self.answer(400, {"error": "status filter lost"})
        return self.offset_page(query)

    def flaky_with(self, retry_after: str):
        """429 with this Retry-After on the first request, then a page."""
        if self.server.seen[urlsplit(self.path).path] == 1:
            return self.answer(429, {"error": "later"}, {"Retry-After": retry_after})
        return self.answer(200, {"data": RECORDS[:3]})

    def flaky(self, status: int, count: int):
        """`status` on the first request (503: on every one), then a page."""
        if count == 1 or status == 503:
            headers = {"Retry-After": "1"} if status in (429, 503) else {}
            return self.answer(status, {"error": "later"}, headers)
        return self.answer(200, {"data": RECORDS[:3]})


class Elsewhere(BaseHTTPRequestHandler):
    """Another host's server: records each request's path and headers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        """Quiet: the test reads what it recorded."""

    def do_GET(self):  # pylint: disable=invalid-name
        """Record the request; answer a page of records."""
        self.server.requests.append((self.path, dict(self.headers)))
        data = json.dumps({"data": [{"id": -1, "name": "planted"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serving(handler):
    """A threading HTTP server of `handler` on 127.0.0.1, started."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def elsewhere_server():
    """A second host (another port: another origin) for this module."""
    server = serving(Elsewhere)
    server.requests = []
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def api_server(elsewhere_server):
    """The API on 127.0.0.1, in a thread, for this module."""
    server = serving(Api)
    server.seen = {}
    server.elsewhere_port = elsewhere_server.server_address[1]
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(api_server):
    """An unsaved API block of the server (the token in a Secret); counts reset."""
    api_server.seen.clear()
    port = api_server.server_address[1]
    return ApiConnection(
        base_url=f"http://127.0.0.1:{port}",
        bearer_token=Secret(value=TOKEN),
        headers={"Accept": "application/json"},
        timeout_seconds=10,
    )


PAGINGS = {
    "link": ("/link/courses", "data", LinkPaging()),
    "cursor": ("/cursor/courses", "result.items", CursorPaging("meta.next_cursor")),
    "offset": ("/offset/courses", None, OffsetPaging(limit=PAGE_SIZE)),
}


@pytest.mark.parametrize("kind", list(PAGINGS))
def test_a_100_page_api_is_read_page_by_page(kind, api, api_server):
    """Each paging kind reads the 100 pages in order, each page a frame of its
    records flattened (owner.login), lists as JSON text."""
    path, records, paging = PAGINGS[kind]
    started = time.monotonic()
    frames = list(rest.iterate_pages(api, path, records=records, paging=paging))
    seconds = time.monotonic() - started
    print(f"\n{kind} paging: {len(frames)} pages, {seconds:.2f} s")
    # Offset paging cannot know that a full last page is the last: one more request.
    requests = PAGES + 1 if kind == "offset" else PAGES
    assert len(frames) == PAGES and api_server.seen == {path: requests}
    whole = pd.concat(frames, ignore_index=True)
    assert whole["id"].tolist() == list(range(1, PAGES * PAGE_SIZE + 1))
    assert whole.loc[0, "owner.login"] == "prof1"
    assert whole.loc[0, "tags"] == '["core", "t1"]'


def test_pages_are_yielded_as_they_arrive(api, api_server):
    """The source asks for a page only when the one before is consumed."""
    pages = rest.iterate_pages(
        api, "/link/courses", records="data", paging=LinkPaging()
    )
    next(pages)
    assert api_server.seen == {"/link/courses": 1}
    next(pages)
    assert api_server.seen == {"/link/courses": 2}
    pages.close()


def test_the_pages_are_delivered_as_one_csv(api, tmp_path):
    """deliver_api_pages writes every page to a folder sink as one CSV with one
    header; a field some records leave out is empty there."""
    report = delivery.deliver_api_pages.fn(
        api,
        "/cursor/courses",
        delivery.LocalFolderSink(str(tmp_path)),
        "courses.csv",
        records="result.items",
        paging=CursorPaging("meta.next_cursor"),
    )
    lines = (tmp_path / "courses.csv").read_text(encoding="utf-8").splitlines()
    assert report.rows == PAGES * PAGE_SIZE == len(lines) - 1
    assert lines[0] == "id,name,tags,credits,owner.login,owner.id,email"
    assert lines[1] == '1,"course 1","[""core"", ""t1""]",1.5,"prof1",1,'
    assert lines[2] == (
        '2,"course 2","[""core"", ""t2""]",2.5,"prof2",2,"c2@campus.example"'
    )
    assert lines[-1].startswith(f"{PAGES * PAGE_SIZE},")


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize("status", [429, 500])
def test_a_429_or_500_is_tried_again_in_place(status, api, api_server):
    """429 with Retry-After: 1, or 500, then a page: the request is tried again in
    place (after the Retry-After's second for 429) and the task runs once."""
    started = time.monotonic()
    flow_state, task_state, run_count = run_in_a_flow(
        rest.read_api.with_options(**QUICK_RETRIES),
        api,
        f"/flaky/{status}",
        records="data",
    )
    seconds = time.monotonic() - started
    requests = api_server.seen[f"/flaky/{status}"]
    print(
        f"\n{status} then 200: {requests} requests, the task took {run_count} "
        f"attempt(s), {seconds:.1f} s"
    )
    assert flow_state.is_completed() and run_count == 1 and requests == 2
    assert task_state.result()["id"].tolist() == [1, 2, 3]
    if status == 429:
        assert seconds >= 1.0


@pytest.mark.usefixtures("prefect_api_url")
def test_a_503_outlasting_the_request_tries_reaches_the_task_retries(
    fault, api, api_server
):
    """503 on every request: once the block's tries are spent the error is the
    task's, which retries it (503 is transient), and fails in the end."""
    fault.expect("failed clean")
    fault.secret(TOKEN)
    api.request_attempts = 2
    flow_state, task_state, run_count = run_in_a_flow(
        rest.read_api.with_options(**{**QUICK_RETRIES, "retries": 1}),
        api,
        "/flaky/503",
        records="data",
    )
    print(f"\n503 always: the task took {run_count} attempts, 2 requests each")
    assert flow_state.is_failed() and run_count == 2
    assert api_server.seen["/flaky/503"] == 4
    message = str(task_state.result(raise_on_failure=False))
    assert message.endswith("answered 503 Service Unavailable: tried 2 times")


@pytest.mark.usefixtures("prefect_api_url")
def test_a_401_is_one_line_tried_once_without_query_secrets(fault, api, api_server):
    """A refused token: one request, the task fails at once, with one line naming
    the URL with its api_key masked, and neither secret in it."""
    fault.expect("failed clean")
    fault.secret(TOKEN)
    fault.secret(API_KEY)
    api.bearer_token = Secret(value="expired-token-0000")
    flow_state, task_state, run_count = run_in_a_flow(
        rest.read_api.with_options(**SLOW_RETRIES),
        api,
        "/link/courses",
        records="data",
        params={"page": 1, "api_key": API_KEY},
    )
    print(f"\n401: the task took {run_count} attempt")
    assert flow_state.is_failed() and run_count == 1
    assert api_server.seen == {"/link/courses": 1}
    message = str(task_state.result(raise_on_failure=False))
    assert message == (
        f"GET {api.base_url}/link/courses?page=1&api_key=*** answered 401 "
        "Unauthorized: the login was refused: check the API block's token or password"
    )
    assert API_KEY not in message and "expired-token" not in message


@pytest.mark.usefixtures("prefect_api_url")
def test_no_api_block_is_one_line_naming_setup():
    """An API has no dev stand-in: a missing block names the setup command."""
    with pytest.raises(ValueError) as missing:
        connections.api_for("lms", "dev")
    assert str(missing.value) == (
        "no Flows API Connection block named 'lms-api-dev': create it with "
        "`python3 flows/util.py setup --env dev --api lms`"
    )


@pytest.mark.usefixtures("prefect_api_url")
def test_the_guides_rest_flow_runs(api, api_server, tmp_path, monkeypatch):
    """The guide's REST snippet, as a flow run, with block lms-api-dev saved (the
    server's /courses is its cursor API): every course in one CSV in the dev folder."""
    flow_module = guide_module("sources-and-sinks.md", "export_courses.py", tmp_path)
    monkeypatch.setenv("FLOWS_OUTPUT_DIR", str(tmp_path / "output"))
    api.base_url += "/cursor"
    api.save("lms-api-dev", overwrite=True)
    assert flow_module.export_courses(env="dev") == PAGES * PAGE_SIZE
    assert api_server.seen == {"/cursor/courses": PAGES}
    lines = (tmp_path / "output" / "dev" / "courses.csv").read_bytes().splitlines()
    assert len(lines) == PAGES * PAGE_SIZE + 1


def read_all(api, path, **options) -> pd.DataFrame:
    """Every page of `path` in one frame, outside a flow run."""
    return rest.read_api.fn(
        api, path, records=options.pop("records", "data"), **options
    )


def test_credentials_never_reach_another_origin(api, api_server, elsewhere_server):
    """A Link to another host is refused before it is asked; a redirect to another
    host is followed without the token or the secret header; the API's own redirect
    keeps both."""
    elsewhere_server.requests.clear()
    api.secret_headers = Secret(value=json.dumps({"X-Api-Key": API_KEY}))
    with pytest.raises(rest.PagingError) as refused:
        read_all(api, "/foreign-next", paging=LinkPaging())
    print(f"\nforeign next link: {refused.value}")
    assert str(refused.value) == (
        f"the next page is on http://127.0.0.1:{elsewhere_server.server_address[1]}, "
        f"not the API's http://127.0.0.1:{api_server.server_address[1]}: refused, "
        "the login is for the API only"
    )
    assert elsewhere_server.requests == []

    planted = read_all(api, "/redirect-away")
    (path, headers) = elsewhere_server.requests[-1]
    assert path == "/landing" and planted["name"].tolist() == ["planted"]
    lowered = {name.lower(): value for name, value in headers.items()}
    assert "authorization" not in lowered and "x-api-key" not in lowered
    assert TOKEN not in str(headers) and API_KEY not in str(headers)

    home = read_all(api, "/redirect-home")
    assert len(home) == PAGE_SIZE and api_server.seen["/link/courses"] == 1


@pytest.mark.parametrize(
    "path, paging, records, reason",
    [  # (a path of the API, its paging, where its records are, the line's reason)
        ("/self-next", LinkPaging(), "data", "the next page is one already read"),
        (
            "/stuck-cursor",
            CursorPaging("next"),
            "items",
            "answered a page it had already sent",
        ),
        (
            "/ignored-offset",
            OffsetPaging(limit=PAGE_SIZE),
            None,
            "answered a page it had already sent",
        ),
    ],
)
def test_paging_that_repeats_itself_stops_in_one_line(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    api, api_server, path, paging, records, reason
):
    """A self-referencing Link, a cursor that comes back, a server that ignores the
    offset: the read fails after two requests at most, with one line saying why."""
    with pytest.raises(rest.PagingError) as stopped:
        read_all(api, path, paging=paging, records=records)
    print(f"\n{path}: {api_server.seen[path]} requests: {stopped.value}")
    assert reason in str(stopped.value) and "\n" not in str(stopped.value)
    assert api_server.seen[path] <= 2


def test_paging_past_max_pages_fails_instead_of_going_on(api, api_server):
    """max_pages=5 on the 100-page API: five requests, then one line."""
    with pytest.raises(rest.PagingError) as capped:
        read_all(api, "/link/courses", paging=LinkPaging(), max_pages=5)
    assert str(capped.value).startswith("5 pages read and the API names one more")
    assert api_server.seen == {"/link/courses": 5}
    assert rest.DEFAULT_MAX_PAGES == 10_000


def test_a_query_in_the_path_stays_on_every_page(api, api_server):
    """/filtered?status=open with offset paging: httpx's params= would drop the
    filter; every one of the 101 requests keeps it (the server answers 400 without)."""
    whole = read_all(
        api, "/filtered?status=open", paging=OffsetPaging(limit=PAGE_SIZE), records=None
    )
    assert len(whole) == PAGES * PAGE_SIZE
    assert api_server.seen == {"/filtered": PAGES + 1}


def test_a_retry_after_that_is_not_ascii_digits_waits_the_backoff(api, api_server):
    """Retry-After: ² (a digit to str.isdigit, not a number of seconds): the request
    is tried again after the backoff, with no ValueError."""
    frame = read_all(api, "/superscript-retry")
    assert frame["id"].tolist() == [1, 2, 3]
    assert api_server.seen["/superscript-retry"] == 2


def test_secret_headers_are_sent_and_kept_in_a_secret(api):
    """The API key header from the block's Secret reaches the API, and a wrong one
    is refused; the block's plain fields hold no header."""
    api.secret_headers = Secret(value=json.dumps({"X-Api-Key": API_KEY}))
    assert len(read_all(api, "/link/courses", params={"page": PAGES})) == PAGE_SIZE
    api.secret_headers = Secret(value=json.dumps({"X-Api-Key": "wrong"}))
    with pytest.raises(httpx.HTTPStatusError):
        read_all(api, "/link/courses", params={"page": PAGES})
    assert "X-Api-Key" not in json.dumps(api.headers)


def status_error(status: int) -> httpx.HTTPStatusError:
    """An answer of `status` as httpx raises it."""
    request = httpx.Request("GET", "http://127.0.0.1:1/x")
    return httpx.HTTPStatusError(
        "x", request=request, response=httpx.Response(status, request=request)
    )


@pytest.mark.parametrize(
    "error, transient",
    [
        (status_error(429), True),
        (status_error(503), True),
        (status_error(500), True),
        (status_error(502), True),
        (status_error(400), False),
        (status_error(401), False),
        (status_error(403), False),
        (status_error(404), False),
        (httpx.ConnectError("Connection refused"), True),
        (httpx.ReadTimeout("timed out"), True),
        (httpx.RemoteProtocolError("Server disconnected"), True),
        (httpx.UnsupportedProtocol("Request URL is missing a scheme"), False),
    ],
)
def test_http_errors_are_classified(error, transient):
    """429, 5xx and broken connections are transient; other 4xx are not."""
    assert retries.is_transient(error) is transient
