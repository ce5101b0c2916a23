"""A Kubernetes work pool: resource requests in its job template, and their checks.

prefect-kubernetes' default base job template has no placeholder for a container's
resources, and a job variable the template does not name vanishes from the rendered
manifest without a word. So a pool made here gets two more variables, `cpu_request`
and `memory_request`, placed at the first container's `resources.requests`. Prefect
drops a placeholder whose variable is unset, so a flow that sets neither asks for
nothing (`requests: {}`), as the default template would.
"""

from __future__ import annotations

import copy
import re

POOL_TYPE = "kubernetes"
# Job variable -> key under the container's resources.requests.
REQUEST_VARIABLES = {"cpu_request": "cpu", "memory_request": "memory"}
_DESCRIPTIONS = {
    "cpu_request": "CPU the flow run's container asks for (Kubernetes quantity: "
    "500m, 2); unset asks for none",
    "memory_request": "Memory the flow run's container asks for (Kubernetes "
    "quantity: 512Mi, 1Gi); unset asks for none",
}
# Kubernetes quantities, narrowed to the forms people write: cpu in cores or
# millicores; memory in bytes with a binary or decimal suffix (`500m` of memory is
# half a byte, a classic slip, so `m` is refused there).
_QUANTITIES = {
    "cpu_request": (re.compile(r"\d+m|\d+(\.\d+)?"), "500m or 2"),
    "memory_request": (
        re.compile(r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?"),
        "512Mi or 1Gi",
    ),
}
# A namespace is a DNS-1123 label.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def first_container(job_configuration: dict) -> dict:
    """The flow run's container in a job configuration's manifest."""
    pod_spec = job_configuration["job_manifest"]["spec"]["template"]["spec"]
    return pod_spec["containers"][0]


def with_resource_requests(base_job_template: dict) -> dict:
    """A copy of the template with the request variables and their placeholders."""
    template = copy.deepcopy(base_job_template)
    properties = template["variables"].setdefault("properties", {})
    for variable, description in _DESCRIPTIONS.items():
        title = variable.replace("_", " ").capitalize()
        properties[variable] = {
            "title": title,
            "description": description,
            "type": "string",
        }
    first_container(template["job_configuration"])["resources"] = {
        "requests": {
            key: f"{{{{ {name} }}}}" for name, key in REQUEST_VARIABLES.items()
        }
    }
    return template


def has_resource_requests(base_job_template: dict) -> bool:
    """Whether a pool's template names both request variables."""
    properties = base_job_template.get("variables", {}).get("properties", {})
    return all(variable in properties for variable in REQUEST_VARIABLES)


def request_problems(requests: dict[str, str]) -> list[str]:
    """One line per request that is not a Kubernetes quantity of its kind."""
    problems = []
    for variable, value in requests.items():
        pattern, example = _QUANTITIES[variable]
        if not pattern.fullmatch(value):
            problems.append(
                f"{variable} {value!r} is not a Kubernetes quantity (say {example})"
            )
    return problems


def namespace_problems(namespace: str) -> list[str]:
    """A line when the namespace is not a name Kubernetes accepts."""
    if _NAMESPACE.fullmatch(namespace):
        return []
    return [
        f"FLOWS_KUBERNETES_NAMESPACE {namespace!r} is not a Kubernetes namespace name "
        "(lowercase letters, digits and dashes, at most 63)"
    ]
