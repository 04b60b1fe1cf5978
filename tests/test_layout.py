"""The package's layout, checked on its source: the stage order, private names, file sizes, no facades.

featmlp is laid out as its data flows (README, "Layout"): data -> features -> tables -> model ->
training -> runs -> sweep -> cli. A module imports only from its own stage and the stages before
it, plus the foundation: small helpers every stage shares, none of which imports a stage. These
checks read the source (``ast``), so they see imports inside functions too; an import under
``if TYPE_CHECKING:`` is for annotations only and never runs, so it is not an import of a stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "featmlp"

# The foundation: imported by any stage, imports no stage. runs/layout.py is here because it is the
# one home of every file name (a run's, a bundle's, a sweep's): the output guard (_outputs) and every
# stage read their names from it, and it holds names and JSON only (test_the_foundation_imports_no_stage).
FOUNDATION = ("featmlp", "featmlp.errors", "featmlp._io", "featmlp._cpu", "featmlp._text", "featmlp._workers",
              "featmlp._memory", "featmlp._exports", "featmlp._validation", "featmlp._figures", "featmlp.progress",
              "featmlp.runs.layout")

# Stage of each package or module, in the order of the data flow (the longest matching prefix wins).
STAGES = {
    "featmlp.data": 1,
    "featmlp.features": 2,
    "featmlp.tables": 3,
    # The output guard: what may be written over. Tables are the first outputs featmlp writes, and
    # it recognises them by their names (tables.format); the later stages' names are in runs.layout.
    "featmlp._outputs": 3,
    "featmlp.model": 4,
    "featmlp.training": 5,
    "featmlp.estimator": 5,
    "featmlp.runs": 6,
    "featmlp.sweep": 7,
    "featmlp.cli": 8,
}
STAGE_NAMES = {0: "the foundation", 1: "data", 2: "features", 3: "tables", 4: "model", 5: "training", 6: "runs",
               7: "sweep", 8: "cli"}

MAX_LINES = 550


# The top-level modules that re-exported names living elsewhere (issue 17 deleted them), and the
# top-level modules that moved into a stage's package.
FACADES = ("run", "train", "bundle", "layout", "compare", "report", "evaluate", "plots", "tensorboard")
MOVED = ("store", "shards", "extraction", "cluster", "scaling", "lr_find", "model.py")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


MODULES = dict(_modules())


def _stage(module: str) -> int:
    if module in FOUNDATION:
        return 0
    best = max((p for p in STAGES if module == p or module.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{module}: give it a stage in tests/test_layout.py (and in README's Layout)"
    return STAGES[best]


def _type_checking_nodes(tree) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def _imports(module: str, path: Path):
    """``(line, target module, imported name or None, in a function)`` of each featmlp import that runs."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        inner = id(node) in in_function
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "featmlp":
                    yield node.lineno, alias.name, None, inner
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "featmlp":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:  # `from featmlp.runs import layout`: the module itself
                    yield node.lineno, sub, None, inner
                else:
                    yield node.lineno, target, alias.name, inner


ALL_IMPORTS = [(module, *imp) for module, path in MODULES.items() for imp in _imports(module, path)]


def test_every_module_imports_only_its_stage_and_the_stages_before():
    wrong = [f"{module}:{line} imports {target} ({STAGE_NAMES[_stage(target)]}, stage {_stage(target)}) "
             f"but is {STAGE_NAMES[_stage(module)]} (stage {_stage(module)})"
             for module, line, target, _, _ in ALL_IMPORTS if _stage(target) > _stage(module)]
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)


def test_the_foundation_imports_no_stage():
    wrong = [f"{module}:{line} imports {target}" for module, line, target, _, _ in ALL_IMPORTS
             if _stage(module) == 0 and _stage(target) != 0]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_modules_private_name():
    wrong = [f"{module}:{line} imports {name} from {target}" for module, line, target, name, _ in ALL_IMPORTS
             if name is not None and name.startswith("_") and not name.startswith("__")]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_packages_private_module():
    wrong = []
    for module, line, target, _, _ in ALL_IMPORTS:
        parts = target.split(".")
        for i, part in enumerate(parts[1:], 1):
            owner = ".".join(parts[:i])  # the package the private module belongs to
            if part.startswith("_") and not part.startswith("__") and not (
                    module == owner or module.startswith(owner + ".")):
                wrong.append(f"{module}:{line} imports {target}, private to {owner}")
    assert not wrong, "\n".join(wrong)


def test_a_function_level_import_of_featmlp_says_why():
    # An import inside a function is for start-up time (a heavy module loaded only by what needs
    # it), said in a comment on the line or on the comment line just above the imports; never to
    # hide a circle (the stage order above forbids those).
    wrong = set()
    for module, line, _, _, inner in ALL_IMPORTS:
        if not inner:
            continue
        lines = MODULES[module].read_text().splitlines()
        above = line - 2
        while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
            above -= 1
        if "#" not in lines[line - 1] and not lines[above].strip().startswith("#"):
            wrong.add(f"{module}:{line} {lines[line - 1].strip()}")
    assert not wrong, "function-level imports without a reason:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_file_is_over_the_line_limit(module):
    path = MODULES[module]
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {n} lines (at most {MAX_LINES}): split it by concern"


def test_no_facade_is_left():
    left = [name for name in (*FACADES, *MOVED)
            if (PACKAGE / (name if name.endswith(".py") else name + ".py")).exists()]
    assert not left, f"featmlp/{left}: gone since issue 17, import from the package that owns the names"
    # A module (not a package's __init__) made only of imports and __all__ re-exports another's names.
    for module, path in MODULES.items():
        if path.name == "__init__.py":
            continue
        body = ast.parse(path.read_text()).body
        code = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert not code or not all(
            isinstance(n, (ast.Import, ast.ImportFrom)) or (isinstance(n, ast.Assign) and
                                                            ast.unparse(n.targets[0]) == "__all__")
            for n in code), f"{module} only re-exports names: import them from their module"


def test_every_stage_namespace_is_lazy():
    # training, runs, model and tables list their public names without importing them, so
    # `featmlp.training.config` and `featmlp.runs.report` load without torch (tests/test_startup.py).
    for package in ("training", "runs", "model", "tables"):
        tree = ast.parse((PACKAGE / package / "__init__.py").read_text())
        imports = [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert imports == ["from featmlp._exports import lazy_exports"], (package, imports)
