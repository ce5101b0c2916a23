"""A run imports only what it uses: each entry module of the runtime, imported alone
in a fresh process, brings no library beyond those of the core (Prefect, pandas,
SQLAlchemy, psycopg2, Arrow, paramiko), and no client of a system the flow may not
touch (S3's botocore, smtplib). A system added later that creeps into the core
imports fails here, by name."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

FLOWS_DIR = Path(__file__).resolve().parents[2]
# The libraries every run loads anyway: the core's.
CORE = ("prefect", "pandas", "sqlalchemy", "psycopg2", "pyarrow", "paramiko")
# Standard-library clients of one system each: imported only by that system's module.
# (The SMB client, smbprotocol, is a third-party one: the core's set leaves it out.)
SYSTEM_CLIENTS = ("smtplib",)
# Each entry module, and the client of its own system, which may bring what it
# brings (botocore takes pyOpenSSL where it is installed: the Kubernetes lock has it).
ENTRY_MODULES = {
    "util": (),
    "toolkit.connections": (),
    "toolkit.database": (),
    "toolkit.delivery": (),
    "toolkit.inbound": (),
    "toolkit.sftp": (),
    "toolkit.object_storage": ("botocore.session", "botocore.config"),
    "toolkit.mail": ("smtplib",),
    "toolkit.smb": ("smbclient",),
}
IMPORTED = """
import importlib, json, sys
for name in sys.argv[1].split(","):
    importlib.import_module(name)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def imported_by(*modules: str) -> set[str]:
    """The top-level names in sys.modules of a fresh process once `modules` are
    imported, the standard library's left out but for the system clients."""
    completed = subprocess.run(
        [sys.executable, "-c", IMPORTED, ",".join(modules)],
        cwd=FLOWS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    names = set(json.loads(completed.stdout))
    standard = set(sys.stdlib_module_names) - set(SYSTEM_CLIENTS)
    return {name for name in names - standard if not name.startswith("_")}


@pytest.fixture(scope="module")
def core() -> set[str]:
    """What importing the core's libraries alone brings."""
    return imported_by(*CORE)


@pytest.mark.parametrize("module", list(ENTRY_MODULES))
def test_an_entry_module_imports_the_core_and_its_own_system_only(module, core):
    """Importing `module` brings the core's libraries, the toolkit and its own
    system's client (with what that client brings): nothing else."""
    client = ENTRY_MODULES[module]
    allowed = imported_by(*CORE, *client) - core if client else set()
    assert imported_by(module) - core - {"toolkit", "util"} == allowed
    if client:  # the allowance is the client's, not empty by mistake
        assert allowed
