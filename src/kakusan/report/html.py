"""A one-page, self-contained HTML report: the sample grid (embedded) and a metrics table beside the floor."""
from __future__ import annotations

import base64
import html
from pathlib import Path

from ..utils.io import write_text

ROWS = [("fd", "Fréchet distance ↓"), ("kid", "KID ↓"), ("precision", "precision ↑"), ("recall", "recall ↑")]


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


def write_report(path: str | Path, title: str, grid_png: str | Path, metrics: dict, details: dict) -> Path:
    grid = base64.b64encode(Path(grid_png).read_bytes()).decode()
    floor = metrics.get("floor", {})
    rows = "".join(f"<tr><td>{label}</td><td>{_fmt(metrics[k])}</td><td>{_fmt(floor.get(k, ''))}</td></tr>"
                   for k, label in ROWS if k in metrics)
    if "class_acc" in metrics:
        rows += f"<tr><td>class accuracy ↑</td><td>{_fmt(metrics['class_acc'])}</td><td></td></tr>"
    info = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in details.items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border: 1px solid #ccc; padding: .3rem .8rem; }}
th {{ background: #f3f3f3; }} td:not(:first-child) {{ text-align: right; font-variant-numeric: tabular-nums; }}
.grid {{ image-rendering: pixelated; max-width: 100%; border: 1px solid #ddd; }} .note {{ color: #666; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<img class="grid" src="data:image/png;base64,{grid}" alt="sample grid">
<h2>Quality on {metrics.get('n', '?')} samples</h2>
<table><tr><th>metric</th><th>samples</th><th>real vs real (floor)</th></tr>{rows}</table>
<p class="note">The floor is the same metric between two disjoint sets of real images of the same size: small-sample
FD is biased upwards, so compare a score with its floor, not with published FIDs on 50,000 Inception features.</p>
<h2>Details</h2><table>{info}</table>
</body></html>
"""
    write_text(page, path)
    return Path(path)
