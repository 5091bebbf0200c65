"""Two CPU processes (gloo) under torchrun: identical masks on every rank, only rank 0 writes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import tiny_recipe_dict
from edgeprune.checkpoint import read_pruning_state


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_end_with_identical_masks_and_one_writer(tiny_model_dir, tiny_data_dir, tmp_path):
    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    raw["pruning"][0]["score"] = "taylor"  # gradient-based scores: the case most likely to drift
    raw["pruning"][2]["end"] = 6  # 2 ranks halve the steps of one epoch
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    out, records = tmp_path / "ck", tmp_path / "records"
    records.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={_free_port()}", str(Path(__file__).with_name("dist_train_script.py")),
         str(recipe), str(out), str(records)],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["masks"] == ranks[1]["masks"]
    assert ranks[0]["history"] == ranks[1]["history"] and ranks[0]["history"]
    state = read_pruning_state(out)
    assert state.step == 6  # 96 examples, batch 8 per rank, 2 ranks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "recipe.yaml", "records"]  # no stray work dir
