"""`preview.html`: the card as the Hub shows it — front matter as a metadata box, then the body.

    >>> write_preview(Path("runs/x/README.md"))   # → runs/x/preview.html, images resolved beside it
"""

from __future__ import annotations

import html
from pathlib import Path

from markdown_it import MarkdownIt

from ..errors import CardError
from ..front_matter import split_card

PREVIEW_FILE = "preview.html"
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 860px; margin: 2em auto; line-height: 1.5; color: #111; }
.metadata { border: 1px solid #ddd; border-radius: 8px; padding: .5em 1em; background: #fafafa; font-size: 90%; }
.metadata dt { font-weight: 600; } .metadata dd { margin: 0 0 .4em 1em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: 4px 8px; }
blockquote { border-left: 4px solid #e3a008; background: #fff8e1; margin: 1em 0; padding: .5em 1em; }
img { max-width: 100%; } code { background: #f3f3f3; padding: 0 3px; }
"""


def render_preview(card_text: str) -> str:
    """HTML for a card: a definition list of its front matter, then the Markdown body (GFM tables)."""
    try:
        meta, body = split_card(card_text)  # as the Hub splits it, whatever the line endings
    except CardError:  # no usable front matter: the Hub shows the whole text
        meta, body = {}, card_text
    items = "".join(f"<dt>{html.escape(str(key))}</dt><dd>{html.escape(_flat(value))}</dd>"
                    for key, value in meta.items())
    body_html = MarkdownIt("commonmark", {"html": False}).enable("table").render(body)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>model card preview</title>"
            f"<style>{STYLE}</style></head><body><dl class='metadata'>{items}</dl>{body_html}</body></html>\n")


def _flat(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_flat(v)}" for k, v in value.items())
    return str(value)


def write_preview(card_path: Path) -> Path:
    target = card_path.with_name(PREVIEW_FILE)
    target.write_text(render_preview(card_path.read_text()))
    return target
