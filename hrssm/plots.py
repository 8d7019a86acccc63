"""Plots as PNG (matplotlib, Agg backend): latent maps (t-SNE, UMAP when installed) and per-group accuracy bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.schema import GROUP_NAMES, LABEL_NAMES, PLACE_NAMES

METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP"}


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def embed_2d(features: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) with t-SNE (scikit-learn) or UMAP (umap-learn); features are standardized and reduced to 50
    dimensions by PCA first."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(features)
    x = PCA(n_components=min(50, *x.shape), random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed
                    ).fit_transform(x)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    raise ValueError(f"method={method!r} must be 'tsne' or 'umap'")


def latent_map(data: dict[str, np.ndarray], path: str | Path, method: str = "tsne", max_points: int = 2000,
               seed: int = 0, title: str = "") -> Path:
    """A 2D map of (a balanced sample of) the latent features, coloured by bird (label) and by background (place)."""
    plt = pyplot()
    rng = np.random.default_rng(seed)
    per_group = max(1, max_points // len(GROUP_NAMES))
    idx = np.concatenate([rng.permutation(np.flatnonzero(data["group"] == g))[:per_group]
                          for g in range(len(GROUP_NAMES))])
    xy = embed_2d(data["features"][idx], method, seed)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    for ax, key, names in ((axes[0], "label", LABEL_NAMES), (axes[1], "place", PLACE_NAMES)):
        for value, (name, colour) in enumerate(zip(names, ("tab:orange", "tab:blue"))):
            m = data[key][idx] == value
            ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.6, c=colour, label=name)
        ax.set_title(f"coloured by {key}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(markerscale=4, loc="best")
    fig.suptitle(title or f"{METHOD_NAMES[method]} of test latents ({len(idx)} images, groups balanced)")
    fig.tight_layout()
    return save_figure(fig, path)


def group_accuracy_bars(probes: dict, path: str | Path, title: str = "Test accuracy per group") -> Path:
    """Grouped bars: one group of bars per probe (`ProbeResult`s), one bar per Waterbirds group, worst group marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2.2 + 2.6 * len(probes), 4))
    width = 0.8 / len(GROUP_NAMES)
    for g, name in enumerate(GROUP_NAMES):
        values = [r.per_group[g] for r in probes.values()]
        ax.bar(np.arange(len(probes)) + (g - 1.5) * width, values, width, label=name)
    for i, r in enumerate(probes.values()):
        ax.hlines(r.worst_group, i - 0.4, i + 0.4, colors="black", linestyles="dashed")
    ax.set_xticks(np.arange(len(probes)), [wrap_label(n) for n in probes], fontsize=8)
    ax.set_ylim(0, 1.22)
    ax.set_ylabel("accuracy (dashed: worst group)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", ncol=len(GROUP_NAMES), frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)


def tcav_bars(rows: list[dict], path: str | Path, concept: str, title: str) -> Path:
    """TCAV scores per class (rows of `hrssm.concepts.tcav_by_class`) beside the random CAVs' scores, with their
    spread and the p-value (* when significant)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(rows), 3.6))
    x = np.arange(len(rows))
    for offset, key, colour, label in ((-0.18, "scores", "tab:blue", f"CAV of {concept}"),
                                       (0.18, "random_scores", "tab:gray", "random CAVs")):
        ax.bar(x + offset, [np.mean(r[key]) for r in rows], 0.34, yerr=[np.std(r[key]) for r in rows],
               color=colour, label=label, capsize=3)
    for i, r in enumerate(rows):
        ax.text(i, 1.04, f"p={r['p_value']:.2g}" + (" *" if r["significant"] else ""), ha="center", fontsize=8)
    ax.set_xticks(x, [r["class"] for r in rows])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("TCAV score")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def wrap_label(text: str, width: int = 28) -> str:
    """Break a label into lines of at most ~`width` characters at spaces."""
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join([*lines, line])


def save_figure(fig, path: str | Path) -> Path:
    """Save a figure as PNG (110 dpi), creating the folder, and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
