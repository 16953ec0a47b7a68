"""End to end in headless Chromium: an annotator rates with the keyboard, and a neuron page
shades its tokens in the order of their activations. ``.ci/run`` installs Debian's Chromium."""

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from servers import start_server, stop

from solulab.study.create import create_study

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium "
                                "(apt-get install chromium; .ci/run installs it)")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# SOLULAB_SCREENSHOTS=1 refreshes the README's screenshots in docs/.
DOCS = Path(__file__).resolve().parent.parent / "docs"
SCREENSHOTS = os.environ.get("SOLULAB_SCREENSHOTS") == "1"


@pytest.fixture
def server(collected_runs, tmp_path):
    study = create_study({"a": collected_runs / "gelu", "b": collected_runs / "solu_ln"},
                         tmp_path / "study.sqlite", 3, seed=0, annotators=["ann"])
    process, url = start_server("--study", str(study.path))
    yield url, study
    stop(process)


@pytest.fixture
def viewer(collected_runs):
    process, url = start_server("--runs", str(collected_runs))
    yield url
    stop(process)


@pytest.fixture
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def progress_says(page, text: str) -> None:
    playwright.expect(page.locator("#progress")).to_contain_text(text)


def status_says(page, text: str) -> None:
    playwright.expect(page.locator("#status")).to_have_text(text)


def test_annotator_rates_every_neuron_with_the_keyboard(server, browser):
    url, study = server
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{url}/study/{study.tokens['ann']}")
    page.wait_for_selector(".snippet .tok")
    keys = ["i", "n", "i", "n", "i", "i"]
    for n, key in enumerate(keys):
        progress_says(page, f"{n} rated")
        if key == "i":
            page.fill("#hypothesis", f"hypothesis {n}")
            page.locator("body").click(position={"x": 5, "y": 5})  # leave the text box
        page.keyboard.press(key)
    progress_says(page, "6 rated")
    page.wait_for_selector("#finishing:not([hidden])")  # every neuron rated: finish or revise
    if SCREENSHOTS:
        page.screenshot(path=str(DOCS / "annotator.png"), full_page=False)
    rows = sqlite3.connect(study.path).execute(
        "SELECT o.position, r.label, r.hypothesis, r.seconds FROM ratings r JOIN orders o ON "
        "o.item_id = r.item_id AND o.annotator = r.annotator ORDER BY o.position").fetchall()
    labels = ["interpretable" if k == "i" else "not_interpretable" for k in keys]
    assert [r[1] for r in rows] == labels
    assert [r[2] for r in rows] == [f"hypothesis {i}" if k == "i" else "" for i, k in
                                    enumerate(keys)]
    assert all(r[3] > 0 for r in rows)  # the server timed each neuron

    page.keyboard.press("ArrowLeft")  # go back and revise the fifth
    progress_says(page, "Neuron 5 of 6")
    page.keyboard.press("n")
    status_says(page, "saved neuron 5 (revision 2)")
    revised = sqlite3.connect(study.path).execute(
        "SELECT r.label, r.revision FROM ratings r JOIN orders o ON o.item_id = r.item_id "
        "WHERE o.position = 4").fetchone()
    assert revised == ("not_interpretable", 2)

    page.click("#finish")
    page.wait_for_selector("#checks:not([hidden]) .check")
    shaded = page.eval_on_selector_all(".check .tok", "els => els.filter(e => e.style.background)"
                                       ".length")
    assert shaded == 0  # strengths are not shown in the second part, on purpose
    assert page.is_hidden("#rating") and page.is_hidden("#done")
    page.keyboard.press("c")
    status_says(page, "saved example (consistent)")
    page.reload()  # after a reload, c and x go on from the first unlabelled example
    page.wait_for_selector("#checks:not([hidden]) .check[data-done]")
    first = page.eval_on_selector(".check", "e => e.dataset.id")
    total = page.eval_on_selector_all(".check", "els => els.length")
    for done in range(2, total + 1):
        page.keyboard.press("x")
        playwright.expect(page.locator(".check[data-done]")).to_have_count(done)
    page.wait_for_selector("#done:not([hidden])")
    labels = dict(sqlite3.connect(study.path).execute(
        "SELECT k.alias, l.consistent FROM check_labels l JOIN check_orders k ON "
        "k.check_id = l.check_id AND k.annotator = l.annotator"))
    assert len(labels) == total and labels[first] == 1
    assert sorted(labels.values()) == [0] * (total - 1) + [1]


def test_neuron_page_shades_tokens_in_the_order_of_their_activations(viewer, browser):
    url = viewer
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{url}/neuron?run=solu_ln&layer=0&neuron=7")
    pairs = page.eval_on_selector_all(
        "#top .tok", "els => els.map(e => [parseFloat(e.dataset.act), "
        "getComputedStyle(e).backgroundColor])")
    alphas = []
    for act, colour in pairs:
        parts = colour.replace("rgba(", "").replace("rgb(", "").rstrip(")").split(",")
        alphas.append((act, float(parts[3]) if len(parts) == 4 else 1.0))
    positive = sorted((a for a in alphas if a[0] > 0), key=lambda a: a[0])
    assert len(positive) > 10
    shades = [alpha for _, alpha in positive]
    assert shades == sorted(shades)  # more activation, deeper red
    assert shades[-1] == pytest.approx(1.0, abs=0.01)
    if SCREENSHOTS:
        page.screenshot(path=str(DOCS / "viewer.png"), full_page=False)


def test_the_page_draws_bidi_controls_and_asks_for_a_hypothesis(server, browser):
    url, study = server
    conn = sqlite3.connect(study.path)
    first = conn.execute("SELECT item_id FROM orders WHERE position = 0").fetchone()[0]
    payload = json.loads(conn.execute("SELECT payload FROM items WHERE id = ?",
                                      (first,)).fetchone()[0])
    payload["snippets"][0]["tokens"][0] = "\u202eevil\u2066"  # would reverse what follows
    with conn:
        conn.execute("UPDATE items SET payload = ? WHERE id = ?", (json.dumps(payload), first))
    conn.close()
    page = browser.new_page()
    page.goto(f"{url}/study/{study.tokens['ann']}")
    page.wait_for_selector(".snippet .tok")
    text = page.inner_text("#snippets")
    assert "⟦U+202E⟧evil⟦U+2066⟧" in text and "\u202e" not in text and "\u2066" not in text
    assert "same amount of shading" in page.inner_text(".note")
    page.keyboard.press("i")  # INTERPRETABLE with no hypothesis: refused, nothing saved
    status_says(page, "An interpretable neuron needs its hypothesis: write the rule first.")
    assert sqlite3.connect(study.path).execute("SELECT COUNT(*) FROM ratings").fetchone() == (0,)


def test_the_run_page_sorts_filters_searches_and_pages(viewer, browser, collected_runs):
    """The neuron table: 64 neurons, 50 a page; sorting by max, a token search, paging."""
    from solulab.neurons.store import NeuronStore

    store = NeuronStore.open(collected_runs / "solu_ln" / "neurons")
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{viewer}/run?run=solu_ln")
    rows = page.locator("table.neurons tbody tr")
    playwright.expect(rows).to_have_count(50)
    playwright.expect(page.locator("#status")).to_have_text("neurons 1-50 of 64")
    page.click("#next")
    playwright.expect(rows).to_have_count(14)
    page.click("th[data-sort=max]")  # a numeric column sorts descending first
    playwright.expect(page.locator("#status")).to_have_text("neurons 1-50 of 64")
    by_max = sorted(range(64), key=lambda n: -store.stats(0, n).max)
    neurons = page.eval_on_selector_all("table.neurons tbody tr td:nth-child(2)",
                                        "cells => cells.map(c => Number(c.textContent))")
    assert neurons == by_max[:50]
    assert page.get_attribute("table.neurons tbody tr td:nth-child(2) a", "href") == \
        f"/neuron?run=solu_ln&layer=0&neuron={by_max[0]}"
    fired = [e.tokens[e.fire_index].strip() for e in store.examples(0, by_max[0])]
    token = max(set(fired), key=fired.count)
    page.fill("input[name=token]", token)
    page.click("#filters button")
    playwright.expect(page.locator("#status")).not_to_have_text("neurons 1-50 of 64")
    listed = page.eval_on_selector_all("table.neurons tbody tr td:nth-child(2)",
                                       "cells => cells.map(c => Number(c.textContent))")
    assert listed[0] == by_max[0] and len(listed) < 64
    page.fill("input[name=min_firing]", "0.9")  # bounds the wrong way round: the reason
    page.fill("input[name=max_firing]", "0.1")
    page.click("#filters button")
    playwright.expect(page.locator("#status")).to_contain_text("cannot search: firing bounds")


def test_probes_show_your_text_on_the_run_and_neuron_pages(viewer, browser, collected_runs):
    from solulab.web.probe import Prober

    text = "for i in range(10):\n    print(i)"
    expected = Prober(collected_runs / "solu_ln").neuron(text, 0, 7, "mid")
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{viewer}/neuron?run=solu_ln&layer=0&neuron=7")
    page.fill("#neuron-probe textarea", text)
    page.click("#neuron-probe button")
    playwright.expect(page.locator("#probed .tok")).to_have_count(len(expected["tokens"]))
    shown = page.eval_on_selector_all("#probed .tok", "els => els.map(e => Number(e.dataset.act))")
    assert shown == pytest.approx(expected["acts"], abs=1e-4)
    page.goto(f"{viewer}/run?run=solu_ln")
    page.fill("#probe textarea", text)
    page.click("#probe button")
    playwright.expect(page.locator("#probed tr")).to_have_count(len(expected["tokens"]))
    first = page.get_attribute("#probed tr a", "href")
    assert first.startswith("/neuron?run=solu_ln&layer=0&neuron=")


def test_the_exported_site_searches_and_shows_neurons_from_file_urls(browser, collected_runs,
                                                                      tmp_path):
    from solulab.neurons.store import NeuronStore
    from solulab.web.site import export_site

    export_site([collected_runs / "solu_ln"], tmp_path / "site", progress=False)
    store = NeuronStore.open(collected_runs / "solu_ln" / "neurons")
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto((tmp_path / "site" / "index.html").as_uri())
    page.click("text=solu_ln")
    rows = page.locator("#neurons tbody tr")
    playwright.expect(rows).to_have_count(50)
    playwright.expect(page.locator("#status")).to_have_text("neurons 1-50 of 64")
    page.click("th[data-sort=max]")
    by_max = sorted(range(64), key=lambda n: -store.stats(0, n).max)
    neurons = page.eval_on_selector_all("#neurons tbody tr td:nth-child(2)",
                                        "cells => cells.map(c => Number(c.textContent))")
    assert neurons == by_max[:50]
    page.select_option("select[name=layer]", "0")
    page.fill("input[name=q]", "no explanation says this")
    page.click("#filters button")
    playwright.expect(page.locator("#status")).to_have_text("no neuron matches")
    page.goto((tmp_path / "site" / "solu_ln" / "neuron.html").as_uri() + "?layer=0&neuron=7")
    top = store.examples(0, 7)
    playwright.expect(page.locator("#top .example")).to_have_count(len(top[:10]))
    text = page.inner_text("#top .example >> nth=0")
    assert "".join(top[0].tokens).replace("\n", "").strip()[:10] in text.replace("\n", "")
    assert page.locator("#top .tok.fire").count() == len(top[:10])


def test_two_runs_side_by_side_answer_the_same_query(viewer, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(viewer)
    page.select_option("select[name=a]", "gelu")
    page.select_option("select[name=b]", "solu_ln")
    page.click("text=compare")
    playwright.expect(page.locator("table.neurons")).to_have_count(2)
    for status in ("#status0", "#status1"):
        playwright.expect(page.locator(status)).to_have_text("neurons 1-50 of 64")
    page.fill("input[name=min_firing]", "0.9")
    page.click("#filters button")
    for status in ("#status0", "#status1"):
        playwright.expect(page.locator(status)).to_have_text("no neuron matches")
    assert "not explained" in page.inner_text("table.fractions")
