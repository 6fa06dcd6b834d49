"""Scores and paired comparisons under every judge of the panel (:mod:`.judges`).

:func:`panel_scores` gives each judge's row for one sample set: FD with its bootstrap spread, KID, precision /
recall, the judge's own real-vs-real floor at the same n, the FD over that floor, and — for classifier judges — the
class accuracy. :func:`compare_sets` scores several sample sets of the same size and seeds under each judge and sets
every pair side by side: the FD ratio A / B and the gap B − A, each with its *paired* bootstrap spread (every set is
resampled on the same indices, :func:`~kakusan.metrics.scores.fd_bootstrap`). A claim "A beats B" holds only if it
holds under every judge beyond the spread (:func:`verdict`); otherwise it depends on the judge.
"""
from __future__ import annotations

import torch

from .. import KakusanError
from .judges import Judge
from .scores import extract, reference_sets, score_features

ROW_KEYS = ("fd", "fd_std", "floor_fd", "fd_over_floor", "kid", "precision", "recall", "class_acc")


def judge_row(judge: Judge, score: dict, logits: torch.Tensor | None, labels: torch.Tensor | None) -> dict:
    """One judge's row (plain numbers) from :func:`~kakusan.metrics.scores.score_features`."""
    row = {"judge": judge.name, "kind": judge.kind, "n": score["n"], "fd": score["fd"], "fd_std": score.get("fd_std"),
           "floor_fd": score["floor"]["fd"], "floor_n": score["floor"]["n"], "fd_over_floor": score["fd_over_floor"],
           "kid": score["kid"], "precision": score["precision"], "recall": score["recall"], "class_acc": None}
    if logits is not None and labels is not None:
        row["class_acc"] = float((logits.argmax(1) == labels[:len(logits)]).float().mean())
    return row


def panel_references(judges: list[Judge], real: torch.Tensor, n: int, seed: int = 0, reference: str = "all",
                     real_labels: torch.Tensor | None = None, spread: str = "auto") -> dict[str, dict]:
    """Each judge's reference features and real-vs-real floor at n (:func:`~.scores.reference_sets`)."""
    return {j.name: reference_sets(j.net, real, n, seed, reference, real_labels, spread) for j in judges}


def panel_scores(judges: list[Judge], samples: torch.Tensor, real: torch.Tensor, labels: torch.Tensor | None = None,
                 *, n: int | None = None, seed: int = 0, bootstrap: int = 100, reference: str = "all",
                 real_labels: torch.Tensor | None = None, spread: str = "auto", refs: dict | None = None,
                 keep: bool = False) -> list[dict]:
    """One row per judge for ``samples`` (the first ``n``); ``keep`` adds each judge's resampled FDs
    (``fd_boot``), to pair with another set's. ``refs``: :func:`panel_references`, when already computed."""
    n = min(n or len(samples), len(samples))
    if n < 10:
        raise KakusanError(f"at least 10 samples are needed (got {n})")
    if samples.shape[1:] != real.shape[1:]:
        raise KakusanError(f"samples are {tuple(samples.shape[1:])} but reference images are {tuple(real.shape[1:])}")
    refs = refs or panel_references(judges, real, n, seed, reference, real_labels, spread)
    rows = []
    for judge in judges:
        feats, logits = extract(judge.net, samples[:n])
        s = score_features(refs[judge.name], feats, seed, bootstrap)
        row = judge_row(judge, s, logits, labels)
        rows.append(row | ({"fd_boot": s["fd_boot"]} if keep and bootstrap else {}))
    return rows


def verdict(z_by_judge: dict[str, float], beyond: float = 1.0) -> str:
    """The panel's reading of "A beats B" from each judge's gap (FD_B − FD_A) in units of its paired spread:
    'holds' if every judge puts A ahead by more than ``beyond`` spreads, 'reversed' if every judge puts B ahead so,
    'depends on the judge' if judges disagree beyond their spreads, 'inside the spread' if no judge separates them."""
    ahead = [z > beyond for z in z_by_judge.values()]
    behind = [z < -beyond for z in z_by_judge.values()]
    if all(ahead):
        return "holds"
    if all(behind):
        return "reversed"
    if any(ahead) or any(behind):
        return "depends on the judge"
    return "inside the spread"


def pair_rows(rows: dict[str, list[dict]], a: str, b: str) -> list[dict]:
    """Per judge: FD_A / FD_B and FD_B − FD_A with their paired bootstrap spreads (rows kept with ``fd_boot``)."""
    out = []
    for ra, rb in zip(rows[a], rows[b]):
        ba, bb = ra["fd_boot"], rb["fd_boot"]
        gap, gap_std = rb["fd"] - ra["fd"], float((bb - ba).std())
        out.append({"judge": ra["judge"], "a": a, "b": b, "fd_a": ra["fd"], "fd_b": rb["fd"],
                    "ratio": ra["fd"] / max(rb["fd"], 1e-12), "ratio_std": float((ba / bb.clamp(min=1e-12)).std()),
                    "gap": gap, "gap_std": gap_std, "z": gap / max(gap_std, 1e-12)})
    return out


def compare_sets(judges: list[Judge], sets: dict[str, tuple[torch.Tensor, torch.Tensor | None]], real: torch.Tensor,
                 *, real_labels: torch.Tensor | None = None, seed: int = 0, bootstrap: int = 100,
                 reference: str = "all", spread: str = "both", pairs: list[tuple[str, str]] | None = None,
                 beyond: float = 1.0) -> dict:
    """Score every named sample set (images, labels) under every judge and compare ``pairs`` (default: every pair,
    in the order given). The sets must have the same size — drawn on the same seeds, they are resampled in pairs.
    Returns {'scores': {set: rows}, 'pairs': [{a, b, rows, verdict}]}."""
    if len(sets) < 2:
        raise KakusanError("compare needs at least two sample sets")
    if bootstrap < 2:
        raise KakusanError(f"paired spreads need at least 2 bootstrap resamplings (got {bootstrap})")
    sizes = {name: len(images) for name, (images, _) in sets.items()}
    if len(set(sizes.values())) != 1:
        raise KakusanError(f"paired comparison needs sample sets of one size, drawn on the same seeds (got {sizes})")
    n = next(iter(sizes.values()))
    refs = panel_references(judges, real, n, seed, reference, real_labels, spread)
    scores = {name: panel_scores(judges, images, real, labels, seed=seed, bootstrap=bootstrap, refs=refs, keep=True)
              for name, (images, labels) in sets.items()}
    names = list(sets)
    pairs = pairs or [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    unknown = {x for p in pairs for x in p} - set(names)
    if unknown:
        raise KakusanError(f"a pair names unknown sets {sorted(unknown)} (sets: {', '.join(names)})")
    compared = []
    for a, b in pairs:
        rows = pair_rows(scores, a, b)
        compared.append({"a": a, "b": b, "rows": rows,
                         "verdict": verdict({r["judge"]: r["z"] for r in rows}, beyond)})
    return {"n": n, "reference": reference, "spread": refs[judges[0].name]["spread"], "bootstrap": bootstrap,
            "beyond": beyond, "scores": scores, "pairs": compared}


def canonical_correlations(x: torch.Tensor, y: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """The canonical correlations of two feature sets of the same images (Hotelling 1936), largest first: the
    singular values of Qx^T Qy for orthonormal bases Qx, Qy of the centred features' column spaces (directions whose
    singular value is below ``rtol`` of the largest are dropped). All equal to 1 if one judge's features are a linear
    map of the other's; their mean measures how much of one feature space the other sees."""
    def basis(f):
        f = f.double() - f.double().mean(0)
        u, s, _ = torch.linalg.svd(f, full_matrices=False)
        return u[:, s > rtol * s[0]]
    return torch.linalg.svdvals(basis(x).T @ basis(y))


def panel_summary(judges: list[Judge], samples: torch.Tensor, real: torch.Tensor, labels: torch.Tensor | None = None,
                  **options) -> dict[str, dict]:
    """{judge: {fd, fd_over_floor[, fd_std]}}: a bench's one-line view of a sample set under the whole panel
    (:func:`panel_scores`; by default the class-stratified split of :func:`~.scores.evaluate`, no bootstrap)."""
    options = {"reference": "split", "bootstrap": 0} | options
    rows = panel_scores(judges, samples, real, labels, **options)
    return {r["judge"]: {k: round(r[k], 5) for k in ("fd", "fd_over_floor", "fd_std") if r[k] is not None}
            for r in rows}


def summary_line(summary: dict[str, dict]) -> str:
    """'judges: featurenet-mnist 0.71 (8.2x floor) | resnet-mnist ...'."""
    return "judges: " + " | ".join(f"{name} {s['fd']:.4g} ({s['fd_over_floor']:.2f}x floor)"
                                   for name, s in summary.items())
