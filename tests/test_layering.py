"""Dependencies run one way (docs/architecture.md), and this keeps them so.

The check reads each package's source with `ast`: every `import` and `from … import`, at module level or
inside a function, with relative imports resolved to the package they name, and `import_module("…")`
with a literal name. A model pointing at another app's model by a string (`"escrow.Order"`) is not an
import and stays allowed.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# package -> the packages of ours it must never import
FORBIDDEN = {
    "core": {"accounts", "shop", "escrow", "disputes", "risk", "config", "staff"},
    # Everyone may ask risk (DESIGN.md); risk itself asks none of the others.
    "accounts": {"shop", "escrow", "disputes", "staff"},
    "shop": {"escrow", "disputes", "staff"},
    "escrow": {"disputes", "staff"},
    # The staff console composes everyone's selectors; nobody builds on it.
    "disputes": {"staff"},
    "risk": {"accounts", "shop", "escrow", "disputes", "config", "staff"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of every module that `source` (the module `module`) imports, anywhere in it."""
    # The package a relative import starts from: the module's own for a package's __init__, else its parent.
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # `from ... import escrow`, climbing to the top, names the imported packages themselves.
            found += [(node.lineno, name)] if name else [(node.lineno, alias.name) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def forbidden_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """`module: line N imports X` for each import `module` may not make under `FORBIDDEN`."""
    own = module.split(".")[0]
    banned = FORBIDDEN.get(own, set())
    return sorted(
        {
            f"{module}: line {line} imports {name}"
            for line, name in imported_modules(source, module, is_package=is_package)
            if name.split(".")[0] in banned
        }
    )


def _package_sources(package: str) -> list[Path]:
    return sorted(path for path in (REPO / package).rglob("*.py"))


def test_every_guarded_package_exists_and_is_read():
    # A renamed or missing folder must not make the check pass by reading nothing.
    for package in ("core", "accounts", "shop", "escrow", "risk"):
        assert _package_sources(package), package


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_run_one_way(package):
    problems = []
    for path in _package_sources(package):
        problems += forbidden_imports(
            path.read_text(encoding="utf-8"), _module_name(path), is_package=path.name == "__init__.py"
        )
    assert problems == [], "imports against the arrows of docs/architecture.md:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "module, source",
    [
        ("shop.views", "from escrow.forms import CheckoutForm\n"),
        ("shop.views", "import escrow.services\n"),
        ("shop.views", "def page():\n    from escrow import services\n    return services\n"),
        ("shop.services.keys", "from ... import escrow\n"),  # relative, up to the top: `escrow`
        ("core.money", "from config.settings import DEBUG\n"),
        ("core.money", "import importlib\nimportlib.import_module('accounts.models')\n"),
        ("accounts.services", "if True:\n    import shop.models as m\n"),
        ("escrow.services", "from disputes.models import Dispute\n"),
        ("risk.engine", "from accounts.services import audit_record\n"),
        ("risk.api", "from escrow import reviews\n"),
    ],
)
def test_the_checker_catches_a_forbidden_import(module, source):
    assert forbidden_imports(source, module) != []


@pytest.mark.parametrize(
    "module, source",
    [
        ("escrow.services", "from shop import services\nfrom core.money import to_major\n"),
        ("shop.models", 'from django.db import models\nx = models.ForeignKey("escrow.Order", on_delete=None)\n'),
        ("shop.services.keys", "from . import stock_copy\nfrom .stock_copy import copy_rows\n"),
        ("core.money", "from decimal import Decimal\n"),
        ("accounts.models", "from core.transitions import Transitions\n"),
        ("escrow.services", "import risk\n"),
        ("accounts.views", "from risk import RiskContext\n"),
    ],
)
def test_the_checker_allows_what_the_arrows_allow(module, source):
    assert forbidden_imports(source, module) == []


def test_relative_imports_resolve_to_the_package_they_name():
    names = {
        name for _, name in imported_modules("from . import keys\nfrom ..models import Product\n", "shop.services.x")
    }
    assert names == {"shop.services", "shop.models"}
    in_init = {name for _, name in imported_modules("from .keys import key_sell\n", "shop.services", is_package=True)}
    assert "shop.services.keys" in in_init
