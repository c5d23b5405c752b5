"""``neardup evaluate-retrieval``: protocols (leave-one-out, query set, class split), outputs, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from neardup.data.labels import labels_from_csv, labels_from_folders
from neardup.errors import UsageError
from neardup.evaluation.inputs import load_retrieval_inputs
from neardup.evaluation.retrieval import RetrievalConfig, evaluate_retrieval, split_classes
from neardup.evaluation.schema import check_retrieval, load_retrieval
from neardup.outdir import owner
from tests.helpers import expect_error, invoke

from .conftest import clustered, labelled_store, write_labels_csv


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def six_classes(tmp_path: Path) -> tuple[Path, Path, np.ndarray, list[str]]:
    X, y = clustered(n_classes=6, sizes=(5, 9), seed=3)
    classes = [f"c{c}" for c in y]
    store, root = labelled_store(tmp_path, X, classes)
    return store, root, X, classes


def test_leave_one_out_cli_writes_every_output(six_classes, tmp_path) -> None:
    store, root, X, classes = six_classes
    out = tmp_path / "eval"
    res = invoke("evaluate-retrieval", store, "--class-folders", root, "--out", out, "--quiet")
    assert f"wrote {out / 'retrieval.json'}" in res.output
    doc = load_retrieval(out / "retrieval.json")  # valid neardup.retrieval/1
    assert doc["protocol"] == "loo" and doc["n_queries"] == doc["n_database"] == len(X) and doc["n_classes"] == 6
    assert doc["split"] is None and doc["vote_k"] == 5 and doc["metric"] == "cosine" and doc["model"] == "toy"
    assert [r["class"] for r in doc["per_class"]] == sorted(set(classes))
    assert {p.name for p in out.iterdir()} >= {"retrieval.json", "per_class.csv", "queries.csv", "config.yaml",
                                               "confusion_top1.csv", "confusion_vote.csv", "confusion_top1.png",
                                               "confusion_vote.png"}
    assert owner(out) == "evaluate-retrieval"
    q = rows(out / "queries.csv")
    assert len(q) == len(X) and all(r["nearest"] != r["path"] for r in q)  # the query is not its own neighbour
    top1 = np.mean([r["top1"] == r["class"] for r in q])
    assert doc["overall"]["top1_accuracy"] == pytest.approx(top1)
    assert doc["overall"]["precision_at_1"] == pytest.approx(top1)  # every class has >= 2 images
    conf = rows(out / "confusion_top1.csv")
    assert sum(int(r["count"]) for r in conf) == len(X)
    assert sum(int(r["count"]) for r in conf if r["true"] == r["predicted"]) == round(top1 * len(X))  # diagonal
    per = rows(out / "per_class.csv")
    assert [r["class"] for r in per] == [r["class"] for r in doc["per_class"]]
    assert float(per[0]["mAP"]) == pytest.approx(doc["per_class"][0]["mAP"], abs=1e-6)
    # printed table
    table = invoke("evaluate-retrieval", store, "--class-folders", root, "--out", out, "--no-plots").output
    assert "overall" in table and "MAP@R" in table and "c0" in table
    assert not (out / "confusion_top1.png").exists()  # a re-run replaces the whole output


def test_exact_duplicates_stay_only_the_query_is_left_out(tmp_path) -> None:
    # rows 0, 1 (class A) and 2 (class B) are the same vector; row 3 (B) is orthogonal to them
    X = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    store, root = labelled_store(tmp_path, X, ["A", "A", "B", "B"])
    inp = load_retrieval_inputs(str(store), labels_from_folders(root))
    out = evaluate_retrieval(inp.data, RetrievalConfig(vote_k=1))
    # row 0: its duplicates rows 1 (A) and 2 (B) tie at distance 0: the lower row first, so the nearest is row 1
    assert out.outcomes.nearest.tolist() == [1, 0, 0, 0]
    assert out.outcomes.positives.tolist() == [1, 1, 1, 1]  # R never counts the query itself
    assert out.outcomes.top1.tolist() == [0, 0, 0, 0]  # row 2 (B) meets two A duplicates first
    np.testing.assert_allclose(out.outcomes.figures["mAP"], [1, 1, 1 / 3, 1 / 3])


def test_query_set_against_a_database(tmp_path) -> None:
    X, y = clustered(n_classes=4, sizes=(8, 12), seed=6)
    classes = [f"k{c}" for c in y]
    db, root = labelled_store(tmp_path, X[10:], classes[10:], name="db")
    # the queries: 10 new images plus 2 images that are also in the database (same files, same vectors)
    shared = [str(root / c / f"db_{i:04d}.png") for i, c in enumerate(classes[10:12])]
    qroot = tmp_path / "q_images"
    qstore, _ = labelled_store(tmp_path, X[:10], classes[:10], name="q", root=qroot)
    from tests.clustering.conftest import make_store

    qpaths = json.loads((qstore / "shards" / "00000.json").read_text())["paths"] + shared
    make_store(tmp_path / "q2", np.concatenate([X[:10], X[10:12]]), qpaths, tmp_path)
    lab = write_labels_csv(tmp_path / "labels.csv",
                           [(p, c) for p, c in zip(qpaths[:10], classes[:10], strict=True)]
                           + [(str(root / c / f"db_{i:04d}.png"), c) for i, c in enumerate(classes[10:])])
    out = tmp_path / "eval"
    invoke("evaluate-retrieval", db, "--queries", tmp_path / "q2", "--labels", lab, "--out", out, "--quiet")
    doc = load_retrieval(out / "retrieval.json")
    assert doc["protocol"] == "queries" and doc["n_queries"] == 12 and doc["n_database"] == len(X) - 10
    q = rows(out / "queries.csv")
    for r in q[10:]:  # a query that is in the database is left out of its own ranking
        assert r["nearest"] != r["path"]
        assert int(r["positives"]) == classes[10:].count(r["class"]) - 1
    for r in q[:10]:
        assert int(r["positives"]) == classes[10:].count(r["class"])
    # the library gives the same figures
    inp = load_retrieval_inputs(str(db), labels_from_csv(lab), str(tmp_path / "q2"))
    assert inp.data.self_index.tolist() == [-1] * 10 + [0, 1]
    res = evaluate_retrieval(inp.data, RetrievalConfig().validate(has_queries=True)).result
    assert res.overall == doc["overall"]
    # labels must cover the query set too: one error line naming the query side
    lab2 = write_labels_csv(tmp_path / "db_only.csv",
                            [(str(root / c / f"db_{i:04d}.png"), c) for i, c in enumerate(classes[10:])])
    expect_error("evaluate-retrieval", db, "--queries", tmp_path / "q2", "--labels", lab2, "--out", tmp_path / "e2",
                 message="10 query feature path(s) have no label")
    assert not (tmp_path / "e2").exists()


def test_split_classes_never_leaks_a_class(six_classes, tmp_path) -> None:
    store, root, X, classes = six_classes
    out = tmp_path / "eval"
    res = invoke("evaluate-retrieval", store, "--class-folders", root, "--split-classes", 7, "--out", out)
    doc = load_retrieval(out / "retrieval.json")
    train, held = set(doc["split"]["train_classes"]), set(doc["split"]["eval_classes"])
    assert doc["split"]["seed"] == 7 and len(train) == len(held) == 3
    assert not train & held and train | held == set(classes)
    assert (out / "train_classes.txt").read_text().splitlines() == sorted(train)
    assert (out / "eval_classes.txt").read_text().splitlines() == sorted(held)
    assert "to train on" in res.output
    # nothing of a training class reaches the evaluation: queries, their classes, their neighbours
    q = rows(out / "queries.csv")
    assert len(q) == sum(c in held for c in classes) == doc["n_queries"] == doc["n_database"]
    by_path = {str(root / c / f"f_{i:04d}.png"): c for i, c in enumerate(classes)}
    for r in q:
        assert r["class"] in held and r["top1"] in held and r["vote"] in held
        assert by_path[r["path"]] in held and by_path[r["nearest"]] in held
    assert {r["class"] for r in doc["per_class"]} == held
    conf = rows(out / "confusion_top1.csv")
    assert {r["true"] for r in conf} | {r["predicted"] for r in conf} <= held
    # the training labels hold every image of the training classes and nothing else: neardup train can read them
    train_rows = rows(out / "train_labels.csv")
    assert {r["label"] for r in train_rows} == train
    assert len(train_rows) == sum(c in train for c in classes)
    assert not {r["path"] for r in train_rows} & {r["path"] for r in q}
    assert set(labels_from_csv(out / "train_labels.csv").classes) == train
    # a re-run without the split leaves no stale split file behind
    invoke("evaluate-retrieval", store, "--class-folders", root, "--out", out, "--quiet", "--no-plots")
    assert not (out / "train_classes.txt").exists() and not (out / "train_labels.csv").exists()


def test_split_is_seeded_disjoint_and_covers_every_class() -> None:
    names = [f"n{i}" for i in range(11)]
    a, b = split_classes(names, 3), split_classes(list(reversed(names)), 3)
    assert a == b  # depends on the set of names and the seed only
    assert len(a.train) == 5 and len(a.eval) == 6 and not set(a.train) & set(a.eval)
    assert sorted(a.train + a.eval) == sorted(names)
    assert len({tuple(split_classes(names, s).train) for s in range(10)}) > 5  # the seed matters
    with pytest.raises(UsageError, match="at least 2 classes"):
        split_classes(["only"], 0)


def test_split_with_a_query_set_filters_both_sides(tmp_path) -> None:
    X, y = clustered(n_classes=6, sizes=(6, 8), seed=8)
    classes = [f"s{c}" for c in y]
    half = len(X) // 2
    db, root = labelled_store(tmp_path, X[half:], classes[half:], name="db", root=tmp_path / "imgs")
    qs, _ = labelled_store(tmp_path, X[:half], classes[:half], name="q", root=tmp_path / "imgs")
    labels = labels_from_folders(tmp_path / "imgs")
    inp = load_retrieval_inputs(str(db), labels, str(qs), split_seed=1)
    held = set(inp.split.eval)
    assert {inp.data.names[c] for c in inp.data.q_classes} <= held
    assert {inp.data.names[c] for c in inp.data.db_classes} <= held
    assert len(inp.data.q_paths) == sum(c in held for c in classes[:half])


def test_class_of_one_image_under_leave_one_out(tmp_path) -> None:
    """A class with one image has no positive: left out of the retrieval figures, counted wrong in top1/vote."""
    X, y = clustered(n_classes=3, sizes=(5, 6), seed=2)
    classes = [f"g{c}" for c in y] + ["alone"]
    X = np.concatenate([X, X[:1] + 0.01])
    store, root = labelled_store(tmp_path, X, classes)
    out = tmp_path / "eval"
    res = invoke("evaluate-retrieval", store, "--class-folders", root, "--out", out)
    doc = load_retrieval(out / "retrieval.json")
    assert doc["n_without_positive"] == 1 and doc["n_scored"] == len(X) - 1
    assert doc["classes_without_positive"] == ["alone"]
    row = next(r for r in doc["per_class"] if r["class"] == "alone")
    assert row["n_scored"] == 0 and row["mAP"] is None and row["precision_at_1"] is None
    assert row["top1_accuracy"] == 0.0 and row["vote_accuracy"] == 0.0
    q = rows(out / "queries.csv")
    assert q[-1]["class"] == "alone" and q[-1]["positives"] == "0" and q[-1]["mAP"] == ""
    # retrieval figures average the 16 others; top-1 accuracy counts all 17 queries
    scored = [r for r in q if r["positives"] != "0"]
    assert doc["overall"]["precision_at_1"] == pytest.approx(np.mean([r["top1"] == r["class"] for r in scored]))
    assert doc["overall"]["top1_accuracy"] == pytest.approx(np.mean([r["top1"] == r["class"] for r in q]))
    assert "have no positive in the database (e.g. 'alone')" in res.output


def test_every_class_alone_is_one_error(tmp_path) -> None:
    store, root = labelled_store(tmp_path, np.eye(3, dtype=np.float32), ["a", "b", "c"])
    expect_error("evaluate-retrieval", store, "--class-folders", root, "--out", tmp_path / "e",
                 message="no query has a positive")
    store1, root1 = labelled_store(tmp_path, np.eye(1, 3, dtype=np.float32), ["a"], name="one")
    expect_error("evaluate-retrieval", store1, "--class-folders", root1, "--out", tmp_path / "e",
                 message="leave-one-out needs at least 2")


def test_features_without_labels_is_one_error(six_classes, tmp_path) -> None:
    store, root, X, classes = six_classes
    listed = sorted(str(p) for p in root.rglob("*.png"))[:-3]  # three images left unlabelled
    lab = write_labels_csv(tmp_path / "partial.csv", [(p, Path(p).parent.name) for p in listed])
    line = expect_error("evaluate-retrieval", store, "--labels", lab, "--out", tmp_path / "e",
                        message="3 feature path(s) have no label in")
    assert "partial.csv" in line
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("args, message", [
    (["--protocol", "queries"], "needs --queries"),
    (["--vote-k", "0"], "Invalid value for '--vote-k'"),
    (["--split-classes", "-1"], "Invalid value for '--split-classes'"),
    (["--metric", "hamming"], "needs packed-bit"),
    ([], "exactly one of --labels CSV, --class-folders DIR"),
])
def test_bad_options_are_one_error(six_classes, tmp_path, args, message) -> None:
    store, root, _, _ = six_classes
    labels = [] if not args else ["--class-folders", root]
    expect_error("evaluate-retrieval", store, *labels, *args, "--out", tmp_path / "e", message=message)


def test_other_space_and_foreign_folder_are_refused(six_classes, tmp_path) -> None:
    store, root, X, classes = six_classes
    other, _ = labelled_store(tmp_path, X[:, :8], classes, name="narrow", root=root)
    expect_error("evaluate-retrieval", store, "--queries", other, "--class-folders", root, "--out", tmp_path / "e",
                 message="feature spaces disagree")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    expect_error("evaluate-retrieval", store, "--class-folders", root, "--out", foreign, message="not empty")
    invoke("evaluate-retrieval", store, "--class-folders", root, "--out", foreign, "--overwrite", "--quiet")
    assert (foreign / "notes.txt").read_text() == "keep me" and (foreign / "retrieval.json").is_file()


def test_hashes_use_hamming(tmp_path) -> None:
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 2, (3, 64))
    y = np.repeat(np.arange(3), 4)
    bits = centres[y].copy()
    bits[np.arange(12), rng.integers(0, 64, 12)] ^= 1
    from tests.clustering.conftest import make_store

    root = tmp_path / "imgs"
    paths = []
    for i, c in enumerate(y):
        (root / f"h{c}").mkdir(parents=True, exist_ok=True)
        (root / f"h{c}" / f"{i}.png").touch()
        paths.append(str(root / f"h{c}" / f"{i}.png"))
    store = make_store(tmp_path / "hashes", np.packbits(bits.astype(np.uint8), axis=1), paths, root, model="phash",
                       metric="hamming")
    invoke("evaluate-retrieval", store, "--class-folders", root, "--out", tmp_path / "e", "--quiet")
    doc = load_retrieval(tmp_path / "e" / "retrieval.json")
    assert doc["metric"] == "hamming" and doc["overall"]["precision_at_1"] == 1.0 and doc["overall"]["mAP"] == 1.0


def test_config_file_sets_options(six_classes, tmp_path) -> None:
    store, root, _, _ = six_classes
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"class_folders: {root}\nvote_k: 3\nsplit_classes: 5\n")
    invoke("evaluate-retrieval", store, "--config", cfg, "--out", tmp_path / "e", "--quiet", "--no-plots")
    doc = load_retrieval(tmp_path / "e" / "retrieval.json")
    assert doc["vote_k"] == 3 and doc["split"]["seed"] == 5


def test_schema_refuses_damaged_results(six_classes, tmp_path) -> None:
    store, root, _, _ = six_classes
    invoke("evaluate-retrieval", store, "--class-folders", root, "--out", tmp_path / "e", "--quiet", "--no-plots")
    doc = json.loads((tmp_path / "e" / "retrieval.json").read_text())
    assert check_retrieval(doc) is doc
    for damage, message in [
        (lambda d: d.pop("overall"), "missing 'overall'"),
        (lambda d: d["overall"].update(mAP=1.5), "greater than the maximum"),
        (lambda d: d.update(schema="neardup.retrieval/2"), "expected schema neardup.retrieval/1"),
        (lambda d: d["per_class"][0].update(extra=1), "unexpected key 'extra'"),
        (lambda d: d.update(split={"seed": 1}), "$.split"),
    ]:
        bad = json.loads(json.dumps(doc))
        damage(bad)
        with pytest.raises(UsageError, match=None) as exc:
            check_retrieval(bad, "r.json")
        assert message in str(exc.value) and "r.json" in str(exc.value)


def test_confusion_plot_keeps_the_most_confused_of_many_classes(tmp_path) -> None:
    from neardup.evaluation.plots import most_confused, plot_confusion

    n = 40
    true = np.arange(n).repeat(3)
    pred = true.copy()
    pred[::3] = (true[::3] + 1) % n  # one error per class...
    pred[3 * 7 + 1] = pred[3 * 7 + 2] = 30  # ...and class 7 twice more, into class 30
    cells = np.unique(true * n + pred, return_counts=True)
    t, p, c = cells[0] // n, cells[0] % n, cells[1]
    keep = most_confused(t, p, c, n, 5)
    assert {7, 30} <= set(keep.tolist()) and len(keep) == 5
    png = plot_confusion(t, p, c, [f"class{i}" for i in range(n)], tmp_path / "c.png", "test", max_classes=5)
    assert png.read_bytes().startswith(b"\x89PNG")


def test_relative_store_paths_resolve_from_any_folder(tmp_path, monkeypatch) -> None:
    """extract records paths as given (relative to where it ran): labels still match from another folder."""
    from tests.clustering.conftest import make_store

    X, y = clustered(n_classes=2, sizes=(4, 4), seed=1)
    work = tmp_path / "work"
    rel = []
    for i, c in enumerate(y):
        p = work / "photos" / f"c{c}" / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
        rel.append(f"photos/c{c}/{i}.png")
    store = make_store(tmp_path / "feats", X, rel, work / "photos")  # root: the input folder, absolute
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    invoke("evaluate-retrieval", store, "--class-folders", work / "photos", "--out", "eval", "--quiet", "--no-plots")
    q = rows(elsewhere / "eval" / "queries.csv")
    assert [r["path"] for r in q] == [str(work / p) for p in rel]
