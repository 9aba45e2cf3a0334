"""The audit trail page's changed columns, written in Python: a page holds up to fifty events of
a dozen columns each (a screening's insert), and the template loop over them was half the time
the page took to render. The HTML is the loop's, value for value: each value goes through
`render_value_in_context`, as `{{ value }}` does (localized, escaped)."""

from django import template
from django.template.base import render_value_in_context
from django.utils.safestring import mark_safe

register = template.Library()


@register.simple_tag(takes_context=True)
def audit_changes(context, event) -> str:
    """Per changed column: <div class="change"><span class="field" title="column">Label</span>:
    then the old value (updates only) -> the new one (nothing for None)."""
    update = event.action == "UPDATE"
    parts = []
    for column, label, old, new in event.changes:
        parts += [
            '<div class="change"><span class="field" title="',
            render_value_in_context(column, context),
            '">',
            render_value_in_context(label, context),
            "</span>: ",
        ]
        if update:
            parts += ['<span class="muted">', render_value_in_context(old, context), "</span> → "]
        parts += [render_value_in_context("" if new is None else new, context), "</div>"]
    return mark_safe("".join(parts))  # noqa: S308 - every value escaped above
