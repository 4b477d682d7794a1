from django.shortcuts import get_object_or_404, render

from escrow.forms import CheckoutForm
from escrow.services import order_max_quantity
from shop.selectors import products_on_sale


def catalog(request):
    return render(request, "shop/catalog.html", {"products": products_on_sale()})


def product_detail(request, pk: int):
    product = get_object_or_404(products_on_sale(), pk=pk)
    initial = {"quantity": 1}
    if request.user.is_authenticated and request.user.email:
        initial["email"] = request.user.email
    form = CheckoutForm(initial=initial, max_quantity=order_max_quantity(product))
    return render(request, "shop/product.html", {"product": product, "form": form})
