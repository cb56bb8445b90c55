"""Everything that talks to the outside world, and nothing else.

Inbound connectors are generators of :class:`connectors.base.Page`; they never
touch DuckDB. Outbound connectors (outbox, SMTP) deliver what flows hand them.
"""
