"""Fine-tune a model with gradual pruning from a YAML recipe and write a checkpoint.

The checkpoint is a save_pretrained folder (loads with plain transformers) plus masks.safetensors and
pruning_state.json. Training checkpoints go to a hidden .NAME.work folder beside it; --resume continues a
killed run from there. Override any recipe field with --set, e.g. --set pruning.0.final_sparsity=0.8.
"""

from __future__ import annotations

HELP = "fine-tune with gradual pruning from a recipe"


def add_arguments(p) -> None:
    p.add_argument("recipe", help="recipe YAML (see recipes/example.yaml)")
    p.add_argument("-o", "--output", required=True, help="checkpoint folder to write")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run of the same output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field (repeatable), e.g. training.epochs=1")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the final pruning state as JSON on stdout")


def run(args) -> int:
    import json

    from ..checkpoint import read_pruning_state
    from ..recipe import load_recipe
    from ..train import train

    recipe = load_recipe(args.recipe, args.overrides)
    out = train(recipe, args.output, resume=args.resume, overwrite=args.overwrite,
                progress=not args.no_progress)
    if args.json:
        state = read_pruning_state(out)
        print(json.dumps({"checkpoint": str(out), "step": state.step, "global_sparsity": state.global_sparsity,
                          "metrics": {k: v for k, v in state.metrics.items() if k != "evaluations"}}))
    return 0
