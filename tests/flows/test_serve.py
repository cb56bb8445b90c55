"""`backlash serve`: the deployments build with valid schedules, and a served run completes.

The served run goes the whole way a schedule does: a deployment registered by
a Prefect Runner, a flow run created for it on the API, picked up by the
runner and executed from its module entrypoint. PITFALLS.md: with
SQLAlchemy 2.1 this path produced no runs at all, and `pip check` did not see it.
"""

from __future__ import annotations

import asyncio
import email
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest
from cronsim import CronSim

from flows.config import load_settings
from flows.serve import deployments

CONFIG = """\
[warehouse]
path = "w.duckdb"

[alerts]
to = ["leadership@example.com"]
digest_to = ["digest@example.com"]
operators = ["ops@example.com"]

[schedule]
timezone = "Europe/Paris"
ingest_every_minutes = 10
digest_cron = "0 8 * * *"
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "backlash.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def test_deployments_have_the_configured_schedules_and_never_overlap(tmp_path: Path) -> None:
    config = _config(tmp_path)
    built = {d.name: d for d in deployments(load_settings(config), config)}

    assert set(built) == {
        "backlash-ingest",
        "backlash-monitor",
        "backlash-digest",
        "backlash-run",
        "backlash-relabel",
        "backlash-replay",
        "backlash-backfill",
    }
    for deployment in built.values():
        assert deployment.concurrency_limit == 1
        assert deployment.parameters == {"config": str(config.resolve())}
        assert deployment.entrypoint.startswith("flows.flows.")

    (ingest,) = built["backlash-ingest"].schedules
    assert ingest.schedule.interval == timedelta(minutes=10)
    (digest,) = built["backlash-digest"].schedules
    assert digest.schedule.timezone == "Europe/Paris"
    # 08:00 in Paris is 07:00 UTC in winter: the cron is read in the configured zone.
    start = datetime(2026, 11, 23, 9, tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris"))
    nxt = next(CronSim(digest.schedule.cron, start))
    assert nxt.astimezone(UTC) == datetime(2026, 11, 24, 7, tzinfo=UTC)
    assert built["backlash-run"].schedules == []
    assert built["backlash-backfill"].flow_name == "ingest"


@pytest.mark.slow
@pytest.mark.prefect
def test_a_served_digest_run_completes_and_writes_the_digest_once(
    tmp_path: Path, prefect_harness: None
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.runner import Runner

    config = _config(tmp_path)
    (digest,) = [d for d in deployments(load_settings(config), config) if "digest" in d.name]
    runner = Runner(name="test-serve", query_seconds=1)
    runner.add_deployment(digest)

    async def serve_one() -> StateType:
        run = await run_deployment(name="digest/backlash-digest", timeout=0)
        await runner.start(run_once=True)
        async with get_client() as client:
            final = await client.read_flow_run(run.id)
        assert final.state is not None
        return final.state.type

    assert asyncio.run(serve_one()) == StateType.COMPLETED

    (written,) = (tmp_path / "outbox").glob("digest-*.eml")
    msg = email.message_from_bytes(written.read_bytes(), policy=policy.default)
    assert msg["To"] == "digest@example.com"
    assert "leadership" not in str(msg)
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT alert_id, status FROM meta.alert_deliveries WHERE notice = 'digest'"
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == 1
    assert rows[0][1] == "sent"


@pytest.mark.slow
@pytest.mark.prefect
def test_a_failed_run_emails_the_operators_not_leadership(
    tmp_path: Path, prefect_harness: None
) -> None:
    from flows.flows import ingest_flow

    config = _config(tmp_path)
    config.write_text(
        CONFIG + '\n[[sources]]\nname = "gone"\nkind = "file"\npath = "missing.csv"\n',
        encoding="utf-8",
    )
    with pytest.raises(Exception, match=r"missing\.csv does not exist"):
        ingest_flow(config=str(config))

    (note,) = (tmp_path / "outbox").glob("failure-ingest-*.eml")
    msg = email.message_from_bytes(note.read_bytes(), policy=policy.default)
    assert msg["To"] == "ops@example.com"
    assert "\n" not in msg["Subject"]
    assert msg["Subject"].startswith("backlash flow ingest failed")
    assert "missing.csv" in msg.get_body(("plain",)).get_content()
