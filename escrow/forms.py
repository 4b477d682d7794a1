from django import forms
from django.utils.translation import gettext_lazy as _


class CheckoutForm(forms.Form):
    email = forms.EmailField(label=_("E-mail for your receipt and order link"))
    quantity = forms.IntegerField(label=_("Quantity"), min_value=1)

    def __init__(self, *args, max_quantity: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_quantity = max_quantity
        self.fields["quantity"].widget.attrs.update({"min": 1, "max": max_quantity})

    def clean_quantity(self) -> int:
        quantity = self.cleaned_data["quantity"]
        if quantity > self.max_quantity:
            raise forms.ValidationError(_("At most %(max)d per order."), params={"max": self.max_quantity})
        return quantity
