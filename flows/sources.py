"""From a ``[[sources]]`` entry to its connector and its normaliser.

The one place that knows which kind of source uses which code; connector
modules are imported only when a source of their kind is configured.
"""

from __future__ import annotations

import ssl
from datetime import datetime
from typing import Any

from connectors.base import Page, Source
from flows.config import (
    FileSourceConfig,
    FreshdeskSourceConfig,
    ImapSourceConfig,
    MboxSourceConfig,
    ZendeskSourceConfig,
    secret,
)
from transforms.schema import Normalized


def open_source(cfg: Any) -> Source:
    match cfg:
        case FileSourceConfig():
            from connectors.files import FileSource

            return FileSource(cfg.name, path=cfg.path, format=cfg.format, batch_size=cfg.batch_size)
        case ZendeskSourceConfig():
            from connectors.zendesk import ZendeskSource

            what = f"source {cfg.name!r}"
            return ZendeskSource(
                cfg.name,
                base_url=cfg.url,
                email=cfg.email,
                token=secret(cfg.token_env, what=what),
                oauth_token=secret(cfg.oauth_token_env, what=what),
                start_time=cfg.start_time,
                comments=cfg.comments,
                rate_per_minute=cfg.rate_per_minute,
                api_rate_per_minute=cfg.api_rate_per_minute,
                field_definitions=True,
            )
        case FreshdeskSourceConfig():
            from connectors.freshdesk import FreshdeskSource

            return FreshdeskSource(
                cfg.name,
                base_url=cfg.url,
                api_key=secret(cfg.api_key_env, what=f"source {cfg.name!r}"),
                start_time=cfg.start_time,
                conversations=cfg.conversations,
                rate_per_minute=cfg.rate_per_minute,
                field_definitions=True,
            )
        case ImapSourceConfig():
            from connectors.imap import ImapSource

            password = secret(cfg.password_env, what=f"source {cfg.name!r}")
            assert password is not None
            return ImapSource(
                cfg.name,
                host=cfg.host,
                port=cfg.port,
                security=cfg.security,
                user=cfg.user,
                password=password,
                folders=cfg.folders,
                batch_size=cfg.batch_size,
                max_message_bytes=cfg.max_message_bytes,
                timeout=cfg.timeout,
                ssl_context=ssl.create_default_context(cafile=cfg.ca_file) if cfg.ca_file else None,
            )
        case MboxSourceConfig():
            from connectors.mailbox import MailboxSource

            return MailboxSource(
                cfg.name,
                path=cfg.path,
                batch_size=cfg.batch_size,
                max_message_bytes=cfg.max_message_bytes,
            )
    raise ValueError(f"unknown source kind {getattr(cfg, 'kind', cfg)!r}")


def normalize_page(cfg: Any, page: Page, now: datetime, known_threads: Any = None) -> Normalized:
    """``known_threads`` (email sources): stored messages a reply may belong to."""
    if not page.records:
        from transforms.schema import TICKETS, empty

        return Normalized(tickets=empty(TICKETS))
    match cfg:
        case FileSourceConfig():
            from transforms.normalize_file import normalize_file

            return normalize_file(page.records, source=cfg.name, ingested_at=now)  # type: ignore[arg-type]
        case ZendeskSourceConfig():
            from transforms.normalize_helpdesk import normalize_zendesk

            return normalize_zendesk(
                page.records,
                source=cfg.name,
                stream=page.stream,
                ingested_at=now,  # type: ignore[arg-type]
            )
        case FreshdeskSourceConfig():
            from transforms.normalize_helpdesk import normalize_freshdesk

            return normalize_freshdesk(
                page.records,
                source=cfg.name,
                stream=page.stream,
                ingested_at=now,  # type: ignore[arg-type]
            )
        case ImapSourceConfig() | MboxSourceConfig():
            from transforms.normalize_email import normalize_email

            return normalize_email(
                page.records,
                page.record_ids,
                source=cfg.name,
                ingested_at=now,
                known_threads=known_threads,
                support_addresses=tuple(cfg.support_addresses),
            )
    raise ValueError(f"unknown source kind {getattr(cfg, 'kind', cfg)!r}")
