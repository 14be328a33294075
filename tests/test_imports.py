"""The package's import structure, checked statically (no module is imported).

Every `import` and `from ... import` statement in `keras_harden/`, at module
level and inside functions alike (a lazy import is still a dependency), gives
an edge between two modules of the package. Two rules:

1. The edges have no cycle. A package's `__init__` importing its own
   submodules is the ordinary pattern, not a cycle: `from pkg import name`
   points at the submodule `pkg.name` when there is one, and at `pkg` itself
   only when `name` is something `pkg/__init__.py` binds (a function it
   re-exports), so `pkg/__init__ -> pkg/sub -> pkg` is flagged only when the
   submodule really uses its package's `__init__`.
2. Layers: the low modules (the top-level private modules `keras_harden/_*.py`,
   `saving`, `data`, `distribute`) import only low modules; a family
   (`optimizers`, `initializers`, `augment`, `fusion`, `diagnostics`, `robust`,
   `privacy`) imports itself and the low modules, never another family; the
   orchestrator (`search`) may import the families; the top (`__init__`,
   `__main__`, `cli`, `demo`) may import anything, and nothing below imports it.

   One exception, listed in `ALLOWED_FAMILY_EDGES`: `robust` may import
   `augment` (the corruption suite and test-time augmentation are built from
   the augmentation family's image operations). It is one way: robust sits
   above augment, and augment importing robust is still an error, as is any
   other import between families.
"""

import ast
import pathlib

import pytest

PACKAGE = "keras_harden"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE

FAMILIES = (
    "optimizers",
    "initializers",
    "augment",
    "fusion",
    "diagnostics",
    "robust",
    "privacy",
)
ORCHESTRATOR = ("search",)
LOW = ("saving", "data", "distribute")  # plus every top-level `_*.py`
TOP = ("__init__", "__main__", "cli", "demo")
# (importer family, imported family): the only imports allowed between
# families; robust sits above augment, never the other way.
ALLOWED_FAMILY_EDGES = frozenset({("robust", "augment")})


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    """`{dotted name: (path, is_package)}` for every module of the package."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        found[_module_name(path)] = (path, path.name == "__init__.py")
    return found


MODULES = _modules()


def _bound_by_init(package):
    """Names `package/__init__.py` binds to something other than its own
    submodule of that name (a re-exported function, a constant, a class)."""
    path, is_package = MODULES[package]
    assert is_package
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            source = _absolute(node, package, True)
            for alias in node.names:
                bound = alias.asname or alias.name
                if source == package and alias.name == bound:
                    continue  # `from pkg import sub`: the submodule itself
                names.add(bound)
        elif isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _absolute(node, module, is_package):
    """The absolute module a `from ... import` statement names."""
    if not node.level:
        return node.module
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _edges(module):
    """`[(imported module, line)]` for every import statement in `module`."""
    path, is_package = MODULES[module]
    edges = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    edges.append((_existing(alias.name), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, is_package)
            if source is None or source.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if target in MODULES and not (
                    MODULES[source][1] and alias.name in _bound_by_init(source)
                ):
                    edges.append((target, node.lineno))
                else:
                    edges.append((_existing(source), node.lineno))
    return [(t, line) for t, line in edges if t != module]


def _existing(name):
    """`name`, or its nearest enclosing module that exists."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


GRAPH = {module: _edges(module) for module in MODULES}


def _layer(module):
    """`("top" | "orchestrator" | "family" | "low", family or None)`."""
    parts = module.split(".")[1:]
    if not parts or (len(parts) == 1 and parts[0] in TOP):
        return "top", None
    head = parts[0]
    if head in FAMILIES:
        return "family", head
    if head in ORCHESTRATOR:
        return "orchestrator", head
    if len(parts) == 1 and (head.startswith("_") or head in LOW):
        return "low", None
    raise AssertionError(
        f"{module} is neither a family, the orchestrator, a low module nor the "
        "top: classify it in tests/test_imports.py"
    )


def _allowed(importer, imported):
    kind, family = _layer(importer)
    target_kind, target_family = _layer(imported)
    if kind == "top":
        return True
    if target_kind == "top":
        return False
    if kind == "orchestrator":
        return True
    if kind == "family":
        return (
            target_kind == "low"
            or target_family == family
            or (
                target_kind == "family"
                and (family, target_family) in ALLOWED_FAMILY_EDGES
            )
        )
    return target_kind == "low"


def test_every_module_is_classified():
    for module in MODULES:
        _layer(module)  # raises for a module outside the layers


def test_no_import_cycle():
    cycles = {}
    state = {}  # module -> "visiting" | "done"
    stack = []

    def visit(module):
        state[module] = "visiting"
        stack.append(module)
        for target, _ in GRAPH[module]:
            if state.get(target) == "visiting":
                cycle = stack[stack.index(target) :] + [target]
                cycles.setdefault(frozenset(cycle), cycle)
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles.values()
    )


def test_no_family_imports_another_or_upwards():
    wrong = []
    for importer, edges in sorted(GRAPH.items()):
        for imported, line in edges:
            if _allowed(importer, imported):
                continue
            path = MODULES[importer][0].relative_to(ROOT.parent)
            wrong.append(f"{path}:{line}: {importer} imports {imported}")
    assert not wrong, "imports across the layers:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("keras_harden.diagnostics.diagnose", "keras_harden._gradients", True),
        ("keras_harden.diagnostics.diagnose", "keras_harden.optimizers", False),
        ("keras_harden.initializers.lsuv", "keras_harden.initializers._common", True),
        ("keras_harden.saving", "keras_harden.fusion", False),
        ("keras_harden._plotting", "keras_harden.saving", True),
        ("keras_harden.search", "keras_harden.optimizers", True),
        ("keras_harden.search", "keras_harden.cli", False),
        ("keras_harden.fusion.soup", "keras_harden", False),
        ("keras_harden.cli", "keras_harden.fusion._common", True),
        # the one edge between families, one way only
        ("keras_harden.robust.corruptions", "keras_harden.augment.ops", True),
        ("keras_harden.robust.corruptions", "keras_harden.augment", True),
        ("keras_harden.augment.ops", "keras_harden.robust", False),
        ("keras_harden.augment.pipeline", "keras_harden.robust.corruptions", False),
        ("keras_harden.robust.pgd", "keras_harden.fusion", False),
        ("keras_harden.robust.pgd", "keras_harden.optimizers.hardened", False),
        ("keras_harden.fusion.soup", "keras_harden.augment.ops", False),
        ("keras_harden.diagnostics.diagnose", "keras_harden.robust", False),
    ],
)
def test_the_layer_rules(importer, imported, allowed):
    assert _allowed(importer, imported) is allowed


def test_from_package_import_resolves_to_what_it_binds():
    # `from keras_harden.augment import ops` is the submodule (the package's
    # __init__ binds it as such); `from keras_harden.initializers import lsuv`
    # is the function the __init__ re-exports over the submodule's name.
    assert "ops" not in _bound_by_init("keras_harden.augment")
    assert "lsuv" in _bound_by_init("keras_harden.initializers")
