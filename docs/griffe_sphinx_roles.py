"""Griffe extension for the docs build: Sphinx markup in docstrings, read as Markdown.

The docstrings are Captum style, written for Sphinx: ``:class:`~captum_borex.BOREx``` would
show in MkDocs as the literal ``:class:`` followed by the name. This turns every
``:role:`target``` into ```target``` (``~`` keeps the last dotted part only, as in Sphinx),
and ``Examples::`` into the Google section title ``Examples:``, before the docstring is
parsed. It changes only what the docs show, never the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|obj|exc|const):`(~?)([^`]+)`")
#: Sphinx's ``Examples::`` (a paragraph ending in a literal block) as a Google section title.
#: The blank line after it goes too: a Google section's content starts on the next line.
EXAMPLES = re.compile(r"^([ \t]*)Examples::[ \t]*\n(?:[ \t]*\n)*", re.MULTILINE)


def _code_span(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles as code spans and ``Examples::`` as ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = ROLE.sub(_code_span, obj.docstring.value)
            obj.docstring.value = EXAMPLES.sub(r"\1Examples:\n", value)
