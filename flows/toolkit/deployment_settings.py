"""How one flow is deployed, declared in its flow file next to the flow.

    DEPLOYMENT = util.DeploymentSettings(
        schedule="0 2 * * *", timezone="America/Denver",
        main_parameters={"env": "main"}, tags=("registrar",),
        source_systems=("Student database",), sink_systems=("Partner SFTP",),
        customer_contact="Jane Doe <jane.doe@example.edu>",
        cpu_request="500m", memory_request="1Gi",
    )

Schedule, main parameters and extra tags apply on main only: a dev deployment is
never scheduled, and runs with the flow's defaults unless a run says otherwise. The
cpu and memory requests apply on a Kubernetes work pool, on every branch (Kubernetes
quantities: cpu `500m` or `2`, memory `512Mi` or `1Gi`); other pools have no such knob.

`production_parameters` is the name releases before v1.3.0 gave `main_parameters`: a
flow file that still says it works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DeploymentSettings:  # pylint: disable=too-many-instance-attributes
    """A flow's schedule and parameters on main, and the facts about it."""

    schedule: str | None = None
    timezone: str = "UTC"
    main_parameters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    source_systems: tuple[str, ...] = ()
    sink_systems: tuple[str, ...] = ()
    customer_contact: str | None = None
    cpu_request: str | None = None
    memory_request: str | None = None
    # The old name of main_parameters, still taken; never read after __post_init__.
    production_parameters: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.production_parameters:
            merged = {**self.production_parameters, **self.main_parameters}
            object.__setattr__(self, "main_parameters", merged)

    @property
    def resource_requests(self) -> dict[str, str]:
        """The requests set, by job variable name (`cpu_request`, `memory_request`)."""
        requests = {
            "cpu_request": self.cpu_request,
            "memory_request": self.memory_request,
        }
        return {name: value for name, value in requests.items() if value is not None}

    def describe(self, flow_description: str | None) -> str:
        """The deployment's description: the flow's docstring, then the facts."""
        facts = [
            ("Sources", ", ".join(self.source_systems)),
            ("Sinks", ", ".join(self.sink_systems)),
            ("Customer contact", self.customer_contact or ""),
        ]
        lines = [f"- {label}: {value}" for label, value in facts if value]
        parts = [part for part in (flow_description or "", "\n".join(lines)) if part]
        return "\n\n".join(parts)


NO_SETTINGS = DeploymentSettings()
