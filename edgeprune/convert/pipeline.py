"""checkpoint -> bundle, one direction: masks permanent, structure removed, export, fuse, quantize,
store, verify, write atomically. Any failure leaves no bundle folder (see `edgeprune.atomic`)."""

from __future__ import annotations

import copy
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import checkpoint as ckpt
from ..atomic import atomic_dir, check_output_free
from ..errors import DataError
from ..hashing import sha256_json, sha256_tree
from . import bundle as bundle_mod
from . import optimize, verify
from . import quantize as quant
from .options import ConvertOptions, resolve_options

VERIFY_SENTENCES = 32
CALIBRATION_SENTENCES = 64
BATCH = 16
FALLBACK_SENTENCES = [
    "the film was a delight from start to finish",
    "i would not recommend this to anyone",
    "a slow, muddled and forgettable story",
    "the performances are warm and funny",
    "it never quite finds its footing",
    "an uneven but often moving drama",
    "the worst two hours i have spent in a cinema",
    "smart, sharp and beautifully shot",
]


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"convert: {message}", file=sys.stderr, flush=True)


def _eval_data(state: ckpt.PruningState, data_dir: Path | None, eval_limit: int | None):
    """(dev Examples or None, train Examples or None, reason when no eval data)."""
    from ..data_files import find_split, read_examples

    data = dict(state.recipe.get("data") or {})
    folder = Path(data_dir) if data_dir else (Path(data["path"]) if data.get("path") else None)
    if folder is None or not folder.is_dir():
        where = str(folder) if folder else "the recipe"
        return None, None, f"no local eval data ({where} is not a folder); pass --data DIR"
    text_col, label_col = data.get("text_column", "sentence"), data.get("label_column", "label")
    try:
        dev = read_examples(find_split(folder, "dev"), text_col, label_col, eval_limit)
    except DataError as exc:
        return None, None, str(exc)
    try:
        train = read_examples(find_split(folder, "train"), text_col, label_col, CALIBRATION_SENTENCES)
    except DataError:
        train = None
    return dev, train, ""


def _label_ids(raw: list[str], config) -> list[int] | None:
    label2id = {str(k): int(v) for k, v in (config.label2id or {}).items()}
    out = []
    for value in raw:
        if value in label2id:
            out.append(label2id[value])
        elif value.lstrip("-").isdigit() and 0 <= int(value) < config.num_labels:
            out.append(int(value))
        else:
            return None
    return out


def _batches(tokenizer, texts: list[str], max_length: int, names: list[str]) -> list[dict]:
    out = []
    for i in range(0, len(texts), BATCH):
        enc = tokenizer(texts[i:i + BATCH], padding=True, truncation=True, max_length=max_length,
                        return_tensors="np")
        out.append({n: enc[n].astype(np.int64) for n in names})
    return out


def _torch_logits(model, feeds: list[dict]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [model(**{k: torch.from_numpy(v) for k, v in f.items()}).logits.float().numpy() for f in feeds]


def _accuracy(logits: list[np.ndarray], labels: list[int]) -> float:
    pred = np.concatenate([x.argmax(-1) for x in logits])
    return float((pred == np.array(labels)).mean())


def convert_checkpoint(checkpoint_dir, out_dir, *, target=None, fmt=None, quantize=None, structured=True,
                       overwrite=False, data_dir=None, eval_limit=None, progress=True) -> Path:
    """Turn a pruned checkpoint into a verified kiosk bundle at `out_dir`; returns `out_dir`."""
    out_dir = Path(out_dir)
    checkpoint_dir = Path(checkpoint_dir)
    opts = resolve_options(target, fmt, quantize, structured)
    check_output_free(out_dir, overwrite)
    state = ckpt.read_pruning_state(checkpoint_dir)
    for note in opts.warnings:
        print(f"convert: warning: {note}", file=sys.stderr)

    _say(progress, f"loading {checkpoint_dir}")
    model, tokenizer, _masks, state = ckpt.load_checkpoint(checkpoint_dir)
    reference = copy.deepcopy(model).eval()
    max_length = int(state.max_length or getattr(tokenizer, "model_max_length", 128))
    max_length = min(max_length, int(getattr(model.config, "max_position_embeddings", max_length)))

    dev, train, no_data_reason = _eval_data(state, data_dir, eval_limit)
    verify_texts = (dev.texts[:VERIFY_SENTENCES] if dev else FALLBACK_SENTENCES)

    report = verify.VerificationReport(sentences=len(verify_texts))
    structure: list[dict[str, Any]] = []
    if opts.structured:
        from .structure import remove_structure

        _say(progress, "removing pruned heads and neurons")
        result = remove_structure(model, state.heads_pruned, state.neurons_pruned)
        structure = result.to_json()

    from .export import export_onnx, model_input_names

    names = model_input_names(model, tokenizer)
    verify_feeds = _batches(tokenizer, verify_texts, max_length, names)
    ref_logits = _torch_logits(reference, verify_feeds)
    if opts.structured:
        report.checks.append(verify.compare_logits("structured removal (torch)", ref_logits,
                                                   _torch_logits(model, verify_feeds), verify.FP32_ATOL))

    with tempfile.TemporaryDirectory(prefix="edgeprune-convert-") as work, \
            atomic_dir(out_dir, overwrite=overwrite) as tmp:
        work = Path(work)
        _say(progress, "exporting to ONNX")
        export_onnx(model, tokenizer, work / "export.onnx", verify_texts, max_length)
        report.checks.append(verify.compare_logits("onnx export (fp32)", ref_logits,
                                                   optimize.run_logits(work / "export.onnx", verify_feeds),
                                                   verify.FP32_ATOL))
        _say(progress, "fusing attention / LayerNorm / GELU")
        opt = optimize.optimize(work / "export.onnx", work / "fused.onnx", verify_feeds)
        final = opt.path
        quant_info: dict[str, Any] = {"mode": opts.quantize}
        if opts.quantize != "none":
            _say(progress, f"quantizing ({opts.quantize})")
            src = work / "export.onnx" if quant.needs_unfused(opts.quantize) else opt.path
            calib = _batches(tokenizer, (train or dev).texts if (train or dev) else FALLBACK_SENTENCES,
                             max_length, names)
            quant_info = quant.quantize(src, work / "quantized.onnx", opts.quantize, calib)
            quant_info["int8_ops"] = quant.int8_ops(work / "quantized.onnx")
            final = work / "quantized.onnx"

        _say(progress, f"storing tensors (forms allowed: {', '.join(opts.forms)})")
        tensors, small_bytes = bundle_mod.store_tensors(final, tmp, opts.forms)
        tokenizer.save_pretrained(tmp)
        for extra in ("special_tokens_map.json", "vocab.txt", "added_tokens.json"):
            (tmp / extra).unlink(missing_ok=True)

        from ..runtime import make_session

        pad_token = tokenizer.pad_token or "[PAD]"
        draft = {"files": sha256_tree(tmp), "tensors": tensors}
        session = make_session(tmp, draft)
        bundle_logits = optimize.run_logits(session, verify_feeds)
        if opts.quantize == "none":
            report.checks.append(verify.compare_logits(f"bundle ({opts.describe()})", ref_logits,
                                                       bundle_logits, verify.FP32_ATOL))
        else:
            report.checks.append(verify.compare_labels(f"bundle ({opts.describe()})", ref_logits, bundle_logits))

        accuracy: dict[str, Any] = {"measured": False, "reason": no_data_reason, "fp32": None,
                                    "bundle": None, "int8": None, "examples": 0}
        if dev is not None:
            label_ids = _label_ids(dev.labels, model.config)
            if label_ids is None:
                accuracy["reason"] = (f"labels in {dev.source} do not match the model's labels "
                                      f"{list((model.config.label2id or {}).keys())}")
            else:
                _say(progress, f"measuring accuracy on {len(dev.texts)} dev sentences")
                feeds = _batches(tokenizer, dev.texts, max_length, names)
                fp32 = _accuracy(_torch_logits(reference, feeds), label_ids)
                got = _accuracy(optimize.run_logits(session, feeds), label_ids)
                accuracy.update(measured=True, reason="", fp32=fp32, bundle=got, examples=len(label_ids),
                                data=str(dev.source))
                if opts.quantize.startswith("int8"):
                    accuracy["int8"] = got
                    report.checks.append(verify.compare_accuracy("int8 accuracy", fp32, got))
        del session
        report.raise_if_failed()

        dense_bytes = sum(p.numel() * 4 for p in reference.parameters())
        bundle_bytes = sum(e["bytes"] for e in sha256_tree(tmp).values())
        manifest = bundle_mod.Manifest(
            source={"checkpoint": str(checkpoint_dir.resolve()), "model": state.recipe.get("model"),
                    "recipe_sha256": state.recipe_sha256,
                    "checkpoint_sha256": sha256_json(sha256_tree(checkpoint_dir)),
                    "architecture": type(reference).__name__, "step": state.step},
            target=opts.target_name, format=opts.fmt, allowed_forms=list(opts.forms),
            quantization=quant_info, structured=opts.structured,
            labels=[str(reference.config.id2label[i]) for i in range(reference.config.num_labels)],
            max_length=max_length, inputs=names, pad_token=pad_token,
            pad_token_id=int(tokenizer.pad_token_id or 0),
            sparsity={"global": state.global_sparsity, "per_layer": state.per_layer_sparsity,
                      "heads_pruned": state.heads_pruned, "neurons_pruned": state.neurons_pruned,
                      "nm": state.nm},
            structure=structure, optimization=opt.to_json(), tensors=tensors,
            sizes={"bundle_bytes": bundle_bytes, "model_onnx_bytes": (tmp / "model.onnx").stat().st_size,
                   "reference_dense_fp32_param_bytes": dense_bytes, "small_dense_tensor_bytes": small_bytes},
            verification=report.to_json(), accuracy=accuracy, notes=opts.notes(),
        )
        bundle_mod.finish(tmp, manifest)
    _say(progress, f"bundle written to {out_dir}")
    return out_dir

