"""A person at a browser: Debian's Chromium, headless, driven through chromium-driver by selenium.

Run as a program inside the test server's private network namespace (so that Chromium, which may try to reach
Google's services at start, reaches nothing but loopback)::

    python tests/az/browser.py device|authorize URL USER PASSWORD SHOTS_DIR SPKI_SHA256 [CODE]

``device`` enters CODE on the device login page at URL, then signs in; ``authorize`` signs in on the authorization
page at URL and follows the redirect to the client's loopback address. A screenshot of every step goes to
SHOTS_DIR; the program prints a JSON object (``steps``: screenshot paths, ``final_url``, ``final_text``). The
server's certificate is trusted by its public key (``--ignore-certificate-errors-spki-list``), nothing else.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def browser(profile: str, spki: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--window-size=1000,900", f"--user-data-dir={profile}",
                f"--ignore-certificate-errors-spki-list={spki}"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def main(argv: list[str]) -> None:
    mode, url, user, password, shots, spki = argv[:6]
    code = argv[6] if len(argv) > 6 else ""
    out = Path(shots)
    out.mkdir(parents=True, exist_ok=True)
    steps: list[str] = []
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile, spki)
        try:
            wait = WebDriverWait(driver, 30)

            def shot(name: str) -> None:
                path = out / f"{len(steps) + 1:02d}-{name}.png"
                driver.save_screenshot(str(path))
                steps.append(str(path))

            driver.get(url)
            if mode == "device":
                wait.until(ec.presence_of_element_located((By.ID, "code")))
                shot("enter-code")
                driver.find_element(By.ID, "code").send_keys(code)
                driver.find_element(By.ID, "next").click()
            wait.until(ec.presence_of_element_located((By.ID, "password")))
            shot("sign-in")
            if password.startswith("wrong:"):  # first a wrong password, to see the page say so
                driver.find_element(By.ID, "username").clear()
                driver.find_element(By.ID, "username").send_keys(user)
                driver.find_element(By.ID, "password").send_keys(password.removeprefix("wrong:").split("|")[0])
                driver.find_element(By.ID, "submit").click()
                wait.until(ec.presence_of_element_located((By.ID, "error")))
                shot("wrong-password")
                password = password.split("|", 1)[1]
            driver.find_element(By.ID, "username").clear()
            driver.find_element(By.ID, "username").send_keys(user)
            driver.find_element(By.ID, "password").send_keys(password)
            driver.find_element(By.ID, "submit").click()
            if mode == "device":
                wait.until(ec.presence_of_element_located((By.ID, "done")))
            else:
                wait.until(lambda d: d.current_url.startswith("http://localhost"))
                wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
            shot("done")
            print(json.dumps({"steps": steps, "final_url": driver.current_url,
                              "final_text": driver.find_element(By.TAG_NAME, "body").text}))
        finally:
            driver.quit()


if __name__ == "__main__":
    main(sys.argv[1:])
