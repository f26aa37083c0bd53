"""The docs screenshot of ``python -m lit_propulse demo`` (docs/images/demo.png), taken in a real
headless Chromium driven by Selenium, the same way tests/test_demo.py tests the page (the browser
helpers below are the test's too).

    python benchmarks/demo_screenshot.py [--out docs/images/demo.png] [--face K] [-- demo options]

The demo runs in a subprocess on a free port with the given demo options. By default it uses the
packaged toy exports (lit_propulse/data/toy_gds_64.pt ...) when this install ships them, else
PULSE alone on the packaged toy StyleGAN2 (``--generator lit_propulse/data/toy_stylegan2_64.pt``).
The image uploaded is a toy *test* face (render index 50000 + K, never seen in training) at
256x256, taken as an HR face crop (the toy domain's framing), with PULSE and 4 samples.

Needs ``chromium`` and ``chromedriver`` (Debian: ``apt-get install chromium chromium-driver``) and
the [demo] extra (gradio, selenium). Playwright's browser download is not used.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------
# Browser helpers (also used by tests/test_demo.py).


def browser_binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) found on PATH, or None when either is absent."""
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_demo(demo_args: Sequence[str], log: Path, timeout: float = 600) -> Iterator[str]:
    """``python -m lit_propulse demo <demo_args>`` on a free local port, until the page answers;
    yields its URL and stops the process afterwards. Its output goes to ``log``."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    url = f"http://127.0.0.1:{port}/"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lit_propulse", "demo", *map(str, demo_args), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the demo exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the demo did not answer on {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def open_browser(width: int = 1400, height: int = 1100):
    """A headless Chromium under chromedriver (Selenium)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    found = browser_binaries()
    if found is None:
        raise RuntimeError("chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)")
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.binary_location = found[0]
    return webdriver.Chrome(service=Service(found[1]), options=options)


def _set_number(driver, elem_id: str, value: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def upload_and_run(
    driver,
    url: str,
    image: str | Path,
    mode: str = "auto",
    pulse: bool | None = None,
    samples: int | None = None,
    steps: int | None = None,
    timeout: float = 600,
) -> str:
    """Open the page, upload ``image``, pick ``mode`` ("auto", "photo", "hr"), set PULSE / samples /
    steps when given, press Upsample and wait until the results are shown; returns the status text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, timeout)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image input[type=file]"))
    driver.find_element(By.CSS_SELECTOR, "#input-image input[type=file]").send_keys(str(Path(image).resolve()))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))  # the upload is in
    driver.find_element(By.CSS_SELECTOR, f"#input-mode input[value={mode}]").click()
    box = driver.find_element(By.CSS_SELECTOR, "#use-pulse input[type=checkbox]")
    if pulse is not None and box.is_enabled() and box.is_selected() != pulse:
        box.click()
    if samples is not None:
        _set_number(driver, "samples", samples)
    if steps is not None:
        _set_number(driver, "steps", steps)
    driver.find_element(By.CSS_SELECTOR, "#run").click()
    want_pulse = box.is_selected()
    want_gallery = (samples or 1) > 1

    def done(d) -> bool:
        text = d.find_element(By.CSS_SELECTOR, "#status").text
        if any(word in text for word in ("Skipped", "Cannot use", "Upload a photo")):
            return True
        if "Taken as" not in text or not d.find_elements(By.CSS_SELECTOR, "#lr img"):
            return False
        if want_pulse and not d.find_elements(By.CSS_SELECTOR, "#pulse img"):
            return False
        if want_gallery and not d.find_elements(By.CSS_SELECTOR, "#gallery img"):
            return False
        return bool(d.find_elements(By.CSS_SELECTOR, "#download a"))

    wait.until(done)
    return driver.find_element(By.CSS_SELECTOR, "#status").text


def full_page_screenshot(driver, path: str | Path) -> None:
    """The whole page from its top, beyond the window's height (Chrome DevTools' captureScreenshot), as PNG."""
    import base64

    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(1)
    size = driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}}
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(base64.b64decode(shot["data"]))


# ----------------------------------------------------------------------------------------------
# The screenshot.


def default_demo_args() -> list[str]:
    """The packaged toy exports when shipped (the demo's own defaults), else PULSE on the packaged toy StyleGAN2."""
    data = ROOT / "lit_propulse" / "data"
    if (data / "toy_gds_64.pt").is_file() and ((data / "toy_ewplus_64.pt").is_file() or (data / "toy_ew_64.pt").is_file()):
        return []
    return ["--generator", str(data / "toy_stylegan2_64.pt")]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "demo.png"))
    ap.add_argument("--face", type=int, default=3, help="toy test face K (render index 50000 + K)")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("demo_args", nargs="*", help="options for the demo (after --), e.g. --checkpoint runs/toy")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from datamodules.toy_faces import render_toy_face

    demo_args = args.demo_args or default_demo_args()
    with tempfile.TemporaryDirectory() as tmp:
        face = Path(tmp) / f"toy_face_{50_000 + args.face}.png"
        Image.fromarray(render_toy_face(0, 50_000 + args.face, 256)[0]).save(face)
        with running_demo([*demo_args, "--cache-dir", str(Path(tmp) / "cache")], Path(tmp) / "demo.log") as url:
            driver = open_browser()
            try:
                status = upload_and_run(driver, url, face, mode="hr", pulse=True, samples=args.samples, steps=args.steps)
                full_page_screenshot(driver, args.out)
            finally:
                driver.quit()
    print(status)
    print(f"wrote {args.out} (demo {' '.join(demo_args) or '(packaged defaults)'})")


if __name__ == "__main__":
    main()
