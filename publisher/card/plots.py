"""Figures for the card (PNG, legible at the Hub's ~800 px card width), pure functions of the results.

    >>> write_plots(results, Path("runs/x"))
    ['plots/layer_sparsity.png']

PNG metadata carries no software version or date, so the same results give the same bytes (and a re-push of
an unchanged run commits nothing).
"""

from __future__ import annotations

from pathlib import Path

from ..results import Results, replacing

PLOTS_DIR = "plots"
WIDTH_IN, DPI = 8.0, 100  # 800 px wide


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "svg.hashsalt": "publish-pruned"})
    return plt


def _save(fig, path: Path) -> None:
    """Draw to a temp file, then rename: a cut-off write never leaves a half PNG to be published."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})


def layer_sparsity_plot(results: Results, path: Path) -> None:
    """Sparsity of every prunable matrix, in checkpoint order, with the target as a line."""
    plt = _pyplot()
    layers = results.sparsity.layers
    kinds = sorted({layer.name.rsplit(".", 2)[-2] for layer in layers})
    colours = {kind: plt.get_cmap("tab10")(i % 10) for i, kind in enumerate(kinds)}
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 3.2))
    for kind in kinds:
        xs = [i for i, layer in enumerate(layers) if layer.name.rsplit(".", 2)[-2] == kind]
        ax.bar(xs, [100 * layers[i].sparsity for i in xs], width=1.0, color=colours[kind], label=kind)
    if not (results.pruning.moe or {}).get("expert_drop"):  # expert dropping's target is experts, not zeros
        ax.axhline(100 * results.pruning.target_sparsity, color="black", linestyle="--", linewidth=1, label="target")
    ax.set_xlabel("prunable matrix (checkpoint order)")
    ax.set_ylabel("sparsity (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Per-matrix sparsity — {results.pruning.method}, actual "
                 f"{100 * results.sparsity.actual_sparsity:.2f} %")
    ax.legend(ncol=min(len(kinds) + 1, 8), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    _save(fig, path)
    plt.close(fig)


def srs_plot(results: Results, path: Path, condition: str = "ambig") -> bool:
    """SRS by category, dense vs pruned, with 95 % Wilson intervals and the chance line; False if no SRS."""
    srs = (results.metrics or {}).get("srs")
    if not srs or condition not in srs["comparison"]:
        return False
    plt = _pyplot()
    rows = srs["comparison"][condition]["categories"]
    names = [row["category"].replace("_", " ") for row in rows]
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 3.6))
    series = ((-0.2, "srs_dense", "dense", "#7f7f7f"), (0.2, "srs_pruned", "pruned", "#d62728"))
    for offset, key, label, colour in series:
        rates = [row[key]["rate"] or 0.0 for row in rows]
        low = [max(0.0, r - row[key]["low"]) for r, row in zip(rates, rows, strict=True)]
        high = [max(0.0, row[key]["high"] - r) for r, row in zip(rates, rows, strict=True)]
        ax.bar([i + offset for i in range(len(rows))], rates, width=0.4, color=colour, label=label,
               yerr=[low, high], capsize=3)
    ax.axhline(1 / 3, color="black", linestyle="--", linewidth=1, label="chance (1/3)")
    ax.set_xticks(range(len(rows)), names, rotation=20, ha="right")
    ax.set_ylabel("SRS")
    ax.set_ylim(0, 1)
    ax.set_title(f"Stereotype reliance on BBQ (ambiguous) — {results.pruning.method} "
                 f"{100 * results.pruning.target_sparsity:.0f} %")
    ax.legend(fontsize=9, loc="upper right", frameon=False)
    _save(fig, path)
    plt.close(fig)
    return True


def write_plots(results: Results, folder: Path) -> list[str]:
    """Draw every plot the results support into `folder/plots/`; returns their repo-relative paths."""
    written = []
    name = f"{PLOTS_DIR}/layer_sparsity.png"
    layer_sparsity_plot(results, folder / name)
    written.append(name)
    name = f"{PLOTS_DIR}/srs_by_category.png"
    if srs_plot(results, folder / name):
        written.append(name)
    else:
        (folder / name).unlink(missing_ok=True)
    return written
