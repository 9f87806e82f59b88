"""Drive Debian's headless Chromium at the status page, from inside a lab namespace.

Run as `ip netns exec <lan client> python3 browser.py URL` by the status page test; it
speaks one JSON line per command on stdout, reading commands on stdin:

    (start)                → {"states": {uplink: state}, "updates": n}   once the page shows uplinks
    wait UPLINK STATE      → {"states": ..., "updates": n, "reloaded": bool, "events": [...]}
    screenshot PATH        → {"path": PATH}
    quit

The page is loaded once; `reloaded` says whether it was navigated away from since (a
marker set on its window is gone), so "updates when one fails" means the live page did.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=900,1100",
)
STATES_JS = (
    "return Object.fromEntries([...document.querySelectorAll('.uplink')]"
    ".map(e => [e.dataset.uplink, e.dataset.state]))"
)


def say(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


def until(driver: webdriver.Chrome, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check(driver)
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def main() -> int:
    url = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="uplinkd-chromium-") as profile:
        options = Options()
        options.binary_location = "/usr/bin/chromium"
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        try:
            driver.set_page_load_timeout(30)
            driver.get(url)
            driver.execute_script("window.__loadedOnce = true;")
            states = until(driver, lambda d: d.execute_script(STATES_JS), 30)
            say({"states": states, "updates": driver.execute_script("return document.body.dataset.updates")})
            for line in sys.stdin:
                words = line.split()
                if not words or words[0] == "quit":
                    break
                if words[0] == "wait":
                    uplink, state = words[1], words[2]
                    until(driver, lambda d, u=uplink, s=state: d.execute_script(STATES_JS).get(u) == s, 40)
                    say(
                        {
                            "states": driver.execute_script(STATES_JS),
                            "updates": driver.execute_script("return Number(document.body.dataset.updates)"),
                            "reloaded": not driver.execute_script("return window.__loadedOnce === true"),
                            "events": driver.execute_script(
                                "return [...document.querySelectorAll('#events li')].map(e => e.textContent)"
                            ),
                            "text": driver.find_element("tag name", "body").text,
                        }
                    )
                elif words[0] == "screenshot":
                    driver.save_screenshot(words[1])
                    say({"path": words[1]})
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
