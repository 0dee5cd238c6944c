"""What every command shares: the session (config and API client), common options, API paths.

The session is built once by the top-level group from ``--config``,
``--api`` and ``--request-timeout`` and handed to commands by
:data:`pass_session`; the config file is read only when a command asks for
it, so ``nsfl-ctl --help`` and ``config set`` work even when the file is
broken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from nsfl_ctl import config as cli_config
from nsfl_ctl.client import ApiClient, path_of
from nsfl_ctl.errors import JobDidNotFinish
from nsfl_ctl.output import emit, metric, stderr_console, stdout_console
from nsfl_ctl.views import last_metric, rounds_text
from nsfl_ctl.watch import DEFAULT_INTERVAL, watch_job


@dataclass(frozen=True)
class Session:
    """One invocation's settings: where the config is, and the flags that override it."""

    config_path: Path
    api_override: str | None = None
    request_timeout: float = 30.0

    def config(self) -> cli_config.CliConfig:
        loaded = cli_config.load(self.config_path)
        return loaded.with_value("api", self.api_override) if self.api_override else loaded

    def client(self) -> ApiClient:
        loaded = self.config()
        return ApiClient(loaded.api, loaded.token, timeout=self.request_timeout)

    def namespace(self, given: str | None) -> str:
        return cli_config.check_value("namespace", given) if given else self.config().namespace


pass_session = click.make_pass_decorator(Session)


def namespace_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-n", "--namespace", default=None, metavar="NS",
        help="Namespace (default: the config's namespace, else 'default').",
    )(function)  # fmt: skip


def watch_options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option(
        "--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
        help="With -w: give up after this long (default: wait until the job ends).",
    )(function)  # fmt: skip
    return click.option(
        "--interval", type=click.FloatRange(min=0.01), default=DEFAULT_INTERVAL, show_default=True,
        metavar="SECONDS", help="With -w: how often to poll the job.",
    )(function)  # fmt: skip


def jobs_path(namespace: str) -> str:
    return path_of("api", "v1", "namespaces", namespace, "jobs")


def job_path(namespace: str, name: str) -> str:
    return path_of("api", "v1", "namespaces", namespace, "jobs", name)


def models_path(namespace: str) -> str:
    return path_of("api", "v1", "namespaces", namespace, "models")


def model_path(namespace: str, name: str) -> str:
    return path_of("api", "v1", "namespaces", namespace, "models", name)


def all_pages(
    client: ApiClient, path: str, key: str, query: Mapping[str, Any], limit: int | None
) -> list[Any]:
    """Every item of a paged listing (``{key: [...], nextPageToken}``), at most ``limit``."""
    items: list[Any] = []
    token: str | None = None
    while True:
        page_size = 500 if limit is None else max(1, min(500, limit - len(items)))
        page = client.get(path, {**query, "limit": page_size, "pageToken": token})
        items.extend(page.get(key) or [])
        token = page.get("nextPageToken")
        if not token or (limit is not None and len(items) >= limit):
            return items if limit is None else items[:limit]


def watch_until_done(
    session: Session,
    namespace: str,
    name: str,
    *,
    interval: float,
    timeout: float | None,
    output: str = "table",
) -> None:
    """Show the progress bar until the job ends; fail (non-zero exit) unless it FINISHED.

    The bar goes to stdout in a terminal, else to stderr, so a pipe gets only
    the result: a summary line, or with ``-o json|yaml`` the final job.
    """
    client = session.client()
    console = stdout_console()
    job = watch_job(
        lambda: client.get(job_path(namespace, name)), label=f"{namespace}/{name}",
        console=console if console.is_terminal else stderr_console(), interval=interval, timeout=timeout,
    )  # fmt: skip
    state = job.get("state")
    if output != "table":
        emit(job, output)
    else:
        summary = f"job {namespace}/{name} {state}: round {rounds_text(job)}"
        accuracy, loss = metric(last_metric(job, "accuracy")), metric(last_metric(job, "loss"))
        summary += f", accuracy {accuracy}" if accuracy else ""
        summary += f", loss {loss}" if loss else ""
        click.echo(summary)
    if state != "FINISHED":
        raise JobDidNotFinish(
            f"job {namespace}/{name} ended {state}: {job.get('reason') or 'no reason given'}"
        )
