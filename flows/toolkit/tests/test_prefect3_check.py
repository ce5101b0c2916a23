"""`python3 flows/util.py check-prefect3`: each pattern whose meaning changes on
Prefect 3 is named with its file, line and fix, and code that reads the same on both
majors is left alone. Run as a person runs it, in a checkout of its own."""

from __future__ import annotations

import textwrap

from deploy_helpers import run_script

# A flow as the 2.20 guides wrote it: every line marked with its pattern.
WRITTEN_FOR_2_20 = textwrap.dedent(
    """\
    from prefect import flow, task


    @task
    def extract(day):
        return day


    @flow
    def report(days):
        futures = [extract.submit(day) for day in days]
        states = [future.wait() for future in futures]  # wait
        if not all(state.is_completed() for state in states):
            raise RuntimeError("an extract failed")
        return [state.result(fetch=True) for state in states]  # fetch


    @flow(name="fire and forget")
    def nightly(days):  # unread
        for day in days:
            extract.submit(day)
        extract.map(days)
    """
)
# The same work written for both majors: nothing to name.
WRITTEN_FOR_BOTH = textwrap.dedent(
    """\
    from prefect import flow, task


    @task
    def extract(day):
        return day


    @flow
    def report(days):
        futures = [extract.submit(day) for day in days]
        for future in futures:
            future.wait()
        results = [future.result(raise_on_failure=False) for future in futures]
        return results


    @flow
    def nightly(days):
        return extract.map(days)
    """
)


def line_of(source: str, mark: str) -> int:
    """The line number of the line that ends with `# mark`."""
    for number, line in enumerate(source.splitlines(), start=1):
        if line.endswith(f"# {mark}"):
            return number
    raise AssertionError(mark)


def test_each_pattern_is_named_with_its_line_and_fix(checkout):
    """A flow written against the 2.20 guide: its wait() used as a state, its
    result(fetch=True), and its flow that submits and maps without reading are
    each one line, file:line: what: fix; the command exits 1."""
    (checkout / "flows" / "old_report.py").write_text(WRITTEN_FOR_2_20)
    done = run_script(checkout, "flows/util.py", "check-prefect3")
    path = "flows/old_report.py"
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        f"{path}:{line_of(WRITTEN_FOR_2_20, 'wait')}: the value of wait() is used: "
        "on Prefect 3 wait() returns None, not the state: use "
        "future.result(raise_on_failure=False), which gives the result or the "
        "task's error on both majors",
        f"{path}:{line_of(WRITTEN_FOR_2_20, 'fetch')}: result() is given fetch=: "
        "Prefect 3.3 removed fetch=: drop it, and in async code use "
        "await state.aresult(raise_on_failure=...)",
        f"{path}:{line_of(WRITTEN_FOR_2_20, 'unread')}: flow nightly starts "
        "tasks and never reads them: on Prefect 3 a failed task no longer fails "
        "this flow: read each future's result (future.result()) or return the "
        "futures",
        "3 place(s) to change before moving to Prefect 3",
    ]


def test_code_that_reads_the_same_on_both_majors_passes(checkout):
    """The same work written for both majors, and the checkout's own flows: exit 0
    and one line."""
    (checkout / "flows" / "report.py").write_text(WRITTEN_FOR_BOTH)
    done = run_script(checkout, "flows/util.py", "check-prefect3")
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "nothing in flows/ changes meaning on Prefect 3\n",
        "",
    )


def test_a_file_that_is_not_python_is_one_line_and_exit_2(checkout):
    """A flow file that does not parse: one line naming it, exit 2."""
    (checkout / "flows" / "broken.py").write_text("def broken(:\n")
    done = run_script(checkout, "flows/util.py", "check-prefect3")
    assert done.returncode == 2
    assert done.stderr.startswith("error: flows/broken.py:1: not Python: ")
    assert len(done.stderr.splitlines()) == 1
