"""One-step distillation (Diffusion2GAN) against its teacher: every row paired with the teacher's on the same seeds,
under every judge of the panel.

    python bench/distill.py --pairs PAIRS [--mse RUN] [--lpips RUN] [--gan RUN] [--extra NAME=RUN[@WEIGHTS]] [--n 2000]
        [--student-ema all|auto|raw|LENGTH] [--ref mnist|mnist-heldout] [--bootstrap 100] [--figure PNG]

The teacher and its guidance are the pair set's (manifest.json). Rows, all on the seeds 1,000,000 + i (never a
training pair's seed), class-cycled, so that any two pair:

* ``teacher35``: the teacher with Heun at 35 NFE (18 steps);
* ``teacher_pairs``: the teacher with the pair set's own sampler, steps and grid;
* ``teacher_default``: the teacher's own default few-step sampling (solver.json: mnist-s, DPM-Solver++(3M) at 4 NFE
  on its optimized grid);
* ``teacher{N}_{solver}``: the teacher at N NFE (``--few-step``) with Euler and DPM-Solver++(2M) (at 1 NFE, Euler);
* ``student_{name}@{weights}``: each given student at 1 NFE with each weight set (``--student-ema all``: the raw
  weights and every stored EMA; ``auto``: the folder's default; ``raw`` or a length: that one; ``--extra
  NAME=RUN@WEIGHTS`` gives one student its own choice).

A row whose setting repeats an earlier one is not drawn again (``same_as``). Every row is scored against ``--ref``
(all 5,000 MNIST digits, or the 1,000 of mnist-heldout) by :func:`kakusan.metrics.panel.compare_sets`. Printed per
row: a header (key, label, solver, NFE, images per second of its sampling), then one line per judge — FD ± its
bootstrap spread, FD / the real-vs-real floor (at min(n, half the reference)), KID, precision, recall, class
accuracy (classifier judges), and the FD ratio row / teacher35 and row / teacher_pairs (and row / ``--control``,
a student's first row), each ± its *paired* bootstrap spread with z (the FD gap in paired spreads, > 0: the row is
better) — and the panel's verdict on "the row beats teacher35 / teacher_pairs / control" (holds, reversed, depends on
the judge, inside the spread). Then the best
solver at each few-step NFE and the best student row (lowest geometric mean of FD / floor over the judges; among
the GAN student's weight sets if there is one), and the teacher with DPM-Solver++(2M) at increasing NFE
(``--match``) until its FD is at most that student's under every judge: the fewest NFE that does, its FD ratios
teacher / student with their paired spreads and the student's speed-up over it (``teacher_match``). Against
mnist-heldout, a one-line note if teacher35's FD is below the floor under some judge (the shipped mnist-s was
trained on all 5,000 digits, mnist-heldout included). NFE counts steps of the teacher; with guidance each step
also calls the guide. ``--figure``: the first ten samples of every row (digits 0-9), labelled.

Last line, one JSON object: n, ref, bootstrap, seeds, pairs, teacher, guide, guidance, students_weights, judges,
references ({teacher35, teacher_pairs}: the row each names), floor ({judge: {fd, n}}), rows ({row: {label, solver,
sampler, steps, schedule, nfe, img_s[, student, weights], judges: {judge: {fd, fd_std, floor_fd, floor_n,
fd_over_floor, kid, precision, recall, class_acc}}, vs: {teacher35 | teacher_pairs | control: {verdict, judges: {judge:
{ratio, ratio_std, z}}}}}}), same_as ({row: the earlier row of its setting}), few_step_best ({NFE: row}),
best_student, teacher_match ({solver, nfe, img_s, judges, vs_student, student, student_speedup}, or {student,
none_up_to_nfe, last}; null without a student or ``--match``) and note (the mnist-heldout note, else null).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass

import torch

from kakusan.data import load_dataset
from kakusan.diffusion import Denoiser, generate
from kakusan.diffusion.denoiser import RAW
from kakusan.diffusion.samplers import nfe_of, steps_for_nfe
from kakusan.distill.pairs import ema_arg
from kakusan.guidance import guide_from_spec
from kakusan.metrics import load_panel
from kakusan.metrics.panel import (
    compare_sets,
    pair_rows,
    panel_references,
    panel_scores,
    verdict,
)
from kakusan.models import model_folder
from kakusan.sampling import choose_sampling
from kakusan.utils import io
from kakusan.utils.images import save_grid

SEED0 = 1_000_000
MATCH_SOLVER = "dpmpp2m"
STUDENTS = {"mse": "MSE", "lpips": "ensembled perceptual", "gan": "perceptual + GAN",
            "lpips_long": "perceptual, as long as + GAN", "gan_w002": "perceptual + GAN, weight 0.02"}
JUDGE_KEYS = ("fd", "fd_std", "floor_fd", "floor_n", "fd_over_floor", "kid", "precision", "recall", "class_acc")
PAIR_KEYS = ("ratio", "ratio_std", "z")
COMPARISON = {"seed": 0, "reference": "all", "spread": "both"}  # compare_sets' settings, shared by the match search


@dataclass(frozen=True)
class Setting:
    """How a row's images are drawn."""
    sampler: str
    steps: int
    schedule: str = "auto"

    @property
    def nfe(self) -> int:
        return 1 if self.sampler == "onestep" else nfe_of(self.sampler, self.steps)

    def describe(self) -> str:
        grid = "" if self.schedule == "auto" else f", {self.schedule} grid"
        return f"{self.sampler} {self.steps} step{'s' * (self.steps != 1)}{grid}"


def at_nfe(sampler: str, nfe: int, schedule: str = "auto") -> Setting:
    return Setting(sampler, steps_for_nfe(sampler, nfe), schedule)


def numbers(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; '' -> []."""
    return [int(k) for k in text.split(",") if k.strip()]


def rounded(x):
    return round(x, 6) if isinstance(x, float) else x


def class_labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 10


def sample(model, make_denoise, setting: Setting, n: int) -> tuple[torch.Tensor, float]:
    """The images of seeds SEED0 .. SEED0 + n - 1 (class-cycled) and the images per second their sampling took."""
    labels = class_labels(n)
    t0 = time.perf_counter()
    images = generate(model, range(SEED0, SEED0 + n), cond=model.cond_from_labels(labels), sampler=setting.sampler,
                      steps=setting.steps, schedule=setting.schedule, make_denoise=make_denoise, progress=False)
    return images.clamp(-1, 1), round(n / (time.perf_counter() - t0), 2)


def teacher_settings(teacher: Denoiser, manifest: dict, few_step: list[int]) -> dict[str, tuple[Setting, dict]]:
    """{row: (setting, facts)} of the teacher's rows, in the order they are reported."""
    sampler, nfe, schedule = choose_sampling(teacher, None, None, None, "auto")
    rows = {"teacher35": (Setting("heun", 18), {}),
            "teacher_pairs": (Setting(manifest["sampler"], manifest["steps"], manifest.get("schedule", "auto")), {}),
            "teacher_default": (at_nfe(sampler, nfe, schedule), {})}
    for nfe in few_step:
        for solver in ("euler",) if nfe == 1 else ("euler", "dpmpp2m"):
            rows[f"teacher{nfe}_{solver}"] = (at_nfe(solver, nfe), {"few_step": nfe})
    return rows


def weight_choices(folder, choice: str) -> list:
    """The ``ema`` arguments of :meth:`Denoiser.from_pretrained` that ``--student-ema`` names for one folder."""
    _, config = Denoiser.read_config(folder)
    stored = ([RAW] if RAW in config["weights"]["sets"] else []) + list(config.get("ema_stds", []))
    if choice == "all":
        return stored
    if choice != "auto" and ema_arg(choice) not in stored:
        raise SystemExit(f"{folder}: no weight set {choice!r} (it holds {stored})")
    return [ema_arg(choice)]


def students(args):
    """(name, folder, ema) of every weight set of every given student."""
    given = [(name, getattr(args, name)) for name in ("mse", "lpips", "gan")]
    bad = [item for item in args.extra if "=" not in item]
    if bad:
        raise SystemExit(f"--extra {bad[0]}: give NAME=RUN[@WEIGHTS]")
    given += [tuple(item.split("=", 1)) for item in args.extra]
    for name, path in given:
        if path:
            path, _, choice = path.partition("@")  # RUN@WEIGHTS: this student's own --student-ema
            folder = model_folder(path)
            for ema in weight_choices(folder, choice or args.student_ema):
                yield name, folder, ema


@dataclass
class Judging:
    """The panel, the real images and the bootstrap every row is scored with (compare_sets' settings throughout)."""
    judges: list
    real: torch.Tensor
    real_labels: torch.Tensor | None
    bootstrap: int

    def compare(self, sets: dict, references: dict[str, str]) -> dict:
        """:func:`compare_sets` of every row with each teacher reference it is not itself."""
        targets = list(dict.fromkeys(references.values()))
        pairs = [(row, ref) for row in sets for ref in targets if row != ref]
        return compare_sets(self.judges, sets, self.real, real_labels=self.real_labels, bootstrap=self.bootstrap,
                            pairs=pairs, **COMPARISON)

    def scorer(self, n: int):
        """Scores of one more set of n, paired with :meth:`compare`'s (the same references and bootstrap indices;
        the references computed once, here)."""
        refs = panel_references(self.judges, self.real, n, COMPARISON["seed"], COMPARISON["reference"],
                                self.real_labels, COMPARISON["spread"])
        return lambda images: panel_scores(self.judges, images, self.real, class_labels(n), seed=COMPARISON["seed"],
                                           bootstrap=self.bootstrap, refs=refs, keep=True)


def judge_columns(scores: list[dict]) -> dict[str, dict]:
    return {s["judge"]: {k: rounded(s[k]) for k in JUDGE_KEYS} for s in scores}


def pair_entry(pair: dict) -> dict:
    return {"verdict": pair["verdict"], "judges": {r["judge"]: {k: rounded(r[k]) for k in PAIR_KEYS}
                                                   for r in pair["rows"]}}


def versus(compared: dict, row: str, references: dict[str, str]) -> dict[str, dict]:
    """{reference: {verdict, judges: {judge: {ratio, ratio_std, z}}}} of one row against each teacher reference."""
    by_pair = {(p["a"], p["b"]): p for p in compared["pairs"]}
    return {role: pair_entry(by_pair[row, ref]) for role, ref in references.items() if (row, ref) in by_pair}


def panel_mean(row: dict) -> float:
    """Geometric mean over the judges of FD / floor: one number that ranks rows as every judge's ratio would, each
    judge's scale divided out."""
    logs = [math.log(max(s["fd_over_floor"], 1e-12)) for s in row["judges"].values()]
    return math.exp(sum(logs) / len(logs))


def print_row(key: str, row: dict, shown: list[str]) -> None:
    print(f"{key}: {row['label']}, {row['solver']}, {row['nfe']} NFE, {row['img_s']:.1f} img/s", flush=True)
    for judge, s in row["judges"].items():
        acc = f" acc {s['class_acc']:.3f}" if s["class_acc"] is not None else ""
        ratios = "".join(f" | /{role} {p['judges'][judge]['ratio']:.3f} ± {p['judges'][judge]['ratio_std']:.3f} "
                         f"z {p['judges'][judge]['z']:+.1f}" for role, p in row["vs"].items() if role in shown)
        print(f"    {judge:17} FD {s['fd']:8.4g} ± {s['fd_std']:<7.3g} {s['fd_over_floor']:5.2f}x floor KID "
              f"{s['kid']:.4f} P {s['precision']:.2f} R {s['recall']:.2f}{acc}{ratios}", flush=True)
    if row["vs"]:
        print("    beats " + " | ".join(f"{role}: {p['verdict']}" for role, p in row["vs"].items() if role in shown))


def report_rows(rows: dict[str, dict], compared: dict, references: dict[str, str]) -> None:
    """Each row's judges and comparisons from :meth:`Judging.compare`, into the row and printed (a reference that
    names the same row as an earlier one is printed once)."""
    targets = list(references.values())
    shown = [role for i, (role, ref) in enumerate(references.items()) if ref not in targets[:i]]
    print("per judge: FD ± bootstrap spread, FD / real-vs-real floor, KID, precision, recall, class accuracy, FD "
          "ratio / each teacher reference ± paired spread (z > 0: the row is better)")
    for key, row in rows.items():
        row["judges"] = judge_columns(compared["scores"][key])
        row["vs"] = versus(compared, key, references)
        print_row(key, row, shown)


def match_teacher(judging: Judging, teacher, guided, nfes: list[int], n: int, target: str, target_scores: list[dict],
                  target_img_s: float) -> dict:
    """The fewest teacher NFE (DPM-Solver++(2M)) whose FD is at most the target row's under every judge, with its FD
    ratios teacher / target and their paired spreads."""
    score = judging.scorer(n)
    print(f"teacher NFE ({MATCH_SOLVER}) that matches {target} under every judge:", flush=True)
    entry = {}
    for nfe in nfes:
        setting = at_nfe(MATCH_SOLVER, nfe)
        images, img_s = sample(teacher, guided, setting, n)
        scores = score(images)
        rows = pair_rows({"teacher": scores, target: target_scores}, "teacher", target)
        pair = {"rows": rows, "verdict": verdict({r["judge"]: r["z"] for r in rows})}
        entry = {"solver": setting.describe(), "nfe": setting.nfe, "img_s": img_s, "judges": judge_columns(scores),
                 "vs_student": pair_entry(pair)}
        print(f"  {setting.nfe:3d} NFE  {img_s:7.1f} img/s  / {target}: "
              + "  ".join(f"{r['judge']} {r['ratio']:.3f} ± {r['ratio_std']:.3f}" for r in rows)
              + f"  (beats it: {pair['verdict']})", flush=True)
        if all(r["fd_a"] <= r["fd_b"] for r in rows):
            return {**entry, "student": target, "student_speedup": round(target_img_s / img_s, 2)}
    return {"student": target, "none_up_to_nfe": nfes[-1], "last": entry}


def floor_note(ref: str, teacher: Denoiser, name: str, row: dict) -> str | None:
    """Against mnist-heldout: a teacher below the real-vs-real floor has likely seen those digits."""
    below = [judge for judge, s in row["judges"].items() if s["fd"] < s["floor_fd"]]
    if ref != "mnist-heldout" or not below:
        return None
    data = teacher.info.get("data")
    why = (f"{name} was trained on all 5,000 MNIST digits, mnist-heldout included, so it can sit below the floor "
           "there: not a held-out score" if data == "mnist" else f"{name} was trained on {data!r}")
    floor_n = next(iter(row["judges"].values()))["floor_n"]
    return (f"note: teacher35's FD is below the real-vs-real floor (n = {floor_n}) against mnist-heldout under "
            f"{', '.join(below)}: {why}")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", required=True)
    for name in ("mse", "lpips", "gan"):
        ap.add_argument(f"--{name}", help=f"run or model folder of the student trained with {name}")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=RUN[@WEIGHTS]",
                    help="another student, reported as student_NAME (e.g. a control trained as long as the GAN one); "
                         "@WEIGHTS: its own --student-ema")
    ap.add_argument("--control", help="a student NAME: every row is also compared with its (first) row, as a paired "
                                      "ratio (the ablation's perceptual-only control)")
    ap.add_argument("--n", type=int, default=2000, help="samples per row (the same seeds in every row)")
    ap.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamplings of the paired FD spreads")
    ap.add_argument("--ref", default="mnist", choices=("mnist", "mnist-heldout"), help="the real images")
    ap.add_argument("--few-step", default="1,2,4", help="teacher NFE to test with the few-step solvers")
    ap.add_argument("--match", default="3,5,6,8,10,15,20",
                    help="teacher NFE (DPM-Solver++(2M)) tried in order for the fewest that matches the best student")
    ap.add_argument("--student-ema", default="all",
                    help="students' weight sets: all (raw + every EMA), auto (the folder's default), raw or a length")
    ap.add_argument("--figure", help="PNG: the first ten samples of each row, labelled")
    ap.add_argument("--precision", default="fp32", help="fp32 | bf16 | auto: of every row's network (teacher, "
                    "guide, students)")
    return ap.parse_args()


class Rows:
    """The rows drawn so far: their facts, their images (for :meth:`Judging.compare`) and which ones repeat an
    earlier row's setting."""

    def __init__(self, n: int):
        self.n, self.rows, self.sets, self.same_as, self.drawn = n, {}, {}, {}, {}
        self.models = []  # every model drawn stays alive, so that no later model can take its id

    def draw(self, key: str, model, make_denoise, setting: Setting, label: str, **facts) -> None:
        self.models.append(model)
        if (id(model), setting) in self.drawn:
            self.same_as[key] = self.drawn[id(model), setting]
            print(f"  {key}: the setting of {self.same_as[key]} ({setting.describe()}), not drawn again", flush=True)
            return
        images, img_s = sample(model, make_denoise, setting, self.n)
        self.drawn[id(model), setting], self.sets[key] = key, (images, class_labels(self.n))
        self.rows[key] = {"label": label, "solver": setting.describe(), **asdict(setting), "nfe": setting.nfe,
                          "img_s": img_s, **facts}
        print(f"  drawn {key}: {setting.describe()}, {img_s:.1f} img/s", flush=True)


def best_rows(rows: dict[str, dict]) -> tuple[dict[int, str], str | None]:
    """The best teacher row at each few-step NFE, and the best student row (among the GAN student's weight sets if
    there is one), by :func:`panel_mean`."""
    few_step = {}
    for key, row in rows.items():
        if "few_step" in row:
            few_step.setdefault(row["few_step"], []).append(key)
    few_step_best = {nfe: min(keys, key=lambda k: panel_mean(rows[k])) for nfe, keys in few_step.items()}
    student_rows = [k for k in rows if k.startswith("student_")]
    best = min([k for k in student_rows if rows[k]["student"] == "gan"] or student_rows,
               key=lambda k: panel_mean(rows[k]), default=None)
    return few_step_best, best


def main():
    args = parse_args()
    m = io.read_json(f"{args.pairs}/manifest.json")
    teacher = Denoiser.from_pretrained(model_folder(m["teacher"]), ema=ema_arg(m["ema"]))
    precision = teacher.set_precision(args.precision)  # the guide follows the teacher's
    guided = guide_from_spec(teacher, m["guide"], m["guidance"], tuple(m["interval"]) if m["interval"] else None,
                             ema_arg(m["guide_ema"]))
    data = load_dataset(args.ref)
    judging = Judging(load_panel(), data.images, data.labels, args.bootstrap)
    names = [j.name for j in judging.judges]
    print(f"teacher {m['teacher']} (guide {m['guide']}, w {m['guidance']}), n = {args.n}, ref {args.ref}, "
          f"{precision}, "
          f"judges {', '.join(names)}, bootstrap {args.bootstrap}", flush=True)

    given = list(students(args))  # every student folder and weight set checked before anything is drawn
    if args.control and args.control not in {name for name, _, _ in given}:
        raise SystemExit(f"--control {args.control}: no student of that name")
    table = Rows(args.n)
    who = f"teacher ({m['guide'] or 'unguided'}, w {m['guidance']:g})"
    for key, (setting, facts) in teacher_settings(teacher, m, numbers(args.few_step)).items():
        table.draw(key, teacher, guided, setting, who, **facts)
    for name, folder, ema in given:
        student = Denoiser.from_pretrained(folder, ema=ema)
        student.set_precision(precision)
        weights = student.info["weights"]
        table.draw(f"student_{name}@{weights}", student, None, Setting("onestep", 1),
                   f"student, {STUDENTS.get(name, name)}, {weights}", student=name, weights=weights)
    rows = table.rows

    references = {role: table.same_as.get(role, role) for role in ("teacher35", "teacher_pairs")}
    if args.control:  # every row also paired with one student's first row (e.g. perceptual-only, as long)
        control = [key for key in rows if key.startswith(f"student_{args.control}@")]
        if not control:
            raise SystemExit(f"--control {args.control}: no student of that name")
        references["control"] = control[0]
    compared = judging.compare(table.sets, references)
    report_rows(rows, compared, references)

    few_step_best, best = best_rows(rows)
    for nfe, key in few_step_best.items():
        print(f"best solver at {nfe} NFE: {key}")
    result = {"n": args.n, "ref": args.ref, "precision": precision, "bootstrap": args.bootstrap,
              "seeds": f"{SEED0} + i, class-cycled",
              "pairs": args.pairs, "teacher": m["teacher"], "guide": m["guide"], "guidance": m["guidance"],
              "students_weights": args.student_ema, "judges": names, "references": references,
              "floor": {j: {"fd": s["floor_fd"], "n": s["floor_n"]} for j, s in rows["teacher35"]["judges"].items()},
              "rows": rows, "same_as": table.same_as, "few_step_best": few_step_best, "best_student": best}
    result["teacher_match"] = None
    if best and args.match:
        print(f"best student: {best}")
        result["teacher_match"] = match_teacher(judging, teacher, guided, numbers(args.match), args.n, best,
                                                compared["scores"][best], rows[best]["img_s"])
    result["note"] = floor_note(args.ref, teacher, m["teacher"], rows["teacher35"])
    if result["note"]:
        print(result["note"])
    if args.figure:
        labels = [f"{row['label']}, {row['solver']}, {row['nfe']} NFE" for row in rows.values()]
        save_grid(torch.cat([table.sets[key][0][:10] for key in rows]), args.figure, nrow=10, row_labels=labels)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
