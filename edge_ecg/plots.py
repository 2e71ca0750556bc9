"""Figures for run folders (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_ecg import CLASSES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    return plt


def roc_curves(y_true: np.ndarray, y_prob: np.ndarray, path: Path, title: str = "") -> None:
    """One ROC curve per class, AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for c, name in enumerate(CLASSES):
        if 0 < y_true[:, c].sum() < len(y_true):
            fpr, tpr, _ = roc_curve(y_true[:, c], y_prob[:, c])
            ax.plot(fpr, tpr, label=f"{name}  AUC {roc_auc_score(y_true[:, c], y_prob[:, c]):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def training_curves(history_csv: Path, path: Path) -> None:
    """Training and validation loss, and validation macro AUC, per epoch."""
    from edge_ecg.train import read_history

    rows = read_history(history_csv)
    epoch = [int(r["epoch"]) for r in rows]
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epoch, [float(r["loss"]) for r in rows], label="train")
    a.plot(epoch, [float(r["val_loss"]) for r in rows], label="validation")
    a.set(xlabel="epoch", ylabel="binary cross-entropy")
    a.legend()
    auc = [float(r["val_auc"]) for r in rows]
    b.plot(epoch, auc, color="C2")
    best = int(np.argmax(auc))
    b.scatter([epoch[best]], [auc[best]], color="C3", zorder=3, label=f"best {auc[best]:.3f} (epoch {epoch[best]})")
    b.set(xlabel="epoch", ylabel="validation macro AUC")
    b.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_summary(confusion: dict, path: Path) -> None:
    """Per-class 2x2 confusion matrices at the validation-tuned thresholds."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(confusion), figsize=(2.2 * len(confusion), 2.6))
    for ax, (name, cm) in zip(np.atleast_1d(axes), confusion.items()):
        grid = np.array([[cm["tp"], cm["fn"]], [cm["fp"], cm["tn"]]])
        ax.imshow(grid, cmap="Blues")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, str(v), ha="center", va="center", color="black" if v < grid.max() / 2 else "white")
        ax.set_xticks([0, 1], ["pred +", "pred −"])
        ax.set_yticks([0, 1], ["true +", "true −"])
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def int8_vs_float(p_float: np.ndarray, p_int8: np.ndarray, path: Path, title: str = "") -> None:
    """Each test record's int8 output probability against the float model's, one colour per class."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for c, name in enumerate(CLASSES[: p_float.shape[1]]):
        ax.scatter(p_float[:, c], p_int8[:, c], s=8, alpha=0.6, label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="float model probability", ylabel="int8 TFLite Micro probability (dequantized)", title=title,
           xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.legend(loc="lower right", title="class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def auc_bars(aucs: dict[str, np.ndarray], path: Path, title: str = "") -> None:
    """Per-class test AUC of several models side by side (``{"float": [...], "int8": [...]}``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    width = 0.8 / len(aucs)
    x = np.arange(len(CLASSES))
    for k, (name, values) in enumerate(aucs.items()):
        ax.bar(x + (k - (len(aucs) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, CLASSES)
    low = min(float(np.nanmin(v)) for v in aucs.values())
    ax.set(xlabel="class", ylabel="test ROC AUC", title=title, ylim=(max(0.0, low - 0.05), 1.0))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def memory_bars(items: dict[str, int], path: Path, title: str = "") -> None:
    """Horizontal bars of byte counts (tensor arena per target, flash of the model), labelled in kB."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.6 * len(items) + 1.5))
    names, values = list(items), [v / 1024 for v in items.values()]
    ax.barh(names, values, color=[f"C{k}" for k in range(len(names))])
    for k, v in enumerate(items.values()):
        ax.text(v / 1024, k, f" {v:,} B", va="center")
    ax.set(xlabel="size (KiB)", title=title, xlim=(0, max(values) * 1.35))
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def latency_figures(latency: np.ndarray, unit: str, hist_path: Path, timeline_path: Path, title: str = "") -> None:
    """Histogram of per-record latency and each record's latency in test-fold order; ``unit`` labels the axes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.hist(latency, bins=min(30, max(5, len(latency) // 2)), color="C0")
    ax.axvline(float(np.median(latency)), color="C3", ls="--", label=f"median {np.median(latency):,.1f} {unit}")
    ax.set(xlabel=f"latency per inference ({unit})", ylabel="records", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(hist_path, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(np.arange(1, len(latency) + 1), latency, marker=".", lw=0.8)
    ax.set(xlabel="record (test-fold order)", ylabel=f"latency per inference ({unit})", title=title)
    fig.tight_layout()
    fig.savefig(timeline_path, dpi=120)
    plt.close(fig)


def compression_tradeoff(rows: list[dict], path: Path, title: str = "") -> None:
    """Validation macro AUC against the int8 bytes of non-zero weights, one labelled point per stage, joined in order."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    shown = [r for r in rows if r.get("val_auc") is not None]
    x, y = [r["nonzero_int8_bytes"] / 1024 for r in shown], [r["val_auc"] for r in shown]
    ax.plot(x, y, color="grey", lw=0.8, ls="--", zorder=1)
    for k, (r, xi, yi) in enumerate(zip(shown, x, y)):
        ax.scatter([xi], [yi], s=40, color=f"C{k}", zorder=2, label=f"{r['name']}: {r['macs']:,} MACs")
        ax.annotate(f"{yi:.3f}", (xi, yi), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set(xlabel="estimated int8 model bytes without zero weights (KiB)", ylabel="validation macro AUC (fold 9)", title=title)
    ax.margins(x=0.15, y=0.3)
    ax.legend(loc="best", fontsize=8, title="stage: multiply-accumulates per record", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compression_sizes(rows: list[dict], path: Path, title: str = "") -> None:
    """Estimated int8 bytes (all, and without zero weights) and MACs of each stage as a percentage of the first row's."""
    plt = _pyplot()
    base = rows[0]
    measures = {"est. int8 bytes": "int8_bytes", "est. int8 bytes without zero weights": "nonzero_int8_bytes",
                "MACs per record": "macs"}
    fig, ax = plt.subplots(figsize=(6.5, 0.75 * len(rows) + 2))
    width = 0.8 / len(measures)
    y = np.arange(len(rows))
    for k, (label, key) in enumerate(measures.items()):
        values = [100.0 * r[key] / base[key] if base[key] else 0.0 for r in rows]
        ax.barh(y + (k - (len(measures) - 1) / 2) * width, values, width, label=label)
    ax.set_yticks(y, [r["name"] for r in rows])
    ax.invert_yaxis()
    ax.set(xlabel=f"% of {base['name']}", title=title, xlim=(0, 115))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fold_aucs(folds: dict[str, dict], pooled: dict, path: Path, title: str = "") -> None:
    """Each test fold's macro AUC with its 95 % interval, and the pooled out-of-fold AUC with its interval as a band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ks = [int(k) for k, f in folds.items() if f.get("macro_auc") is not None]
    aucs = [folds[str(k)]["macro_auc"] for k in ks]
    cis = [folds[str(k)].get("macro_auc_ci95") or [a, a] for k, a in zip(ks, aucs)]
    err = np.array([[a - lo for a, (lo, _) in zip(aucs, cis)], [hi - a for a, (_, hi) in zip(aucs, cis)]])
    ax.errorbar(ks, aucs, yerr=err, fmt="o", color="C0", capsize=3, label="test fold (95 % bootstrap interval)")
    lo, hi = pooled["macro_auc_ci95"]
    ax.axhspan(lo, hi, color="C3", alpha=0.15, label=f"pooled 95 % interval [{lo:.3f}, {hi:.3f}]")
    ax.axhline(pooled["macro_auc"], color="C3", lw=1.2, label=f"pooled {pooled['macro_auc']:.3f} ({pooled['records']} records)")
    ax.set_xticks(range(1, 11))
    ax.set(xlabel="test fold", ylabel="macro ROC AUC", title=title, xlim=(0.5, 10.5))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
