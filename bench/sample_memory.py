"""Peak memory of `kakusan sample` against n: flat, because chunks are written as they finish.

    python bench/sample_memory.py [--model mnist-xs-guide] [--ns 1000,4000,16000] [--chunk 1000]

Each n runs in a fresh process (`kakusan sample MODEL --n N --nfe 1 --sampler euler`: the cheapest sampler, since
only the memory is measured) that reports its own peak resident set size (ru_maxrss). Last line: one JSON object
``{model, chunk, rows: [{n, peak_rss_mb, seconds}], growth}``, growth = peak at the largest n / peak at the smallest.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import resource, sys
from kakusan.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
"""


def peak(model: str, n: int, chunk: int, out: Path) -> tuple[float, float]:
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", CHILD, "sample", model, "--out", str(out), "--n", str(n), "--nfe", "1",
                        "--sampler", "euler", "--chunk", str(chunk), "--batch-size", "250", "--no-progress"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    kb = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("PEAK_KB")][-1]
    return kb / 1024, time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mnist-xs-guide")
    ap.add_argument("--ns", default="1000,4000,16000")
    ap.add_argument("--chunk", type=int, default=1000)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(v) for v in args.ns.split(",")]:
            mb, seconds = peak(args.model, n, args.chunk, Path(tmp) / f"n{n}")
            rows.append({"n": n, "peak_rss_mb": round(mb, 1), "seconds": round(seconds, 1)})
            print(f"n = {n:6d}: peak RSS {mb:7.1f} MB  ({seconds:.0f} s)", flush=True)
    growth = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak at n = {rows[-1]['n']} / peak at n = {rows[0]['n']}: {growth:.3f} "
          f"(images alone would grow {rows[-1]['n'] / rows[0]['n']:.0f}x)")
    print(json.dumps({"model": args.model, "chunk": args.chunk, "rows": rows, "growth": round(growth, 3)}))


if __name__ == "__main__":
    main()
