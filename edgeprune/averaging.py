"""`WeightAveragingCallback`: a uniform average of the weights over the tail of training (SWA-style).

Why: on SST-2 two trainings of one recipe differ by about half a point, and the last epoch's weights are
one noisy draw from the basin the decaying learning rate settles into. The mean of the weights visited over
the last part of the run sits nearer that basin's centre (Izmailov et al. 2018, "Averaging Weights Leads to
Wider Optima"), which costs one copy of the trainable weights and no extra forward passes.

Only trainable tensors are averaged: a frozen table (the 4-bit word embeddings) is left bit-exact. The
running mean is kept here rather than in `torch.optim.swa_utils.AveragedModel`, which deep-copies the
whole module, int8 parametrizations and gradient-mask hooks included, to hold what is a dict of tensors.
Averaging starts only once pruning has ended (train checks it), so every snapshot has the final masks and
the mean keeps pruned weights at exactly zero; the masks are re-applied after the swap all the same.
The running mean is saved into each Trainer checkpoint, so `--resume` ends with the same average.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from .errors import CheckpointError
from .schedule import resolve_step

AVERAGE_FILE = "edgeprune_average.pt"


class WeightAveragingCallback(TrainerCallback):
    """Average the trainable weights every `every` optimizer steps from step `start` (a float in [0, 1] is a
    fraction of the run) to the end; `swap_into(model)` then replaces the weights with that mean."""

    def __init__(self, start: int | float, every: int = 10):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.start = start
        self.every = every
        self.start_step: int | None = None
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}

    def resolve(self, total_steps: int) -> int:
        return resolve_step(self.start, total_steps)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start_step = self.resolve(state.max_steps)
        if state.global_step > 0:
            self._load(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step >= self.start_step and (step - self.start_step) % self.every == 0:
            self.add(model)

    @torch.no_grad()
    def add(self, model: torch.nn.Module) -> None:
        """One more snapshot into the running mean: mean += (w - mean) / n, exact for unchanged weights."""
        self.count += 1
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            if name not in self.mean:
                self.mean[name] = param.detach().to(torch.float32, copy=True)
            else:
                self.mean[name].add_(param.detach().float() - self.mean[name], alpha=1.0 / self.count)

    @torch.no_grad()
    def swap_into(self, model: torch.nn.Module) -> int:
        """Copy the mean into the model's weights; returns the number of snapshots it holds (0: unchanged)."""
        if self.count == 0:
            return 0
        params = dict(model.named_parameters())
        for name, value in self.mean.items():
            params[name].copy_(value.to(params[name].dtype))
        return self.count

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            torch.save({"count": self.count, "start_step": self.start_step, "every": self.every,
                        "mean": self.mean}, folder / AVERAGE_FILE)

    def _load(self, folder: Path, step: int) -> None:
        path = folder / AVERAGE_FILE
        if not path.is_file():
            if step <= self.start_step:
                return  # saved before averaging began: nothing to restore
            raise CheckpointError(f"resuming at step {step} but {folder} has no weight average; the snapshots "
                                  f"taken since step {self.start_step} would be lost",
                                  "resume from a checkpoint saved with training.average_from set, or train "
                                  "again without --resume")
        saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        if saved["start_step"] != self.start_step or saved["every"] != self.every:
            raise CheckpointError(f"the weight average in {folder} began at step {saved['start_step']} every "
                                  f"{saved['every']} steps, not {self.start_step} every {self.every}",
                                  "resume with the recipe that wrote it")
        self.count, self.mean = int(saved["count"]), dict(saved["mean"])
