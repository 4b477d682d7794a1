"""The buyer's catalogue. A product's own page is escrow's (`escrow.views.product_page`): checkout starts there."""

from django.shortcuts import render

from shop.selectors import products_on_sale


def catalog(request):
    return render(request, "shop/catalog.html", {"products": products_on_sale()})
