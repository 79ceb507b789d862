"""Response models for the Hillstrom trial: P(visit), P(conversion) and expected spend for every arm.

Every model maps customers to potential outcomes per arm (none, men's, women's e-mail); the uplift
of an e-mail is its difference to "none". Three kinds:

* ``BertUplift``: the customer's plain-language profile and the e-mail sent, as text, read by a BERT
  encoder (MiniLM-L6 by default). Each sentence is encoded separately (a profile has six facts and
  the arm sentence; the whole data set has a few thousand distinct sentences), mean-pooled, projected
  and concatenated in a fixed order; a small MLP gives the visit and conversion logits. Stage A trains
  the head on frozen, cached sentence embeddings; stage B fine-tunes the encoder's top layers with
  the head (lower learning rate). Early stopping and Platt scaling (temperature and bias) on the validation split.
* ``TwoModelUplift("gbdt")``: one gradient-boosting classifier per arm and outcome (a T-learner) on
  tabular features, its size chosen on validation log-loss.
* ``TwoModelUplift("logistic")``: the same with logistic regressions.

Expected spend = P(conversion | arm) x mean spend of converters (train split, pooled over arms).

Files: a two-model is a model archive (``promogym.json`` manifest + skops estimators, see
``promogym.predictors.baselines``; the pipelines name it ``model.skops.zip``); a BERT model is a folder
(``promogym.json``, ``head.pt`` read with ``torch.load(weights_only=True)``, the encoder as safetensors).
No file of either runs code when read.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from promogym.predictors.baselines import load_archive, save_archive
from promogym.predictors.calibration import Calibrator
from promogym.predictors.hillstrom import ARM_NAMES, ARM_SENTENCES, profile_sentences, tabular_features
from promogym.predictors.metrics import log_loss
from promogym.predictors.registry import load_uplift_model as load_uplift_model  # re-exported
from promogym.predictors.registry import register_model

BINARY = ("visit", "conversion")
N_ARMS = len(ARM_NAMES)
REFIT_UPLIFT = "refit with `promogym hillstrom` (or TwoModelUplift(kind).fit(train, valid).save(path))"
REFIT_BERT_UPLIFT = "refit with `promogym hillstrom` (or BertUplift().fit(train, valid).save(folder))"


class UpliftModel:
    """Potential outcomes per arm: ``predict(df)`` -> {"visit": (n, 3), "conversion": (n, 3), "spend": (n, 3)}."""

    name = "uplift"
    spend_per_conversion: float = 0.0

    def predict_binary(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """(n, 3) probabilities per arm (no e-mail, men's, women's) of each binary outcome: ``{"visit",
        "conversion"}``."""
        raise NotImplementedError

    def predict(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """:meth:`predict_binary` plus ``"spend"``: the conversion probabilities times the mean spend per conversion."""
        out = self.predict_binary(df)
        out["spend"] = out["conversion"] * self.spend_per_conversion
        return out

    def uplift(self, df: pd.DataFrame, outcome: str = "visit") -> np.ndarray:
        """(n, 2): the predicted effect of the men's and the women's e-mail over none."""
        p = self.predict(df)[outcome]
        return p[:, 1:] - p[:, :1]


def _spend_per_conversion(train: pd.DataFrame) -> float:
    conv = train["conversion"].to_numpy() == 1
    return float(train["spend"].to_numpy()[conv].mean()) if conv.any() else 0.0


# ---------------------------------------------------------------------------------------- two-model baselines
class TwoModelUplift(UpliftModel):
    """A classifier per (arm, outcome) on tabular features; ``kind`` gbdt or logistic."""

    GBDT_GRID = ({"max_leaf_nodes": 7, "learning_rate": 0.05, "max_iter": 150},
                 {"max_leaf_nodes": 15, "learning_rate": 0.05, "max_iter": 300},
                 {"max_leaf_nodes": 31, "learning_rate": 0.03, "max_iter": 300})
    LOGISTIC_GRID = ({"C": 0.1}, {"C": 1.0}, {"C": 10.0})

    def __init__(self, kind: str = "gbdt", seed: int = 0) -> None:
        if kind not in ("gbdt", "logistic"):
            raise ValueError(f"kind must be 'gbdt' or 'logistic', got {kind!r}")
        self.kind, self.seed = kind, seed
        self.name = f"two_model_{kind}"
        self.models: dict[tuple[str, int], Any] = {}
        self.chosen: dict[str, Any] = {}
        self.data_sha256: str | None = None

    def _make(self, params: dict[str, Any]) -> Any:
        if self.kind == "gbdt":
            from sklearn.ensemble import HistGradientBoostingClassifier

            return HistGradientBoostingClassifier(random_state=self.seed, l2_regularization=1.0, **params)
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import PolynomialFeatures

        return make_pipeline(PolynomialFeatures(2, include_bias=False), LogisticRegression(max_iter=2000, **params))

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame) -> TwoModelUplift:
        """Each (arm, outcome) model's settings chosen on the validation split's log-loss, then kept."""
        self.spend_per_conversion = _spend_per_conversion(train)
        grid = self.GBDT_GRID if self.kind == "gbdt" else self.LOGISTIC_GRID
        xt, xv = tabular_features(train), tabular_features(valid)
        for outcome in BINARY:
            for arm in range(N_ARMS):
                mt, mv = train["arm"].to_numpy() == arm, valid["arm"].to_numpy() == arm
                yt, yv = train[outcome].to_numpy()[mt], valid[outcome].to_numpy()[mv]
                best: tuple[float, Any, Any] | None = None
                for params in grid:
                    model = self._make(params).fit(xt[mt], yt)
                    ll = log_loss(yv, model.predict_proba(xv[mv])[:, 1])
                    if best is None or ll < best[0]:
                        best = (ll, model, params)
                assert best is not None
                self.models[(outcome, arm)] = best[1]
                self.chosen[f"{outcome}/{ARM_NAMES[arm]}"] = best[2]
        return self

    def predict_binary(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """(n, 3) probabilities per arm of visit and conversion, from the per-(arm, outcome) classifiers."""
        x = tabular_features(df)
        return {o: np.column_stack([self.models[(o, a)].predict_proba(x)[:, 1] for a in range(N_ARMS)])
                for o in BINARY}

    def save(self, path: str | Path) -> None:
        """A model archive (atomically): settings as JSON, the classifiers in skops's format."""
        state = {"kind": self.kind, "seed": int(self.seed), "chosen": self.chosen,
                 "spend_per_conversion": float(self.spend_per_conversion),
                 "data_sha256": getattr(self, "data_sha256", None),
                 "models": [[o, int(a)] for o, a in self.models]}
        save_archive(path, task="uplift", kind=self.kind, state=state,
                     estimators={f"{o}/{a}": m for (o, a), m in self.models.items()})

    @classmethod
    def load(cls, path: str | Path, kind: str | None = None) -> TwoModelUplift:
        """The two-model in ``path`` (see :meth:`save`); with ``kind``, ValueError unless it is of that kind."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.pipeline import Pipeline

        manifest, estimators = load_archive(path, task="uplift", what="uplift model", refit=REFIT_UPLIFT)
        held = manifest.get("kind")
        if held not in ("gbdt", "logistic"):
            raise ValueError(f"{path} holds a {held!r} model, not a two-model uplift; {REFIT_UPLIFT}")
        if kind is not None and held != kind:
            raise ValueError(f"{path} holds a two_model_{held}, not a {kind} model")
        state = manifest["state"]
        expected = HistGradientBoostingClassifier if held == "gbdt" else Pipeline
        try:
            model = cls(held, seed=int(state["seed"]))
            model.spend_per_conversion = float(state["spend_per_conversion"])
            model.chosen = dict(state["chosen"])
            model.data_sha256 = state.get("data_sha256")
            keys = [(str(o), int(a)) for o, a in state["models"]]
            if sorted(keys) != sorted((o, a) for o in BINARY for a in range(N_ARMS)):
                raise ValueError(f"models for {keys}, expected one per outcome and arm")
            for o, a in keys:
                m = estimators[f"{o}/{a}"]
                if not isinstance(m, expected):
                    raise TypeError(f"the {o}/{ARM_NAMES[a]} model is a {type(m).__name__}, not a {expected.__name__}")
                model.models[(o, a)] = m
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed two-model state ({type(exc).__name__}: {exc}); "
                             f"{REFIT_UPLIFT}") from exc
        return model


class CellMeans(UpliftModel):
    """Outcome rates per arm within cells of (recency third, men's, women's, new customer, channel),
    shrunk toward the arm's overall rate (``prior`` pseudo-rows): instant to fit, the environment's
    default response when no fitted model is given."""

    name = "cell_means"

    def __init__(self, prior: float = 50.0) -> None:
        self.prior = prior
        self.table: dict[str, np.ndarray] = {}

    @staticmethod
    def _cells(df: pd.DataFrame) -> np.ndarray:
        rec = np.minimum((df["recency"].to_numpy() - 1) // 4, 2)
        channel = df["channel"].map({"Web": 0, "Phone": 1, "Multichannel": 2}).to_numpy()
        return (((rec * 2 + df["mens"].to_numpy()) * 2 + df["womens"].to_numpy()) * 2
                + df["newbie"].to_numpy()) * 3 + channel

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame | None = None) -> CellMeans:
        """The shrunk outcome rates per cell and arm from ``train`` (``valid`` is not needed)."""
        self.spend_per_conversion = _spend_per_conversion(train)
        cells, arm = self._cells(train), train["arm"].to_numpy()
        for o in BINARY:
            y = train[o].to_numpy(float)
            tab = np.zeros((72, N_ARMS))
            for a in range(N_ARMS):
                m = arm == a
                overall = y[m].mean()
                n = np.bincount(cells[m], minlength=72)
                total = np.bincount(cells[m], weights=y[m], minlength=72)
                tab[:, a] = (total + self.prior * overall) / (n + self.prior)
            self.table[o] = tab
        return self

    def predict_binary(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """(n, 3) probabilities per arm of visit and conversion: the rates of each row's cell."""
        cells = self._cells(df)
        return {o: self.table[o][cells] for o in BINARY}


# ---------------------------------------------------------------------------------------- the BERT model
N_SLOTS = 7  # six profile facts + the arm sentence


class SentenceNet(nn.Module):
    """Encoder -> mean-pooled sentence vectors -> shared projection + slot embedding -> MLP -> 2 logits."""

    def __init__(self, encoder: Any, dim: int = 64, width: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.proj = nn.Linear(hidden, dim)
        self.slot = nn.Parameter(torch.zeros(N_SLOTS, dim))
        self.mlp = nn.Sequential(nn.LayerNorm(N_SLOTS * dim), nn.Dropout(dropout), nn.Linear(N_SLOTS * dim, width),
                                 nn.GELU(), nn.Dropout(dropout), nn.Linear(width, len(BINARY)))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(rows, hidden) mean-pooled encoder states of tokenized sentences."""
        from promogym.predictors.encoder import mean_pool

        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def head(self, sent: torch.Tensor) -> torch.Tensor:
        """``sent``: (rows, 7, hidden) pooled sentence vectors -> (rows, 2) logits."""
        z = torch.tanh(self.proj(sent)) + self.slot
        return self.mlp(z.flatten(1))


class BertUplift(UpliftModel):
    """The BERT response model of the Hillstrom trial (see the module docstring)."""

    name = "bert"

    def __init__(self, encoder: str = "minilm", seed: int = 0, device: str | None = None, max_length: int = 32,
                 head_epochs: int = 30, finetune_epochs: int = 1, finetune_layers: int = 2, head_lr: float = 2e-3,
                 finetune_lr: float = 3e-5, batch_size: int = 512, patience: int = 4) -> None:
        from promogym.predictors.encoder import load_encoder, pick_device

        self.settings: dict[str, Any] = {
            "encoder": encoder, "seed": seed, "max_length": max_length, "head_epochs": head_epochs,
            "finetune_epochs": finetune_epochs, "finetune_layers": finetune_layers, "head_lr": head_lr,
            "finetune_lr": finetune_lr, "batch_size": batch_size, "patience": patience}
        torch.manual_seed(seed)
        enc, self.tokenizer = load_encoder(encoder, seed)
        self.device = pick_device(device)
        self.net = SentenceNet(enc).to(self.device)
        self.calibrators = {o: Calibrator() for o in BINARY}
        self.history: list[dict[str, Any]] = []
        self._vocab: dict[str, int] = {}   # sentence -> id
        self._texts: list[str] = []        # id -> sentence
        self._cache: torch.Tensor | None = None

    # ------------------------------------------------------------------ sentences
    def _codes(self, df: pd.DataFrame, arms: np.ndarray) -> np.ndarray:
        """(rows, 7) sentence ids (into ``self._vocab``), growing the vocabulary."""
        rows = []
        for rec, arm in zip(df[["recency", "history", "mens", "womens", "zip_code", "channel", "newbie"]]
                            .to_dict("records"), arms, strict=True):
            rows.append([self._id(s) for s in (*profile_sentences(rec), ARM_SENTENCES[int(arm)])])
        return np.asarray(rows, dtype=np.int64)

    def _id(self, sentence: str) -> int:
        """The sentence's id, added to the vocabulary when new."""
        if sentence not in self._vocab:
            self._vocab[sentence] = len(self._texts)
            self._texts.append(sentence)
        return self._vocab[sentence]

    def _encode(self, ids: np.ndarray, grad: bool, batch: int = 512) -> torch.Tensor:
        texts = [self._texts[int(i)] for i in ids]
        out = []
        for k in range(0, len(texts), batch):
            tok = self.tokenizer(texts[k: k + batch], padding=True, truncation=True,
                                 max_length=self.settings["max_length"], return_tensors="pt").to(self.device)
            with torch.set_grad_enabled(grad):
                out.append(self.net.encode(tok["input_ids"], tok["attention_mask"]).float())
        return torch.cat(out) if out else torch.zeros(0, self.net.proj.in_features, device=self.device)

    def _refresh_cache(self) -> None:
        """Pooled vectors of every sentence in the vocabulary, under the current encoder."""
        self.net.eval()
        self._cache = self._encode(np.arange(len(self._vocab)), grad=False)

    # ------------------------------------------------------------------ training
    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, progress: Callable[[str], None] | None = None
            ) -> BertUplift:
        """Fit on ``train``, choosing epochs by the validation loss: the head on frozen sentence vectors, then
        fine-tuning the encoder's last layers, then temperature-calibrating each outcome on ``valid``. ``progress``
        receives status lines. Returns self."""
        say = progress or (lambda _m: None)
        s = self.settings
        self.spend_per_conversion = _spend_per_conversion(train)
        ct, cv = self._codes(train, train["arm"].to_numpy()), self._codes(valid, valid["arm"].to_numpy())
        for arm in range(N_ARMS):  # every arm sentence is in the vocabulary
            self._id(ARM_SENTENCES[arm])
        yt = torch.tensor(train[list(BINARY)].to_numpy(np.float32), device=self.device)
        yv = valid[list(BINARY)].to_numpy(np.float32)
        pos = yt.mean(0).clamp(min=1e-4)
        # the rare conversion outcome weighs as much as the visit outcome in the loss
        weight = (pos[0] / pos).to(self.device)
        rng = np.random.default_rng(s["seed"])
        t0 = time.perf_counter()
        self._refresh_cache()
        say(f"encoded {len(self._vocab):,} distinct sentences ({time.perf_counter() - t0:.1f} s)")

        def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            per = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
            return (per * weight).mean()

        def val_loss() -> float:
            logits = self._logits_codes(cv)
            return float(sum(float(weight[k]) * log_loss(yv[:, k], 1 / (1 + np.exp(-logits[:, k])))
                             for k in range(len(BINARY))))

        # stage A: the head on frozen, cached sentence vectors
        for p in self.net.encoder.parameters():
            p.requires_grad_(False)
        head_params = [p for n, p in self.net.named_parameters() if not n.startswith("encoder.")]
        opt = torch.optim.AdamW(head_params, lr=s["head_lr"], weight_decay=0.01)
        best, best_state, bad = math.inf, copy.deepcopy(self.net.state_dict()), 0
        for epoch in range(s["head_epochs"]):
            self.net.train()
            assert self._cache is not None
            for idx in np.array_split(rng.permutation(len(ct)), max(1, len(ct) // s["batch_size"])):
                loss = loss_fn(self.net.head(self._cache[torch.from_numpy(ct[idx])]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            v = val_loss()
            self.history.append({"stage": "head", "epoch": epoch, "val_loss": v})
            if v < best - 1e-5:
                best, best_state, bad = v, copy.deepcopy(self.net.state_dict()), 0
            else:
                bad += 1
                if bad >= s["patience"]:
                    break
        self.net.load_state_dict(best_state)
        say(f"stage A: validation loss {best:.5f} after {len(self.history)} epochs")
        # stage B: fine-tune the top encoder layers with the head
        layers = self.net.encoder.encoder.layer
        tuned = [p for layer in layers[len(layers) - s["finetune_layers"]:] for p in layer.parameters()] \
            if s["finetune_layers"] > 0 else []
        if s["finetune_epochs"] > 0 and tuned:
            for p in tuned:
                p.requires_grad_(True)
            opt = torch.optim.AdamW([{"params": tuned, "lr": s["finetune_lr"]},
                                     {"params": head_params, "lr": s["head_lr"] / 10}], weight_decay=0.01)
            for epoch in range(s["finetune_epochs"]):
                self.net.train()
                for idx in np.array_split(rng.permutation(len(ct)), max(1, len(ct) // s["batch_size"])):
                    codes = ct[idx]
                    uniq, inv = np.unique(codes, return_inverse=True)
                    vec = self._encode(uniq, grad=True)
                    loss = loss_fn(self.net.head(vec[torch.from_numpy(inv.reshape(codes.shape))]), yt[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                self._refresh_cache()
                v = val_loss()
                self.history.append({"stage": "finetune", "epoch": epoch, "val_loss": v})
                say(f"stage B epoch {epoch}: validation loss {v:.5f}")
                if v < best - 1e-5:
                    best, best_state = v, copy.deepcopy(self.net.state_dict())
            self.net.load_state_dict(best_state)
            for p in tuned:
                p.requires_grad_(False)
            self._refresh_cache()
        logits = self._logits_codes(cv)
        self.calibrators = {o: Calibrator.fit("temperature", logits[:, k], yv[:, k]) for k, o in enumerate(BINARY)}
        self.fit_seconds = time.perf_counter() - t0
        return self

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _logits_codes(self, codes: np.ndarray) -> np.ndarray:
        self.net.eval()
        if self._cache is None:
            self._refresh_cache()
        assert self._cache is not None
        if len(self._cache) < len(self._vocab):  # sentences first seen at prediction time
            new = self._encode(np.arange(len(self._cache), len(self._vocab)), grad=False)
            self._cache = torch.cat([self._cache, new])
        out = [self.net.head(self._cache[torch.from_numpy(codes[k: k + 8192])]).float().cpu().numpy()
               for k in range(0, len(codes), 8192)]
        return np.concatenate(out) if out else np.zeros((0, len(BINARY)))

    def predict_binary(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """(n, 3) calibrated probabilities per arm of visit and conversion."""
        per_arm = [self._logits_codes(self._codes(df, np.full(len(df), arm))) for arm in range(N_ARMS)]
        return {o: np.column_stack([self.calibrators[o](lg[:, k]) for lg in per_arm]) for k, o in enumerate(BINARY)}

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """A folder: the fine-tuned encoder (``save_pretrained``), the head and the settings."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.net.encoder.save_pretrained(str(p / "encoder"))
        self.tokenizer.save_pretrained(str(p / "encoder"))
        torch.save({k: v for k, v in self.net.state_dict().items() if not k.startswith("encoder.")}, p / "head.pt")
        meta = {"kind": "bert_uplift", "format_version": 1, "settings": self.settings, "history": self.history,
                "calibration": {o: c.to_dict() for o, c in self.calibrators.items()},
                "spend_per_conversion": self.spend_per_conversion}
        (p / "promogym.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> BertUplift:
        """Read a folder written by :meth:`save`: promogym.json is checked first, the encoder and ``head.pt``
        are read as weights only (no code runs); a missing, truncated or incomplete file raises
        FileNotFoundError or ValueError naming it."""
        from promogym.predictors.encoder import brief, load_head_weights

        p = Path(path)
        meta_file = p / "promogym.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{p} is not a BERT uplift checkpoint (no promogym.json)")
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{meta_file}: unreadable ({brief(exc)}); {REFIT_BERT_UPLIFT}") from exc
        if not isinstance(meta, dict) or meta.get("kind") != "bert_uplift":
            kind = meta.get("kind") if isinstance(meta, dict) else None
            raise ValueError(f"{p} holds a {kind!r} checkpoint, not a BERT uplift model")
        if meta.get("format_version", 1) != 1:
            raise ValueError(f"{meta_file}: format version {meta.get('format_version')!r}, this promogym reads 1; "
                             f"{REFIT_BERT_UPLIFT}")
        try:
            settings = {**meta["settings"], "encoder": str(p / "encoder")}
            calibrators = {o: Calibrator.from_dict(meta["calibration"][o]) for o in BINARY}
            spend = float(meta["spend_per_conversion"])
            history = list(meta["history"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{meta_file}: malformed ({brief(exc)}); {REFIT_BERT_UPLIFT}") from exc
        try:  # the encoder's weights: ValueError naming the file when unreadable or incomplete
            model = cls(device=device, **settings)
        except TypeError as exc:
            raise ValueError(f"{meta_file}: malformed settings ({brief(exc)}); {REFIT_BERT_UPLIFT}") from exc
        load_head_weights(model.net, p / "head.pt", REFIT_BERT_UPLIFT)
        model.calibrators, model.spend_per_conversion, model.history = calibrators, spend, history
        return model


def _load_two_model(path: str, kind: str) -> TwoModelUplift:
    """A ``TwoModelUplift`` of ``kind`` from a file written by its ``save``."""
    return TwoModelUplift.load(path, kind)


def _fit_two_model(kind: str) -> Callable[..., TwoModelUplift]:
    def fit(train: pd.DataFrame, valid: pd.DataFrame, out_path: str | Path | None = None,
            seed: int = 0) -> TwoModelUplift:
        """The uniform uplift fitter: fit on ``train`` (sizes chosen on ``valid``), save when ``out_path``."""
        model = TwoModelUplift(kind, seed=seed).fit(train, valid)
        if out_path is not None:
            model.save(out_path)
        return model
    return fit


def fit_bert_uplift(train: pd.DataFrame, valid: pd.DataFrame, out_path: str | Path | None = None,
                    seed: int = 0) -> BertUplift:
    """The uniform uplift fitter of ``bert`` (default settings; ``BertUplift(...).fit`` for others)."""
    model = BertUplift(seed=seed).fit(train, valid)
    if out_path is not None:
        model.save(out_path)
    return model


def _register() -> None:
    register_model("cells", task="uplift", load=lambda _path, data: CellMeans().fit(data[data["split"] == "train"]),
                   needs_path=False, needs=("data",), help="smoothed cell means, fitted on the train split (instant)")
    register_model("bert", task="uplift", load=BertUplift.load, fit=fit_bert_uplift, placeholder="dir",
                   help="the BERT response model (a folder written by BertUplift.save)")
    for kind in ("gbdt", "logistic"):
        register_model(kind, task="uplift", load=partial(_load_two_model, kind=kind), fit=_fit_two_model(kind),
                       help=f"one {kind} classifier per arm and outcome (a file written by TwoModelUplift.save)")


_register()
