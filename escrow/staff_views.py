"""Staff pages that need more than an admin action (a partial refund chooses keys)."""

from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import get_object_or_404

from accounts.two_factor import verified_required
from escrow.merchant_views import refund_page
from escrow.models import Order


@staff_member_required
@verified_required
def staff_refund(request, pk: int):
    order = get_object_or_404(Order.objects.select_related("product"), pk=pk)
    return refund_page(request, order, back=request.path)
