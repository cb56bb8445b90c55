"""``backlash serve``: the flows as Prefect deployments on their schedules.

Ingest every N minutes and monitor hourly (cron in the configured time zone),
each with a concurrency limit of one, so a slow run is never overlapped by the
next one — DuckDB has one writer anyway. ``run`` is deployed without a
schedule, for on-demand runs from the UI.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect.schedules import Cron, Interval

from flows.config import Settings


def deployments(settings: Settings, config: Path) -> list[Any]:
    from flows.flows import ingest_flow, monitor_flow, run_flow

    schedule = settings.schedule
    params = {"config": str(config.resolve())}
    return [
        ingest_flow.to_deployment(
            name="backlash-ingest",
            schedules=[
                Interval(
                    timedelta(minutes=schedule.ingest_every_minutes), timezone=schedule.timezone
                )
            ],
            parameters=params,
            concurrency_limit=1,
            tags=["backlash"],
        ),
        monitor_flow.to_deployment(
            name="backlash-monitor",
            schedules=[Cron(schedule.monitor_cron, timezone=schedule.timezone)],
            parameters=params,
            concurrency_limit=1,
            tags=["backlash"],
        ),
        run_flow.to_deployment(
            name="backlash-run", parameters=params, concurrency_limit=1, tags=["backlash"]
        ),
    ]


def serve(settings: Settings, config: Path) -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*deployments(settings, config))
