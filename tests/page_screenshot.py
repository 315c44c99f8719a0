"""The README's screenshot of the page, taken in the real browser against a real server:

    .venv/bin/python -m tests.page_screenshot --model-base-path models --out docs/images/page.png \
        star.jpg circle.png notes.txt

(the README's: data/demo's star_00000.jpg, its circle_00000.jpg saved as PNG, and a text file).
Each image is dropped on the page as a user would pick it; the page is captured once every result
is in.
"""

import argparse
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from tests.app.servers import start_server, stop, wait_until_ready
from tests.browser import launch


def capture(url: str, files: list[Path], out: Path, viewport: dict[str, int]) -> None:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport=viewport)
        page.goto(url)
        expect(page.locator("#model-line")).to_contain_text("Serving")
        page.set_input_files("#files", [str(path) for path in files])
        finished = page.locator(".result[aria-busy=false]")
        expect(finished).to_have_count(len(files), timeout=60_000)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.page_screenshot", description="Screenshot the page."
    )
    parser.add_argument("files", nargs="+", type=Path, help="files to classify on the page, in order")
    parser.add_argument("--model-base-path", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=Path("docs/images/page.png"))
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(args.model_base_path.resolve(), Path(folder) / "server.log")
        try:
            wait_until_ready(server)
            capture(server.url + "/", args.files, args.out, {"width": args.width, "height": args.height})
        finally:
            stop(server)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
