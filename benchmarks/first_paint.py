"""First paint of the gallery for a run with many steps, in a real browser.

Starts the real `tensorboard` on a log directory (127.0.0.1, a free port), waits until
every step is listed, then opens the Batch Images tab in headless Chromium (Playwright;
`CHROMIUM=/path` or Debian's `chromium`) `--repeats` times, each in a fresh page, and
measures from `page.goto` to the latest step's tiles in the iframe with every image
decoded ("first paint"), and to the step slider spanning every step ("all steps
listed"). It records the page's `/steps` requests; TensorBoard's own page loads first,
so it also reports first paint counted from the gallery's first `/steps` request. Then, for comparison, the time the
frontend before paging waited for before it painted anything: every step's summary,
`/steps?limit=10000` page after page (records read cold).

    .venv/bin/python -m benchmarks.make_logdir /tmp/paint/s100000 --runs 1 --steps 100000 --images 4 --image-size 16 --fast
    CHROMIUM=/usr/bin/chromium .venv/bin/python -m benchmarks.first_paint /tmp/paint/s100000 --steps 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import urllib.parse
import urllib.request

from benchmarks.plugin_latency import start_tensorboard

ROUTE = "/data/plugin/batch_images"


def _get(base: str, route: str, **params) -> dict:
    url = (
        base + ROUTE + route + ("?" + urllib.parse.urlencode(params) if params else "")
    )
    with urllib.request.urlopen(url, timeout=600) as answer:
        return json.loads(answer.read())


def wait_listed(base: str, steps: int, timeout: float = 900) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            runs = _get(base, "/runs")["runs"]
            if sum(run["steps_kept"] for run in runs) >= steps:
                return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"tensorboard did not list {steps} steps in {timeout}s")


def paint_once(browser, base: str, steps: int) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests: list[tuple[float, str]] = []
    start = time.perf_counter()
    page.on(
        "request",
        lambda r: (
            requests.append((time.perf_counter() - start, r.url.split(ROUTE)[-1]))
            if "/steps" in r.url
            else None
        ),
    )
    page.goto(base + "/#batch_images")
    frame = page.wait_for_selector(
        "iframe[src*='plugin_entry.html?name=batch_images']", timeout=600_000
    ).content_frame()
    frame.wait_for_function(
        """() => {
            const main = document.querySelector('main[data-status=ready]');
            const images = [...document.querySelectorAll('.tile img')];
            return main && images.length && images.every((i) => i.complete && i.naturalWidth);
        }""",
        timeout=600_000,
        polling=10,
    )
    painted = time.perf_counter() - start
    frame.wait_for_function(
        f"() => document.querySelector('[data-control=scrubber]').max === '{steps - 1}'",
        timeout=600_000,
        polling=20,
    )
    listed = time.perf_counter() - start
    page.close()
    asked = requests[0][0] if requests else 0.0
    return {
        "first_paint_ms": round(painted * 1e3),
        # TensorBoard's own page (its script bundle, /runs of every plugin) comes first:
        # from the gallery's first /steps request to the painted tiles is the gallery.
        "paint_after_first_steps_request_ms": round((painted - asked) * 1e3),
        "all_steps_listed_ms": round(listed * 1e3),
        "steps_requests": [f"{t * 1e3:.0f} ms {url}" for t, url in requests],
    }


def old_listing(base: str, run: str, total: int) -> float:
    """What the frontend before paging waited for: every summary, 10,000 a page."""
    start = time.perf_counter()
    for offset in range(0, total, 10000):
        _get(base, "/steps", run=run, offset=offset, limit=10000)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, help="steps in the log directory")
    parser.add_argument("--load-fast", default="false", choices=("false", "true"))
    parser.add_argument("--skip-old", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    process, base = start_tensorboard(args.logdir, args.load_fast)
    result: dict = {"logdir": args.logdir, "load_fast": args.load_fast}
    try:
        time.sleep(3)
        # How many steps: the sum over runs, once TensorBoard has loaded them all
        # (make_logdir's status records say how many were written).
        expected = args.steps
        while expected is None:  # read while loading, steps_logged grows: pass --steps
            try:
                runs = _get(base, "/runs")["runs"]
                if runs and all(r["steps_logged"] for r in runs):
                    expected = sum(r["steps_logged"] for r in runs)
            except OSError:
                time.sleep(1)
        result["steps"] = expected
        result["listed_after_s"] = round(wait_listed(base, expected), 1)
        run = _get(base, "/runs")["runs"][0]["run"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
            )
            paints = []
            for _ in range(args.repeats):
                paints.append(paint_once(browser, base, expected))
                print(json.dumps(paints[-1]), file=sys.stderr, flush=True)
            browser.close()
        result["paints"] = paints
        result["first_paint_ms_first"] = paints[0]["first_paint_ms"]
        result["first_paint_ms_median"] = statistics.median(
            p["first_paint_ms"] for p in paints
        )
        result["paint_after_first_steps_request_ms_median"] = statistics.median(
            p["paint_after_first_steps_request_ms"] for p in paints
        )
        result["all_steps_listed_ms_median"] = statistics.median(
            p["all_steps_listed_ms"] for p in paints
        )
        if not args.skip_old:
            result["old_listing_s_cold"] = round(old_listing(base, run, expected), 2)
            result["old_listing_s_warm"] = round(old_listing(base, run, expected), 2)
        result["load_average"] = os.getloadavg()[0]
    finally:
        process.terminate()
        process.wait(30)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
