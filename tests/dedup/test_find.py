"""find_duplicates on real photos with planted copies: exact and near duplicates, keepers, caches, --add, --against."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neardup.dedup.find import DedupConfig, find_duplicates
from neardup.dedup.scan import run_scan
from neardup.errors import UsageError
from tests.dedup_fixtures import plant_copies

#: below every copy's similarity to its original (lowest: the half-size star field, 0.71) and above every pair
#: of different photos (highest: 0.42) with efficientnet_lite0
T = 0.6


def names(result: Any) -> list[set[str]]:
    return sorted(({Path(p).name for p in g} for g in result.path_groups()), key=sorted)


def expected(made: dict[str, str]) -> list[set[str]]:
    return sorted(({copy, orig} for copy, orig in made.items()), key=sorted)


def test_exact_and_near_duplicates_are_found(tmp_path: Path, collection, lite0) -> None:
    folder, made = collection
    r = find_duplicates([str(folder)], tmp_path / "scan", DedupConfig(threshold=T), extractor=lite0)
    assert names(r) == expected(made)
    kinds = {Path(f.path).name: k for f, k in zip(r.files, r.kinds, strict=True)}
    # identical bytes and identical decoded pixels (a lossless re-encode) are exact; the edits are near
    by_group = {frozenset(Path(r.files[i].path).name for i in m): [r.kinds[i] for i in m] for m in r.groups().values()}
    assert sorted(by_group[frozenset({"copy_exact.jpg", made["copy_exact.jpg"]})]) == ["exact", "keeper"]
    assert sorted(by_group[frozenset({"copy_lossless.png", made["copy_lossless.png"]})]) == ["exact", "keeper"]
    for copy in ("copy_q40.jpg", "copy_crop.jpg", "copy_small.jpg"):
        assert sorted(by_group[frozenset({copy, made[copy]})]) == ["keeper", "near"]
    # keep=largest: the original (more pixels) is kept over its crop and its half-size copy
    assert kinds[made["copy_small.jpg"]] == "keeper" and kinds["copy_small.jpg"] == "near"
    assert kinds[made["copy_crop.jpg"]] == "keeper"
    assert sum(k == "unique" for k in r.kinds) == 12 - 5
    for g, m in r.groups().items():
        k = r.keepers[g]
        for i in m:
            if r.kinds[i] == "near":
                assert T <= r.scores[i] < 0.999 and r.scores[k] == 1.0
    d = r.to_dict()
    assert (d["groups"], d["duplicates"], d["exact_duplicates"], d["near_duplicates"]) == (5, 5, 2, 3)
    assert d["threshold_source"] == "given" and d["calibration"] is None


@pytest.mark.parametrize("rule, kept", [("smallest-file", "copy_small.jpg"), ("first", "copy_small.jpg")])
def test_keep_rules(tmp_path: Path, collection, lite0, rule: str, kept: str) -> None:
    folder, made = collection
    r = find_duplicates([str(folder)], tmp_path / "scan", DedupConfig(threshold=T, keep=rule), extractor=lite0)
    g = next(m for m in r.groups().values() if any(Path(r.files[i].path).name == kept for i in m))
    assert Path(r.files[g[0]].path).name == kept and r.kinds[g[0]] == "keeper"


def test_rerun_reuses_features_and_a_new_model_is_refused(tmp_path: Path, collection, lite0, monkeypatch) -> None:
    folder, _ = collection
    out = tmp_path / "scan"
    first = find_duplicates([str(folder)], out, DedupConfig(threshold=T), extractor=lite0)
    import neardup.dedup.features as features

    def no_extraction(*a: Any, **k: Any) -> None:
        raise AssertionError("a re-run must not extract again")

    monkeypatch.setattr(features.FeatureCache, "_extract", no_extraction)
    again = find_duplicates([str(folder)], out, DedupConfig(threshold=T), extractor=lite0)
    assert again.path_groups() == first.path_groups()
    assert len(list((out / "features").glob("part-*.json"))) == 1
    with pytest.raises(UsageError, match="holds features of model 'efficientnet_lite0'"):
        find_duplicates([str(folder)], out, DedupConfig(threshold=T, model="phash"))


def test_add_gives_the_groups_of_a_full_scan(tmp_path: Path, photo_source: Path, lite0) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(photo_source, a)
    made = plant_copies(photo_source, b)
    cfg = DedupConfig(threshold=T)
    full = run_scan([str(a), str(b)], tmp_path / "full", cfg, report=False, extractor=lite0)
    run_scan([str(a)], tmp_path / "inc", cfg, report=False, extractor=lite0)
    added = run_scan([str(b)], tmp_path / "inc", cfg, add=True, report=False, extractor=lite0)
    assert added.path_groups() == full.path_groups() and len(full.path_groups()) == len(made)
    parts = sorted((tmp_path / "inc" / "features").glob("part-*.json"))
    assert len(parts) == 2  # the second part holds only the new contents
    new = json.loads(parts[1].read_text())["paths"]
    assert {Path(p).parent for p in new} == {b.resolve()} and len(new) == len(made) - 1  # copy_exact's bytes were known
    summary = json.loads((tmp_path / "inc" / "summary.json").read_text())
    assert summary["inputs"] == [str(a), str(b)]
    with pytest.raises(UsageError, match="--add needs an earlier scan"):
        run_scan([str(b)], tmp_path / "none", cfg, add=True, report=False, extractor=lite0)


def test_against_reports_only_copies_of_the_reference(tmp_path: Path, photo_source: Path, lite0) -> None:
    ref = tmp_path / "ref"
    shutil.copytree(photo_source, ref)
    new = tmp_path / "new"
    plant_copies(photo_source, new)
    cfg = DedupConfig(threshold=T)
    full = find_duplicates([str(new), str(ref)], tmp_path / "full", cfg, extractor=lite0)
    vs = find_duplicates([str(new)], tmp_path / "vs", cfg, against=[str(ref)], extractor=lite0)
    assert vs.path_groups() == full.path_groups()
    for g, m in vs.groups().items():
        assert vs.reference[vs.keepers[g]]  # the reference is kept
        assert not vs.reference[[i for i in m if i != vs.keepers[g]]].any()
    with pytest.raises(UsageError, match="both in PATH and in --against"):
        find_duplicates([str(new)], tmp_path / "bad", cfg, against=[str(new)], extractor=lite0)


def test_outputs_and_their_schema(tmp_path: Path, collection, lite0) -> None:
    folder, made = collection
    out = tmp_path / "scan"
    run_scan([str(folder)], out, DedupConfig(threshold=T), report=False, extractor=lite0)
    rows = list(csv.DictReader((out / "groups.csv").read_text().splitlines()))
    assert list(rows[0]) == ["group", "path", "is_keeper", "score", "kind", "width", "height", "bytes", "mtime_ns",
                             "reference"]
    assert len(rows) == 10 and sum(r["is_keeper"] == "1" for r in rows) == 5
    small = next(r for r in rows if r["path"].endswith("copy_small.jpg"))
    orig = next(r for r in rows if r["path"].endswith(made["copy_small.jpg"]))
    assert int(small["width"]) * 2 in (int(orig["width"]), int(orig["width"]) - 1)
    assert int(small["bytes"]) == (folder / "copy_small.jpg").stat().st_size
    pairs = list(csv.DictReader((out / "pairs.csv").read_text().splitlines()))
    assert len(pairs) == 5 and all(float(p["score"]) >= T for p in pairs)
    from neardup.dedup.outputs import read_summary

    s = read_summary(out)
    assert s["groups"] == 5 and s["config"]["threshold"] == T and set(s["timings_s"]) >= {"hash", "features", "knn"}
    (out / "summary.json").write_text(json.dumps({**s, "groups": -1}))
    with pytest.raises(UsageError, match="at groups"):
        read_summary(out)


def test_calibrated_threshold_and_its_cache(tmp_path: Path, collection, lite0, monkeypatch) -> None:
    folder, made = collection
    out = tmp_path / "scan"
    cfg = DedupConfig(calibration_images=12, copies_per_image=2)
    r = find_duplicates([str(folder)], out, cfg, extractor=lite0)
    cal = r.calibration
    assert cal is not None and r.threshold == cal.threshold
    # 15 distinct contents (12 photos + 5 copies, 2 of them the same content as their original): 12 sampled
    assert cal.n_positives == 12 * 2 and cal.n_decoys == 12 and 1 <= cal.n_neighbours <= 12
    assert cal.n_negatives == cal.n_decoys + cal.n_neighbours
    with np.load(out / "calibration.npz") as z:
        assert len(z["pos"]) == cal.n_positives and len(z["neg"]) == cal.n_negatives
        # the threshold reaches the target on its own sample, or says it did not
        tpr = (z["pos"] >= cal.threshold).mean()
        fpr = (z["neg"] >= cal.threshold).mean()
        assert cal.reached == (tpr / (tpr + fpr) >= 0.99) and abs(cal.recall - tpr) < 1e-9
    # exact copies are always grouped, whatever the calibrated threshold
    assert {"copy_exact.jpg", made["copy_exact.jpg"]} in names(r)
    import neardup.dedup.scores as scores

    monkeypatch.setattr(scores, "score_sample", lambda *a, **k: (_ for _ in ()).throw(AssertionError("cached")))
    again = find_duplicates([str(folder)], out, cfg, extractor=lite0)
    assert again.threshold == r.threshold


@pytest.mark.parametrize("field, value, message", [
    ("threshold", 1.5, "--threshold"), ("threshold", float("nan"), "--threshold"), ("precision", 1.0, "--precision"),
    ("keep", "biggest", "--keep"), ("k", 1, "-k|--k"), ("model", "nope", "nope"), ("calibration_images", 1,
                                                                                   "--calibration-images"),
    ("min_pair_share", 1.5, "--min-pair-share"), ("max_bridge", -0.1, "--max-bridge"),
    ("norm_beta", 1.0, "--norm-beta applies only")])
def test_bad_options_are_one_error(tmp_path: Path, field: str, value: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        find_duplicates([str(tmp_path)], tmp_path / "out", DedupConfig(**{field: value}))


def test_feature_folders_are_reused_not_extracted_again(tmp_path: Path, collection, lite0, monkeypatch) -> None:
    from neardup.extract.config import ExtractConfig
    from neardup.extract.pipeline import extract_features

    folder, made = collection
    extract_features(folder, tmp_path / "feats", ExtractConfig(engine="torch"), extractor=lite0, show_progress=False)
    import neardup.dedup.features as features

    monkeypatch.setattr(features.FeatureCache, "_extract",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("features were given")))
    r = find_duplicates([str(tmp_path / "feats")], tmp_path / "scan", DedupConfig(threshold=T), extractor=lite0)
    assert names(r) == expected(made)
    monkeypatch.undo()
    extract_features(folder, tmp_path / "hashes", ExtractConfig(model="phash"), show_progress=False)
    with pytest.raises(UsageError, match="phash"):
        find_duplicates([str(tmp_path / "hashes")], tmp_path / "scan2", DedupConfig(threshold=T), extractor=lite0)


def test_a_symlink_is_not_a_copy_of_its_target(tmp_path: Path, collection, lite0) -> None:
    folder, made = collection
    target = folder / "p05_immunohistochemistry.jpg"
    (folder / "link.jpg").symlink_to(target)
    r = find_duplicates([str(folder)], tmp_path / "scan", DedupConfig(threshold=T), extractor=lite0)
    assert names(r) == expected(made)  # the link is its target: one file, in no group
    assert sum(Path(f.path) == target.resolve() for f in r.files) == 1
    assert not any(Path(f.path).name == "link.jpg" for f in r.files)
