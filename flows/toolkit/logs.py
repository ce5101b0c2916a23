"""The logger for task code: the run's logger in a run, a plain one outside.

Tests and scripts call task functions directly (`task.fn(...)`); there is no run then,
and Prefect's get_run_logger would refuse.
"""

import logging

from prefect import get_run_logger
from prefect.exceptions import MissingContextError


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The current flow or task run's logger, else the `flows` logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("flows")
