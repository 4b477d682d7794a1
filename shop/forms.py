from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib.auth import password_validation
from django.core.validators import MaxValueValidator
from django.utils.translation import gettext_lazy as _

from accounts import services as accounts_services
from core.money import Currency, MoneyError, from_major, to_major
from shop import services as shop_services
from shop.models import DESCRIPTION_MAX_LENGTH, ApiScope, Category, CouponKind, KycKind, StockDelimiter
from shop.selectors import CATALOG_SEARCH_MAX_LENGTH
from shop.services.kyc import LEGAL_NAME_MAX_LENGTH


class CatalogFilterForm(forms.Form):
    """The catalogue's address parameters; a field with a bad value is dropped, the others still apply."""

    q = forms.CharField(
        label=_("Search"),
        required=False,
        max_length=CATALOG_SEARCH_MAX_LENGTH,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": _("Game cards, gift cards, licences…")}),
    )
    category = forms.ChoiceField(label=_("Category"), required=False)
    sort = forms.ChoiceField(
        label=_("Sort by"),
        required=False,
        choices=[
            ("newest", _("Newest")),
            ("price_asc", _("Price: low to high")),
            ("price_desc", _("Price: high to low")),
            ("bestselling", _("Best-selling")),
        ],
    )
    in_stock = forms.BooleanField(label=_("In stock only"), required=False)

    def __init__(self, *args, categories, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["category"].choices = [("", _("All categories"))] + [(c.slug, c.label) for c in categories]


class MerchantSignupForm(forms.Form):
    """The application with its KYC step: `cleaned_data["kyc"]` is the checked `KycSubmission`."""

    name = forms.CharField(label=_("Shop name"), max_length=100)
    contact = forms.CharField(
        label=_("Contact (e-mail, phone or IM handle)"),
        max_length=200,
        help_text=_("How staff reach you about your application."),
    )
    kind = forms.ChoiceField(label=_("You apply as"), choices=KycKind.choices)
    legal_name = forms.CharField(
        label=_("Legal or business name"),
        max_length=LEGAL_NAME_MAX_LENGTH,
        help_text=_("As written on the document below. A business's name is shown on your public page once verified."),
    )
    document = forms.FileField(
        label=_("Identity document or business licence"),
        help_text=_(
            "A photo or scan: PNG, JPEG, WebP or PDF, at most 5 MB. Only staff see it; it is deleted "
            "90 days after a rejection."
        ),
        widget=forms.ClearableFileInput(attrs={"accept": "image/png,image/jpeg,image/webp,application/pdf"}),
    )

    def clean(self):
        cleaned = super().clean()
        if {"kind", "legal_name", "document"} <= set(cleaned):
            try:
                cleaned["kyc"] = shop_services.kyc_submission_check(
                    kind=cleaned["kind"], legal_name=cleaned["legal_name"], upload=cleaned["document"]
                )
            except shop_services.ShopError as refused:
                field = "legal_name" if refused.code == "bad_legal_name" else "document"
                self.add_error(field, str(refused))
        return cleaned


class MerchantAccountSignupForm(MerchantSignupForm):
    """For a visitor without an account: the account and the application in one form."""

    username = forms.CharField(label=_("Username"), max_length=150)
    email = forms.EmailField(label=_("E-mail"))
    password = forms.CharField(label=_("Password"), widget=forms.PasswordInput)

    field_order = ["username", "email", "password", "name", "contact", "kind", "legal_name", "document"]

    def clean_password(self):
        password = self.cleaned_data["password"]
        password_validation.validate_password(password)
        return password


class ProductForm(forms.Form):
    title = forms.CharField(label=_("Title"), max_length=200)
    description = forms.CharField(
        label=_("Description"),
        required=False,
        max_length=DESCRIPTION_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text=_("Plain text or Markdown."),
    )
    price = forms.DecimalField(label=_("Price"), min_value=Decimal("0.01"), max_digits=12, decimal_places=2)
    currency = forms.ChoiceField(label=_("Currency"), choices=Currency.choices)
    category = forms.ModelChoiceField(
        label=_("Category"), queryset=Category.objects.order_by("position", "pk"), required=False
    )
    price_tiers = forms.CharField(
        label=_("Wholesale prices"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "10 9.00\n50 8.50"}),
        help_text=_(
            "Optional. One row per tier: the quantity it starts at and the unit price from there, "
            'e.g. "10 9.00" (10 or more at 9.00 each).'
        ),
    )
    inspection_hours = forms.IntegerField(label=_("Inspection window (hours)"), min_value=1, max_value=720, initial=24)
    max_per_order = forms.IntegerField(label=_("Maximum quantity per order"), min_value=1, initial=10)
    low_stock_threshold = forms.IntegerField(label=_("Low-stock threshold"), min_value=0, initial=10)

    def clean_title(self) -> str:
        try:
            return shop_services.product_title_check(self.cleaned_data["title"])
        except shop_services.ShopError as error:
            raise forms.ValidationError(str(error), code=error.code) from None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The shop's own ceiling (checkout enforces it too), read when the form is built.
        most = settings.ORDER_MAX_QUANTITY
        field = self.fields["max_per_order"]
        field.max_value = most
        field.validators.append(MaxValueValidator(most))
        field.widget.attrs["max"] = most

    @classmethod
    def for_product(cls, product, data=None):
        initial = {
            "title": product.title,
            "description": product.description,
            "price": to_major(product.price, product.currency),
            "currency": product.currency,
            "category": product.category_id,
            "price_tiers": "\n".join(f"{q} {to_major(p, product.currency)}" for q, p in product.price_tiers or ()),
            "inspection_hours": product.inspection_hours,
            "max_per_order": min(product.max_per_order, settings.ORDER_MAX_QUANTITY),
            "low_stock_threshold": product.low_stock_threshold,
        }
        return cls(data=data, initial=initial)

    def clean(self):
        cleaned = super().clean()
        if "price" in cleaned and "currency" in cleaned:
            try:
                cleaned["price"] = from_major(str(cleaned["price"]), cleaned["currency"])
            except MoneyError as error:
                self.add_error("price", str(error))
        if "price_tiers" in cleaned:
            cleaned["price_tiers"] = self._tiers(cleaned)
        return cleaned

    def _tiers(self, cleaned) -> list[list[int]]:
        """ "10 9.00" rows → [[10, 900]], checked by the service's own rule (shown as this field's error)."""
        rows = []
        for line in cleaned["price_tiers"].splitlines():
            parts = line.replace("=", " ").replace(":", " ").replace("@", " ").split()
            if not parts:
                continue
            try:
                rows.append([int(parts[0]), from_major(parts[1], cleaned.get("currency", Currency.CNY))])
            except (ValueError, IndexError, MoneyError):
                self.add_error("price_tiers", _('Write each row as a quantity and a price, e.g. "10 9.00".'))
                return []
        if isinstance(cleaned.get("price"), int):
            try:
                return shop_services.price_tiers_check(rows, price=cleaned["price"])
            except shop_services.ShopError as error:
                self.add_error("price_tiers", str(error))
        return rows


class StockUploadForm(forms.Form):
    text = forms.CharField(
        label=_("Paste keys"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "autocomplete": "off"}),
    )
    file = forms.FileField(label=_("…or send a .txt / .csv file"), required=False)
    delimiter = forms.ChoiceField(
        label=_("Keys are separated by"),
        choices=StockDelimiter.choices,
        initial=StockDelimiter.NEWLINE,
        help_text=_("A card number and PIN on one line stay one key unless you choose their separator."),
    )

    def clean(self):
        cleaned = super().clean()
        has_text = bool((cleaned.get("text") or "").strip())
        if has_text == bool(cleaned.get("file")):
            raise forms.ValidationError(_("Paste keys or choose a file (one of the two)."))
        return cleaned


class RevokeForm(forms.Form):
    keys = forms.CharField(
        label=_("Keys to revoke, one per line"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "autocomplete": "off"}),
    )
    revoke_all = forms.BooleanField(label=_("Revoke all unsold keys of this product"), required=False)

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("revoke_all") and not (cleaned.get("keys") or "").strip():
            raise forms.ValidationError(_("List the keys to revoke, or tick “all”."))
        return cleaned


class PasswordConfirmForm(forms.Form):
    password = forms.CharField(label=_("Your password"), widget=forms.PasswordInput)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_password(self):
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError(_("That is not your password."))
        return password


class KeyExportForm(PasswordConfirmForm):
    """The password again and a fresh second factor (DESIGN: key exports ask for one)."""

    code = forms.CharField(
        label=_("Code from your authenticator app (or a backup code)"),
        max_length=16,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def clean(self):
        cleaned = super().clean()
        # Only behind the right password: a wrong one spends no code and counts no code failure.
        if "password" in cleaned and "code" in cleaned:
            try:
                accounts_services.otp_fresh_code_check(user=self.user, code=cleaned["code"])
            except accounts_services.TwoFactorRequired:
                self.add_error("code", _("Set up an authenticator app first."))
            except accounts_services.TwoFactorThrottled:
                self.add_error("code", _("Too many wrong codes in a row. Wait a moment, then try again."))
            except accounts_services.TwoFactorInvalid:
                self.add_error("code", _("That code is wrong or was already used. Enter a fresh code from your app."))
        return cleaned


class ApiTokenForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100, help_text=_("What uses it, e.g. “supplier sync”."))
    scopes = forms.MultipleChoiceField(
        label=_("What it may do"),
        choices=ApiScope.choices,
        initial=ApiScope.values,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("Give a script only what it needs. Managing tokens through the API needs every scope."),
    )
    code = forms.CharField(
        label=_("Code from your authenticator app (or a backup code)"),
        max_length=16,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )


class MerchantSettingsForm(forms.Form):
    """What a merchant may change themselves: their contact line and the paid-order notifications."""

    contact = forms.CharField(label=_("Contact for buyers"), max_length=200, required=False)
    notify_paid_orders = forms.BooleanField(
        label=_("E-mail me and add an inbox line for each newly paid order"), required=False
    )


class CouponForm(forms.Form):
    code = forms.CharField(
        label=_("Code"), max_length=32, help_text=_("Letters and digits; buyers may type it in any case.")
    )
    kind = forms.ChoiceField(label=_("Discount"), choices=CouponKind.choices)
    value = forms.DecimalField(
        label=_("Percentage or amount"),
        min_value=Decimal("0.01"),
        max_digits=12,
        decimal_places=2,
        help_text=_("Write 10 for ten percent off, or the amount off in the currency below."),
    )
    currency = forms.ChoiceField(label=_("Currency (fixed amounts)"), choices=Currency.choices, required=False)
    product = forms.ModelChoiceField(
        label=_("Product"), queryset=None, required=False, empty_label=_("Every product of my shop")
    )
    expires_at = forms.DateTimeField(
        label=_("Expires at (UTC, optional)"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    max_uses = forms.IntegerField(label=_("Use limit (optional)"), min_value=1, required=False)

    def __init__(self, *args, merchant, **kwargs):
        from shop.models import Product

        super().__init__(*args, **kwargs)
        self.fields["product"].queryset = Product.objects.filter(merchant=merchant).order_by("pk")

    def clean(self):
        cleaned = super().clean()
        kind, value = cleaned.get("kind"), cleaned.get("value")
        if kind == CouponKind.PERCENT and value is not None:
            if value != value.to_integral_value():
                self.add_error("value", _("A percentage is a whole number from 1 to 99."))
            else:
                cleaned["value"] = int(value)
        elif kind == CouponKind.FIXED and value is not None:
            currency = cleaned.get("currency") or Currency.CNY
            cleaned["currency"] = currency
            try:
                cleaned["value"] = from_major(str(value), currency)
            except MoneyError as error:
                self.add_error("value", str(error))
        return cleaned
