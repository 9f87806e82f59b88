"""Every .nix file in the repository parses (`nix-instantiate --parse`). Needs only Nix."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NIX = shutil.which("nix-instantiate")
SKIP = {".git", "result", ".venv", "node_modules"}


def nix_files() -> list[Path]:
    return sorted(p for p in REPO.rglob("*.nix") if not SKIP.intersection(p.relative_to(REPO).parts[:-1]))


@pytest.mark.skipif(NIX is None, reason="nix-instantiate is not installed")
@pytest.mark.parametrize("path", nix_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_parses(path: Path) -> None:
    assert NIX is not None
    done = subprocess.run(
        [NIX, "--parse", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_there_are_nix_files() -> None:
    names = {p.relative_to(REPO).as_posix() for p in nix_files()}
    assert {"flake.nix", "modules/uplinkd.nix", "examples/home-router.nix"} <= names
