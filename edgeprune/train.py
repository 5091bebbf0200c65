"""The train stage: a recipe in, a pruned checkpoint out, on the plain Hugging Face Trainer.

Multi-GPU and multi-node come from torchrun/accelerate launching this same code; nothing here is
distributed-specific beyond "only rank 0 writes". Intermediate Trainer checkpoints live in a hidden work
folder beside the output (`.NAME.work`), which `--resume` continues from; the output folder itself appears
only when the run is complete (atomic rename), so a killed run never leaves a half checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .atomic import atomic_dir, check_output_free
from .checkpoint import PruningState, save_checkpoint
from .errors import CheckpointError, OutputExistsError, RecipeError
from .recipe import DENSE_TEACHER, Recipe

WORK_RECIPE = "edgeprune_recipe.json"
# TrainingArguments that the checkpoint layout, resume and the pruner depend on: not user-settable
RESERVED_TRAINING_KEYS = {
    "output_dir": "Trainer checkpoints live in the hidden work folder beside -o, which --resume reads",
    "save_strategy": "resume needs step checkpoints; set training.save_steps instead",
    "load_best_model_at_end": "it would restore weights from an earlier step than the final masks",
    "use_cpu": "chosen from the host so torchrun on a CPU host really runs DDP",
    "num_train_epochs": "set training.epochs", "max_steps": "set training.max_steps",
    "per_device_train_batch_size": "set training.batch_size", "learning_rate": "set training.learning_rate",
}


def work_dir_for(out_dir: Path) -> Path:
    out_dir = Path(out_dir).resolve()
    return out_dir.parent / f".{out_dir.name}.work"


def training_arguments(recipe: Recipe, output_dir: Path, progress: bool = True):
    """Map the recipe's training block onto TrainingArguments (extra keys pass through, checked)."""
    from transformers import TrainingArguments

    t = recipe.training
    valid = {f.name for f in dataclasses.fields(TrainingArguments)}
    for key in t.extra:
        if key in RESERVED_TRAINING_KEYS:
            raise RecipeError(f"recipe field training.{key} is managed by edgeprune "
                              f"({RESERVED_TRAINING_KEYS[key]})", f"remove training.{key} from the recipe")
        if key not in valid:
            import difflib

            close = difflib.get_close_matches(key, sorted(valid), n=1)
            raise RecipeError(f"recipe field training.{key} is neither an edgeprune training key nor a "
                              f"TrainingArguments field",
                              f"did you mean {close[0]!r}?" if close else "remove it")
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps is not None else -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        seed=t.seed,
        data_seed=t.seed,
        eval_strategy="epoch",
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        logging_steps=t.logging_steps,
        report_to=[],
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        # without it, torchrun on a CPU-only host silently trains N independent copies instead of DDP
        use_cpu=not _has_accelerator(),
    )
    kwargs.update(t.extra)
    try:
        return TrainingArguments(**kwargs)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"the training block is rejected by TrainingArguments ({str(exc).splitlines()[0]})",
                          "fix the named training field") from exc


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def estimated_steps(recipe: Recipe, n_train: int, world_size: int = 1) -> int:
    """Optimizer steps the Trainer will run, to resolve fractional start/end before it starts."""
    t = recipe.training
    if t.max_steps is not None:
        return t.max_steps
    per_epoch = math.ceil(n_train / (t.batch_size * max(1, world_size)))
    return max(1, math.ceil(per_epoch / t.gradient_accumulation_steps * t.epochs))


def accuracy_metric(eval_pred) -> dict[str, float]:
    import numpy as np

    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def build_trainer(recipe: Recipe, args, model, tokenizer, train_ds, eval_ds, callbacks: Sequence, teacher=None,
                  source_depth: int | None = None, extra_teachers: Sequence = (), soft_targets: bool = False):
    from transformers import DataCollatorWithPadding, Trainer

    from .distill import DistillationTrainer

    common = dict(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                  processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
                  compute_metrics=accuracy_metric, callbacks=list(callbacks))
    if teacher is not None or soft_targets:
        d = recipe.distillation
        return DistillationTrainer(teacher=teacher, alpha=d.alpha, temperature=d.temperature,
                                   hidden_weight=d.hidden_weight, extra_teachers=extra_teachers,
                                   soft_weight=d.soft_teacher.weight if soft_targets and d.soft_teacher else 1.0,
                                   layer_map=None if teacher is None else layer_map(recipe, teacher, source_depth or 0),
                                   **common)
    return Trainer(**common)


def check_kept_layers(recipe: Recipe) -> None:
    """A `layers` cut names layers the recipe's model has (read from its config alone, no weights)."""
    keep = recipe.kept_layers()
    if keep is None:
        return
    from transformers import AutoConfig

    from .depth import config_depth
    from .models import resolve_model_path

    folder = Path(resolve_model_path(recipe.model))
    if not folder.is_dir():
        return  # a hub id: checked by keep_encoder_layers once the model is loaded
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError):
        return  # unreadable here: load_classifier reports it with its own message
    depth = config_depth(config)
    index = next(i for i, m in enumerate(recipe.pruning) if m.kind == "layers")
    if depth is not None and max(keep) >= depth:
        raise RecipeError(f"recipe field pruning.{index}.keep names layer {max(keep)}, but {recipe.model} has "
                          f"{depth} encoder layers (0..{depth - 1})",
                          f"keep layer indices between 0 and {depth - 1}")


def layer_map(recipe: Recipe, teacher, source_depth: int) -> list[int] | None:
    """Which teacher layer each student layer distils from: the layer it was copied from when the student
    was cut from a model as deep as the teacher (the teacher's own weights with `init_student`), else None
    (relative depth): a kept index of a 6-layer source means nothing in a 12-layer teacher."""
    from .layout import encoder_layout

    keep = recipe.kept_layers()
    if keep is None or source_depth != len(encoder_layout(teacher)):
        return None
    return keep


def train(recipe: Recipe, out_dir: Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True, extra_callbacks: Sequence = (),
          report: Callable[[str], None] | None = None) -> Path:
    """Fine-tune with the recipe's pruning and write the checkpoint to `out_dir`; returns `out_dir`."""
    from transformers.utils import logging as hf_logging

    from .callback import GradualPruningCallback
    from .data import load_examples, tokenize
    from .depth import keep_encoder_layers
    from .distill import load_teacher
    from .layout import encoder_layout
    from .models import load_classifier
    from .pruner import Pruner

    say = report or (lambda line: print(line, file=sys.stderr, flush=True))
    out_dir = Path(out_dir).resolve()
    work = work_dir_for(out_dir)
    check_output_free(out_dir, overwrite)
    last = None
    if resume:
        last = last_resumable_checkpoint(work, needs_pruner=bool(recipe.pruning))
        if last is None:
            raise CheckpointError(f"there is no interrupted run of {out_dir} to resume (no checkpoint in {work})",
                                  "run without --resume to start training")
        saved = json.loads((work / WORK_RECIPE).read_text()) if (work / WORK_RECIPE).is_file() else {}
        if saved.get("sha256") != recipe.sha256():
            raise CheckpointError(f"the interrupted run in {work} used a different recipe",
                                  "resume with the same recipe and --set values, or --overwrite to start over")
    elif work.exists() and not overwrite:
        raise OutputExistsError(f"an interrupted run of {out_dir} left {work}",
                                "pass --resume to continue it, or --overwrite to start over")

    data = load_examples(recipe.data, seed=recipe.training.seed)
    check_kept_layers(recipe)  # before a dense teacher spends its minutes
    soft_logits, soft_manifest = _soft_targets(recipe, data, out_dir, progress, say)
    teacher_path, extra_paths = recipe.distillation.teacher, []
    if teacher_path == DENSE_TEACHER:
        teacher_path, *extra_paths = [
            str(ensure_dense_teacher(dense, teacher_dir_for(out_dir, i), progress, say,
                                     "the dense reference" if i == 0 else f"ensemble teacher {i + 1}"))
            for i, dense in enumerate(recipe.dense_teachers())]
    model, tokenizer = load_classifier(teacher_path if recipe.distillation.init_student else recipe.model,
                                       data.labels, pooling=recipe.training.pooling)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and recipe.data.max_length > limit:
        raise RecipeError(f"recipe field data.max_length is {recipe.data.max_length}, beyond the "
                          f"{limit} positions of model {recipe.model}", f"set data.max_length <= {limit}")
    swapper = _word_swapper(recipe, model, tokenizer, say)  # from the fp32 table, before any snapping
    source_depth, keep = len(encoder_layout(model)), recipe.kept_layers()
    if keep is not None:
        dropped = keep_encoder_layers(model, keep)
        say(f"layers: kept encoder layers {keep} of {source_depth}" + (f", dropped {dropped}" if dropped else ""))
    if recipe.training.embeddings == "int4":
        from .int4 import BLOCK_SIZE, snap_and_freeze_word_embeddings

        change = snap_and_freeze_word_embeddings(model)
        say(f"embeddings: word table snapped to 4-bit blocks of {BLOCK_SIZE} (largest change {change:.2e}) "
            "and frozen")
    if recipe.training.quantize != "none":
        from .fake_int8 import Int8Aware

        int8 = Int8Aware(model, recipe.training.quantize,
                         word_table="int4" if recipe.training.embeddings == "int4" else "int8")
        say(f"int8-aware: {len(int8.linears)} matrices and {len(int8.tables)} embedding tables train through "
            f"{recipe.training.quantize} rounding (dev accuracy below is the int8 model's)")
    teacher = load_teacher(teacher_path, model.config) if teacher_path else None
    extra_teachers = [load_teacher(p, model.config) for p in extra_paths]
    args = training_arguments(recipe, work, progress)
    total = estimated_steps(recipe, len(data.train.texts), args.world_size)
    averaging = _weight_averaging(recipe, Pruner(model, recipe.pruning, total), total)  # fail early
    dist = args.distributed_state  # set up by args.world_size above; one rank of N under torchrun
    if dist.is_main_process:
        if not resume and work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        (work / WORK_RECIPE).write_text(json.dumps({"sha256": recipe.sha256(), "recipe": recipe.to_dict()}))
    dist.wait_for_everyone()

    max_length = recipe.data.max_length
    train_ds = tokenize(data.train, data.ids(data.train), tokenizer, max_length)
    eval_ds = tokenize(data.eval, data.ids(data.eval), tokenizer, max_length)
    if soft_logits is not None:
        from .soft_teacher import SOFT_TARGETS

        train_ds = train_ds.add_column(SOFT_TARGETS, soft_logits.tolist())
    if swapper is not None:
        from .augment import AugmentedDataset

        train_ds = AugmentedDataset(train_ds, swapper, recipe.distillation.augment)

    def on_eval(entry: dict[str, Any]) -> None:
        acc = entry["accuracy"]
        say(f"epoch {entry['epoch']:.2f} step {entry['step']}: dev accuracy "
            f"{'n/a' if acc is None else f'{acc:.4f}'}, sparsity {entry['sparsity']:.4f}")

    callback = GradualPruningCallback(recipe.pruning, on_evaluate=on_eval)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    try:
        trainer = build_trainer(recipe, args, model, tokenizer, train_ds, eval_ds,
                                [callback, *([averaging] if averaging else []), *extra_callbacks],
                                teacher=teacher, source_depth=source_depth, extra_teachers=extra_teachers,
                                soft_targets=soft_logits is not None)
        result = trainer.train(resume_from_checkpoint=last)
        done = callback.evaluations[-1] if callback.evaluations else None
        if done is None or done["step"] != trainer.state.global_step:
            callback.evaluations.append({**_final_eval(trainer, callback), "final": True})
        last_weights = callback.evaluations[-1]
        averaged = _swap_in_average(trainer, callback, averaging, last_weights, say) if averaging else None
        final = callback.evaluations[-1]
    finally:
        hf_logging.set_verbosity(verbosity)

    pruner = callback.pruner
    sparsity = pruner.report()
    state = PruningState(
        recipe=recipe.to_dict(), recipe_sha256=recipe.sha256(), step=trainer.state.global_step,
        total_steps=trainer.state.max_steps, global_sparsity=sparsity["global"],
        per_layer_sparsity=sparsity["per_layer"], heads_pruned=sparsity["heads_pruned"],
        neurons_pruned=sparsity["neurons_pruned"], nm=sparsity["nm"], history=pruner.history,
        metrics={"eval_accuracy": final["accuracy"],
                 **_teacher_accuracy(trainer, tokenizer, data, max_length, [teacher_path, *extra_paths]),
                 **({"soft_teacher": {"dev_accuracy": soft_manifest["dev_accuracy"], "model": soft_manifest["model"],
                                      "train_accuracy": soft_manifest["train_accuracy"]}} if soft_manifest else {}),
                 **({"average": {"from_step": averaging.start_step, "every": averaging.every,
                                 "snapshots": averaged, "last_weights_accuracy": last_weights["accuracy"]}}
                    if averaging else {}),
                 "train_loss": result.training_loss, "train_examples": len(data.train.texts),
                 "eval_examples": len(data.eval.texts), "evaluations": callback.evaluations},
        max_length=max_length, labels=list(data.labels), raw_labels=list(data.raw_labels),
        layers_kept=keep if keep is not None else list(range(source_depth)), source_layers=source_depth,
    )
    if trainer.is_world_process_zero():
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            save_checkpoint(tmp, trainer.model, tokenizer, pruner.masks, state)
        shutil.rmtree(work, ignore_errors=True)
        say(f"checkpoint {out_dir}: dev accuracy {state.metrics['eval_accuracy']:.4f}, "
            f"global sparsity {state.global_sparsity:.4f} after {state.step} steps")
    dist.wait_for_everyone()
    return out_dir


def _soft_targets(recipe: Recipe, data, out_dir: Path, progress: bool, say: Callable[[str], None]):
    """(logits per training example, manifest) of the recipe's soft teacher, built or reused in
    CHECKPOINT.soft-teacher, or (None, None) without one."""
    cfg = recipe.distillation.soft_teacher
    if cfg is None:
        return None, None
    from .models import resolve_model_path
    from .soft_teacher import ensure_soft_teacher, soft_teacher_dir_for

    resolve_model_path(cfg.model)  # a missing package or folder fails now, before any training
    folder = soft_teacher_dir_for(out_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from .soft_teacher import identity, read_cached, resolve_precision

        cached = read_cached(folder, identity(cfg, data, recipe.training.seed, recipe.data.max_length,
                                              resolve_precision(cfg.precision)))
        if cached is None:
            raise RecipeError(f"the soft teacher in {folder} is missing or stale, and this is one rank of a "
                              "distributed run (each rank would build it)",
                              "build it first with a single-process `edgeprune train` of the same recipe and -o "
                              "(interrupt it once the soft teacher is written), then launch torchrun")
        return cached
    return ensure_soft_teacher(cfg, data, folder, recipe.training.seed,
                               recipe.data.max_length, progress, say)


def _word_swapper(recipe: Recipe, model, tokenizer, say: Callable[[str], None]):
    """The student's word-swap augmenter when the recipe asks for one (edgeprune.augment), else None."""
    d = recipe.distillation
    if d.augment == 0:
        return None
    from .augment import NEIGHBOURS, WordSwapper

    swapper = WordSwapper.for_model(model, tokenizer, d.augment_words, recipe.training.seed)
    if not swapper.neighbours:
        raise RecipeError(f"recipe field distillation.augment is {d.augment}, but the tokenizer of {recipe.model} "
                          "has no whole-word entries to swap", "set distillation.augment to 0 for this model")
    say(f"augment: {d.augment:.0%} of drawn examples get {d.augment_words:.0%} of their whole words swapped for "
        f"one of {NEIGHBOURS} embedding neighbours ({len(swapper.neighbours)} words), labelled by the teacher")
    return swapper


def _weight_averaging(recipe: Recipe, pruner, total_steps: int):
    """The recipe's weight-averaging callback, or None; it may only start once every mask is final, else the
    mean would mix weights the pruner removes later with the zeros it leaves."""
    t = recipe.training
    if t.average_from is None:
        return None
    from .averaging import WeightAveragingCallback

    averaging = WeightAveragingCallback(t.average_from, t.average_every)
    start = averaging.resolve(total_steps)
    if start >= total_steps:
        raise RecipeError(f"recipe field training.average_from resolves to step {start}, but the run has only "
                          f"{total_steps} steps", "set it to a fraction such as 0.6, or a step before the end")
    ends = [(r.end, f"pruning.{r.index}") for r in pruner.modifiers if r.config.kind != "layers"]
    if ends and start < max(ends)[0]:
        end, where = max(ends)
        raise RecipeError(f"recipe field training.average_from resolves to step {start}, before {where} ends "
                          f"at step {end}", f"start averaging at or after step {end} (of {total_steps})")
    return averaging


def _swap_in_average(trainer, callback, averaging, last: dict[str, Any], say: Callable[[str], None]) -> int:
    """Replace the last step's weights with the running mean, keep the masks exact, and score the result:
    the last evaluation stays in the record, so what averaging bought is read off one run."""
    snapshots = averaging.swap_into(trainer.model)
    callback.pruner.apply()
    entry = _final_eval(trainer, callback)
    callback.evaluations.append({**entry, "final": True, "averaged": snapshots})
    say(f"average of {snapshots} snapshots from step {averaging.start_step}: dev accuracy "
        f"{_fmt(entry['accuracy'])} (last step's weights {_fmt(last['accuracy'])})")
    return snapshots


def _fmt(accuracy) -> str:
    return "n/a" if accuracy is None else f"{accuracy:.4f}"


def _final_eval(trainer, callback) -> dict[str, Any]:
    """Evaluate once more when training did not end on an epoch boundary (e.g. max_steps)."""
    metrics = trainer.evaluate()
    callback.evaluations.pop()  # on_evaluate logged it; it is re-added marked as final
    return {"epoch": trainer.state.epoch, "step": trainer.state.global_step,
            "accuracy": metrics.get("eval_accuracy"), "sparsity": round(callback.pruner.report()["global"], 4)}


def _teacher_accuracy(trainer, tokenizer, data, max_length: int, teacher_paths: list) -> dict[str, Any]:
    """The dense teacher's dev accuracy: the reference that gate's max_accuracy_drop is measured against
    (the first teacher: one fine-tuned model, not the ensemble the kiosk never runs). With an ensemble its
    accuracy is recorded too, as what the student was taught."""
    teacher = getattr(trainer, "teacher", None)
    if teacher is None:
        return {}
    from .evaluate import torch_accuracy

    texts, ids = data.eval.texts, data.ids(data.eval)
    found = {"dense_accuracy": torch_accuracy(teacher, tokenizer, texts, ids, max_length),
             "dense_accuracy_source": "distillation teacher", "dense_checkpoint": teacher_paths[0]}
    extra = getattr(trainer, "extra_teachers", [])
    if extra:
        found["ensemble_accuracy"] = torch_accuracy([teacher, *extra], tokenizer, texts, ids, max_length)
        found["ensemble_checkpoints"] = list(teacher_paths)
    return found


def teacher_dir_for(out_dir: Path, index: int = 0) -> Path:
    """CHECKPOINT.teacher for the dense reference, CHECKPOINT.teacher-2, -3, ... for further ensemble members."""
    out_dir = Path(out_dir).resolve()
    return out_dir.parent / (f"{out_dir.name}.teacher" + (f"-{index + 1}" if index else ""))


def ensure_dense_teacher(dense: Recipe, folder: Path, progress: bool, say: Callable[[str], None],
                         name: str = "the dense reference") -> Path:
    """Train (or reuse, or resume) the dense recipe `dense` (one of `Recipe.dense_teachers()`) in `folder`."""
    from .checkpoint import read_pruning_state

    if (folder / "pruning_state.json").is_file() and read_pruning_state(folder).recipe_sha256 == dense.sha256():
        say(f"teacher: reusing {name} in {folder}")
        return folder
    resume = can_resume(dense, folder)
    say(f"teacher: {'resuming' if resume else 'training'} {name} (seed {dense.training.seed}) into {folder}")
    return train(dense, folder, resume=resume, overwrite=True, progress=progress, report=say)


def can_resume(recipe: Recipe, out_dir: Path) -> bool:
    """Whether `out_dir` has an interrupted run of this very recipe to continue: a rerun after a killed
    session should not throw away the steps already paid for, nor resume someone else's recipe."""
    work = work_dir_for(out_dir)
    saved = json.loads((work / WORK_RECIPE).read_text()) if (work / WORK_RECIPE).is_file() else {}
    return (saved.get("sha256") == recipe.sha256()
            and last_resumable_checkpoint(work, needs_pruner=bool(recipe.pruning)) is not None)


def last_resumable_checkpoint(work: Path, needs_pruner: bool) -> str | None:
    """The newest Trainer checkpoint that is complete: a kill between the Trainer's save and the
    pruner's (or a rotated-away folder) must not resume with the masks silently lost."""
    from .pruner import STATE_JSON

    if not Path(work).is_dir():
        return None
    candidates = sorted((p for p in Path(work).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                        key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for folder in candidates:
        if (folder / "trainer_state.json").is_file() and (not needs_pruner or (folder / STATE_JSON).is_file()):
            return str(folder)
    return None
