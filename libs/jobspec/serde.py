"""The job spec's one proto form: who may take part, as the client selector matches it.

Admission (the scheduler's dry run) and every round (the coordinator) ask
the selector with the same requirement, so it is built in one place from
:attr:`JobSpec.requirement <libs.jobspec.spec.JobSpec.requirement>`.  A
resource the job does not ask for is 0 in the message, which the selector
reads as "no minimum".
"""

from __future__ import annotations

from libs.jobspec.spec import ClientRequirement
from libs.protos import common_pb2, selector_pb2


def requirement_to_proto(requirement: ClientRequirement) -> selector_pb2.ClientRequirement:
    resources = requirement.resources
    return selector_pb2.ClientRequirement(
        runtime=requirement.runtime,
        datasets=list(requirement.datasets),
        labels=dict(requirement.labels),
        resources=common_pb2.Resources(
            cpus=resources.cpus or 0.0, memory_mb=resources.memory_mb or 0, gpus=resources.gpus or 0
        ),
        clients=list(requirement.clients),
    )
