"""Driving `possam app` in a real headless browser (Debian's `chromium` + `chromium-driver`, through selenium).

Used by tests/test_app.py, and runnable to take the README's screenshot of the demo serving a model:

    python tests/app_browser.py --model possam-demo/model --image scene.png --labels "ball|sphere,box,kite,sky,grass" \\
        --stuff "sky,grass" --click 40 60 --out docs/app_screenshot.png
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(model: str, port: int, timeout: float = 300.0) -> subprocess.Popen:
    """`python -m possam app --model MODEL --port PORT` on 127.0.0.1, returned once the page answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "possam", "app", "--model", model, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"possam app exited with status {process.returncode}:\n{process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                return process
        except OSError:
            time.sleep(1)
    process.terminate()
    raise RuntimeError(f"possam app did not answer on port {port} within {timeout:.0f} s")


def chromium_driver(width: int = 1400, height: int = 1100) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _text_of(driver, selector: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, selector).text


def use_demo(driver, url: str, image_path: str, labels: str, stuff: str, click: tuple[float, float], timeout=180) -> dict:
    """Uploads an image, types the classes, presses Segment, then clicks on the overlay at `click` (image pixels).

    Returns the page's segments table text, clicked-segments table text, status line and overlay image size.
    """
    wait = WebDriverWait(driver, timeout)
    driver.get(url)
    upload = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#possam-image input[type=file]")))
    upload.send_keys(image_path)
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#possam-image img")))
    driver.find_element(By.CSS_SELECTOR, "#possam-labels textarea").send_keys(labels)
    driver.find_element(By.CSS_SELECTOR, "#possam-stuff textarea").send_keys(stuff)
    driver.find_element(By.CSS_SELECTOR, "#possam-segment").click()
    wait.until(lambda d: "segments." in _text_of(d, "#possam-status"))
    overlay = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#possam-overlay img")))
    natural_width, natural_height = driver.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight];", overlay
    )
    # Selenium offsets are from the element's centre, in CSS pixels of the displayed (scaled) image.
    scale = overlay.size["width"] / natural_width
    ActionChains(driver).move_to_element_with_offset(
        overlay, (click[0] + 0.5) * scale - overlay.size["width"] / 2, (click[1] + 0.5) * scale - overlay.size["height"] / 2
    ).click().perform()
    wait.until(lambda d: "Click 1 at" in _text_of(d, "#possam-status"))
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#possam-click-overlay img")))
    return {
        "segments": _text_of(driver, "#possam-segments"),
        "clicks": _text_of(driver, "#possam-clicks"),
        "status": _text_of(driver, "#possam-status"),
        "overlay_size": (natural_width, natural_height),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot of `possam app` serving a model, after a segment and a click.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--stuff", default="")
    parser.add_argument("--click", type=float, nargs=2, required=True, metavar=("X", "Y"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    port = free_loopback_port()
    app = start_app(args.model, port)
    driver = chromium_driver()
    try:
        page = use_demo(driver, f"http://127.0.0.1:{port}/", args.image, args.labels, args.stuff, tuple(args.click))
        driver.save_screenshot(args.out)
        print(page["status"])
    finally:
        driver.quit()
        app.terminate()
        app.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
