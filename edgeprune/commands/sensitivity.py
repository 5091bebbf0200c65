"""Per-layer sensitivity: prune each selected layer alone at several sparsities and measure the drop.

Writes sensitivity.json, sensitivity.csv, sensitivity.png and overrides.yaml (sparsity_overrides for a
magnitude modifier). The layers are those the recipe's first magnitude modifier selects (all encoder
Linear layers when it has none). Without --checkpoint, a dense model is first fine-tuned with the
recipe (its pruning and distillation removed: the dense reference) and kept in OUT/dense-checkpoint.
"""

from __future__ import annotations

HELP = "per-layer sparsity vs accuracy drop: table, plot and sparsity_overrides"


def add_arguments(p) -> None:
    p.add_argument("recipe", help="recipe YAML")
    p.add_argument("-o", "--output", required=True, help="report folder to write")
    p.add_argument("--checkpoint", help="an already fine-tuned checkpoint to analyse (skips dense training)")
    p.add_argument("--sparsities", default="0.25,0.5,0.75,0.9", help="comma-separated (default %(default)s)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="accuracy drop allowed per layer for overrides, absolute (default %(default)s)")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N dev rows")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")


def run(args) -> int:
    import dataclasses
    import json
    from pathlib import Path

    from tqdm import tqdm

    from ..atomic import atomic_dir, check_output_free
    from ..data import load_examples
    from ..errors import RecipeError
    from ..pruner import Pruner
    from ..recipe import ModifierConfig, load_recipe
    from ..sensitivity import layer_sensitivity, write_report

    try:
        sparsities = sorted({float(s) for s in args.sparsities.split(",") if s.strip()})
    except ValueError:
        raise RecipeError(f"--sparsities {args.sparsities!r} is not a list of numbers", "write e.g. 0.5,0.75,0.9")
    if not sparsities or not all(0 < s < 1 for s in sparsities):
        raise RecipeError(f"--sparsities {args.sparsities!r} must be numbers in (0, 1)", "write e.g. 0.5,0.75,0.9")
    recipe = load_recipe(args.recipe, args.overrides)
    if args.eval_limit:
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, eval_limit=args.eval_limit))
    out = Path(args.output)
    check_output_free(out, args.overwrite)
    data = load_examples(recipe.data, seed=recipe.training.seed)
    with atomic_dir(out, args.overwrite) as tmp:
        if args.checkpoint:
            from ..checkpoint import load_checkpoint

            model, tokenizer, _, _ = load_checkpoint(Path(args.checkpoint))
            source = str(Path(args.checkpoint).resolve())
        else:
            from ..models import load_classifier
            from ..train import train

            # the dense fine-tuned model the sparsities are tried on: no teacher (nor ensemble) to train first
            dense = train(recipe.dense_reference(), tmp / "dense-checkpoint")
            model, tokenizer = load_classifier(str(dense))
            source = str(out / "dense-checkpoint")
        magnitude = next((m for m in recipe.pruning if m.kind == "magnitude"), ModifierConfig())
        # only the layer selection matters here, not the schedule
        selection = dataclasses.replace(magnitude, start=0, end=0)
        layers = list(Pruner(model, [selection], total_steps=1).modifiers[0].modules)
        with tqdm(total=len(layers) * len(sparsities), desc="sensitivity", unit="trial") as bar:
            baseline, rows = layer_sensitivity(model, tokenizer, data.eval.texts, data.ids(data.eval), layers,
                                               sparsities, recipe.data.max_length, progress=bar)
        report = write_report(tmp, baseline, rows, args.tolerance, source)
    worst = sorted(rows, key=lambda r: -r.drop)[:5]
    print(f"baseline accuracy {baseline:.4f}; most sensitive: " +
          ", ".join(f"{r.layer.split('encoder.')[-1]}@{r.sparsity:.0%} -{r.drop * 100:.1f}pt" for r in worst))
    print(f"wrote {out}/sensitivity.{{json,csv,png}} and overrides.yaml "
          f"({len(report['sparsity_overrides'])} layers within {args.tolerance})")
    if args.json:
        print(json.dumps(report))
    return 0
