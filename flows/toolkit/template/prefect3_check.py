"""`python3 flows/util.py check-prefect3`: the places in the team's flows whose meaning
changes on Prefect 3, each with its file, line and fix.

Read from the code (Python's own parser), never run, so it works before Prefect 3 is
installed. It finds:
- a future's `wait()` whose value is used: on Prefect 3 `wait()` returns None, where
  2.20 returned the task's final state;
- `result(fetch=...)`: Prefect 3.3 removed `fetch`;
- a flow that submits or maps tasks and never reads what they give: on 2.20 a failed
  task fails such a flow, on Prefect 3 the flow completes unless it raises.
The toolkit's own folder is Prefect 3-ready and not read; tests are.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import UserError

WAIT_FIX = (
    "on Prefect 3 wait() returns None, not the state: use "
    "future.result(raise_on_failure=False), which gives the result or the task's "
    "error on both majors"
)
FETCH_FIX = (
    "Prefect 3.3 removed fetch=: drop it, and in async code use "
    "await state.aresult(raise_on_failure=...)"
)
UNREAD_FIX = (
    "on Prefect 3 a failed task no longer fails this flow: read each future's "
    "result (future.result()) or return the futures"
)
# The decorators that make a flow, and the calls that start tasks in the background.
FLOW_DECORATORS = ("flow",)
BACKGROUND_CALLS = ("submit", "map")
# What reads a future's outcome: the result, or the wait that raises nothing.
READING_CALLS = ("result", "wait")


@dataclass(frozen=True)
class Finding:
    """One place to change, and how."""

    path: str
    line: int
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}: {self.fix}"


def _called_attribute(node: ast.AST) -> str | None:
    """`x.name(...)`'s name, for a call of an attribute; else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _is_flow(function: ast.AST) -> bool:
    if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else None
        name = target.id if isinstance(target, ast.Name) else name
        if name in FLOW_DECORATORS:
            return True
    return False


def _wait_values_used(tree: ast.AST) -> list[ast.Call]:
    """Each `.wait()` call whose value the code keeps or reads."""
    alone = {
        id(statement.value)
        for statement in ast.walk(tree)
        if isinstance(statement, ast.Expr)
    }
    return [
        node
        for node in ast.walk(tree)
        if _called_attribute(node) == "wait" and id(node) not in alone
    ]


def _flows_with_unread_tasks(tree: ast.AST) -> list[ast.AST]:
    """Flows that start tasks in the background and never read or return them."""
    found = []
    for function in ast.walk(tree):
        if not _is_flow(function):
            continue
        calls = [_called_attribute(node) for node in ast.walk(function)]
        starts = any(call in BACKGROUND_CALLS for call in calls)
        reads = any(call in READING_CALLS for call in calls)
        returns = any(
            isinstance(node, ast.Return) and node.value is not None
            for node in ast.walk(function)
        )
        if starts and not reads and not returns:
            found.append(function)
    return found


def check_source(source: str, path: str) -> list[Finding]:
    """The findings in one file's source, in line order."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as error:
        raise UserError(f"{path}:{error.lineno}: not Python: {error.msg}") from error
    findings = [
        Finding(path, node.lineno, "the value of wait() is used", WAIT_FIX)
        for node in _wait_values_used(tree)
    ]
    findings += [
        Finding(path, node.lineno, "result() is given fetch=", FETCH_FIX)
        for node in ast.walk(tree)
        if _called_attribute(node) == "result"
        and any(keyword.arg == "fetch" for keyword in node.keywords)
    ]
    findings += [
        Finding(
            path,
            function.lineno,
            f"flow {function.name} starts tasks and never reads them",
            UNREAD_FIX,
        )
        for function in _flows_with_unread_tasks(tree)
    ]
    return sorted(findings, key=lambda finding: finding.line)


def check_flows(flows_dir: Path) -> list[Finding]:
    """The findings in every Python file below flows/ but the toolkit's."""
    findings = []
    for path in sorted(flows_dir.rglob("*.py")):
        relative = path.relative_to(flows_dir.parent)
        if relative.parts[1] == "toolkit":
            continue
        findings += check_source(path.read_text(encoding="utf-8"), relative.as_posix())
    return findings


def check_prefect3(flows_dir: Path) -> None:
    """Print each finding and a count, then exit 1; or say there is none."""
    findings = check_flows(flows_dir)
    for finding in findings:
        print(finding)
    if findings:
        print(f"{len(findings)} place(s) to change before moving to Prefect 3")
        sys.exit(1)
    print("nothing in flows/ changes meaning on Prefect 3")
