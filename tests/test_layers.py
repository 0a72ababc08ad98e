"""The layering rule, read from the code's imports (an AST scan, every import including those inside
functions): components <- core (zoo.*) <- jobs, serve <- facade (``zoo/__init__.py`` and the command
lines). No module imports one of a higher layer, and no modules import each other in a circle."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("components", "zoo", "jobs", "serve")
# the facade: the one package face that imports every layer, and the command lines built on it
FACADE = {"zoo", "zoo.cli", "zoo.cli_args", "zoo.cli_reflow", "zoo.cli_distill", "zoo.evaluation.cli", "zoo.cli_jobs", "zoo.cli_serve",
          "zoo.cli_edit"}
LAYER_NAMES = {0: "components", 1: "core", 2: "jobs/serve", 3: "facade"}


def layer(module: str) -> int:
    if module in FACADE:
        return 3
    top = module.split(".")[0]
    return {"components": 0, "zoo": 1, "jobs": 2, "serve": 2}[top]


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The project modules that ``name`` (at ``path``) imports, each as the module actually named:
    ``from zoo import catalog`` is zoo.catalog, ``import zoo`` is the facade."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    out = set()
    for mod in found:
        while mod and mod not in known:  # a name inside a module -> the module
            mod = mod.rpartition(".")[0]
        if mod and mod != name:
            out.add(mod)
    return out


@functools.cache
def graph() -> dict[str, set[str]]:
    """Every project module's imports, scanned once per session (the tests only read it)."""
    known = modules()
    return {name: imports(path, name, known) for name, path in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_runs_up_a_layer():
    g = graph()
    up = [f"{a} ({LAYER_NAMES[layer(a)]}) imports {b} ({LAYER_NAMES[layer(b)]})"
          for a, deps in sorted(g.items()) for b in sorted(deps) if layer(b) > layer(a)]
    assert not up, "imports that run up a layer:\n" + "\n".join(up)


def test_no_modules_import_each_other_in_a_circle():
    assert not cycles(graph()), f"import cycles: {cycles(graph())}"


def test_the_scan_sees_what_it_guards():
    """The checks can fail: an upward import and a circle planted in a copy of the graph are found."""
    g = graph()
    assert "zoo.catalog" in g["zoo.loading"] and "zoo.specs" in g["jobs.loop"]
    assert {"serve.api", "jobs.train"} <= g["zoo"]  # the facade imports the layers above the core
    planted = {k: set(v) for k, v in g.items()}
    planted["zoo.errors"].add("zoo.loading")  # zoo.loading reaches zoo.errors: now a circle
    assert any({"zoo.errors", "zoo.loading"} <= set(c) for c in cycles(planted))
    assert layer("jobs.loop") > layer("zoo.model") > layer("components.spec")


@pytest.mark.parametrize("core", ["zoo.specs", "zoo.model", "zoo.loading", "zoo.pairs", "zoo.resolve", "zoo.run"])
def test_core_modules_reach_no_jobs_or_serve(core):
    """Transitively: nothing the core imports (outside the facade) is in jobs/ or serve/."""
    g = graph()
    seen, todo = set(), [core]
    while todo:
        m = todo.pop()
        if m in seen or m == "zoo":
            continue
        seen.add(m)
        todo.extend(g[m])
    assert not [m for m in seen if layer(m) >= 2], sorted(m for m in seen if layer(m) >= 2)


FIRSTS = ["jobs.entry", "jobs.ray_context", "serve.app"]

#: In one interpreter, for each module in turn: forget every project module (torch, Ray and the
#: other libraries stay loaded: they cannot take part in a cycle of ours), import the module
#: first, then the facade, and print what failed. One subprocess instead of one per module.
FIRST_IMPORTS = """
import sys, traceback
for first in sys.argv[1:]:
    for m in [m for m in sys.modules if m.split(".")[0] in ("components", "zoo", "jobs", "serve")]:
        del sys.modules[m]
    try:
        __import__(first)
        import zoo
        zoo.train, zoo.reflow, zoo.serve
        print("OK", first, flush=True)
    except BaseException:
        print("FAIL", first, traceback.format_exc().replace(chr(10), " | "), flush=True)
"""


@pytest.fixture(scope="module")
def first_imports() -> dict[str, str]:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FIRST_IMPORTS, *FIRSTS], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.split(" ", 2)[1]: line for line in done.stdout.splitlines() if line.startswith(("OK ", "FAIL "))}


@pytest.mark.heavy
@pytest.mark.parametrize("first", FIRSTS)
def test_a_jobs_or_serve_module_imports_first(first, first_imports):
    """What a Ray worker or a submitted job imports first loads without a circular import (the
    facade loads jobs and serve lazily, since importing any zoo module runs zoo/__init__.py)."""
    assert first_imports.get(first, "").startswith("OK"), first_imports.get(first, f"{first} was not tried")


def test_the_first_import_check_sees_a_circle(tmp_path):
    """The one-subprocess check can fail: a package whose module imports it back half-way is named."""
    import subprocess
    import sys

    pkg = tmp_path / "zoo_cycle_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from zoo_cycle_probe.a import A\n")
    (pkg / "a.py").write_text("from zoo_cycle_probe import A as _again\nA = 1\n")
    done = subprocess.run([sys.executable, "-c", FIRST_IMPORTS.replace('("components", "zoo", "jobs", "serve")',
                                                                      '("zoo_cycle_probe",)'), "zoo_cycle_probe.a"],
                          cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert "FAIL zoo_cycle_probe.a" in done.stdout and "ImportError" in done.stdout, done.stdout + done.stderr
