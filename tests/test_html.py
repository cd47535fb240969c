"""report/index.html, the report to read offline: report.md as one HTML page that loads nothing from the network, whose
figures and links resolve to the files beside it, read as HTML and in a real headless Chromium."""

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest
from test_report import row

from bench.report.html import PAGE, page

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
LOADS = ("src", "href", "srcset", "data", "poster")  # the attributes by which an element other than <a> loads a file


@pytest.fixture
def written(hand_report) -> Path:
    """The hand-made grid's report folder (conftest.py), with the lr sweep and the toy's figure."""
    return hand_report[0] / "report"


def test_the_sweep_and_the_toy_are_in_the_report_where_they_ran(written):
    md = (written / "report.md").read_text()
    assert "| variant | lr 1 |\n|---|---|\n| plain | diverged at step 3 |\n| plain_bn | 5.0 |" in md
    assert "![toy](toy/toy_shattering.png)" in md
    assert (written / "figures/lr_sweep.png").stat().st_size > 0
    assert (written / "toy/toy_shattering.png").stat().st_size > 0  # the toy stage's files stay in the report


class Elements(HTMLParser):
    """Every element of a page as (tag, attributes, its text, nested elements' text included), in the order they
    close; <tr> as (tr, {}, its cells' texts)."""

    def __init__(self, text: str):
        super().__init__()
        self.found, self.open, self.cells = [], [], []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            self.found.append((tag, dict(attrs), ""))
        else:
            self.open.append((tag, dict(attrs), []))

    def handle_data(self, data):
        for _, _, parts in self.open:
            parts.append(data)

    def handle_endtag(self, tag):
        while self.open:
            name, attrs, parts = self.open.pop()
            text = "".join(parts).strip()
            if name in ("td", "th"):
                self.cells.append(text)
            self.found.append(("tr", {}, self.cells) if name == "tr" else (name, attrs, text))
            if name == "tr":
                self.cells = []
            if name == tag:
                break

    def all(self, tag: str) -> list:
        return [(attrs, text) for name, attrs, text in self.found if name == tag]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_the_page_is_report_md_and_loads_only_the_files_beside_it(written):
    md, text = (written / "report.md").read_text(), (written / PAGE).read_text()
    page_ = Elements(text)
    assert [t for _, t in page_.all("title")] == [md.splitlines()[0].removeprefix("# ")]
    # the claims: every one of claims.json, each an item of the list under its heading
    assert "Claims" in [t for _, t in page_.all("h2")]
    items = [t for _, t in page_.all("li")]
    ids = [c["id"] for c in json.loads((written / "claims.json").read_text())["claims"]]
    assert ids and all(any(item.startswith(f"{i}: ") for item in items) for i in ids)
    # the error table, cell for cell as in report.md
    assert "Final test error (%)" in [t for _, t in page_.all("h2")]
    rows = [r for _, r in page_.all("tr")]
    head = next(line for line in md.splitlines() if line.startswith("| depth | plain | residual_bn |"))
    for line in (head, row(md, 20), row(md, 56), row(md, 110)):
        assert cells(line) in rows, line
    # every figure the report drew is shown, from the file beside the page
    shown = {attrs["src"] for attrs, _ in page_.all("img")}
    assert shown == {str(p.relative_to(written)) for p in written.rglob("*.png")}
    assert {"figures/convergence.png", "figures/lr_sweep.png", "toy/toy_shattering.png"} <= shown
    for src in shown:
        assert (written / src).resolve().is_file() and (written / src).resolve().is_relative_to(written.resolve())
    # every relative link resolves to a file beside the page (there are some: the foot links to report.md, ...)
    relative = [a["href"] for a, _ in page_.all("a") if not urlsplit(a["href"]).scheme]
    assert "report.md" in relative
    assert "claims.json" in relative
    ids_on_page = {attrs["id"] for _, attrs, _ in page_.found if "id" in attrs}
    for href in relative:
        path, _, fragment = href.partition("#")
        assert (written / path).is_file() if path else fragment in ids_on_page, href
    # nothing from the network, and nothing to run: no script, no stylesheet or font but the page's own <style>
    assert not page_.all("script")
    assert not page_.all("link")
    for tag, attrs, _ in page_.found:
        for key in LOADS if tag != "a" else ():
            assert not attrs.get(key, "").startswith(("http://", "https://", "//")), (tag, attrs)
    style = " ".join(t for _, t in page_.all("style"))
    assert "url(" not in style
    assert "@import" not in style
    assert text.isascii()  # ±, Δ, ... as character references: the page reads the same in any encoding


def test_the_page_of_a_small_document():
    text = page("# A < B ±\n\nIntro.\n\n| depth | plain |\n|---|---|\n| 20 | 1.0 ± 0.1 |\n")
    assert "<title>A &lt; B &#177;</title>" in text
    assert '<div class="table">\n<table>' in text  # wide tables scroll sideways
    assert "</table>\n</div>" in text
    assert "<td>1.0 &#177; 0.1</td>" in text
    assert "<footer>" not in text  # no files to link to
    assert 'href="claims.json"' in page("text", ["claims.json"])
    assert "<title>Report</title>" in page("no heading")


# --- in a real browser ---


def install_chromium() -> str | None:
    """None once chromedriver is here; else why it cannot be (Debian's chromium and chromium-driver, as root)."""
    if shutil.which("chromedriver"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "chromedriver is not installed, and installing chromium and chromium-driver needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode:
            return f"{' '.join(cmd)} failed: {r.stderr[-500:]}"
    return None if shutil.which("chromedriver") else "apt-get installed chromium-driver, but no chromedriver is on PATH"


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Selenium through Debian's chromedriver (given, so Selenium Manager downloads
    nothing)."""
    if why := install_chromium():
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def broken_images(driver) -> list[str]:
    """The src of each <img> the browser did not render (not complete, or no pixels)."""
    return driver.execute_script(
        "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'))"
    )


def dead_links(driver) -> list[str]:
    """The href of each relative <a> whose target, as the browser resolved it, is no file."""
    links = driver.execute_script("return [...document.links].map(a => [a.getAttribute('href'), a.href])")
    relative = [(raw, url) for raw, url in links if not urlsplit(raw).scheme]
    assert all(urlsplit(url).scheme == "file" for _, url in relative)
    return [raw for raw, url in relative if not Path(url2pathname(urlsplit(url).path)).is_file()]


def network_loads(driver) -> list[str]:
    """Every resource the page loaded that is not a file on disk."""
    names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [n for n in names if not n.startswith("file://")]


@pytest.mark.integration
def test_the_page_renders_offline_in_a_real_browser(browser, written):
    browser.get((written / PAGE).as_uri())
    md = (written / "report.md").read_text()
    assert browser.title == md.splitlines()[0].removeprefix("# ")
    images = browser.execute_script("return document.images.length")
    assert images == len(list(written.rglob("*.png"))) >= 10
    assert broken_images(browser) == []
    assert browser.execute_script("return [...document.links].length") >= 3
    assert dead_links(browser) == []
    assert network_loads(browser) == []
    from selenium.webdriver.common.by import By

    claims = browser.find_element(By.XPATH, "//h2[normalize-space()='Claims']/following-sibling::ul[1]")
    items = claims.find_elements(By.TAG_NAME, "li")
    assert claims.is_displayed() and items and all(li.is_displayed() for li in items)
    assert len(items) == len(json.loads((written / "claims.json").read_text())["claims"])
    # in a narrow window the wide tables scroll sideways in their own box, and the page does not
    browser.set_window_size(520, 900)
    wide, window = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert wide <= window
    boxes = browser.execute_script(
        "return [...document.querySelectorAll('.table')].map(d => d.scrollWidth - d.clientWidth)"
    )
    assert boxes and max(boxes) > 0


@pytest.mark.integration
def test_the_browser_checks_catch_a_missing_figure_a_dead_link_and_a_load_from_the_network(browser, written, tmp_path):
    copy = tmp_path / "report"
    shutil.copytree(written, copy)
    (copy / "figures/convergence.png").unlink()
    (copy / "claims.json").unlink()  # the page's foot links to it
    remote = "http://127.0.0.1:9/figure.png"  # the discard port: refused, online or not
    text = (copy / PAGE).read_text()
    (copy / PAGE).write_text(text.replace("</body>", f'<img alt="remote" src="{remote}">\n</body>'))
    browser.get((copy / PAGE).as_uri())
    assert broken_images(browser) == ["figures/convergence.png", remote]
    assert dead_links(browser) == ["claims.json"]
    assert network_loads(browser) == [remote]
