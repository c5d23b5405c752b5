"""The persistent index folder: generations switched by one rename, the writer lock, crashes, old layouts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import neardup.fastsearch.persist as persist
from neardup.errors import UsageError
from neardup.fastsearch.persist import CURRENT, IndexDir, add_features, build_index_dir, is_index_dir, query_index
from neardup.outdir import folder_lock

from .conftest import clustered, make_store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, Path]:
    """A 200-vector feature folder, and two 10-vector ones of the same model (new images)."""
    db, _, _ = clustered(220, 16, 5)
    return {"a": make_store(tmp_path / "a", db[:200], [f"a{i}.jpg" for i in range(200)]),
            "b": make_store(tmp_path / "b", db[200:210], [f"b{i}.jpg" for i in range(10)]),
            "c": make_store(tmp_path / "c", db[210:], [f"c{i}.jpg" for i in range(10)])}


def counts(root: Path) -> tuple[int, int, int]:
    idx = IndexDir.open(root)
    return idx.index.ntotal, len(idx.paths), idx.meta.ntotal


def generations(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("gen-*"))


def test_add_writes_a_new_generation_and_switches_the_pointer(stores, tmp_path):
    out = tmp_path / "idx"
    build_index_dir(stores["a"], "Flat", out)
    assert (out / CURRENT).read_text() == "gen-000001\n" and generations(out) == ["gen-000001"]
    assert add_features(out, stores["b"]) == 10
    assert (out / CURRENT).read_text() == "gen-000002\n"
    assert generations(out) == ["gen-000002"]  # the previous generation is removed after the switch
    assert counts(out) == (210, 210, 210)
    meta = json.loads((out / "gen-000002" / "meta.json").read_text())
    assert meta["index_bytes"] == (out / "gen-000002" / "index.faiss").stat().st_size
    assert add_features(out, stores["b"]) == 0 and generations(out) == ["gen-000002"]  # nothing new: no commit


def test_a_crash_after_index_faiss_leaves_the_previous_generation(stores, tmp_path, monkeypatch):
    out = tmp_path / "idx"
    build_index_dir(stores["a"], "Flat", out)
    real = persist.atomic_write_json

    def crash(path, obj):
        if Path(path).name == "paths.json":
            assert (Path(path).parent / "index.faiss").is_file()  # the index file is already written
            raise OSError("simulated crash")
        real(path, obj)

    monkeypatch.setattr(persist, "atomic_write_json", crash)
    with pytest.raises(OSError, match="simulated crash"):
        add_features(out, stores["b"])
    assert counts(out) == (200, 200, 200)  # the committed generation is untouched
    assert (out / CURRENT).read_text() == "gen-000001\n"
    monkeypatch.setattr(persist, "atomic_write_json", real)
    assert add_features(out, stores["b"]) == 10  # the retry succeeds and removes the leftover
    assert counts(out) == (210, 210, 210)
    assert generations(out) == [(out / CURRENT).read_text().strip()]


CHILD = """
import os, signal, sys
import neardup.fastsearch.persist as persist
point, index_dir, features = sys.argv[1:]
def kill():
    os.kill(os.getpid(), signal.SIGKILL)
if point == "index-written":
    real = persist.atomic_write_json
    def hook(path, obj):
        if path.name == "paths.json":
            kill()
        real(path, obj)
    persist.atomic_write_json = hook
elif point == "half-index":
    real_write = persist.write_index
    def hook(index, path):
        real_write(index, path)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        kill()
    persist.write_index = hook
elif point == "committed":
    real = persist._remove_generations
    calls = []
    def hook(root, keep):
        calls.append(1)
        if len(calls) == 2:  # after the pointer switch, before the old generation is removed
            kill()
        real(root, keep)
    persist._remove_generations = hook
persist.add_features(index_dir, features)
"""


@pytest.mark.parametrize("point, n_after", [("half-index", 200), ("index-written", 200), ("committed", 210)])
def test_sigkill_during_add_never_leaves_an_inconsistent_index(stores, tmp_path, point, n_after):
    out = tmp_path / "idx"
    build_index_dir(stores["a"], "Flat", out)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, point, str(out), str(stores["b"])], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert counts(out) == (n_after, n_after, n_after)
    assert add_features(out, stores["c"]) == 10  # the next writer cleans up and commits
    assert counts(out) == (n_after + 10,) * 3
    assert generations(out) == [(out / CURRENT).read_text().strip()]
    assert not list(out.glob("gen-*/.*.tmp"))


def test_a_second_writer_gets_one_clear_error(stores, tmp_path):
    out = tmp_path / "idx"
    build_index_dir(stores["a"], "Flat", out)
    with folder_lock(out):  # another process updating the index
        with pytest.raises(UsageError, match="another neardup process is updating"):
            add_features(out, stores["b"])
        with pytest.raises(UsageError, match="another neardup process"):
            build_index_dir(stores["a"], "Flat", out, overwrite=True)
    assert counts(out) == (200, 200, 200)


def test_concurrent_adds_stay_consistent(stores, tmp_path, monkeypatch):
    """Two adds at once: one commits, the other is refused (never 10 vectors against 20 paths)."""
    out = tmp_path / "idx"
    build_index_dir(stores["a"], "Flat", out)
    inside, release = threading.Event(), threading.Event()
    real_open = IndexDir.open.__func__

    def slow_open(cls, root, retries=3):
        idx = real_open(cls, root, retries)
        if threading.current_thread().name == "first":
            inside.set()
            release.wait(30)
        return idx

    monkeypatch.setattr(IndexDir, "open", classmethod(slow_open))
    results: dict[str, object] = {}

    def run(name: str, store: str) -> None:
        try:
            results[name] = add_features(out, stores[store])
        except UsageError as exc:
            results[name] = exc

    first = threading.Thread(target=run, args=("first", "b"), name="first")
    first.start()
    assert inside.wait(30)
    run("second", "c")  # while the first holds the lock
    release.set()
    first.join(30)
    assert results["first"] == 10
    assert isinstance(results["second"], UsageError) and "another neardup process" in str(results["second"])
    assert counts(out) == (210, 210, 210)
    assert add_features(out, stores["c"]) == 10  # afterwards it goes through
    assert counts(out) == (220, 220, 220)


def test_concurrent_add_processes_stay_consistent(stores, tmp_path):
    out = tmp_path / "idx"
    build_index_dir(stores["a"], "Flat", out)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    code = "import sys; from neardup.fastsearch.persist import add_features; add_features(sys.argv[1], sys.argv[2])"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out), str(stores[s])], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for s in ("b", "c")]
    outcomes = [(p.wait(120), p.stderr.read()) for p in procs]
    for rc, err in outcomes:
        assert rc == 0 or "another neardup process" in err, err
    n = 200 + 10 * sum(rc == 0 for rc, _ in outcomes)
    assert counts(out) == (n, n, n)


def test_rebuild_with_overwrite_keeps_the_old_index_until_the_commit(stores, tmp_path, monkeypatch):
    out = tmp_path / "idx"
    build_index_dir(stores["a"], "Flat", out)
    with pytest.raises(UsageError, match="already holds an index"):
        build_index_dir(stores["b"], "Flat", out)

    def boom(self):
        raise OSError("disk full")

    monkeypatch.setattr(IndexDir, "commit", boom)
    with pytest.raises(OSError):
        build_index_dir(stores["b"], "Flat", out, overwrite=True)
    assert counts(out) == (200, 200, 200)
    monkeypatch.undo()
    build_index_dir(stores["b"], "Flat", out, overwrite=True)
    assert counts(out) == (10, 10, 10) and generations(out) == ["gen-000002"]


def test_build_never_replaces_files_it_did_not_write(stores, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "paths.json").write_text("precious")
    with pytest.raises(UsageError, match="not empty"):
        build_index_dir(stores["a"], "Flat", out)
    with pytest.raises(UsageError, match="paths.json exists and was not written by neardup"):
        build_index_dir(stores["a"], "Flat", out, overwrite=True)
    assert (out / "paths.json").read_text() == "precious"
    (out / "paths.json").rename(out / "notes.json")
    build_index_dir(stores["a"], "Flat", out, overwrite=True)  # beside the user's file
    assert (out / "notes.json").read_text() == "precious" and counts(out) == (200, 200, 200)
    with pytest.raises(UsageError, match="holds the output of `neardup extract`"):
        (tmp_path / "feats").mkdir()
        (tmp_path / "feats" / "x.npy").write_text("x")
        (tmp_path / "feats" / ".neardup.json").write_text('{"command": "extract"}')
        build_index_dir(stores["a"], "Flat", tmp_path / "feats", overwrite=True)


def _to_old_layout(root: Path) -> None:
    """The flat layout of indexes written before generations (and before checksums)."""
    gen = root / (root / CURRENT).read_text().strip()
    for name in ("index.faiss", "paths.json", "meta.json"):
        (gen / name).rename(root / name)
    meta = json.loads((root / "meta.json").read_text())
    del meta["index_bytes"], meta["index_sha256"], meta["paths_resolved"]
    (root / "meta.json").write_text(json.dumps(meta))
    gen.rmdir()
    (root / CURRENT).unlink()
    (root / ".neardup.json").unlink()


def test_old_flat_layout_is_read_and_upgraded_on_add(stores, tmp_path):
    out = tmp_path / "idx"
    build_index_dir(stores["a"], "Flat", out)
    _to_old_layout(out)
    assert is_index_dir(out) and counts(out) == (200, 200, 200)
    assert add_features(out, stores["b"]) == 10
    assert counts(out) == (210, 210, 210) and (out / CURRENT).read_text() == "gen-000001\n"
    assert not (out / "index.faiss").exists() and not (out / "meta.json").exists()  # the old generation
    with pytest.raises(UsageError, match="already holds an index"):
        build_index_dir(stores["a"], "Flat", out)


def test_old_layout_paths_as_given_are_compared_resolved(stores, tmp_path, monkeypatch):
    """Older folders stored paths as given (e.g. relative): another spelling of one of them is still a duplicate."""
    out = tmp_path / "idx"
    build_index_dir(stores["b"], "Flat", out)
    _to_old_layout(out)
    monkeypatch.chdir(tmp_path)
    (out / "paths.json").write_text(json.dumps([f"b/b{i}.jpg" for i in range(10)]))  # relative, as older versions kept
    assert add_features(out, stores["b"]) == 0  # the absolute spelling of the same files
    assert add_features(out, stores["c"]) == 10
    idx = IndexDir.open(out)
    assert idx.paths[:10] == [f"b/b{i}.jpg" for i in range(10)]  # what was stored is kept as it was
    assert counts(out) == (20, 20, 20)


def test_paths_are_normalised_so_one_file_is_indexed_once(tmp_path, monkeypatch):
    db, _, _ = clustered(60, 16, 5)
    (tmp_path / "imgs").mkdir()
    monkeypatch.chdir(tmp_path)
    make_store(tmp_path / "rel", db[:50], [f"x{i}.jpg" for i in range(50)])
    # the same files spelled relative to the working folder, with ./ and ..; plus 2 new ones twice
    rel = make_store(tmp_path / "again", db[:12], [f"x{i}.jpg" for i in range(10)] + ["n1.jpg", "n1.jpg"])
    shard = json.loads((rel / "shards" / "00000.json").read_text())
    shard["paths"] = [f"rel/x{i}.jpg" if i % 2 else f"./imgs/../rel/x{i}.jpg" for i in range(10)] + \
                     ["rel/n1.jpg", str(tmp_path / "rel" / "n1.jpg")]
    (rel / "shards" / "00000.json").write_text(json.dumps(shard))
    build_index_dir(tmp_path / "rel", "Flat", tmp_path / "idx")
    assert add_features(tmp_path / "idx", rel) == 1
    idx = IndexDir.open(tmp_path / "idx")
    assert idx.paths[-1] == str((tmp_path / "rel" / "n1.jpg").resolve())
    assert all(Path(p).is_absolute() for p in idx.paths) and len(set(idx.paths)) == 51


@pytest.mark.parametrize("damage, message", [
    (lambda g: (g / "index.faiss").write_bytes((g / "index.faiss").read_bytes()[:100]), "is damaged"),
    (lambda g: (g / "index.faiss").write_bytes(os.urandom((g / "index.faiss").stat().st_size)), "checksum"),
    (lambda g: (g / "index.faiss").unlink(), "missing"),
    (lambda g: (g / "paths.json").write_text("[1, 2"), "not valid JSON"),
    (lambda g: (g / "paths.json").write_text('{"a": 1}'), "not a list of paths"),
    (lambda g: (g / "paths.json").write_text('["a.jpg"]'), "inconsistent"),
    (lambda g: (g / "meta.json").write_text("{}"), "not a neardup index"),
    (lambda g: (g / "meta.json").write_bytes(b"\xff\xfe"), "not UTF-8"),
    (lambda g: _edit_meta(g, ntotal="many"), "ntotal is 'many'"),
    (lambda g: _edit_meta(g, metric="euclid"), "metric 'euclid'"),
    (lambda g: _edit_meta(g, binary=True), "not a readable faiss index"),
    (lambda g: _edit_meta(g, num_features=8), "inconsistent"),
    (lambda g: _edit_meta(g, model=None), "model is None"),
    (lambda g: (g.parent / CURRENT).write_text("../../etc\n"), "CURRENT is damaged"),
    (lambda g: (g.parent / CURRENT).write_text("gen-000007\n"), "missing"),
], ids=["truncated", "random-bytes", "no-index", "paths-not-json", "paths-not-list", "paths-too-few",
        "meta-empty", "meta-not-utf8", "meta-bad-type", "meta-bad-metric", "meta-wrong-kind", "meta-wrong-dim",
        "meta-null", "pointer-garbage", "pointer-dangling"])
def test_damaged_index_folders_are_one_clear_error(stores, tmp_path, damage, message):
    out = tmp_path / "idx"
    build_index_dir(stores["a"], "Flat", out)
    damage(out / "gen-000001")
    with pytest.raises(UsageError, match=message):
        IndexDir.open(out)
    with pytest.raises(UsageError):
        add_features(out, stores["b"])


def _edit_meta(gen: Path, **changes) -> None:
    meta = json.loads((gen / "meta.json").read_text())
    meta.update(changes)
    (gen / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("cut", [0, 10, 100, 1000])
def test_truncated_index_in_the_old_layout(stores, tmp_path, cut):
    """Without a recorded checksum, faiss' own read error becomes the clear line."""
    out = tmp_path / "idx"
    build_index_dir(stores["a"], "Flat", out)
    _to_old_layout(out)
    data = (out / "index.faiss").read_bytes()
    (out / "index.faiss").write_bytes(data[:cut])
    with pytest.raises(UsageError, match="not a readable faiss index"):
        IndexDir.open(out)


def test_not_an_index_folder(tmp_path, stores):
    with pytest.raises(UsageError, match="index folder not found"):
        add_features(tmp_path / "nope", stores["b"])
    assert not (tmp_path / "nope").exists()  # a typo never creates a folder
    with pytest.raises(UsageError, match="no committed index"):
        add_features(tmp_path, stores["b"])
    with pytest.raises(UsageError, match="not a neardup index"):
        IndexDir.open(stores["a"])  # a feature folder has a meta.json of another schema


def test_empty_feature_folder_is_refused(tmp_path):
    empty = make_store(tmp_path / "empty", np.zeros((0, 16), np.float32), [])
    with pytest.raises(UsageError, match="holds no feature vectors"):
        build_index_dir(empty, "Flat", tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("factory, need", [("IVF1000,Flat", 1000), ("PQ4", 256), ("IVF{nlist},PQ4", 256),
                                           ("OPQ4,IVF{nlist},Flat", 256), ("PQ4x4fs", 16)])
def test_too_few_training_vectors_are_refused_before_the_folder_is_touched(tmp_path, factory, need):
    db, _, _ = clustered(10, 16, 5)
    feats = make_store(tmp_path / "ten", db, [f"t{i}.jpg" for i in range(10)])
    with pytest.raises(UsageError, match=f"needs at least {need} training vectors .* only 10 are available"):
        build_index_dir(feats, factory, tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


def test_query_on_an_empty_list_of_neighbours(tmp_path, image_dir):
    """An index whose features all came from unreadable files still answers (no faiss assertion on k=0)."""
    from neardup.extract.config import ExtractConfig
    from neardup.extract.pipeline import extract_features

    extract_features(image_dir, tmp_path / "f", ExtractConfig("phash", workers=0), show_progress=False)
    build_index_dir(tmp_path / "f", "BFlat", tmp_path / "idx")
    idx = IndexDir.open(tmp_path / "idx")
    idx.index.reset()
    idx.paths.clear()
    with folder_lock(tmp_path / "idx"):
        idx.commit()
    res = query_index(tmp_path / "idx", [str(image_dir / "img0.png")], k=3, workers=0)
    assert res.results == [{"query": str((image_dir / "img0.png").resolve()), "neighbours": []}]


def test_query_paths_with_blanks_and_newlines(tmp_path, image_dir):
    """Query paths go to the extractor as they are: no list file, so trailing blanks and newlines survive."""
    from neardup.extract.config import ExtractConfig
    from neardup.extract.pipeline import extract_features
    from tests.conftest import make_image

    extract_features(image_dir, tmp_path / "f", ExtractConfig("phash", workers=0), show_progress=False)
    build_index_dir(tmp_path / "f", "BFlat", tmp_path / "idx")
    odd = [tmp_path / "trailing blank.png ", tmp_path / "new\nline.png", tmp_path / " lead.png"]
    for p in odd:
        (image_dir / "img2.png").replace(p) if p == odd[0] else make_image(3).save(p, format="PNG")
    res = query_index(tmp_path / "idx", [str(p) for p in odd] + [str(tmp_path / "missing.png")], k=1, workers=0)
    assert [r["query"] for r in res.results] == [str(p) for p in odd]
    assert res.results[0]["neighbours"][0]["score"] == 0.0  # img2 itself (moved)
    assert res.results[1]["neighbours"][0]["path"].endswith("img3.png")
    assert [s["path"] for s in res.skipped] == [str(tmp_path / "missing.png")]
    assert res.skipped[0]["reason"]


def test_non_finite_features_are_refused(stores, tmp_path):
    db, _, _ = clustered(20, 16, 5)
    db[3, 2] = np.nan
    db[7, 0] = np.inf
    bad = make_store(tmp_path / "nan", db, [f"n{i}.jpg" for i in range(20)])
    # (the feature store may refuse them itself when read: either way, one clear error)
    with pytest.raises(UsageError, match="(?i)nan|infinite|non-finite"):
        build_index_dir(bad, "Flat", tmp_path / "idx")
    build_index_dir(stores["a"], "Flat", tmp_path / "idx")
    with pytest.raises(UsageError, match="(?i)nan|infinite|non-finite"):
        add_features(tmp_path / "idx", bad)
    idx = IndexDir.open(tmp_path / "idx")
    with pytest.raises(UsageError, match="1 feature vectors hold NaN or infinite values"):
        idx.add(db[3:4], ["x.jpg"])  # the library check, whatever the store does
    assert counts(tmp_path / "idx") == (200, 200, 200)
