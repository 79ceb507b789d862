"""Run folders hold no file the project did not write: JSON normalization, a manifest checked before any SB3 zip
is unpickled, `--trust` to load anything else, resume past truncated checkpoints, bad train input refused."""

import base64
import hashlib
import io
import json
import pathlib
import pickle
import shutil
import zipfile

import gymnasium as gym
import numpy as np
import pytest

from promogym.agents import train as train_mod
from promogym.agents.train import LearnedPolicy, TrainSpec, train
from promogym.experiments.cli import main

ENV = "promogym/DynamicPricing-v1"
TINY = {"market": {"n_customers": 600, "n_products": 60}, "n_products": 2, "horizon": 4, "daily_customers": 40,
        "initial_stock": 30}
TINY_SET = ["--env-set", "market={n_customers: 600, n_products: 60}", "--env-set", "n_products=2",
            "--env-set", "horizon=4", "--env-set", "daily_customers=40", "--env-set", "initial_stock=30"]
HP = {"n_steps": 64, "batch_size": 32, "n_epochs": 1}
HP_SET = ["--set", "n_steps=64", "--set", "batch_size=32", "--set", "n_epochs=1"]


def _spec(timesteps=256):
    return TrainSpec(ENV, "ppo", 0, timesteps, env_config=dict(TINY), eval_freq=64, eval_episodes=2,
                     checkpoint_freq=64, hyperparams=dict(HP))


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    """A real tiny run (checkpoints at 64, 128, 192, 256 steps) and, for the round trip, SB3's own pickles of
    every VecNormalize it saved (keyed by the JSON written for it): what the old format held."""
    run = tmp_path_factory.mktemp("runs") / "ppo"
    pickled: dict[str, bytes] = {}
    original = train_mod.normalization_dict

    def recording(vec):
        d = original(vec)
        pickled[json.dumps(d, sort_keys=True)] = pickle.dumps(vec)
        return d

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "normalization_dict", recording)
        train(_spec(), run)
    return run, pickled


@pytest.fixture
def run(genuine, tmp_path):
    """A fresh copy of the genuine run to tamper with."""
    dst = tmp_path / "run"
    shutil.copytree(genuine[0], dst)
    return dst


class Plant:
    """A crafted pickle: unpickling it creates the marker file."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _plant_zip(src, dst, marker):
    """A copy of an SB3 zip whose ``data`` holds the crafted pickle where SB3 cloudpickles its policy class."""
    with zipfile.ZipFile(src) as zin:
        members = {n: zin.read(n) for n in zin.namelist()}
    data = json.loads(members["data"])
    data["policy_class"][":serialized:"] = base64.b64encode(pickle.dumps(Plant(marker))).decode()
    members["data"] = json.dumps(data).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zout:
        for name, blob in members.items():
            zout.writestr(name, blob)
    pathlib.Path(dst).write_bytes(buf.getvalue())


def _env():
    return gym.make(ENV, config=dict(TINY))


def _observations(n=40):
    env = _env()
    rng = np.random.default_rng(0)
    obs = []
    for seed in range(3):
        o, _ = env.reset(seed=seed)
        done = False
        while not done:
            obs.append(o)
            o, _, term, trunc, _ = env.step(env.action_space.sample())
            done = term or trunc
    low = np.asarray(obs).min(0)
    high = np.asarray(obs).max(0)
    obs += [rng.uniform(low - 1, high + 1).astype(np.float32) for _ in range(n)]
    return obs


def _evaluate(run, tmp_path, *extra):
    return main(["evaluate", "--env", ENV, "--policy", str(run), "--episodes", "2", "--out",
                 str(tmp_path / "ep.parquet"), *TINY_SET, *extra])


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_run_folder_holds_json_normalization_and_a_complete_manifest(genuine):
    run, _ = genuine
    assert not list(run.rglob("*.pkl"))
    manifest = json.loads((run / "manifest.json").read_text())
    written = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == written
    for rel, sha in manifest["files"].items():
        assert hashlib.sha256((run / rel).read_bytes()).hexdigest() == sha, rel
    assert {"checkpoints/model_256_steps.zip", "checkpoints/model_vecnormalize_256_steps.json"} <= written
    stats = json.loads((run / "vecnormalize.json").read_text())
    assert {"obs_rms", "ret_rms", "clip_obs", "clip_reward", "epsilon", "gamma"} <= set(stats)
    assert len(stats["obs_rms"]["mean"]) == _env().observation_space.shape[0]


@pytest.mark.parametrize("best", [True, False])
def test_actions_are_identical_to_the_pickled_format(genuine, best):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    run, pickled = genuine
    stats = json.loads((run / ("best_vecnormalize.json" if best else "vecnormalize.json")).read_text())
    old_norm = pickle.loads(pickled[json.dumps(stats, sort_keys=True)])  # the test's own pickle (old format)
    old_norm.set_venv(DummyVecEnv([_env]))
    old_model = PPO.load(run / ("best_model.zip" if best else "model.zip"), device="cpu")
    policy = LearnedPolicy(run, _env(), best=best)
    for attr in ("clip_obs", "clip_reward", "epsilon", "gamma"):
        assert getattr(policy.norm, attr) == getattr(old_norm, attr)
    for attr in ("mean", "var", "count"):
        np.testing.assert_array_equal(getattr(policy.norm.obs_rms, attr), getattr(old_norm.obs_rms, attr))
    for obs in _observations():
        old, _ = old_model.predict(old_norm.normalize_obs(obs[None]), deterministic=True)
        new, _ = policy.predict(obs)
        np.testing.assert_array_equal(new, old[0])


def test_planted_normalization_pickle_is_never_unpickled(run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    (run / "best_vecnormalize.json").write_bytes(pickle.dumps(Plant(marker)))
    with pytest.raises(ValueError, match=r"best_vecnormalize.json differs from its manifest.json"):
        LearnedPolicy(run, _env())
    with pytest.raises(ValueError, match=r"best_vecnormalize.json is not valid JSON"):
        LearnedPolicy(run, _env(), trust=True)  # trusted or not, normalization files are JSON
    assert _evaluate(run, tmp_path) == 2
    assert "best_vecnormalize.json" in _one_line_error(capsys)
    assert _evaluate(run, tmp_path, "--trust") == 2
    assert "best_vecnormalize.json" in _one_line_error(capsys)
    # an old-format pickle in place of the JSON files is named, never read
    for f in ("best_vecnormalize.json", "vecnormalize.json"):
        (run / f).unlink()
    (run / "vecnormalize.pkl").write_bytes(pickle.dumps(Plant(marker)))
    with pytest.raises(ValueError, match=r"vecnormalize.json not found; vecnormalize.pkl is a pickle"):
        LearnedPolicy(run, _env(), trust=True)
    assert not marker.exists()


def test_planted_model_zip_is_refused_before_unpickling(run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    _plant_zip(run / "best_model.zip", run / "best_model.zip", marker)
    with pytest.raises(ValueError, match=r"refusing to load .*best_model.zip: run folder .*differs from its manifest"):
        LearnedPolicy(run, _env())
    assert _evaluate(run, tmp_path) == 2
    err = _one_line_error(capsys)
    assert "best_model.zip" in err and str(run) in err and "--trust" in err
    # without a manifest at all: refused too
    (run / "manifest.json").unlink()
    assert _evaluate(run, tmp_path) == 2
    assert "no valid manifest.json" in _one_line_error(capsys)
    assert not marker.exists()
    # the control: the crafted zip really runs code when unpickled, which is what --trust allows
    with pytest.raises(Exception):  # noqa: B017 - the crafted policy class is no class
        LearnedPolicy(run, _env(), trust=True)
    assert marker.exists()


def test_a_genuine_folder_without_manifest_loads_only_with_trust(run, genuine, tmp_path, capsys):
    (run / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"refusing to load .*best_model.zip: run folder .* has no valid manifest"):
        LearnedPolicy(run, _env())
    trusted, reference = LearnedPolicy(run, _env(), trust=True), LearnedPolicy(genuine[0], _env())
    for obs in _observations(5):
        np.testing.assert_array_equal(trusted.predict(obs)[0], reference.predict(obs)[0])
    assert _evaluate(run, tmp_path) == 2
    assert "manifest.json" in _one_line_error(capsys)
    assert _evaluate(run, tmp_path, "--trust") == 0
    # an unlisted file is refused as well
    (run / "manifest.json").write_text(json.dumps({"format": "promogym-run-manifest/1", "files": {}}))
    with pytest.raises(ValueError, match="does not list"):
        LearnedPolicy(run, _env())


def test_a_truncated_normalization_file_is_named(run):
    data = (run / "vecnormalize.json").read_bytes()
    (run / "vecnormalize.json").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"vecnormalize.json differs from its manifest.json entry"):
        LearnedPolicy(run, _env(), best=False)
    with pytest.raises(ValueError, match=r"normalization file .*vecnormalize.json is not valid JSON"):
        LearnedPolicy(run, _env(), best=False, trust=True)


def test_resume_falls_back_past_a_truncated_checkpoint(run, tmp_path, caplog):
    ckpt = run / "checkpoints"
    data = (ckpt / "model_256_steps.zip").read_bytes()
    (ckpt / "model_256_steps.zip").write_bytes(data[: len(data) // 3])
    # a planted checkpoint further on, not in the manifest: skipped, never unpickled
    marker = tmp_path / "pwned"
    _plant_zip(ckpt / "model_192_steps.zip", ckpt / "model_999_steps.zip", marker)
    shutil.copy(ckpt / "model_vecnormalize_192_steps.json", ckpt / "model_vecnormalize_999_steps.json")
    with caplog.at_level("WARNING", logger="promogym.agents.train"):
        meta = train(_spec(320), run, resume=True)
    assert meta["resumed_from_step"] == 192
    assert not marker.exists()
    text = caplog.text
    assert "skipping the checkpoint at 999 steps" in text and "does not list" in text
    assert "skipping the checkpoint at 256 steps" in text and "differs from its manifest" in text
    assert "falling back to the intact checkpoint at 192 steps" in text
    # the resumed run vouches for what it wrote
    files = json.loads((run / "manifest.json").read_text())["files"]
    assert "checkpoints/model_320_steps.zip" in files
    LearnedPolicy(run, _env(), best=False)


def test_resume_with_no_intact_checkpoint_is_a_clear_error(run):
    for f in (run / "checkpoints").glob("*.zip"):
        f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"no intact checkpoint to resume from in .*checkpoints \(tried 4"):
        train(_spec(320), run, resume=True)
    with pytest.raises(ValueError, match=r"no intact checkpoint .*cannot be read"):
        train(_spec(320), run, resume=True, trust=True)  # trusted: read, and found truncated


def test_resume_reads_unlisted_checkpoints_only_with_trust(run, capsys):
    (run / "manifest.json").unlink()
    args = ["train", "--env", ENV, "--algo", "ppo", "--timesteps", "320", "--out", str(run), "--resume",
            "--eval-freq", "64", "--checkpoint-freq", "64", "--no-progress", *TINY_SET, *HP_SET]
    assert main(args) == 2
    assert "no intact checkpoint" in _one_line_error(capsys)
    assert main([*args, "--trust"]) == 0
    assert json.loads((run / "metadata.json").read_text())["resumed_from_step"] == 256


@pytest.mark.parametrize(("extra", "needle"), [
    (["--algo", "a2c"], "holds a ppo run on promogym/DynamicPricing-v1, not a2c"),
    (["--algo", "ppo", "--env-set", "horizon=5"], "env_config"),
    (["--algo", "ppo", "--response", "gbdt:nowhere.txt"], "with response"),
])
def test_resuming_into_another_run_is_refused(run, capsys, extra, needle):
    before = json.loads((run / "manifest.json").read_text())
    hp = HP_SET if "a2c" not in extra else []
    code = main(["train", "--env", ENV, "--timesteps", "320", "--out", str(run), "--resume", "--no-progress",
                 *TINY_SET, *hp, *extra])
    assert code == 2 and needle in _one_line_error(capsys)
    assert json.loads((run / "manifest.json").read_text()) == before  # nothing written


@pytest.mark.parametrize(("extra", "needle"), [
    (["--set", "n_stepz=64"], "n_stepz"),
    (["--set", "learning_rate=abc"], "learning_rate"),
    (["--set", "n_steps=0"], "n_steps"),
    (["--set", "gamma=1.5"], "gamma"),
    (["--set", "batch_size=true"], "batch_size"),
    (["--set", "policy_kwargs={net_archh: [8]}"], "policy_kwargs.net_archh"),
    (["--seed", "-1"], "--seed"),
    (["--eval-freq", "-1"], "--eval-freq"),
    (["--checkpoint-freq", "0"], "--checkpoint-freq"),
    (["--timesteps", "64.5"], "--timesteps"),
    (["--trust"], "--trust only applies with --resume"),
])
def test_bad_train_input_fails_before_training(tmp_path, capsys, extra, needle):
    out = tmp_path / "r"
    code = main(["train", "--env", ENV, "--algo", "ppo", "--out", str(out), "--no-progress", *TINY_SET, *extra])
    assert code == 2
    assert needle in _one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"seed": -1}, "TrainSpec.seed"),
    ({"timesteps": 64.5}, "TrainSpec.timesteps"),
    ({"eval_freq": 0}, "TrainSpec.eval_freq"),
    ({"checkpoint_freq": 0}, "TrainSpec.checkpoint_freq"),
    ({"hyperparams": {"n_stepz": 5}}, "n_stepz"),
    ({"hyperparams": {"learning_rate": "abc"}}, "learning_rate"),
    ({"hyperparams": {"seed": 3}}, "'seed'"),
])
def test_trainspec_refuses_bad_settings(kwargs, needle):
    base = {"env_id": ENV, "algo": "ppo", "seed": 0, "timesteps": 64}
    with pytest.raises(ValueError, match=needle):
        TrainSpec(**{**base, **kwargs})
