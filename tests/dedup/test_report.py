"""The dedup review report: data, escaping, thumbnail cache, ownership rules, a 10,000-group report."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neardup.dedup.calibrate import choose_threshold
from neardup.dedup.plots import calibration_figure
from neardup.dedup.report import Group, Member, read_groups, sort_orders, write_report
from neardup.dedup.report_page import embed_json
from neardup.dedup.thumbs import INDEX, PLACEHOLDER, thumb_id
from neardup.errors import UsageError
from neardup.outdir import FIGURE_TAG, LOCK
from tests.dedup.scan_files import image_groups, missing_groups, report_data, write_scan


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    write_scan(tmp_path / "scan", image_groups(tmp_path / "photos", 6))
    return tmp_path / "scan"


def _inodes(scan: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in (scan / "report_files" / "thumbs").iterdir()}


def test_report_data_thumbs_and_header(scan: Path) -> None:
    rows = read_groups(scan)
    out = write_report(scan)
    assert out == scan / "report.html"
    text = out.read_text("utf-8")
    data = report_data(out)
    assert [g["id"] for g in data["groups"]] == [g.id for g in rows] == list(range(6))
    for g, grp in zip(data["groups"], rows, strict=True):
        assert [m["p"] for m in g["m"]] == [m.path for m in grp.members]
        assert g["m"][0]["k"] == "keeper" and {m["k"] for m in g["m"][1:]} <= {"exact", "near"}
        for m in g["m"]:
            assert "n" not in m  # readable and unchanged since the scan
            with Image.open(scan / "report_files" / "thumbs" / f"{m['t']}.jpg") as im:
                assert im.format == "JPEG" and max(im.size) <= 192
                assert im.size[0] / im.size[1] == pytest.approx(m["w"] / m["h"], rel=0.05)
    summary = json.loads((scan / "summary.json").read_text())
    assert f"{summary['threshold']:.4f}" in text and "efficientnet_lite0" in text and "calibrated" in text
    assert f"{summary['calibration']['n_positives']:,} attacked copies" in text
    plot = scan / "report_files" / "calibration.png"
    assert FIGURE_TAG.encode() in plot.read_bytes()[:4096] and 'src="report_files/calibration.png"' in text
    # offline: no scheme or protocol-relative URL, no external resource
    assert "http" not in text and not re.search(r"""(src|href)=["']?//""", text)


def test_hostile_file_names_stay_data(tmp_path: Path) -> None:
    rows = image_groups(tmp_path / "photos", 2)
    evil_dir = tmp_path / "photos" / "<"
    evil_dir.mkdir()
    names = ["<img src=x onerror=alert(1)>.jpg", "script><script>alert(2)<!--.png"]
    for row, name in zip((rows[1], rows[-1]), names, strict=True):
        new = (evil_dir if name.startswith("script") else tmp_path / "photos") / name
        os.rename(row["path"], new)
        row["path"] = str(new)
    write_scan(tmp_path / "scan", rows)
    out = write_report(tmp_path / "scan")
    text = out.read_text("utf-8")
    assert text.count("</script") == 2  # the page's own two script tags; "</script><script>" in a path is escaped
    assert "<img src=x" not in text and "<!--" not in text
    paths = {m["p"] for g in report_data(out)["groups"] for m in g["m"]}
    assert {str(tmp_path / "photos" / names[0]), str(evil_dir / names[1])} <= paths


def test_embed_json_round_trips_any_name() -> None:
    odd = ["a</script>b", "<!--x-->", "caf\udce9.png", "\u2028line", "é & <b>"]
    text = embed_json({"p": odd})
    assert not set(text) & {"<", ">", "&"} and text.isascii()
    assert json.loads(text)["p"] == odd


def test_thumbnails_reused_remade_and_pruned(scan: Path, tmp_path: Path) -> None:
    write_report(scan)
    first = _inodes(scan)
    write_report(scan)
    assert _inodes(scan) == first  # nothing re-encoded
    rows = read_groups(scan)
    changed = rows[0].members[1].path
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    write_report(scan)
    now = _inodes(scan)
    assert [n for n in now if now[n] != first[n]] == [f"{thumb_id(changed)}.jpg"]
    data = report_data(scan / "report.html")
    assert data["groups"][0]["m"][1]["n"] == "changed since the scan"
    # a smaller thumbnail size remakes every thumbnail
    write_report(scan, thumb_size=64)
    for p in (scan / "report_files" / "thumbs").iterdir():
        with Image.open(p) as im:
            assert max(im.size) <= 64
    # a group gone from groups.csv: its thumbnails go, a user's file in the folder stays
    user = scan / "report_files" / "thumbs" / "mine.txt"
    user.write_text("keep")
    lines = (scan / "groups.csv").read_text().splitlines()
    keep = [ln for ln in lines if not ln.startswith("5,")]
    (scan / "groups.csv").write_text("\n".join(keep) + "\n")
    summary = json.loads((scan / "summary.json").read_text())
    (scan / "summary.json").write_text(json.dumps({**summary, "groups": 5}))
    write_report(scan, thumb_size=64)
    gone = {f"{thumb_id(m.path)}.jpg" for m in rows[5].members}
    left = {p.name for p in (scan / "report_files" / "thumbs").iterdir()}
    assert not gone & left and user.read_text() == "keep" and len(left) == sum(len(g.members) for g in rows[:5]) + 1
    index = json.loads((scan / "report_files" / INDEX).read_text())
    assert set(index["files"]) == {m.path for g in rows[:5] for m in g.members}


def test_unreadable_missing_and_changed_files(tmp_path: Path) -> None:
    rows = image_groups(tmp_path / "photos", 2)
    Path(rows[1]["path"]).write_bytes(b"\xff\xd8 not really a jpeg")
    os.unlink(rows[-1]["path"])
    write_scan(tmp_path / "scan", rows)
    data = report_data(write_report(tmp_path / "scan"))
    members = {m["p"]: m for g in data["groups"] for m in g["m"]}
    bad, gone = members[rows[1]["path"]], members[rows[-1]["path"]]
    assert "t" not in bad and bad["n"].startswith("unreadable: ")
    assert "t" not in gone and gone["n"] == "missing"
    with Image.open(tmp_path / "scan" / "report_files" / PLACEHOLDER) as im:
        assert im.format == "JPEG" and im.size[0] > 0
    # the unreadable file is not decoded again on a re-run (its index entry is reused)
    index = json.loads((tmp_path / "scan" / "report_files" / INDEX).read_text())
    assert index["files"][rows[1]["path"]][3] == bad["n"].removeprefix("unreadable: ")


def test_members_keeper_then_exact_then_strongest(tmp_path: Path) -> None:
    rows = [{"group": 0, "path": f"/x/{n}", "is_keeper": int(k == "keeper"), "score": sc, "kind": k, "width": 1,
             "height": 1, "bytes": 1, "mtime_ns": 1}
            for n, k, sc in [("a", "near", 0.8), ("b", "near", 0.95), ("c", "keeper", 1.0), ("d", "exact", 1.0)]]
    write_scan(tmp_path, rows, calibrated=False)
    assert [m.path for m in read_groups(tmp_path)[0].members] == ["/x/c", "/x/d", "/x/b", "/x/a"]


def test_sort_orders() -> None:
    def g(i: int, *scores: float | None) -> Group:
        return Group(i, [Member(f"/k{i}", "keeper", 1.0, 1, 1, 1, 1)]
                     + [Member(f"/c{i}{j}", "near", s, 1, 1, 1, 1) for j, s in enumerate(scores)])

    groups = [g(0, 0.9), g(1, 0.95, 0.8, 0.99), g(2, None), g(3, 0.8, 0.85), g(4, 0.7)]
    o = sort_orders(groups)
    assert o["size"] == [1, 3, 0, 2, 4]
    assert o["weakest"] == [4, 1, 3, 0, 2]  # ties (0.8) by group id, no score last
    assert o["strongest"] == [0, 1, 3, 4, 2]
    assert o["id"] == [0, 1, 2, 3, 4]
    assert groups[1].min_score == 0.8 and groups[2].min_score is None


def test_missing_calibration_scores(tmp_path: Path) -> None:
    # a given threshold: no calibration at all, no plot
    write_scan(tmp_path / "given", image_groups(tmp_path / "p1", 2), calibrated=False, threshold=0.85)
    text = write_report(tmp_path / "given").read_text()
    assert "set by the user" in text and "0.8500" in text and "calibration.png" not in text
    assert not (tmp_path / "given" / "report_files" / "calibration.png").exists()
    # calibrated, but calibration.npz gone: the precision/recall curve from summary.json is still drawn
    write_scan(tmp_path / "cal", image_groups(tmp_path / "p2", 2))
    (tmp_path / "cal" / "calibration.npz").unlink()
    text = write_report(tmp_path / "cal").read_text()
    assert 'src="report_files/calibration.png"' in text
    with Image.open(tmp_path / "cal" / "report_files" / "calibration.png") as im:
        one_panel = im.size
    write_scan(tmp_path / "both", image_groups(tmp_path / "p3", 2))
    write_report(tmp_path / "both")
    with Image.open(tmp_path / "both" / "report_files" / "calibration.png") as im:
        assert im.size[0] > 1.5 * one_panel[0]  # histograms + curve side by side


def test_ten_thousand_groups(tmp_path: Path) -> None:
    rows = missing_groups(tmp_path / "photos", 10_000)
    write_scan(tmp_path / "scan", rows)
    out = write_report(tmp_path / "scan")
    data = report_data(out)
    assert len(data["groups"]) == 10_000 and sum(len(g["m"]) for g in data["groups"]) == len(rows)
    assert sorted(data["orders"]["weakest"]) == list(range(10_000))
    size = out.stat().st_size
    assert size < sum(len(r["path"]) for r in rows) + 120 * len(rows)  # the paths plus ~100 bytes a file
    assert not any((tmp_path / "scan" / "report_files" / "thumbs").iterdir())  # all missing: placeholder only


def test_calibration_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.9, 0.04, 300), rng.normal(0.5, 0.1, 300)
    cal = choose_threshold(pos, neg, 0.99)
    out = calibration_figure(pos, neg, cal, tmp_path / "c.png", threshold=0.85)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.info.get("Software") == FIGURE_TAG and im.size[0] > 800
    with pytest.raises(ValueError, match="nothing|no calibration"):
        calibration_figure(None, None, None, tmp_path / "none.png")


@pytest.mark.parametrize("damage, message", [
    (lambda s: (s / "groups.csv").write_text("group,path\n0,/a\n"), "missing columns"),
    (lambda s: (s / "groups.csv").write_text((s / "groups.csv").read_text().replace(",near,", ",fuzzy,", 1)),
     "kind must be one of"),
    (lambda s: (s / "groups.csv").write_text((s / "groups.csv").read_text().replace(",0,", ",1,", 1)),
     "keepers"),
    (lambda s: (s / "summary.json").write_text(json.dumps({**json.loads((s / "summary.json").read_text()),
                                                           "groups": 99})), "different scans"),
    (lambda s: (s / "summary.json").write_text(json.dumps({**json.loads((s / "summary.json").read_text()),
                                                           "schema": "neardup.cluster/1"})), "not a dedup summary"),
    (lambda s: (s / "summary.json").unlink(), "not found"),
    (lambda s: np.savez(s / "calibration.npz", pos=np.array([{"a": 1}], dtype=object), neg=np.zeros(3)),
     "not a calibration file"),
    (lambda s: np.save(open(s / "calibration.npz", "wb"), np.zeros(3)), "not a calibration file"),  # noqa: SIM115
    (lambda s: (s / "calibration.npz").write_bytes(b"PK garbage"), "not a calibration file"),
    (lambda s: (s / "report.html").write_text("<html>my own page</html>"), "not written by neardup"),
    (lambda s: (s / "report_files").mkdir() or (s / "report_files" / "x.txt").write_text("mine"),
     "not written by neardup"),
    (lambda s: (s / "groups.csv").write_text((s / "groups.csv").read_text().replace(str(s.parent) + "/", "", 1)),
     "must be absolute"),
])
def test_refusals(scan: Path, damage, message: str) -> None:
    damage(scan)
    before = {p: p.read_bytes() for p in scan.rglob("*") if p.is_file()}
    with pytest.raises(UsageError, match=message):
        write_report(scan)
    assert {p: p.read_bytes() for p in scan.rglob("*") if p.is_file()} == before  # nothing written or removed


@pytest.mark.parametrize("kw", [{"thumb_size": 8}, {"page_size": 0}, {"page_size": True}, {"thumb_size": 1.5}])
def test_bad_options(scan: Path, kw: dict) -> None:
    with pytest.raises(UsageError, match="must be an integer"):
        write_report(scan, **kw)


def test_interrupted_first_run_is_not_locked_out(scan: Path) -> None:
    (scan / "report_files").mkdir()
    (scan / "report_files" / LOCK).touch()  # killed right after taking the lock
    assert write_report(scan).is_file()


def test_rerun_keeps_everything_else(scan: Path) -> None:
    (scan / "notes.txt").write_text("mine")
    write_report(scan)
    before = sorted(p.relative_to(scan) for p in scan.rglob("*"))
    write_report(scan)
    assert sorted(p.relative_to(scan) for p in scan.rglob("*")) == before
    assert (scan / "notes.txt").read_text() == "mine"
    assert not list(scan.rglob("*.tmp"))
