"""The HTML report in a real headless Chromium (Debian's package): it loads without a console
error and its plots are drawn (checked on a screenshot: matplotlib's first two line colours)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from promptcache.cli.main import app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TAB_BLUE, TAB_ORANGE = (31, 119, 180), (255, 127, 14)


def count_near(image: Image.Image, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    pixels = np.asarray(image, dtype=np.int16)
    return int((np.abs(pixels - np.array(colour, dtype=np.int16)) <= tolerance).all(axis=-1).sum())


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make system-deps installs it)")
def test_html_report_loads_and_shows_its_plots(tiny_llama_dir, tmp_path):
    system = "You answer questions about the bus timetable, briefly and politely. " * 5
    tools = [{"type": "function", "function": {"name": n, "description": n, "parameters": {}}} for n in ("x", "y")]
    lines = [{"model": "m", "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"Bus {i}?"}],
              **({"tools": tools if i % 3 else tools[::-1]} if i % 2 else {})} for i in range(24)]
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(line) + "\n" for line in lines) + "<script>alert(1)</script>\n")
    report = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["analyze", str(log), "--model", str(tiny_llama_dir), "--html", str(report),
                                      "--jobs", "1", "--replicas", "1,2", "--block-sizes", "16,32"])
    assert result.exit_code == 0, result.output
    html = report.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained, inert
    assert html.count('src="data:image/png;base64,') == 3
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
         "--v=0", "--window-size=1280,2200", f"--screenshot={shot}", report.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    problems = [line for line in run.stderr.splitlines()
                if "CONSOLE" in line or "Failed to load resource" in line or "Not allowed to load" in line]
    assert problems == []
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2200)
    # The curves plot's first line and the block-size bars are tab:blue, the second policy and
    # prefix routing tab:orange; a page whose images failed has neither colour anywhere.
    assert count_near(image, TAB_BLUE) > 3000
    assert count_near(image, TAB_ORANGE) > 300
