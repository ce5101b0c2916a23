"""# Nightly partner orders (the toolkit's own inbound test flow)

Picks up the partner's order files (`orders_*.csv`) from a drop folder and loads each
into the table `partner_orders`, once: a file whose content was loaded before is only
archived. Loaded files move to `processed/<day>/`, a file that cannot be loaded to
`failed/`; the run then fails naming it. `env=dev` reads the local folder
`<output>/fixture-drop` into the SQLite shop database; `env=main` the SFTP folder of
block `fixture-sftp-main` into the database of block `fixture-database-main`.

The toolkit's tests deploy and run this flow instead of the example's inbound flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow

import util
from fixture_data import fixture_database
from toolkit import connections
from toolkit.expected import Expected
from toolkit.inbound import PickupRules, pick_up_and_load
from toolkit.loading import LoadPlan, run_sql
from toolkit.pickup import LocalDropFolder, SftpDropFolder
from toolkit.sftp import SftpConnection

SYSTEM = "fixture"
TABLE = "partner_orders"
# Beside this file: flows/sql/ in a team repository, fixture_flows/sql/ here.
CREATE_TABLE = Path(__file__).with_name("sql") / "create_partner_orders.sql"

DEPLOYMENT = util.DeploymentSettings(
    schedule="30 2 * * *",
    timezone="America/Denver",
    main_parameters={"env": "main"},
    tags=("sales",),
    source_systems=("Partner SFTP server",),
    sink_systems=("Shop database (PostgreSQL)",),
    customer_contact="Sales data team <sales-data@example.invalid>",
)


def drop_folder_for(env: str):
    """The partner's drop folder: the SFTP block's folder in main, a local one in dev."""
    if connections.environment(env) == "main":
        return SftpDropFolder(SftpConnection.load(f"{SYSTEM}-sftp-main"))
    folder = connections.output_dir() / f"{SYSTEM}-drop"
    folder.mkdir(parents=True, exist_ok=True)
    return LocalDropFolder(folder)


@flow
def inbound_fixture_flow(
    env: Literal["dev", "main"] = "dev",
    mode: Literal["append", "upsert"] = "append",
    settle_seconds: float = 5.0,
    expect_by: str | None = None,
) -> dict:
    """Load the partner's order files into partner_orders, each once, then archive.

    If it failed: the files it names are in failed/ (fix and drop them again); every
    other file is loaded and archived, and a rerun never loads a file twice. With
    `expect_by` ("06:00", UTC), a run after that time fails when no file came today.
    """
    target = connections.database_for(SYSTEM, env, dev_default=fixture_database)
    run_sql(target, CREATE_TABLE.read_text(encoding="utf-8"))
    plan = LoadPlan(TABLE, mode, ("order_id",) if mode == "upsert" else ())
    rules = PickupRules(
        "orders_*.csv",
        settle_seconds,
        on_failure="move",
        expect=Expected(files=1, by=expect_by) if expect_by else None,
    )
    reports = pick_up_and_load(
        drop_folder_for(env),
        target,
        plan,
        rules,
        artifact_key=f"{SYSTEM}-pickups-{env}",
    )
    return {report.file: report.outcome for report in reports}


if __name__ == "__main__":
    util.run_flow_command_line_interface(__file__, "inbound_fixture_flow")
