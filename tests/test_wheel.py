"""The wheel carries sql/: build it, install it (not editable) into a new venv, and use it."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_the_installed_wheel_initialises_a_database_and_shows_status(tmp_path, blank_db):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)],
                   check=True, capture_output=True, text=True)
    wheel = next(dist.glob("etlctl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"etlctl/sql/schema.sql", "etlctl/sql/queries/flow.sql", "etlctl/sql/migrations/0001_etlctl_schema.sql"} <= set(names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # Dependencies come from this test run's environment; etlctl itself only from the wheel.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True)

    # From elsewhere than the repository, so that its etlctl/ folder is not on the path.
    where = subprocess.run([str(python), "-c", "import etlctl; print(etlctl.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout.strip()
    assert where.startswith(str(venv)), where

    env = {"ETLCTL_DSN": blank_db.dsn, "PATH": "/usr/bin:/bin"}
    init = subprocess.run([str(venv / "bin" / "etlctl"), "db", "init"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert init.stdout.startswith("created etlctl's schema on an empty database: 0001_etlctl_schema")
    status = subprocess.run([str(venv / "bin" / "etlctl"), "status", "--json"], env=env, capture_output=True, text=True,
                            cwd=tmp_path)
    assert (status.returncode, status.stdout) == (0, "[]\n")
