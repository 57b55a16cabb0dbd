"""etlctl: the ETL job lifecycle (complete, check, reset, schedule) from the command line."""

__version__ = "0.1.0"
