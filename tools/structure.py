"""Measures the package's structure: lines per folder, the largest files, signatures over 7 parameters,
import circles and upward imports (every import counted, lazy ones inside functions too).

Layers, top to bottom: `cli` and `__main__`; `commands/` and `driver`; `recipes/` (the experiments);
everything else. An upward import is a module importing one of a higher layer; a circle is a set of
modules that import each other, directly or through others.

Usage: python tools/structure.py [PACKAGE_FOLDER]   (default: deeprestore)
"""

import ast
import pathlib
import sys

LIMIT = 7  # parameters a signature may take (click callbacks excepted)


def module_name(path, root):
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(name):
    """Higher is above: 3 the command line, 2 the commands and the driver, 1 the experiments, 0 the rest."""
    parts = name.split(".")[1:]
    if not parts or parts[0] in ("cli", "__main__"):
        return 3
    if parts[0] in ("commands", "driver"):
        return 2
    if parts[0] == "recipes":
        return 1
    return 0


def imports(tree, name, known):
    """The package modules `tree` imports, each resolved to the longest known module name."""
    found = set()
    package = name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name and "." in target:  # the package's root holds only its version
                found.add(target)
    return found


def is_click_callback(function):
    return any("click" in ast.unparse(decorator) or ast.unparse(decorator).endswith((".command", "command"))
               or "settings_options" in ast.unparse(decorator) for decorator in function.decorator_list)


def circles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def main(folder="deeprestore"):
    root = pathlib.Path(folder).resolve()
    files = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    trees = {name: ast.parse(path.read_text()) for name, path in files.items()}
    graph = {name: imports(tree, name, set(files)) - {name.rsplit(".", 1)[0]} for name, tree in trees.items()}
    # importing `deeprestore.x.y` runs `deeprestore.x/__init__`: count only the named module.
    lines = {name: len(path.read_text().splitlines()) for name, path in files.items()}
    for part in ("commands", "recipes"):
        members = {name: count for name, count in lines.items() if name.split(".")[1:2] == [part]}
        largest = max(members.items(), key=lambda item: item[1])
        print(f"{part}/: {sum(members.values())} lines in {len(members)} files; largest {largest[0]} {largest[1]}")
    for name in ("deeprestore.driver",):
        if name in lines:
            print(f"{name}: {lines[name]} lines")
    over = [(name, count) for name, count in lines.items() if name.split(".")[1:2] == ["recipes"] and count > 300]
    print(f"recipes files over 300 lines: {len(over)} {sorted(over)}")
    wide = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not is_click_callback(node):
                arguments = node.args
                count = len(arguments.posonlyargs) + len(arguments.args) + len(arguments.kwonlyargs)
                if arguments.args and arguments.args[0].arg in ("self", "cls"):
                    count -= 1
                if count > LIMIT:
                    wide.append((count, f"{name}.{node.name}"))
    print(f"signatures over {LIMIT} parameters: {len(wide)}")
    for count, where in sorted(wide, reverse=True):
        print(f"  {count:>3} {where}")
    found = circles(graph)
    print(f"import circles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    upward = [(name, other) for name, others in graph.items() for other in others if layer(other) > layer(name)]
    print(f"upward imports: {len(upward)}")
    for name, other in sorted(upward):
        print(f"  {name} -> {other}")


if __name__ == "__main__":
    main(*sys.argv[1:])
