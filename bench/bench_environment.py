"""What a benchmark sets before anything imports Prefect; imported first by each.

Paths: flows/ and tools/ as the tests have them, and the toolkit's fixture flow.
Prefect reads its settings when imported: its state goes to a folder of the run's own,
not ~/.prefect, and it stays offline and quiet.
"""

import os
import sys
import tempfile
from pathlib import Path

REPOSITORY_DIR = Path(__file__).resolve().parent.parent
FIXTURE_FLOWS_DIR = REPOSITORY_DIR / "flows" / "toolkit" / "tests" / "fixture_flows"
sys.path[:0] = [str(REPOSITORY_DIR / "flows"), str(REPOSITORY_DIR / "tools")]
sys.path.append(str(FIXTURE_FLOWS_DIR))
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="bench-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
