"""Claims against a real PostgreSQL, sshd and Prefect API: a run renames each file it
loads into a claim folder of its own, one rename wins when two runs race, a live
run's claims are left to it and a dead run's are adopted; a file that changes while
it loads is not archived as loaded; a partner's file name with a newline stays on
one line in logs, task runs and the artifact."""

import asyncio
import os

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from sqlalchemy import create_engine, text
from deploy_helpers import read_flow_run_logs
from conftest import files_under
from test_inbound import GOOD, NO_WAIT, ids_in, inbound_run, orders_target

from toolkit import claims, database, inbound, pickup
from toolkit.loading import LoadPlan

pytestmark = [pytest.mark.inbound, pytest.mark.usefixtures("prefect_api_url")]


@pytest.fixture
def target(postgres):
    """A PostgreSQL database with an orders table, as a connection block."""
    yield from orders_target(postgres)


def test_of_two_runs_one_claims_the_file_and_the_other_leaves_it(drop, target):
    """Run A renames the settled file into claimed/run-a/; run B, holding the same
    listing, finds it gone, and leaves A's claim alone while A lives."""
    folder, path = drop
    block, _ = target
    (path / "a.csv").write_text(GOOD["a.csv"])
    settled = folder.list_files("*.csv")
    with database.engine_of(block) as engine:
        with claims.ClaimLocks(engine, folder.describe(), "run-a") as run_a:
            first = inbound.claim_files.fn(folder, settled, NO_WAIT, run_a)
            with claims.ClaimLocks(engine, folder.describe(), "run-b") as run_b:
                second = inbound.claim_files.fn(folder, settled, NO_WAIT, run_b)
    assert [(c.name, c.path, c.size) for c in first] == [
        ("a.csv", "claimed/run-a/a.csv", len(GOOD["a.csv"]))
    ]
    assert not second
    assert files_under(path) == ["claimed/run-a/a.csv"]


def test_a_dead_runs_claims_are_adopted_once(drop, target):
    """Run A claims and dies (its connection closes, its lock goes): run B adopts
    the file into its own claim folder, and run C, while B lives, finds nothing."""
    folder, path = drop
    block, _ = target
    (path / "a.csv").write_text(GOOD["a.csv"])
    with database.engine_of(block) as engine:
        with claims.ClaimLocks(engine, folder.describe(), "run-a") as run_a:
            inbound.claim_files.fn(folder, folder.list_files("*.csv"), NO_WAIT, run_a)
        with claims.ClaimLocks(engine, folder.describe(), "run-b") as run_b:
            adopted = inbound.claim_files.fn(folder, [], NO_WAIT, run_b)
            with claims.ClaimLocks(engine, folder.describe(), "run-c") as run_c:
                third = inbound.claim_files.fn(folder, [], NO_WAIT, run_c)
    assert [(c.name, c.path) for c in adopted] == [("a.csv", "claimed/run-b/a.csv")]
    assert not third
    assert files_under(path) == ["claimed/run-b/a.csv"]
    assert (path / "claimed").exists() and not (path / "claimed" / "run-a").exists()


class WriterStillAppending(pickup.LocalDropFolder):
    """A local drop folder whose partner still has the file open and appends to it
    once the load has begun reading."""

    def open_file(self, name: str):
        reader = super().open_file(name)
        if name.startswith("claimed/"):
            with open(self.path / name, "a", encoding="utf-8") as handle:
                handle.write('9,"late",9.00\n')
        return reader


def test_a_file_that_changes_while_it_loads_is_left_and_loads_whole_next(
    target, tmp_path
):
    """The file grows after it settled and while it loads: nothing is committed,
    the run says why and leaves the file claimed; the next run loads it whole, and
    the ledger's size is the size of the file archived."""
    block, engine = target
    path = tmp_path / "drop"
    path.mkdir()
    (path / "a.csv").write_text(GOOD["a.csv"])
    first = inbound_run(WriterStillAppending(path), block, LoadPlan("orders"), NO_WAIT)
    assert [(r.file, r.outcome) for r in first] == [("a.csv", "left")]
    assert "changed" in first[0].reason and "left for the next run" in first[0].reason
    assert ids_in(engine) == []
    second = inbound_run(
        pickup.LocalDropFolder(path), block, LoadPlan("orders"), NO_WAIT
    )
    assert [(r.file, r.outcome) for r in second] == [("a.csv", "loaded")]
    assert ids_in(engine) == [1, 2, 9]
    [archived] = (path / "processed").glob("*/a.csv")
    with engine.connect() as connection:
        ledger = connection.execute(
            text("SELECT size, rows FROM flows_inbound_ledger")
        ).all()
    assert ledger == [(archived.stat().st_size, 3)]


def test_a_file_name_with_a_newline_stays_on_one_line(target, tmp_path):
    """A partner's file named "a<newline>b.csv": loaded, and shown as a\\nb.csv in
    the log, the task run's name and the report, never split over two lines."""
    block, engine = target
    path = tmp_path / "drop"
    path.mkdir()
    (path / "a\nb.csv").write_text(GOOD["a.csv"])
    state = inbound_run(
        pickup.LocalDropFolder(path), block, LoadPlan("orders"), NO_WAIT,
        return_state=True,
    )  # fmt: skip
    reports = state.result()
    assert [(r.file, r.outcome) for r in reports] == [("a\\nb.csv", "loaded")]
    assert ids_in(engine) == [1, 2]
    assert files_under(path) == ["processed/<day>/a\nb.csv"]
    flow_run_id = state.state_details.flow_run_id
    logs = read_flow_run_logs(flow_run_id)
    assert not any("a\nb" in message for message in logs), logs
    assert any(message.startswith("loaded a\\nb.csv: 2 rows") for message in logs), logs
    names = asyncio.run(task_run_names(flow_run_id))
    assert "load a\\nb.csv" in names, names


async def task_run_names(flow_run_id) -> list[str]:
    """The names of a flow run's task runs."""
    async with get_client() as client:
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [task_run.name for task_run in task_runs]


def test_claims_on_sqlite_are_adopted_whoever_made_them(tmp_path):
    """SQLite has no lock a dead run lets go of: every claim folder found is
    adopted, as the docs say (one pick-up of a folder at a time there)."""
    path = tmp_path / "drop"
    (path / "claimed" / "run-a").mkdir(parents=True)
    (path / "claimed" / "run-a" / "a.csv").write_text(GOOD["a.csv"])
    folder = pickup.LocalDropFolder(path)
    engine = create_engine(f"sqlite:///{tmp_path / 'target.sqlite'}")
    with claims.ClaimLocks(engine, folder.describe(), "run-b") as run_b:
        adopted = inbound.claim_files.fn(folder, [], NO_WAIT, run_b)
    engine.dispose()
    assert [c.path for c in adopted] == ["claimed/run-b/a.csv"]
    assert os.listdir(path / "claimed") == ["run-b"]
