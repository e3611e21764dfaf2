"""The HTML logit lens: file naming and structure, then a real headless Chromium renders it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from vlmforge.analysis import create_logit_lens, logit_lens_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
REQUIRE_BROWSER = "VLMFORGE_REQUIRE_BROWSER"


class _Tokenizer:
    """Decodes id i to a fixed word; id 3 is markup that must not break the page."""

    words = ("alpha", "beta", " gamma", "</script><b>x", "delta", "eps", "zeta", "eta")

    def decode(self, ids: list[int]) -> str:
        return "".join(self.words[i] for i in ids)


def _toy_lens(layers: int = 3, seq: int = 4):
    torch.manual_seed(0)
    hidden = tuple(torch.randn(1, seq, 6) for _ in range(layers))
    head = nn.Linear(6, len(_Tokenizer.words), bias=False)
    return hidden, nn.Identity(), head, _Tokenizer()


class _Cells(HTMLParser):
    """Collects the table's header labels and its body cells (fails on a stray closing tag)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.head: list[str] = []
        self.titles: list[str] = []
        self.rows = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        self.stack.append(tag)
        if tag == "th" and "thead" in self.stack:
            self.head.append("")
        if tag == "td":
            self.titles.append(dict(attrs)["title"])
        self.rows += tag == "tr" and "tbody" in self.stack

    def handle_endtag(self, tag: str) -> None:
        assert tag in self.stack, f"unexpected </{tag}>"
        while self.stack.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "th" and "thead" in self.stack:
            self.head[-1] += data


def _write(tmp_path: Path, labels: list[str], **kwargs) -> Path:
    hidden, norm, head, tokenizer = _toy_lens()
    return create_logit_lens(
        hidden,
        norm,
        head,
        tokenizer,
        Image.new("RGB", (40, 20), "white"),
        labels,
        (40, 20),
        (1, 2),
        20,
        kwargs.pop("model_name", "toy"),
        "images/cat.photo.png",
        "Describe <it>.",
        save_folder=tmp_path / "out",
        **kwargs,
    )


@pytest.mark.parametrize(
    ("labels", "shown"),
    [
        (["a", "<IMG001>", "</script>x"], ["a", "<IMG001>", "</script>x", "<UNK>"]),
        (["a", "b", "c", "d", "e", "f"], ["a", "b", "c", "d"]),
    ],
)
def test_create_logit_lens_file_and_structure(tmp_path: Path, labels: list[str], shown: list[str]) -> None:
    path = _write(tmp_path, labels, misc_text="seed 0")
    assert path == tmp_path / "out" / "toy_cat.photo_logit_lens.html"
    page = path.read_text(encoding="utf-8")
    parser = _Cells()
    parser.feed(page)
    assert parser.head == ["layer", *shown]
    assert parser.rows == 3 and len(parser.titles) == 3 * 4
    # Each cell's tooltip lists its top 5, most probable first.
    for title in parser.titles:
        probabilities = [float(line.split()[0]) for line in title.splitlines()]
        assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
    assert "Describe &lt;it&gt;." in page and "seed 0" in page
    # Tokens and labels cannot end the data script early: exactly the page's two script elements close.
    assert page.count("</script>") == 2
    payload = re.search(r'<script type="application/json" id="lens-data">(.*?)</script>', page, re.S)
    data = json.loads(payload.group(1))
    assert data["labels"] == shown
    assert data["patch_of_position"] == ({"1": 0} if "<IMG001>" in shown else {})


def test_model_name_with_a_slash_stays_in_the_folder(tmp_path: Path) -> None:
    path = _write(tmp_path, ["a"], model_name="org/model")
    assert path.name == "org_model_cat.photo_logit_lens.html" and path.parent == tmp_path / "out"


# ------------------------------------------------------------------------------ real browser
def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    message = (
        "NO HEADLESS CHROMIUM ON PATH: the HTML logit lens is NOT rendered in a real browser. Install it "
        f"(Debian/Ubuntu: `apt-get install -y chromium`); set {REQUIRE_BROWSER}=1 to make this a failure."
    )
    if os.environ.get(REQUIRE_BROWSER, "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{REQUIRE_BROWSER} is set but there is no Chromium on PATH ({', '.join(BROWSERS)})")
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def _runs(flags: np.ndarray, minimum: int = 4) -> list[tuple[int, int]]:
    """Contiguous ``True`` stretches of at least ``minimum`` pixels, as (start, end)."""
    runs, start = [], None
    for i, flag in enumerate([*flags.tolist(), False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start >= minimum:
                runs.append((start, i))
            start = None
    return runs


def test_logit_lens_page_renders_in_headless_chromium(tmp_path: Path, tiny) -> None:
    """Screenshot a real tiny model's page: image shown, JS grid drawn over it, a table row per layer."""
    browser = _browser()
    vlm = tiny("qwen2_5_vl")
    image = Image.new("RGB", (96, 64), (0, 170, 0))
    ImageDraw.Draw(image).rectangle((48, 0, 95, 63), fill=(30, 60, 220))
    inputs = vlm.prepare_messages("What is in the image?", image)
    page = logit_lens_report(vlm, inputs, image, prompt="What is in the image?", save_folder=tmp_path)
    shot = tmp_path / "shot.png"
    result = _chromium(
        browser, tmp_path / "profile", "--hide-scrollbars", "--window-size=1280,800",
        f"--screenshot={shot}", page.resolve().as_uri(),
    )  # fmt: skip
    assert shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert pixels.std() > 20, "blank page"

    # The image (an embedded data URI) is there: green left half, blue right half, 84x56 shown 336 wide.
    # Matched to the drawn colours within 20 per channel: the table's probability heat colours are blues too.
    green = (abs(r - 0) < 20) & (abs(g - 170) < 20) & (abs(b - 0) < 20)
    blue = (abs(r - 30) < 20) & (abs(g - 60) < 20) & (abs(b - 220) < 20)
    assert green.sum() > 5000 and blue.sum() > 5000, "the image did not render"
    ys, xs = np.nonzero(green | blue)
    left, top, right, bottom = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    assert abs((right - left) - 336) <= 4 and abs((bottom - top) - 224) <= 4, (left, top, right, bottom)
    assert np.nonzero(green)[1].mean() < np.nonzero(blue)[1].mean()

    # The script drew the 2x3 patch grid in red on the canvas over it (cells of 112 CSS px).
    red = (r > 200) & (g < 60) & (b < 60)
    for k in (1, 2):
        column = red[top + 4 : bottom - 4, left + 112 * k - 2 : left + 112 * k + 2].any(axis=1)
        assert column.mean() > 0.95, f"vertical grid line {k} missing: the page script did not run"
    assert red[top + 110 : top + 115, left + 4 : right - 4].any(axis=0).mean() > 0.95
    assert not red[top + 20 : top + 90, left + 20 : left + 90].any(), "red inside a cell"

    # The table: the light "layer" column has one cell per hidden state plus the header.
    layer_cell = (r == 234) & (g == 238) & (b == 242)
    right_part = layer_cell[:, right + 8 :]
    x = int(right_part.sum(axis=0).argmax())
    cells = _runs(right_part[:, x])
    assert len(cells) == vlm.lm_num_layers + 2, cells

    # The page's script ran to its end without an error (it marks the body last).
    dom = _chromium(browser, tmp_path / "profile", "--dump-dom", page.resolve().as_uri()).stdout
    assert 'data-ready="1"' in dom
    assert dom.count("<td ") == (vlm.lm_num_layers + 1) * inputs["input_ids"].shape[1]
