"""Where an exercise's solution is in a cell, read from the cell's syntax tree.

nbgrader's markers are comments (found with ``tokenize``, so a marker inside a string is
not one); what lies between them, and the function around them, come from ``ast``. That
makes the stub right whatever the code looks like: a multi-line string whose lines start
in column 0, decorators, nested functions.

    >>> [s.function for s in solutions("def f():\\n    ### BEGIN SOLUTION\\n"
    ...                                  "    return 1\\n    ### END SOLUTION\\n")]
    ['f']

Also the names a cell reads and binds, which say which outputs depend on an answer.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass

__all__ = ["Solution", "solutions", "strip_solutions", "reads", "binds", "BEGIN", "END"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp,
           ast.SetComp, ast.DictComp, ast.GeneratorExp)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class Solution:
    """One solution block: its marker lines (1-based) and what it is part of."""

    begin: int
    end: int
    indent: str               # the BEGIN marker's, which the stub keeps
    function: str | None      # the innermost function whose body holds it; None: top level
    is_async: bool            # ... an ``async def``
    answer: frozenset[str]    # the top-level names it sets: a function's, or the values'


def _tree(source: str) -> ast.Module:
    """``source`` parsed; IPython's syntax (``%magic``, ``!shell``) made Python first."""
    try:
        return ast.parse(source)
    except SyntaxError:
        pass
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell(source)
    try:
        tree = ast.parse(python)
    except SyntaxError as exc:
        raise ValueError(f"this cell is not valid Python (line {exc.lineno}: {exc.msg}); "
                         f"fix it before making the student edition:\n{source[:300]}") from None
    if python.count("\n") != source.rstrip("\n").count("\n"):
        raise ValueError("a solution inside a %%cell magic cannot be stubbed: move the "
                         f"magic to a cell of its own:\n{source[:300]}")
    return tree


def _markers(source: str) -> list[tuple[int, int, str]]:
    """(begin line, end line, indentation) of each marker pair, from the comments."""
    comments = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT and tok.string.strip() in (BEGIN, END):
                comments.append((tok.start[0], tok.start[1], tok.string.strip()))
    except (tokenize.TokenError, SyntaxError):  # IPython syntax: the markers are whole lines
        comments = [(n, len(line) - len(line.lstrip()), line.strip())
                    for n, line in enumerate(source.splitlines(), 1)
                    if line.strip() in (BEGIN, END)]
    pairs, lines = [], source.splitlines()
    for n in range(0, len(comments), 2):
        (row, col, text), after = comments[n], comments[n + 1] if n + 1 < len(comments) else None
        if text != BEGIN or after is None or after[2] != END:
            raise ValueError(f"a '{BEGIN}' has no matching '{END}'" if text == BEGIN
                             else f"an '{END}' (line {row}) has no '{BEGIN}' before it")
        pairs.append((row, after[0], lines[row - 1][:col]))
    return pairs


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _enclosing_function(tree, parents, begin: int, end: int, col: int):
    """The innermost def whose body holds the block between lines begin and end."""
    inside = [n for n in ast.walk(tree) if isinstance(n, ast.stmt) and begin < n.lineno < end]
    if inside:  # the first statement of the solution, and the functions around it
        node = min(inside, key=lambda n: (n.lineno, n.col_offset))
        while node in parents:
            node = parents[node]
            if isinstance(node, _FUNCTIONS):
                return node
        return None
    # an empty block: the innermost def that spans it and is indented less than the marker
    around = [n for n in ast.walk(tree) if isinstance(n, _FUNCTIONS)
              and n.lineno < begin and (n.end_lineno or 0) >= begin and n.col_offset < col]
    return max(around, key=lambda n: n.lineno, default=None)


def binds(source: str | ast.AST) -> set[str]:
    """Names bound at top level: assigned, defined, imported (not inside functions)."""
    names: set[str] = set()
    todo = list(ast.iter_child_nodes(_tree(source) if isinstance(source, str) else source))
    while todo:
        node = todo.pop()
        if isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
            names.add(node.name)
            todo.extend(node.decorator_list)
            continue
        if isinstance(node, _SCOPES):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
        todo.extend(ast.iter_child_nodes(node))
    return names


def reads(source: str) -> set[str]:
    """The names a cell reads that earlier cells set: each name read anywhere in a
    statement (a function body too), unless a statement above it in the cell set it."""
    found: set[str] = set()
    set_here: set[str] = set()
    for statement in _tree(source).body:
        found |= {n.id for n in ast.walk(statement) if isinstance(n, ast.Name)
                  and isinstance(n.ctx, ast.Load) and n.id not in set_here}
        set_here |= binds(ast.Module(body=[statement], type_ignores=[]))
    return found


def solutions(source: str) -> list[Solution]:
    """The solution blocks of a cell, in order (see :class:`Solution`)."""
    if BEGIN not in source and END not in source:
        return []
    tree, found = _tree(source), []
    parents = _parents(tree)
    for begin, end, indent in _markers(source):
        func = _enclosing_function(tree, parents, begin, end, len(indent))
        top = [s for s in tree.body if s.lineno <= end and (s.end_lineno or s.lineno) >= begin]
        answer: set[str] = set()
        for statement in top:  # the top-level statements the block is part of, or holds
            answer |= binds(ast.Module(body=[statement], type_ignores=[]))
        found.append(Solution(begin, end, indent, func.name if func else None,
                              isinstance(func, ast.AsyncFunctionDef), frozenset(answer)))
    return found


def strip_solutions(source: str) -> str:
    """Each solution block replaced by a stub at its indentation: ``raise
    NotImplementedError()`` in a function's body (calling it says "not written yet"),
    ``pass`` at top level (the cell sets the answer to ``None`` above the block).

    >>> print(strip_solutions("x = None\\n### BEGIN SOLUTION\\nx = 4\\n### END SOLUTION"))
    x = None
    # YOUR CODE HERE
    pass
    """
    found = solutions(source)
    if not found:
        return source
    lines = source.split("\n")
    for s in reversed(found):  # from the bottom up: the line numbers above stay right
        stub = "raise NotImplementedError()" if s.function else "pass"
        lines[s.begin - 1:s.end] = [f"{s.indent}# YOUR CODE HERE", f"{s.indent}{stub}"]
    return "\n".join(lines)
