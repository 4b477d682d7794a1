from django import template

from core.money import display

register = template.Library()


@register.filter
def money(amount: int, currency: str) -> str:
    """`{{ order.amount|money:order.currency }}` → `¥12.00 CNY`."""
    return display(amount, currency)
