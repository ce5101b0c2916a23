"""What each fault test shows: its outcome, what the fault cost, and no secret leaked.

A fault test takes the `fault` fixture (conftest.py), which gives it a FaultRecord:

    fault.expect("recovered")      # or "failed clean": what the test goes on to assert
    fault.cost(seconds)            # the extra wall seconds the fault cost, where known
    fault.watch(path)              # a log file of a process the test started

At teardown every secret the servers of the session were started with (database
passwords, the sshd client's private key, the S3 secret) is looked for in the test's
captured output, the watched files, and what the Prefect API holds: logs, artifacts,
deployments, flow runs' parameters and state messages. A secret found fails the test.

With FLOWS_FAULT_RECORD naming a file, each fault test appends one JSON line to it;
bench/faults.py runs the fault tests that way and prints the table.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

RECORD_VARIABLE = "FLOWS_FAULT_RECORD"
OUTCOMES = ("recovered", "failed clean")
# Every secret of every server started in this process, as the scan looks for it.
KNOWN_SECRETS: set[str] = set()
# Shorter fragments would match ordinary text; a key's body lines are 70 characters.
_SHORTEST_SECRET = 12
# The most the API answers at once.
_API_PAGE = 200


def remember_secret(value: str | None) -> None:
    """Look for `value` in every later scan of this process."""
    if value and len(value) >= _SHORTEST_SECRET:
        KNOWN_SECRETS.add(value)


def remember_private_key(key_text: str) -> None:
    """Look for each line of a private key's body (a leak of part of it is a leak)."""
    for line in key_text.splitlines():
        if not line.startswith("-----"):
            remember_secret(line.strip())


def remember_secrets_of(server) -> None:
    """The secrets a started server holds: a password, a client key."""
    remember_secret(getattr(server, "password", None))
    client_key = getattr(server, "client_key", None)
    if client_key:
        remember_private_key(client_key)


def secrets_in(text: str, secrets) -> list[str]:
    """The secrets that occur in `text`, each once."""
    return [secret for secret in secrets if secret in text]


async def _api_texts(since: datetime) -> dict[str, str]:
    """What the Prefect API holds that a leak could reach, as text per kind."""
    # pylint: disable=import-outside-toplevel
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        LogFilter,
        LogFilterTimestamp,
    )

    async with get_client() as client:
        logs = []
        while True:  # the API answers at most a page at a time
            page = await client.read_logs(
                log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=since)),
                limit=_API_PAGE,
                offset=len(logs),
            )
            logs.extend(page)
            if len(page) < _API_PAGE:
                break
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=since)
            ),
            limit=_API_PAGE,
        )
        deployments = await client.read_deployments(limit=_API_PAGE)
        artifacts = await client.read_artifacts(limit=_API_PAGE)
    return {
        "API logs": "\n".join(log.message for log in logs),
        "flow runs": "\n".join(
            json.dumps(run.parameters, default=str) + (run.state.message or "")
            for run in runs
            if run.state is not None
        ),
        "deployments": "\n".join(d.json() for d in deployments),
        "artifacts": "\n".join(json.dumps(a.data, default=str) for a in artifacts),
    }


@dataclass
class FaultRecord:
    """One fault test's declared outcome, cost and the files its processes wrote."""

    test: str
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    expected: str | None = None
    extra_seconds: float | None = None
    watched: list[Path] = field(default_factory=list)
    own_secrets: set[str] = field(default_factory=set)
    places_scanned: int = 0

    def expect(self, outcome: str) -> None:
        """What the test asserts the fault ends in: recovered, or failed clean."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
        self.expected = outcome

    def cost(self, seconds: float) -> None:
        """The extra wall seconds the fault cost over a run without it."""
        self.extra_seconds = round(seconds, 2)

    def watch(self, path: Path | str) -> None:
        """A file (a worker's log, a command's output) to scan for secrets."""
        self.watched.append(Path(path))

    def secret(self, value: str) -> None:
        """One more secret to look for, of this test only."""
        self.own_secrets.add(value)

    def scan(self, captured: str, api_reachable: bool) -> dict[str, list[str]]:
        """Where each secret was found: {place: [secret, ...]}, empty when none."""
        secrets = KNOWN_SECRETS | self.own_secrets
        texts = {"captured output": captured}
        for path in self.watched:
            if path.is_file():
                texts[str(path)] = path.read_text(encoding="utf-8", errors="replace")
        if api_reachable:
            texts.update(asyncio.run(_api_texts(self.started)))
        self.places_scanned = len(texts)
        found = {place: secrets_in(text, secrets) for place, text in texts.items()}
        return {place: hits for place, hits in found.items() if hits}

    def write(self, passed: bool, leaks: dict[str, list[str]]) -> None:
        """Append this test's line to the record file, when one is asked for."""
        record_file = os.environ.get(RECORD_VARIABLE)
        if not record_file:
            return
        line = {
            "test": self.test,
            "expected": self.expected,
            "passed": passed,
            "extra_seconds": self.extra_seconds,
            "secrets_found": sum(len(hits) for hits in leaks.values()),
            "places_scanned": self.places_scanned,
        }
        with open(record_file, "a", encoding="utf-8") as record:
            record.write(json.dumps(line) + "\n")


def redacted(leaks: dict[str, list[str]]) -> str:
    """Where secrets leaked, never the secrets themselves."""
    return "; ".join(f"{len(hits)} in {place}" for place, hits in leaks.items())
