"""`make lint`'s cycle check: no import loop anywhere in the packages (an import inside a function or under
TYPE_CHECKING counts too: a loop there is the same design knot). Prints each loop and exits 1; 0 when there is
none. The layers themselves are import-linter's contracts in pyproject.toml.

    .venv/bin/python ops/lint/import_cycles.py [package ...]     # default: api worker models client
"""

from __future__ import annotations

import sys

import grimp

PACKAGES = ("api", "worker", "models", "client")


def import_loops(*packages: str) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each sorted, the groups sorted."""
    graph = grimp.build_graph(*packages)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(root: str) -> None:
        # iterative, so a long chain of modules never hits the recursion limit
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    loops.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return sorted(loops)


def main(argv: list[str]) -> int:
    loops = import_loops(*(argv or PACKAGES))
    for loop in loops:
        print("import loop: " + " <-> ".join(loop))
    if loops:
        print(f"{len(loops)} import loop(s); move the shared part down a layer (models/) or into a module of its own")
        return 1
    print("no import loops")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
