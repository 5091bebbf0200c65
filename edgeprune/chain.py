"""`edgeprune run`: train -> convert -> bench -> gate into OUT/{checkpoint,bundle,report}, skipping every
stage whose output is already there and up to date.

Each stage's record lives in `OUT/.edgeprune-run/<stage>.json`: the sha256 of its inputs and the identity
of the output it produced. A stage is up to date when its output exists, the output's current identity is
the recorded one (nobody replaced or edited it), and the inputs hash the same as then:

- train:   the recipe (after --set overrides), the bytes of its local train/eval split files, of a local
           model folder and of a local teacher folder (file-tree hashes), the edgeprune version
                                                                   -> checkpoint: `checkpoint_identity`
- convert: the checkpoint's identity, the profile's CONVERT_FIELDS, the converter's version
                                                                          -> bundle: `bundle_digest`
- bench:   the bundle digest, the profile's measurement fields, the eval data file, the dense reference
           (the recipe's distillation teacher), this host, settings -> report: hash of report.json
Gate always runs (it is cheap and its budgets may have changed); the exit code is the gate's.

Records are kept beside the outputs, not inside them, so they never change a checkpoint's file tree
(which convert hashes) or a bundle's contents. A stage redone invalidates the stages after it through
their inputs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .atomic import atomic_write_text
from .errors import OutputExistsError
from .hashing import sha256_file, sha256_json, sha256_tree

RECORDS = ".edgeprune-run"
# the profile fields convert reads (format and quantization choice, warnings, the name in the manifest);
# it also reads the workload's batch size, the batch its recorded accuracy is scored in
CONVERT_FIELDS = ("name", "arch", "providers", "formats", "quantization", "min_gpu_capability", "vocabulary",
                  "embeddings")
STAGE_DIRS = {"train": "checkpoint", "convert": "bundle", "bench": "report"}


def checkpoint_identity(path: Path) -> str:
    """A checkpoint's identity: the hash of its file tree (every file's path, sha256 and size). Convert
    records it in the manifest as source.checkpoint_sha256."""
    return sha256_json(sha256_tree(path))


def folder_identity(spec: str | None) -> dict[str, Any]:
    """A model/teacher spec for up-to-date checks: a local folder by its file tree, anything else (a hub
    id, embedded:...) by its name."""
    if not spec:
        return {"spec": None}
    if Path(spec).is_dir():
        return {"folder": str(Path(spec).resolve()), "sha256": checkpoint_identity(Path(spec))}
    return {"spec": spec}


def bundle_identity(path: Path) -> str:
    from .runtime import bundle_digest, read_manifest

    return bundle_digest(read_manifest(path))


def report_identity(path: Path) -> str:
    return sha256_file(Path(path) / "report.json")


IDENTITIES: dict[str, Callable[[Path], str]] = {
    "train": checkpoint_identity, "convert": bundle_identity, "bench": report_identity,
}


def _train(recipe, out: Path) -> None:
    from .train import train

    train(recipe, out, overwrite=True)


def _convert(checkpoint: Path, out: Path, target) -> None:
    from .convert import convert_checkpoint

    convert_checkpoint(checkpoint, out, target=target, overwrite=True)


def _bench(bundle: Path, target, out: Path, data_dir: Path | None, settings, dense: Path | None = None) -> None:
    from .bench.benchmark import benchmark

    benchmark(bundle, target, out, data_dir=data_dir, dense_checkpoint=dense, overwrite=True, settings=settings)


# the stage functions, looked up at call time (tests swap in tiny ones)
STAGES: dict[str, Callable[..., None]] = {"train": _train, "convert": _convert, "bench": _bench}


@dataclass
class ChainResult:
    out: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    verdict: Any = None

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code if self.verdict is not None else 2


class Chain:
    def __init__(self, out: Path, force: bool, say: Callable[[str], None]):
        self.out = Path(out)
        self.force = force
        self.say = say
        self.records = self.out / RECORDS

    def path(self, stage: str) -> Path:
        return self.out / STAGE_DIRS[stage]

    def record(self, stage: str) -> dict[str, Any] | None:
        file = self.records / f"{stage}.json"
        try:
            return json.loads(file.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def up_to_date(self, stage: str, inputs: dict[str, Any]) -> tuple[bool, str]:
        if self.force:
            return False, "--overwrite"
        record = self.record(stage)
        output = self.path(stage)
        if record is None or not output.exists():
            return False, "no output yet"
        if record.get("inputs_sha256") != sha256_json(inputs):
            changed = sorted(k for k in inputs if record.get("inputs", {}).get(k) != inputs[k])
            return False, f"inputs changed ({', '.join(changed) or 'format'})"
        try:
            current = IDENTITIES[stage](output)
        except Exception as exc:  # noqa: BLE001 - an unreadable output is simply stale
            return False, f"output unreadable ({exc})"
        if current != record.get("output"):
            return False, "output was changed since it was made"
        return True, "up to date"

    def do(self, stage: str, inputs: dict[str, Any], work: Callable[[Path], None], result: ChainResult) -> str:
        fresh, why = self.up_to_date(stage, inputs)
        if fresh:
            self.say(f"run: {stage}: up to date, skipped")
            result.skipped.append(stage)
        else:
            self.say(f"run: {stage}: running ({why})")
            (self.records / f"{stage}.json").unlink(missing_ok=True)  # stale until the new output is whole
            work(self.path(stage))
            identity = IDENTITIES[stage](self.path(stage))
            atomic_write_text(self.records / f"{stage}.json", json.dumps(
                {"stage": stage, "inputs": inputs, "inputs_sha256": sha256_json(inputs), "output": identity},
                indent=2) + "\n")
            result.ran.append(stage)
        return self.record(stage)["output"]  # the output's identity: an input of the next stage


def _data_fingerprint(recipe: dict[str, Any], folder: Path | None) -> dict[str, Any]:
    """The eval split file bench will score on (the recipe's data.eval_split in `folder`), by content."""
    from .data_files import find_split
    from .eval_data import data_section

    if folder is None or not Path(folder).is_dir():
        return {"folder": str(folder) if folder else None}
    data = data_section(recipe)
    file = find_split(Path(folder), data.get("eval_split") or "dev")
    return {"file": str(file.resolve()), "sha256": sha256_file(file), "eval_limit": data.get("eval_limit")}


def dense_reference(checkpoint: Path, teacher: str | None) -> Path | None:
    """The dense model bench compares against: the teacher train used (recorded in the checkpoint's
    metrics.dense_checkpoint; `teacher: dense` trains one beside the checkpoint), else the recipe's teacher
    when it is a local folder. A hub teacher gives None: bench then uses the accuracy train recorded."""
    from .checkpoint import read_pruning_state
    from .errors import CheckpointError

    try:
        recorded = read_pruning_state(checkpoint).metrics.get("dense_checkpoint")
    except CheckpointError:
        recorded = None
    for candidate in (recorded, teacher):
        if isinstance(candidate, str) and candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def train_inputs(recipe) -> dict[str, Any]:
    """What a checkpoint depends on: the recipe, the data and model/teacher bytes, edgeprune's version."""
    from . import __version__
    from .eval_data import split_files

    recipe_dict = recipe.to_dict()
    return {
        "recipe_sha256": recipe.sha256(),
        "data": {split: {"file": str(f.resolve()), "sha256": sha256_file(f)}
                 for split, f in split_files(recipe_dict).items()},
        "model": folder_identity(recipe.model),
        "teacher": folder_identity(recipe.distillation.teacher),
        "edgeprune_version": __version__,
    }


def run_chain(recipe_path: Path, target: str, out: Path, *, overrides: list[str] = (), overwrite: bool = False,
              data_dir: Path | None = None, settings=None, say: Callable[[str], None] | None = None) -> ChainResult:
    from .bench.benchmark import BenchSettings
    from .commands.gate import gate_report_dir
    from .convert.bundle import CONVERTER_VERSION
    from .gate import MEASUREMENT_FIELDS
    from .host import detect_host
    from .recipe import load_recipe
    from .targets import resolve_target

    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    recipe = load_recipe(recipe_path, list(overrides))
    profile = resolve_target(target)
    settings = settings or BenchSettings()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / RECORDS).is_dir() and not overwrite:
        raise OutputExistsError(f"{out} exists and was not made by `edgeprune run`",
                                "choose another -o folder, or pass --overwrite to replace what is there")
    chain = Chain(out, overwrite, say)
    chain.records.mkdir(parents=True, exist_ok=True)
    result = ChainResult(out)

    checkpoint_id = chain.do("train", train_inputs(recipe), lambda dest: STAGES["train"](recipe, dest), result)
    profile_dict = profile.to_dict()
    convert_target = {**{k: profile_dict[k] for k in CONVERT_FIELDS},  # budgets and threads never change a bundle
                      "score_batch": profile.workload.batch_size}
    bundle_id = chain.do("convert", {"checkpoint": checkpoint_id, "target": convert_target,
                                     "format": None, "quantize": None, "converter": CONVERTER_VERSION},
                         lambda dest: STAGES["convert"](chain.path("train"), dest, profile), result)
    local_data = data_dir or (Path(recipe.data.path) if Path(recipe.data.path).is_dir() else None)
    dense = dense_reference(chain.path("train"), recipe.distillation.teacher)
    bench_inputs = {
        "bundle": bundle_id,
        "target": {"name": profile.name, **{k: profile_dict[k] for k in MEASUREMENT_FIELDS}},
        "data": _data_fingerprint(recipe.to_dict(), local_data),
        "dense_reference": folder_identity(str(dense) if dense else None),
        "host": detect_host().host_id,
        "settings": {"runs": settings.runs, "warmup": settings.warmup, "eval_limit": settings.eval_limit,
                     "baselines": settings.baselines},
    }
    chain.do("bench", bench_inputs,
             lambda dest: STAGES["bench"](chain.path("convert"), profile, dest, data_dir, settings, dense), result)
    result.verdict = gate_report_dir(chain.path("bench"), profile, chain.path("convert"))
    return result
