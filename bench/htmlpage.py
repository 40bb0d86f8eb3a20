"""Benchmark: the HTML report of a big run, made and then drawn by Debian's headless Chromium.

Reads a store built by bench/report.py (two runs of 1,000,000 events over 400 tests, every test with code
coverage; `--store` reuses it, or builds it there when missing) and prints, best of --repeat:
- making the page (`auditcov report --format html`: the models of both runs, the diff, the document, the file),
  its size, and its parts for one run: the model, the document from it, the file from the document;
- in Chromium (`file://`, a fresh profile): from navigation to the first view drawn, then each view the tests
  click (the tests list, a test, one of its files, the code tab, the sunburst zoomed to a level, the diff);
- baselines from the same run: Chromium loading a blank page, and `JSON.parse` of the page's document alone;
- the load average before and after.

    .venv/bin/python bench/htmlpage.py --store /tmp/report-bench.db [--run head] [--base base] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import build_store

from auditcov.merge.reports.formats import ReportOptions, render_report
from auditcov.merge.reports.html import render_page, run_data_document
from auditcov.merge.reports.queries import load_run_data
from auditcov.merge.store import open_store_readonly

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


#: The page marks its view drawn (`data-ready`); the bench clears the mark before it asks for another view.
UNREADY = "document.getElementById('view').removeAttribute('data-ready')"


def best(repeat: int, call) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="bench/report.py's store (built when missing)")
    parser.add_argument("--run", default="head")
    parser.add_argument("--base", default="base", help="the run the diff compares with ('' for none)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not args.store.exists():
        build_store(args.store, 1_000_000, 400, 118_652)
    db = open_store_readonly(args.store)
    options = ReportOptions(diff_base=args.base or None)
    page = b""

    def make() -> None:
        nonlocal page
        page = render_report(db, args.run, "html", options)

    print(f"make the page (report --format html{' --diff-base ' + args.base if args.base else ''}): "
          f"{best(args.repeat, make):.2f} s, {len(page) / 1e6:.1f} MB")  # fmt: skip
    # Its parts: the run's model (shared with the query API), then what html.py adds to it.
    data = None

    def model() -> None:
        nonlocal data
        data = load_run_data(db, args.run)

    print(f"  the run's model (queries.load_run_data, cold): {best(args.repeat, model):.2f} s")
    document = {}

    def build() -> None:
        nonlocal document
        document = run_data_document(data)

    print(f"  the page's document from the model (html.run_data_document): {best(args.repeat, build):.2f} s")
    print(f"  the page from the document (html.render_page): {best(args.repeat, lambda: render_page(document)):.2f} s")
    db.conn.close()
    folder = Path(tempfile.mkdtemp(prefix="auditcov-htmlbench-"))
    html = folder / "report.html"
    html.write_bytes(page)
    blank = folder / "blank.html"
    blank.write_text("<!DOCTYPE html><title>blank</title><p>blank")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(folder / "profile"), executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )  # fmt: skip
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))

        def load(url: str, ready: str) -> None:
            tab.goto(url)
            tab.wait_for_selector(ready)

        print(f"baseline: Chromium loads a blank page: {best(args.repeat, lambda: load(blank.as_uri(), 'p')):.2f} s")
        print(f"first view drawn: {best(args.repeat, lambda: load(html.as_uri(), '#view[data-ready]')):.2f} s")
        parse = tab.evaluate(
            """() => { const text = document.getElementById('auditcov-data').textContent;
                       const t = performance.now(); JSON.parse(text); return (performance.now() - t) / 1000; }"""
        )
        print(f"baseline: JSON.parse of the document alone: {parse:.2f} s")
        test_hash = tab.evaluate("document.querySelector('path.leaf') && 'test/1'")
        file_hash = tab.evaluate(
            "(() => { const d = JSON.parse(document.getElementById('auditcov-data').textContent);"
            " const code = d.code['1']; return code ? 'file/' + d.segments[code.segments[0]][0] + '/1' : 'code'; })()"
        )
        views = [("tests list", "tests"), ("one test", test_hash or "tests"), ("one of its files", file_hash),
                 ("code tab (every file)", "code"), ("sunburst zoomed to stable", "endpoints/stable")]  # fmt: skip
        if args.base:
            views.append(("diff", "diff"))
        for name, target in views:
            times = []
            for _ in range(args.repeat):
                # Start from another view (not timed), so that the hash changes and the view is drawn anew.
                here = tab.evaluate("location.hash")
                other = next(view for view in ("#tests", "#code", "#endpoints") if view not in (here, "#" + target))
                tab.evaluate(f"{UNREADY}; location.hash = {other!r}")
                tab.wait_for_selector("#view[data-ready]")
                tab.evaluate(UNREADY)
                started = time.perf_counter()
                tab.evaluate(f"location.hash = {target!r}")
                tab.wait_for_selector("#view[data-ready]")
                times.append(time.perf_counter() - started)
            print(f"view {name}: {min(times):.2f} s")
        context.close()
    if errors:
        raise SystemExit(f"page errors: {errors}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
