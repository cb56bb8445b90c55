"""Prefect flows and tasks that wire connectors, transforms and warehouse; the CLI."""
