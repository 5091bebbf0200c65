"""Target profiles: built-ins, the registry (user folders, entry points, duplicates), every bad profile."""

from __future__ import annotations

import json
import sysconfig

import pytest
from bench_fixtures import write_target

from edgeprune import targets as targets_mod
from edgeprune.cli import main
from edgeprune.errors import TargetError
from edgeprune.targets import (Budget, TargetProfile, TargetRegistry, Workload, list_targets, load_target_file,
                               resolve_target)


def test_builtins_load_as_designed():
    names = [p.name for p in list_targets()]
    assert names == ["ampere-gpu", "arm-kiosk", "cpu-kiosk"]
    kiosk = resolve_target("cpu-kiosk")
    assert (kiosk.arch, kiosk.providers, kiosk.threads) == ("x86_64", ("CPUExecutionProvider",), 2)
    assert kiosk.formats == ("structured", "csr") and kiosk.quantization == "int8-dynamic-per-channel"
    assert kiosk.workload == Workload(batch_size=1, sequence_length="dataset")
    assert kiosk.budget.latency_p95_ms == 1.4 and kiosk.budget.max_accuracy_drop == 0.01
    gpu = resolve_target("ampere-gpu")
    assert gpu.gpu and "2:4" in gpu.formats and gpu.quantization == "fp16" and gpu.min_gpu_capability == 8.0
    arm = resolve_target("arm-kiosk")
    assert (arm.arch, arm.threads, arm.quantization) == ("aarch64", 4, "int8-dynamic")


def test_resolve_by_path_and_round_trip(tmp_path):
    file = write_target(tmp_path, "mine", budget="latency_p95_ms = 12.5\noptional = [\"max_peak_rss_mb\"]",
                        workload='batch_size = 4\nsequence_length = "dataset"')
    profile = resolve_target(str(file))
    assert profile.name == "mine" and profile.workload.sequence_length == "dataset"
    assert profile.budget.optional == ("max_peak_rss_mb",) and profile.budget.latency_p95_ms == 12.5
    again = TargetProfile.from_dict(profile.to_dict())
    assert again == profile and again.sha256() == profile.sha256()


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(TargetError, match="unknown target 'cpu-kiosks'") as err:
        resolve_target("cpu-kiosks")
    assert "ampere-gpu, arm-kiosk, cpu-kiosk" in str(err.value)


@pytest.mark.parametrize("extra, budget, workload, field", [
    ('colour = "red"', "", "batch_size = 1", "unknown key colour"),
    ("", "latency_p99_ms = 3.0", "batch_size = 1", "unknown key budget.latency_p99_ms"),
    ("", "", "batch_size = 1\nseq_len = 3", "unknown key workload.seq_len"),
    ("", "", "batch_size = 0", "workload.batch_size"),
    ("", "", "batch_size = 1.5", "workload.batch_size"),
    ("", "", 'sequence_length = "long"', "workload.sequence_length"),
    ("", "max_bundle_mb = -1.0", "batch_size = 1", "budget.max_bundle_mb"),
    ("", "min_accuracy = 1.5", "batch_size = 1", "budget.min_accuracy"),
    ("", 'latency_p95_ms = "fast"', "batch_size = 1", "budget.latency_p95_ms"),
    ("", 'optional = ["latency"]', "batch_size = 1", "budget.optional"),
    ('isa = "avx2"', "", "batch_size = 1", "isa"),
    ("min_gpu_capability = -8.0", "", "batch_size = 1", "min_gpu_capability"),
])
def test_bad_profile_names_the_field(tmp_path, extra, budget, workload, field):
    file = write_target(tmp_path, extra=extra, budget=budget, workload=workload)
    with pytest.raises(TargetError, match=field.replace(".", r"\.")):
        load_target_file(file)


@pytest.mark.parametrize("replace, field", [
    (('arch = "x86_64"', 'arch = "riscv64"'), "arch"),
    (("threads = 1", "threads = 0"), "threads"),
    (("threads = 1", "threads = true"), "threads"),
    (('quantization = "int8-dynamic"', 'quantization = "int4"'), "quantization"),
    (('formats = ["structured", "csr"]', 'formats = ["structured", "bsr"]'), "formats"),
    (('formats = ["structured", "csr"]', "formats = []"), "formats"),
    (('formats = ["structured", "csr"]', 'formats = ["csr", ["x"]]'), "formats must list names"),
    (('providers = ["CPUExecutionProvider"]', 'providers = [{a = 1}]'), "providers must list names"),
    (('providers = ["CPUExecutionProvider"]', 'providers = ["cpu"]'), "providers"),
    (('name = "test-kiosk"', 'name = "bad name!"'), "name"),
    (('arch = "x86_64"\n', ""), "missing required key"),
    (("[budget]", "[budget\n"), "not valid TOML"),
])
def test_bad_top_level_values(tmp_path, replace, field):
    file = write_target(tmp_path)
    file.write_text(file.read_text().replace(*replace))
    with pytest.raises(TargetError, match=field):
        load_target_file(file)


def test_dataclasses_validate_at_construction():
    with pytest.raises(TargetError, match="budget.max_accuracy_drop"):
        Budget(max_accuracy_drop=2.0)
    with pytest.raises(TargetError, match="quantization"):
        TargetProfile("x", "", "x86_64", ("CPUExecutionProvider",), 1, ("dense",), "int3")
    profile = TargetProfile("x", "", "x86_64", ["CPUExecutionProvider"], 1, ["dense"], "none")
    assert profile.providers == ("CPUExecutionProvider",)  # lists become tuples: the profile stays frozen


def test_user_folder_adds_targets_and_duplicates_are_refused(tmp_path, monkeypatch):
    write_target(tmp_path / "user", "shop-till")
    monkeypatch.setenv(targets_mod.ENV_VAR, str(tmp_path / "user"))
    assert "shop-till" in [p.name for p in list_targets()]
    assert resolve_target("shop-till").source.endswith("shop-till.toml")
    write_target(tmp_path / "user", "cpu-kiosk")
    with pytest.raises(TargetError, match="'cpu-kiosk' is defined twice"):
        resolve_target("shop-till")


def test_file_name_must_match_profile_name(tmp_path, monkeypatch):
    file = write_target(tmp_path / "user", "one")
    file.rename(tmp_path / "user" / "two.toml")
    monkeypatch.setenv(targets_mod.ENV_VAR, str(tmp_path / "user"))
    with pytest.raises(TargetError, match="differs from the file name"):
        list_targets()


def test_missing_user_folder_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(targets_mod.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(TargetError, match="EDGEPRUNE_TARGETS_PATH"):
        list_targets()


def test_entry_point_values(tmp_path):
    registry = TargetRegistry()
    file = write_target(tmp_path / "ep", "from-file")
    profile = TargetProfile("from-object", "", "aarch64", ("CPUExecutionProvider",), 2, ("dense",), "none")
    registry.register_entry_point_value(lambda: [profile, str(file)], "plugin (pkg:targets)")
    assert registry.names() == ["from-file", "from-object"]
    with pytest.raises(TargetError, match="defined twice"):
        registry.register_entry_point_value(profile, "again")
    with pytest.raises(TargetError, match="entry point bad gave int"):
        registry.register_entry_point_value(3, "bad")


def test_installed_builtins_are_found_without_the_checkout(tmp_path, monkeypatch):
    """A wheel installs targets/*.toml as data files under <prefix>/share/edgeprune/targets."""
    installed = tmp_path / "prefix" / "share" / "edgeprune" / "targets"
    write_target(installed, "cpu-kiosk")
    monkeypatch.setattr(targets_mod, "BUILTIN_DIR", tmp_path / "no-checkout")
    real = sysconfig.get_path
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(tmp_path / "prefix")
                        if name == "data" and not a else real(name, *a, **k))
    assert targets_mod.builtin_folder() == installed
    assert [p.name for p in list_targets()] == ["cpu-kiosk"]


def test_pyproject_ships_the_builtins_as_data_files():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(targets_mod.__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["data-files"]["share/edgeprune/targets"] == ["targets/*.toml"]


def test_cli_lists_and_shows(capsys, tmp_path):
    assert main(["targets"]) == 0
    assert "arm-kiosk" in capsys.readouterr().out
    assert main(["targets", "cpu-kiosk", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["threads"] == 2 and shown["budget"]["min_accuracy"] == 0.9
    assert main(["targets", "cpu-kiosk"]) == 0
    assert "max_peak_rss_mb   106" in capsys.readouterr().out
    assert main(["targets", "arm-kiosk"]) == 0
    assert "no limit set" in capsys.readouterr().out
    assert main(["targets", "nope"]) == 2
    assert "unknown target 'nope'" in capsys.readouterr().err
