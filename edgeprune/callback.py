"""`GradualPruningCallback`: gradual pruning for any `transformers.Trainer`, as a plain callback.

A thin adapter from Trainer events to the `Pruner`; the maths lives in `schedule`/`masks`/`pruner`.
Plug it into your own script:

    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      callbacks=[GradualPruningCallback([{"kind": "magnitude", "final_sparsity": 0.8}])])
    trainer.train()

Rank-safe: every process computes masks, rank 0's are broadcast to all, and only rank 0 writes files.
Gradients are masked as they are computed (tensor hooks), so gradient clipping and the logged grad norm
see only live weights.
Pruner state is saved into each Trainer checkpoint, so `resume_from_checkpoint` continues exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from .errors import CheckpointError
from .pruner import STATE_JSON, Pruner
from .recipe import ModifierConfig, recipe_from_dict

logger = logging.getLogger("edgeprune")


def _as_modifiers(modifiers: list[ModifierConfig | dict[str, Any]]) -> list[ModifierConfig]:
    if all(isinstance(m, ModifierConfig) for m in modifiers):
        for i, m in enumerate(modifiers):
            m.validate(f"pruning.{i}")
        return list(modifiers)
    return recipe_from_dict({"pruning": [m if isinstance(m, dict) else m.__dict__ for m in modifiers]}).pruning


class GradualPruningCallback(TrainerCallback):
    def __init__(self, modifiers: list[ModifierConfig | dict[str, Any]],
                 on_evaluate: Callable[[dict[str, Any]], None] | None = None,
                 resume_from: str | Path | None = None):
        self.modifiers = _as_modifiers(modifiers)
        self.resume_from = resume_from
        self.pruner: Pruner | None = None
        self.evaluations: list[dict[str, Any]] = []
        self._report = on_evaluate

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.pruner = Pruner(model, self.modifiers, state.max_steps)
        if state.global_step > 0 and self.modifiers:
            resumed = Path(self.resume_from or Path(args.output_dir) / f"checkpoint-{state.global_step}")
            if not (resumed / STATE_JSON).is_file():
                raise CheckpointError(
                    f"resuming at step {state.global_step} but {resumed} has no pruner state; the masks "
                    "would be lost and pruned weights would grow back",
                    "resume from a checkpoint saved with GradualPruningCallback, or pass its folder "
                    "as GradualPruningCallback(..., resume_from=DIR)")
            self.pruner.load(resumed)
        else:
            self.pruner.update(state.global_step)
        self.pruner.attach_gradient_masks()
        self.pruner.apply(optimizer)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.pruner.accumulate_taylor()

    def on_train_end(self, args, state, control, **kwargs):
        if self.pruner is not None:
            self.pruner.detach_gradient_masks()

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.pruner.apply(optimizer)

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if self.pruner.update(state.global_step):
            self.pruner.apply(optimizer)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.pruner.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.pruner is None:
            return
        entry = {"epoch": state.epoch, "step": state.global_step,
                 "accuracy": (metrics or {}).get("eval_accuracy"),
                 "sparsity": round(self.pruner.report()["global"], 4)}
        self.evaluations.append(entry)
        if state.is_world_process_zero:
            (self._report or (lambda e: logger.info("eval %s", e)))(entry)
