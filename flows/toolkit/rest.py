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
"""

from __future__ import annotations

import json
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
from pydantic.v1 import Field

from toolkit import retries
from toolkit.logs import run_logger

# Query parameter names whose values are masked in logs and errors: a substring match.
SECRET_PARAMETER_WORDS = ("token", "key", "secret", "password", "sig", "auth", "code")
WAIT_IN_PLACE_STATUSES = (429, 503)
BACKOFF_SECONDS = 1.0
MASK = "***"


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
    request_attempts: int = Field(
        3, description="Tries of one request (429, 5xx, broken connections)."
    )
    longest_wait_seconds: float = Field(
        300, description="The longest Retry-After waited out in place."
    )
    timeout_seconds: float = Field(30, description="Connect and read timeout.")

    def client(self) -> httpx.Client:
        """An httpx client of this API, logged in."""
        headers = dict(self.headers)
        auth = None
        if self.bearer_token is not None:
            # pylint: disable-next=no-member  # a field's value once made
            headers["Authorization"] = f"Bearer {self.bearer_token.get()}"
        elif self.username:
            # pylint: disable-next=no-member  # a field's value once made
            password = self.password.get() if self.password is not None else ""
            auth = httpx.BasicAuth(self.username, password)
        return httpx.Client(
            base_url=self.base_url,
            headers=headers,
            auth=auth,
            timeout=self.timeout_seconds,
            follow_redirects=True,
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
    if value.isdigit():
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


def get_json(
    client: httpx.Client, connection: ApiConnection, url: str, params=None
) -> httpx.Response:
    """GET `url`, tried again in place as the module says; the answer, status 2xx."""
    attempts = max(connection.request_attempts, 1)
    for attempt in range(1, attempts + 1):
        try:
            response = client.get(url, params=params)
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
            public_url(client.build_request("GET", url, params=params).url),
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


def _next_request(paging, response, body, params, rows):
    """(url, params) of the next page, or None after the last."""
    if isinstance(paging, LinkPaging):
        link = response.links.get("next", {}).get("url")
        return (str(response.url.join(link)), None) if link else None
    if isinstance(paging, CursorPaging):
        cursor = _field(body, paging.cursor_field)
        if cursor in (None, ""):
            return None
        return str(response.request.url.copy_with(query=None)), {
            **params,
            paging.cursor_parameter: cursor,
        }
    if isinstance(paging, OffsetPaging):
        if rows < paging.limit:
            return None
        offset = int(params[paging.offset_parameter]) + paging.limit
        url = str(response.request.url.copy_with(query=None))
        return url, {**params, paging.offset_parameter: offset}
    return None


def iterate_pages(  # pylint: disable=too-many-arguments
    connection: ApiConnection,
    path: str,
    *,
    records: str | Sequence[str] | None = None,
    paging: Paging | None = None,
    params: dict[str, Any] | None = None,
    max_pages: int | None = None,
) -> Iterator[pd.DataFrame]:
    """Each page's records of GET `path` as a DataFrame, page after page.

    `records` is where the records are in a page's JSON (`"data"`,
    `"result.items"`); `paging` how the next page is found (None: one page only).
    """
    params = dict(params or {})
    if isinstance(paging, OffsetPaging):
        params.setdefault(paging.offset_parameter, 0)
        params[paging.limit_parameter] = paging.limit
    pages = rows = 0
    request: tuple[str, dict | None] | None = (path, params)
    with connection.client() as client:
        where = public_url(client.build_request("GET", path).url)
        while request is not None and (max_pages is None or pages < max_pages):
            response = get_json(client, connection, *request)
            body = response.json()
            frame = page_frame(body, records)
            pages, rows = pages + 1, rows + len(frame)
            request = _next_request(
                paging, response, body, request[1] or {}, len(frame)
            )
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


@task(**retries.TRANSIENT_RETRIES)
def read_api(  # pylint: disable=too-many-arguments
    connection: ApiConnection,
    path: str,
    *,
    records: str | Sequence[str] | None = None,
    paging: Paging | None = None,
    params: dict[str, Any] | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every page's records as one DataFrame: for results that fit in memory."""
    frames = list(
        aligned(
            iterate_pages(
                connection, path, records=records, paging=paging, params=params
            ),
            columns,
        )
    )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
