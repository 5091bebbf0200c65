"""What a conversion may do, resolved from --target/--format/--quantize before any heavy work.

The target profile says which forms pay off on the device; `--format` narrows or overrides that. A
form that cannot pay off on the target is allowed when asked for explicitly, with a warning that says
what it does buy (download size) and what it does not (RAM, latency).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import EdgepruneError
from .bundle import PAYS_OFF, SPEED_NOTE
from .quantize import MODES
from .verify import INT8_MAX_ACCURACY_DROP, INT8_MIN_LABEL_AGREEMENT

FORMAT_CHOICES = ("auto", "dense", "csr", "2:4", "coo")


class ConvertOptionError(EdgepruneError):
    """--format / --quantize asks for something convert cannot do."""


@dataclass(frozen=True)
class ConvertOptions:
    fmt: str                   # what was asked: auto | dense | csr | 2:4 | coo
    forms: tuple[str, ...]     # storage forms a tensor may take (dense always)
    quantize: str
    structured: bool
    target_name: str | None
    gpu: bool = False
    warnings: tuple[str, ...] = field(default=())
    int8_min_agreement: float = INT8_MIN_LABEL_AGREEMENT  # int8 verification: share of labels agreeing
    int8_max_drop: float = INT8_MAX_ACCURACY_DROP          # int8 verification: accuracy drop allowed
    vocabulary: str = "full"   # full | train (trim embeddings to the training split's tokens + characters)
    embeddings: str = "same"   # same (as the other weights) | int4 (4-bit blocks, see convert.embeddings)
    # dev accuracy is scored in batches of this many sentences: the target's workload batch size, because
    # dynamic int8 takes its activation scale over the whole batch, padding included, so a batch-1 kiosk
    # only gets the accuracy measured one sentence at a time; None: convert's own batches (no target)
    score_batch: int | None = None

    def describe(self) -> str:
        trimmed = ", trimmed vocabulary" if self.vocabulary == "train" else ""
        int4 = ", int4 embeddings" if self.embeddings == "int4" else ""
        return f"{'structured, ' if self.structured else ''}{'/'.join(self.forms)}, {self.quantize}{trimmed}{int4}"

    @property
    def approximate(self) -> bool:
        """int8, int4 embeddings and a trimmed vocabulary change outputs: verified by labels and accuracy."""
        return self.quantize != "none" or self.vocabulary == "train" or self.embeddings == "int4"

    def notes(self) -> list[str]:
        out = [SPEED_NOTE]
        out += [PAYS_OFF[f] for f in self.forms if f in PAYS_OFF]
        return out + list(self.warnings)


def _fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConvertOptionError(f"{name} must be a number in [0, 1], got {value!r}", f"pass {name} 0.05, say")
    return float(value)


VOCABULARY_CHOICES = ("full", "train")
EMBEDDINGS_CHOICES = ("same", "int4")


def resolve_options(target, fmt: str | None, quantize: str | None, structured: bool = True,
                    int8_min_agreement: float | None = None, int8_max_drop: float | None = None,
                    vocabulary: str | None = None, embeddings: str | None = None) -> ConvertOptions:
    """int8 / trimmed-vocabulary verification limits: as given, else the defaults in `verify`.

    They check that a conversion is sound, not the release budget: the target's max_accuracy_drop is
    measured from the dense reference by bench and judged by gate, where a miss is a verdict (exit 1),
    not a refused conversion (exit 2)."""
    if target is not None and isinstance(target, str):
        from ..targets import resolve_target

        target = resolve_target(target)
    min_agreement = _fraction("--int8-min-agreement", INT8_MIN_LABEL_AGREEMENT if int8_min_agreement is None
                              else int8_min_agreement)
    max_drop = _fraction("--int8-max-drop", INT8_MAX_ACCURACY_DROP if int8_max_drop is None else int8_max_drop)
    if fmt is not None and fmt not in FORMAT_CHOICES:
        raise ConvertOptionError(f"unknown format {fmt!r}", f"use one of: {', '.join(FORMAT_CHOICES)}")
    vocabulary = vocabulary or (getattr(target, "vocabulary", "full") if target is not None else "full")
    if vocabulary not in VOCABULARY_CHOICES:
        raise ConvertOptionError(f"unknown vocabulary {vocabulary!r}", f"use one of: {', '.join(VOCABULARY_CHOICES)}")
    embeddings = embeddings or (getattr(target, "embeddings", "same") if target is not None else "same")
    if embeddings not in EMBEDDINGS_CHOICES:
        raise ConvertOptionError(f"unknown embeddings mode {embeddings!r}",
                                 f"use one of: {', '.join(EMBEDDINGS_CHOICES)}")
    if quantize is not None and quantize not in MODES:
        raise ConvertOptionError(f"unknown quantization {quantize!r}", f"use one of: {', '.join(MODES)}")
    target_forms = tuple(f for f in (target.formats if target else ()) if f in PAYS_OFF)
    gpu = bool(target is not None and getattr(target, "gpu", False))
    warnings = []
    fmt = fmt or ("auto" if target is not None else "dense")
    if fmt == "auto":
        forms = ("dense",) + target_forms
    else:
        forms = ("dense",) if fmt == "dense" else ("dense", fmt)
        if fmt != "dense" and target is not None and fmt not in target_forms:
            warnings.append(f"format {fmt} is not among what pays off on {target.name} "
                            f"({', '.join(target.formats)}): {PAYS_OFF[fmt]}")
        if fmt == "2:4" and not gpu:
            warnings.append("2:4 gives no speed-up without an sm80+ GPU; here it only shrinks the download")
    if structured and target is not None and "structured" not in target.formats:
        warnings.append(f"{target.name} does not list structured removal; it is applied anyway "
                        "because it is exact and never slower")
    if quantize is None:
        quantize = target.quantization if target is not None else "none"
        if quantize == "fp16":
            warnings.append(f"{target.name} asks for fp16, which convert does not produce yet; "
                            "bundle left fp32 (pass --quantize to choose)")
            quantize = "none"
    elif target is not None and quantize != target.quantization and quantize != "none":
        warnings.append(f"quantization {quantize} differs from {target.name}'s {target.quantization}")
    return ConvertOptions(fmt, forms, quantize, bool(structured), getattr(target, "name", None), gpu,
                          tuple(warnings), min_agreement, max_drop, vocabulary, embeddings,
                          int(target.workload.batch_size) if target is not None else None)
