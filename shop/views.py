"""The buyer's catalogue. A product's own page is escrow's (`escrow.views.product_page`): checkout starts there."""

from django.core.paginator import Paginator
from django.shortcuts import render

from shop.forms import CatalogFilterForm
from shop.selectors import catalog_products, categories

CATALOG_PAGE_SIZE = 24


def catalog(request):
    """Search, category, sort, "in stock only" and the page are all in the address (`q`, `category`,
    `sort`, `in_stock`, `page`), so a search can be linked; a bad value is ignored, never an error."""
    category_rows = list(categories())
    form = CatalogFilterForm(request.GET or None, categories=category_rows)
    form.is_valid()  # a field with a bad value drops out of cleaned_data; the others still apply
    wanted = getattr(form, "cleaned_data", {})
    products = catalog_products(
        q=wanted.get("q", ""),
        category=wanted.get("category", ""),
        sort=wanted.get("sort") or "newest",
        in_stock=wanted.get("in_stock", False),
    )
    page = Paginator(products, CATALOG_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "shop/catalog.html",
        {
            "form": form,
            "page": page,
            "products": page.object_list,
            "categories": category_rows,
            "current_category": wanted.get("category", ""),
            "query_without_page": query.urlencode(),
            "searching": any(wanted.get(name) for name in ("q", "category", "in_stock")),
        },
    )
