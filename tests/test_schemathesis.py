"""Schemathesis against the OpenAPI schema, in process (WSGI), on the test database: every operation,
as an anonymous visitor, a buyer's API token and a merchant's token. No answer may be a 5xx, and every
answer (status, content type, body) must be one the schema describes.

Kept to a few examples per operation and caller (`SCHEMATHESIS_MAX_EXAMPLES`, default 8) so the run
stays well under three minutes; raise it locally to dig deeper."""

import json
import os

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts import account_services
from shop import services as shop_services
from tests import factories

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "8"))
COVERAGE_PHASE = os.environ.get("SCHEMATHESIS_COVERAGE") == "1"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _load_schema():
    """The schema as `/api/schema/` serves it (generated here: no request, no database at collection),
    bound to the WSGI app so that each case calls it in process."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    from config.wsgi import application

    document = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
    # Fuzzing only: the "coverage" phase adds dozens of fixed cases per operation whatever the limit,
    # which triples the run for little more than the fuzzing finds.
    config = schemathesis.Config.from_dict({"phases": {"coverage": {"enabled": COVERAGE_PHASE}}})
    loaded = schemathesis.openapi.from_dict(document, config=config)
    loaded.app = application
    loaded.location = "/api/schema/"
    return loaded


schema = _load_schema()


@pytest.fixture
def callers(db, run_on_commit):
    """Some state to find (a merchant with products, stock and a delivered order), and each caller's headers."""
    merchant = factories.merchant_create(name="Fuzzed")
    product = factories.product_create(merchant=merchant, stock=5)
    with run_on_commit():
        factories.order_delivered(product=product)
    _record, token = shop_services.merchant_api_token_create_unchecked(
        merchant=merchant, name="fuzz", actor=None, now=timezone.now()
    )
    _record, buyer_token = account_services.account_api_token_create(
        user=factories.user_create(), name="fuzz", now=timezone.now()
    )
    return {
        "anonymous": {},
        "buyer": {"Authorization": f"Token {buyer_token}"},
        "merchant": {"Authorization": f"Token {token}"},
    }


FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def call_and_check(case, headers):
    # The app runs in this thread, inside the test's transaction: like Django's test client, keep it
    # from closing that connection at the end of the request.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        response = case.call(headers=headers)
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    case.validate_response(response, checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_anonymous(case, callers):
    call_and_check(case, callers["anonymous"])


@schema.parametrize()
@FUZZ
def test_buyer(case, callers):
    call_and_check(case, callers["buyer"])


@schema.parametrize()
@FUZZ
def test_merchant(case, callers):
    call_and_check(case, callers["merchant"])
