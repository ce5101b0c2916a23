"""# Nightly placement-test scores

Picks up the testing partner's score files (`scores_<day>.csv`) from its drop folder
and loads them into the table `test_scores` of the student database, each file once:
a corrected score replaces the old one (upsert on student and test). A loaded file
moves to `processed/<day>/`; a file that cannot be loaded stays for the partner to
replace, and the run fails naming it and its bad line.

- `env=dev` (the default) needs no configuration: it drops two sample files into a
  local folder (`flows/output/dev/partner-drop`, or below FLOWS_OUTPUT_DIR) and loads
  them into the SQLite sample database. Run it twice: the second run loads nothing
  again (the ledger knows the files) and only archives them.
- `env=main` picks up from the folder `incoming` of the SFTP server of block
  `example-sftp-main` into the database of block `example-database-main`.

Before the load a SQL step makes the table if needed; after it another deletes scores
older than three years. Run it here with
`python3 flows/inbound_example_flow.py run --param env=dev`.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

from prefect import flow, get_run_logger

import util
from sample_data import drop_sample_score_files, sample_database
from toolkit import connections
from toolkit.inbound import PickupRules, pick_up_and_load
from toolkit.loading import LoadPlan, run_sql
from toolkit.pickup import LocalDropFolder, SftpDropFolder
from toolkit.sftp import SftpConnection

SYSTEM = "example"
# Upsert on the table's key: a partner's corrected file replaces earlier scores.
PLAN = LoadPlan("test_scores", "upsert", key=("student_id", "test"))
KEPT_YEARS = 3


def partner_drop_folder(env: str):
    """The partner's drop folder: on its SFTP server in main; in dev a local folder
    the flow fills with sample files."""
    if connections.environment(env) == "main":
        return SftpDropFolder(SftpConnection.load(f"{SYSTEM}-sftp-main"), "incoming")
    folder = connections.output_dir() / "dev" / "partner-drop"
    dropped = drop_sample_score_files(folder)
    if dropped:
        get_run_logger().info("dev: dropped the sample files %s", ", ".join(dropped))
    return LocalDropFolder(folder)


DEPLOYMENT = util.DeploymentSettings(
    schedule="0 5 * * *",
    timezone="America/Denver",
    main_parameters={"env": "main"},
    tags=("admissions",),
    source_systems=("Testing partner's SFTP server",),
    sink_systems=("Student information system (PostgreSQL)",),
    customer_contact="Admissions data team <admissions-data@example.edu>",
)


@flow
def inbound_example_flow(
    env: Literal["dev", "main"] = "dev", settle_seconds: float = 30.0
) -> dict:
    """Load the testing partner's score files into test_scores, each file once.

    If it failed: the files it names stay in the drop folder (their line numbers are
    in the message); every other file is loaded and archived. A rerun never loads a
    file twice: the ledger table flows_inbound_ledger records each one.
    """
    target = connections.database_for(SYSTEM, env, dev_default=sample_database)
    folder = partner_drop_folder(env)
    run_sql(target, "sql/create_test_scores.sql")
    # Files the flow dropped itself in dev are whole already: no need to wait.
    settle = settle_seconds if connections.environment(env) == "main" else 0
    reports = pick_up_and_load(
        folder,
        target,
        PLAN,
        PickupRules("scores_*.csv", settle),
        artifact_key=f"{SYSTEM}-pickups-{env}",
    )
    oldest = date.today() - timedelta(days=365 * KEPT_YEARS)
    run_sql(target, "sql/delete_old_test_scores.sql", {"oldest": oldest.isoformat()})
    return {report.file: report.outcome for report in reports}


if __name__ == "__main__":
    util.run_flow_command_line_interface(__file__, "inbound_example_flow")
