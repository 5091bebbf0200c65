"""Recipes: the YAML that says which model, which data, how to train and how to prune.

A recipe is data, validated when it is built: an unknown key, a wrong type or an out-of-range value is a
`RecipeError` that names the field (`pruning.0.final_sparsity`) and the fix, never a crash deep inside
training. `--set a.b=v` overrides are applied to the raw mapping before validation, so they are checked
exactly like the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .errors import RecipeError
from .fake_int8 import MODES as TRAINING_QUANTIZE_MODES  # convert's int8 names, simulated in training
from .hashing import sha256_json
from .pooling import POOLINGS

EMBEDDED_MODELS = {"embedded:minilm-l6", "embedded:mpnet-base"}
DENSE_TEACHER = "dense"  # distillation.teacher keyword: train the dense reference first
SCHEDULES = ("cubic", "smoothstep", "linear", "exponential", "oneshot")
KINDS = ("magnitude", "nm", "heads", "neurons", "layers")
SCORES = ("magnitude", "taylor")

Number = Union[int, float]


@dataclass(frozen=True)
class DataConfig:
    """Text-classification data: a local folder (train/dev as tsv/csv/jsonl) or a hub dataset.

    `path` is a folder (relative paths resolve against the recipe file's folder) or a hub id, optionally
    with a subset after a colon (`nyu-mll/glue:sst2`).
    """

    path: str = "nyu-mll/glue:sst2"
    text_column: str = "sentence"
    label_column: str = "label"
    max_length: int = 64
    train_limit: int | None = None
    eval_limit: int | None = None
    train_split: str = "train"
    eval_split: str = "dev"
    label_names: list[str] | None = None

    def __post_init__(self):
        _check(self.max_length >= 8, "data.max_length", f"must be >= 8, got {self.max_length}")
        _check(self.max_length <= 4096, "data.max_length", f"must be <= 4096, got {self.max_length}")
        for name in ("train_limit", "eval_limit"):
            v = getattr(self, name)
            _check(v is None or v > 0, f"data.{name}", f"must be a positive integer or null, got {v}")
        _check(bool(self.path), "data.path", "is empty; set it to a local folder or a hub dataset id")


EMBEDDING_MODES = ("train", "int4")


@dataclass(frozen=True)
class TrainingConfig:
    """Mapped onto transformers.TrainingArguments; keys under `extra` pass through unchanged."""

    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: float = 5.0e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    gradient_accumulation_steps: int = 1
    seed: int = 42
    save_steps: int = 500
    logging_steps: int = 50
    # "train": the word embeddings train like every other weight. "int4": they are snapped once onto the
    # 4-bit grid convert stores them on (edgeprune.int4) and frozen, so the network learns around the
    # values the kiosk will hold instead of meeting the rounding after training (dense teachers: "train")
    embeddings: str = "train"
    # "none": fp32 training. "int8-dynamic[-per-channel]": every Linear computes with its weights and inputs
    # rounded exactly as convert's int8 of that name rounds them (edgeprune.fake_int8), so the student
    # learns weights that survive the bundle's int8 instead of meeting it after training (dense teachers: none)
    quantize: str = "none"
    # what the classification head reads: "cls", the first token (Hugging Face's BERT head), or "mean", the
    # masked mean of the last layer, the summary a sentence encoder such as the embedded MiniLM was trained
    # to produce (edgeprune.pooling). Dense teachers share it: it is the model, not a training trick
    pooling: str = "cls"
    # null: the checkpoint holds the last step's weights. A step, or a fraction of the run: it holds the
    # uniform mean of the weights taken every `average_every` optimizer steps from there to the end
    # (edgeprune.averaging). It must start after pruning has ended. The student's alone: the dense teachers
    # and the dense reference take distillation.teacher_average_from
    average_from: Optional[Number] = None
    average_every: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        _check(self.epochs > 0, "training.epochs", f"must be > 0, got {self.epochs}")
        _check(self.max_steps is None or self.max_steps > 0, "training.max_steps", "must be > 0 or null")
        _check(self.batch_size >= 1, "training.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.eval_batch_size >= 1, "training.eval_batch_size", "must be >= 1")
        _check(0 < self.learning_rate < 1, "training.learning_rate", f"must be in (0, 1), got {self.learning_rate}")
        _check(0 <= self.warmup_ratio < 1, "training.warmup_ratio", "must be in [0, 1)")
        _check(self.weight_decay >= 0, "training.weight_decay", "must be >= 0")
        _check(self.gradient_accumulation_steps >= 1, "training.gradient_accumulation_steps", "must be >= 1")
        _check(self.save_steps >= 1, "training.save_steps", "must be >= 1")
        _check(self.logging_steps >= 1, "training.logging_steps", "must be >= 1")
        _check_choice(self.embeddings, EMBEDDING_MODES, "training.embeddings")
        _check_choice(self.quantize, TRAINING_QUANTIZE_MODES, "training.quantize")
        _check_choice(self.pooling, POOLINGS, "training.pooling")
        _check_average_from(self.average_from, "training.average_from")
        _check(self.average_every >= 1, "training.average_every", f"must be >= 1, got {self.average_every}")


def _check_average_from(value, where: str) -> None:
    if isinstance(value, float):
        _check(0.0 <= value < 1.0, where, f"a float is a fraction of total steps and must be in [0, 1), got {value}; "
               "write an integer for a step number")
    elif value is not None:
        _check(value >= 0, where, f"a step number must be >= 0, got {value}")


@dataclass(frozen=True)
class ModifierConfig:
    """One pruning modifier; several in a recipe apply together (their masks are combined).

    `start`/`end`: a float in [0, 1] is a fraction of the total optimizer steps, an int is a step.
    Structured kinds (`heads`, `neurons`) count whole heads/neurons; `magnitude` counts weights still
    alive after them ("magnitude on what is left"). `layers` keeps only the encoder layers listed in
    `keep` (0-based indices of the source model): the cut happens once, before training starts, because
    a layer's fixed cost (attention, norms, activation quantization) is what dominates at kiosk lengths
    and no mask can remove it; its schedule keys do not apply.
    """

    kind: str = "magnitude"
    schedule: str = "cubic"
    initial_sparsity: float = 0.0
    final_sparsity: float = 0.5
    start: Number = 0.1
    end: Number = 0.7
    frequency: int = 100
    scope: str = "global"
    params: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    n: int = 2
    m: int = 4
    score: str = "magnitude"
    min_per_layer: int = 1
    sparsity_overrides: dict[str, float] = field(default_factory=dict)
    keep: list[int] | None = None

    def validate(self, where: str) -> None:
        _check_choice(self.kind, KINDS, f"{where}.kind")
        _check_choice(self.schedule, SCHEDULES, f"{where}.schedule")
        _check_choice(self.scope, ("global", "local"), f"{where}.scope")
        _check_choice(self.score, SCORES, f"{where}.score")
        for name in ("initial_sparsity", "final_sparsity"):
            v = getattr(self, name)
            _check(0.0 <= v < 1.0, f"{where}.{name}", f"must be in [0, 1), got {v}")
        _check(self.initial_sparsity <= self.final_sparsity, f"{where}.initial_sparsity",
               f"must be <= final_sparsity ({self.final_sparsity}), got {self.initial_sparsity}")
        for name in ("start", "end"):
            v = getattr(self, name)
            if isinstance(v, float):
                _check(0.0 <= v <= 1.0, f"{where}.{name}",
                       f"a float is a fraction of total steps and must be in [0, 1], got {v}; "
                       "write an integer for a step number")
            else:
                _check(v >= 0, f"{where}.{name}", f"a step number must be >= 0, got {v}")
        if type(self.start) is type(self.end):
            _check(self.start <= self.end, f"{where}.start", f"must be <= end ({self.end}), got {self.start}")
        _check(self.frequency >= 1, f"{where}.frequency", f"must be >= 1, got {self.frequency}")
        _check(1 <= self.n < self.m <= 32, f"{where}.n", f"need 1 <= n < m <= 32, got n={self.n} m={self.m}")
        _check(self.min_per_layer >= 0, f"{where}.min_per_layer", "must be >= 0")
        for pattern, v in self.sparsity_overrides.items():
            _check(0.0 <= v < 1.0, f"{where}.sparsity_overrides.{pattern}", f"must be in [0, 1), got {v}")
        if self.sparsity_overrides:
            _check(self.kind == "magnitude", f"{where}.sparsity_overrides", "only applies to kind: magnitude")
        if self.kind == "layers":
            _check(bool(self.keep), f"{where}.keep",
                   "is needed for kind: layers: list the encoder layers to keep, e.g. [0, 2, 4]")
            _check(all(i >= 0 for i in self.keep), f"{where}.keep", f"must hold layer indices >= 0, got {self.keep}")
            _check(list(self.keep) == sorted(set(self.keep)), f"{where}.keep",
                   f"must list distinct layers in ascending order, got {self.keep}")
            _check(not self.params and not self.ignore, f"{where}.params",
                   "does not apply to kind: layers (keep says which layers stay)")
        else:
            _check(self.keep is None, f"{where}.keep", f"only applies to kind: layers, not {self.kind}")
        for p in [*self.params, *self.ignore, *self.sparsity_overrides]:
            if p.startswith("re:"):
                try:
                    re.compile(p[3:])
                except re.error as exc:
                    raise RecipeError(f"{where}: pattern {p!r} is not a valid regex ({exc})",
                                      "fix the regular expression after 're:'") from exc


@dataclass(frozen=True)
class SoftTeacherConfig:
    """A larger classifier of any family and tokenizer that teaches the student through its logits alone.

    The dense teacher is the student's own architecture (it seeds the student and its layers are the
    hidden-state targets), so it cannot be much better than the student's family allows; a wider, deeper
    model can. Its forward pass costs several student steps, so it runs once: fine-tuned on `fine_tune`
    examples of the training split (a seeded subset: its minutes are spent here, not on the whole split),
    then it labels every training example, and the student reads those logits as its soft target
    (edgeprune.soft_teacher). `fine_tune: 0` takes `model` as already fine-tuned on these labels (the
    model the cloud runs today, say). Its tokenizer never meets the student's: only logits cross over.
    `precision: auto` fine-tunes and labels in bfloat16 autocast where the hardware computes it natively
    (AVX512-BF16 or AMX CPUs, CUDA 8.0+), else in float32: it halves the stage's minutes there and moves no
    prediction (measured on the MPNet teacher: 2.3x faster labelling, the same class for 640 of 640
    sentences, logits within 0.04), while emulated bfloat16 would be slower than float32.
    `weight` is its share of the soft target: 1 replaces the dense teacher's distribution, below 1 the
    student matches the mixture weight * p_soft + (1 - weight) * p_dense (needs distillation.teacher). A
    teacher fine-tuned on a subset disagrees with some labels of the rest, which the dense teacher, trained
    on all of them, does not; the mixture keeps the larger model's judgement without its misses. It only
    weighs the cached logits, so it is not part of the cache's identity.
    """

    model: str = ""
    fine_tune: int = 10000
    epochs: float = 1.0
    learning_rate: float = 3.0e-5
    batch_size: int = 32
    warmup_ratio: float = 0.1
    precision: str = "auto"
    weight: float = 1.0

    def __post_init__(self):
        _check(0.0 < self.weight <= 1.0, "distillation.soft_teacher.weight",
               f"must be in (0, 1] (1: the soft teacher alone), got {self.weight}")
        _check_choice(self.precision, ("auto", "float32", "bfloat16"), "distillation.soft_teacher.precision")
        _check(bool(self.model), "distillation.soft_teacher.model",
               "is empty; name a classifier (embedded:mpnet-base, a folder or a hub id)")
        _check(self.fine_tune >= 0, "distillation.soft_teacher.fine_tune",
               f"must be >= 0 (0: the model is already fine-tuned), got {self.fine_tune}")
        _check(self.epochs > 0, "distillation.soft_teacher.epochs", f"must be > 0, got {self.epochs}")
        _check(self.learning_rate > 0, "distillation.soft_teacher.learning_rate",
               f"must be > 0, got {self.learning_rate}")
        _check(self.batch_size >= 1, "distillation.soft_teacher.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(0.0 <= self.warmup_ratio < 1.0, "distillation.soft_teacher.warmup_ratio",
               f"must be in [0, 1), got {self.warmup_ratio}")


@dataclass(frozen=True)
class DistillationConfig:
    """Optional dense teacher: loss = alpha * KL(T) * T^2 + (1 - alpha) * cross-entropy
    + hidden_weight * MSE(student hidden states, teacher hidden states).

    `teacher: dense` builds the teacher first: the same recipe with no pruning and no distillation,
    trained into `CHECKPOINT.teacher` beside the output (reused while its recipe is unchanged). It is
    also the dense reference that bench and gate measure the accuracy drop against. `init_student`
    starts the student from the teacher's fine-tuned weights, so pruning begins from a converged model.
    `hidden_weight` adds layer-wise distillation (TinyBERT, CoFi): head and neuron removal keeps the hidden
    size, so each student layer's output can be pulled towards the teacher's; with `init_student` that
    loss starts at zero and holds every layer near the converged model while its parts are removed.
    `ensemble: N` (with `teacher: dense`) trains N dense teachers that differ only in their seed (seed,
    seed+1, ...) into `CHECKPOINT.teacher`, `CHECKPOINT.teacher-2`, ... and distils from their averaged
    softened distribution: fine-tuning runs that differ by a seed disagree on the hard sentences, and their
    average is a better target than any one of them. The first stays the dense reference, the student's
    initial weights and the target of `hidden_weight` (the layers the student was copied from). With
    `data.train_limit` the seed also draws each member's subset, so the members are bagged as well.
    `augment: p` rewrites each training example the student draws, with probability p, by swapping a share
    `augment_words` of its whole words for near neighbours in the model's word-embedding table
    (edgeprune.augment); the teacher labels the rewritten sentence and the hard-label loss skips it, so the
    student sees more sentences in the same number of steps (TinyBERT's augmentation, without its extra
    models). Dense teachers never augment.
    `teacher_average_from` is `training.average_from` for the dense teachers (and the dense reference): the
    two roles answer differently (measured on the kiosk recipe, averaging the teacher's last 40% gained 0.23
    points and averaging the student's lost 1.03), so each has its own switch.
    `soft_teacher` (SoftTeacherConfig) replaces the dense teachers' logits in the soft target with a larger
    model's (or, with its `weight` below 1, is mixed with them), cached once per training example; the dense
    teacher, when there is one, still seeds the student
    and gives the hidden-state targets, and stays the dense reference.
    """

    teacher: str | None = None
    alpha: float = 0.5
    temperature: float = 2.0
    init_student: bool = False
    hidden_weight: float = 0.0
    ensemble: int = 1
    augment: float = 0.0
    augment_words: float = 0.3
    teacher_average_from: Optional[Number] = None
    soft_teacher: Optional[SoftTeacherConfig] = None

    def __post_init__(self):
        _check(self.soft_teacher is None or self.augment == 0, "distillation.augment",
               "cannot be combined with distillation.soft_teacher (its logits are cached per training example, "
               "and a rewritten sentence has none); set augment to 0")
        _check(self.soft_teacher is None or self.ensemble == 1, "distillation.ensemble",
               "cannot be combined with distillation.soft_teacher (it replaces the teachers' logits); set it to 1")
        _check(self.soft_teacher is None or self.soft_teacher.weight == 1.0 or bool(self.teacher),
               "distillation.soft_teacher.weight",
               "below 1 mixes the soft teacher with distillation.teacher, and there is none; set teacher: dense "
               "or weight: 1")
        _check(not self.init_student or bool(self.teacher), "distillation.init_student",
               "needs distillation.teacher (e.g. teacher: dense)")
        _check(0.0 <= self.alpha <= 1.0, "distillation.alpha", f"must be in [0, 1], got {self.alpha}")
        _check(self.temperature > 0, "distillation.temperature", f"must be > 0, got {self.temperature}")
        _check(self.hidden_weight >= 0, "distillation.hidden_weight", f"must be >= 0, got {self.hidden_weight}")
        _check(self.hidden_weight == 0 or bool(self.teacher), "distillation.hidden_weight",
               "needs distillation.teacher (e.g. teacher: dense)")
        _check(self.ensemble >= 1, "distillation.ensemble", f"must be an integer >= 1, got {self.ensemble}")
        _check(self.ensemble == 1 or self.teacher == DENSE_TEACHER, "distillation.ensemble",
               "needs distillation.teacher: dense (the ensemble is the dense reference trained at N seeds)")
        _check(0.0 <= self.augment <= 1.0, "distillation.augment", f"must be in [0, 1], got {self.augment}")
        _check(self.augment == 0 or bool(self.teacher), "distillation.augment",
               "needs distillation.teacher (a rewritten sentence is labelled by the teacher)")
        _check(0.0 < self.augment_words <= 1.0, "distillation.augment_words",
               f"must be in (0, 1], got {self.augment_words}")
        _check_average_from(self.teacher_average_from, "distillation.teacher_average_from")


@dataclass(frozen=True)
class Recipe:
    model: str = "embedded:minilm-l6"
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    pruning: list[ModifierConfig] = field(default_factory=list)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    source: str | None = None  # the file it came from, for messages; not part of its identity

    def __post_init__(self):
        _check(bool(self.model), "model", "is empty; set embedded:minilm-l6, a local folder or a hub id")
        for i, mod in enumerate(self.pruning):
            mod.validate(f"pruning.{i}")
        depth = [i for i, m in enumerate(self.pruning) if m.kind == "layers"]
        _check(len(depth) <= 1, f"pruning.{depth[-1] if depth else 0}.kind",
               "is a second 'layers' modifier; keep one list of layers")

    def kept_layers(self) -> list[int] | None:
        """The encoder layers a `layers` modifier keeps (source-model indices), or None for full depth."""
        return next((list(m.keep) for m in self.pruning if m.kind == "layers"), None)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        for mod in d["pruning"]:
            if mod.get("keep") is None:  # absent unless set: recipes from before `layers` keep their hash
                mod.pop("keep", None)
        if d["training"].get("embeddings") == "train":  # likewise for recipes from before `embeddings`
            d["training"].pop("embeddings")
        if d["training"].get("quantize") == "none":  # and from before `quantize`
            d["training"].pop("quantize")
        if d["training"].get("pooling") == "cls":  # and from before `pooling`
            d["training"].pop("pooling")
        if d["training"].get("average_from") is None:  # and from before `average_from`
            d["training"].pop("average_from")
            if d["training"].get("average_every") == 10:
                d["training"].pop("average_every")
        if d["distillation"].get("ensemble") == 1:  # and from before `ensemble`
            d["distillation"].pop("ensemble")
        if d["distillation"].get("augment") == 0.0:  # and from before `augment`
            d["distillation"].pop("augment")
            if d["distillation"].get("augment_words") == 0.3:
                d["distillation"].pop("augment_words")
        if d["distillation"].get("teacher_average_from") is None:  # and from before `teacher_average_from`
            d["distillation"].pop("teacher_average_from")
        if d["distillation"].get("soft_teacher") is None:  # and from before `soft_teacher`
            d["distillation"].pop("soft_teacher")
        elif d["distillation"]["soft_teacher"].get("weight") == 1.0:  # and from before its `weight`
            d["distillation"]["soft_teacher"].pop("weight")
        return d

    def sha256(self) -> str:
        return sha256_json(self.to_dict())

    def without_pruning(self) -> "Recipe":
        return dataclasses.replace(self, pruning=[])

    def dense_reference(self) -> "Recipe":
        """The same model, data and training budget with no pruning, no teacher, trained embeddings and
        fp32 training, averaged as `distillation.teacher_average_from` says: the model the cloud runs today."""
        return dataclasses.replace(self, pruning=[], distillation=DistillationConfig(),
                                   training=dataclasses.replace(self.training, embeddings="train", quantize="none",
                                                                average_from=self.distillation.teacher_average_from))

    def dense_teachers(self) -> list["Recipe"]:
        """What `teacher: dense` trains: the dense reference, then one more per ensemble member at the next seed."""
        dense = self.dense_reference()
        return [dense] + [dataclasses.replace(dense, training=dataclasses.replace(dense.training,
                                                                                 seed=dense.training.seed + i))
                          for i in range(1, self.distillation.ensemble)]


# --- building from YAML / mappings -------------------------------------------------------------------

def load_recipe(path: str | Path, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read a YAML recipe, apply `key.path=value` overrides, validate, resolve local paths."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist", "pass the path of a recipe YAML file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path} is not valid YAML ({str(exc).splitlines()[0]})",
                          "fix the YAML syntax") from exc
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a mapping at the top level", "see recipes/example.yaml")
    for item in overrides:
        apply_override(raw, item)
    return recipe_from_dict(raw, base_dir=path.parent, source=str(path))


def recipe_from_dict(raw: dict[str, Any], base_dir: Path | None = None, source: str | None = None) -> Recipe:
    raw = dict(raw)
    data = _build(DataConfig, raw.pop("data", {}) or {}, "data")
    if base_dir is not None:
        data = dataclasses.replace(data, path=resolve_local(data.path, base_dir))
    model = raw.pop("model", Recipe.model)
    _check(isinstance(model, str), "model", f"must be a string, got {type(model).__name__}")
    if base_dir is not None:
        model = resolve_local(model, base_dir)
    pruning_raw = raw.pop("pruning", []) or []
    if isinstance(pruning_raw, dict):
        pruning_raw = [pruning_raw]
    _check(isinstance(pruning_raw, list), "pruning", "must be a list of modifiers")
    pruning = [_build(ModifierConfig, m, f"pruning.{i}") for i, m in enumerate(pruning_raw)]
    training = _build(TrainingConfig, raw.pop("training", {}) or {}, "training", extra_ok=True)
    distillation_raw = dict(raw.pop("distillation", {}) or {})
    soft_raw = distillation_raw.pop("soft_teacher", None)
    distillation = _build(DistillationConfig, distillation_raw, "distillation")
    if soft_raw is not None:
        soft = _build(SoftTeacherConfig, soft_raw, "distillation.soft_teacher")
        if base_dir is not None:
            soft = dataclasses.replace(soft, model=resolve_local(soft.model, base_dir))
        distillation = dataclasses.replace(distillation, soft_teacher=soft)
    if distillation.teacher and distillation.teacher != DENSE_TEACHER and base_dir is not None:
        distillation = dataclasses.replace(distillation, teacher=resolve_local(distillation.teacher, base_dir))
    if raw:
        _unknown(sorted(raw)[0], [f.name for f in dataclasses.fields(Recipe) if f.name != "source"], "")
    return Recipe(model=model, data=data, training=training, pruning=pruning,
                  distillation=distillation, source=source)


def resolve_local(value: str, base_dir: Path) -> str:
    """Make a relative local path absolute against the recipe's folder; leave hub ids alone."""
    if value.startswith("embedded:") or ":" in value and not value.startswith((".", "/")):
        return value
    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        candidate = (Path(base_dir) / candidate)
    if candidate.exists() or value.startswith((".", "/", "~")):
        return str(candidate.resolve())
    return value


def apply_override(raw: dict[str, Any], item: str) -> None:
    """`pruning.0.final_sparsity=0.8` -> raw["pruning"][0]["final_sparsity"] = 0.8 (value parsed as YAML)."""
    import yaml

    if "=" not in item:
        raise RecipeError(f"--set {item!r} has no '='", "write --set key.path=value, e.g. training.epochs=1")
    key, _, text = item.partition("=")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {key}: the value {text!r} is not valid YAML",
                          "quote strings and close brackets, e.g. --set 'pruning.0.params=[\"re:.*query\"]'") from exc
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(f"--set {key}: {where} is not an index of a {len(node)}-item list",
                                  f"use an index from 0 to {len(node) - 1}")
            idx = int(part)
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise RecipeError(f"--set {key}: {'.'.join(parts[:i])} is not a mapping or list",
                              "check the key path against the recipe")


# --- validation helpers ------------------------------------------------------------------------------

def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise RecipeError(f"recipe field {where} {message}", f"correct {where} in the recipe or its --set")


def _check_choice(value: str, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise RecipeError(f"recipe field {where} is {value!r}, not one of {', '.join(choices)}",
                          f"set {where} to one of: {', '.join(choices)}")


def _unknown(key: str, valid: list[str], prefix: str) -> None:
    where = f"{prefix}.{key}" if prefix else key
    close = difflib.get_close_matches(str(key), valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise RecipeError(f"recipe has an unknown key {where}",
                      f"{hint}valid keys here: {', '.join(valid)}")


def _build(cls, raw: Any, prefix: str, extra_ok: bool = False):
    """Construct dataclass `cls` from a mapping, checking keys and types field by field."""
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe field {prefix} must be a mapping, got {type(raw).__name__}",
                          f"write {prefix} as key: value pairs")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in names:
            if extra_ok:
                extra[key] = value
                continue
            _unknown(key, names, prefix)
        kwargs[key] = _coerce(value, hints[key], f"{prefix}.{key}")
    if extra:
        kwargs["extra"] = {**kwargs.get("extra", {}), **extra}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - fields are checked above
        raise RecipeError(f"recipe field {prefix}: {exc}", "check the recipe against recipes/example.yaml") from exc


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        # int before float so `start: 100` stays a step and `start: 0.1` a fraction
        for arg in sorted((a for a in args if a is not type(None)), key=lambda a: a is float):
            try:
                return _coerce(value, arg, where)
            except RecipeError as exc:
                errors.append(exc)
        raise errors[0]
    if hint is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"recipe field {where} must be a list, got {type(value).__name__}",
                              f"write {where} as a YAML list")
        return [_coerce(v, args[0], f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"recipe field {where} must be a mapping, got {type(value).__name__}",
                              f"write {where} as key: value pairs")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            return float(value)  # PyYAML reads 5e-5 (no dot) as a string; it is plainly a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(where, "a number", value)
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(where, "an integer", value)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _type_error(where, "a string", value)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _type_error(where, "true or false", value)
        return value
    return value


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_error(where: str, wanted: str, value: Any) -> RecipeError:
    return RecipeError(f"recipe field {where} must be {wanted}, got {value!r}",
                       f"set {where} to {wanted}")
