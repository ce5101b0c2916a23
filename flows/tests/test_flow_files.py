"""Every flow file imports and defines the flow its command line names.

A two-line check per file that catches most broken deployments before they ship.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
from prefect import Flow

from deployer.lifecycle import find_flow_files

FLOWS_DIR = Path(__file__).resolve().parents[1]


def named_flows() -> list[tuple[str, str]]:
    """(file name, flow function) of each flow file, as deploy-all finds them."""
    return [(path.name, name) for path, name in find_flow_files(FLOWS_DIR)]


def test_there_is_at_least_one_flow_file():
    """The template ships its example flow."""
    assert ("example_flow.py", "example_flow") in named_flows()


@pytest.mark.parametrize("file_name, function_name", named_flows())
def test_flow_file_defines_its_flow(file_name, function_name):
    """The file imports without secrets or services, and its function is a flow."""
    spec = importlib.util.spec_from_file_location(
        f"_integrity_{Path(file_name).stem}", FLOWS_DIR / file_name
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert isinstance(getattr(module, function_name), Flow)
    assert getattr(module, function_name).description, "write a docstring for the UI"
