"""Time to quality: kakusan against the toolkits people use, on the same data, minutes and judges.

    make bench-peers                       # once: the peers' venv (.venv-peers: torch 2.14.1 + torchvision 0.29.1)
    python bench/time_to_quality.py [--budgets 4,8,16,32] [--n 1000] [--out runs/ttq] [--legs ...] [--steps ddpm=25]

Legs (``bench/race/``; each runs its own library's training code and recommended sampler — see each file):
* ``kakusan`` (``--precision auto``) and ``kakusan-fp32``: kakusan's venv;
* ``k-diffusion`` and ``ddpm`` (denoising-diffusion-pytorch): the peers' venv (both need torchvision, which does not
  import beside kakusan's CPU torch) — a leg whose package is missing is skipped, saying so;
* ``diffusers``: the loop of diffusers' training example, one run per budget (its cosine schedule needs the total).
All legs are **unconditional** (k-diffusion's ``image_v1`` and the lucidrains Trainer take no labels), batch 64, on
the 5,000 MNIST images at 32x32, networks at about mnist-s's size (each leg's parameter count is reported).

**Fairness.** Two legs run at a time, each pinned to one core (``taskset``) with one thread, so that both see the
same machine at the same moments; every leg's clock counts its own start-up and stops at each budget (a mark), where
its EMA weights are saved with the clock paused. Sampling (1,000 images from seeds 0..999) starts as soon as a
leg's training is done, timed apart, with each leg's own number of steps unless ``--steps`` says otherwise.

**Judges.** Every judge of kakusan's panel: FD against all 5,000 real images with a bootstrap spread (samples and
reference resampled), the judge's real-vs-real floor, FD over floor; with no labels, the featurenet's class
histogram stands in for class accuracy (its total-variation distance from uniform). Each (leg, budget) is done once:
a rerun with the same ``--out`` picks up where it stopped. Raw log: docs/time-to-quality-bench.txt; plot:
docs/images/time-to-quality.png. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
RACE = ROOT / "bench" / "race"
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
# leg -> (script, venv python, import that proves the package is there, extra arguments, one run per budget?)
LEGS = {
    "kakusan": ("kakusan_leg.py", sys.executable, "kakusan", ["--precision", "auto"], False),
    "kakusan-fp32": ("kakusan_leg.py", sys.executable, "kakusan", ["--precision", "fp32"], False),
    "k-diffusion": ("kdiffusion_leg.py", str(PEERS_PYTHON), "k_diffusion", [], False),
    "ddpm": ("ddpm_leg.py", str(PEERS_PYTHON), "denoising_diffusion_pytorch", [], False),
    "diffusers": ("diffusers_leg.py", sys.executable, "diffusers", [], True),
}
OURS = {"kakusan", "kakusan-fp32"}
# minutes to sample 1,000 images on one core with the leg's own steps (commit 94c9963): the costliest start first
SAMPLING_MINUTES = {"kakusan": 1.7, "kakusan-fp32": 1.8, "k-diffusion": 7.8, "ddpm": 18.0, "diffusers": 10.7}
NAMES = {"kakusan": "kakusan", "kakusan-fp32": "kakusan fp32", "k-diffusion": "k-diffusion",
         "ddpm": "denoising-diffusion-pytorch", "diffusers": "diffusers example"}


def available(leg: str) -> str | None:
    """None if the leg can run, else why not."""
    _, python, module, _, _ = LEGS[leg]
    if not Path(python).exists():
        return f"{python} is missing (make bench-peers)"
    r = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
    return None if r.returncode == 0 else f"{module} does not import in {python}: {r.stderr.strip().splitlines()[-1]}"


def jobs_for(legs: list[str], budgets: list[float]) -> list[dict]:
    """Training jobs: one per leg, or one per (leg, budget) for a leg whose schedule needs its total."""
    jobs = []
    for leg in legs:
        script, python, _, extra, per_budget = LEGS[leg]
        for marks in ([[b] for b in budgets] if per_budget else [budgets]):
            name = f"{leg}-{marks[0]:g}" if per_budget else leg
            jobs.append({"leg": leg, "name": name, "python": python, "script": str(RACE / script),
                         "extra": extra, "marks": marks, "minutes": marks[-1]})
    return jobs


def run_pinned(commands: list[tuple], cores: int = 2) -> None:
    """Run (name, argv, log[, ready]) commands, ``cores`` at a time, each on its own core with one thread, in the
    order given, passing over a command whose ``ready()`` is still false (a sample waits for its training); a failed
    command is reported, not fatal, and the commands left waiting on it are dropped, saying so."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    free, running, queue = list(range(cores)), {}, list(commands)
    while queue or running:
        for item in [c for c in queue if len(c) < 4 or c[3]()][:len(free)]:
            queue.remove(item)
            name, argv, log = item[:3]
            core = free.pop(0)
            print(f"  start {name} on core {core}", flush=True)
            handle = open(log, "w")
            running[subprocess.Popen(["taskset", "-c", str(core), *argv], env=env, stdout=handle,
                                     stderr=subprocess.STDOUT, cwd=ROOT)] = (name, core, time.time(), handle)
        if queue and not running:  # nothing runs and nothing left can start: their training failed
            for name, *_ in queue:
                print(f"  {name}: dropped (its training did not finish)", flush=True)
            return
        time.sleep(2)
        for p in [p for p in running if p.poll() is not None]:
            name, core, t0, handle = running.pop(p)
            handle.close()
            free.append(core)
            status = "done" if p.returncode == 0 else f"FAILED (exit {p.returncode}; see its log)"
            print(f"  {name}: {status} in {(time.time() - t0) / 60:.1f} min", flush=True)


def train_commands(jobs, data: Path, out: Path, smoke: bool) -> list[tuple]:
    """Training commands, longest first; a job whose ``leg.json`` exists is done."""
    todo = []
    for j in sorted(jobs, key=lambda j: -j["minutes"]):
        d = out / j["name"]
        if (d / "leg.json").exists():
            continue
        if d.exists():  # a leg stopped half-way starts again in a fresh folder; the old one is kept aside
            d.rename(out / f"{j['name']}.stopped-{int(time.time())}")
        argv = [j["python"], j["script"], "train", "--data", str(data), "--out", str(d),
                "--marks", ",".join(f"{m:g}" for m in j["marks"]), *j["extra"], *(["--smoke"] if smoke else [])]
        todo.append((f"train {j['name']}", argv, out / f"{j['name']}.train.log"))
    return todo


def sample_commands(jobs, out: Path, n: int, smoke: bool, steps: dict[str, int]) -> list[tuple]:
    """Sampling commands, the costliest leg first; each waits until its leg's training has written ``leg.json``."""
    todo = []
    for j in sorted(jobs, key=lambda j: -SAMPLING_MINUTES[j["leg"]]):
        d = out / j["name"]
        for m in j["marks"]:
            if not (d / f"mark-{m:g}" / "samples.safetensors").exists():
                argv = [j["python"], j["script"], "sample", "--out", str(d), "--mark", f"{m:g}", "--n", str(n),
                        *(["--steps", str(steps[j["leg"]])] if j["leg"] in steps else []),
                        *(["--smoke"] if smoke else [])]
                todo.append((f"sample {j['name']} at {m:g} min", argv, out / f"{j['name']}.sample-{m:g}.log",
                             lambda d=d: (d / "leg.json").exists()))
    return todo


def class_balance(judges, images: torch.Tensor) -> float | None:
    """Total-variation distance of the first classifier judge's predicted-class histogram from uniform."""
    from kakusan.metrics.scores import extract

    for j in judges:
        if j.classifies:
            _, logits = extract(j.net, images)
            hist = torch.bincount(logits.argmax(1), minlength=logits.shape[1]).float() / len(images)
            return round(float(0.5 * (hist - 1 / len(hist)).abs().sum()), 4)
    return None


def score_all(jobs, out: Path, n: int) -> tuple[list[dict], dict]:
    """One row per (leg, budget) under every judge, and each judge's resampled FDs by (leg, budget), resampled on
    the same indices for every set (to pair them: :func:`paired_ratios`)."""
    from kakusan.data import load_dataset
    from kakusan.metrics import load_panel
    from kakusan.metrics.panel import panel_references, panel_scores

    judges, real = load_panel(), load_dataset("mnist", image_size=32).images
    refs = panel_references(judges, real, n, reference="all", spread="both")
    rows, kept = [], {}
    for j in jobs:
        d = out / j["name"]
        if not (d / "leg.json").exists():
            continue
        leg = json.loads((d / "leg.json").read_text())
        for mark in leg["marks"]:
            md = d / f"mark-{mark['minutes']:g}"
            if not (md / "samples.safetensors").exists():
                continue
            images = load_file(str(md / "samples.safetensors"))["images"][:n]
            scores = panel_scores(judges, images, real, n=n, bootstrap=100, refs=refs, keep=True)
            kept[(j["leg"], mark["minutes"])] = scores
            rows.append({"leg": j["leg"], "minutes": mark["minutes"], "params": leg["params"], "kimg": mark["kimg"],
                         "img_s": mark["img_s"], "sampling": json.loads((md / "sample.json").read_text()),
                         "class_tv": class_balance(judges, images),
                         "judges": {s["judge"]: {k: round(s[k], 5) for k in ("fd", "fd_std", "floor_fd",
                                                                             "fd_over_floor")} for s in scores}})
            r = rows[-1]
            print(f"  {NAMES[r['leg']]:28} {r['minutes']:5g} min {r['kimg']:7.1f} kimg  " + "  ".join(
                f"{k} {v['fd']:.3g}±{v['fd_std']:.2g}" for k, v in r["judges"].items()), flush=True)
    return rows, kept


def paired_ratios(kept: dict) -> list[dict]:
    """FD_kakusan / FD_peer with its paired bootstrap spread, per judge (:func:`kakusan.metrics.panel.pair_rows`):
    at the same budget, and kakusan at a half and a quarter of the peer's budget."""
    from kakusan.metrics.panel import pair_rows

    out = []
    for (peer, minutes), theirs in sorted(kept.items()):
        if peer in OURS:
            continue
        for mine in (minutes, minutes / 2, minutes / 4):  # the same budget; the target's ½; the moonshot's ¼
            if ("kakusan", mine) in kept:
                rows = pair_rows({"kakusan": kept[("kakusan", mine)], peer: theirs}, "kakusan", peer)
                out.append({"peer": peer, "peer_minutes": minutes, "kakusan_minutes": mine,
                            "ratio": {r["judge"]: [round(r["ratio"], 4), round(r["ratio_std"], 4)] for r in rows}})
                print(f"  kakusan at {mine:g} min / {NAMES[peer]} at {minutes:g} min: " + "  ".join(
                    f"{j} {v[0]:.3f}±{v[1]:.3f}" for j, v in out[-1]["ratio"].items()), flush=True)
    return out


def verdicts(rows: list[dict]) -> dict:
    """Per peer and judge: the peer's best FD and its minutes; kakusan's first budget at or below it; the ratio of
    minutes; and at the last budget, kakusan's FD against the peer's, in units of their combined spread."""
    out = {}
    last = max(r["minutes"] for r in rows)
    mine = sorted((r for r in rows if r["leg"] == "kakusan"), key=lambda r: r["minutes"])
    for peer in sorted({r["leg"] for r in rows} - OURS):
        theirs = [r for r in rows if r["leg"] == peer]
        end = [(r, p) for r in mine for p in theirs if r["minutes"] == last == p["minutes"]]
        per_judge = {}
        for judge in theirs[0]["judges"]:
            best = min(theirs, key=lambda r: r["judges"][judge]["fd"])
            fd = best["judges"][judge]["fd"]
            reach = next((r["minutes"] for r in mine if r["judges"][judge]["fd"] <= fd), None)
            z = None
            if end:
                a, b = end[0][0]["judges"][judge], end[0][1]["judges"][judge]
                z = round((b["fd"] - a["fd"]) / max((a["fd_std"] ** 2 + b["fd_std"] ** 2) ** 0.5, 1e-12), 2)
            per_judge[judge] = {"peer_best_fd": fd, "peer_minutes": best["minutes"], "kakusan_minutes": reach,
                                "minutes_ratio": None if reach is None else round(reach / best["minutes"], 3),
                                "last_budget_z": z}
        out[peer] = per_judge
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    judges = list(rows[0]["judges"])
    fig, axes = plt.subplots(1, len(judges), figsize=(4 * len(judges), 3.6), squeeze=False)
    for ax, judge in zip(axes[0], judges):
        for leg in LEGS:
            rs = sorted((r for r in rows if r["leg"] == leg), key=lambda r: r["minutes"])
            if rs:
                ax.errorbar([r["minutes"] for r in rs], [r["judges"][judge]["fd"] for r in rs],
                            yerr=[r["judges"][judge]["fd_std"] for r in rs], marker="o", capsize=3,
                            label=f"{NAMES[leg]} — {rs[0]['sampling']['sampler'].split(' (')[0]}")
        ax.axhline(rows[0]["judges"][judge]["floor_fd"], color="grey", ls=":", label="real vs real (floor)")
        ax.set(xscale="log", yscale="log", xlabel="training minutes (one core each)", ylabel="FD (lower is better)",
               title=f"judge: {judge}")
        ax.set_xticks(sorted({r["minutes"] for r in rows}), [f"{m:g}" for m in sorted({r["minutes"] for r in rows})])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
    fig.suptitle("Time to quality on MNIST 32x32 (5,000 images), unconditional, 1,000 samples, bootstrap spread")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budgets", default="4,8,16,32", help="training minutes, increasing")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--out", default="runs/ttq")
    ap.add_argument("--legs", default=",".join(LEGS))
    ap.add_argument("--plot", default="docs/images/time-to-quality.png")
    ap.add_argument("--steps", default="", help="sampling steps per leg, e.g. ddpm=25 (default: each leg's own)")
    ap.add_argument("--smoke", action="store_true", help="tiny networks and two sampling steps (the suite's check)")
    args = ap.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    legs = args.legs.split(",")
    try:
        steps = {k: int(v) for k, v in (kv.split("=") for kv in args.steps.split(",") if kv)}
    except ValueError:
        raise SystemExit(f"error: --steps takes leg=count pairs, e.g. ddpm=25; got {args.steps!r}") from None
    if budgets != sorted(budgets) or budgets[0] <= 0 or not set(legs) | set(steps) <= set(LEGS):
        raise SystemExit(f"error: budgets must be positive and increasing; legs (and --steps legs) among "
                         f"{', '.join(LEGS)}")
    out = Path(args.out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    data = out / "data" / "mnist32.safetensors"
    if not data.exists():
        from kakusan.data import load_dataset
        save_file({"images": load_dataset("mnist", image_size=32).images.contiguous()}, str(data))
    skipped = {leg: why for leg in legs if (why := available(leg))}
    for leg, why in skipped.items():
        print(f"skipping {leg}: {why}", flush=True)
    jobs = jobs_for([leg for leg in legs if leg not in skipped], budgets)
    print(f"training {len(jobs)} jobs, then sampling, two at a time, one core each (a leg samples as soon as its "
          "training is done)", flush=True)
    run_pinned(train_commands(jobs, data, out, args.smoke) + sample_commands(jobs, out, args.n, args.smoke, steps))
    print("scoring (every judge; FD ± bootstrap spread)", flush=True)
    rows, kept = score_all(jobs, out, args.n)
    print("paired ratios FD_kakusan / FD_peer (± paired bootstrap spread)", flush=True)
    ratios = paired_ratios(kept)
    settings = {j["name"]: json.loads((out / j["name"] / "leg.json").read_text())
                for j in jobs if (out / j["name"] / "leg.json").exists()}
    result = {"n": args.n, "budgets": budgets, "sampling_steps": steps, "skipped": skipped, "cpu": cpu_name(),
              "rows": rows, "verdicts": verdicts(rows) if rows else {}, "paired_ratios": ratios, "settings": settings}
    if rows and args.plot:
        plot(rows, Path(args.plot))
    print(json.dumps(result))


def cpu_name() -> str:
    from kakusan.utils.precision import cpu_has_amx_bf16

    name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), "unknown")
    return f"{name} ({'with' if cpu_has_amx_bf16() else 'without'} AMX-BF16)"


if __name__ == "__main__":
    main()
