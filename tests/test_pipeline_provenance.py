"""A run folder records the commit of the code that computed each stage, not only the last invocation's."""

from __future__ import annotations

import json

import promogym.experiments.pipeline as pipeline_module
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
