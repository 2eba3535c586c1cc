"""``cnnvision serve`` under load, with bad uploads, and in a real headless browser.

1. Starts ``cnnvision serve`` on a free port (a separate process, as a user would).
2. Sends 200 photos (640x480) from 8 concurrent clients; reports requests lost, p50/p95 latency.
3. Sends 20 malformed uploads (not images, truncated, 1x1, 20000x20000, 0 bytes: 4 of each)
   and checks each gets a 4xx and that the server still answers afterwards.
4. Where Debian's Chromium is installed (``apt-get install chromium``), opens the page headless,
   chooses a photo through the file input (Chrome DevTools Protocol) and saves a screenshot of
   the result.

    python benchmarks/serve_check.py [--photos DIR] [--screenshot serve.png] [--json FILE]
"""
import argparse
import asyncio
import base64
import io
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
from PIL import Image

from cnnvision.apps.faces import resize_to
from cnnvision.benchmark import demo_photos


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


async def post(session, url: str, data: bytes):
    form = aiohttp.FormData()
    form.add_field("image", data, filename="upload", content_type="application/octet-stream")
    start = time.perf_counter()
    async with session.post(url + "predict", data=form) as reply:
        await reply.read()
        return reply.status, time.perf_counter() - start


async def load(url: str, photos: list[bytes], requests: int = 200, clients: int = 8) -> dict:
    queue = list(range(requests))
    results = []

    async def client():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            while queue:
                i = queue.pop()
                results.append(await post(session, url, photos[i % len(photos)]))
    start = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(clients)])
    wall = time.perf_counter() - start
    ok = [t for status, t in results if status == 200]
    return {"requests": requests, "clients": clients, "ok": len(ok), "lost": requests - len(ok),
            "p50_ms": round(1000 * float(np.percentile(ok, 50)), 1), "p95_ms": round(1000 * float(np.percentile(ok, 95)), 1),
            "requests_per_sec": round(len(ok) / wall, 2)}


def malformed() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    noise = png(Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)))
    huge = png(Image.new("1", (20000, 20000)))  # a 20000x20000 PNG of 50 KB
    kinds = [("not an image", b"hello, this is text " * 50), ("truncated", noise[:2000]),
             ("1x1", png(Image.new("RGB", (1, 1), (90, 90, 90)))), ("20000x20000", huge), ("0 bytes", b"")]
    return [(name, data) for name, data in kinds for _ in range(4)]


async def bad_uploads(url: str) -> dict:
    codes = {}
    async with aiohttp.ClientSession() as session:
        for name, data in malformed():
            status, _ = await post(session, url, data)
            codes.setdefault(name, []).append(status)
        alive, _ = await post(session, url, png(Image.new("RGB", (64, 64))))
    right = all(400 <= s < 500 for got in codes.values() for s in got)
    return {"statuses": codes, "all_as_expected": right, "still_serving": alive == 200}


async def screenshot(url: str, photo: Path, out: Path) -> str:
    """Open the page in headless Chromium, choose ``photo`` in its file input, wait for the
    result and save a screenshot; returns what happened."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        return "skipped: no chromium (apt-get install chromium)"
    port = free_port()
    profile = tempfile.mkdtemp()
    browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                                "--window-size=1280,900", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/json") as reply:
                        pages = [p for p in await reply.json() if p.get("type") == "page"]
                        if pages:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            async with session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                counter = 0

                async def call(method, **params):
                    nonlocal counter
                    counter += 1
                    await ws.send_json({"id": counter, "method": method, "params": params})
                    while True:
                        message = await ws.receive_json()
                        if message.get("id") == counter:
                            return message.get("result", {})
                await call("Page.enable")
                await call("Page.navigate", url=url)
                await asyncio.sleep(1.5)
                root = await call("DOM.getDocument")
                node = await call("DOM.querySelector", nodeId=root["root"]["nodeId"], selector="#files")
                await call("DOM.setFileInputFiles", files=[str(photo)], nodeId=node["nodeId"])
                for _ in range(100):  # until the overlay image has come back
                    done = await call("Runtime.evaluate", expression="document.querySelectorAll('.result img').length")
                    if done.get("result", {}).get("value"):
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(0.5)
                shot = await call("Page.captureScreenshot", format="png")
                out.write_bytes(base64.b64decode(shot["data"]))
                listed = await call("Runtime.evaluate", expression="document.querySelector('.result h3').textContent")
                return f"saved {out}: {listed.get('result', {}).get('value')}"
    finally:
        browser.terminate()
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", help="a folder of photos to send (default: drawn faces)")
    ap.add_argument("--screenshot", default="serve.png")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.photos:
        files = sorted(p for p in Path(a.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:20]
        images = [resize_to(Image.open(p).convert("RGB"), 640, 480) for p in files]
    else:
        images = demo_photos(8, 640, 480)
    photos = [jpeg(im) for im in images]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cnnvision", "serve", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        server.stdout.readline()  # the "listening" line
        for _ in range(300):  # until the port answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit(f"the server ended: {server.stdout.read()[-500:]}")
                time.sleep(0.1)
        result = {"load": asyncio.run(load(url, photos)), "bad_uploads": asyncio.run(bad_uploads(url))}
        with tempfile.TemporaryDirectory() as tmp:
            sample = Path(tmp) / "photo.jpg"
            sample.write_bytes(photos[0])
            result["browser"] = asyncio.run(screenshot(url, sample, Path(a.screenshot).resolve()))
        result["server_alive"] = server.poll() is None
    finally:
        server.terminate()
        server.wait()
    print(json.dumps(result, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
