"""# Example flow

The smallest complete flow of this template: one task, one flow, and the command line
at the bottom that deploys it (`python3 flows/example_flow.py deploy`) or runs it here
(`python3 flows/example_flow.py run --param name=Ada`).
"""

from prefect import flow, get_run_logger, task

import util


@task
def build_greeting(name: str, repeat: int) -> str:
    """A pure function as a task: easy to test, retried and logged by Prefect."""
    return " ".join([f"Hello, {name}!"] * repeat)


@flow
def example_flow(name: str = "world", repeat: int = 1) -> str:
    """Greets `name`; if this run failed, nothing outside Prefect was touched."""
    greeting = build_greeting(name, repeat)
    get_run_logger().info(greeting)
    return greeting


if __name__ == "__main__":
    util.run_flow_command_line_interface(__file__, "example_flow")
