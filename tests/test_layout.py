"""The house rules that can be checked mechanically: data flows one way through the stages
data -> process -> nets -> train -> sampling / guidance -> metrics / report -> CLI (no module imports from a later
stage), and no source file grows past ~400 lines."""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "kakusan"

# module (or package prefix) -> stage; the most specific entry wins
STAGES = {
    "kakusan": 0, "kakusan.utils": 0, "kakusan.zoo": 0,
    "kakusan.data": 1,
    # forward processes and their reverse-time samplers: pure math on tensors
    "kakusan.diffusion.schedules": 2, "kakusan.diffusion.process": 2, "kakusan.diffusion.exact": 2,
    "kakusan.diffusion.samplers": 2, "kakusan.diffusion.schedulers": 2,
    "kakusan.cold": 2, "kakusan.cold.degradations": 2, "kakusan.cold.sampling": 2,
    "kakusan.nets": 3, "kakusan.diffusion.denoiser": 3,
    "kakusan.train": 4,
    "kakusan.diffusion": 5, "kakusan.diffusion.generate": 5, "kakusan.diffusion.training": 5,
    "kakusan.diffusion.grids": 5,
    "kakusan.guidance": 5, "kakusan.cold.restore": 5, "kakusan.sampling": 5, "kakusan.models": 5,
    "kakusan.metrics": 6, "kakusan.report": 6, "kakusan.distill": 6, "kakusan.segment": 6,
    "kakusan.guidance.sweep": 6,  # an experiment that scores samples: it needs the metrics
    "kakusan.guidance.rescore": 6,
    "kakusan.cli": 7, "kakusan.cli.distill": 7,
}


def stage(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in STAGES:
            return STAGES[".".join(parts[:n])]
    raise KeyError(module)


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """Every kakusan module an import statement of ``path`` names (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("kakusan"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("kakusan"):
                # "from . import x" may name a submodule
                yield from ([f"{target}.{a.name}" for a in node.names] if not node.module else [target])


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_from_a_later_stage(path):
    own = stage(module_name(path))
    late = [(m, stage(m)) for m in imports(path) if stage(m) > own]
    assert not late, f"{module_name(path)} (stage {own}) imports later stages: {late}"


def test_the_stage_check_catches_a_backward_import(tmp_path):
    bad = SRC / "data" / "_probe_backward_import.py"
    bad.write_text("from ..train import TrainLoop\n")
    try:
        assert [stage(m) for m in imports(bad)] == [4] and stage(module_name(bad)) == 1
    finally:
        bad.unlink()


def test_no_source_file_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in FILES if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
