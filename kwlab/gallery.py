"""``make gallery``: execute the teaching notebooks in quick mode and write each as an HTML page.

A teacher reads ``gallery/index.html`` before running anything: one page per notebook with its figures,
tables and printed text as quick mode produces them on this machine (widget state is stored, so the sliders
of notebook 02 show their last view), and the index lists each notebook's run time and whether it ran
cleanly. Printed text reads as JupyterLab shows it: consecutive prints of a stream are one block, and a
progress bar that rewrites its line (``\r``) shows its last state, not every update. The committed
notebooks are not changed (they stay stripped).

The pages work offline: nothing is loaded from the network (:func:`remote_references` lists what would be,
and the build checks every page with it). nbconvert's HTML exporter would load MathJax, require.js, the
widget manager and mermaid from CDNs; the gallery's exporter (:func:`offline_exporter`) loads none of them.
Maths is written as MathML, which browsers draw without a script (``latex2mathml``, of the ``lab`` extra;
without it the TeX source is shown as it is typed), with the TeX kept in the page as an annotation. A
widget is drawn as a static snapshot of its saved state: the controls with their last values (a slider's
label and value) and the outputs it last showed (the figure of notebook 02's sliders); moving it needs the
notebook.

Usage: ``python -m kwlab.gallery [NOTEBOOKS_DIR] [OUT_DIR] [--only 01 02 ...] [--timeout S]``
(default ``notebooks`` -> ``gallery``). Needs nbclient and nbconvert (the ``lab`` extra).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
import time
from pathlib import Path

__all__ = [
    "as_lab_shows",
    "build_gallery",
    "main",
    "offline_exporter",
    "remote_references",
    "tex_to_html",
    "widget_snapshots",
]


def build_gallery(
    notebooks: str | os.PathLike = "notebooks",
    out: str | os.PathLike = "gallery",
    *,
    only: list[str] | None = None,
    timeout: int = 900,
    kernel_name: str = "python3",
) -> list[dict]:
    """Execute each ``NN_*.ipynb`` under ``notebooks`` (quick mode) and write ``out/NN_*.html`` and
    ``out/index.html``. Returns one record per notebook: name, seconds, ok, error (the first line)."""
    import nbformat  # noqa: PLC0415 - the gallery's tools (nbformat, nbclient, nbconvert): loaded when it is built
    from nbclient import NotebookClient  # noqa: PLC0415 - the gallery's tools (nbformat, nbclient, nbconvert): loaded when it is built
    from nbclient.exceptions import CellExecutionError  # noqa: PLC0415 - the gallery's tools (nbformat, nbclient, nbconvert): loaded when it is built

    src, out = Path(notebooks), Path(out)
    paths = sorted(src.glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
    if not paths:
        raise FileNotFoundError(f"no notebooks NN_*.ipynb in {src}" + (f" matching {only}" if only else ""))
    out.mkdir(parents=True, exist_ok=True)
    os.environ["KWLAB_QUICK"] = "1"
    os.environ.setdefault("KWLAB_RUNS", str((out / "runs").resolve()))
    exporter = offline_exporter()
    records = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name=kernel_name,
            store_widget_state=True,
            resources={"metadata": {"path": str(src.resolve())}},
        )
        print(f"{path.name} ...", flush=True)
        start = time.perf_counter()
        error = ""
        try:
            client.execute()
        except CellExecutionError as err:
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # no terminal colours in the index
            error = text.splitlines()[-1] if text else type(err).__name__
        seconds = time.perf_counter() - start
        as_lab_shows(nb)
        widget_snapshots(nb)
        body, _ = exporter.from_notebook_node(nb)
        if remote := remote_references(body):  # a template or an output that would reach the network
            print(f"{path.name}: warning: the page loads {', '.join(sorted(set(remote)))}", flush=True)
        (out / path.with_suffix(".html").name).write_text(body, encoding="utf-8")
        records.append(dict(name=path.stem, seconds=round(seconds, 1), ok=not error, error=error))
        print(f"{path.name}: {'ok' if not error else 'FAILED: ' + error} ({seconds:.0f} s)", flush=True)
    _write_index(out, records)
    return records


_BACKSPACE = re.compile(r"[^\n]\x08")
_OVERWRITTEN = re.compile(r"[^\n]*\r(?=[^\n])")  # a line's text before a carriage return that rewrites it


def as_lab_shows(nb) -> None:
    """Stream outputs as JupyterLab shows them (in place): consecutive outputs of one stream (stdout,
    stderr) become one, and text that a carriage return or a backspace rewrites is removed, so a progress
    bar keeps its last line. A kernel sends each update separately; an executed notebook would otherwise
    list every update of every bar."""
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.get("outputs"):
            continue
        merged = []
        for out in cell.outputs:
            last = merged[-1] if merged else None
            if (
                out.get("output_type") == "stream"
                and last is not None
                and last.get("output_type") == "stream"
                and last.get("name") == out.get("name")
            ):
                last["text"] += out["text"]
            else:
                merged.append(out)
        for out in merged:
            if out.get("output_type") != "stream":
                continue
            text = out["text"]
            while (shorter := _BACKSPACE.sub("", text)) != text:  # "ab\b\b" -> "a\b" -> ""
                text = shorter
            out["text"] = _OVERWRITTEN.sub("", text.replace("\r\n", "\n"))
        cell.outputs = [o for o in merged if o.get("output_type") != "stream" or o["text"].strip()]


# ------------------------------------------------------------------------------------------ offline pages
# The lab template with every block that loads a script from a CDN left empty: require.js and the widget
# manager (widgets are static snapshots, see widget_snapshots), MathJax (maths is MathML) and mermaid.
_OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}
<style>.kw-tex{font-family:monospace} span.kw-tex.kw-display{display:block;text-align:center}</style>
{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def tex_to_html(tex: str, display: bool = False) -> str:
    """One formula as MathML (drawn by the browser, no script), with its TeX kept as an annotation. Without
    ``latex2mathml``, or for TeX it cannot read, the TeX source itself (``$...$``) in a monospace span."""
    try:
        from latex2mathml.converter import convert  # noqa: PLC0415 - optional (the "lab" extra)

        mathml = convert(tex, display="block" if display else "inline")
    except Exception:  # noqa: BLE001 - ImportError or a parse error: the TeX is the fallback either way
        marks = "$$" if display else "$"
        kind = "kw-tex kw-display" if display else "kw-tex"
        return f'<span class="{kind}">{html.escape(marks + tex + marks)}</span>'
    head, sep, rest = mathml.partition(">")
    head = re.sub(r'\s+xmlns="[^"]*"', "", head)  # HTML needs no namespace on <math>
    inner = rest[: rest.rfind("</math>")]
    note = f'<annotation encoding="application/x-tex">{html.escape(tex)}</annotation>'
    return f"{head}{sep}<semantics><mrow>{inner}</mrow>{note}</semantics></math>"


def offline_exporter():
    """nbconvert's HTML exporter (lab template) for pages that load nothing from the network: no MathJax,
    require.js, widget manager or mermaid script tags, and markdown maths written as MathML by
    :func:`tex_to_html`. Widget outputs need :func:`widget_snapshots` first."""
    from jinja2 import DictLoader, pass_context  # noqa: PLC0415 - the gallery's tools (nbformat, nbclient, nbconvert): loaded when it is built
    from nbconvert import HTMLExporter  # noqa: PLC0415 - the gallery's tools (nbformat, nbclient, nbconvert): loaded when it is built
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath  # noqa: PLC0415 - the gallery's tools (nbformat, nbclient, nbconvert): loaded when it is built

    class _Renderer(IPythonRenderer):
        def inline_math(self, body: str) -> str:
            return tex_to_html(body)

        def block_math(self, body: str) -> str:
            return tex_to_html(body, display=True)

        def latex_environment(self, name: str, body: str) -> str:
            return tex_to_html(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)

    class _OfflineExporter(HTMLExporter):
        @pass_context
        def markdown2html(self, context, source):
            cell = context.get("cell", {})
            renderer = _Renderer(
                escape=False,
                attachments=cell.get("attachments", {}),
                embed_images=self.embed_images,
                path=context.get("resources", {}).get("metadata", {}).get("path", ""),
                anchor_link_text=self.anchor_link_text,
                exclude_anchor_links=self.exclude_anchor_links,
                **self.lexer_options,
            )
            return MarkdownWithMath(renderer=renderer).render(source)

    return _OfflineExporter(
        template_name="lab",
        template_file="kwlab_offline.html.j2",
        extra_loaders=[DictLoader({"kwlab_offline.html.j2": _OFFLINE_TEMPLATE})],
    )


_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_MODEL_REF = "IPY_MODEL_"


def widget_snapshots(nb) -> int:
    """Replace every widget output by a static HTML snapshot of its saved state (``store_widget_state``):
    boxes lay out their children, a control shows its description and last value, an Output widget shows
    what it last displayed (figures included). A widget whose state was not saved keeps its text form. The
    notebook's widget state is then dropped: nothing on the page needs the widget manager. Returns how many
    outputs were replaced."""
    state = nb.metadata.get("widgets", {}).get(_WIDGET_STATE, {}).get("state", {})
    done = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = out.get("data", {})
            if _WIDGET_VIEW not in data:
                continue
            view = data.pop(_WIDGET_VIEW)
            model_id = view.get("model_id") if isinstance(view, dict) else None
            if model_id in state:
                note = '<p style="font-size:smaller;color:#666">(a snapshot: run the notebook to move it)</p>'
                data["text/html"] = f'<div class="kw-widget">{_widget_html(model_id, state, 0)}{note}</div>'
                data.pop("text/plain", None)
                done += 1
            elif not data:
                data["text/plain"] = "(a widget: run the notebook to see it)"
    nb.metadata.pop("widgets", None)
    return done


def _widget_html(model_id: str, state: dict, depth: int) -> str:
    model = state.get(model_id, {})
    name = model.get("model_name", "")
    s = model.get("state", {})
    if depth > 20:  # a cycle, which ipywidgets cannot make, or absurd nesting
        return ""
    if "children" in s:  # VBox, HBox, Box, GridBox, Accordion, Tab, ...
        direction = "row" if name.startswith("HBox") else "column"
        kids = "".join(
            _widget_html(ref[len(_MODEL_REF) :], state, depth + 1)
            for ref in s["children"]
            if isinstance(ref, str) and ref.startswith(_MODEL_REF)
        )
        flex = f"display:flex;flex-direction:{direction};gap:.5em 2em;flex-wrap:wrap"
        return f'<div style="{flex}">{kids}</div>'
    if name == "OutputModel":
        return "".join(_output_html(o) for o in s.get("outputs", []))
    if name.startswith(("HTML", "HTMLMath")):
        return f"<div>{s.get('value', '')}</div>"
    if name in ("LayoutModel", "DescriptionStyleModel", "SliderStyleModel") or name.endswith("StyleModel"):
        return ""
    if "_options_labels" in s and s.get("index") is not None:  # selection widgets
        idx = s["index"]
        picks = idx if isinstance(idx, list | tuple) else [idx]
        labels = s["_options_labels"]
        value = ", ".join(str(labels[i]) for i in picks if isinstance(i, int) and 0 <= i < len(labels))
    elif "value" in s:
        value = s["value"]
        value = " .. ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    else:
        value = ""
    label = s.get("description", "")
    if not label and not value:
        return ""
    text = f"<b>{html.escape(str(label))}</b> {html.escape(value)}" if label else html.escape(value)
    return f'<div style="border:1px solid #ccc;border-radius:3px;padding:.2em .6em">{text}</div>'


def _output_html(out: dict) -> str:
    kind = out.get("output_type")
    if kind == "stream":
        return f"<pre>{html.escape(str(out.get('text', '')))}</pre>"
    if kind == "error":
        trace = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(out.get("traceback", [])))
        return f"<pre>{html.escape(trace)}</pre>"
    data = out.get("data", {})
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            b64 = "".join(data[mime]) if isinstance(data[mime], list) else data[mime]
            return f'<img src="data:{mime};base64,{b64.strip()}" style="max-width:100%">'
    for mime in ("image/svg+xml", "text/html"):
        if mime in data:
            return "".join(data[mime]) if isinstance(data[mime], list) else data[mime]
    if "text/plain" in data:
        text = "".join(data["text/plain"]) if isinstance(data["text/plain"], list) else data["text/plain"]
        return f"<pre>{html.escape(text)}</pre>"
    return ""


# What a page would load from the network: the source of a script, stylesheet, image, frame or embed; a
# URL in an inline script (``import ... from "https://..."``) or a stylesheet's url()/@import. Links a
# reader clicks (<a href>) and names that are never fetched (XML namespaces, comments) are not loads.
_LOAD_ATTR = re.compile(
    r"<(?:script|link|img|iframe|embed|source|video|audio|object)\b[^>]*?\b(?:src|href|data)\s*=\s*"
    r"[\"']?((?:https?:)?//[^\"'\s>]+)",
    re.I,
)
_BLOCK = re.compile(r"<(script|style)\b([^>]*)>(.*?)</\1\s*>", re.I | re.S)
_URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\"'\s)<>]*")


def remote_references(page: str) -> list[str]:
    """The URLs an HTML page would fetch when opened (empty: the page works offline)."""
    found = _LOAD_ATTR.findall(page)
    for tag, attrs, body in _BLOCK.findall(page):
        if tag.lower() == "script" and re.search(r"type=[\"']?application/(?:vnd\.[^\"'\s>]*\+)?json", attrs):
            continue  # data, not code
        body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)  # comments (the lab CSS cites its sources)
        if tag.lower() == "script":
            body = re.sub(r"(?m)^\s*//.*$", "", body)
            found += [u for u in _URL.findall(body) if u.startswith(("http", "//"))]
        else:
            found += re.findall(r"(?:url\(|@import)\s*[\"']?((?:https?:)?//[^\"'\s)]+)", body)
    return found


def _write_index(out: Path, records: list[dict]) -> None:
    rows = "\n".join(
        f'<tr><td><a href="{html.escape(r["name"])}.html">{html.escape(r["name"])}</a></td>'
        f'<td style="text-align:right">{r["seconds"]:.0f} s</td>'
        f"<td>{'ran cleanly' if r['ok'] else 'error: ' + html.escape(r['error'])}</td></tr>"
        for r in records
    )
    when = time.strftime("%Y-%m-%d %H:%M")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kwlab notebooks (quick mode)</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:.3em 1em}}</style>
</head><body>
<h1>kwlab teaching notebooks, executed in quick mode</h1>
<p>Built {when} with <code>make gallery</code>. Quick mode runs small on a CPU: read the accuracies next to
chance, as each notebook does. Interactive widgets show their last state; run the notebook to move them.</p>
<table><tr><th>notebook</th><th>run time</th><th>status</th></tr>
{rows}
</table></body></html>
"""
    (out / "index.html").write_text(page, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kwlab.gallery", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="?", default="notebooks")
    parser.add_argument("out", nargs="?", default="gallery")
    parser.add_argument("--only", nargs="*", help="notebook number prefixes, e.g. 01 02")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    records = build_gallery(args.notebooks, args.out, only=args.only, timeout=args.timeout)
    failed = [r["name"] for r in records if not r["ok"]]
    clean = len(records) - len(failed)
    print(f"gallery: {Path(args.out) / 'index.html'} ({clean}/{len(records)} ran cleanly)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
