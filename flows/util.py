"""What every flow file uses from the template: its command line and its settings.

    DEPLOYMENT = util.DeploymentSettings(schedule="0 2 * * *", ...)
    if __name__ == "__main__":
        util.run_flow_command_line_interface(__file__, "my_flow")

and `python3 flows/util.py --help` for the commands about all the flows of the
repository. Both live in the toolkit (flows/toolkit/); this file only hands them on.
"""

import sys
from pathlib import Path

# At run time Prefect puts the flow's folder on sys.path only while it loads the flow
# file: keep it there, so that an import inside a task finds flows/ modules too.
FLOWS_DIR = str(Path(__file__).resolve().parent)
if FLOWS_DIR not in sys.path:
    sys.path.insert(0, FLOWS_DIR)

# Handed on to flow files: `util.run_flow_command_line_interface(...)` and
# `util.DeploymentSettings(...)`.
# pylint: disable=wrong-import-position,unused-import
from toolkit.cli import (  # noqa: E402,F401
    run_flow_command_line_interface,
    run_repository_command_line_interface,
)
from toolkit.deployment_settings import DeploymentSettings  # noqa: E402,F401

if __name__ == "__main__":
    run_repository_command_line_interface()
