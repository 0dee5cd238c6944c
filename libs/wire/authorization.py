"""Who may call each RPC, on what: the one authorisation table (``docs/security.md`` shows it).

Keys are full gRPC method names; a method without a row is refused
(fail closed), and a test reads every method of every service from the
compiled descriptors and fails on one without a row.  A row names the
caller roles allowed (:data:`ROLES`) and, for unary requests, a check of the
request against the caller (a coordinator acts only on its own job).  Where
the resource is known only to the servicer (a client's stream, a task's
ticket), the row says so and the servicer checks with :func:`libs.wire.current_caller`.

Roles: ``client`` (any enrolled client), ``coordinator`` (any job's
coordinator), ``scheduler``, ``selector``, ``api-server`` (the control
plane), ``self`` (the server's own identity: a coordinator calling itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from libs.pki.identity import Identity, IdentityKind

ROLES = frozenset({"client", "coordinator", "scheduler", "selector", "api-server", "self"})

Check = Callable[[Identity, Any], str | None]


@dataclass(frozen=True)
class Rule:
    callers: frozenset[str]
    resource: str
    check: Check | None = None

    def __post_init__(self) -> None:
        unknown = self.callers - ROLES
        if unknown:
            raise ValueError(f"unknown caller roles {sorted(unknown)} (known: {sorted(ROLES)})")


def roles_of(caller: Identity, server: Identity | None) -> frozenset[str]:
    roles = {caller.kind.value if caller.kind is not IdentityKind.CONTROL else str(caller.control_name)}
    if server is not None and caller == server:
        roles.add("self")
    return frozenset(roles)


def _own_jobs(jobs: Callable[[Any], Iterable[str]]) -> Check:
    """A coordinator may name only its own job (``<namespace>/<name>``)."""

    def check(caller: Identity, request: Any) -> str | None:
        if caller.kind is not IdentityKind.COORDINATOR:
            return None
        for job in jobs(request):
            if job != caller.job_id:
                return f"the coordinator of {caller.job_id} cannot act on job {job[:140]!r}"
        return None

    return check


def _select_check(caller: Identity, request: Any) -> str | None:
    if caller.kind is IdentityKind.CONTROL and not request.dry_run:
        return "the scheduler may only ask about availability (dry_run); reservations are a coordinator's"
    return _own_jobs(lambda r: [r.job_id])(caller, request)


_SELECTOR = "/nsfl.v1.ClientSelector/"
_COORDINATOR = "/nsfl.v1.Coordinator/"
_SCHEDULER = "/nsfl.v1.JobControl/"

_TASK_HOLDER = "the job's own clients: the servicer checks the caller is the client its task ticket names"
_USER_RPC = (
    "the API server only, on behalf of an end user whose namespaces it passes "
    "(nsfl-namespaces metadata), which the scheduler checks against the job's namespace"
)


def _rules() -> dict[str, Rule]:
    def rule(callers: set[str], resource: str, check: Check | None = None) -> Rule:
        return Rule(frozenset(callers), resource, check)

    coordinator_of_job = "the calling coordinator's own job only"
    table = {
        # --- client selector -------------------------------------------------------------------
        _SELECTOR + "Connect": rule(
            {"client"},
            "its own registration only: the servicer checks the Register id is the certificate's "
            "client id, so no identity can displace another's stream",
        ),
        _SELECTOR + "SelectClients": rule(
            {"coordinator", "scheduler"},
            f"{coordinator_of_job}; the scheduler only with dry_run (admission)",
            _select_check,
        ),
        _SELECTOR + "ReleaseClients": rule(
            {"coordinator"}, coordinator_of_job, _own_jobs(lambda r: [r.job_id])
        ),
        _SELECTOR + "OfferTask": rule(
            {"coordinator"}, coordinator_of_job, _own_jobs(lambda r: [r.offer.job_id])
        ),
        _SELECTOR + "OfferTasks": rule(
            {"coordinator"},
            f"{coordinator_of_job}, for every offer of the call",
            _own_jobs(lambda r: [o.offer.job_id for o in r.offers]),
        ),
        _SELECTOR + "CancelTasks": rule({"coordinator"}, coordinator_of_job, _own_jobs(lambda r: [r.job_id])),
        _SELECTOR + "ListClients": rule({"api-server", "scheduler"}, "the whole registry (read only)"),
        # --- coordinator (the server is one job's coordinator) --------------------------------------
        _COORDINATOR + "DownloadModel": rule({"client"}, _TASK_HOLDER),
        _COORDINATOR + "UploadUpdate": rule({"client"}, _TASK_HOLDER),
        _COORDINATOR + "SubmitUpdate": rule({"client"}, _TASK_HOLDER),
        _COORDINATOR + "GetUploadOffset": rule({"client"}, _TASK_HOLDER),
        _COORDINATOR + "ReportTaskStatus": rule({"client"}, _TASK_HOLDER),
        _COORDINATOR + "GetTaskPlan": rule({"client"}, _TASK_HOLDER),
        _COORDINATOR + "SecureAggregate": rule({"client"}, _TASK_HOLDER),
        _COORDINATOR + "AwaitModel": rule({"client"}, _TASK_HOLDER),
        _COORDINATOR + "GetStatus": rule({"scheduler", "api-server", "self"}, "this job's status"),
        _COORDINATOR + "Stop": rule(
            {"scheduler", "self"}, "this job: the scheduler, or the coordinator itself"
        ),
        # --- job scheduler ---------------------------------------------------------------------------
        **{
            _SCHEDULER + name: rule({"api-server"}, _USER_RPC)
            for name in (
                "SubmitJob",
                "GetJob",
                "ListJobs",
                "UpdateJob",
                "StartJob",
                "StopJob",
                "DeleteJob",
                "GetJobLogs",
            )
        },  # fmt: skip
        _SCHEDULER + "ReportProgress": rule(
            {"coordinator"}, "the calling coordinator's own job only", _own_jobs(lambda r: [r.job_id])
        ),
    }
    return table


POLICY: dict[str, Rule] = _rules()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    code: str = ""  # "Unauthenticated" or "PermissionDenied" when refused
    reason: str = ""


def decide(
    method: str, caller: Identity | None, server: Identity | None, request: Any = None,
    policy: dict[str, Rule] = POLICY,
) -> Decision:  # fmt: skip
    """Pure decision for one call: the guard and the tests both use it."""
    rule = policy.get(method)
    if rule is None:
        return Decision(False, "PermissionDenied", f"no authorisation rule for {method}; it is refused")
    if caller is None:
        return Decision(False, "Unauthenticated", "a client certificate from this platform's CA is required")
    if server is not None and caller.trust_domain != server.trust_domain:
        return Decision(
            False, "Unauthenticated", f"identity {caller.uri} is not of trust domain {server.trust_domain}"
        )
    if not roles_of(caller, server) & rule.callers:
        return Decision(False, "PermissionDenied", f"{caller.uri} may not call {method.rsplit('/', 1)[-1]}")
    if rule.check is not None and request is not None:
        reason = rule.check(caller, request)
        if reason is not None:
            return Decision(False, "PermissionDenied", reason)
    return Decision(True)
