"""Validation of paths given on the command line."""

from __future__ import annotations

import os
from pathlib import Path

from promogym.experiments.errors import CLIError


def output_file(path: str | os.PathLike[str], what: str = "output") -> Path:
    """A file path the program may write: its folder exists and is writable, it is not a folder."""
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"{what} path is a folder, expected a file: {p}")
    if not p.parent.is_dir():
        raise CLIError(f"{what} folder does not exist: {p.parent}")
    if not os.access(p.parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise CLIError(f"{what} path is not writable: {p}")
    return p


def output_dir(path: str | os.PathLike[str], what: str = "output", create: bool = True) -> Path:
    """A folder the program may write into, created (with parents) when ``create``."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CLIError(f"{what} path exists and is not a folder: {p}")
    if create:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CLIError(f"cannot create {what} folder {p}: {exc.strerror}") from exc
    if not os.access(p, os.W_OK):
        raise CLIError(f"{what} folder is not writable: {p}")
    return p


def input_file(path: str | os.PathLike[str], what: str = "input") -> Path:
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{what} file not found: {p}")
    return p
