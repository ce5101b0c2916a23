"""Expected files, checked against the ledger of a real PostgreSQL with the clock as
a parameter: a run after the deadline that finds nothing fails in one line naming
what was expected, by when, and what came last; a run before it completes and says
it is still waiting; a file that came meets it; a gap too long fails."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from deploy_helpers import read_flow_run_logs
from prefect import flow
from test_inbound import GOOD, orders_target

from toolkit import inbound, ledger, pickup
from toolkit.expected import Expected
from toolkit.inbound import PickupRules
from toolkit.loading import LoadPlan

pytestmark = [pytest.mark.inbound, pytest.mark.usefixtures("prefect_api_url")]

HELSINKI = ZoneInfo("Europe/Helsinki")
# The clock of every run here: 07:00 in Helsinki, 05:00 UTC.
SEVEN_AM = datetime(2026, 12, 7, 7, 0, tzinfo=HELSINKI)
BY_SIX = Expected(files=1, by="06:00", timezone="Europe/Helsinki")


@pytest.fixture
def target(postgres):
    """A PostgreSQL database with an orders table, as a connection block."""
    yield from orders_target(postgres)


@pytest.fixture
def drop(tmp_path):
    """An empty local drop folder."""
    path = tmp_path / "drop"
    path.mkdir()
    return path


@flow
def pickup_at(folder, target, rules, now):
    """A pick-up run whose clock says `now`."""
    return inbound.pick_up_and_load(folder, target, LoadPlan("orders"), rules, now=now)


def loaded_earlier(engine, folder, path: str, loaded_at: datetime) -> None:
    """A ledger row of a file `path` loaded from `folder` at `loaded_at`, as an
    earlier night's run leaves one."""
    ledger.create_ledger(engine)
    with engine.begin() as connection:
        connection.execute(
            ledger.LEDGER.insert().values(
                source=folder.describe(), path=path, size=10, modified=loaded_at,
                sha256=path.ljust(64, "0"), rows=1, target_table="orders",
                mode="append", flow_run_id=None, loaded_at=loaded_at,
            )
        )  # fmt: skip


def test_after_the_deadline_with_nothing_the_run_fails_in_one_line(target, drop):
    """07:00, by 06:00 expected, yesterday's file the last: Failed, one line."""
    block, engine = target
    folder = pickup.LocalDropFolder(drop)
    loaded_earlier(engine, folder, "orders_1206.csv", SEVEN_AM - timedelta(hours=26))
    rules = PickupRules("orders_*.csv", settle_seconds=0, expect=BY_SIX)
    state = pickup_at(folder, block, rules, SEVEN_AM, return_state=True)
    assert state.is_failed()
    line = (
        f"expected 1 file matching orders_*.csv in {drop} by 06:00 Europe/Helsinki "
        "on 2026-12-07; 0 came; the last was orders_1206.csv, loaded 2026-12-06 "
        "05:00 EET"
    )
    assert state.message.endswith(f"ExpectedFilesMissing: {line}"), state.message
    assert line in read_flow_run_logs(state.state_details.flow_run_id)


def test_before_the_deadline_the_run_completes_and_says_it_waits(target, drop):
    """05:00, by 06:00 expected, nothing yet: Completed, with a line saying so."""
    block, _ = target
    rules = PickupRules("orders_*.csv", settle_seconds=0, expect=BY_SIX)
    folder = pickup.LocalDropFolder(drop)
    five_am = SEVEN_AM - timedelta(hours=2)
    state = pickup_at(folder, block, rules, five_am, return_state=True)
    assert state.is_completed(), state.message
    assert (
        f"still waiting: 0 of 1 file matching orders_*.csv in {drop} by 06:00 "
        "Europe/Helsinki on 2026-12-07"
    ) in read_flow_run_logs(state.state_details.flow_run_id)


def test_a_file_that_came_today_meets_the_expectation(target, drop):
    """A file loaded by this very run counts: Completed, and the file is named."""
    block, _ = target
    (drop / "orders_1207.csv").write_text(GOOD["a.csv"])
    rules = PickupRules(
        "orders_*.csv", settle_seconds=0, expect=Expected(files=1, by="00:00")
    )
    now = datetime.now(HELSINKI) + timedelta(minutes=1)  # the ledger's clock is real
    state = pickup_at(
        pickup.LocalDropFolder(drop), block, rules, now, return_state=True
    )
    assert state.is_completed(), state.message
    logs = read_flow_run_logs(state.state_details.flow_run_id)
    assert any(
        line.startswith("1 file matching orders_*.csv")
        and "as expected (the last was orders_1207.csv" in line
        for line in logs
    ), logs


def test_a_gap_longer_than_allowed_fails(target, drop):
    """No file for 30 h where 26 h are allowed: Failed, the gap in the line. Files of
    another pattern in the same folder do not count."""
    block, engine = target
    folder = pickup.LocalDropFolder(drop)
    loaded_earlier(engine, folder, "orders_1206.csv", SEVEN_AM - timedelta(hours=30))
    loaded_earlier(engine, folder, "refunds_1207.csv", SEVEN_AM - timedelta(hours=1))
    rules = PickupRules(
        "orders_*.csv",
        settle_seconds=0,
        expect=Expected(max_gap_hours=26, timezone="Europe/Helsinki"),
    )
    state = pickup_at(folder, block, rules, SEVEN_AM, return_state=True)
    assert state.is_failed()
    assert state.message.endswith(
        f"expected 1 file matching orders_*.csv in {drop} at least every 26 h; the "
        "last was orders_1206.csv, loaded 2026-12-06 01:00 EET (30.0 h ago)"
    ), state.message


@pytest.mark.parametrize(
    "expected, line",
    [
        (Expected(), "Expected: give `by` (a time of day), `max_gap_hours`, or both"),
        (Expected(by="6am"), "Expected by='6am': a time of day, as 06:30"),
        (
            Expected(by="06:00", timezone="Helsinki"),
            "Expected timezone='Helsinki': a zone name, as Europe/Helsinki",
        ),
        (Expected(files=0, by="06:00"), "Expected files=0: at least 1"),
    ],
)
def test_a_mistaken_expectation_is_one_line_before_any_file_is_read(
    target, drop, expected, line
):
    """What cannot be right fails the run at once, naming the setting."""
    block, _ = target
    (drop / "orders_1.csv").write_text(GOOD["a.csv"])
    rules = PickupRules("orders_*.csv", settle_seconds=0, expect=expected)
    folder = pickup.LocalDropFolder(drop)
    state = pickup_at(folder, block, rules, SEVEN_AM, return_state=True)
    assert state.is_failed() and state.message.endswith(f"ValueError: {line}")
    assert (drop / "orders_1.csv").exists()
