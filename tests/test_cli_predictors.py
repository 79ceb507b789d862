"""`promogym fit`, `promogym eval-predictor` and `promogym bench predictor` from the command line."""

import json
import subprocess
import sys

import pytest
import torch

from promogym.experiments.cli import main


def test_fit_baselines_and_tiny_bert_then_evaluate(small_logs, tmp_path, capsys):
    data = str(small_logs)
    assert main(["fit", "--kind", "gbdt", "--data", data, "--out", str(tmp_path / "g.pkl")]) == 0
    assert main(["fit", "--data", data, "--encoder", "tiny", "--out", str(tmp_path / "bert"), "--no-progress",
                 "--set", "head_epochs=2", "--set", "batch_size=2048"]) == 0
    assert "bert hybrid, encoder tiny" in capsys.readouterr().out
    out = tmp_path / "eval"
    assert main(["eval-predictor", "--model", f"bert:{tmp_path / 'bert'}", "--model", f"gbdt:{tmp_path / 'g.pkl'}",
                 "--data", data, "--out", str(out), "--max-rows", "2000"]) == 0
    printed = capsys.readouterr().out
    assert "| seen | text ceiling |" in printed and "| new | gbdt |" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["sets"]) == {"seen", "new"}
    assert metrics["sets"]["seen"]["models"]["bert_bert"]["monotone_share"] == 1.0
    for png in ("calibration.png", "price_response.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("args", "needle"), [
    (["--encoder", "/nonexistent"], "is not 'minilm', 'tiny' or a Hugging Face folder"),
    (["--set", "head_epochz=3"], "head_epochz"),
    (["--set", "dropout=2"], "FitConfig.dropout must be between"),
    (["--set", "oops"], "--set expects KEY=VALUE"),
])
def test_fit_bad_settings_exit_2_and_leave_nothing(small_logs, tmp_path, capsys, args, needle):
    assert main(["fit", "--data", str(small_logs), "--out", str(tmp_path / "m"), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert list(tmp_path.iterdir()) == []


def test_eval_predictor_bad_model_specs(small_logs, tmp_path, capsys):
    for spec, needle in [("bert:" + str(tmp_path / "nope"), "checkpoint folder not found"),
                         ("forest:x", "unknown model kind"), ("gbdt", "needs a path")]:
        assert main(["eval-predictor", "--model", spec, "--data", str(small_logs), "--out", str(tmp_path / "e")]) == 2
        assert needle in capsys.readouterr().err


def test_bench_predictor_quick(tmp_path):
    res = subprocess.run([sys.executable, "-m", "promogym.experiments.cli", "bench", "predictor", "--quick", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((tmp_path / "predictor.json").read_text())
    assert result["bench"] == "predictor" and result["quick"] is True and "compared_to_cpu" not in result
    fig = result["figures"]
    assert fig["encoder_calls_during_cached_predictions"] == 0   # cached predictions never run the encoder
    assert fig["device"] == "cpu" and fig["cache_entries"] > 0 and fig["peak_rss_mb"] > 0
    # structure only (no timing is a pass mark): each ratio is the quotient of the two rates measured in this run
    assert fig["ratio_cached_over_full"] == pytest.approx(fig["cached_offers_per_s"] / fig["full_encoder_offers_per_s"])
    assert fig["bf16_speedup"] == pytest.approx(
        fig["finetune_examples_per_s_bf16"] / fig["finetune_examples_per_s_fp32"])
    assert fig["targets"] == {"ratio_cached_over_full": 500.0}   # the README's target: >= 500x
    assert fig["timing"]["cached_repeats"] == 5 and fig["timing"]["cuda_synchronize_each_call"] is False


@pytest.mark.parametrize(("args", "needle"), [
    (["predictor", "--device", "tpu"], "--device must be cpu or cuda"),
    (["world", "--device", "cuda"], "--device applies to `bench predictor` only"),
    pytest.param(["predictor", "--device", "cuda"], "no CUDA GPU is available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")),
])
def test_bench_bad_device_exits_2_and_writes_nothing(tmp_path, capsys, args, needle):
    assert main(["bench", *args, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert list(tmp_path.iterdir()) == []
