"""A run folder records the commit of the code that computed each stage, not only the last invocation's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

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


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_recorded_commit_says_when_the_code_differs_from_it(tmp_path, monkeypatch):
    """A checkout with a modified tracked file outside results/ is recorded as '<sha>-dirty'; a command's outputs
    under results/ (also moved within it) and untracked files do not count; a file moved into results/ does;
    outside a checkout there is no commit."""
    for name in [k for k in os.environ if k.startswith("GIT_")]:  # e.g. GIT_DIR set by a hook: not this repo
        monkeypatch.delenv(name)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # /tmp inside a checkout: not found
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)  # no signing or hooks from the user's configuration
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                       capture_output=True)

    git("init", "-q")
    (repo / "results").mkdir()
    (repo / "code.py").write_text("x = 1\n")
    (repo / "results" / "table.md").write_text("| a |\n")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert git_commit(repo) == sha
    (repo / "results" / "table.md").write_text("| b |\n")
    (repo / "new.py").write_text("y = 2\n")
    git("mv", "results/table.md", "results/moved.md")
    assert git_commit(repo) == sha
    (repo / "elsewhere").mkdir()
    git("mv", "code.py", "results/code.py")
    assert git_commit(repo / "elsewhere") == f"{sha}-dirty"  # from a subfolder: the whole checkout counts
    git("mv", "results/code.py", "code.py")
    assert git_commit(repo) == sha
    (repo / "code.py").write_text("x = 2\n")
    assert git_commit(repo) == f"{sha}-dirty"
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_commit(outside) is None
