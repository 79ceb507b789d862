"""A run folder records the commit of the code that computed each stage, not only the last invocation's."""

from __future__ import annotations

import json
import os
import subprocess
import time

import promogym.experiments.pipeline as pipeline_module
from promogym.core.io import git_commit
from promogym.experiments.pipeline import Pipeline


def test_each_stage_keeps_the_commit_it_was_computed_at(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline_module, "git_commit", lambda: "aaaa")
    first = Pipeline(tmp_path, echo=lambda _: None)
    first.stage("logs", "k1", lambda folder: None)
    first.record_run("demo", 1.0)
    monkeypatch.setattr(pipeline_module, "git_commit", lambda: "bbbb")
    second = Pipeline(tmp_path, echo=lambda _: None)
    second.stage("logs", "k1", lambda folder: None)      # done already: not recomputed
    second.stage("report", "k2", lambda folder: None)    # computed by this invocation
    second.record_run("demo", 1.0)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["commit"] == "bbbb"
    assert run["stage_commits"] == {"logs": "aaaa", "report": "bbbb"}
    assert json.loads((tmp_path / "logs" / "stage.json").read_text())["commit"] == "aaaa"


def test_the_span_of_a_run_reads_when_stages_finished_not_file_times(tmp_path):
    """A run folder copied elsewhere (its files' times reset) still reports the span its stages took: the span runs
    from the first stage's start to the last one's end as the stages recorded them."""
    pipe = Pipeline(tmp_path, echo=lambda _: None)
    pipe.stage("a", "k1", lambda folder: None)
    pipe.stage("b", "k2", lambda folder: None)
    for name, finished, seconds in (("a", 1_000.0, 10.0), ("b", 1_500.0, 20.0)):
        path = tmp_path / name / "stage.json"
        record = json.loads(path.read_text())
        assert record["finished"] > 0
        path.write_text(json.dumps({**record, "finished": finished, "seconds": seconds}))
        os.utime(path, (time.time(), time.time()))  # as a copy would leave it
    assert pipe.stage_timing() == {"stage_seconds": 30.0, "span_seconds": 510.0}


def test_the_recorded_commit_says_when_the_code_differs_from_it(tmp_path):
    """A checkout with a modified tracked file outside results/ is recorded as '<sha>-dirty'; a command's outputs
    under results/ and untracked files do not count; outside a checkout there is no commit."""
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "table.md").write_text("| a |\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == sha
    (tmp_path / "results" / "table.md").write_text("| b |\n")
    (tmp_path / "new.py").write_text("y = 2\n")
    assert git_commit(tmp_path) == sha
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == f"{sha}-dirty"
    (tmp_path / "elsewhere").mkdir()
    assert git_commit(tmp_path / "elsewhere") == f"{sha}-dirty"  # from a subfolder: the whole checkout counts
    outside = tmp_path.parent / f"{tmp_path.name}_plain"
    outside.mkdir()
    assert git_commit(outside) is None
