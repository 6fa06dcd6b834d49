"""The rows of a guide search (:mod:`.sweep`) or of its rescoring (:mod:`.rescore`): one :class:`Row` per guide
setting, sampler setting and guidance weight w, and what is made of a list of them — the best w of each setting, the
paired comparison of settings (ratios and gaps with their paired bootstrap spreads: every row is sampled on the same
seeds and resampled on the same indices, :func:`kakusan.metrics.scores.fd_bootstrap`), sweep.csv, the safetensors of
every row's bootstrap FDs or features, sweep.png and compare.png.

A sweep's rows are one flat list in the order they were made (sampler setting, then guide setting, then w); the
functions here group them by :func:`by_sampling` where they need to, keeping that order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils import io
from ..utils.images import save_grid

FIELDS = ("w", "fd", "fd_std", "precision", "recall", "class_acc")
CSV_FIELDS = ("setting", "guide", "guide_ema", "main_ema", "interval", "sampling", *FIELDS, "floor_fd")


@dataclass
class Row:
    """One guide setting at guidance weight w on one sampler setting, scored on the sweep's seeds."""

    sampling: str  # the sampler setting, e.g. 'heun:35' or 'default'
    setting: str  # the guide setting's name, e.g. 'autoguidance' or 'cfg' (RUN/SETTING when runs are compared)
    w: float
    fd: float  # Fréchet distance to the reference, and its bootstrap spread
    fd_std: float
    precision: float
    recall: float
    class_acc: float  # the evaluation network's accuracy on the samples' labels
    floor_fd: float  # real vs real FD at the same n: the best a row can reach
    fd_boot: torch.Tensor  # (bootstrap,) resampled FDs, on the same indices in every row (paired)
    features: torch.Tensor | None = None  # (n, D) evaluation features, to score again (:mod:`.rescore`)
    preview: torch.Tensor | None = None  # the first samples, for compare.png

    @property
    def key(self) -> str:
        """The row's name in the safetensors files: 'sampling|setting|w=W'."""
        return f"{self.sampling}|{self.setting}|w={self.w:g}"

    def numbers(self) -> dict:
        """{w, fd, fd_std, precision, recall, class_acc, floor_fd} as plain numbers."""
        return {k: getattr(self, k) for k in (*FIELDS, "floor_fd")}


def by_sampling(rows: list[Row]) -> dict[str, dict[str, list[Row]]]:
    """{sampler setting: {guide setting: its rows in order of w}}, in the order the rows come."""
    out: dict[str, dict[str, list[Row]]] = {}
    for r in rows:
        out.setdefault(r.sampling, {}).setdefault(r.setting, []).append(r)
    return out


def as_nested(rows: list[Row]) -> dict:
    """{sampler setting: {guide setting: [row numbers]}}: the rows as a report shows them (and the CLI prints)."""
    return {spec: {name: [r.numbers() for r in rs] for name, rs in by.items()}
            for spec, by in by_sampling(rows).items()}


def summarize(rows: list[Row]) -> dict:
    """What a sweep or a rescoring returns of its rows: ``table`` (the rows), ``rows`` (:func:`as_nested`), ``best``
    ({sampler setting: {guide setting: the numbers of its best row}}) and ``paired`` (:func:`paired_summary`)."""
    best = best_rows(rows)
    return {"table": rows, "rows": as_nested(rows),
            "best": {spec: {name: r.numbers() for name, r in by.items()} for spec, by in best.items()},
            "paired": paired_summary(rows, best)}


def best_rows(rows: list[Row]) -> dict[str, dict[str, Row]]:
    """{sampler setting: {guide setting: its row of lowest FD}} (the first of equals)."""
    return {spec: {name: min(rs, key=lambda r: r.fd) for name, rs in by.items()}
            for spec, by in by_sampling(rows).items()}


def paired_summary(rows: list[Row], best: dict | None = None) -> dict:
    """Per sampler setting and guide setting, its best row set against (a) its own unguided row (w = 1) as a ratio
    and (b) the leader (the lowest best FD of all settings) as a gap, each with its *paired* bootstrap spread, far
    below either FD's own."""
    best, out = best or best_rows(rows), {}
    for spec, by in by_sampling(rows).items():
        top = best[spec]
        leader = min(top, key=lambda k: top[k].fd)
        out[spec] = {}
        for name, b in top.items():
            entry = {"w": b.w, "fd": b.fd, "fd_std": b.fd_std, "gap_to_leader": b.fd - top[leader].fd,
                     "gap_std": float((b.fd_boot - top[leader].fd_boot).std()), "leader": leader}
            ref = next((r for r in by[name] if r.w == 1), None)
            if ref is not None:
                entry["ratio_to_unguided"] = b.fd / ref.fd
                entry["ratio_std"] = float((b.fd_boot / ref.fd_boot).std())
            out[spec][name] = entry
    return out


def save_rows(rows: list[Row], key: str, path: Path) -> None:
    """Every row's tensor ``key`` ('fd_boot' or 'features'), named by :attr:`Row.key`, atomically."""
    io.save_tensors({r.key: getattr(r, key).to(torch.float32, copy=True) for r in rows}, path)


def write_table(path: Path, lines) -> None:
    """A CSV of CSV_FIELDS (``lines``: value lists in that order), written atomically."""
    io.write_csv(CSV_FIELDS, lines, path)


def write_csv(path: Path, settings: dict, rows: list[Row], used: dict[str, tuple[str, str]]) -> None:
    """One line per row; ``settings``: {name: :class:`.sweep.Setting`}; ``used``: {setting: (guide weights, main
    weights)} as loaded ('auto' resolved)."""
    lines = []
    for r in rows:
        s, (g_ema, m_ema) = settings[r.setting], used[r.setting]
        iv = f"{s.interval[0]:g}-{s.interval[1]:g}" if s.interval else ""
        lines.append([r.setting, s.guide, g_ema if s.guide != "uncond" else "", m_ema, iv, r.sampling,
                      *(f"{getattr(r, k):.6g}" for k in FIELDS), f"{r.floor_fd:.6g}"])
    write_table(path, lines)


def plot_compare(rows: list[Row], settings: dict, col_labels: list[str], path: Path) -> Path:
    """The preview samples (same seeds and labels in every row) unguided (once per main EMA) and at each setting's
    best w, per sampler setting, each row labelled with its setting, w and FD."""
    images, names = [], []
    mains = {s.main_ema for s in settings.values()}
    best = best_rows(rows)
    for spec, by in by_sampling(rows).items():
        unguided = {settings[name].main_ema: r for name, rs in by.items() for r in rs if r.w == 1}
        picks = [("unguided" + (f" m{ema}" if len(mains) > 1 else ""), r) for ema, r in unguided.items()]
        picks += [(name, b) for name, b in best[spec].items() if b.w != 1]
        for name, r in picks:
            images.append(r.preview)
            names.append(f"{spec} | {name}" + (f" w {r.w:g}" if r.w != 1 else "") + f" | FD {r.fd:.3f}")
    return save_grid(torch.cat(images), path, nrow=len(col_labels), row_labels=names, col_labels=col_labels)


def plot_sweep(rows: list[Row], path: Path, n: int, reference: str = "split") -> Path:
    """One FD panel (log scale, bootstrap error bars, best w starred) and one class-accuracy panel per sampler
    setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = by_sampling(rows)
    fig, axes = plt.subplots(len(grouped), 2, figsize=(12, 4 * len(grouped)), dpi=100, squeeze=False)
    for (ax_fd, ax_acc), (spec, by) in zip(axes, grouped.items()):
        for name, rs in by.items():
            ws = [r.w for r in rs]
            line = ax_fd.errorbar(ws, [r.fd for r in rs], yerr=[r.fd_std for r in rs], marker="o", ms=3,
                                  capsize=2, label=name)
            b = min(rs, key=lambda r: r.fd)
            ax_fd.plot([b.w], [b.fd], marker="*", ms=14, color=line[0].get_color())
            ax_acc.plot(ws, [r.class_acc for r in rs], marker="o", ms=3, label=name)
        ax_fd.axhline(next(iter(by.values()))[0].floor_fd, color="gray", ls="--", lw=1, label="real vs real")
        ax_fd.set_yscale("log")
        against = "all real images" if reference == "all" else f"{n} real images"
        ax_fd.set_title(f"FD vs w, {spec}, n={n} against {against} (bootstrap std; star: best w)", fontsize=9)
        ax_acc.set_title(f"class accuracy vs w, {spec}")
        for ax in (ax_fd, ax_acc):
            ax.set_xlabel("guidance weight w")
            ax.grid(alpha=0.3)
        ax_fd.legend(fontsize=7)
    fig.tight_layout()
    io.write_figure(fig, path)
    plt.close(fig)
    return path
