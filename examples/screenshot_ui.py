"""Screenshot a page of the Prefect UI with headless Chromium (for use by hand and in the README).

    .venv/bin/python -m examples.screenshot_ui                     # the server `make demo --keep` left running
    .venv/bin/python -m examples.screenshot_ui --url http://127.0.0.1:4200 --page /runs --out runs.png
    .venv/bin/python -m examples.screenshot_ui --sample            # a throwaway server with a few runs

Needs the Debian package ``chromium`` (``apt-get install -y chromium``). The browser runs with
no network besides the UI itself (no sync, no component updates) and a fresh profile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,900",
                  "--virtual-time-budget=15000")


def chromium() -> str:
    """Return the Chromium executable, or exit with how to install it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    sys.exit("Chromium not found: install it with `apt-get update && apt-get install -y chromium`")


def screenshot(url: str, out: Path, timeout_s: float = 120.0) -> Path:
    """Render ``url`` in headless Chromium and write a PNG to ``out``.

    Args:
        url: The page.
        out: PNG file to write.
        timeout_s: Seconds Chromium may take.

    Returns:
        ``out``.

    Raises:
        RuntimeError: Chromium failed or wrote no image.
    """
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        done = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}", url],
                              capture_output=True, text=True, timeout=timeout_s)
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"Chromium wrote no screenshot of {url} (exit {done.returncode}): {done.stderr[-2000:]}")
    return out


def kept_prefect_url() -> str | None:
    """Return the URL of the Prefect server a ``--keep`` demo left running, if one is recorded."""
    from blocks.settings import state_dir
    from deployments.processes import KEPT_FILE

    path = state_dir(create=False) / KEPT_FILE
    if not path.is_file():
        return None
    for record in json.loads(path.read_text()):
        if record["name"] == "Prefect server":
            return record["where"]
    return None


def sample_server(root: Path) -> object:
    """Start a throwaway Prefect server and run a few flows against it (one fails); return the server."""
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.processes import start_prefect_server

    server = start_prefect_server(root, ui=True)

    @flow(name="sample-training")
    def sample_training(fail: bool = False) -> str:
        from prefect import get_run_logger

        get_run_logger().info("trained a sample model")
        if fail:
            raise RuntimeError("sample failure")
        return "ok"

    with temporary_settings({PREFECT_API_URL: f"{server.url}/api"}):
        for fail in (False, False, True):
            sample_training(fail=fail, return_state=True)
    return server


def main() -> int:
    """Take the screenshot and print where it is."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="Prefect UI base URL (default: the demo's kept server)")
    parser.add_argument("--page", default="/runs", help="UI page, e.g. /runs, /deployments, /artifacts")
    parser.add_argument("--out", default="prefect-ui.png", help="PNG file to write")
    parser.add_argument("--sample", action="store_true", help="start a throwaway server with a few runs")
    args = parser.parse_args()

    server = None
    try:
        if args.sample:
            server = sample_server(Path(tempfile.mkdtemp(prefix="prefect-ui-sample-")))
            base = server.url  # type: ignore[attr-defined]
        else:
            base = args.url or os.environ.get("PREFECT_UI_URL") or kept_prefect_url()
            if not base:
                sys.exit("No Prefect UI URL: pass --url, or run `make demo` with --keep first, or use --sample")
        out = screenshot(base.rstrip("/") + args.page, Path(args.out))
        print(out)
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
