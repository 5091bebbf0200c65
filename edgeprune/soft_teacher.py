"""A larger teacher of another family, run once: fine-tuned on a subset, then its logits on every training
example cached for the student (`distillation.soft_teacher`).

Why once and cached: all-mpnet-base-v2 (110M parameters, 12 layers of 768) takes about 0.7 s for one
forward batch of 32 on the kiosk build host's two cores, more than a whole step of the student. Asking it at
each of the student's 6,300 steps would cost over an hour; labelling the training split once, sorted by
length so batches carry almost no padding, costs a fraction of that, and the student then reads two floats
per example. Only logits cross over, so the teacher's tokenizer and hidden size never meet the student's.

The folder `CHECKPOINT.soft-teacher` holds the fine-tuned model (when this stage fine-tuned it), the logits
in the order of the training examples, and a manifest whose identity (teacher settings, labels, the training
examples' hash, max_length, seed) decides reuse: a changed recipe or data relabels, an unchanged one does not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from .atomic import atomic_dir

SOFT_TARGETS = "soft_targets"  # the dataset column and batch key the distillation trainer reads
MANIFEST = "soft_teacher.json"
LOGITS = "soft_targets.npy"
MODEL_DIR = "model"


def soft_teacher_dir_for(out_dir: Path) -> Path:
    out_dir = Path(out_dir).resolve()
    return out_dir.parent / f"{out_dir.name}.soft-teacher"


def examples_sha256(texts: list[str], label_ids: list[int]) -> str:
    h = hashlib.sha256()
    for text, label in zip(texts, label_ids):
        h.update(f"{label}\t{text}\n".encode())
    return h.hexdigest()


def resolve_precision(choice: str, host=None) -> str:
    """`auto` -> bfloat16 where the hardware computes it natively, else float32."""
    if choice != "auto":
        return choice
    from .host import detect_host

    host = host or detect_host()
    if host.has_cuda_device:
        return "bfloat16" if (host.gpu_capability or 0.0) >= 8.0 else "float32"
    return "bfloat16" if {"avx512_bf16", "amx_bf16"} & set(host.isa_flags) else "float32"


def identity(cfg, data, seed: int, max_length: int, precision: str) -> dict:
    """What the cached logits depend on; any change makes them stale."""
    settings = dataclasses.asdict(cfg)
    settings.pop("weight", None)  # how the student weighs the logits, not how they were made
    return {"soft_teacher": settings, "precision": precision, "seed": seed,
            "max_length": max_length, "labels": list(data.labels), "raw_labels": list(data.raw_labels),
            "train_examples": len(data.train.texts),
            "train_sha256": examples_sha256(data.train.texts, data.ids(data.train))}


def read_cached(folder: Path, wanted: dict):
    """The cached logits when `folder` was written for exactly `wanted`, else None."""
    import numpy as np

    manifest = Path(folder) / MANIFEST
    if not manifest.is_file() or not (Path(folder) / LOGITS).is_file():
        return None
    try:
        saved = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return None
    if saved.get("identity") != wanted:
        return None
    logits = np.load(Path(folder) / LOGITS)
    if logits.shape != (wanted["train_examples"], len(wanted["labels"])):
        return None
    return logits, saved


def share_cached(from_checkpoint: Path, to_checkpoint: Path) -> bool:
    """Give `to_checkpoint` a copy of the logits `from_checkpoint`'s soft teacher cached (not its fine-tuned
    model), when it has none yet; True when copied. Why: a second student of the same recipe family (the kiosk
    benchmark's unstructured row) would otherwise fine-tune and run the 110M teacher again, a third of an hour
    on two cores, to get the same logits. Nothing is trusted by being copied: training still reuses them only
    when their identity (teacher settings, data, seed, max_length, precision) is the one it wants."""
    src, dst = soft_teacher_dir_for(from_checkpoint), soft_teacher_dir_for(to_checkpoint)
    if dst.exists() or not (src / MANIFEST).is_file() or not (src / LOGITS).is_file():
        return False
    with atomic_dir(dst) as tmp:
        for name in (MANIFEST, LOGITS):
            shutil.copy2(src / name, tmp / name)
    return True


def ensure_soft_teacher(cfg, data, folder: Path, seed: int, max_length: int, progress: bool = True,
                        report: Callable[[str], None] | None = None):
    """(logits [train examples, labels] in the order of `data.train`, manifest): reused from `folder` when
    it was written for these settings and examples, else fine-tuned (unless `fine_tune` is 0), scored on the
    eval split and run over every training example, written atomically."""
    say = report or (lambda line: None)
    precision = resolve_precision(cfg.precision)
    wanted = identity(cfg, data, seed, max_length, precision)
    cached = read_cached(folder, wanted)
    if cached is not None:
        say(f"soft teacher: reusing {folder} (dev accuracy {cached[1]['dev_accuracy']:.4f})")
        return cached
    import numpy as np

    started = time.time()
    with atomic_dir(folder, overwrite=True) as tmp:
        if cfg.fine_tune:
            say(f"soft teacher: fine-tuning {cfg.model} on {min(cfg.fine_tune, len(data.train.texts))} training "
                f"examples for {cfg.epochs:g} epoch(s) in {precision} into {folder}")
            model, tokenizer = fine_tune(cfg, data, seed, max_length, tmp / "work", progress, precision)
            model.save_pretrained(tmp / MODEL_DIR)
            tokenizer.save_pretrained(tmp / MODEL_DIR)
        else:
            model, tokenizer = load_fine_tuned(cfg.model, data.labels)
        tuned = time.time()
        scored = label(model, tokenizer, data.eval.texts, max_length, precision=precision)
        accuracy = float((scored.argmax(-1) == np.array(data.ids(data.eval))).mean())
        say(f"soft teacher: dev accuracy {accuracy:.4f}; labelling {len(data.train.texts)} training examples "
            f"in {precision}")
        logits = label(model, tokenizer, data.train.texts, max_length, precision=precision)
        np.save(tmp / LOGITS, logits.astype(np.float32))
        manifest = {"identity": wanted, "dev_accuracy": accuracy, "model": cfg.model,
                    "fine_tune_seconds": round(tuned - started, 1),
                    "label_seconds": round(time.time() - tuned, 1),
                    "train_accuracy": float((logits.argmax(-1) == np.array(data.ids(data.train))).mean())}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    say(f"soft teacher: {folder} written in {(time.time() - started) / 60:.1f} min")
    return logits.astype(np.float32), manifest


def load_fine_tuned(spec: str, labels: list[str]):
    """A classifier already fine-tuned on these labels, in this order; any family, any tokenizer."""
    from .models import check_fine_tuned, load_classifier

    model, tokenizer = load_classifier(spec)
    check_fine_tuned(model.config, spec, labels, "soft teacher", "the data",
                     "set distillation.soft_teacher.fine_tune to a number of examples to fine-tune it first")
    return model.eval(), tokenizer


def fine_tune(cfg, data, seed: int, max_length: int, work: Path, progress: bool, precision: str = "float32"):
    """The plain Trainer on a seeded subset of the training split, grouped by length (short SST-2 phrases
    padded to a long one would waste most of a 110M-parameter model's step)."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from .data import shuffled_head, tokenize
    from .models import load_classifier
    from .train import _has_accelerator

    subset = shuffled_head(data.train, cfg.fine_tune, seed)
    model, tokenizer = load_classifier(cfg.model, data.labels)
    index = {raw: i for i, raw in enumerate(data.raw_labels)}
    train_ds = tokenize(subset, [index[v] for v in subset.labels], tokenizer, max_length)
    args = TrainingArguments(output_dir=str(work), num_train_epochs=cfg.epochs,
                             per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                             warmup_steps=cfg.warmup_ratio, weight_decay=0.01, seed=seed, data_seed=seed,
                             train_sampling_strategy="group_by_length", eval_strategy="no", save_strategy="no",
                             bf16=precision == "bfloat16",
                             logging_steps=50, report_to=[], disable_tqdm=not progress, dataloader_num_workers=0,
                             dataloader_pin_memory=False, use_cpu=not _has_accelerator())
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    try:
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, processing_class=tokenizer,
                          data_collator=DataCollatorWithPadding(tokenizer))
        trainer.train()
    finally:
        hf_logging.set_verbosity(verbosity)
        shutil.rmtree(work, ignore_errors=True)
    return trainer.model.eval(), tokenizer


def label(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64, precision: str = "float32"):
    """Logits for every text, computed in length order (little padding) on the model's device and returned
    in `texts` order, as float32."""
    import numpy as np
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt").to(device)
            out[idx] = model(**enc).logits.float().cpu().numpy()
    return out
