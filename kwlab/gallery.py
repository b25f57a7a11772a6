"""``make gallery``: execute the teaching notebooks in quick mode and write each as an HTML page.

A teacher reads ``gallery/index.html`` before running anything: one page per notebook with its figures,
tables and printed text as quick mode produces them on this machine (widget state is stored, so the sliders
of notebook 02 show their last view), and the index lists each notebook's run time and whether it ran
cleanly. Printed text reads as JupyterLab shows it: consecutive prints of a stream are one block, and a
progress bar that rewrites its line (``\r``) shows its last state, not every update. The committed
notebooks are not changed (they stay stripped).

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

__all__ = ["as_lab_shows", "build_gallery", "main"]


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
    import nbformat  # noqa: PLC0415
    from nbclient import NotebookClient  # noqa: PLC0415
    from nbclient.exceptions import CellExecutionError  # noqa: PLC0415
    from nbconvert import HTMLExporter  # noqa: PLC0415

    src, out = Path(notebooks), Path(out)
    paths = sorted(src.glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
    if not paths:
        raise FileNotFoundError(f"no notebooks NN_*.ipynb in {src}" + (f" matching {only}" if only else ""))
    out.mkdir(parents=True, exist_ok=True)
    os.environ["KWLAB_QUICK"] = "1"
    os.environ.setdefault("KWLAB_RUNS", str((out / "runs").resolve()))
    exporter = HTMLExporter()
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
        body, _ = exporter.from_notebook_node(nb)
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
