"""Validation of what the command line names: input and output paths, KEY=VALUE overrides.

The output rule every command follows: an output that exists is refused with a one-line error unless
``--force`` — or unless it is the same work: a run folder of the same pipeline and name (its stage keys then
decide what is redone) or a report folder written from the same run. Commands write under ``runs/`` by
default; nothing under the committed ``results/`` is written unless ``--out`` names it."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, overload

from promogym.experiments.errors import CLIError

MARKER = "promogym-output.json"  # what a folder holds: {"kind": ..., "name" or "run": ...}


def output_file(path: str | os.PathLike[str], what: str = "output", force: bool = False) -> Path:
    """A file path the program may write: its folder exists and is writable, it is not a folder, and it does
    not exist yet unless ``force``."""
    p = Path(path)
    if p.exists() and not p.is_dir() and not force:
        raise CLIError(f"{what} {p} exists; pass --force to replace it")
    if p.is_dir():
        raise CLIError(f"{what} path is a folder, expected a file: {p}")
    if not p.parent.is_dir():
        raise CLIError(f"{what} folder does not exist: {p.parent}")
    if not os.access(p.parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise CLIError(f"{what} path is not writable: {p}")
    return p


def read_marker(folder: Path) -> dict[str, Any]:
    """What a folder says it holds (empty when it says nothing or cannot be read)."""
    import json

    try:
        found = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def check_output_dir(path: str | os.PathLike[str], what: str = "output", force: bool = False,
                     holds: dict[str, Any] | None = None) -> Path:
    """What :func:`output_dir` checks, without creating or writing anything: a folder that exists and is not
    empty is refused unless ``force`` or its marker says it ``holds`` the same work; a folder to be created
    needs a writable ancestor."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CLIError(f"{what} path exists and is not a folder: {p}")
    if p.is_dir() and any(p.iterdir()) and not force and (holds is None or read_marker(p) != holds):
        said = read_marker(p)
        held = f" (it holds {said.get('kind')} {said.get('name') or said.get('run')})" if said else ""
        raise CLIError(f"{what} folder {p} exists and is not empty{held}; pass --force to write into it")
    base = p
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir() or not os.access(base, os.W_OK):
        raise CLIError(f"{what} folder is not writable: {p}")
    return p


def output_dir(path: str | os.PathLike[str], what: str = "output", create: bool = True, force: bool = False,
               holds: dict[str, Any] | None = None) -> Path:
    """A folder the program may write into (see :func:`check_output_dir`), created with its parents when
    ``create``; when ``holds`` is given it is recorded as the folder's marker."""
    p = check_output_dir(path, what, force, holds)
    if create:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CLIError(f"cannot create {what} folder {p}: {exc.strerror}") from exc
        if holds is not None:
            from promogym.core.io import write_json

            write_json(p / MARKER, holds)
    return p


def resumable_dir(path: str | os.PathLike[str], what: str, *, resume: bool, force: bool, again: str,
                  ours: Any = None, kind: str = "") -> Path:
    """The folder of a command that can resume: new or empty; a non-empty one only with ``resume`` (to
    continue) or ``force`` (``again``), and then only when ``ours(folder)`` says it holds ``kind`` (a folder
    the project wrote) where ``ours`` is given."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CLIError(f"{what} exists and is not a folder: {p}")
    if p.is_dir() and any(p.iterdir()):
        if not (resume or force):
            raise CLIError(f"{what} folder {p} exists and is not empty; pass --resume to continue there or --force "
                           f"to {again}")
        if ours is not None and not ours(p):
            raise CLIError(f"{what} folder {p} holds files that are not {kind}; choose another {what}")
    return p


def run_marker(kind: str, name: str) -> dict[str, Any]:
    """The marker of a pipeline's run folder: a rerun of the same pipeline and name is the same work."""
    return {"kind": kind, "name": name}


def report_marker(run: str | os.PathLike[str]) -> dict[str, Any]:
    """The marker of a report folder: a report redrawn from the same run folder is the same work."""
    return {"kind": "report", "run": str(Path(run).resolve())}


@overload
def run_and_report_dirs(run: str | os.PathLike[str], run_flag: str, report: str | os.PathLike[str],
                        report_flag: str, force: bool, marker: dict[str, Any]) -> tuple[Path, Path]: ...
@overload
def run_and_report_dirs(run: str | os.PathLike[str], run_flag: str, report: None,
                        report_flag: str, force: bool, marker: dict[str, Any]) -> tuple[Path, None]: ...
@overload
def run_and_report_dirs(run: str | os.PathLike[str], run_flag: str, report: str | os.PathLike[str] | None,
                        report_flag: str, force: bool, marker: dict[str, Any]) -> tuple[Path, Path | None]: ...
def run_and_report_dirs(run: str | os.PathLike[str], run_flag: str, report: str | os.PathLike[str] | None,
                        report_flag: str, force: bool, marker: dict[str, Any]) -> tuple[Path, Path | None]:
    """A pipeline's run folder (holding ``marker``) and its report folder (None: no report), both checked
    before either is created, so a refusal leaves nothing behind."""
    check_output_dir(run, run_flag, force, marker)
    if report is not None:
        check_output_dir(report, report_flag, force, report_marker(run))
    out = output_dir(run, run_flag, force=force, holds=marker)
    return out, None if report is None else output_dir(report, report_flag, force=force, holds=report_marker(out))


def add_force(p: Any) -> None:
    """The ``--force`` flag of a command that writes outputs."""
    p.add_argument("--force", action="store_true", help="replace an existing output (only what this command writes)")


def check_episodes(episodes: int, seed: int, most: int) -> None:
    """``--episodes`` in [1, ``most``] and ``--seed`` such that seeds ``seed .. seed + episodes - 1`` are valid
    Gymnasium seeds; CLIError naming the flag otherwise."""
    if not 1 <= episodes <= most:
        raise CLIError(f"--episodes must be between 1 and {most:,}, got {episodes}")
    if not 0 <= seed <= 2**31 - 1 - episodes:
        raise CLIError(f"--seed must be >= 0 (episodes use seed, seed+1, ...), got {seed}")


def input_file(path: str | os.PathLike[str], what: str = "input") -> Path:
    """``path`` as a Path when it is an existing file; CLIError naming ``what`` otherwise."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{what} file not found: {p}")
    return p


def resolve_response(env_id: str, given: str | None, env_config: dict[str, Any]) -> str:
    """The response a command plays ``env_id`` with: ``--response``, else ``--env-set response=...`` (moved out of
    ``env_config``: one place for it; CLIError when both are given and differ), else the env's default (the world on
    the market envs, the trial's cells on HillstromTargeting-v0). A world-free env has no default and no world:
    CLIError without a response or with ``world``."""
    from promogym import envs
    from promogym.envs.base import world_free

    if env_id not in envs.ENV_IDS:
        raise CLIError(f"unknown env id {env_id!r}; choose one of {', '.join(envs.ENV_IDS)}")
    in_config = env_config.pop("response", None)
    if given is not None and in_config is not None and given != in_config:
        raise CLIError(f"--response {given} and --env-set response={in_config} disagree; give one")
    response = given if given is not None else in_config
    if world_free(env_id) and response in (None, "world"):
        raise CLIError(f"{env_id} has no world: --response must name the model fitted on the shop "
                       f"(clogit:<json>, gbdt:<file> or bert:<dir>)")
    if response is not None:
        return str(response)
    return "world" if env_id in envs.MARKET_ENV_IDS else "cells"


def parse_overrides(pairs: list[str], flag: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` pairs of a repeatable flag, each value read as YAML (numbers, lists, mappings)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise CLIError(f"{flag} {key.strip()}: the value is not valid YAML ({exc})") from exc
        out[key.strip()] = _number(parsed)
    return out


def _number(value: Any) -> Any:
    """A string YAML 1.1 leaves unparsed but Python reads as a finite number (``3e-3``, ``1E5``) as that number."""
    if isinstance(value, str):
        try:
            x = float(value)
        except ValueError:
            return value
        if math.isfinite(x) and any(c in value for c in "eE") and value.strip().lstrip("+-")[:1].isdigit():
            return int(x) if x.is_integer() and "." not in value and "-" not in value.lower().split("e")[-1] else x
    return value


def torch_device(device: str, what: str = "--device") -> str:
    """A torch device this machine has (``cpu``, ``cuda``, ``cuda:N``), as a string; a CLIError otherwise."""
    if device == "cpu":
        return device
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise CLIError(f"{what} must be cpu or cuda (or cuda:N), got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"{what} {device}: no CUDA GPU is available on this machine")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise CLIError(f"{what} {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return str(dev)
