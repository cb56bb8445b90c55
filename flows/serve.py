"""``backlash serve``: the flows as Prefect deployments on their schedules.

Ingest every N minutes, monitor hourly and the digest daily (cron in the
configured time zone), each with a concurrency limit of one, so a slow run is
never overlapped by the next one — DuckDB has one writer anyway. ``run``,
``relabel``, ``replay`` and ``backfill`` are deployed without a schedule, for
on-demand runs from the UI or ``prefect deployment run``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron, Interval

from flows.config import Settings


def deployments(settings: Settings, config: Path) -> list[Any]:
    from flows.flows import (
        digest_flow,
        ingest_flow,
        monitor_flow,
        relabel_flow,
        replay_flow,
        run_flow,
    )

    schedule = settings.schedule
    params = {"config": str(config.resolve())}
    # Module entrypoints (flows.flows:ingest_flow) work from any working directory.
    common: dict[str, Any] = {
        "parameters": params,
        "concurrency_limit": 1,
        "tags": ["backlash"],
        "entrypoint_type": EntrypointType.MODULE_PATH,
    }
    every = timedelta(minutes=schedule.ingest_every_minutes)
    return [
        ingest_flow.to_deployment(
            name="backlash-ingest",
            schedules=[Interval(every, timezone=schedule.timezone)],
            **common,
        ),
        monitor_flow.to_deployment(
            name="backlash-monitor",
            schedules=[Cron(schedule.monitor_cron, timezone=schedule.timezone)],
            **common,
        ),
        digest_flow.to_deployment(
            name="backlash-digest",
            schedules=[Cron(schedule.digest_cron, timezone=schedule.timezone)],
            **common,
        ),
        run_flow.to_deployment(name="backlash-run", **common),
        relabel_flow.to_deployment(name="backlash-relabel", **common),
        replay_flow.to_deployment(name="backlash-replay", **common),
        # A backfill is an ingest run given `since`: prefect deployment run
        # 'ingest/backlash-backfill' --param since=2026-01-01T00:00:00Z
        ingest_flow.to_deployment(name="backlash-backfill", **common),
    ]


def serve(settings: Settings, config: Path) -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*deployments(settings, config))
