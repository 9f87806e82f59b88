"""Running the NixOS module's evaluation harness (eval.nix) for the nix tier's tests.

nixpkgs' `lib` comes from UPLINKD_NIXPKGS_LIB when it is set, else from ``shared/nixpkgs.lib``
beside the repository (CI's clone has ``shared/`` next to it; a git worktree also looks beside
its main checkout). Without one, the evaluating tests skip and say how to get it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MODULE = REPO / "modules" / "uplinkd.nix"
HARNESS = HERE / "eval.nix"
LIB_VARIABLE = "UPLINKD_NIXPKGS_LIB"
NIX = shutil.which("nix-instantiate")


class EvalError(Exception):
    """nix-instantiate refused the config; carries its message."""


def _lib_dir(root: Path) -> Path | None:
    for candidate in (root / "lib", root):
        if (candidate / "default.nix").is_file() and (candidate / "modules.nix").is_file():
            return candidate
    return None


def _checkouts() -> list[Path]:
    """The repository and, for a git worktree, its main checkout."""
    roots = [REPO]
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--path-format=absolute", "--git-common-dir"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode == 0 and done.stdout.strip():
        roots.append(Path(done.stdout.strip()).parent)
    return roots


@cache
def nixpkgs_lib() -> Path | None:
    """nixpkgs' lib/ folder, or None."""
    if os.environ.get(LIB_VARIABLE):
        return _lib_dir(Path(os.environ[LIB_VARIABLE]))
    for root in _checkouts():
        found = _lib_dir(root.parent / "shared" / "nixpkgs.lib")
        if found is not None:
            return found
    return None


def skip_reason() -> str | None:
    if NIX is None:
        return "nix-instantiate is not installed (apt install nix-bin)"
    if nixpkgs_lib() is None:
        where = os.environ.get(LIB_VARIABLE) or f"{REPO.parent / 'shared' / 'nixpkgs.lib'}"
        return (
            f"no nixpkgs lib at {where}: set {LIB_VARIABLE} to a checkout of "
            "github:nix-community/nixpkgs.lib (the folder holding lib/)"
        )
    return None


needs_lib = [
    pytest.mark.nix,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]


def nix_eval(expression: str) -> Any:
    """A Nix expression's value as JSON; `lib` and `repo` are in scope."""
    assert NIX is not None
    wrapped = f"let lib = import {nixpkgs_lib()}; repo = {REPO}; in {expression}"
    done = subprocess.run(
        [NIX, "--eval", "--strict", "--json", "--expr", wrapped],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        raise EvalError(done.stderr)
    return json.loads(done.stdout)


def evaluate(
    config: Path,
    show: tuple[str, ...] = (),
    *,
    specialisation: str = "",
    can_execute: bool = True,
) -> dict[str, Any]:
    """The harness's answer for `config`: failedAssertions, warnings, settings, config, options…"""
    assert NIX is not None
    argv = [
        NIX, "--eval", "--strict", "--json", str(HARNESS),
        "--arg", "lib", f"import {nixpkgs_lib()}",
        "--arg", "module", str(MODULE),
        "--arg", "config", str(config),
        "--argstr", "show", ",".join(show),
        "--argstr", "specialisation", specialisation,
        "--arg", "canExecute", "true" if can_execute else "false",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise EvalError(done.stderr)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def uplinkctl_check(settings: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(settings, indent=2))
    return subprocess.run(
        [sys.executable, "-m", "uplinkd.cli", "check", str(path)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def to_nix(value: Any) -> str:
    """A JSON-like value as a Nix expression."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"({value!r})"
    if isinstance(value, str):
        return json.dumps(value).replace("${", "\\${")
    if isinstance(value, list):
        return "[ " + " ".join(to_nix(v) for v in value) + " ]"
    if isinstance(value, dict):
        return "{ " + " ".join(f"{json.dumps(k)} = {to_nix(v)};" for k, v in value.items()) + " }"
    raise TypeError(f"no Nix for {value!r}")


def settings_module(settings: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "config.nix"
    path.write_text(to_nix({"services": {"uplinkd": {"enable": True, "settings": settings}}}) + "\n")
    return path


def combined(tmp_path: Path, *parts: str, name: str = "combined.nix") -> Path:
    """A config importing the given modules (Nix expressions: paths or attrsets)."""
    path = tmp_path / name
    path.write_text("{ imports = [\n" + "\n".join(f"  ({p})" for p in parts) + "\n]; }\n")
    return path


def vm_router(test: Path) -> str:
    """The router node of a NixOS VM test, as a Nix expression for `combined`."""
    return f"(import {test} {{ lib = import {nixpkgs_lib()}; }}).nodes.router"
