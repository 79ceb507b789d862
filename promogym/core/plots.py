"""Plotting primitives shared by reports and env families: a headless pyplot, atomic PNG output and a
two-panel figure with enough distinguishable colours for many policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promogym.core.io import atomic_path


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path) -> None:
    """Write ``fig`` as a PNG (atomically) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    pyplot().close(fig)


def two_panels() -> tuple[Any, Any]:
    """Two side-by-side axes with up to 20 distinguishable colours (policies are many)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.2))
    for ax in axes:
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
    return fig, axes
