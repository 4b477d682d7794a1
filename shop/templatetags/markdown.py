from django import template

from shop.markdown import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str):
    """`{{ product.description|markdown }}`: safe HTML from Markdown or plain text."""
    return render_markdown(text)
