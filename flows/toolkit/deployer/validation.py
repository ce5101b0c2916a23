"""Everything that can be checked before a deploy uploads or registers anything.

Each problem is one line; all of them are reported together, so one attempt shows
every mistake.
"""

from __future__ import annotations

import re

from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ParameterTypeError, SignatureMismatchError

from toolkit.errors import one_line
from toolkit.settings import S3_SCHEME
from toolkit.deployer import kubernetes
from toolkit.deployer.plan import DeploymentPlan

# Prefect's server refuses these in flow and deployment names (an HTTP 500).
BANNED_NAME_CHARACTERS = "/%&><"
# registry[:port]/path:tag, as Docker parses an image reference.
_IMAGE_REFERENCE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
)


def _name_problems(plan: DeploymentPlan) -> list[str]:
    problems = []
    for kind, name in (("flow name", plan.flow), ("deployment name", plan.name)):
        banned = sorted({c for c in name if c in BANNED_NAME_CHARACTERS})
        if banned:
            problems.append(
                f"{kind} {name!r} contains {' '.join(banned)}, which Prefect refuses"
            )
    return problems


def _schedule_problems(plan: DeploymentPlan) -> list[str]:
    if plan.schedule is None:
        return []
    problems = []
    cron, timezone = plan.schedule["cron"], plan.schedule["timezone"]
    try:
        CronSchedule(cron=cron, timezone="UTC")
    except ValueError:
        problems.append(f"schedule {cron!r} is not a valid cron expression")
    try:
        CronSchedule(cron="0 0 * * *", timezone=timezone)
    except ValueError:
        problems.append(f"timezone {timezone!r} is not a known IANA timezone")
    return problems


def _parameter_problems(plan: DeploymentPlan, flow) -> list[str]:
    if not plan.parameters:
        return []
    known = list(flow.parameters.properties)
    unknown = [name for name in plan.parameters if name not in known]
    if unknown:
        return [
            f"main parameter {name!r} is not a parameter of {flow.name} "
            f"(it has {', '.join(known) or 'none'})"
            for name in unknown
        ]
    try:
        flow.validate_parameters(dict(plan.parameters))
    except (ParameterTypeError, SignatureMismatchError) as error:
        detail = one_line(error)
        return [f"main parameters do not fit {flow.name}: {detail}"]
    return []


def _image_problems(plan: DeploymentPlan) -> list[str]:
    if plan.work_pool_type not in ("docker", kubernetes.POOL_TYPE):
        return []
    if _IMAGE_REFERENCE.match(plan.image):
        return []
    return [
        f"image {plan.image!r} is not a valid image reference (FLOWS_DOCKER_REGISTRY?)"
    ]


def _kubernetes_problems(plan: DeploymentPlan) -> list[str]:
    # The requests are checked whatever the pool: a mistake shows before the move.
    problems = kubernetes.request_problems(plan.resource_requests)
    if plan.work_pool_type != kubernetes.POOL_TYPE:
        return problems
    problems += kubernetes.namespace_problems(plan.kubernetes_namespace)
    if not plan.storage_location.startswith(S3_SCHEME):
        problems.append(
            f"flow storage {plan.storage_location} is a folder of this machine, which "
            "a Kubernetes pod cannot read: set FLOWS_STORAGE_ROOT to s3://bucket/prefix"
        )
    return problems


def find_problems(plan: DeploymentPlan, flow) -> list[str]:
    """Every problem of this plan, one line each; empty when it can be deployed."""
    return (
        _name_problems(plan)
        + _schedule_problems(plan)
        + _parameter_problems(plan, flow)
        + _image_problems(plan)
        + _kubernetes_problems(plan)
    )
