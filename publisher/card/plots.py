"""Figures for the card (PNG, legible at the Hub's ~800 px card width), pure functions of the results.

    >>> write_plots(results, Path("runs/x"))
    ['plots/layer_sparsity.png']

PNG metadata carries no software version or date, so the same results give the same bytes (and a re-push of
an unchanged run commits nothing).
"""

from __future__ import annotations

from pathlib import Path

from ..results import Results

PLOTS_DIR = "plots"
WIDTH_IN, DPI = 8.0, 100  # 800 px wide


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "svg.hashsalt": "publish-pruned"})
    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})


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
    ax.axhline(100 * results.pruning.target_sparsity, color="black", linestyle="--", linewidth=1, label="target")
    ax.set_xlabel("prunable matrix (checkpoint order)")
    ax.set_ylabel("sparsity (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Per-matrix sparsity — {results.pruning.method}, actual "
                 f"{100 * results.sparsity.actual_sparsity:.2f} %")
    ax.legend(ncol=min(len(kinds) + 1, 8), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    _save(fig, path)
    plt.close(fig)


def write_plots(results: Results, folder: Path) -> list[str]:
    """Draw every plot the results support into `folder/plots/`; returns their repo-relative paths."""
    written = []
    name = f"{PLOTS_DIR}/layer_sparsity.png"
    layer_sparsity_plot(results, folder / name)
    written.append(name)
    return written
