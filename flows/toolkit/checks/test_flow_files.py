"""Every flow file imports and defines the flow its command line names.

A short check per file that catches most broken deployments before they ship. It runs
in every copy's `make test`, on whatever flow files the team has.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
from prefect import Flow

from toolkit.deployment_settings import DeploymentSettings
from toolkit.deployer.flow_file import find_flow_files

FLOWS_DIR = Path(__file__).resolve().parents[2]


def named_flows() -> list[tuple[str, str]]:
    """(file name, flow function) of each flow file, as deploy-all finds them."""
    return [(path.name, name) for path, name in find_flow_files(FLOWS_DIR)]


def test_there_is_at_least_one_flow_file():
    """flows/ holds a flow file: one that ends with util.run_flow_command_line_interface."""
    assert named_flows(), f"no flow file in {FLOWS_DIR}"


@pytest.mark.parametrize("file_name, function_name", named_flows())
def test_flow_file_defines_its_flow(file_name, function_name):
    """The file imports without secrets or services, and its function is a flow."""
    spec = importlib.util.spec_from_file_location(
        f"_integrity_{Path(file_name).stem}", FLOWS_DIR / file_name
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    flow = getattr(module, function_name, None)
    assert isinstance(flow, Flow), f"{file_name} defines no flow {function_name!r}"
    assert flow.description, f"{file_name}: write the flow's docstring for the UI"
    settings = getattr(module, "DEPLOYMENT", None)
    assert settings is None or isinstance(settings, DeploymentSettings)
