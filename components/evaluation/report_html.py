"""The report's HTML pieces: escaping, tables, inline PNG plots, "not run" sections, and
reading an artifact's files."""
from __future__ import annotations

import base64
import html
import io
import os
from typing import Any, Dict, Sequence

import tensorflow as tf
from matplotlib.figure import Figure

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f")


def escape(value: Any) -> str:
    return html.escape(str(value))


def png_img(figure: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def not_run(title: str, why: str) -> str:
    return (f'<section class="missing"><h2>{escape(title)}</h2>'
            f'<p class="notrun">Not run: {escape(why)}</p></section>')


def read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def split_files(uri: str, file_name: str) -> Dict[str, str]:
    """split name -> path of `file_name` in the artifact's Split-* folders."""
    found = {}
    for folder in sorted(tf.io.gfile.listdir(uri)):
        folder = folder.rstrip("/")
        path = os.path.join(uri, folder, file_name)
        if folder.startswith("Split-") and tf.io.gfile.exists(path):
            found[folder[len("Split-"):]] = path
    return found
