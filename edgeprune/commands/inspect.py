"""Show what a bundle is: sizes against the dense export, structure kept per layer, per-tensor storage
form and bytes, verification and accuracy, and what pays off where.

Reads only manifest.json (torch-free, instant); the file hashes are checked too, so what is shown is
what would load.
"""

from __future__ import annotations

import argparse
import json

HELP = "show a bundle's manifest: sizes, structure, per-tensor forms, verification"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle folder written by `edgeprune convert`")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")


def _mb(n) -> str:
    return f"{n / 1e6:.3f} MB" if n is not None else "-"


def _share(value) -> str:
    """A tensor's zero share; "-" where none was counted (4-bit packed tables record no sparsity)."""
    return "-" if value is None else f"{value:.1%}"


def render(manifest: dict, digest: str) -> str:
    lines = []
    sizes = manifest.get("sizes", {})
    quant = manifest.get("quantization", {})
    source = manifest.get("source") or {}
    lines += [
        f"bundle      {digest[:16]}  (edgeprune {manifest.get('edgeprune_version')}, schema {manifest.get('schema_version')})",
        f"source      {source.get('model')}  recipe {str(source.get('recipe_sha256'))[:12]}",
        f"target      {manifest.get('target') or '-'}   format {manifest.get('format')} "
        f"(forms {', '.join(manifest.get('allowed_forms', []))})   quantization {quant.get('mode')}",
        f"labels      {', '.join(manifest.get('labels', []))}   max length {manifest.get('max_length')}",
    ]
    dense = sizes.get("reference_dense_fp32_param_bytes")
    total = sizes.get("bundle_bytes")
    ratio = f"  ({total / dense:.1%} of the dense fp32 weights, {_mb(dense)})" if dense and total else ""
    lines.append(f"size        {_mb(total)} total, model.onnx {_mb(sizes.get('model_onnx_bytes'))}{ratio}")
    sparsity = manifest.get("sparsity", {})
    lines.append(f"sparsity    global {sparsity.get('global', 0):.1%}")
    kept, source_depth = sparsity.get("layers_kept") or [], sparsity.get("source_layers") or 0
    cut = bool(kept) and len(kept) < source_depth
    if cut:
        lines.append(f"layers      {len(kept)} of {source_depth} encoder layers kept (source layers "
                     f"{', '.join(str(i) for i in kept)})")
    if manifest.get("structure"):
        lines.append("")
        lines.append("layer  heads kept  neurons kept  note")
        for s in manifest["structure"]:
            note = "bias+LayerNorm only" if s.get("reduced_to_bias_layernorm") else (
                "no attention" if s["heads_kept"] == 0 else ("no FFN" if s["neurons_kept"] == 0 else ""))
            if cut and len(kept) == len(manifest["structure"]):
                note = f"(source layer {kept[s['layer']]}) {note}".strip()
            lines.append(f"{s['layer']:>5}  {s['heads_kept']:>4}/{s['heads_total']:<5}  "
                         f"{s['neurons_kept']:>6}/{s['neurons_total']:<6} {note}")
    per_layer = sparsity.get("per_layer") or {}
    if per_layer:
        lines += ["", "pruned parameter                                              sparsity"]
        lines += [f"{name[-60:]:<60}  {value:>7.1%}" for name, value in per_layer.items()]
    lines += ["", f"{'tensor':<48} {'shape':<14} {'form':<6} {'bytes':>10} {'dense':>10} {'zeros':>6}"]
    for t in manifest.get("tensors", []):
        shape = "x".join(str(d) for d in t["shape"])
        lines.append(f"{t['name'][-48:]:<48} {shape:<14} {t['form']:<6} {t['bytes']:>10} "
                     f"{t['dense_bytes']:>10} {_share(t.get('sparsity')):>6}")
    opt = manifest.get("optimization", {})
    fused = ", ".join(f"{k} x{v}" for k, v in opt.get("fused_ops", {}).items()) or "none"
    lines += ["", f"fusion      {'kept' if opt.get('fused') else 'not used'}: {fused} ({opt.get('reason', '')})"]
    from ..runtime import disabled_optimizers

    disabled = disabled_optimizers(manifest)
    lines.append(f"runtime     onnxruntime optimizers off: {', '.join(disabled) or 'none'}  "
                 f"(converter {manifest.get('converter_version', 1)})")
    ver = manifest.get("verification", {})
    lines.append(f"verified    {'passed' if ver.get('passed') else 'FAILED'} on {ver.get('sentences')} sentences")
    lines += [f"  - {c['name']}: {c['detail']}" for c in ver.get("checks", [])]
    acc = manifest.get("accuracy", {})
    if acc.get("measured"):
        int8 = f", int8 {acc['int8']:.4f}" if acc.get("int8") is not None else ""
        lines.append(f"accuracy    fp32 {acc['fp32']:.4f}, bundle {acc['bundle']:.4f}{int8} "
                     f"on {acc.get('examples')} examples{_scored_in(acc)}")
    else:
        lines.append(f"accuracy    not measured: {acc.get('reason')}")
    measured = manifest.get("measured") or {}
    lines.append(f"measured    {', '.join(measured) if measured else 'not benched yet'}")
    lines += ["", "what pays off where:"] + [f"  - {n}" for n in manifest.get("notes", [])]
    return "\n".join(lines)


def _scored_in(acc: dict) -> str:
    """Dynamic int8 scales each activation over the whole batch, so the batch the figure was scored at is part
    of the figure: bundles converted before it was recorded say so rather than leaving it to be guessed."""
    batch = acc.get("batch_size")
    return ", one sentence at a time" if batch == 1 else (
        f", in batches of {batch}" if batch else ", scoring batch not recorded")


def run(args) -> int:
    from ..errors import BundleError
    from ..runtime import bundle_digest, read_manifest, verify_files

    manifest = read_manifest(args.bundle)
    verify_files(args.bundle, manifest)
    if args.json:
        print(json.dumps({"digest": bundle_digest(manifest), "manifest": manifest}, indent=2))
        return 0
    try:
        text = render(manifest, bundle_digest(manifest))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise BundleError(f"{args.bundle}/manifest.json has a malformed field ({type(exc).__name__}: {exc})",
                          "re-run `edgeprune convert`, or view it raw with --json") from exc
    print(text)
    return 0
