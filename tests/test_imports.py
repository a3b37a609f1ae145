"""Imports run one way: no module of stationd imports, however indirectly or lazily, one that imports it."""

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def module_name(path):
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports():
    """{module: {stationd modules it imports anywhere in its code}}."""
    modules = {module_name(path): path for path in SRC.joinpath("stationd").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                # "from stationd.store import schema" imports the submodule; the
                # package itself counts only for the names that are not modules.
                submodules = {f"{base}.{alias.name}" for alias in node.names} & set(modules)
                found.update(submodules)
                if len(submodules) < len(node.names):
                    found.add(base)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph):
    seen, stack, found = set(), [], []

    def visit(name):
        if name in stack:
            found.append(stack[stack.index(name):] + [name])
            return
        if name in seen:
            return
        seen.add(name)
        stack.append(name)
        for other in sorted(graph[name]):
            visit(other)
        stack.pop()

    for name in sorted(graph):
        visit(name)
    return found


def test_no_import_cycles():
    graph = imports()
    assert "stationd.service" in graph and graph["stationd.service"]  # the walk found the code
    assert cycles(graph) == []
