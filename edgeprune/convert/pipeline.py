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
from ..errors import DataError, ModelError
from ..hashing import sha256_tree
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


def _batches(tokenizer, texts: list[str], max_length: int, names: list[str], batch: int = BATCH) -> list[dict]:
    out = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=max_length,
                        return_tensors="np")
        out.append({n: enc[n].astype(np.int64) for n in names})
    return out


def _torch_logits(model, feeds: list[dict]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [model(**{k: torch.from_numpy(v) for k, v in f.items()}).logits.float().numpy() for f in feeds]


def _ort_accuracy(logits: list[np.ndarray], labels: list[int]) -> float:
    pred = np.concatenate([x.argmax(-1) for x in logits])
    return float((pred == np.array(labels)).mean())


def _eval_set(state: ckpt.PruningState, data_dir, eval_limit):
    """(EvalSet or None, why not). No local folder: accuracy is recorded as not measured; a folder whose
    split or labels are wrong is an error (a silently unmeasured accuracy would hide it)."""
    from ..eval_data import data_folder, load_eval_set

    try:
        data_folder(state.recipe, data_dir)
    except DataError as exc:
        return None, f"no local eval data ({exc.problem}); pass --data DIR"
    return load_eval_set(state.recipe, state.raw_labels, data_dir, eval_limit), ""


def _trim_vocabulary(model, tokenizer, state, data_dir, check_texts: list[str]):
    """Trim `model`'s embeddings in place; return the matching tokenizer and what was done."""
    from transformers import PreTrainedTokenizerFast

    from ..eval_data import calibration_texts
    from .vocab import apply_to_model, plan_trim, tokenization_agreement

    texts = calibration_texts(state.recipe, data_dir, None)
    if not texts:
        raise DataError("vocabulary 'train' needs the recipe's training split, which is not a local file here",
                        "pass --data DIR with the training file, or convert with --vocabulary full")
    original = tokenizer.backend_tokenizer.to_str()
    plan = plan_trim(original, texts)
    apply_to_model(model, plan.kept_ids)
    trimmed = PreTrainedTokenizerFast(tokenizer_object=_tokenizer_from_str(plan.tokenizer_json),
                                      **{k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)},
                                      model_max_length=tokenizer.model_max_length,
                                      model_input_names=list(tokenizer.model_input_names))
    info = {"mode": "train", **plan.to_json(), "training_sentences": len(texts),
            "tokenization_agreement": tokenization_agreement(original, plan, check_texts),
            "agreement_sentences": len(check_texts)}
    return trimmed, info


def _tokenizer_from_str(text: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text)


def _unfuse_embeddings(src: Path, dst: Path, feeds: list[dict], report) -> tuple[Path, str]:
    """The graph with a plain word-embedding Gather (see convert.embeddings), checked to be the same maths."""
    import onnx

    from .embeddings import unfuse_embeddings

    model = onnx.load(str(src))
    word_gather = unfuse_embeddings(model)
    onnx.save(model, str(dst))
    report.checks.append(verify.compare_logits("embeddings unfused (fp32)", optimize.run_logits(src, feeds),
                                               optimize.run_logits(dst, feeds), verify.FP32_ATOL))
    return dst, word_gather


def _training_mismatch(state: ckpt.PruningState, opts) -> list[str]:
    """A student trained through one int8 rounding (training.quantize) and converted with another loses
    what int8-aware training bought; say so rather than refuse (the bundle is still verified)."""
    trained = (state.recipe.get("training") or {}).get("quantize", "none")
    if trained in ("none", opts.quantize):
        return []
    return [f"the checkpoint was trained through {trained} rounding but is converted with {opts.quantize}: "
            f"the bundle does not round as the student learned; convert with --quantize {trained}"]


def convert_checkpoint(checkpoint_dir, out_dir, *, target=None, fmt=None, quantize=None, structured=True,
                       overwrite=False, data_dir=None, eval_limit=None, progress=True,
                       int8_min_agreement: float | None = None, int8_max_drop: float | None = None,
                       vocabulary: str | None = None, embeddings: str | None = None,
                       warn_int8_mismatch: bool = True) -> Path:
    """Turn a pruned checkpoint into a verified kiosk bundle at `out_dir`; returns `out_dir`.

    `warn_int8_mismatch=False` is for a deliberate other quantization (bench's dense baselines of an
    int8-aware checkpoint), where the mismatch warning would only be a false alarm.

    int8 bundles are verified by label agreement with the fp32 checkpoint (>= `int8_min_agreement`,
    default `verify.INT8_MIN_LABEL_AGREEMENT`) and accuracy drop (<= `int8_max_drop`; default the
    target's budget.max_accuracy_drop when set, else `verify.INT8_MAX_ACCURACY_DROP`).
    """
    from ..chain import checkpoint_identity
    from ..eval_data import calibration_texts
    from ..evaluate import torch_accuracy

    out_dir = Path(out_dir)
    checkpoint_dir = Path(checkpoint_dir)
    opts = resolve_options(target, fmt, quantize, structured, int8_min_agreement, int8_max_drop, vocabulary,
                           embeddings)
    check_output_free(out_dir, overwrite)
    state = ckpt.read_pruning_state(checkpoint_dir)
    mismatch = _training_mismatch(state, opts) if warn_int8_mismatch else []
    for note in (*opts.warnings, *mismatch):
        print(f"convert: warning: {note}", file=sys.stderr)

    _say(progress, f"loading {checkpoint_dir}")
    model, tokenizer, _masks, state = ckpt.load_checkpoint(checkpoint_dir)
    reference = copy.deepcopy(model).eval()
    max_length = int(state.max_length or getattr(tokenizer, "model_max_length", 128))
    max_length = min(max_length, int(getattr(model.config, "max_position_embeddings", max_length)))

    dev, no_data_reason = _eval_set(state, data_dir, eval_limit)
    verify_texts = (dev.texts[:VERIFY_SENTENCES] if dev else FALLBACK_SENTENCES)

    report = verify.VerificationReport(sentences=len(verify_texts))
    structure: list[dict[str, Any]] = []
    from ..layout import encoder_layout

    try:
        layout = encoder_layout(model)  # taken before removal: a shrunk layer may no longer match the map
    except ModelError:
        layout = []
    removed = opts.structured and bool(state.heads_pruned or state.neurons_pruned)
    if removed:  # nothing pruned structurally: nothing to remove, whatever the architecture
        from .structure import remove_structure

        _say(progress, "removing pruned heads and neurons")
        result = remove_structure(model, state.heads_pruned, state.neurons_pruned)
        structure = result.to_json()

    from .export import export_onnx, model_input_names

    names = model_input_names(model, tokenizer)
    verify_feeds = _batches(tokenizer, verify_texts, max_length, names)
    ref_logits = _torch_logits(reference, verify_feeds)
    if removed:
        report.checks.append(verify.compare_logits("structured removal (torch)", ref_logits,
                                                   _torch_logits(model, verify_feeds), verify.FP32_ATOL))
    source_tokenizer, vocab_info = tokenizer, {"mode": "full"}
    exact_logits = ref_logits  # what the exported graph must reproduce to fp32 tolerance
    if opts.vocabulary == "train":
        _say(progress, "trimming the vocabulary to the training split")
        tokenizer, vocab_info = _trim_vocabulary(model, tokenizer, state, data_dir,
                                                 dev.texts if dev else verify_texts)
        verify_feeds = _batches(tokenizer, verify_texts, max_length, names)
        exact_logits = _torch_logits(model, verify_feeds)
        report.checks.append(verify.compare_labels("vocabulary trim (torch)", ref_logits, exact_logits,
                                                   opts.int8_min_agreement))

    with tempfile.TemporaryDirectory(prefix="edgeprune-convert-") as work, \
            atomic_dir(out_dir, overwrite=overwrite) as tmp:
        work = Path(work)
        _say(progress, "exporting to ONNX")
        export_onnx(model, tokenizer, work / "export.onnx", verify_texts, max_length, layout)
        report.checks.append(verify.compare_logits("onnx export (fp32)", exact_logits,
                                                   optimize.run_logits(work / "export.onnx", verify_feeds),
                                                   verify.FP32_ATOL))
        _say(progress, "fusing attention / LayerNorm / GELU")
        opt = optimize.optimize(work / "export.onnx", work / "fused.onnx", verify_feeds, skip_layer_norm=opts.gpu)
        final = work / "export.onnx" if quant.needs_unfused(opts.quantize) else opt.path
        word_gather = None
        if opts.embeddings == "int4":
            final, word_gather = _unfuse_embeddings(final, work / "embeddings-unfused.onnx", verify_feeds, report)
        quant_info: dict[str, Any] = {"mode": opts.quantize}
        if opts.quantize != "none":
            _say(progress, f"quantizing ({opts.quantize})")
            calib_texts = (calibration_texts(state.recipe, data_dir, CALIBRATION_SENTENCES)
                           or (dev.texts if dev else FALLBACK_SENTENCES))
            calib = _batches(tokenizer, calib_texts, max_length, names)
            quant_info = quant.quantize(final, work / "quantized.onnx", opts.quantize, calib,
                                        exclude=[word_gather] if word_gather else None)
            quant_info["int8_ops"] = quant.int8_ops(work / "quantized.onnx")
            final = work / "quantized.onnx"
        if word_gather is not None:
            from .embeddings import quantize_word_embeddings

            _say(progress, "storing the word embeddings in 4-bit blocks")
            quant_info["embeddings"] = quantize_word_embeddings(final, work / "embeddings-int4.onnx", word_gather,
                                                               unpack=not opts.gpu)
            final = work / "embeddings-int4.onnx"

        _say(progress, f"storing tensors (forms allowed: {', '.join(opts.forms)})")
        tensors, small_bytes = bundle_mod.store_tensors(final, tmp, opts.forms)
        tokenizer.save_pretrained(tmp)
        for extra in ("special_tokens_map.json", "vocab.txt", "added_tokens.json"):
            (tmp / extra).unlink(missing_ok=True)

        from ..runtime import make_session, read_verified

        pad_token = tokenizer.pad_token or "[PAD]"
        runtime = optimize.runtime_config(opts.gpu)
        draft = {"files": sha256_tree(tmp), "tensors": tensors, "runtime": runtime}
        session = make_session(read_verified(tmp, draft), draft)
        bundle_logits = optimize.run_logits(session, verify_feeds)
        if opts.quantize == "none" and opts.embeddings == "same":
            report.checks.append(verify.compare_logits(f"bundle ({opts.describe()})", exact_logits,
                                                       bundle_logits, verify.FP32_ATOL))
        if opts.approximate:
            report.checks.append(verify.compare_labels(f"bundle ({opts.describe()})", ref_logits, bundle_logits,
                                                       opts.int8_min_agreement))

        accuracy: dict[str, Any] = {"measured": False, "reason": no_data_reason, "fp32": None,
                                    "bundle": None, "int8": None, "examples": 0}
        if dev is not None:
            score_batch = opts.score_batch or BATCH
            _say(progress, f"measuring accuracy on {len(dev.texts)} {dev.split} sentences, "
                           f"{score_batch} at a time")
            feeds = _batches(tokenizer, dev.texts, max_length, names, score_batch)
            fp32 = torch_accuracy(reference, source_tokenizer, dev.texts, dev.label_ids, max_length,
                                  batch_size=score_batch)
            got = _ort_accuracy(optimize.run_logits(session, feeds), dev.label_ids)
            accuracy.update(measured=True, reason="", fp32=fp32, bundle=got, examples=len(dev.label_ids),
                            data=str(dev.source), split=dev.split, batch_size=score_batch)
            if opts.quantize.startswith("int8"):
                accuracy["int8"] = got
            if opts.approximate:
                report.checks.append(verify.compare_accuracy(f"accuracy ({opts.describe()})", fp32, got,
                                                             opts.int8_max_drop))
        del session
        report.raise_if_failed()

        dense_bytes = sum(p.numel() * 4 for p in reference.parameters())
        bundle_bytes = sum(e["bytes"] for e in sha256_tree(tmp).values())
        dense_accuracy = state.metrics.get("dense_accuracy")
        source = {"checkpoint": str(checkpoint_dir.resolve()), "model": state.recipe.get("model"),
                  "recipe_sha256": state.recipe_sha256, "recipe": state.recipe,
                  "checkpoint_sha256": checkpoint_identity(checkpoint_dir),
                  "architecture": type(reference).__name__, "step": state.step,
                  # train's dense-teacher accuracy on the recipe's eval split (None: no teacher)
                  "dense_accuracy": (float(dense_accuracy) if isinstance(dense_accuracy, (int, float))
                                     and not isinstance(dense_accuracy, bool) else None)}
        manifest = bundle_mod.Manifest(
            source=source, raw_labels=[str(v) for v in state.raw_labels],
            target=opts.target_name, format=opts.fmt, allowed_forms=list(opts.forms),
            quantization=quant_info, structured=removed,
            labels=[str(reference.config.id2label[i]) for i in range(reference.config.num_labels)],
            max_length=max_length, inputs=names, pad_token=pad_token,
            pad_token_id=int(tokenizer.pad_token_id or 0),
            sparsity={"global": state.global_sparsity, "per_layer": state.per_layer_sparsity,
                      "heads_pruned": state.heads_pruned, "neurons_pruned": state.neurons_pruned,
                      "nm": state.nm, "layers_kept": list(state.layers_kept),
                      "source_layers": int(state.source_layers)},
            structure=structure, optimization=opt.to_json(), tensors=tensors,
            sizes={"bundle_bytes": bundle_bytes, "model_onnx_bytes": (tmp / "model.onnx").stat().st_size,
                   "reference_dense_fp32_param_bytes": dense_bytes, "small_dense_tensor_bytes": small_bytes},
            verification=report.to_json(), accuracy=accuracy, notes=opts.notes(), vocabulary=vocab_info,
            runtime=runtime,
        )
        bundle_mod.finish(tmp, manifest)
    _say(progress, f"bundle written to {out_dir}")
    return out_dir

