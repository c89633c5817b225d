"""The architecture as a test: every module's imports (top-level, in functions, under TYPE_CHECKING alike) read
with ``ast``; no cycle between modules or rooms, and no arrow upward (DESIGN.md, "Rooms")."""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from tests.helpers import PYTHON, REPO, train_env

# Rooms from the bottom up; each may import only the rooms listed for it (and itself).
ALLOWED: dict[str, set[str]] = {
    "model": set(),  # gpt.py, gpt_modern.py, sampling.py
    "core": set(),
    "upstream": {"core"},
    "conversion": {"core", "upstream"},
    "loaders": {"core", "upstream"},
    "callbacks": {"loaders", "core", "upstream", "model"},
    "training": {"callbacks", "loaders", "core", "upstream", "model"},
    "evaluation": {"training", "callbacks", "loaders", "core", "upstream", "model"},
    "scripts": {"evaluation", "training", "callbacks", "loaders", "conversion", "core", "upstream", "model"},
}
PACKAGES = {"core", "upstream", "conversion", "loaders", "callbacks", "training", "evaluation"}
MODEL_MODULES = {"gpt", "gpt_modern", "sampling"}
NEVER_IN_CORE = ("torch", "composer")  # core/ must stay importable (and usable) without them
NOT_AT_IMPORT_IN_CORE = ("streaming",)  # core.remote's transfers use Streaming's storage clients, imported lazily


def room_of(module: str) -> str | None:
    """The room of one of our modules by dotted name; None for a third-party module."""
    top = module.split(".")[0]
    if top in PACKAGES:
        return top
    if top in MODEL_MODULES:
        return "model"
    if top in {"scripts", "bench"} or (REPO / f"{top}.py").is_file():
        return "scripts"
    return None


def our_modules() -> dict[str, Path]:
    """Every Python module of the product (tests excluded), by dotted name."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "*.py"], capture_output=True, text=True, check=True)
    out = {}
    for rel in files.stdout.split():
        if rel.startswith("tests/"):
            continue
        name = rel.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        out[name] = REPO / rel
    return out


def imports_of(name: str, path: Path, top_level_only: bool = False) -> set[str]:
    """Dotted names imported anywhere in the file (relative imports resolved against ``name``); with
    ``top_level_only``, only those run when the module is imported (its body, outside functions)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = _module_level(tree) if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def _module_level(tree: ast.Module) -> list[ast.AST]:
    """The nodes that run at import: everything except the bodies of functions."""
    out, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        out.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports."""
    modules = our_modules()
    return {name: {m for m in imports_of(name, path) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_modules():
    assert find_cycle(graph()) is None


def test_no_import_cycle_between_rooms():
    rooms: dict[str, set[str]] = {}
    for module, deps in graph().items():
        rooms.setdefault(room_of(module), set()).update(room_of(d) for d in deps if room_of(d) != room_of(module))
    assert find_cycle(rooms) is None


def test_every_import_points_down():
    upward = sorted(f"{module} -> {dep}" for module, deps in graph().items() for dep in deps
                    if room_of(dep) != room_of(module) and room_of(dep) not in ALLOWED[room_of(module)])
    assert upward == []


def test_every_module_has_a_room():
    assert sorted(m for m in our_modules() if room_of(m) is None) == []


def test_core_imports_neither_torch_nor_composer(tmp_path):
    core = {name: path for name, path in our_modules().items() if room_of(name) == "core"}
    heavy = sorted(f"{name} -> {imp}" for name, path in core.items()
                   for imp in imports_of(name, path) if imp.split(".")[0] in NEVER_IN_CORE)
    heavy += sorted(f"{name} -> {imp} (at import)" for name, path in core.items()
                    for imp in imports_of(name, path, top_level_only=True)
                    if imp.split(".")[0] in NOT_AT_IMPORT_IN_CORE)
    assert heavy == []
    code = ("import sys, core.cli, core.errors, core.files, core.memory, core.metadata, core.remote, core.runs, "
            "core.streams, core.tokenizer; print(sorted(m for m in ('torch', 'composer', 'streaming') "
            "if m in sys.modules))")
    proc = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, env={**train_env(), "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_checker_sees_a_cycle_and_an_upward_arrow():
    """The checks above can fail: a made-up graph with a cycle and a made-up upward import are caught."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert "training" not in ALLOWED[room_of("callbacks.samples")]
    assert room_of("gpt") == "model" and room_of("gpt_pile_composer") == "scripts"


@pytest.mark.parametrize("versions, message", [
    ({"mosaicml": "0.32.0", "mosaicml-streaming": "0.13.0"}, r"installed mosaicml 0\.32\.1 \(need 0\.32\.0\)"),
    ({"mosaicml": "0.32.1", "mosaicml-streaming": "0.12.0"}, r"mosaicml-streaming 0\.13\.0 \(need 0\.12\.0\)"),
])
def test_upstream_refuses_other_composer_or_streaming_versions(versions, message):
    """The work-arounds are written for the pinned versions: any other installed version is one clear error."""
    from core.errors import UpstreamVersionError
    from upstream import PINNED, check_versions

    check_versions(PINNED)  # what is installed here is what we pin
    with pytest.raises(UpstreamVersionError, match=message):
        check_versions(versions)


@pytest.mark.slow  # a subprocess importing Composer
def test_a_script_reports_a_wrong_upstream_version_as_one_error_line(tmp_path):
    """Importing upstream with another version installed stops a script with one `error:` line, exit 2."""
    fake = tmp_path / "fake_metadata"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        "import importlib.metadata as m\n_v = m.version\n"
        "m.version = lambda name: '0.31.0' if name == 'mosaicml' else _v(name)\n")
    env = {"PYTHONPATH": str(fake), "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "offline"}
    proc = subprocess.run([PYTHON, str(REPO / "clean_shared_memory.py"), "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: installed mosaicml 0.31.0 (need 0.32.1): the work-arounds in upstream/ are written for these exact "
        "versions; install the project's lock (make venv)"]
