"""A tiny document model rendered twice: report.md for repositories, report.html for browsers.

Writing the report once as blocks (headings, paragraphs, tables, figures) keeps the two files
identical in content without a Markdown-to-HTML dependency.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;"
    "text-align:right}th{background:#eee}td:first-child{text-align:left}"
    "img{max-width:100%}figcaption{color:#555;font-size:90%}code{background:#f4f4f4}"
)


@dataclass
class Document:
    """An ordered list of blocks; add them in reading order."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str) -> None:
        """A section heading."""
        self.blocks.append(("heading", text))

    def paragraph(self, text: str) -> None:
        """Plain text; `backticks` become code in both renderings."""
        self.blocks.append(("paragraph", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A table; floats are shown with four decimals."""
        self.blocks.append(("table", list(header), [list(r) for r in rows]))

    def figure(self, file: str, caption: str) -> None:
        """An image file in the report folder, with its caption."""
        self.blocks.append(("figure", file, caption))

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown."""
        out = [f"# {self.title}", ""]
        for kind, *args in self.blocks:
            if kind == "heading":
                out += [f"## {args[0]}", ""]
            elif kind == "paragraph":
                out += [args[0], ""]
            elif kind == "table":
                header, rows = args
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "---|" * len(header))
                out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
                out.append("")
            else:
                file, caption = args
                out += [f"![{caption}]({file})", "", f"*{caption}*", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        """A standalone page (figures are linked by relative path)."""
        out = [
            "<!DOCTYPE html>",
            f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}'
            f"</title><style>{_STYLE}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for kind, *args in self.blocks:
            if kind == "heading":
                out.append(f"<h2>{html.escape(args[0])}</h2>")
            elif kind == "paragraph":
                out.append(f"<p>{_inline(args[0])}</p>")
            elif kind == "table":
                header, rows = args
                head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{_inline(_cell(v))}</td>" for v in row) + "</tr>"
                    for row in rows
                )
                out.append(f"<table><tr>{head}</tr>{body}</table>")
            else:
                file, caption = (html.escape(a) for a in args)
                out.append(
                    f'<figure><img src="{file}" alt="{caption}"><figcaption>{caption}'
                    "</figcaption></figure>"
                )
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
