"""Under the Content-Security-Policy the pages still work and the browser refuses nothing."""

import pytest

from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_shop_and_the_api_docs_run_without_a_policy_violation(page):
    product = factories.product_create(stock=1)
    violations = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    for path in ["/", f"/products/{product.pk}/", "/accounts/login/", "/transparency/"]:
        page.goto(path)
    page.goto("/api/docs/")
    page.wait_for_selector("#swagger-ui .information-container, #swagger-ui .info")  # drawn by its script
    assert violations == []
