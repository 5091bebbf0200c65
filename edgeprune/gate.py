"""Measured results + a target's budgets -> a verdict. A failed gate is a result, not an exception.

`evaluate(report, profile)` is pure: it reads the figures of a bench report (see `edgeprune.bench.report`)
and checks every budget of the profile:

- a budget of 0.0 is "not set yet": status `unset`, it passes and is listed as "no limit set";
- a figure measured on this kind of host is compared with its limit (`max` budgets: value <= limit,
  `min` budgets: value >= limit): status `pass` or `fail`;
- a figure that was not measured (the bench host could not measure it honestly, e.g. latency of an
  aarch64 target on an x86 host) fails its budget, unless the profile lists the budget under
  `budget.optional`: then status `unmeasured` and it passes.

`check_report(report, profile)` raises `ReportError` when the report is not one gate can judge (another
target, measured under other conditions than the profile now describes, malformed).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ReportError
from .targets import BUDGET_FIGURES, TargetProfile

REPORT_FILE = "report.json"
REPORT_SCHEMA_VERSION = 1
# profile fields that decide how figures are measured: if they changed since bench, the report is stale
MEASUREMENT_FIELDS = ("arch", "providers", "threads", "quantization", "workload", "isa", "min_gpu_capability")


@dataclass(frozen=True)
class BudgetCheck:
    budget: str          # profile budget key, e.g. latency_p95_ms
    figure: str          # report figure, e.g. latency_ms.p95
    kind: str            # "max" or "min"
    limit: float
    value: float | None
    measured: bool
    status: str          # pass | fail | unset | unmeasured
    reason: str

    @property
    def passed(self) -> bool:
        return self.status != "fail"


@dataclass(frozen=True)
class Verdict:
    target: str
    bundle_sha256: str
    host_id: str
    checks: tuple[BudgetCheck, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    @property
    def unset(self) -> list[str]:
        return [c.budget for c in self.checks if c.status == "unset"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "bundle_sha256": self.bundle_sha256,
            "host_id": self.host_id,
            "passed": self.passed,
            "unset_budgets": self.unset,
            "checks": [asdict(c) | {"passed": c.passed} for c in self.checks],
        }


def figure_value(metrics: dict[str, Any], figure: str) -> tuple[float | None, bool, str]:
    """(value, measured, reason-if-not) of a dotted figure such as `latency_ms.p95`."""
    head, _, sub = figure.partition(".")
    entry = metrics.get(head)
    if head == "accuracy_drop" and entry is None:
        return _accuracy_drop(metrics)
    if not isinstance(entry, dict):
        return None, False, f"the report has no {head} figure"
    if not entry.get("measured", False):
        return None, False, str(entry.get("reason") or "not measured")
    value = entry.get(sub or "value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, False, f"the report's {figure} is not a number ({value!r})"
    return float(value), True, ""


def _accuracy_drop(metrics: dict[str, Any]) -> tuple[float | None, bool, str]:
    acc, acc_ok, acc_why = figure_value(metrics, "accuracy")
    dense, dense_ok, dense_why = figure_value(metrics, "dense_accuracy")
    if not acc_ok:
        return None, False, f"accuracy not measured: {acc_why}"
    if not dense_ok:
        return None, False, f"dense reference accuracy not measured: {dense_why}"
    return dense - acc, True, ""


def _check(budget: str, limit: float, optional: bool, metrics: dict[str, Any]) -> BudgetCheck:
    figure, kind, unit = BUDGET_FIGURES[budget]
    value, measured, why = figure_value(metrics, figure)
    unit = f" {unit}" if unit else ""
    if limit == 0.0:
        status, reason = "unset", "no limit set"
    elif not measured:
        status = "unmeasured" if optional else "fail"
        reason = f"not measured: {why}" + ("; optional for this target" if optional else "")
    else:
        ok = value <= limit if kind == "max" else value >= limit
        status = "pass" if ok else "fail"
        sign = ("<=" if ok else ">") if kind == "max" else (">=" if ok else "<")
        reason = f"{value:.4g}{unit} {sign} {limit:g}{unit}"
    return BudgetCheck(budget, figure, kind, limit, value, measured, status, reason)


def evaluate(report: dict[str, Any], profile: TargetProfile) -> Verdict:
    metrics = report.get("metrics", {})
    checks = tuple(_check(name, limit, name in profile.budget.optional, metrics)
                   for name, limit in profile.budget.limits().items())
    return Verdict(target=profile.name, bundle_sha256=str(report.get("bundle", {}).get("sha256", "")),
                   host_id=str(report.get("host", {}).get("host_id", "")), checks=checks)


def check_report(report: Any, profile: TargetProfile, where: str = "report") -> None:
    """Refuse a report gate cannot judge against `profile` (exit 2 at the CLI)."""
    if not isinstance(report, dict):
        raise ReportError(f"{where} is not a JSON object", "pass a folder written by `edgeprune bench`")
    for key in ("target", "host", "bundle", "metrics"):
        if not isinstance(report.get(key), dict):
            raise ReportError(f"{where} lacks its {key!r} section", "re-run `edgeprune bench`")
    version = report.get("schema_version", REPORT_SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ReportError(f"{where} has schema version {version!r}, not a whole number", "re-run `edgeprune bench`")
    if version > REPORT_SCHEMA_VERSION:
        raise ReportError(f"{where} has schema version {report['schema_version']}, newer than this edgeprune "
                          f"reads ({REPORT_SCHEMA_VERSION})", "upgrade edgeprune")
    name = report["target"].get("name")
    if name != profile.name:
        raise ReportError(f"{where} was measured for target {name!r}, not {profile.name!r}",
                          f"bench the bundle for {profile.name} first, or gate with --target {name}")
    measured_with = report["target"].get("profile", {})
    if not isinstance(measured_with, dict):
        raise ReportError(f"{where}: target.profile is not an object", "re-run `edgeprune bench`")
    current = profile.to_dict()
    changed = [k for k in MEASUREMENT_FIELDS if k in measured_with and measured_with[k] != current[k]]
    if changed:
        raise ReportError(f"{where} was measured with other {', '.join(changed)} than target {profile.name} "
                          "now sets", "re-run `edgeprune bench` with the current profile")
    accuracy = report["metrics"].get("accuracy")
    if (measured_with and isinstance(accuracy, dict) and accuracy.get("measured")
            and "batch_size" not in accuracy):
        raise ReportError(f"{where} scored accuracy in fixed batches, not in the workload's "
                          "(edgeprune before 2026-12-02)", "re-run `edgeprune bench`")
    if not isinstance(report["bundle"].get("sha256"), str) or not report["bundle"]["sha256"]:
        raise ReportError(f"{where} does not name the bundle's sha256", "re-run `edgeprune bench`")


def read_report(report_dir: Path) -> dict[str, Any]:
    report_dir = Path(report_dir)
    file = report_dir / REPORT_FILE if report_dir.is_dir() else report_dir
    if not file.is_file():
        raise ReportError(f"no {REPORT_FILE} in {report_dir}", "pass the -o folder of `edgeprune bench`")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{file} is not valid JSON ({exc})", "re-run `edgeprune bench`") from exc


def check_bundle(report: dict[str, Any], bundle_sha256: str, bundle_path: str) -> None:
    if report["bundle"]["sha256"] != bundle_sha256:
        raise ReportError(
            f"the report is for bundle {report['bundle']['sha256'][:12]}, not {bundle_path} "
            f"({bundle_sha256[:12]})",
            "bench this bundle, or gate the report that was written for it",
        )


def format_table(verdict: Verdict) -> str:
    rows = [("budget", "value", "limit", "status", "detail")]
    for c in verdict.checks:
        value = "-" if c.value is None else f"{c.value:.4g}"
        limit = "none" if c.limit == 0.0 else f"{'<=' if c.kind == 'max' else '>='} {c.limit:g}"
        rows.append((c.budget, value, limit, c.status.upper() if c.status == "fail" else c.status, c.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 6)
    summary = "PASS" if verdict.passed else "FAIL"
    failed = [c.budget for c in verdict.checks if not c.passed]
    tail = f"gate {summary} for {verdict.target} (bundle {verdict.bundle_sha256[:12]}, host {verdict.host_id})"
    if failed:
        tail += f": missed {', '.join(failed)}"
    if verdict.unset:
        tail += f"; no limit set for {', '.join(verdict.unset)}"
    return "\n".join(lines + ["", tail])


def junit_xml(verdict: Verdict) -> str:
    import xml.etree.ElementTree as ET

    failures = sum(1 for c in verdict.checks if not c.passed)
    skipped = sum(1 for c in verdict.checks if c.status in ("unset", "unmeasured"))
    suite = ET.Element("testsuite", name=f"edgeprune.gate.{verdict.target}", tests=str(len(verdict.checks)),
                       failures=str(failures), errors="0", skipped=str(skipped))
    props = ET.SubElement(suite, "properties")
    for key, value in (("bundle_sha256", verdict.bundle_sha256), ("host_id", verdict.host_id)):
        ET.SubElement(props, "property", name=key, value=value)
    for c in verdict.checks:
        case = ET.SubElement(suite, "testcase", classname=f"edgeprune.gate.{verdict.target}", name=c.budget)
        if c.status == "fail":
            ET.SubElement(case, "failure", message=c.reason, type="BudgetMissed").text = (
                f"{c.figure}: {c.reason}")
        elif c.status in ("unset", "unmeasured"):
            ET.SubElement(case, "skipped", message=c.reason)
        else:
            ET.SubElement(case, "system-out").text = c.reason
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
