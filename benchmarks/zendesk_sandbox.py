"""Zendesk connector throughput against the local sandbox, on the real clock.

What it measures: tickets per minute achieved against the export's rate limit,
whose ceiling is ``rate_per_minute × page_size`` tickets a minute, and whether
any 429 was left unhandled (the run must finish with every ticket, once).

Two runs:
- ``matched``: the client knows the server's limit; its token bucket should
  keep the server from ever answering 429.
- ``misconfigured``: the client believes it may send 10× more; the server
  throttles, and ``Retry-After`` must carry the run through.

    .venv/bin/python benchmarks/zendesk_sandbox.py [--tickets 4000] [--page-size 200]
        [--rate 60] [--comments]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from connectors.http import HttpSession
from connectors.sandbox import serve_zendesk
from connectors.zendesk import ZendeskSource

EMAIL, TOKEN = "bench@example.com", "bench-token"


def make_tickets(n: int, now: float) -> list[dict[str, Any]]:
    base = now - 7 * 86_400
    return [
        {
            "id": i,
            "created_at": datetime.fromtimestamp(base + i, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated_at": datetime.fromtimestamp(base + i, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "generated_timestamp": int(base + i),
            "subject": f"Ticket {i}",
            "description": "The new price is too high, I am cancelling.",
            "status": "open",
            "requester_id": 10_000 + i % 500,
            "tags": ["pricing"],
            "via": {"channel": "email"},
        }
        for i in range(1, n + 1)
    ]


def run(
    *, tickets: int, page_size: int, server_rate: int, client_rate: int, comments: bool
) -> dict[str, Any]:
    server, url = serve_zendesk(
        make_tickets(tickets, time.time()),
        rate_per_minute=server_rate,
        page_size=page_size,
        credentials=(EMAIL, TOKEN),
    )
    try:
        session = HttpSession("bench")
        source = ZendeskSource(
            "bench",
            base_url=url,
            email=EMAIL,
            token=TOKEN,
            start_time=datetime(2000, 1, 1, tzinfo=UTC),
            session=session,
            comments=comments,
            rate_per_minute=client_rate,
            api_rate_per_minute=100_000,
            page_size=page_size,
        )
        seen: list[int] = []
        started = time.perf_counter()
        for page in source.pages({}):
            if page.stream == "tickets":
                seen.extend(int(i) for i in page.record_ids)
        elapsed = time.perf_counter() - started
    finally:
        server.close()
    requests_made = server.state.export_requests
    return {
        "tickets": tickets,
        "page_size": page_size,
        "server_rate_per_minute": server_rate,
        "client_rate_per_minute": client_rate,
        "comments": comments,
        "elapsed_s": round(elapsed, 2),
        "export_requests": requests_made,
        "tickets_per_minute": round(len(seen) / elapsed * 60, 1),
        # The first request needs no slot: count what came after it, per slot used.
        "steady_tickets_per_minute": round((len(seen) - page_size) / elapsed * 60, 1),
        "ceiling_tickets_per_minute": server_rate * page_size,
        "server_429s": server.state.rate_limited,
        "client_saw_429s": session.throttled,
        "complete": sorted(seen) == list(range(1, tickets + 1)),
        "duplicates": len(seen) - len(set(seen)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=4000)
    parser.add_argument("--page-size", type=int, default=200)
    parser.add_argument("--rate", type=int, default=60, help="server limit, requests/minute")
    parser.add_argument("--comments", action="store_true")
    args = parser.parse_args()
    results = {
        "matched": run(
            tickets=args.tickets,
            page_size=args.page_size,
            server_rate=args.rate,
            client_rate=args.rate,
            comments=args.comments,
        ),
        "misconfigured": run(
            tickets=args.tickets,
            page_size=args.page_size,
            server_rate=args.rate,
            client_rate=args.rate * 10,
            comments=args.comments,
        ),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
