"""Gate verdicts on hand-made reports: pass, miss, unset, missing figure, optional, wrong target/bundle."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from bench_fixtures import make_report, unmeasured, write_target

from edgeprune.cli import main
from edgeprune.errors import ReportError
from edgeprune.gate import check_bundle, check_report, evaluate
from edgeprune.targets import resolve_target

ALL_SET = ("latency_p95_ms = 6.0\nmax_accuracy_drop = 0.02\nmin_accuracy = 0.85\nmax_bundle_mb = 25.0\n"
           "max_peak_rss_mb = 150.0")


@pytest.fixture
def profile(tmp_path):
    return resolve_target(str(write_target(tmp_path, budget=ALL_SET)))


def statuses(verdict):
    return {c.budget: c.status for c in verdict.checks}


def test_every_budget_passes(profile):
    verdict = evaluate(make_report(), profile)
    assert verdict.passed and verdict.exit_code == 0
    assert set(statuses(verdict).values()) == {"pass"}
    drop = next(c for c in verdict.checks if c.budget == "max_accuracy_drop")
    assert drop.value == pytest.approx(0.01)  # dense 0.91 - bundle 0.90


@pytest.mark.parametrize("changes, budget", [
    ({"latency_ms": {"measured": True, "p50": 4.0, "p95": 6.5, "p99": 9.0}}, "latency_p95_ms"),
    ({"accuracy": {"measured": True, "value": 0.84}, "dense_accuracy": {"measured": True, "value": 0.85}},
     "min_accuracy"),
    ({"dense_accuracy": {"measured": True, "value": 0.95}}, "max_accuracy_drop"),
    ({"bundle_mb": {"measured": True, "value": 25.5}}, "max_bundle_mb"),
    ({"peak_rss_mb": {"measured": True, "value": 151.0}}, "max_peak_rss_mb"),
])
def test_a_missed_budget_fails_only_itself(profile, changes, budget):
    verdict = evaluate(make_report(**changes), profile)
    assert not verdict.passed and verdict.exit_code == 1
    assert [b for b, s in statuses(verdict).items() if s == "fail"] == [budget]


def test_limits_are_inclusive(profile):
    at_limit = make_report(latency_ms={"measured": True, "p50": 1.0, "p95": 6.0, "p99": 7.0},
                           accuracy={"measured": True, "value": 0.85}, dense_accuracy={"measured": True, "value": 0.85})
    assert evaluate(at_limit, profile).passed


def test_unset_budgets_pass_but_are_listed(tmp_path):
    profile = resolve_target(str(write_target(tmp_path, budget="min_accuracy = 0.85")))
    verdict = evaluate(make_report(latency_ms=unmeasured()), profile)
    assert verdict.passed
    assert verdict.unset == ["latency_p95_ms", "max_accuracy_drop", "max_bundle_mb", "max_peak_rss_mb"]
    assert {c.reason for c in verdict.checks if c.status == "unset"} == {"no limit set"}


def test_unmeasured_figure_fails_unless_optional(tmp_path, profile):
    report = make_report(latency_ms=unmeasured(), peak_rss_mb=unmeasured())
    verdict = evaluate(report, profile)
    failed = {c.budget: c.reason for c in verdict.checks if not c.passed}
    assert set(failed) == {"latency_p95_ms", "max_peak_rss_mb"}
    assert "not measured: the target is aarch64" in failed["latency_p95_ms"]
    optional = resolve_target(str(write_target(
        tmp_path / "opt", budget=ALL_SET + '\noptional = ["latency_p95_ms", "max_peak_rss_mb"]')))
    verdict = evaluate(report, optional)
    assert verdict.passed and statuses(verdict)["latency_p95_ms"] == "unmeasured"


def test_missing_figure_and_missing_dense_reference_fail(profile):
    report = make_report(dense_accuracy=unmeasured("no source checkpoint at hand"))
    del report["metrics"]["bundle_mb"]
    failed = {c.budget: c.reason for c in evaluate(report, profile).checks if not c.passed}
    assert set(failed) == {"max_accuracy_drop", "max_bundle_mb"}
    assert "dense reference accuracy not measured" in failed["max_accuracy_drop"]
    assert "no bundle_mb figure" in failed["max_bundle_mb"]


def test_report_for_another_target_or_stale_profile_is_refused(profile):
    other = make_report()
    other["target"]["name"] = "cpu-kiosk"
    with pytest.raises(ReportError, match="measured for target 'cpu-kiosk', not 'test-kiosk'"):
        check_report(other, profile)
    stale = make_report()
    stale["target"]["profile"] = {**profile.to_dict(), "threads": 4}
    with pytest.raises(ReportError, match="other threads"):
        check_report(stale, profile)
    budget_changed = make_report()
    budget_changed["target"]["profile"] = {**profile.to_dict(), "budget": {}}
    check_report(budget_changed, profile)  # budgets may change after bench: that is what gate is for
    with pytest.raises(ReportError, match="lacks its 'metrics'"):
        check_report({k: v for k, v in make_report().items() if k != "metrics"}, profile)


def test_wrong_bundle_is_refused():
    report = make_report()
    check_bundle(report, "ab" * 32, "bundle")
    with pytest.raises(ReportError, match="the report is for bundle abab"):
        check_bundle(report, "cd" * 32, "other-bundle")


def _write(folder, report):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_cli_exit_codes_json_and_junit(tmp_path, capsys, profile):
    target = profile.source
    passing = _write(tmp_path / "pass", make_report())
    assert main(["gate", str(passing), "--target", target]) == 0
    out = capsys.readouterr().out
    assert "gate PASS" in out and "latency_p95_ms" in out and "<= 6" in out

    missing = _write(tmp_path / "miss", make_report(peak_rss_mb={"measured": True, "value": 999.0},
                                                    latency_ms=unmeasured()))
    junit = tmp_path / "gate.xml"
    assert main(["gate", str(missing), "--target", target, "--json", "--junit", str(junit)]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["passed"] is False and len(verdict["checks"]) == 5
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "5" and suite.get("failures") == "2"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"latency_p95_ms", "max_accuracy_drop", "min_accuracy", "max_bundle_mb", "max_peak_rss_mb"}
    assert cases["max_peak_rss_mb"].find("failure") is not None
    assert cases["min_accuracy"].find("failure") is None


def test_cli_bad_input_is_exit_2(tmp_path, capsys, profile):
    assert main(["gate", str(tmp_path / "none"), "--target", profile.source]) == 2
    assert "no report.json" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "report.json").write_text("{not json")
    assert main(["gate", str(bad), "--target", profile.source]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["gate", str(_write(tmp_path / "ok", make_report())), "--target", "cpu-kiosk"]) == 2
    assert "not 'cpu-kiosk'" in capsys.readouterr().err


@pytest.mark.parametrize("field, value", [("schema_version", "x"), ("schema_version", None)])
def test_odd_schema_version_is_exit_2(tmp_path, capsys, profile, field, value):
    report = make_report()
    report[field] = value
    assert main(["gate", str(_write(tmp_path / "r", report)), "--target", profile.source]) == 2
    err = capsys.readouterr().err.strip()
    assert "schema version" in err and len(err.splitlines()) == 1


def test_odd_profile_and_sha_in_report_are_exit_2(tmp_path, capsys, profile):
    report = make_report()
    report["target"]["profile"] = "cpu"
    assert main(["gate", str(_write(tmp_path / "a", report)), "--target", profile.source]) == 2
    report = make_report()
    report["bundle"]["sha256"] = 12
    assert main(["gate", str(_write(tmp_path / "b", report)), "--target", profile.source]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2
