"""The house rules that can be checked mechanically (docs: DESIGN.md, "Habits"): data flows one way through the stages
data -> process -> nets -> train -> sampling / guidance / cold -> metrics -> segment / distill -> report -> CLI (no
module imports from a later stage; utils, zoo and the package root sit below them all), no two modules import each
other, not even through a function-level import, and no source file grows past ~400 lines."""
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
    "kakusan.nets": 3, "kakusan.diffusion.denoiser": 3,
    "kakusan.train": 4,
    "kakusan.diffusion": 5, "kakusan.diffusion.generation": 5, "kakusan.diffusion.training": 5,
    "kakusan.diffusion.grids": 5,
    "kakusan.sampling": 5, "kakusan.guidance": 5, "kakusan.cold": 5, "kakusan.models": 5,
    "kakusan.metrics": 6,
    "kakusan.guidance.sweep": 6,  # an experiment that scores samples: it needs the metrics
    "kakusan.guidance.rescore": 6,
    "kakusan.segment": 7, "kakusan.distill": 7,
    "kakusan.report": 8,
    "kakusan.cli": 9,
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


def is_module(name: str) -> bool:
    path = SRC.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path):
    """Every kakusan module an import statement of ``path`` names, wherever it stands (a function-level import too),
    relative imports resolved; "from P import x" names P.x where that is a module, else P."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "kakusan")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "kakusan":
                yield from (f"{target}.{a.name}" if is_module(f"{target}.{a.name}") else target for a in node.names)


FILES = sorted(SRC.rglob("*.py"))


def import_graph(paths) -> dict[str, set[str]]:
    """module -> the other kakusan modules it imports."""
    return {module_name(p): set(imports(p)) - {module_name(p)} for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: modules that import each
    other, directly or round a longer loop."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_from_a_later_stage(path):
    own = stage(module_name(path))
    late = [(m, stage(m)) for m in dict.fromkeys(imports(path)) if stage(m) > own]
    assert not late, f"{module_name(path)} (stage {own}) imports later stages: {late}"


def test_no_two_modules_import_each_other():
    graph = import_graph(FILES)
    loops = [[f"{m} -> {sorted(graph[m] & set(c))}" for m in c] for c in cycles(graph)]
    assert not loops, "modules that import each other:\n" + "\n".join("; ".join(c) for c in loops)


def probe(folder: str, text: str) -> Path:
    path = SRC / folder / "_probe_layout.py"
    path.write_text(text)
    return path


def test_the_stage_check_catches_a_backward_import():
    for folder, text, stages in [("data", "from ..train import TrainLoop\n", (1, 4)),
                                 ("train", "def f():\n    from ..cold.degradations import Blur\n", (4, 5)),
                                 ("metrics", "import kakusan.distill.pairs\n", (6, 7))]:
        bad = probe(folder, text)
        try:
            assert (stage(module_name(bad)), [stage(m) for m in imports(bad)]) == (stages[0], [stages[1]])
        finally:
            bad.unlink()


def test_the_cycle_check_catches_a_lazy_import_both_ways():
    a = probe("data", "def f():\n    from ..diffusion import _probe_layout\n")
    b = probe("diffusion", "def g():\n    if True:\n        import kakusan.data._probe_layout\n")
    try:
        assert cycles(import_graph([a, b])) == [["kakusan.data._probe_layout", "kakusan.diffusion._probe_layout"]]
    finally:
        a.unlink()
        b.unlink()
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_source_file_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in FILES if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
