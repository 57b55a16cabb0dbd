"""The latency floor: a Python process that imports psycopg, connects to the same
database and runs one query (the very statement `etlctl check JOB` runs).

usage: floor.py DSN QUERY_FILE JOB_ID
"""

import sys

import psycopg

dsn, query_file, job_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(query_file, encoding="utf-8") as f:
    sql = f.read()
with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute(sql, {"job_id": job_id, "now": None}).fetchone()
