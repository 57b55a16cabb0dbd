"""The latency floor: a Python process that imports psycopg, connects to the same
database and runs one query (the very statement `etlctl check JOB` runs). With
--tabulate it also imports tabulate: the floor of a command that prints a table.

usage: floor.py DSN QUERY_FILE JOB_ID [--tabulate]
"""

import sys

import psycopg

if "--tabulate" in sys.argv[4:]:
    import tabulate  # noqa: F401 (imported, as etlctl's tables import it)

dsn, query_file, job_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(query_file, encoding="utf-8") as f:
    sql = f.read()
with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute(sql, {"job_id": job_id, "now": None}).fetchone()
