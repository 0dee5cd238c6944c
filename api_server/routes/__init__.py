"""The REST routes, one module per resource; :func:`all_routes` is the one table.

``app.py`` installs this table and ``openapi.py`` documents it, so a route
exists in both or in neither.
"""

from __future__ import annotations

from api_server.route_table import Route
from api_server.routes import clients, enrollment, health, job_actions, jobs, models


def all_routes() -> list[Route]:
    return [
        *health.ROUTES, *clients.ROUTES, *enrollment.ROUTES, *jobs.ROUTES, *job_actions.ROUTES, *models.ROUTES
    ]  # fmt: skip
