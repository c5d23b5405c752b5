"""evaluate-finetuning: the geometry on a hand-made case, and the command end to end."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from neardup.simclr.diagnostics import evaluate, format_evaluation, group_geometry
from tests.conftest import make_image


def test_group_geometry_by_hand():
    # two groups on the unit circle (features are L2-normalised inside): angles 0°, 10° and 90°, 100°
    ang = np.deg2rad([0, 10, 90, 100])
    x = np.stack([np.cos(ang), np.sin(ang)], 1)
    g = np.array([0, 0, 1, 1])
    geo = group_geometry(x, g, others=np.array([[-1.0, 0.0]]))
    chord = lambda deg: 2 * np.sin(np.deg2rad(deg) / 2)  # noqa: E731
    assert geo["diameter"] == pytest.approx([chord(10), chord(10)], rel=1e-5)
    # separation: nearest non-member; group 0's 10° point is 80° from group 1's 90° point
    assert geo["separation"] == pytest.approx([chord(80), chord(80)], rel=1e-5)
    c0 = x[:2].mean(0)
    assert geo["dispersion"][0] == pytest.approx(np.linalg.norm(x[0] - c0), rel=1e-5)
    assert geo["centroid_distance"][0] == pytest.approx(np.linalg.norm(c0 - x[2:].mean(0)), rel=1e-5)
    assert geo["SN1"][0] == pytest.approx(chord(10) / chord(80), rel=1e-5)
    assert geo["SN2"][0] == pytest.approx(geo["dispersion"][0] / geo["centroid_distance"][0], rel=1e-5)


def test_evaluate_finetuning_end_to_end(tmp_path):
    from neardup.cli import main
    from neardup.data.generate import generate_attacks, load_attack_config

    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir()
    val.mkdir()
    for i in range(8):
        make_image(300 + i, (64, 48)).save(train / f"t{i}.png")
    for i in range(3):
        make_image(400 + i, (64, 48)).save(val / f"v{i}.png")
    specs = [s for s in load_attack_config() if s.name in ("jpeg_50", "rotation_10")]
    generate_attacks(val, tmp_path / "q", specs, workers=1, show_progress=False)
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["finetune", str(train), "--out", str(run), "--epochs", "2", "--batch-size", "4",
                                    "--image-size", "48", "--workers", "0", "--val-queries", str(tmp_path / "q"),
                                    "--val-database", str(val), "--val-distractors", str(train)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "validation (6 queries): recall@1" in res.output
    assert sorted(p.name for p in (run / "encoders").glob("*.pt")) == ["epoch_001.pt", "epoch_002.pt"]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("val_recall@1" in r for r in log) and any("images_per_s" in r for r in log)
    summary = json.loads((run / "summary.json").read_text())  # ValidationScores.to_dict keeps the run files' keys
    assert list(summary["best"]) == ["recall@1", "recall@10", "mAP", "muAP", "n_queries", "per_family"]
    assert [h["epoch"] for h in summary["history"]] == [-1, 0, 1] and summary["best_epoch"] in (1, 2)
    files = sorted(p.relative_to(run) for p in run.rglob("*"))
    computed = evaluate(run, [])  # computes only: nothing written
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == files
    assert [c.name for c in computed.checkpoints] == ["base", "epoch_001", "epoch_002"]
    res = CliRunner().invoke(main, ["evaluate-finetuning", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.output.startswith(format_evaluation(computed).splitlines()[0][:40])
    data = json.loads((run / "evaluation" / "evaluation.json").read_text())
    assert json.dumps(data, sort_keys=True) == json.dumps(computed.to_dict(), sort_keys=True)
    assert data["schema"] == "neardup.finetune.evaluation/1"
    assert [c["name"] for c in data["checkpoints"]] == ["base", "epoch_001", "epoch_002"]
    for c in data["checkpoints"]:
        assert 0 <= c["recall@1"] <= 1 and set(c["geometry"]) == {"diameter", "dispersion", "separation",
                                                                  "centroid_distance", "SN1", "SN2"}
    assert (run / "evaluation" / "evolution.png").stat().st_size > 10_000
