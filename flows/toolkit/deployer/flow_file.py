"""A flow file as the deployer reads it: the flow object, its DEPLOYMENT settings,
and which files of flows/ are flow files at all."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

from prefect import Flow

from toolkit.deployment_settings import NO_SETTINGS, DeploymentSettings
from toolkit.errors import UserError, one_line
from toolkit.deployer.naming import short_digest

CLI_FUNCTION = "run_flow_command_line_interface"


def _import_flow_module(flow_path: Path):
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file and Path(main_file).resolve() == flow_path:
        return main
    # A private name: two checkouts may each hold a flow file of the same name.
    spec = importlib.util.spec_from_file_location(
        f"_flows_{flow_path.stem}_{short_digest(str(flow_path))}", flow_path
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up there
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # any failure of the user's module is theirs to fix
        detail = one_line(error)
        raise UserError(
            f"{flow_path.name} does not import: {type(error).__name__}: {detail}"
        ) from error
    return module


def load_flow(flow_path: Path, function_name: str) -> Flow:
    """The flow object `function_name` of the flow file, which must be in flows/."""
    flows_dir = flow_path.parent
    if flows_dir.name != "flows" or not (flows_dir / "util.py").is_file():
        raise UserError(
            f"{flow_path} is not in a flows/ folder: flow files live directly in "
            "flows/, next to util.py, so that their deployment's copy holds them"
        )
    if flow_path.suffix != ".py" or not flow_path.is_file():
        raise UserError(f"{flow_path} is not a Python file")
    module = _import_flow_module(flow_path)
    candidate = getattr(module, function_name, None)
    if candidate is None:
        raise UserError(f"{flow_path.name} defines no function {function_name!r}")
    if not isinstance(candidate, Flow):
        raise UserError(
            f"{function_name!r} in {flow_path.name} is not a flow: decorate it with "
            "@flow from prefect"
        )
    return candidate


def deployment_settings_of(flow: Flow) -> DeploymentSettings:
    """The `DEPLOYMENT = util.DeploymentSettings(...)` of the flow's file, if any."""
    module = sys.modules.get(flow.fn.__module__)
    declared = getattr(module, "DEPLOYMENT", NO_SETTINGS)
    if not isinstance(declared, DeploymentSettings):
        raise UserError(
            f"DEPLOYMENT in {flow.fn.__module__} must be util.DeploymentSettings(...)"
        )
    return declared


def find_flow_files(flows_dir: Path) -> list[tuple[Path, str]]:
    """(flow file, flow function) of each flows/*.py that ends with the command line."""
    found = []
    for path in sorted(flows_dir.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == CLI_FUNCTION
            ):
                function = node.args[1] if len(node.args) > 1 else None
                if isinstance(function, ast.Constant):
                    found.append((path, function.value))
    return found
