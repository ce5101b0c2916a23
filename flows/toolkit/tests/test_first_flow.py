"""The guide's "Your first flow" page, walked on a new team repository.

The team repository is made as "Use this template" makes one. The page's commands are
run as the page spells them and its code blocks are written to the files their first
line names, so the page and this test cannot disagree.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from toolkit.template.ownership import read_ownership

REPOSITORY_DIR = Path(__file__).resolve().parents[3]
GUIDE = REPOSITORY_DIR / "flows" / "toolkit" / "docs" / "first-flow.md"
# The venv running these tests: the team repository's `make test` uses it instead of
# building one.
VENV = REPOSITORY_DIR / ".venv"
SECTION = "# Your first flow"
INBOUND_SECTION = "## Your first inbound flow"
# A fenced block whose first line names the file it is: `# flows/x.py`, `-- flows/x.sql`.
FILE_BLOCK = re.compile(
    r"^ *```(?:python|sql)\n *(?:#|--) (flows/\S+)\n(.*?)^ *```", re.M | re.S
)
MAKE_TEST_SECONDS = 900


def first_flow_section() -> str:
    """The page's "Your first flow" steps, up to its next section."""
    text = GUIDE.read_text(encoding="utf-8")
    assert SECTION in text, f"{GUIDE.name} has no {SECTION!r} section"
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def inbound_section() -> str:
    """The page's inbound variant, up to its next section."""
    text = GUIDE.read_text(encoding="utf-8")
    assert INBOUND_SECTION in text, f"{GUIDE.name} has no {INBOUND_SECTION!r} section"
    return text.split(INBOUND_SECTION, 1)[1].split("\n## ", 1)[0]


def guide_command(section: str, start: str) -> list[str]:
    """The one command line of the section that begins with `start`, as arguments."""
    lines = [line.strip() for line in section.splitlines()]
    found = [line for line in lines if line.startswith(start)]
    assert len(found) == 1, f"the guide should give one '{start}...' line: {found}"
    return shlex.split(found[0].split("#", 1)[0])


def guide_files(section: str) -> dict[str, str]:
    """path -> text of every fenced block that names its file, indentation removed."""
    files = {}
    for match in FILE_BLOCK.finditer(section):
        first_line = match.group(0).splitlines()[1]
        indent = len(first_line) - len(first_line.lstrip())
        lines = [first_line, *match.group(2).splitlines()]
        files[match.group(1)] = "\n".join(line[indent:] for line in lines) + "\n"
    return files


def run(command, cwd: Path, env: dict, timeout: float = 300):
    """A command's result, output and errors together for the assertion message."""
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def repository_environment(tmp_path: Path) -> dict:
    """This environment without CI's branch variables, make's, or flow settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GITHUB_", "FLOWS_", "MAKE", "MFLAGS"))
    }
    env.update(
        GIT_AUTHOR_NAME="First Flow",
        GIT_AUTHOR_EMAIL="first.flow@example.invalid",
        GIT_COMMITTER_NAME="First Flow",
        GIT_COMMITTER_EMAIL="first.flow@example.invalid",
        FLOWS_STORAGE_ROOT=str(tmp_path / "flow-storage"),
        FLOWS_OUTPUT_DIR=str(tmp_path / "output"),
        # Test names in the output, to see that the new test ran.
        PYTEST_ADDOPTS="-v",
    )
    return env


def git(*arguments, cwd: Path, env: dict) -> str:
    """Run git; fail the test with its output when it fails."""
    result = run(["git", *arguments], cwd, env)
    assert result.returncode == 0, f"git {' '.join(arguments)}: {result.stdout}"
    return result.stdout


def template_files_of(repository: Path, env: dict) -> dict[str, bytes]:
    """path -> bytes of every template-owned file git lists (tracked or untracked)."""
    ownership = read_ownership(repository)
    listed = git(
        "ls-files", "-z", "-c", "-o", "--exclude-standard", cwd=repository, env=env
    )
    return {
        path: (repository / path).read_bytes()
        for path in sorted(set(filter(None, listed.split("\0"))))
        if ownership.owner_of(path) == "template" and (repository / path).is_file()
    }


def use_this_template(repository: Path, env: dict) -> dict[str, bytes]:
    """The repository's files in a new repository with a pushed main, as "Use this
    template" makes it; the bytes of each template-owned file, as copied."""
    listed = git(
        "ls-files", "-z", "-c", "-o", "--exclude-standard", cwd=REPOSITORY_DIR, env=env
    )
    for path in set(filter(None, listed.split("\0"))):
        source = REPOSITORY_DIR / path
        if not source.is_file():  # deleted from the working tree, not yet from git
            continue
        (repository / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, repository / path)
        shutil.copymode(source, repository / path)
    origin = repository.parent / "acme-sales-flows-orders.git"
    git("init", "-q", "--bare", "-b", "main", origin, cwd=repository.parent, env=env)
    git("init", "-q", "-b", "main", cwd=repository, env=env)
    git("add", "-A", cwd=repository, env=env)
    git("commit", "-q", "-m", "Use this template", cwd=repository, env=env)
    git("remote", "add", "origin", origin, cwd=repository, env=env)
    git("push", "-q", "-u", "origin", "main", cwd=repository, env=env)
    return template_files_of(repository, env)


@pytest.mark.timeout(MAKE_TEST_SECONDS + 300)
def test_the_first_flow_of_the_guide_passes_make_test_and_plans(tmp_path):
    """Deleting the example and writing the guide's flow gives a team repository that
    passes `make test` and plans a dev deployment, without editing a template file."""
    section = first_flow_section()
    env = repository_environment(tmp_path)
    repository = tmp_path / "acme-sales-flows-orders"
    template_files = use_this_template(repository, env)

    delete_the_example(section, repository, env)
    new_test = write_the_flow(section, repository)
    output = check(section, repository, env)
    assert f"test_orders_flow.py::{new_test} PASSED" in output
    plan = plan_from_a_branch(section, repository, env)

    assert plan["flow"] == "orders-flow"
    assert plan["entrypoint"] == "orders_flow.py:orders_flow"
    assert plan["name"] == "orders | my-first-flow | orders_flow"
    assert plan["stage"] == "dev"
    for deployed in ("orders_flow.py", "sql/orders.sql", "toolkit/cli/__init__.py"):
        assert deployed in plan["files"], deployed
    for left_out in (
        "example_flow.py",
        "sample_data.py",
        "toolkit/docs/index.md",
        "toolkit/deployer/deploy.py",
        "toolkit/template/upgrade.py",
    ):
        assert left_out not in plan["files"], left_out
    now = template_files_of(repository, env)
    assert sorted(now) == sorted(template_files), "template files added or removed"
    changed = [path for path, data in template_files.items() if now[path] != data]
    assert not changed, f"template files edited: {changed}"


def delete_the_example(section: str, repository: Path, env: dict) -> None:
    """Step 1: the guide's `git rm` command."""
    removed = run(guide_command(section, "git rm "), repository, env)
    assert removed.returncode == 0, removed.stdout
    assert not (repository / "flows" / "example_flow.py").exists()


def write_the_flow(section: str, repository: Path) -> str:
    """Step 2: the guide's three files, written where they say; the new test's name."""
    files = guide_files(section)
    assert sorted(files) == [
        "flows/orders_flow.py",
        "flows/sql/orders.sql",
        "flows/tests/test_orders_flow.py",
    ]
    for path, text in files.items():
        (repository / path).parent.mkdir(parents=True, exist_ok=True)
        (repository / path).write_text(text, encoding="utf-8")
    test_text = files["flows/tests/test_orders_flow.py"]
    return re.search(r"^def (test_\w+)", test_text, re.M).group(1)


def check(section: str, repository: Path, env: dict) -> str:
    """Step 3, first half: `make test` in the team repository, with this venv."""
    assert guide_command(section, "make test") == ["make", "test"]
    started = time.monotonic()
    # -o venv: the venv is this one, already synced; never sync it here, where the
    # tests beside this one use it (the Kubernetes lock's, under make test-template).
    checked = run(
        ["make", "test", f"VENV={VENV}", "-o", "venv"],
        repository,
        env,
        timeout=MAKE_TEST_SECONDS,
    )
    seconds = time.monotonic() - started
    print(f"\nmake test in the team repository took {seconds:.1f} s")
    assert checked.returncode == 0, checked.stdout[-6000:]
    return checked.stdout


def plan_from_a_branch(section: str, repository: Path, env: dict) -> dict:
    """Step 3, second half: a branch, then `deploy --dry-run`; the printed plan."""
    switched = run(guide_command(section, "git switch "), repository, env)
    assert switched.returncode == 0, switched.stdout
    dry_run = guide_command(section, "python3 flows/orders_flow.py deploy --dry-run")
    planned = run([sys.executable, *dry_run[1:]], repository, env)
    assert planned.returncode == 0, planned.stdout
    start = planned.stdout.index("{")
    plan, _ = json.JSONDecoder().raw_decode(planned.stdout, start)
    return plan


PAYMENTS = (
    "payment_id,customer,amount,status,paid_at\n"
    '1,"acme",12.50,"settled",2024-08-01 09:00:00.250000\n'
    '2,"globex",0.99,"pending",2024-08-01 10:00:00\n'
)


def run_the_inbound_flow(section: str, repository: Path, env: dict, drop: Path):
    """Drop the partner's file, then the guide's `run` command; its output."""
    drop.mkdir(parents=True, exist_ok=True)
    (drop / "payments_2024-08-01.csv").write_text(PAYMENTS, encoding="utf-8")
    command = guide_command(section, "python3 flows/payments_flow.py run")
    ran = run([sys.executable, *command[1:]], repository, env)
    assert ran.returncode == 0, ran.stdout[-6000:]
    return ran.stdout


@pytest.mark.inbound
def test_the_inbound_variant_of_the_guide_loads_a_file_once(tmp_path):
    """The guide's inbound flow, written into a new team repository without the
    example: its test and the flow-file checks pass, a dev run loads a dropped file
    and archives it, and the same file dropped again is not loaded twice."""
    section = inbound_section()
    env = repository_environment(tmp_path)
    env.pop("PREFECT_API_URL", None)  # a dev run needs no server
    repository = tmp_path / "acme-sales-flows-payments"
    use_this_template(repository, env)
    delete_the_example(first_flow_section(), repository, env)
    files = guide_files(section)
    assert sorted(files) == [
        "flows/payments_flow.py",
        "flows/sql/create_payments.sql",
        "flows/tests/test_payments_flow.py",
    ]
    for path, text in files.items():
        (repository / path).parent.mkdir(parents=True, exist_ok=True)
        (repository / path).write_text(text, encoding="utf-8")
    tests = guide_command(section, "python3 -m pytest")
    checked = run([sys.executable, *tests[1:]], repository, env)
    assert checked.returncode == 0, checked.stdout[-6000:]
    assert "test_payments_flow.py::test_a_payment_sent_again" in checked.stdout

    drop = tmp_path / "output" / "dev" / "payments-drop"
    first = run_the_inbound_flow(section, repository, env, drop)
    second = run_the_inbound_flow(section, repository, env, drop)

    assert "loaded payments_2024-08-01.csv: 2 rows" in first
    assert "skipped payments_2024-08-01.csv: already loaded" in second
    day = datetime.now(timezone.utc).date().isoformat()
    assert sorted(os.listdir(drop / "processed" / day)) == [
        "payments_2024-08-01.2.csv",
        "payments_2024-08-01.csv",
    ]
