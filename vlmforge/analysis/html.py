"""A self-contained HTML logit-lens report: the image with its patch grid beside a layer x position table.

The page needs no network and no files besides itself: the image is embedded as a PNG data URI, each
cell's top-k predictions sit in its tooltip. The table is plain HTML (readable without JavaScript); a small
script draws the patch grid over the image and links table and image: hovering a cell shows its top-k
predictions, and hovering an image-token column highlights that token's patch.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from vlmforge.analysis.logit_lens import compute_logit_lens
from vlmforge.analysis.metadata import extract_metadata

#: Displayed width of the image panel (CSS pixels); small processed images are scaled up, pixelated.
IMAGE_PANEL_WIDTH = 336


def _pair(value: Any, name: str) -> tuple[int, int]:
    """``(a, b)`` from an int (square) or a pair."""
    if isinstance(value, int):
        return value, value
    try:
        first, second = (int(v) for v in value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from error
    return first, second


def fit_labels(token_labels: Sequence[str], length: int) -> list[str]:
    """``token_labels`` padded with ``"<UNK>"`` or truncated to ``length``."""
    labels = [str(label) for label in token_labels][:length]
    return labels + ["<UNK>"] * (length - len(labels))


def _png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _visible(token: str) -> str:
    """Whitespace made visible so an all-space prediction is not an empty cell."""
    return token.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u21e5") or "\u2205"


def _cell_color(probability: float) -> str:
    # White (p = 0) to saturated blue (p = 1): the hue stays put, so brightness reads as confidence.
    lightness = 97 - 52 * max(0.0, min(1.0, probability))
    return f"hsl(215, 85%, {lightness:.0f}%)"


_STYLE = """
body { margin: 0; font: 13px/1.35 "DejaVu Sans", Arial, sans-serif; color: #1d1d1f; background: #fff; }
header { padding: 10px 16px; background: #24292f; color: #fff; }
header h1 { margin: 0 0 4px; font-size: 17px; }
header p { margin: 0; color: #d0d7de; white-space: pre-wrap; }
main { display: flex; gap: 16px; padding: 12px 16px; align-items: flex-start; }
#image-panel { flex: 0 0 auto; width: __WIDTH__px; }
#image-wrap { position: relative; width: __WIDTH__px; line-height: 0; }
#image-wrap img { width: 100%; image-rendering: pixelated; display: block; }
#grid { position: absolute; left: 0; top: 0; width: 100%; height: 100%; }
#details { margin-top: 8px; min-height: 90px; font-family: "DejaVu Sans Mono", monospace; white-space: pre; }
#table-panel { flex: 1 1 auto; overflow: auto; max-height: calc(100vh - 90px); }
table.lens { border-collapse: collapse; font-family: "DejaVu Sans Mono", monospace; font-size: 11px; }
table.lens th, table.lens td {
  border: 1px solid #8c959f; padding: 2px 4px; text-align: center; white-space: nowrap;
}
table.lens thead th { position: sticky; top: 0; background: #24292f; color: #fff; }
table.lens th.layer { background: #eaeef2; color: #1d1d1f; position: sticky; left: 0; }
table.lens td small { display: block; color: #3d444d; }
table.lens .image-token { outline: 2px solid #ffb000; }
table.lens td.hover { outline: 2px solid #cf222e; }
"""

_SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById("lens-data").textContent);
  const img = document.getElementById("lens-image");
  const canvas = document.getElementById("grid");
  const details = document.getElementById("details");
  function draw(highlight) {
    const w = img.clientWidth, h = img.clientHeight;
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    const cw = w / data.grid_w, ch = h / data.grid_h;
    if (highlight !== null) {
      ctx.fillStyle = "rgba(255, 200, 0, 0.55)";
      const r = Math.floor(highlight / data.grid_w), c = highlight % data.grid_w;
      ctx.fillRect(c * cw, r * ch, cw, ch);
    }
    ctx.strokeStyle = "rgb(255, 0, 0)"; ctx.lineWidth = 2;
    ctx.beginPath();
    for (let c = 0; c <= data.grid_w; c++) {
      const x = Math.min(c * cw, w - 1); ctx.moveTo(x, 0); ctx.lineTo(x, h);
    }
    for (let r = 0; r <= data.grid_h; r++) {
      const y = Math.min(r * ch, h - 1); ctx.moveTo(0, y); ctx.lineTo(w, y);
    }
    ctx.stroke();
  }
  function show(cell) {
    const layer = +cell.dataset.layer, pos = +cell.dataset.pos;
    const where = "layer " + layer + ", position " + pos + " " + data.labels[pos];
    details.textContent = where + "\\n" + cell.title;
    const patch = data.patch_of_position[pos];
    draw(patch === undefined ? null : patch);
  }
  document.querySelectorAll("table.lens td").forEach(function (cell) {
    cell.addEventListener("mouseenter", function () { cell.classList.add("hover"); show(cell); });
    cell.addEventListener("mouseleave", function () { cell.classList.remove("hover"); draw(null); });
  });
  if (img.complete) { draw(null); } else { img.addEventListener("load", function () { draw(null); }); }
  window.addEventListener("resize", function () { draw(null); });
  document.body.dataset.ready = "1";
})();
"""


def render_logit_lens_html(
    top: list[list[list[tuple[str, str]]]],
    image: Image.Image,
    token_labels: Sequence[str],
    image_size: Any,
    grid_size: Any,
    patch_size: int,
    *,
    title: str,
    prompt: str,
    misc_text: str = "",
) -> str:
    """The HTML page for logit-lens predictions ``top`` (``[layer][position] -> [(token, "p"), ...]``).

    ``image`` is shown at ``image_size`` (an int for a square, or ``(w, h)``) with a ``grid_size``
    (int or ``(grid_h, grid_w)``) patch grid over it; image tokens are the labels ``<IMGnnn>``, whose
    number (1-based, row-major) names their patch.
    """
    width, height = _pair(image_size, "image_size")
    grid_h, grid_w = _pair(grid_size, "grid_size")
    seq = len(top[0]) if top else 0
    labels = fit_labels(token_labels, seq)
    shown = image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    patch_of_position: dict[int, int] = {}
    for position, label in enumerate(labels):
        if label.startswith("<IMG") and label.endswith(">") and label[4:-1].isdigit():
            patch = int(label[4:-1]) - 1
            if 0 <= patch < grid_h * grid_w:
                patch_of_position[position] = patch
    data = {
        "grid_h": grid_h,
        "grid_w": grid_w,
        "labels": labels,
        "patch_of_position": patch_of_position,
    }
    # "</" inside a script element would end it early: escape it in the JSON.
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    head_cells = "".join(
        f'<th class="{"image-token" if pos in patch_of_position else ""}" title="position {pos}">'
        f"{html.escape(_visible(label))}</th>"
        for pos, label in enumerate(labels)
    )
    body_rows = []
    for layer, positions in enumerate(top):
        cells = []
        for pos, predictions in enumerate(positions):
            token, probability = predictions[0]
            tooltip = "\n".join(f"{p}  {json.dumps(t, ensure_ascii=False)}" for t, p in predictions)
            color = _cell_color(float(probability))
            cells.append(
                f'<td data-layer="{layer}" data-pos="{pos}" style="background:{color}" '
                f'title="{html.escape(tooltip)}">{html.escape(_visible(token))}<small>{probability}</small></td>'
            )
        body_rows.append(f'<tr><th class="layer">L{layer}</th>{"".join(cells)}</tr>')
    subtitle = f"{width}x{height} px image, {grid_h}x{grid_w} patches of {patch_size} px"
    style = _STYLE.replace("__WIDTH__", str(IMAGE_PANEL_WIDTH))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{style}</style>
</head>
<body>
<header>
<h1>{html.escape(title)}</h1>
<p>{html.escape(prompt)}</p>
<p>{html.escape(subtitle)}{(" | " + html.escape(misc_text)) if misc_text else ""}</p>
</header>
<main>
<section id="image-panel">
<div id="image-wrap">
<img id="lens-image" alt="input image" src="{_png_data_uri(shown)}"><canvas id="grid"></canvas>
</div>
<div id="details">Hover a cell for its top predictions.</div>
</section>
<section id="table-panel">
<table class="lens">
<thead><tr><th class="layer">layer</th>{head_cells}</tr></thead>
<tbody>
{chr(10).join(body_rows)}
</tbody>
</table>
</section>
</main>
<script type="application/json" id="lens-data">{payload}</script>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def create_logit_lens(
    hidden_states: Sequence[torch.Tensor] | torch.Tensor,
    norm: nn.Module,
    lm_head: nn.Module,
    tokenizer: Any,
    image: Image.Image,
    token_labels: Sequence[str],
    image_size: Any,
    grid_size: Any,
    patch_size: int,
    model_name: str,
    image_filename: str,
    prompt: str,
    save_folder: str | Path = ".",
    misc_text: str = "",
    *,
    logit_mask: torch.Tensor | None = None,
) -> Path:
    """Compute the logit lens (top 5) and write it as ``{save_folder}/{model_name}_{stem}_logit_lens.html``.

    ``stem`` is ``image_filename`` without folders and extension; a ``/`` in ``model_name`` (a hub id)
    becomes ``_``. ``token_labels`` is padded with ``"<UNK>"`` or truncated to the sequence length.
    ``logit_mask``: token ids the model never predicts (``adapter.get_logit_mask()``). Returns the path
    written.
    """
    top = compute_logit_lens(hidden_states, norm, lm_head, tokenizer, top_k=5, logit_mask=logit_mask)
    page = render_logit_lens_html(
        top,
        image,
        token_labels,
        image_size,
        grid_size,
        patch_size,
        title=f"Logit lens: {model_name} on {image_filename}",
        prompt=prompt,
        misc_text=misc_text,
    )
    folder = Path(save_folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(image_filename).stem
    path = folder / f"{str(model_name).replace('/', '_')}_{stem}_logit_lens.html"
    path.write_text(page, encoding="utf-8")
    return path


def logit_lens_report(
    vlm: Any,
    inputs: Any,
    image: Image.Image,
    *,
    prompt: str,
    image_filename: str = "image.png",
    save_folder: str | Path = ".",
    misc_text: str = "",
) -> Path:
    """:func:`create_logit_lens` for one prepared input of ``vlm`` (a :class:`vlmforge.HookedVLM`).

    The geometry and token labels come from :func:`vlmforge.analysis.metadata.extract_metadata`, so the
    page shows the image as the model sees it (processed view) for any single-grid family.
    """
    metadata = extract_metadata(vlm, inputs, image)
    info = metadata["image_info"]
    output = vlm.forward(inputs, output_hidden_states=True)
    return create_logit_lens(
        # The residual stream the hooks show (the active one of parallel streams, spec.active_stream).
        [vlm.adapter.residual_view(states) for states in output.hidden_states],
        vlm.adapter.get_lm_norm(),
        vlm.adapter.get_lm_head(),
        vlm.prompt_processor.tokenizer,
        info.image,
        metadata["token_labels"],
        info.processed_size,
        (info.grid_h, info.grid_w),
        info.effective_patch_size,
        vlm.model_name,
        image_filename,
        prompt,
        save_folder=save_folder,
        misc_text=misc_text,
        logit_mask=vlm.adapter.get_logit_mask(),
    )
