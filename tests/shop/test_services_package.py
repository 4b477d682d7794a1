"""`shop/services/` is one module per concern, and `from shop import services` still reaches every service."""

import importlib
import inspect
import pkgutil

import pytest

from shop import services

MODULES = sorted(info.name for info in pkgutil.iter_modules(services.__path__))


def test_the_package_has_its_concerns():
    assert MODULES == [
        "coupons",
        "errors",
        "keys",
        "kyc",
        "merchants",
        "products",
        "stock",
        "stock_copy",
        "tokens",
        "uploads",
        "webhooks",
    ]


@pytest.mark.parametrize("name", MODULES)
def test_each_module_says_what_it_owns_and_is_reexported(name):
    module = importlib.import_module(f"shop.services.{name}")
    assert (module.__doc__ or "").strip(), f"shop/services/{name}.py needs a docstring saying what it owns"
    own = {
        attribute: value
        for attribute, value in vars(module).items()
        if not attribute.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    }
    assert own, name
    for attribute, value in own.items():
        assert getattr(services, attribute, None) is value, f"shop.services does not re-export {name}.{attribute}"
        assert attribute in services.__all__
