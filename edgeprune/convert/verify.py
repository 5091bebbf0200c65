"""Post-export verification: the bundle must compute what the checkpoint computes.

Modelled on optimum's `validate_model_outputs`: run both on the same real sentences, compare every
output, collect *all* failures, and raise one typed error naming each. Tolerances depend on the form:
fp32 graphs (structured removal, fused attention, sparse storage) must match logits to `FP32_ATOL`
relative to the logits' own scale (`logit_tolerance`); int8 cannot, so there the check is agreement of
predicted labels plus the measured accuracy drop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import VerificationError

FP32_ATOL = 1e-4
INT8_MIN_LABEL_AGREEMENT = 0.9
INT8_MAX_ACCURACY_DROP = 0.03


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    max_abs_diff: float | None = None
    atol: float | None = None
    label_agreement: float | None = None


@dataclass
class VerificationReport:
    sentences: int = 0
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_json(self) -> dict:
        return {"passed": self.passed, "sentences": self.sentences, "checks": [asdict(c) for c in self.checks]}

    def raise_if_failed(self) -> None:
        failed = [c for c in self.checks if not c.passed]
        if failed:
            raise VerificationError(
                "exported model does not match the checkpoint: " + "; ".join(f"{c.name}: {c.detail}" for c in failed),
                "report this model/format; meanwhile convert with --format dense --quantize none",
            )


def logit_tolerance(reference: list[np.ndarray], atol: float) -> float:
    """`atol` for logits up to 1 in size, `atol` times the largest |logit| beyond that.

    fp32 rounding error grows with the values summed: a distilled student's logits of +-4 differ by
    ~1.4e-4 between the same weights with and without their zero rows (only the summation order
    changes), while a real error (a wrong head, a missing bias) moves logits by far more than 1e-4 of
    their size."""
    scale = max((float(np.abs(a).max()) for a in reference if a.size), default=0.0)
    return atol * max(1.0, scale)


def compare_logits(name: str, reference: list[np.ndarray], got: list[np.ndarray], atol: float) -> Check:
    for i, (a, b) in enumerate(zip(reference, got)):
        if a.shape != b.shape:
            return Check(name, False, f"batch {i} output shape {b.shape} != reference {a.shape}", atol=atol)
        if not np.isfinite(b).all():
            return Check(name, False, f"batch {i} has non-finite outputs", atol=atol)
    diff = max((float(np.abs(a - b).max()) for a, b in zip(reference, got)), default=0.0)
    agreement = label_agreement(reference, got)
    tolerance = logit_tolerance(reference, atol)
    ok = diff <= tolerance
    detail = f"max |diff| {diff:.3g} {'<=' if ok else '>'} tolerance {tolerance:.3g} (atol {atol:g} x max(1, |logit|))"
    return Check(name, ok, detail, diff, tolerance, agreement)


def label_agreement(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    ref = np.concatenate([a.argmax(-1) for a in reference]) if reference else np.array([])
    new = np.concatenate([b.argmax(-1) for b in got]) if got else np.array([])
    return float((ref == new).mean()) if len(ref) else 1.0


def compare_labels(name: str, reference: list[np.ndarray], got: list[np.ndarray],
                   min_agreement: float = INT8_MIN_LABEL_AGREEMENT) -> Check:
    shapes_ok = all(a.shape == b.shape for a, b in zip(reference, got))
    agreement = label_agreement(reference, got) if shapes_ok else 0.0
    diff = max((float(np.abs(a - b).max()) for a, b in zip(reference, got)), default=0.0) if shapes_ok else None
    ok = shapes_ok and agreement >= min_agreement
    detail = (f"predicted labels agree on {agreement:.1%} of sentences "
              f"({'>=' if ok else '<'} {min_agreement:.0%})") if shapes_ok else "output shapes differ"
    return Check(name, ok, detail, diff, None, agreement)


def compare_accuracy(name: str, reference: float, got: float, max_drop: float = INT8_MAX_ACCURACY_DROP) -> Check:
    drop = reference - got
    ok = drop <= max_drop
    return Check(name, ok, f"accuracy {got:.4f} vs fp32 {reference:.4f}: drop {drop:+.4f} "
                           f"({'<=' if ok else '>'} {max_drop:g})")
