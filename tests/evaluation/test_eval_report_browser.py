"""The evaluation reports opened in headless Chromium: the DOM a browser builds has the charts and the
gallery as PNG data URIs, the scoring mode and the format-failure count; a screenshot shows the chart.

Needs Chromium (`.ci/run` installs it); skips, saying so, where it is absent.
"""

import base64
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from sifthinker.config.run_config import RunConfig
from sifthinker.evaluation import FakeOracleGenerator, evaluate

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
PNG = b"\x89PNG\r\n\x1a\n"
BAR = (76, 114, 176)  # the chart's category bar colour, #4c72b0


def chromium(tmp_path: Path, *args: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


class Dom(HTMLParser):
    """The elements the test looks at, from Chromium's serialised DOM."""

    def __init__(self, text: str):
        super().__init__()
        self.imgs: list[dict] = []
        self.links: list[str] = []
        self.texts: dict[str, list[str]] = {}
        self._open: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if tag == "a":
            self.links.append(a.get("href", ""))
        cls = a.get("class") or ""
        self._open = cls if cls in ("scoring", "format-failures", "skipped") else None

    def handle_data(self, data):
        if self._open:
            self.texts.setdefault(self._open, []).append(data)
            self._open = None


def png(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    data = base64.b64decode(src[len(prefix):], validate=True)
    assert data.startswith(PNG)
    return data


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    from sifthinker.data.build import build_dataset

    root = tmp_path_factory.mktemp("browser")
    cfg = RunConfig(work_dir=str(root / "work"))
    cfg.data.num_eval = 8
    cfg.depth.provider = "fake-gradient"
    cfg.eval.num_render = 3
    build_dataset(cfg, "eval", root / "data", progress=False)
    res = evaluate(cfg, None, root / "data", root / "out", generate_fn=FakeOracleGenerator("no_answer", every=4),
                   track=False)
    return res


def test_the_benchmark_report_in_a_browser(reports, tmp_path):
    run = reports.runs["sif-bench"]
    dom = Dom(chromium(tmp_path, "--dump-dom", run.report_html.as_uri()))
    charts = [i for i in dom.imgs if i.get("class") == "chart"]
    gallery = [i for i in dom.imgs if i.get("class") == "trace"]
    assert len(charts) == 1 and png(charts[0]["src"]) == run.chart.read_bytes()
    assert len(gallery) == 3 and [png(i["src"]) for i in gallery] == [p.read_bytes() for p in run.renders]
    assert "95% Wilson intervals" in charts[0]["alt"]
    assert dom.texts["scoring"] == ["strict"]
    assert dom.texts["format-failures"] == ["2"]  # items 0 and 4 of 8 lost their <answer>
    assert run.metrics["format_failures"] == 2


def test_the_index_report_embeds_every_benchmark_and_shows_the_chart(reports, tmp_path):
    dom = Dom(chromium(tmp_path, "--dump-dom", reports.report_html.as_uri()))
    assert "sif-bench/report.html" in dom.links
    assert [i.get("class") for i in dom.imgs] == ["chart", "trace", "trace", "trace"]
    assert all(png(i["src"]) for i in dom.imgs)
    assert dom.texts["scoring"] == ["strict"] and dom.texts["format-failures"] == ["2"]
    # the browser decodes and draws the embedded chart: its bar colour is on the screenshot
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1400", reports.report_html.as_uri())
    pixels = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    colours = {c for _, c in pixels.getcolors(maxcolors=1 << 20)}
    assert BAR in colours
