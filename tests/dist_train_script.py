"""Run by test_distributed under torchrun: train on every rank, record each rank's masks."""

import hashlib
import json
import os
import sys
from pathlib import Path

import yaml

from edgeprune.callback import GradualPruningCallback
from edgeprune.recipe import recipe_from_dict
from edgeprune.train import train

recipe_path, out_dir, record_dir = map(Path, sys.argv[1:4])


def record(self, args, state, control, **kwargs):
    h = hashlib.sha256()
    for name in sorted(self.pruner.masks):
        h.update(name.encode())
        h.update(self.pruner.masks[name].to("cpu").numpy().tobytes())
    rank = int(os.environ.get("RANK", "0"))
    (record_dir / f"rank{rank}.json").write_text(json.dumps(
        {"masks": h.hexdigest(), "world": int(os.environ.get("WORLD_SIZE", "1")),
         "history": self.pruner.history}))


GradualPruningCallback.on_train_end = record
train(recipe_from_dict(yaml.safe_load(recipe_path.read_text())), out_dir, progress=False)
