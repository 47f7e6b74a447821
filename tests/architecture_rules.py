"""Two README rules import-linter cannot express, checked on the syntax tree.

- Only the flow writes call-record fields: drivers send events, the flow fills the record.
- Only the drive loop branches on action types.

Each checker takes source text and returns the offending lines, so the tests can run it
over the project and over small samples that must be caught.

The record rule follows values by name inside one function: an expression is a record
(or one of its attempts) when it is ``<anything>.record``, a ``CallRecord``/``Attempt``
built or annotated as such, a name bound to one of those, or an item of a record's
``attempts``. A record reached through a function's return value is not followed; the
rule is about drivers reaching into the flow's record, which they do through
``flow.record``.
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

from ivr.core import actions as _actions
from ivr.core.callrecord import Attempt, CallRecord

REPO = Path(__file__).resolve().parent.parent
RUNTIME_AND_LAB = ("ivr", "ivr_lab")

RECORD_TYPES = {"CallRecord", "Attempt"}
RECORD_FIELDS = {f.name for t in (CallRecord, Attempt) for f in dataclasses.fields(t)}
_MUTATORS = {"append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault", "popitem",
             "sort", "reverse", "__setitem__", "__delitem__"}

#: the action classes and the unions that name them (``Action``, ``Question``, their aliases)
ACTION_CLASSES = {c.__name__ for c in typing.get_args(_actions.Action)}
ACTION_NAMES = ACTION_CLASSES | {name for name, value in vars(_actions).items()
                                 if isinstance(value, typing.types.UnionType)
                                 and set(typing.get_args(value)) <= set(typing.get_args(_actions.Action))}


@dataclasses.dataclass(frozen=True)
class Violation:
    path: str
    line: int
    code: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.code}"


def project_sources(*packages: str) -> dict[str, str]:
    """Relative path -> source text of every module of ``packages``."""
    return {str(p.relative_to(REPO)): p.read_text(encoding="utf-8")
            for pkg in packages for p in sorted((REPO / pkg).rglob("*.py"))}


# --- only the flow writes call-record fields ----------------------------------------------

def _scopes(tree: ast.Module) -> list[ast.AST]:
    return [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]


def _own_nodes(scope: ast.AST):
    """The nodes of one scope, not descending into nested functions (they are scopes of their own)."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def _names_type(annotation: ast.AST | None) -> bool:
    if annotation is None:
        return False
    for n in ast.walk(annotation):
        if (isinstance(n, ast.Name) and n.id in RECORD_TYPES) or (isinstance(n, ast.Attribute) and n.attr in RECORD_TYPES):
            return True
        if isinstance(n, ast.Constant) and isinstance(n.value, str):  # a quoted annotation: "CallRecord | None"
            try:
                if _names_type(ast.parse(n.value, mode="eval")):
                    return True
            except SyntaxError:
                pass
    return False


def _is_record(expr: ast.AST, names: set[str]) -> bool:
    if isinstance(expr, ast.Name):
        return expr.id in names
    if isinstance(expr, ast.Attribute):
        return expr.attr == "record" or (expr.attr == "attempts" and _is_record(expr.value, names))
    if isinstance(expr, ast.Subscript):  # rec.attempts[-1]
        return isinstance(expr.value, ast.Attribute) and expr.value.attr == "attempts" and _is_record(expr.value.value, names)
    if isinstance(expr, ast.Call):  # CallRecord(...), Attempt(...), CallRecord.from_dict(...)
        f = expr.func
        return ((isinstance(f, ast.Name) and f.id in RECORD_TYPES)
                or (isinstance(f, ast.Attribute) and (f.attr in RECORD_TYPES
                                                      or (isinstance(f.value, ast.Name) and f.value.id in RECORD_TYPES))))
    return False


def _record_names(scope: ast.AST) -> set[str]:
    """Names in ``scope`` that hold a record or an attempt (grown until nothing changes)."""
    names: set[str] = set()
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
        a = scope.args
        names |= {p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs) if _names_type(p.annotation)}
    while True:
        before = len(names)
        for node in _own_nodes(scope):
            if isinstance(node, ast.Assign) and _is_record(node.value, names):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and (
                    _names_type(node.annotation) or (node.value is not None and _is_record(node.value, names))):
                names.add(node.target.id)
            elif isinstance(node, ast.NamedExpr) and _is_record(node.value, names):
                names.add(node.target.id)
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)) and isinstance(node.target, ast.Name):
                it = node.iter
                if isinstance(it, ast.Attribute) and it.attr == "attempts" and _is_record(it.value, names):
                    names.add(node.target.id)
            elif isinstance(node, ast.withitem) and isinstance(node.optional_vars, ast.Name) \
                    and _is_record(node.context_expr, names):
                names.add(node.optional_vars.id)
        if len(names) == before:
            return names


def _field_of_record(expr: ast.AST, names: set[str]) -> bool:
    """``expr`` is ``<record>.<field>`` (or ``<record>.<field>[...]``)."""
    while isinstance(expr, ast.Subscript):
        expr = expr.value
    return isinstance(expr, ast.Attribute) and expr.attr in RECORD_FIELDS and _is_record(expr.value, names)


def record_writes(source: str, path: str = "<sample>") -> list[Violation]:
    """Every place in ``source`` that assigns, deletes or mutates a call-record (or attempt) field."""
    tree = ast.parse(source)
    lines = source.splitlines()
    found: list[Violation] = []

    def flag(node: ast.AST) -> None:
        found.append(Violation(path, node.lineno, lines[node.lineno - 1].strip()))

    for scope in _scopes(tree):
        names = _record_names(scope)
        for node in _own_nodes(scope):
            targets: list[ast.AST] = []
            if isinstance(node, (ast.Assign, ast.Delete)):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            if any(_field_of_record(t, names) for target in targets for t in ast.walk(target)
                   if isinstance(t, (ast.Attribute, ast.Subscript)) and isinstance(t.ctx, (ast.Store, ast.Del))):
                flag(node)
            elif isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Attribute) and f.attr in _MUTATORS and _field_of_record(f.value, names):
                    flag(node)  # rec.attempts.append(...), rec.phase_seconds.update(...)
                elif ((isinstance(f, ast.Name) and f.id in {"setattr", "delattr"})
                      or (isinstance(f, ast.Attribute) and f.attr in {"__setattr__", "__delattr__"})) \
                        and node.args and _is_record(node.args[0], names):
                    flag(node)  # setattr(rec, ...), object.__setattr__(rec, ...)
                elif isinstance(f, ast.Attribute) and f.attr in {"__setattr__", "__delattr__"} and _is_record(f.value, names):
                    flag(node)  # rec.__setattr__(...)
                elif (isinstance(f, ast.Attribute) and f.attr == "update" and isinstance(f.value, ast.Attribute)
                      and f.value.attr == "__dict__" and _is_record(f.value.value, names)):
                    flag(node)  # rec.__dict__.update(...)
    return sorted(found, key=lambda v: v.line)


# --- only the drive loop branches on action types -----------------------------------------

def _action_aliases(tree: ast.Module) -> set[str]:
    """Local names of the action classes in this module (``from ivr.core.flow import Transfer as T``)."""
    names = set(ACTION_NAMES)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in {"ivr.core.actions", "ivr.core.flow", "ivr.core.drive"}:
            names |= {a.asname for a in node.names if a.asname and a.name in ACTION_NAMES}
    return names


def _names_action(expr: ast.AST, names: set[str]) -> bool:
    return any((isinstance(n, ast.Name) and n.id in names) or (isinstance(n, ast.Attribute) and n.attr in names)
               for n in ast.walk(expr))


def _is_type_call(expr: ast.AST) -> bool:
    return isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "type"


def action_branches(source: str, path: str = "<sample>") -> list[Violation]:
    """Every place in ``source`` that decides by an action's class: isinstance/issubclass,
    ``match`` class patterns, ``type(x) is C``, and tables keyed by action class."""
    tree = ast.parse(source)
    lines = source.splitlines()
    names = _action_aliases(tree)
    found: list[Violation] = []
    for node in ast.walk(tree):
        hit = False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"isinstance", "issubclass"}:
            hit = len(node.args) == 2 and _names_action(node.args[1], names)
        elif isinstance(node, ast.match_case):
            hit = any(isinstance(p, ast.MatchClass) and _names_action(p.cls, names) for p in ast.walk(node.pattern))
        elif isinstance(node, ast.Compare):  # type(a) is Transfer, type(a).__name__ == "Transfer"
            sides = [node.left, *node.comparators]
            typed = any(_is_type_call(s) or (isinstance(s, ast.Attribute) and _is_type_call(s.value)) for s in sides)
            hit = typed and any(_names_action(s, names) or (isinstance(s, ast.Constant) and s.value in names)
                                for s in sides)
        elif isinstance(node, ast.Dict):  # {Transfer: on_transfer, ...}[type(a)]
            hit = any(k is not None and _names_action(k, names) for k in node.keys)
        if hit:
            line = node.pattern.lineno if isinstance(node, ast.match_case) else node.lineno
            found.append(Violation(path, line, lines[line - 1].strip()))
    return sorted(found, key=lambda v: v.line)
