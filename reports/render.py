"""The pages' renderer: Jinja2 templates (templates/*.html.j2) with autoescape, and the CSS and JS
of static/ inlined, so that every page stays one self-contained file (no server, no CDN, no
network fetch; it works from a file:// URL and after its folder is copied elsewhere).

Templates and static files are package data of tarsier.reports, read through the package (never
a path relative to the working directory). Two conventions keep the templates readable while the
pages stay byte for byte what they were:
- a template line ending in a backslash continues on the next one, whose indentation is dropped
  (markup that renders as one line can be written over several);
- values are escaped as html.escape does (`&quot;`, `&#x27;`), and None renders as nothing.
"""
from __future__ import annotations

import functools
import html
import re
import time
from importlib.resources import files
from pathlib import Path

import jinja2
from jinja2.ext import Extension
from markupsafe import Markup

from tarsier.common.files import atomic_write
from tarsier.reports.formats import fmt_duration, fmt_num, fmt_pct, fmt_time, href

PACKAGE = "tarsier.reports"


class LineContinuation(Extension):
    """A backslash at the end of a template line joins it with the next line, whose leading
    indentation is dropped."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return re.sub(r"\\\n[ \t]*", "", source)


def _escape(value):
    """Autoescape's finalize step: values are escaped here (as html.escape does, quotes included);
    markup that is already safe (macros, static files) passes through."""
    if hasattr(value, "__html__"):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


@functools.cache
def static(name: str) -> Markup:
    """The text of static/NAME (CSS or JS of our own), to inline into a page as it is."""
    return Markup(files(PACKAGE).joinpath("static", name).read_text(encoding="utf-8"))


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(PACKAGE, "templates"),
        autoescape=True,
        finalize=_escape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=[LineContinuation],
    )
    env.globals["static"] = static
    env.filters.update(href=href, pct=fmt_pct, num=fmt_num, duration=fmt_duration, clock=fmt_time)
    return env


def render(template: str, **context) -> str:
    """The page from templates/TEMPLATE; `written` (the UTC time shown in the header) is added."""
    context.setdefault("written", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    return environment().get_template(template).render(**context)


def write_page(path: Path, template: str, **context) -> Path:
    """Render the page and write it atomically, so a browser never shows half a page."""
    return atomic_write(Path(path), render(template, **context))
