"""`neardup evaluate-finetuning`: retrieval and cluster geometry of a run's checkpoints.

A ground-truth group is one original image plus all its attacked copies. On
L2-normalised features (Euclidean distance), per group:

- diameter: the largest distance between two members;
- dispersion: the mean distance of the members to the group centroid;
- separation: the smallest distance from a member to any non-member (other groups and distractors);
- centroid distance: from the group centroid to the nearest other group centroid;
- SN1 = diameter / separation and SN2 = dispersion / centroid distance: below 1, the group
  stands apart from everything else, which is what fine-tuning should achieve.

These are the diagnostics the original study plotted across epochs.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neardup.errors import UsageError
from neardup.fastsearch.vectors import l2_normalize
from neardup.io_utils import atomic_write, atomic_write_json

if TYPE_CHECKING:
    from neardup.simclr.validate import ValidationScores

SCHEMA = "neardup.finetune.evaluation/1"
GEOMETRY = ("diameter", "dispersion", "separation", "centroid_distance", "SN1", "SN2")


def group_geometry(feats: np.ndarray, groups: np.ndarray, others: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-group geometry.

    Args:
        feats: (N, D) features of every group member.
        groups: (N,) group label of each row (>= 0).
        others: (M, D) features that belong to no group (distractors).

    Returns:
        {name: (G,) array} for every entry of GEOMETRY, groups in sorted label order.
    """
    x = l2_normalize(feats)
    extra = l2_normalize(others) if others is not None and len(others) else np.zeros((0, x.shape[1]), np.float32)
    labels = np.unique(groups)
    cents = np.stack([x[groups == g].mean(0) for g in labels])
    sq = (x ** 2).sum(1)
    sq_extra = (extra ** 2).sum(1)
    out = {k: np.zeros(len(labels)) for k in GEOMETRY}
    cd = np.sqrt(np.maximum(((cents[:, None, :] - cents[None]) ** 2).sum(-1), 0))
    np.fill_diagonal(cd, np.inf)
    for gi, g in enumerate(labels):
        m = groups == g
        xm = x[m]
        d_in = np.sqrt(np.maximum(sq[m][:, None] + sq[m][None] - 2 * xm @ xm.T, 0))
        if (~m).any():
            d_out = np.sqrt(np.maximum(sq[m][:, None] + sq[~m][None] - 2 * xm @ x[~m].T, 0))
        else:
            d_out = np.full((m.sum(), 1), np.inf)
        sep = d_out.min()
        if len(extra):
            sep = min(sep, np.sqrt(np.maximum(sq[m][:, None] + sq_extra[None] - 2 * xm @ extra.T, 0)).min())
        out["diameter"][gi] = d_in.max()
        out["dispersion"][gi] = np.linalg.norm(xm - cents[gi], axis=1).mean()
        out["separation"][gi] = sep
        out["centroid_distance"][gi] = cd[gi].min() if len(labels) > 1 else np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        out["SN1"] = out["diameter"] / out["separation"]
        out["SN2"] = out["dispersion"] / out["centroid_distance"]
    return out


def summarize(values: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean and median over groups (finite values), and for SN1/SN2 the fraction of groups below 1."""
    return {k: {"mean": float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan"),
                "median": float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan"),
                "fraction_below_1": float(np.mean(v < 1)) if k in ("SN1", "SN2") else float("nan")}
            for k, v in values.items()}


#: The files evaluate-finetuning writes in its --out.
OWNED = ("evaluation.json", "geometry.npz", "evolution.png")


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The options a finetune run was started with (config.yaml, or config.json of older runs)."""
    from neardup.io_utils import load_yaml, read_json_object
    from neardup.outdir import owner

    run = Path(run_dir)
    who = owner(run)
    if who not in (None, "finetune"):
        raise UsageError(f"{run} is not a neardup finetune run (it holds the output of `neardup {who}`)")
    if (run / "config.yaml").is_file():
        cfg = load_yaml(run / "config.yaml", "run config")
        if not isinstance(cfg, dict) or cfg.get("command", "finetune") != "finetune":
            raise UsageError(f"{run / 'config.yaml'} is not the config of a neardup finetune run")
    elif (run / "config.json").is_file():
        cfg = read_json_object(run / "config.json", "run config")
    else:
        raise UsageError(f"{run} is not a neardup finetune run (no config.yaml)")
    if not isinstance(cfg.get("model"), str):
        raise UsageError(f"the run config of {run} names no model")
    return cfg


def _check_export(path: str) -> None:
    """Refuse early a --checkpoint that is not an encoder exported by finetune (read with weights_only=True)."""
    from neardup.extract.weights import read_checkpoint
    from neardup.simclr.model import EXPORT_FORMAT

    if not Path(path).is_file():
        raise UsageError(f"--checkpoint not found: {path}")
    try:
        blob = read_checkpoint(path)
    except UsageError as exc:
        raise UsageError(f"--checkpoint {path}: {exc}") from None
    if blob.get("format") != EXPORT_FORMAT or not isinstance(blob.get("state_dict"), dict) \
            or not isinstance(blob.get("base_model"), str):
        hint = " (a run's checkpoint.pt holds training state: use best.pt, last.pt or encoders/epoch_*.pt)" \
            if "encoder" in blob and "optimizer" in blob else ""
        raise UsageError(f"--checkpoint {path} is not an encoder exported by neardup finetune{hint}")


def _load_checkpoint_encoder(path: str) -> tuple[Any, Any]:
    """An encoder exported by finetune (best.pt, last.pt, encoders/epoch_*.pt), or one UsageError line."""
    from neardup.extract.registry import create_extractor

    try:
        ext = create_extractor("finetuned", weights=path, device="cpu")
    except UsageError as exc:
        raise UsageError(f"--checkpoint {path}: {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise UsageError(f"--checkpoint {path} is not an encoder exported by neardup finetune "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None
    from neardup.extract.base import TorchExtractor

    assert isinstance(ext, TorchExtractor)  # "finetuned" always builds a network
    return ext.model, ext.cfg


def _legacy_evaluation(out: Path) -> bool:
    try:
        from neardup.io_utils import read_json_object

        return read_json_object(out / "evaluation.json", "evaluation").get("schema") == SCHEMA
    except UsageError:
        return False


@dataclass(frozen=True)
class CheckpointEvaluation:
    """Retrieval scores and group geometry of one encoder (the base model or an exported checkpoint)."""

    name: str
    epoch: int
    scores: ValidationScores
    geometry: dict[str, np.ndarray]  # per group, see :func:`group_geometry`

    def to_dict(self) -> dict[str, Any]:
        """One entry of evaluation.json's ``checkpoints`` (per-group arrays go to geometry.npz)."""
        s = self.scores
        return {"name": self.name, "epoch": self.epoch, "recall@1": s.recall_at_1, "muAP": s.muAP, "mAP": s.mAP,
                "per_family": s.per_family, "geometry": summarize(self.geometry)}


@dataclass(frozen=True)
class FinetuneEvaluation:
    """Every evaluated checkpoint of a run, in order (epoch 0 = before fine-tuning)."""

    run: str
    checkpoints: list[CheckpointEvaluation]

    def to_dict(self) -> dict[str, Any]:
        """evaluation.json."""
        return {"schema": SCHEMA, "run": self.run, "checkpoints": [c.to_dict() for c in self.checkpoints]}

    def arrays(self) -> dict[str, np.ndarray]:
        """geometry.npz: ``NAME__METRIC`` -> (groups,) array."""
        return {f"{c.name}__{k}": v for c in self.checkpoints for k, v in c.geometry.items()}


def _open_run(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    run = Path(run_dir)
    if not run.is_dir():
        raise UsageError(f"run folder not found: {run}")
    return run, run_config(run)


def evaluation_dir(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Where evaluate-finetuning writes: ``out``, by default RUN_DIR/evaluation."""
    return Path(out) if out else Path(run_dir) / "evaluation"


def evaluate(run_dir: str | Path, checkpoints: list[str], val_queries: str | None = None,
             val_database: str | None = None, val_distractors: list[str] | None = None) -> FinetuneEvaluation:
    """Score ``checkpoints`` (default: the base model and every RUN_DIR/encoders/epoch_*.pt); writes nothing.

    The validation set defaults to the run's own.

    Raises:
        UsageError: not a finetune run, a checkpoint that is not an exported encoder, no validation set.
    """
    from neardup.simclr.model import load_encoder
    from neardup.simclr.validate import Validator, score

    run, cfg = _open_run(run_dir)
    for c in checkpoints:  # all of them before any (slow) evaluation
        _check_export(c)
    val_queries = val_queries or cfg.get("val_queries")
    val_database = val_database or cfg.get("val_database")
    val_distractors = val_distractors or cfg.get("val_distractors") or []
    if not (val_queries and val_database):
        raise UsageError("no validation set: pass --val-queries and --val-database (the run had none)")
    validator = Validator(val_queries, val_database, val_distractors)
    items: list[tuple[str, int, str | None]] = []
    if checkpoints:
        for c in checkpoints:
            items.append((Path(c).stem, _epoch_of(c), c))
    else:
        items.append(("base", 0, None))
        for p in sorted((run / "encoders").glob("epoch_*.pt")):
            items.append((p.stem, _epoch_of(str(p)), str(p)))
    rows = []
    for name, epoch, path in items:
        if path is None:
            encoder, mcfg = load_encoder(cfg["model"], cfg.get("weights"))
        else:
            encoder, mcfg = _load_checkpoint_encoder(path)
        f = validator.features(encoder, mcfg)
        s = score(f, validator.db_ids, validator.rows, len(validator.distractor_paths))
        feats, groups = _group_members(f, validator)
        rows.append(CheckpointEvaluation(name, epoch, s, group_geometry(feats, groups, f["distractors"][0])))
    return FinetuneEvaluation(str(run), rows)


def write_evaluation(result: FinetuneEvaluation, out_dir: Path) -> None:
    """evaluation.json, geometry.npz and evolution.png in ``out_dir`` (each written atomically)."""
    atomic_write_json(out_dir / "evaluation.json", result.to_dict())
    buf = io.BytesIO()
    np.savez(buf, **result.arrays())  # type: ignore[arg-type]
    atomic_write(out_dir / "geometry.npz", lambda fh: fh.write(buf.getvalue()))
    plot_evolution([c.to_dict() for c in result.checkpoints], out_dir / "evolution.png")


def evaluate_run(run_dir: str, checkpoints: list[str], val_queries: str | None, val_database: str | None,
                 val_distractors: list[str], out: str | None = None, overwrite: bool = False) -> FinetuneEvaluation:
    """:func:`evaluate` then :func:`write_evaluation` into ``out`` (:func:`evaluation_dir`).

    ``out`` follows the output-folder rule of :mod:`neardup.outdir`, checked before the (slow) evaluation.
    """
    from neardup.outdir import check_out_dir, claim_out_dir

    _open_run(run_dir)  # a missing run, or one of another command, is refused before --out is looked at
    out_dir = evaluation_dir(run_dir, out)
    check_out_dir(out_dir, "evaluate-finetuning", overwrite=overwrite, owned=OWNED, recognise=_legacy_evaluation)
    result = evaluate(run_dir, checkpoints, val_queries, val_database, val_distractors)
    with claim_out_dir(out_dir, "evaluate-finetuning", overwrite=overwrite, owned=OWNED,
                       recognise=_legacy_evaluation):
        write_evaluation(result, out_dir)
    return result


def format_evaluation(result: FinetuneEvaluation) -> str:
    """One line per checkpoint: recall@1, µAP and the median SN1 / SN2."""
    lines = []
    for c in result.checkpoints:
        g = summarize(c.geometry)
        lines.append(f"{c.name:<16} R@1 {c.scores.recall_at_1:.4f}  µAP {c.scores.muAP:.4f}  "
                     f"SN1 {g['SN1']['median']:.3f}  SN2 {g['SN2']['median']:.3f}")
    return "\n".join(lines)


def _epoch_of(path: str) -> int:
    m = re.search(r"epoch_(\d+)", path)
    return int(m.group(1)) if m else -1


def _group_members(f: dict[str, Any], validator: Any) -> tuple[np.ndarray, np.ndarray]:
    """Originals and their queries, labelled by original."""
    db_f, db_idx = f["db"]
    q_f, q_idx = f["queries"]
    ids = [validator.db_ids[i] for i in db_idx]
    label = {k: i for i, k in enumerate(ids)}
    q_lab = np.asarray([label.get(validator.rows[i].source, -1) for i in q_idx])
    keep = q_lab >= 0
    return np.concatenate([db_f, q_f[keep]]), np.concatenate([np.arange(len(ids)), q_lab[keep]])


def plot_evolution(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(x, [r["recall@1"] for r in rows], "o-", label="recall@1")
    axes[0].plot(x, [r["muAP"] for r in rows], "s-", label="µAP")
    axes[0].set_title("retrieval")
    for k in ("diameter", "dispersion", "separation", "centroid_distance"):
        axes[1].plot(x, [r["geometry"][k]["median"] for r in rows], "o-", label=k)
    axes[1].set_title("group geometry (median over groups)")
    for k in ("SN1", "SN2"):
        axes[2].plot(x, [r["geometry"][k]["median"] for r in rows], "o-", label=f"{k} median")
    axes[2].axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[2].set_title("SN1 = diameter/separation, SN2 = dispersion/centroid dist.")
    for ax in axes:
        ax.set_xlabel("epoch (0 = before fine-tuning)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))
