"""Markdown topic bodies rendered for email: inline-styled HTML and readable plain text.

One markdown-it renderer (CommonMark, raw HTML escaped) serves every topic.  The HTML carries its
CSS inline, since mail clients drop ``<style>`` blocks, and shows an image as a link to it so that
no remote content is loaded; the text uses underlined headings, ``- `` lists and ``text (url)``
links.  Both are pure and cached per body: 20,000 participants share one topic.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.token import Token

__all__ = ["markdown_to_html", "markdown_to_text"]

_LINK_STYLE = "color:#1a5c9e;text-decoration:underline;"
_MONO = "font-family:Menlo,Consolas,'Courier New',monospace;font-size:14px;"
_BLOCK_STYLES = {
    "p": "margin:0 0 16px 0;",
    "h1": "margin:24px 0 12px 0;font-size:22px;line-height:1.3;",
    "h2": "margin:22px 0 10px 0;font-size:19px;line-height:1.3;",
    "h3": "margin:20px 0 8px 0;font-size:17px;line-height:1.3;",
    "h4": "margin:18px 0 8px 0;font-size:16px;",
    "h5": "margin:18px 0 8px 0;font-size:16px;",
    "h6": "margin:18px 0 8px 0;font-size:16px;",
    "ul": "margin:0 0 16px 0;padding:0 0 0 24px;",
    "ol": "margin:0 0 16px 0;padding:0 0 0 24px;",
    "li": "margin:0 0 6px 0;",
    "blockquote": "margin:0 0 16px 0;padding:0 0 0 14px;border-left:3px solid #d5d5d0;color:#555;",
    "hr": "border:0;border-top:1px solid #deded8;margin:24px 0;",
}
_PRE_STYLE = _MONO + "margin:0 0 16px 0;padding:12px;background-color:#f3f3ef;white-space:pre-wrap;"
_CODE_STYLE = _MONO + "background-color:#f3f3ef;padding:1px 4px;"


def _add_styles(state: object) -> None:
    """Core rule: inline CSS on every element, since mail clients drop <style> blocks."""
    for token in state.tokens:  # type: ignore[attr-defined]
        if token.nesting >= 0 and token.tag in _BLOCK_STYLES and token.type != "inline":
            token.attrSet("style", _BLOCK_STYLES[token.tag])
        for child in token.children or ():
            if child.type == "link_open":
                child.attrSet("style", _LINK_STYLE)
            elif child.type == "code_inline":
                child.attrSet("style", _CODE_STYLE)


def _render_image(self: object, tokens: list[Token], idx: int, options: object, env: object) -> str:
    """An image becomes a link to it labelled with its alt text: no remote content is loaded."""
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children, options, env)  # type: ignore[attr-defined]
    src = str(token.attrGet("src") or "")
    label = escapeHtml(alt or src)
    inside_link = sum(t.nesting for t in tokens[:idx] if t.type in ("link_open", "link_close"))
    if inside_link or not src.lower().startswith(("https://", "http://")):
        return label
    return f'<a href="{escapeHtml(src)}" style="{_LINK_STYLE}">{label}</a>'


def _render_code(self: object, tokens: list[Token], idx: int, options: object, env: object) -> str:
    content = escapeHtml(tokens[idx].content)
    return f'<pre style="{_PRE_STYLE}"><code>{content}</code></pre>\n'


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False})  # raw HTML in a topic is shown, never obeyed
    md.core.ruler.push("rapport_inline_styles", _add_styles)
    md.add_render_rule("image", _render_image)
    md.add_render_rule("fence", _render_code)
    md.add_render_rule("code_block", _render_code)
    return md


_MD = _markdown()


@lru_cache(maxsize=128)
def markdown_to_html(markdown: str) -> str:
    """Email-safe HTML for a topic body: inline styles, no images, raw HTML escaped."""
    return _MD.render(markdown)


@lru_cache(maxsize=128)
def markdown_to_text(markdown: str) -> str:
    """Readable plain text for a topic body: underlined headings, "- " lists, "text (url)"."""
    out: list[str] = []
    quote = 0
    widths: list[int] = []  # marker width of each open list item, outermost first
    pending: str | None = None  # marker waiting for the first line of the current item

    def emit(text: str, blank: bool) -> None:
        nonlocal pending
        for line in text.split("\n"):
            if pending is not None:
                lead, pending = " " * sum(widths[:-1]) + pending, None
            else:
                lead = " " * sum(widths)
            out.append(("> " * quote + lead + line).rstrip())
        if blank:
            out.append((">" * quote).rstrip())

    tokens = _MD.parse(markdown)
    for i, token in enumerate(tokens):
        kind = token.type
        if kind == "inline":
            text = _inline_text(token.children or [])
            opener = tokens[i - 1]
            if opener.type == "heading_open":
                underline = {"h1": "=", "h2": "-"}.get(opener.tag)
                width = max((_width(line) for line in text.split("\n")), default=0)
                emit(text + (f"\n{underline * width}" if underline else ""), blank=True)
            else:
                emit(text, blank=not opener.hidden)
        elif kind == "list_item_open":
            marker = f"{token.info}{token.markup} " if token.info else "- "
            widths.append(len(marker))
            pending = marker
        elif kind == "list_item_close":
            widths.pop()
        elif kind in ("bullet_list_close", "ordered_list_close") and not widths:
            emit("", blank=False)
        elif kind == "blockquote_open":
            quote += 1
        elif kind == "blockquote_close":
            if out and not out[-1].strip("> "):
                out.pop()
            quote -= 1
            emit("", blank=False)
        elif kind in ("fence", "code_block"):
            emit("\n".join("    " + line for line in token.content.rstrip("\n").split("\n")), True)
        elif kind == "hr":
            emit("* * *", blank=True)
    lines: list[str] = []
    for line in out:  # collapse runs of blank lines left by nested blocks
        if line.strip("> ") or (lines and lines[-1].strip("> ")):
            lines.append(line)
    return "\n".join(lines).strip("\n") + "\n"


def _inline_text(children: list[Token]) -> str:
    parts: list[str] = []
    links: list[tuple[str, int]] = []
    for child in children:
        kind = child.type
        if kind in ("text", "code_inline"):
            parts.append(child.content)
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind in ("strong_open", "strong_close"):
            parts.append("*")
        elif kind == "link_open":
            links.append((str(child.attrGet("href") or ""), len(parts)))
        elif kind == "link_close" and links:
            href, start = links.pop()
            label = "".join(parts[start:])
            if href and href not in (label, "mailto:" + label):
                parts.append(f" ({href})")
        elif kind == "image":
            alt = _inline_text(child.children or [])
            src = "" if links else str(child.attrGet("src") or "")
            parts.append(f"{alt} ({src})" if alt and src else alt or src)
    return "".join(parts)


def _width(line: str) -> int:
    """Columns a line takes in a monospaced font: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)
