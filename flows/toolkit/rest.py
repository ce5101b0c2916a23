"""Paged REST APIs through httpx: each page's records as a DataFrame.

`iterate_pages` follows an API's paging, page after page, and yields each page's
records (`pandas.json_normalize` of the record path) as it arrives, so a large
result never sits in memory whole. Three paging kinds are known: a `Link` header's
`rel="next"` (GitHub, GitLab, many others), a cursor field in the body, and
offset/limit. `delivery.deliver_api_pages` writes the pages to any sink as one CSV.

A request answered 429 or 503 is tried again in place after the server's
`Retry-After`; other 5xx and broken connections after a short backoff; when the
block's `request_attempts` are spent the error reaches the task's retries. 400,
401, 403, 404 and other 4xx fail at once with one line naming the URL, the values of
query parameters that look secret (`api_key=...`) masked.

The block's login and headers go only to the origin (scheme, host and port) of its
base URL: not to a redirect elsewhere, nor over plain HTTP from an https API. A next
page on another origin is refused, and so is paging that repeats itself (the same
URL, cursor or page twice) or passes `max_pages` (default 10,000): the read fails in
one line rather than loop or load a page twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Dict, Iterable, Iterator, Optional, Sequence
from urllib.parse import quote

import httpx
import pandas as pd
from prefect import task
from prefect.blocks.core import Block
from prefect.blocks.system import Secret

from toolkit.prefect_majors import Field
from toolkit import retries
from toolkit.logs import run_logger

# Query parameter names whose values are masked in logs and errors: a substring match.
SECRET_PARAMETER_WORDS = ("token", "key", "secret", "password", "sig", "auth", "code")
WAIT_IN_PLACE_STATUSES = (429, 503)
BACKOFF_SECONDS = 1.0
MASK = "***"
# More pages than any API a nightly run reads; a paging bug fails before it loops long.
DEFAULT_MAX_PAGES = 10_000
MAX_REDIRECTS = 10
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SECONDS = re.compile(r"[0-9]{1,9}")


class PagingError(ValueError):
    """The API's paging cannot be followed safely: one line says why."""


def origin_of(url: httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port filled in for http and https."""
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _origin_text(origin: tuple[str, str, int | None]) -> str:
    scheme, host, port = origin
    return f"{scheme}://{host}:{port}"


class OriginOnlyAuth(httpx.Auth):
    """Adds the block's headers and login to requests for one origin only."""

    def __init__(self, origin, headers: dict[str, str]):
        self.origin = origin
        self.headers = headers

    def auth_flow(self, request: httpx.Request):
        if origin_of(request.url) == self.origin:
            request.headers.update(self.headers)
        yield request


class ApiConnection(Block):
    """An HTTP API: its base URL, how to log in, and headers every request sends."""

    _block_type_name = "Flows API Connection"
    _description = "Base URL, headers and login of a REST API, token or password apart."

    base_url: str = Field(..., description="URL that request paths start from.")
    bearer_token: Optional[Secret] = Field(
        None, description="Secret holding a bearer token (Authorization: Bearer)."
    )
    username: Optional[str] = Field(None, description="Login name for basic auth.")
    password: Optional[Secret] = Field(
        None, description="Secret holding the basic-auth password."
    )
    headers: Dict[str, str] = Field(
        default_factory=dict, description="Headers sent with every request."
    )
    secret_headers: Optional[Secret] = Field(
        None,
        description="Secret holding a JSON object of headers sent with every "
        "request, such as an X-Api-Key.",
    )
    request_attempts: int = Field(
        3, description="Tries of one request (429, 5xx, broken connections)."
    )
    longest_wait_seconds: float = Field(
        300, description="The longest Retry-After waited out in place."
    )
    timeout_seconds: float = Field(30, description="Connect and read timeout.")

    def login_headers(self) -> dict[str, str]:
        """Every header the block adds, login and secret headers included."""
        headers = dict(self.headers)
        if self.secret_headers is not None:
            # pylint: disable-next=no-member  # a field's value once made
            headers.update(json.loads(self.secret_headers.get()))
        if self.bearer_token is not None:
            # pylint: disable-next=no-member  # a field's value once made
            headers["Authorization"] = f"Bearer {self.bearer_token.get()}"
        elif self.username:
            # pylint: disable-next=no-member  # a field's value once made
            password = self.password.get() if self.password is not None else ""
            login = base64.b64encode(f"{self.username}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {login}"
        return headers

    def client(self) -> httpx.Client:
        """An httpx client of this API, logged in for its own origin only.
        Redirects are followed one request at a time (get_json), so that each hop
        gets the login only on that origin."""
        return httpx.Client(
            base_url=self.base_url,
            auth=OriginOnlyAuth(
                origin_of(httpx.URL(self.base_url)), self.login_headers()
            ),
            timeout=self.timeout_seconds,
            follow_redirects=False,
        )


@dataclass(frozen=True)
class LinkPaging:
    """The next page's URL is the `Link` header's `rel="next"`; none on the last."""


@dataclass(frozen=True)
class CursorPaging:
    """The body names the next page's cursor (`cursor_field`, dotted for nested
    fields), sent back as the query parameter `cursor_parameter`; empty on the last."""

    cursor_field: str = "next_cursor"
    cursor_parameter: str = "cursor"


@dataclass(frozen=True)
class OffsetPaging:
    """Pages of `limit` records at `offset`; a shorter page is the last."""

    limit: int = 100
    offset_parameter: str = "offset"
    limit_parameter: str = "limit"


Paging = LinkPaging | CursorPaging | OffsetPaging


def public_url(url: httpx.URL | str) -> str:
    """`url` with the values of secret-looking query parameters masked."""
    url = httpx.URL(str(url))
    if not url.query:
        return str(url)
    fields = [
        f"{quote(name)}="
        + (MASK if any(w in name.lower() for w in SECRET_PARAMETER_WORDS) else quote(v))
        for name, v in url.params.multi_items()
    ]
    return f"{url.copy_with(query=None)}?{'&'.join(fields)}"


def _retry_after(response: httpx.Response, attempt: int, longest: float) -> float:
    """Seconds to wait: the server's Retry-After (seconds or a date), else a backoff."""
    value = response.headers.get("Retry-After", "").strip()
    wait = BACKOFF_SECONDS * 2 ** (attempt - 1)
    if _SECONDS.fullmatch(value):  # ASCII digits only: "²" is a digit to isdigit()
        wait = float(value)
    elif value:
        try:
            wait = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            pass
    return min(max(wait, 0.0), longest)


def _status_error(response: httpx.Response, tries: int) -> httpx.HTTPStatusError:
    request = response.request
    status = response.status_code
    advice = {
        400: "the request is wrong: check the path and parameters",
        401: "the login was refused: check the API block's token or password",
        403: "the login may not read this: ask the API's owner for access",
        404: "no such resource: check the path",
    }.get(status, f"tried {tries} time{'s' if tries > 1 else ''}")
    message = (
        f"{request.method} {public_url(request.url)} answered {status} "
        f"{response.reason_phrase}: {advice}"
    )
    return httpx.HTTPStatusError(message, request=request, response=response)


def with_params(url: str | httpx.URL, params: dict | None) -> httpx.URL:
    """`url` with `params` added to its own query (a name in both takes params'
    value): httpx's `params=` would replace the query, filters and all."""
    url = httpx.URL(str(url))
    return url.copy_merge_params(params) if params else url


def _get_following_redirects(client: httpx.Client, url: httpx.URL) -> httpx.Response:
    """GET, each redirect followed as a new request: the login only goes where the
    client's auth allows, whatever the redirect names."""
    for _ in range(MAX_REDIRECTS + 1):
        response = client.get(url)
        if not response.has_redirect_location:
            return response
        url = response.url.join(response.headers["Location"])
    raise PagingError(f"GET {public_url(url)}: more than {MAX_REDIRECTS} redirects")


def get_json(
    client: httpx.Client, connection: ApiConnection, url: str, params=None
) -> httpx.Response:
    """GET `url`, tried again in place as the module says; the answer, status 2xx."""
    attempts = max(connection.request_attempts, 1)
    target = with_params(url, params)
    for attempt in range(1, attempts + 1):
        try:
            response = _get_following_redirects(client, target)
        except httpx.TransportError as error:
            if attempt == attempts or not retries.is_transient(error):
                raise
            wait = BACKOFF_SECONDS * 2 ** (attempt - 1)
            reason = type(error).__name__
        else:
            if response.is_success:
                return response
            status = response.status_code
            transient = status in WAIT_IN_PLACE_STATUSES or status >= 500
            if attempt == attempts or not transient:
                raise _status_error(response, attempt)
            wait = _retry_after(response, attempt, connection.longest_wait_seconds)
            reason = f"{status} {response.reason_phrase}"
        run_logger().warning(
            "GET %s: %s; trying again in %.1f s (%d of %d)",
            public_url(client.build_request("GET", target).url),
            reason,
            wait,
            attempt + 1,
            attempts,
        )
        time.sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


def page_frame(body: Any, records: str | Sequence[str] | None) -> pd.DataFrame:
    """A page's records as a frame: json_normalize of the record path (dotted, or a
    list of keys; None: the body is the list of records)."""
    if isinstance(records, str):
        records = records.split(".")
    if records is None:
        frame = pd.json_normalize(body)
    else:
        frame = pd.json_normalize(body, record_path=list(records))
    return _lists_as_json(frame)


def _lists_as_json(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists (and objects json_normalize leaves whole) as JSON text: a CSV field
    holds text, and JSON is what a reader can parse back."""
    for name in frame.columns[frame.dtypes == object]:
        column = frame[name]
        if column.map(lambda value: isinstance(value, (list, dict))).any():
            frame[name] = column.map(
                lambda value: (
                    json.dumps(value) if isinstance(value, (list, dict)) else value
                )
            )
    return frame


def _field(body: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        if not isinstance(body, dict):
            return None
        body = body.get(name)
    return body


def _next_request(paging, response, body, rows) -> httpx.URL | None:
    """The next page's URL, or None after the last. It keeps the first request's
    query (filters included), only the paging parameter changed."""
    if isinstance(paging, LinkPaging):
        link = response.links.get("next", {}).get("url")
        return response.url.join(link) if link else None
    if isinstance(paging, CursorPaging):
        cursor = _field(body, paging.cursor_field)
        if cursor in (None, ""):
            return None
        return with_params(response.url, {paging.cursor_parameter: cursor})
    if isinstance(paging, OffsetPaging):
        if rows < paging.limit:
            return None
        offset = int(response.url.params[paging.offset_parameter]) + paging.limit
        return with_params(response.url, {paging.offset_parameter: offset})
    return None


class _PagingGuard:
    """Refuses a next page on another origin, a URL or page seen before, and pages
    past the cap."""

    def __init__(self, first: httpx.URL, max_pages: int):
        self.origin = origin_of(first)
        self.max_pages = max_pages
        self.urls: set[str] = set()
        self.bodies: set[str] = set()

    def check_page(self, response: httpx.Response) -> None:
        """A page read: refuse it when the API sent the same one before."""
        digest = hashlib.sha256(response.content).hexdigest()
        if len(response.content) > 2 and digest in self.bodies:
            raise PagingError(
                f"{public_url(response.url)} answered a page it had already sent: "
                "the API ignores its paging parameter; stopped"
            )
        self.bodies.add(digest)
        self.urls.add(str(response.url))

    def check_next(self, url: httpx.URL, pages: int) -> None:
        """Refuse the next page's URL before it is asked for."""
        if origin_of(url) != self.origin:
            raise PagingError(
                f"the next page is on {_origin_text(origin_of(url))}, not the API's "
                f"{_origin_text(self.origin)}: refused, the login is for the API only"
            )
        if str(url) in self.urls:
            raise PagingError(
                f"the next page is one already read ({public_url(url)}): the API's "
                "paging repeats itself; stopped"
            )
        if pages >= self.max_pages:
            raise PagingError(
                f"{pages:,} pages read and the API names one more: raise max_pages "
                "if it really has more"
            )


def iterate_pages(  # pylint: disable=too-many-arguments
    connection: ApiConnection,
    path: str,
    *,
    records: str | Sequence[str] | None = None,
    paging: Paging | None = None,
    params: dict[str, Any] | None = None,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> Iterator[pd.DataFrame]:
    """Each page's records of GET `path` as a DataFrame, page after page.

    `records` is where the records are in a page's JSON (`"data"`,
    `"result.items"`); `paging` how the next page is found (None: one page only);
    PagingError past `max_pages` pages, or when the paging repeats itself.
    """
    params = dict(params or {})
    if isinstance(paging, OffsetPaging):
        params.setdefault(paging.offset_parameter, 0)
        params[paging.limit_parameter] = paging.limit
    pages = rows = 0
    with connection.client() as client:
        url: httpx.URL | None = client.build_request(
            "GET", with_params(path, params)
        ).url
        where = public_url(client.build_request("GET", path).url)
        guard = _PagingGuard(url, max_pages)
        while url is not None:
            response = get_json(client, connection, url)
            guard.check_page(response)
            body = response.json()
            frame = page_frame(body, records)
            pages, rows = pages + 1, rows + len(frame)
            url = _next_request(paging, response, body, len(frame))
            if url is not None:
                guard.check_next(url, pages)
            if len(frame):  # offset paging's last request may find nothing
                yield frame
    run_logger().info(
        "read %d pages, %s records from %s",
        pages,
        f"{rows:,}",
        where,
    )


def aligned(
    frames: Iterable[pd.DataFrame], columns: Sequence[str] | None = None
) -> Iterator[pd.DataFrame]:
    """Frames with the same columns, in one order: `columns`, else the first
    non-empty page's. JSON records may leave fields out: those are empty; a field
    the first page lacked is left out, with one warning."""
    warned = False
    for frame in frames:
        if columns is None:
            if frame.empty and len(frame.columns) == 0:
                continue
            columns = list(frame.columns)
        extra = [name for name in frame.columns if name not in columns]
        if extra and not warned:
            run_logger().warning(
                "fields %s are not in the first page: left out (name them in columns=)",
                ", ".join(map(str, extra)),
            )
            warned = True
        yield frame.reindex(columns=columns)


def aligned_pages(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    connection: ApiConnection,
    path: str,
    records: str | Sequence[str] | None,
    paging: Paging | None,
    params: dict[str, Any] | None,
    columns: Sequence[str] | None,
    max_pages: int,
) -> Iterator[pd.DataFrame]:
    """iterate_pages' frames, aligned to `columns` (see aligned)."""
    pages = iterate_pages(
        connection,
        path,
        records=records,
        paging=paging,
        params=params,
        max_pages=max_pages,
    )
    return aligned(pages, columns)


@task(**retries.TRANSIENT_RETRIES)
def read_api(  # pylint: disable=too-many-arguments
    connection: ApiConnection,
    path: str,
    *,
    records: str | Sequence[str] | None = None,
    paging: Paging | None = None,
    params: dict[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> pd.DataFrame:
    """Every page's records as one DataFrame: for results that fit in memory."""
    frames = list(
        aligned_pages(connection, path, records, paging, params, columns, max_pages)
    )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
