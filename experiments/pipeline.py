"""The pipeline engine: stages and trials in one run folder, with one skip-if-done scheme.

A **stage** (logs, a fitted model, a report's tables) is one folder written into a temporary folder and
renamed when complete, with a completion record ``stage.json``: the stage's *key* (a hash of its settings
and of the *ids* of what it reads) and its own *id* (new each time it is redone). A rerun skips a stage
whose record holds the same key; a stage that reads a redone stage gets a new key through that stage's new
id, so dependants are redone even when the settings are equal.

A **trial** (one training run, one policy's evaluation) is a payload with a ``key`` and a ``record``: the
path of the JSON the trial function writes last, holding that key. Trials whose record holds their key are
skipped; the rest run on the local process pool or Ray (:mod:`promogym.experiments.trials`), recorded as
each finishes, so an interruption loses only the trials in flight. A set of trials is a stage too: its
record names the trial keys it was finished with.

``promogym experiment``, ``promogym agents-report`` and ``promogym hillstrom`` are stage sets of this engine.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from promogym.core.io import atomic_dir, git_commit, machine_info, write_json

Payload = dict[str, Any]


def key_of(*parts: Any) -> str:
    """A short stable hash of JSON-able settings: a stage's or trial's identity."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def read_record(f: str | Path) -> dict[str, Any]:
    """The completion record of a stage or trial (its key, output id, seconds); empty if it never finished."""
    p = Path(f)
    return json.loads(p.read_text()) if p.is_file() else {}


def trial_done(payload: Payload) -> bool:
    """Whether a trial's completion record holds the payload's key (the trial finished with these settings)."""
    return read_record(payload["record"]).get("key") == payload["key"]


class Pipeline:
    """One run folder: stages and trial sets keyed as the module docstring says.

    ``keys`` and ``ids`` hold, per stage name, the key it was asked for and the id of its output;
    ``backend``, ``jobs`` and ``address`` say where trials run."""

    def __init__(self, out: Path, progress: bool = True, echo: Callable[[str], None] = print,
                 backend: str = "local", jobs: int = 1, address: str | None = None) -> None:
        self.out, self.progress, self.echo = Path(out), progress, echo
        self.backend, self.jobs, self.address = backend, jobs, address
        self.keys: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self.commit = git_commit()  # the code this invocation runs: recorded with every stage it finishes

    def done(self, name: str, key: str) -> str | None:
        """The output id of stage ``name`` if it finished with this key, else None."""
        record = read_record(self.out / name / "stage.json")
        return str(record.get("id")) if record and record.get("key") == key else None

    def _finish(self, folder: Path, name: str, key: str, seconds: float, **extra: Any) -> str:
        out_id = uuid.uuid4().hex
        write_json(folder / "stage.json", {"key": key, "id": out_id, "seconds": seconds, "commit": self.commit,
                                           "finished": time.time(), **extra})
        self.ids[name] = out_id
        return out_id

    def stage(self, name: str, key: str, build: Callable[[Path], dict[str, Any] | None]) -> Path:
        """Run ``build(folder)`` into ``out/name`` (atomically) unless it finished with ``key``; ``build`` may
        return extra fields for the record. Returns the stage's folder."""
        folder = self.out / name
        self.keys[name] = key
        if done := self.done(name, key):
            self.ids[name] = done
            self.echo(f"{name}: done already ({folder})")
            return folder
        start = time.perf_counter()
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(folder) as tmp:
            extra = build(tmp) or {}
            self._finish(tmp, name, key, time.perf_counter() - start, **extra)
        return folder

    def trials(self, name: str, payloads: Sequence[Payload], fn: Callable[[Payload], dict[str, Any]],
               describe: Callable[[Payload], str], first: Callable[[Payload], Any] | None = None,
               unit: str = "trials", **extra: Any) -> None:
        """Run every trial not done yet (``first`` orders them, e.g. the slowest first), then record the set
        as stage ``name`` (its seconds: worker-seconds summed over its trials)."""
        from tqdm.auto import tqdm

        from promogym.experiments.trials import run_trials

        key = self.keys[name] = key_of(name, [p["key"] for p in payloads])
        if (done := self.done(name, key)) and all(trial_done(p) for p in payloads):
            self.ids[name] = done
            self.echo(f"{name}: done already ({len(payloads)} {unit})")
            return
        todo = [p for p in payloads if not trial_done(p)]
        if first is not None:
            todo.sort(key=first)
        self.echo(f"{name}: {len(todo)} of {len(payloads)} {unit} to do")
        show = self.progress and sys.stderr.isatty()
        with tqdm(total=len(todo), desc=name, unit="trial", disable=not show) as bar:
            for payload, result in run_trials(fn, todo, self.backend, self.jobs, self.address):
                bar.update(1)
                self.echo(f"{name}: {describe(payload)} ({result['seconds']:.0f} s)")
        seconds = sum(float(read_record(p["record"]).get("seconds", 0.0)) for p in payloads)
        folder = self.out / name
        folder.mkdir(parents=True, exist_ok=True)
        self._finish(folder, name, key, seconds, trials=len(payloads), **extra)

    def stage_seconds(self) -> dict[str, float]:
        """Seconds per finished stage (worker-seconds for trial sets)."""
        return {name: float(read_record(self.out / name / "stage.json").get("seconds", 0.0))
                for name in self.keys if (self.out / name / "stage.json").is_file()}

    def record_run(self, name: str, seconds: float) -> None:
        """``run.json``: wall time summed over invocations that did work, stage seconds, machine, the commit of
        this invocation (``commit``) and the commit each stage was computed at (``stage_commits``: a resumed or
        redrawn run keeps the commit of the code that produced each stage)."""
        before = read_record(self.out / "run.json")
        same = not before or before.get("keys") == self.keys
        total = float(before.get("wall_seconds_total", 0.0)) + seconds if same else seconds
        write_json(self.out / "run.json", {"name": name, "wall_seconds_total": total,
                                           "last_invocation_seconds": seconds, "stage_seconds": self.stage_seconds(),
                                           "machine": machine_info(), "commit": self.commit,
                                           "stage_commits": self.stage_commits(), "keys": self.keys})

    def stage_timing(self) -> dict[str, float]:
        """What every finished stage in the run folder took, whatever invocations ran them (an interrupted one
        records no wall time in ``run.json``): ``stage_seconds``, summed over stages (worker-seconds where trials
        ran in parallel), and ``span_seconds``, from the first stage's start to the last one's end (idle time between
        invocations included)."""
        starts, ends, total = [], [], 0.0
        for f in self.out.glob("**/stage.json"):
            if any(part.startswith(".") for part in f.relative_to(self.out).parts):
                continue  # a stage still being built
            record = read_record(f)
            sec = float(record.get("seconds", 0.0))
            # when it finished (Unix time); a record without it: the file's time, which a copy of the folder resets
            end = float(record.get("finished", f.stat().st_mtime))
            starts.append(end - sec)
            ends.append(end)
            total += sec
        return {"stage_seconds": total, "span_seconds": (max(ends) - min(starts)) if ends else 0.0}

    def stage_commits(self) -> dict[str, str | None]:
        """The commit each finished stage was computed at (None: recorded before commits were)."""
        return {name: read_record(self.out / name / "stage.json").get("commit")
                for name in self.keys if (self.out / name / "stage.json").is_file()}


__all__ = ["Pipeline", "key_of", "read_record", "trial_done"]
