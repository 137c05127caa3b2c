"""report.md and report.html from one document model.

A page is a list of blocks (heading, paragraph, table, code, figure, list);
:func:`to_markdown` renders it for a code host (images as relative links),
:func:`to_html` as one self-contained file (images inline as base64, no
script, no network). A figure carries a caption shown under it. Paragraphs,
table cells and list items may hold :class:`Link` parts: a link to another
report page (``report.md`` from report.md, ``report.html`` from report.html,
always relative, so a moved output folder keeps its links) or to a heading of
the same page (the heading's anchor, made as a code host makes it).
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from walstress.console import human_bytes

LOST_IDS_SHOWN = 500
COMPILE_OPTIONS_TIMEOUT_S = 30
VERDICT_COLOURS = {"clean": "#1e7b34", "corrupt": "#b00020", "lost-writes": "#b00020", "errors": "#b35c00"}


@dataclass(frozen=True)
class Link:
    """A link: to the report page in ``folder`` (when given), or to the heading ``heading`` of this page."""

    label: str
    folder: Path | None = None
    heading: str | None = None


Inline = str | Link
Text = Inline | list[Inline]   # what a paragraph, a table cell or a list item holds


@dataclass
class Block:
    kind: str                      # h1 h2 h3 p table code img ul verdict
    text: str = ""                 # headings, code, verdicts; an image's alt text
    parts: list[Inline] = field(default_factory=list)       # a paragraph
    rows: list[list[list[Inline]]] = field(default_factory=list)   # table rows, list items
    path: Path | None = None       # image file
    caption: str = ""              # shown under an image
    colour: str | None = None
    anchor: str = ""               # a heading's id


def _parts(text: Text) -> list[Inline]:
    return list(text) if isinstance(text, list) else [text]


class Page:
    def __init__(self, title: str):
        self.title = title
        self.blocks: list[Block] = []
        self._anchors: set[str] = {slug(title)}

    def h(self, level: int, text: str) -> str:
        """A heading; returns its anchor (unique on the page, as a code host numbers repeated ones)."""
        base = slug(text)
        anchor, n = base, 0
        while anchor in self._anchors:
            n += 1
            anchor = f"{base}-{n}"
        self._anchors.add(anchor)
        self.blocks.append(Block(f"h{level}", text, anchor=anchor))
        return anchor

    def p(self, text: Text) -> None:
        self.blocks.append(Block("p", parts=_parts(text)))

    def verdict(self, text: str, colour: str | None) -> None:
        self.blocks.append(Block("verdict", text, colour=colour))

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        head: list[list[Inline]] = [[str(h)] for h in header]
        body: list[list[list[Inline]]] = [[_parts(v) if isinstance(v, (Link, list)) else [_cell(v)] for v in r] for r in rows]
        self.blocks.append(Block("table", rows=[head, *body]))

    def code(self, text: str) -> None:
        self.blocks.append(Block("code", text))

    def image(self, path: Path, alt: str, caption: str) -> None:
        self.blocks.append(Block("img", alt, path=path, caption=caption))

    def bullets(self, items: Sequence[Text]) -> None:
        self.blocks.append(Block("ul", rows=[[_parts(i)] for i in items]))

    def anchor_of(self, heading: str) -> str | None:
        return next((b.anchor for b in self.blocks if b.kind in ("h1", "h2", "h3") and b.text == heading), None)


def slug(text: str) -> str:
    """A heading's anchor as code hosts make it: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _href(link: Link, page: Page, base: Path, ext: str) -> str:
    if link.folder is None:  # a heading of this page
        return "#" + (page.anchor_of(link.heading or "") or slug(link.heading or ""))
    target = os.path.relpath(link.folder / f"report.{ext}", base).replace(os.sep, "/")
    return target + ("#" + slug(link.heading) if link.heading else "")


# ---------------------------------------------------------------- rendering
def _md_escape_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(page: Page, base: Path) -> str:
    def inline(parts: list[Inline]) -> str:
        return "".join(f"[{p.label}]({_href(p, page, base, 'md')})" if isinstance(p, Link) else p for p in parts)

    def cell(parts: list[Inline]) -> str:
        return inline([p if isinstance(p, Link) else _md_escape_cell(p) for p in parts])

    out = [f"# {page.title}", ""]
    for b in page.blocks:
        if b.kind in ("h1", "h2", "h3"):
            out += ["#" * (int(b.kind[1]) + 1) + " " + b.text, ""]
        elif b.kind == "p":
            out += [inline(b.parts), ""]
        elif b.kind == "verdict":
            out += [f"**{b.text}**", ""]
        elif b.kind == "table":
            header, *rows = b.rows
            out.append("| " + " | ".join(cell(c) for c in header) + " |")
            out.append("|" + "|".join("---" for _ in header) + "|")
            out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
            out.append("")
        elif b.kind == "code":
            fence = "````" if "```" in b.text else "```"
            out += [fence, b.text.rstrip("\n"), fence, ""]
        elif b.kind == "img" and b.path is not None:
            rel = os.path.relpath(b.path, base).replace(os.sep, "/")
            out += [f"![{b.text}]({rel})", ""]
            if b.caption:
                out += [f"*{b.caption}*", ""]
        elif b.kind == "ul":
            out += [f"- {inline(r[0])}" for r in b.rows] + [""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1240px;margin:1.5em auto;
padding:0 1em;color:#1b1b1b;line-height:1.4}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.2em}h2{font-size:1.3em;margin-top:1.6em;
border-bottom:1px solid #eee}h3{font-size:1.1em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.92em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f3f3f3}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:.6em;overflow-x:auto;font-size:.85em;max-height:32em}
figure{margin:.8em 0 1.4em}img{max-width:100%;height:auto;border:1px solid #eee;display:block}
figcaption{font-size:.9em;color:#555;margin-top:.3em}
.verdict{font-size:1.25em;font-weight:bold;padding:.5em .8em;border-left:6px solid;background:#fafafa}
"""


def to_html(page: Page, base: Path) -> str:
    esc = html.escape

    def inline(parts: list[Inline]) -> str:
        return "".join(f'<a href="{esc(_href(p, page, base, "html"))}">{esc(p.label)}</a>' if isinstance(p, Link)
                       else _inline(p) for p in parts)

    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{esc(page.title)}</title><style>{_CSS}</style></head><body>",
           f'<h1 id="{slug(page.title)}">{esc(page.title)}</h1>']
    for b in page.blocks:
        if b.kind in ("h1", "h2", "h3"):
            level = int(b.kind[1]) + 1
            out.append(f'<h{level} id="{esc(b.anchor)}">{esc(b.text)}</h{level}>')
        elif b.kind == "p":
            out.append(f"<p>{inline(b.parts)}</p>")
        elif b.kind == "verdict":
            colour = b.colour or "#444"
            out.append(f'<div class="verdict" style="border-color:{colour};color:{colour}">{esc(b.text)}</div>')
        elif b.kind == "table":
            header, *rows = b.rows
            out.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in header) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</tbody></table>")
        elif b.kind == "code":
            out.append(f"<pre>{esc(b.text.rstrip())}</pre>")
        elif b.kind == "img" and b.path is not None and b.path.exists():
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            caption = f"<figcaption>{_inline(b.caption)}</figcaption>" if b.caption else ""
            out.append(f'<figure><img alt="{esc(b.text)}" src="data:image/png;base64,{data}">{caption}</figure>')
        elif b.kind == "ul":
            out.append("<ul>" + "".join(f"<li>{inline(r[0])}</li>" for r in b.rows) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape, then render `code` and **bold** spans (the only inline markup the pages use)."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)


def write_page(page: Page, folder: Path) -> list[Path]:
    md = folder / "report.md"
    page_html = folder / "report.html"
    md.write_text(to_markdown(page, folder))
    page_html.write_text(to_html(page, folder))
    return [md, page_html]


# --------------------------------------------------------------- sections
def verdict_text(run: dict[str, Any]) -> tuple[str, str | None]:
    verdict = str(run.get("verdict", "not judged"))
    text = f"{verdict.upper()}: {run.get('reason', '')}".strip()
    return text, VERDICT_COLOURS.get(verdict)


def partial_note(run: dict[str, Any], last_record_t: float | None, span_s: float) -> str:
    when = ""
    if last_record_t:
        import time

        when = time.strftime(" at %Y-%m-%d %H:%M:%S", time.localtime(last_record_t))
    planned = run.get("planned_duration_s")
    of = f" of the planned {planned:g} s" if isinstance(planned, (int, float)) else ""
    return (f"PARTIAL RUN: the controller did not finish this run (no clean stop in the history). "
            f"Shown is what was recorded: {span_s:.1f} s{of}, last record{when}.")


def flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        out.append((prefix, value))


def scenario_lines(scenario: dict[str, Any]) -> str:
    """The resolved scenario as ``key = value`` lines (workers listed one per line)."""
    items: list[tuple[str, Any]] = []
    workers = scenario.get("workers", [])
    flatten("", {k: v for k, v in scenario.items() if k not in ("workers", "matrix")}, items)
    lines = [f"{k} = {json.dumps(v, default=str)}" for k, v in items]
    for w in workers:
        lines.append("[[workers]] " + ", ".join(f"{k}={json.dumps(v)}" for k, v in w.items()))
    return "\n".join(lines)


_COMPILE_CACHE: dict[tuple[str, str], list[str] | str] = {}


def compile_options(driver: str, module_path: str | None, version: str | None) -> list[str] | str:
    """PRAGMA compile_options of the library a worker loaded, read now from the same module file.

    Returns the options, or a sentence saying why they are not known.
    """
    key = (driver or "stdlib", module_path or "")
    if key in _COMPILE_CACHE:
        return _COMPILE_CACHE[key]
    from walstress.sqlite.driver import library_info

    result: list[str] | str
    try:
        if driver == "stdlib":
            info = library_info("stdlib")
            if version and info["sqlite_version"] != version:
                result = f"not known: this Python loads SQLite {info['sqlite_version']}, the workers loaded {version}"
            else:
                result = info["compile_options"]
        else:
            folder = ""
            if module_path:
                path = Path(module_path)
                folder = str(path.parent.parent if path.parent.name == "apsw" else path.parent)
            code = ("import json,sys\nif sys.argv[1]: sys.path.insert(0, sys.argv[1])\n"
                    "from walstress.sqlite.driver import library_info\nprint(json.dumps(library_info('apsw')))")
            root = str(Path(__file__).resolve().parents[2])
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
            done = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True,
                                  timeout=COMPILE_OPTIONS_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                result = f"not known: loading {module_path} failed"
            else:
                info = json.loads(done.stdout.strip().splitlines()[-1])
                if version and info["sqlite_version"] != version:
                    result = f"not known: {module_path} now loads SQLite {info['sqlite_version']}, not {version}"
                else:
                    result = info["compile_options"]
    except Exception as exc:  # a missing option list never stops a report
        result = f"not known: {exc!r}"
    _COMPILE_CACHE[key] = result
    return result


def environment_rows(env: dict[str, Any], *, read_now: bool) -> list[list[str]]:
    fs = env.get("filesystem") or {}
    rows = [
        ["kernel", f"{env.get('kernel', '-')} ({env.get('platform', '-')})"],
        ["filesystem of the run dir", f"{fs.get('type', '-')} on {fs.get('device', '-')} at {fs.get('mountpoint', '-')}"
         if fs else "-"],
        ["CPU", f"{env.get('cpu_model') or '-'}, {env.get('cpu_count', '-')} logical CPUs"],
        ["memory", human_bytes(env.get("memory_bytes")) if env.get("memory_bytes") else "-"],
        ["Python", str(env.get("python", "-"))],
        ["SQLite of the harness (checks)", str(env.get("system_sqlite", "-"))],
    ]
    if read_now:
        rows.append(["note", "read when this report was built (the run recorded no environment)"])
    return rows
