"""PostgreSQL: connections, named queries, the clock seam, the embedded server, migrations."""
