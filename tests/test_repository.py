"""What the repository itself ships: a license, and data files without the paths of the machine
they were made on."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MACHINE_PATH = re.compile(r'"/(?:work|tmp|root|home|Users)/')


def committed(*patterns: str) -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in listed]


def test_committed_records_hold_no_machine_paths():
    records = committed("*.json", "*.csv")
    assert records
    leaking = [str(p.relative_to(ROOT)) for p in records if MACHINE_PATH.search(p.read_text())]
    assert leaking == []


def test_the_repository_has_a_license_the_package_names():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text()
