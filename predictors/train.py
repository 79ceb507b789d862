"""Fine-tuning the BERT conversion model on logged interactions.

Hybrid mode trains in two stages (linear probing, then fine-tuning, which keeps a randomly
initialised head from wrecking pretrained features):

A. the encoder frozen: token states of every distinct text are computed once and the towers'
   pooling and the head are trained on all training rows (fast: no transformer pass per step);
B. end to end: the top ``finetune_layers`` encoder layers are unfrozen (AdamW at ``lr_encoder``,
   the head at ``lr_head``); each step encodes the distinct user and product texts of a batch
   built from ``finetune_users`` users, so every encoded profile gets the gradient of many rows.

The logs hold one multinomial-logit choice per visit (buy one of the viewed products or nothing), and
the model's logit of a row is that product's utility. Hybrid stages A and B batch whole visits (a
batch samples visits and keeps all their rows; stage B samples users, then whole visits of each) and
minimise the conditional-logit likelihood :func:`~promogym.predictors.choice.choice_nll`. Text mode
(stage B only, on sentences holding user, product and offer) minimises binary cross-entropy on the
IIA rows of the training visits (:func:`~promogym.predictors.choice.iia_rows`: the visit bought this
row's product or nothing), where ``P(buy) = sigmoid(utility)`` exactly, so both modes estimate the
same utility. Every mode uses AdamW, linear warm-up then linear decay, dropout, gradient clipping and
early stopping on the validation visits' choice likelihood (mean per visit); the best state is kept,
then calibrated (temperature or isotonic) on the validation IIA rows, where the sigmoid of the
utility is exact. A checkpoint is written atomically after every epoch, and ``resume`` continues an
interrupted fit where it stopped. Randomness is drawn per (stage, epoch) from the seed, so a resumed
fit reaches the same state.

Hybrid mode then fits ``ensemble`` extra heads for uncertainty: with every user and product text
embedded once by the frozen towers, each head starts from the fitted one and is trained on the choice
likelihood over a bootstrap resample of the training customers (each drawn customer keeps its visits).
They are saved with the checkpoint and calibrated like the main head.

A fit may start from an earlier fit's checkpoint (``init_from``, the warm start of a closed loop that refits the
response model on more logs each round): its encoder, tower pooling and head weights replace the configured
encoder's and the freshly initialised head before stage A, and the fit then runs as usual on the new data. The
checkpoint must describe the same network (mode, tower and head sizes, text segmentation, the encoder's
architecture and vocabulary), the same feature schema and the same world as the data's sidecar; anything else is
refused before any training (the network settings, schema and world before the logs are read, the encoder's
architecture and vocabulary before a weight is copied). Two things are refitted, never carried over:
the calibration, which is a property of the validation data (a refit on more logs recalibrates on its own
validation visits), and the ensemble heads, which are by construction bootstrap refits of the fitted head over the
fitted towers (each member starts from the new main head), so carrying the old members would only add stale
spread. The new checkpoint's ``promogym.json`` records ``init_from``: the folder, its sha256 (the digest
agent runs record as ``response_sha256``), the data it was fitted on and that checkpoint's own ``init_from``,
so a chain of refits keeps its lineage.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from promogym.core.config import ConfigBase, param
from promogym.core.io import atomic_dir, file_sha256
from promogym.predictors.bert import (
    HEAD_FILE,
    META_FILE,
    BertConversionModel,
    HybridNet,
    TextNet,
    build_net,
    full_texts,
    read_meta,
    write_model_files,
)
from promogym.predictors.calibration import Calibrator
from promogym.predictors.choice import choice_nll, iia_rows, visit_codes
from promogym.predictors.data import Split, load_logs, read_world_config, split_rows
from promogym.predictors.encoder import (
    autocast,
    brief,
    load_bert_folder,
    load_encoder,
    load_head_weights,
    load_tensor_file,
    pick_device,
)
from promogym.predictors.features import numeric_features, weekday_index

log = logging.getLogger(__name__)
STATE_FILE = "train_state.pt"
PARTIAL_KIND = "promogym-bert-partial"
REFIT_HINT = "start from another checkpoint or without init_from"


@dataclasses.dataclass(frozen=True)
class FitConfig(ConfigBase):
    """Hyperparameters of `promogym fit`."""

    encoder: str = param("minilm", "'minilm', 'tiny' or a local BERT folder")
    mode: str = param("hybrid", "hybrid (two towers + monotone head) or text (one sentence)",
                      choices=("hybrid", "text"))
    max_length: int = param(64, "token limit per text or sentence (text mode: x3 for the whole)", lo=8, hi=512)
    segment: bool = param(True, "hybrid: encode each sentence of a text separately (see BertConversionModel)",
                          choices=(True, False))
    dim: int = param(128, "tower embedding size", lo=8, hi=2048)
    queries: int = param(4, "learned attention-pooling queries per tower", lo=0, hi=32)
    width: int = param(256, "head MLP width", lo=8, hi=4096)
    dropout: float = param(0.1, "dropout in towers and head", lo=0.0, hi=0.9)
    head_epochs: int = param(4, "stage A epochs (encoder frozen; hybrid only)", lo=0, hi=1000)
    finetune_epochs: int = param(0, "stage B epochs (encoder layers trained)", lo=0, hi=1000)
    finetune_steps: int = param(40, "optimizer steps per stage B epoch", lo=1, hi=1_000_000)
    finetune_layers: int = param(2, "top encoder layers unfrozen in stage B (0 = all)", lo=0, hi=48)
    batch_size: int = param(1024, "rows per step in stage A (whole visits, about this many rows)", lo=8, hi=65536)
    finetune_users: int = param(32, "users per stage B step (hybrid)", lo=1, hi=4096)
    rows_per_user: int = param(16, "rows per user in a stage B step (whole visits, at least one; hybrid)",
                               lo=1, hi=4096)
    text_batch: int = param(32, "sentences per step (text mode)", lo=1, hi=4096)
    lr_head: float = param(1e-3, "AdamW learning rate of pooling and head", lo=1e-6, hi=1.0)
    lr_encoder: float = param(2e-5, "AdamW learning rate of the encoder", lo=1e-7, hi=1e-2)
    finetune_lr_head: float = param(1e-4, "learning rate of pooling and head in stage B (hybrid)", lo=1e-7, hi=1.0)
    weight_decay: float = param(0.01, "AdamW weight decay", lo=0.0, hi=1.0)
    warmup_share: float = param(0.06, "share of a stage's steps spent warming up", lo=0.0, hi=0.5)
    grad_clip: float = param(1.0, "gradient norm clipping", lo=0.0, hi=100.0)
    patience: int = param(3, "epochs without validation improvement before stopping", lo=1, hi=100)
    calibration: str = param("shift", "calibration on validation data: shift (the log-odds' level only: effect sizes "
                                      "such as price elasticities stay as learned), temperature, isotonic or none",
                             choices=("none", "shift", "temperature", "isotonic"))
    val_rows: int = param(40_000, "validation rows used for early stopping (whole visits, sampled)", lo=100,
                          hi=10_000_000)
    max_train_rows: int = param(0, "cap on training rows (whole visits, sampled; 0 = all)", lo=0, hi=100_000_000)
    refine_epochs: int = param(
        10, "hybrid: epochs of the head alone on the frozen towers' embeddings after stages A/B (cheap: no tower "
            "pass)", lo=0, hi=10_000)
    refine_batch: int = param(4096, "rows per step of the head refinement (whole visits)", lo=16, hi=10_000_000)
    ensemble: int = param(5, "extra heads fitted on bootstrap resamples of the customers over the frozen towers, "
                             "for uncertainty (hybrid; 0 = none)", lo=0, hi=64)
    ensemble_epochs: int = param(2, "epochs of each ensemble head (choice likelihood, lr_head)", lo=1, hi=100)
    bf16: str = param("auto", "bf16 autocast: auto (CUDA only), on, off", choices=("auto", "on", "off"))
    seed: int = param(0, "seed of the split, initialisation and batches", lo=0, hi=2**32 - 1)
    init_from: str = param("", "checkpoint folder of an earlier fit to start from (its encoder, pooling and head "
                               "weights; same network, features and world; calibration and ensemble are refitted); "
                               "'' = the configured encoder and a fresh head")

    def validate(self) -> None:
        """``init_from`` must be a folder path (a string; '' for none)."""
        if not isinstance(self.init_from, str):
            raise ValueError(f"FitConfig.init_from must be a checkpoint folder path or '', got {self.init_from!r}")


# the settings of the encoder's config.json that fix its weights' shapes and meaning
ENCODER_ARCH = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "hidden_act", "max_position_embeddings", "type_vocab_size",
                "position_embedding_type")
# the network settings (promogym.json "net") that fix the shapes of the towers' pooling and the head
NET_SHAPE = ("dim", "queries", "width")


def checkpoint_sha256(folder: str | Path) -> str:
    """sha256 over a checkpoint folder's files (in path order, each file's name then its bytes): the digest that
    agent runs record as ``response_sha256`` for a response model read from that folder."""
    p = Path(folder)
    h = hashlib.sha256()
    for f in sorted(f for f in p.rglob("*") if f.is_file()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key (checkpoint value vs this fit's)`` for each key whose values differ."""
    return [f"{k} ({before.get(k)!r} vs {now.get(k)!r})" for k in sorted(before.keys() | now.keys())
            if before.get(k) != now.get(k)]


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """The checkpoint a fit starts from (``FitConfig.init_from``): its folder, its checked ``promogym.json`` and the
    sha256 of its files, read before anything else of the fit."""

    path: Path
    meta: dict[str, Any]
    sha256: str

    @classmethod
    def read(cls, folder: str | Path, cfg: FitConfig, net_cfg: dict[str, Any], data: Path, out: Path) -> WarmStart:
        """The checkpoint at ``folder``, checked against a fit of ``cfg`` (network ``net_cfg``) on ``data`` into
        ``out``: FileNotFoundError when it is missing, a one-line ValueError naming what differs when it is no
        final checkpoint of this feature schema, describes another mode, tower or head sizes, text segmentation or
        world (its recorded ``world`` against the data's sidecar), or is ``out`` itself."""
        p = Path(folder)
        if p.resolve() == out.resolve():
            raise ValueError(f"init_from {p} is the output folder itself: write the refit to a new folder "
                             f"(or resume an interrupted fit with resume)")
        meta = read_meta(p)  # a final BERT checkpoint of this promogym's feature schema
        saved_net = meta.get("net")
        net: dict[str, Any] = saved_net if isinstance(saved_net, dict) else {}
        settings = {"mode": meta.get("mode"), "segment": bool(meta.get("segment", False)),  # as load() reads it
                    **{k: net.get(k) for k in NET_SHAPE if k in net_cfg}}
        ours = {"mode": cfg.mode, "segment": cfg.segment, **{k: net_cfg[k] for k in NET_SHAPE if k in net_cfg}}
        differ = _differences(settings, ours)
        if differ:
            raise ValueError(f"cannot start from {p}: its network differs from this fit's: {', '.join(differ)}")
        world = meta.get("world")
        data_world = read_world_config(data) if data.is_file() else world  # missing logs: load_logs names them
        if world != data_world:
            if world is None or data_world is None:
                what = "the checkpoint records no world" if world is None else "the data's sidecar records no world"
            else:
                what = "checkpoint vs data: " + ", ".join(_differences(world, data_world))
            raise ValueError(f"cannot start from {p}: it was fitted on logs of another world than {data} ({what})")
        return cls(p, meta, checkpoint_sha256(p))

    def _check_encoder(self, encoder: Any) -> None:
        """One-line ValueError naming the differences when the checkpoint's encoder (its ``config.json``, read
        before any weight) has another architecture than ``encoder``."""
        f = self.path / "encoder" / "config.json"
        try:
            saved = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot start from {self.path}: {f} is unreadable ({brief(exc)})") from exc
        if not isinstance(saved, dict):
            raise ValueError(f"cannot start from {self.path}: {f} is not a JSON object")
        ours = encoder.config.to_dict()
        differ = _differences({k: saved.get(k) for k in ENCODER_ARCH}, {k: ours.get(k) for k in ENCODER_ARCH})
        if differ:
            raise ValueError(f"cannot start from {self.path}: its encoder ({self.meta.get('encoder')!r}) has another "
                             f"architecture than this fit's: {', '.join(differ)}")

    def load_into(self, net: HybridNet | TextNet, tokenizer: Any) -> None:
        """Copy the checkpoint's encoder, pooling and main head weights into ``net`` (its ensemble heads are not
        copied: they are refitted from the new head). One-line ValueError when the checkpoint's encoder has
        another architecture than ``net``'s or its tokenizer another vocabulary than ``tokenizer`` (checked before
        any weight is read). The weights are read by the checked readers of a checkpoint (safetensors,
        ``torch.load(weights_only=True)``, every tensor present with its shape), ValueError naming the file
        otherwise."""
        self._check_encoder(net.encoder)
        hint = f"it cannot be the start of a fit; {REFIT_HINT}"
        encoder, saved_tokenizer = load_bert_folder(self.path / "encoder", hint)
        if saved_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"cannot start from {self.path}: its tokenizer has another vocabulary than this fit's "
                             f"encoder")
        ensemble = self.meta.get("ensemble", 0)
        try:
            saved = build_net(encoder, self.meta["mode"], self.meta.get("net", {}),
                              ensemble=ensemble if isinstance(ensemble, int) and ensemble > 0 else 0)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.path / META_FILE}: bad network settings ({brief(exc)}); {REFIT_HINT}") from exc
        load_head_weights(saved, self.path / HEAD_FILE, hint)
        state = {k: v for k, v in saved.state_dict().items() if not k.startswith("ensemble.")}
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"cannot start from {self.path}: its weights do not fit this network "
                             f"({brief(exc)})") from exc
        log.info("warm start from %s (sha256 %s)", self.path, self.sha256[:12])

    def record(self) -> dict[str, Any]:
        """What the new checkpoint's promogym.json keeps of where the fit started: the folder, its sha256, the
        data that checkpoint was fitted on and its own ``init_from`` (the lineage of a chain of refits)."""
        return {"path": str(self.path.resolve()), "sha256": self.sha256, "data": self.meta.get("data"),
                "data_sha256": self.meta.get("data_sha256"), "init_from": self.meta.get("init_from")}


class VisitIndex:
    """The visits of a set of rows: each visit's rows, its user, and batches of whole visits."""

    def __init__(self, rows: np.ndarray, visit_code: np.ndarray, user_code: np.ndarray) -> None:
        self._codes = (visit_code, user_code)
        rows = np.asarray(rows, np.int64)
        codes = visit_code[rows]
        order = np.argsort(codes, kind="stable")
        self.rows = rows[order]                               # rows grouped by visit
        self.visits, self.starts, self.counts = np.unique(codes[order], return_index=True, return_counts=True)
        self.user = user_code[self.rows[self.starts]]         # a visit's user
        by_user = np.argsort(self.user, kind="stable")
        self.users, user_start = np.unique(self.user[by_user], return_index=True)
        self._user_visits = np.split(by_user, user_start[1:]) if len(by_user) else []

    def __len__(self) -> int:
        return len(self.visits)

    def rows_of(self, positions: np.ndarray) -> np.ndarray:
        """Rows of the visits at ``positions`` (indices into this index's visits), visit by visit."""
        positions = np.asarray(positions, np.int64)
        if len(positions) == 0:
            return np.zeros(0, np.int64)
        counts = self.counts[positions]
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return self.rows[np.repeat(self.starts[positions], counts) + offsets]

    def cap(self, rng: np.random.Generator, max_rows: int) -> VisitIndex:
        """A random subset of whole visits with at most ``max_rows`` rows (at least one visit)."""
        perm = rng.permutation(len(self))
        keep = perm[np.cumsum(self.counts[perm]) <= max_rows]
        keep = keep if len(keep) else perm[:1]
        return VisitIndex(np.sort(self.rows_of(keep)), *self._codes)

    def batches(self, rng: np.random.Generator, rows_per_batch: int) -> list[np.ndarray]:
        """The visits in a random order cut into batches of about ``rows_per_batch`` rows (never a visit
        split); at most ``ceil(rows / rows_per_batch)`` batches."""
        return [np.sort(self.rows_of(part)) for part in self.cut(rng.permutation(len(self)), rows_per_batch)]

    def cut(self, positions: np.ndarray, rows_per_batch: int) -> list[np.ndarray]:
        """``positions`` (visits, in order, repeats allowed) cut into runs of about ``rows_per_batch`` rows."""
        sizes = self.counts[positions]
        batch = (np.cumsum(sizes) - sizes) // rows_per_batch
        return [part for part in np.split(positions, np.flatnonzero(np.diff(batch)) + 1) if len(part)]

    def user_sample(self, rng: np.random.Generator, users: int, rows_per_user: int) -> np.ndarray:
        """Rows of whole visits of ``users`` random users: per user, visits in a random order while the
        rows stay within ``rows_per_user`` (at least one visit)."""
        picked = rng.choice(len(self.users), size=min(users, len(self.users)), replace=False)
        positions = []
        for u in picked:
            visits = rng.permutation(self._user_visits[u])
            keep = visits[np.cumsum(self.counts[visits]) <= rows_per_user]
            positions.append(keep if len(keep) else visits[:1])
        return np.sort(self.rows_of(np.concatenate(positions)))

    def bootstrap(self, rng: np.random.Generator) -> np.ndarray:
        """Visit positions of a bootstrap resample of the users (drawn with replacement; each keeps all
        its visits, repeated as often as it was drawn)."""
        picked = rng.integers(0, len(self.users), len(self.users))
        return np.concatenate([self._user_visits[u] for u in picked])


@dataclasses.dataclass
class TrainState:
    """Where a fit stands (saved with its checkpoints, so a fit resumes): stage (A: the head on frozen towers, B:
    fine-tuning, done), epoch, best validation loss, epochs without improvement and the per-epoch history."""

    stage: str = "A"
    epoch: int = 0
    best_loss: float = float("inf")
    bad_epochs: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    done: bool = False


class Fitter:
    """Holds the data, the network and the optimisation state of one fit."""

    def __init__(self, data: str | Path, cfg: FitConfig, out: str | Path, resume: bool = False,
                 progress: Callable[[str, int, int], None] | None = None, device: str | None = None) -> None:
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.data_path = Path(data)
        net_cfg = {"dim": cfg.dim, "queries": cfg.queries, "width": cfg.width, "dropout": cfg.dropout} \
            if cfg.mode == "hybrid" else {"width": cfg.width, "dropout": cfg.dropout}
        # a warm start is checked before the logs are read (its encoder, once the configured one is loaded)
        self.init = WarmStart.read(cfg.init_from, cfg, net_cfg, self.data_path, self.out) if cfg.init_from else None
        self.df = load_logs(self.data_path)
        self.data_sha = file_sha256(self.data_path)
        self.split: Split = split_rows(self.df, seed=cfg.seed)
        if self.split.train.sum() == 0 or self.split.val.sum() == 0:
            raise ValueError(f"{self.data_path}: too few users to split into train and validation sets")
        self.device = pick_device(device)
        self.bf16 = {"auto": self.device.type == "cuda", "on": True, "off": False}[cfg.bf16]
        torch.manual_seed(cfg.seed)
        encoder, tokenizer = load_encoder(cfg.encoder, seed=cfg.seed)
        net = build_net(encoder, cfg.mode, net_cfg)
        if self.init is not None:
            self.init.load_into(net, tokenizer)
        self.model = BertConversionModel(net, tokenizer, cfg.mode, cfg.max_length, device=self.device, bf16=self.bf16,
                                         segment=cfg.segment)
        self.net_cfg = net_cfg
        self.state = TrainState()
        self.best: dict[str, torch.Tensor] | None = None
        self._embeddings: tuple[torch.Tensor, torch.Tensor] | None = None  # the towers' outputs, once stages end
        self.opt_state: dict[str, Any] | None = None
        # row views
        self.user_texts = self.df["user_text"].cat.categories.astype(str).tolist()
        self.item_texts = self.df["item_text"].cat.categories.astype(str).tolist()
        self.user_code = self.df["user_text"].cat.codes.to_numpy().astype(np.int64)
        self.item_code = self.df["item_text"].cat.codes.to_numpy().astype(np.int64)
        self.num = torch.as_tensor(numeric_features(self.df))
        self.wd = torch.as_tensor(weekday_index(self.df))
        self.y = torch.as_tensor(self.df["purchased"].to_numpy(dtype=np.float32))
        self.visit_code = visit_codes(self.df["visit_id"].to_numpy())[0]
        rng = np.random.default_rng([cfg.seed, 99])
        # training and validation are choice subsets of visits (see Split): batches keep visits whole
        train = VisitIndex(np.flatnonzero(self.split.train), self.visit_code, self.user_code)
        if cfg.max_train_rows and len(train.rows) > cfg.max_train_rows:
            train = train.cap(rng, cfg.max_train_rows)
        self.train = train
        self.train_idx = np.sort(train.rows)
        val = VisitIndex(np.flatnonzero(self.split.val), self.visit_code, self.user_code)
        self.val_idx = np.sort(val.cap(rng, cfg.val_rows).rows if len(val.rows) > cfg.val_rows else val.rows)
        if resume:
            self._load_partial()

    # ------------------------------------------------------------------ checkpoints
    def _fingerprint(self) -> dict[str, Any]:
        return {"data_sha256": self.data_sha, "config": self.cfg.to_dict(),
                "init_from_sha256": None if self.init is None else self.init.sha256}

    def _save_partial(self) -> None:
        meta = {"kind": PARTIAL_KIND, **self._fingerprint()}
        with atomic_dir(self.partial) as tmp:
            write_model_files(self.model.net, self.model.tokenizer, meta, tmp)
            # while the encoder is frozen (stage A) its weights are the ones in encoder/: not stored twice
            keep = (lambda k: not k.startswith("encoder.")) if self.cfg.finetune_epochs == 0 or \
                self.state.stage == "A" else (lambda k: True)
            net = {k: v for k, v in self.model.net.state_dict().items() if keep(k)}
            best = None if self.best is None else {k: v for k, v in self.best.items() if keep(k)}
            torch.save({"state": dataclasses.asdict(self.state), "best": best, "opt": self.opt_state, "net": net},
                       tmp / STATE_FILE)

    def _load_partial(self) -> None:
        """Continue from ``<out>.partial``: its promogym.json (kind, data and settings) is checked first, then
        train_state.pt is read with ``torch.load(weights_only=True)`` (tensors, numbers and containers only:
        no code runs) and its structure checked; anything unreadable raises ValueError naming the file."""
        f = self.partial / STATE_FILE
        if not f.is_file():
            log.info("no interrupted fit at %s; starting afresh", self.partial)
            return
        afresh = "run without --resume to start the fit afresh"
        meta_file = self.partial / "promogym.json"
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot resume from {meta_file}: unreadable ({brief(exc)}); {afresh}") from exc
        if not isinstance(meta, dict) or meta.get("kind") != PARTIAL_KIND:
            raise ValueError(f"cannot resume from {self.partial}: {meta_file} is not an interrupted promogym fit; "
                             f"{afresh}")
        if meta.get("data_sha256") != self.data_sha or meta.get("config") != self.cfg.to_dict():
            raise ValueError(f"cannot resume from {self.partial}: it was started with other data or settings")
        if meta.get("init_from_sha256") != (None if self.init is None else self.init.sha256):
            raise ValueError(f"cannot resume from {self.partial}: it was started from another checkpoint than "
                             f"{self.cfg.init_from} holds now; {afresh}")
        blob = load_tensor_file(f, "training state", afresh)
        net_keys = set(self.model.net.state_dict())
        head_keys = {k for k in net_keys if not k.startswith("encoder.")}

        def tensors(x: Any) -> bool:
            return isinstance(x, dict) and all(isinstance(k, str) and k in net_keys and isinstance(v, torch.Tensor)
                                               for k, v in x.items()) and head_keys <= x.keys()

        fields = {fl.name for fl in dataclasses.fields(TrainState)}
        opt = blob.get("opt") if isinstance(blob, dict) else None
        if not (isinstance(blob, dict) and {"state", "best", "opt", "net"} <= blob.keys()
                and isinstance(blob["state"], dict) and set(blob["state"]) == fields and tensors(blob["net"])
                and (blob["best"] is None or tensors(blob["best"]))
                and (opt is None or (isinstance(opt, dict) and {"stage", "opt", "sched"} <= opt.keys()))):
            raise ValueError(f"cannot resume from {f}: not the training state of this model; {afresh}")
        encoder, _ = load_bert_folder(self.partial / "encoder", afresh)
        try:
            self.model.net.encoder.load_state_dict(encoder.state_dict())
            self.model.net.load_state_dict(blob["net"], strict=False)
            self.state = TrainState(**blob["state"])
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot resume from {f}: {brief(exc)}; {afresh}") from exc
        self.opt_state = opt
        if blob["best"] is not None:  # complete a head-only best state with the (frozen) encoder
            self.best = {**copy.deepcopy(self.model.net.state_dict()), **blob["best"]}
        log.info("resuming at stage %s epoch %d", self.state.stage, self.state.epoch)

    # ------------------------------------------------------------------ helpers
    def _optimizer(self, stage: str, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
        net = self.model.net
        enc_params: list[torch.nn.Parameter] = []
        for p in net.encoder.parameters():
            p.requires_grad_(False)
        if stage == "B":
            layers = net.encoder.encoder.layer
            k = self.cfg.finetune_layers or len(layers)
            trainable: list[Any] = list(layers[-k:])
            if k >= len(layers):
                trainable.append(net.encoder.embeddings)
            for module in trainable:
                for p in module.parameters():
                    p.requires_grad_(True)
                    enc_params.append(p)
        head_params = [p for n, p in net.named_parameters() if not n.startswith("encoder.")]
        lr_head = self.cfg.lr_head if stage == "A" or self.cfg.mode == "text" else self.cfg.finetune_lr_head
        groups = [{"params": head_params, "lr": lr_head}]
        if enc_params:
            groups.append({"params": enc_params, "lr": self.cfg.lr_encoder})
        opt = torch.optim.AdamW(groups, weight_decay=self.cfg.weight_decay)
        warm = max(1, int(self.cfg.warmup_share * total_steps))

        def lr_lambda(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (total_steps - step) / max(1, total_steps - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        if self.opt_state is not None and self.opt_state.get("stage") == stage:
            opt.load_state_dict(self.opt_state["opt"])
            sched.load_state_dict(self.opt_state["sched"])
        return opt, sched

    def _step(self, opt: torch.optim.Optimizer, sched: Any, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self.cfg.grad_clip)
        opt.step()
        sched.step()

    def _epoch_seed(self) -> np.random.Generator:
        s = self.state
        torch.manual_seed(self.cfg.seed * 1_000_003 + (0 if s.stage == "A" else 500_000) + s.epoch)
        return np.random.default_rng([self.cfg.seed, ord(s.stage), s.epoch])

    def _rows(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(idx)
        return self.num[t].to(self.device), self.wd[t].to(self.device), self.y[t].to(self.device)

    def _choice_loss(self, z: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        """The choice likelihood (mean per visit) of rows ``idx`` (whole visits) given their logits."""
        codes, n = visit_codes(self.visit_code[idx])
        return choice_nll(z, torch.as_tensor(codes, device=z.device), self.y[torch.as_tensor(idx)].to(z.device), n)

    def _val_loss(self, z: np.ndarray | torch.Tensor) -> float:
        """Validation choice likelihood (mean per visit) from the validation rows' logits."""
        with torch.no_grad():
            return float(self._choice_loss(torch.as_tensor(z, dtype=torch.float64).cpu(), self.val_idx))

    # ------------------------------------------------------------------ hybrid
    @torch.no_grad()
    def _token_cache(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen-encoder token states for ``texts``, padded to a common length."""
        self.model.net.eval()
        hs = []
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), 128):
            idx = order[start:start + 128]
            h, m = self.model.hidden_states([texts[i] for i in idx])
            hs.append((idx, h.cpu(), m.cpu()))
        length = max(h.shape[1] for _, h, _ in hs)
        hidden = torch.zeros(len(texts), length, hs[0][1].shape[2])
        mask = torch.zeros(len(texts), length, dtype=torch.long)
        for idx, h, m in hs:
            hidden[torch.as_tensor(idx), : h.shape[1]] = h
            mask[torch.as_tensor(idx), : m.shape[1]] = m
        return hidden, mask

    def _stage_a(self) -> None:
        cfg, net = self.cfg, self.model.net
        assert isinstance(net, HybridNet)
        if self.state.stage != "A" or self.state.epoch >= cfg.head_epochs:
            return
        t0 = time.perf_counter()
        uh, um = self._token_cache(self.user_texts)
        ih, im = self._token_cache(self.item_texts)
        log.info("stage A: token states of %d + %d texts in %.1fs", len(uh), len(ih), time.perf_counter() - t0)
        steps_per_epoch = int(np.ceil(len(self.train_idx) / cfg.batch_size))  # an upper bound (whole visits)
        opt, sched = self._optimizer("A", steps_per_epoch * cfg.head_epochs)

        cache = {"user": (uh, um), "item": (ih, im)}

        def cached_states(which: str, codes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            hidden, mask = cache[which]
            t = torch.as_tensor(codes)
            return hidden[t].to(self.device), mask[t].to(self.device)

        def logits(idx: np.ndarray) -> torch.Tensor:
            return self._hybrid_logits(idx, cached_states)

        def val_loss() -> float:
            net.eval()
            with torch.no_grad():
                z = torch.cat([logits(self.val_idx[s:s + 8192]) for s in range(0, len(self.val_idx), 8192)])
            return self._val_loss(z)

        while self.state.stage == "A" and self.state.epoch < cfg.head_epochs:
            rng = self._epoch_seed()
            batches = self.train.batches(rng, cfg.batch_size)
            net.train()
            net.encoder.eval()
            total = 0.0
            for k, idx in enumerate(batches):
                loss = self._choice_loss(logits(idx), idx)
                self._step(opt, sched, loss)
                total += float(loss.detach())
                if self.progress:
                    self.progress("A", k + 1, len(batches))
            self._end_epoch(val_loss(), total / len(batches), opt, sched, cfg.head_epochs)

    def _stage_b_hybrid(self) -> None:
        cfg, net = self.cfg, self.model.net
        assert isinstance(net, HybridNet)
        opt, sched = self._optimizer("B", cfg.finetune_steps * cfg.finetune_epochs)

        texts = {"user": self.user_texts, "item": self.item_texts}

        def encoded_states(which: str, codes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return self.model.hidden_states([texts[which][c] for c in codes])

        def val_loss() -> float:
            return self._val_loss(self._hybrid_val_logits())

        while self.state.stage == "B" and self.state.epoch < cfg.finetune_epochs:
            rng = self._epoch_seed()
            net.train()
            total = 0.0
            for k in range(cfg.finetune_steps):
                idx = self.train.user_sample(rng, cfg.finetune_users, cfg.rows_per_user)
                loss = self._choice_loss(self._hybrid_logits(idx, encoded_states), idx)
                self._step(opt, sched, loss)
                total += float(loss.detach())
                if self.progress:
                    self.progress("B", k + 1, cfg.finetune_steps)
            self._end_epoch(val_loss(), total / cfg.finetune_steps, opt, sched, cfg.finetune_epochs)

    def _hybrid_logits(self, idx: np.ndarray,
                       token_states: Callable[[str, np.ndarray], tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Logits of rows ``idx``: each distinct user and product text of the batch goes through its tower
        once, from the token states ``token_states(tower, text codes)`` returns (cached or encoded)."""
        net = self.model.net
        assert isinstance(net, HybridNet)
        u_codes, u_inv = np.unique(self.user_code[idx], return_inverse=True)
        i_codes, i_inv = np.unique(self.item_code[idx], return_inverse=True)
        u = net.tower("user", *token_states("user", u_codes))
        i = net.tower("item", *token_states("item", i_codes))
        num, wd, _ = self._rows(idx)
        return net.head(u[torch.as_tensor(u_inv)], i[torch.as_tensor(i_inv)], num, wd)

    @torch.no_grad()
    def _hybrid_val_logits(self) -> np.ndarray:
        self.model.clear_cache()
        self.model.net.eval()
        return self.model.predict_logits(self.df.iloc[self.val_idx])

    def _tower_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every user and product text through the fitted towers, once per fit: the head refinement and the
        ensemble train heads only, so both read the same embeddings (the encoder is the costly part)."""
        if self._embeddings is None:
            self.model.net.eval()
            with torch.no_grad():
                self._embeddings = (self.model.embed("user", self.user_texts),
                                    self.model.embed("item", self.item_texts))
        return self._embeddings

    def _head_epoch(self, head: torch.nn.Module, opt: torch.optim.Optimizer, parts: list[np.ndarray],
                    users: torch.Tensor, items: torch.Tensor) -> float:
        """One pass of a head over ``parts`` (visit positions; a visit drawn twice counts as two visits) on
        frozen tower embeddings, minimising the choice likelihood; the last step's loss."""
        loss = torch.zeros(())
        for part in parts:
            rows = self.train.rows_of(part)
            codes = torch.as_tensor(np.repeat(np.arange(len(part)), self.train.counts[part]), device=self.device)
            num, wd, y = self._rows(rows)
            z = head(users[torch.as_tensor(self.user_code[rows], device=self.device)],
                     items[torch.as_tensor(self.item_code[rows], device=self.device)], num, wd)
            loss = choice_nll(z, codes, y, len(part))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(head.parameters(), self.cfg.grad_clip)
            opt.step()
        return float(loss.detach())

    def _refine_head(self) -> None:
        """The head alone, on the frozen towers' embeddings of every text (computed once): the towers' attention
        pooling is what stage A needs the token states for, but the head's price, coupon and customer-type
        effects need many more steps than stage A's epochs give (they are learned from a few purchases per
        cell, which the validation likelihood barely registers: its changes sit within its noise, so it is
        recorded per epoch, not used to stop). ``refine_epochs`` epochs of ``refine_batch`` rows (whole
        visits) at ``lr_head`` (AdamW); the last head is kept."""
        cfg, net = self.cfg, self.model.net
        if not isinstance(net, HybridNet) or cfg.refine_epochs == 0:
            return
        t0 = time.perf_counter()
        users, items = self._tower_embeddings()
        head = net.head
        val_rows = self.val_idx
        val_u = torch.as_tensor(self.user_code[val_rows], device=self.device)
        val_i = torch.as_tensor(self.item_code[val_rows], device=self.device)
        val_num, val_wd, _ = self._rows(val_rows)

        def val_loss() -> float:
            head.eval()
            with torch.no_grad():
                return self._val_loss(head(users[val_u], items[val_i], val_num, val_wd))

        first = best = val_loss()
        opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr_head, weight_decay=cfg.weight_decay)
        torch.manual_seed(cfg.seed * 1_000_003 + 800_000)
        for epoch in range(cfg.refine_epochs):
            rng = np.random.default_rng([cfg.seed, 4241, epoch])
            head.eval()  # no dropout: noise on the inputs of a head trained this long attenuates its effects
            loss = self._head_epoch(head, opt, self.train.cut(rng.permutation(len(self.train)), cfg.refine_batch),
                                    users, items)
            val = val_loss()
            self.state.history.append({"stage": "head", "epoch": epoch, "train_loss": loss, "val_choice_nll": val})
            best = min(best, val)
            if self.progress:
                self.progress("head", epoch + 1, cfg.refine_epochs)
        head.eval()
        self.model._reset_pairs()
        log.info("head refined on frozen towers: validation choice NLL %.5f -> %.5f (best %.5f) in %.1fs", first,
                 val, best, time.perf_counter() - t0)

    def _fit_ensemble(self) -> None:
        """``ensemble`` extra heads over the frozen towers: each starts from the fitted head and is trained
        (choice likelihood, ``ensemble_epochs`` epochs at ``lr_head``) on a bootstrap resample of the
        training customers, each drawn customer keeping all its visits."""
        cfg, net = self.cfg, self.model.net
        if not isinstance(net, HybridNet) or cfg.ensemble == 0:
            return
        t0 = time.perf_counter()
        users, items = self._tower_embeddings()
        heads = []
        for k in range(cfg.ensemble):
            rng = np.random.default_rng([cfg.seed, 7919, k])
            torch.manual_seed(cfg.seed * 1_000_003 + 900_000 + k)
            head = copy.deepcopy(net.head)
            head.train()
            opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr_head, weight_decay=cfg.weight_decay)
            sample = self.train.bootstrap(rng)
            for _ in range(cfg.ensemble_epochs):
                self._head_epoch(head, opt, self.train.cut(rng.permutation(sample), cfg.batch_size), users, items)
            head.eval()
            heads.append(head)
        net.ensemble = torch.nn.ModuleList(heads)
        self.model._reset_pairs()
        log.info("ensemble: %d heads in %.1fs", cfg.ensemble, time.perf_counter() - t0)

    # ------------------------------------------------------------------ text mode
    def _stage_b_text(self) -> None:
        cfg, net = self.cfg, self.model.net
        assert isinstance(net, TextNet)
        per_epoch = cfg.finetune_steps * cfg.text_batch
        # binary cross-entropy on the IIA rows, where P(buy) = sigmoid(utility) exactly
        iia = self.train_idx[iia_rows(self.df.iloc[self.train_idx])]
        opt, sched = self._optimizer("B", cfg.finetune_steps * cfg.finetune_epochs)
        while self.state.stage == "B" and self.state.epoch < cfg.finetune_epochs:
            rng = self._epoch_seed()
            idx_all = rng.choice(iia, size=min(per_epoch, len(iia)), replace=False)
            net.train()
            total = 0.0
            for k in range(cfg.finetune_steps):
                idx = np.sort(idx_all[k * cfg.text_batch:(k + 1) * cfg.text_batch])
                if len(idx) == 0:
                    break
                enc = self.model.tokenize(full_texts(self.df.iloc[idx]), max_length=3 * cfg.max_length)
                with autocast(self.device, self.bf16):
                    z = net(**enc).float()
                loss = F.binary_cross_entropy_with_logits(z, self._rows(idx)[2])
                self._step(opt, sched, loss)
                total += float(loss.detach())
                if self.progress:
                    self.progress("B", k + 1, cfg.finetune_steps)
            val = self._val_loss(self.model.predict_logits(self.df.iloc[self.val_idx]))
            self._end_epoch(val, total / cfg.finetune_steps, opt, sched, cfg.finetune_epochs)

    # ------------------------------------------------------------------ epochs and the whole fit
    def _end_epoch(self, val: float, train: float, opt: torch.optim.Optimizer, sched: Any, epochs: int) -> None:
        s = self.state
        s.history.append({"stage": s.stage, "epoch": s.epoch, "train_loss": train, "val_choice_nll": val})
        log.info("stage %s epoch %d: train %.5f, validation choice NLL per visit %.5f", s.stage, s.epoch, train, val)
        if val < s.best_loss - 1e-6:
            s.best_loss, s.bad_epochs = val, 0
            self.best = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.net.state_dict().items()})
        else:
            s.bad_epochs += 1
        s.epoch += 1
        self.opt_state = {"stage": s.stage, "opt": opt.state_dict(), "sched": sched.state_dict()}
        if s.bad_epochs >= self.cfg.patience or s.epoch >= epochs:
            self._next_stage()
        self._save_partial()

    def _next_stage(self) -> None:
        s = self.state
        if self.best is not None:
            self.model.net.load_state_dict(self.best)
        s.bad_epochs, s.epoch, self.opt_state = 0, 0, None
        if s.stage == "A" and self.cfg.finetune_epochs > 0:
            s.stage = "B"
        else:
            s.done = True
            s.stage = "done"

    def run(self) -> BertConversionModel:
        """Run the fit to the end from where its state stands: the head, fine-tuning, refinement, calibration on the
        validation rows and the ensemble heads. Returns the fitted model, with its metadata."""
        cfg = self.cfg
        start = time.perf_counter()
        if cfg.mode == "hybrid":
            if self.state.stage == "A" and cfg.head_epochs == 0:
                self._next_stage()
            self._stage_a()
            self._stage_b_hybrid()
        else:
            if self.state.stage == "A":
                self.state.stage = "B"
            self._stage_b_text()
        if self.best is not None:
            self.model.net.load_state_dict(self.best)
        self.model.net.eval()
        self.model.clear_cache()
        self._refine_head()
        self.model.clear_cache()
        # calibrated on the validation IIA rows, where P(buy) = sigmoid(utility) exactly
        val_df = self.df.iloc[self.val_idx]
        iia = iia_rows(val_df)
        val_logits = self.model.predict_logits(val_df[iia])
        self.model.calibrator = Calibrator.fit(cfg.calibration, val_logits, val_df["purchased"].to_numpy(float)[iia])
        self.model.clear_cache()  # the fitted model then predicts exactly as the checkpoint read back
        self._fit_ensemble()
        self.model.meta = {
            "net": self.net_cfg, "encoder": cfg.encoder, "fit_config": cfg.to_dict(), "data": str(self.data_path),
            "world": self.df.attrs.get("world"),
            "data_sha256": self.data_sha, "split": {"seed": cfg.seed, "val_share": 0.1, "test_share": 0.1,
                                                      "sizes": self.split.sizes()},
            "history": self.state.history, "fit_seconds": time.perf_counter() - start,
            "loss": "choice", "best_val_choice_nll_uncalibrated": self.state.best_loss,
            "init_from": None if self.init is None else self.init.record(),
        }
        return self.model


def fit(data: str | Path, cfg: FitConfig, out: str | Path, resume: bool = False,
        progress: Callable[[str, int, int], None] | None = None, device: str | None = None
        ) -> BertConversionModel:
    """Fine-tune on ``data`` and write the checkpoint folder ``out`` (atomically)."""
    out = Path(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {out.parent}")
    # deterministic kernels (e.g. the scatter-add behind embedding lookups' gradients), so a fit resumed
    # from a checkpoint reaches the same weights as one that was never interrupted
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        fitter = Fitter(data, cfg, out, resume=resume, progress=progress, device=device)
        model = fitter.run()
    finally:
        torch.use_deterministic_algorithms(previous)
    model.save(out)
    shutil.rmtree(fitter.partial, ignore_errors=True)
    return model


