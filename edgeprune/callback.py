"""`GradualPruningCallback`: gradual pruning for any `transformers.Trainer`, as a plain callback.

A thin adapter from Trainer events to the `Pruner`; the maths lives in `schedule`/`masks`/`pruner`.
Plug it into your own script:

    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      callbacks=[GradualPruningCallback([{"kind": "magnitude", "final_sparsity": 0.8}])])
    trainer.train()

Rank-safe: every process computes masks, rank 0's are broadcast to all, and only rank 0 writes files.
Pruner state is saved into each Trainer checkpoint, so `resume_from_checkpoint` continues exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

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
                 on_evaluate: Callable[[dict[str, Any]], None] | None = None):
        self.modifiers = _as_modifiers(modifiers)
        self.pruner: Pruner | None = None
        self.evaluations: list[dict[str, Any]] = []
        self._report = on_evaluate

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.pruner = Pruner(model, self.modifiers, state.max_steps)
        resumed = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.global_step > 0 and (resumed / STATE_JSON).is_file():
            self.pruner.load(resumed)
        else:
            self.pruner.update(state.global_step)
        self.pruner.apply(optimizer)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.pruner.accumulate_taylor()
        self.pruner.mask_gradients()

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
