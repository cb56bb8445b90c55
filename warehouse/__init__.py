"""DuckDB: schema migrations, transactional loads, sync state and read access.

Never calls the network.
"""
