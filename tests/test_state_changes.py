"""Every status change goes through its transitions map (core/transitions.py), and this keeps it so.

The check reads the project's own source with `ast`: outside the transitions module, no code may write a
`status` field itself — no `.update(status=…)`, no `obj.status = …`, no `save(update_fields=["status"])`,
no `bulk_update(…, ["status"])`. Creating a row in its first state (`create(status=…)`) is fine.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRANSITIONS_MODULES = {"core/transitions.py"}
SKIPPED_FOLDERS = {"tests", "migrations", "bench", ".venv", "node_modules", "var", "staticfiles"}


def _project_sources() -> list[Path]:
    return [
        path
        for path in REPO.rglob("*.py")
        if not SKIPPED_FOLDERS & set(path.relative_to(REPO).parts)
        and path.relative_to(REPO).as_posix() not in TRANSITIONS_MODULES
    ]


def _names_status(node: ast.AST) -> bool:
    """A literal list or tuple that names the `status` field."""
    return isinstance(node, ast.List | ast.Tuple) and any(
        isinstance(item, ast.Constant) and item.value == "status" for item in node.elts
    )


def status_writes(source: str) -> list[tuple[int, str]]:
    """(line, what) for each place in `source` that writes a status field itself."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method, keywords = node.func.attr, {k.arg: k.value for k in node.keywords}
            if method == "update" and "status" in keywords:
                found.append((node.lineno, ".update(status=…)"))
            if method == "save" and "update_fields" in keywords and _names_status(keywords["update_fields"]):
                found.append((node.lineno, 'save(update_fields=["status", …])'))
            if method == "bulk_update" and any(_names_status(arg) for arg in [*node.args, *keywords.values()]):
                found.append((node.lineno, 'bulk_update(…, ["status", …])'))
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AugAssign | ast.AnnAssign)
            else []
        )
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr == "status":
                found.append((node.lineno, ".status = …"))
    return sorted(found)


def test_the_checker_sees_each_kind_of_status_write():
    source = "\n".join(
        [
            "Order.objects.filter(pk=1).update(status='paid')",
            "order.status = 'paid'",
            "order.save(update_fields=['status'])",
            "Order.objects.bulk_update(orders, ['status'])",
            "Order.objects.create(status='awaiting_payment')",
            "Order.objects.filter(status='paid').update(paid_at=now)",
        ]
    )
    assert [line for line, _ in status_writes(source)] == [1, 2, 3, 4]


def test_no_status_is_written_outside_the_transitions_maps():
    offenders = [
        f"{path.relative_to(REPO)}:{line}: {what}"
        for path in _project_sources()
        for line, what in status_writes(path.read_text())
    ]
    assert offenders == [], "Change statuses through their transitions map (Transitions.apply/update):\n" + "\n".join(
        offenders
    )
