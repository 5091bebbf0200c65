import json

import pytest
import yaml

from edgeprune.cli import main
from edgeprune.recipe import recipe_from_dict
from edgeprune.sensitivity import SensitivityRow, overrides_from
from edgeprune.train import train
from conftest import tiny_recipe_dict


def test_overrides_take_the_highest_sparsity_within_tolerance():
    rows = [SensitivityRow("a", 0.5, 0.9, 0.0), SensitivityRow("a", 0.75, 0.89, 0.01),
            SensitivityRow("a", 0.9, 0.8, 0.1), SensitivityRow("b", 0.5, 0.7, 0.2)]
    assert overrides_from(rows, 0.01) == {"a": 0.75}


def test_sensitivity_command_writes_table_plot_and_usable_overrides(tiny_model_dir, tiny_data_dir, tmp_path):
    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    raw["pruning"] = [raw["pruning"][2]]  # magnitude on q/k/v
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(yaml.safe_dump(raw))
    ck = train(recipe_from_dict({**raw, "pruning": []}), tmp_path / "dense", progress=False)
    out = tmp_path / "sens"
    assert main(["sensitivity", str(recipe_file), "-o", str(out), "--checkpoint", str(ck),
                 "--sparsities", "0.5,0.9", "--tolerance", "1.0"]) == 0
    report = json.loads((out / "sensitivity.json").read_text())
    assert len(report["rows"]) == 6 * 2  # 2 layers x q/k/v, 2 sparsities
    for row in report["rows"]:
        assert row["drop"] == pytest.approx(report["baseline_accuracy"] - row["accuracy"], abs=1e-6)
    assert (out / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "sensitivity.csv").read_text().splitlines()) == 13
    overrides = yaml.safe_load((out / "overrides.yaml").read_text())["sparsity_overrides"]
    assert set(overrides.values()) == {0.9}  # tolerance 1.0 accepts every trial
    # the overrides plug straight into a recipe
    raw["pruning"][0]["sparsity_overrides"] = overrides
    assert recipe_from_dict(raw).pruning[0].sparsity_overrides == overrides


def test_bad_sparsities_exit_2(tiny_recipe, tmp_path, capsys):
    assert main(["sensitivity", str(tiny_recipe), "-o", str(tmp_path / "s"), "--sparsities", "0.5,1.5"]) == 2
    assert "--sparsities" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
