"""``cnnvision serve`` in-process, over real HTTP: the page, predictions, and bad uploads."""
import asyncio
import io

import numpy as np
import pytest
from PIL import Image

aiohttp = pytest.importorskip("aiohttp")
from aiohttp.test_utils import TestServer  # noqa: E402

from cnnvision.apps.faces import FacePipeline  # noqa: E402
from cnnvision.apps.serve import make_app  # noqa: E402
from cnnvision.benchmark import demo_photos  # noqa: E402


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def serve_and(check, **limits):
    """Start the app on a free local port, run ``check(session, url)``, stop."""
    async def main():
        server = TestServer(make_app(FacePipeline.pretrained(), **limits))
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as session:
                return await check(session, str(server.make_url("/")))
        finally:
            await server.close()
    return asyncio.run(main())


async def post(session, url, data: bytes, name="image", query=""):
    form = aiohttp.FormData()
    form.add_field(name, data, filename="photo.png", content_type="image/png")
    async with session.post(url + "predict" + query, data=form) as reply:
        return reply.status, await reply.json()


def test_page_and_concurrent_predictions_agree_with_the_pipeline():
    photo = demo_photos(1, 640, 480, seed=2)[0]
    expected = [f.to_json() for f in FacePipeline.pretrained()(photo)]

    async def check(session, url):
        async with session.get(url) as reply:
            page = await reply.text()
        assert reply.status == 200 and "<input" in page and "predict" in page
        replies = await asyncio.gather(*[post(session, url, png(photo)) for _ in range(6)])
        status, data = await post(session, url, png(photo), query="?overlay=1")
        return replies, status, data
    replies, status, data = serve_and(check)
    for code, body in replies:
        assert code == 200 and body["width"] == 640 and body["faces"] == expected
    assert status == 200 and data["overlay"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("upload,field,status,message", [
    (b"", "image", 400, "empty"),
    (b"this is not an image", "image", 400, "cannot decode image"),
    (png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 200, 3), dtype=np.uint8)))[:1000],
     "image", 400, "cannot decode image"),
    (png(Image.new("RGB", (400, 300))), "image", 413, "is 120,000 pixels, over the limit of 100,000"),
    (b"x" * 300_000, "image", 413, "over the limit"),
    (png(Image.new("RGB", (10, 10))), "picture", 400, "no 'image' field"),
    (png(Image.new("RGB", (1, 1))), "image", 400, "too small to hold a face"),
], ids=["empty", "text", "truncated", "too-many-pixels", "too-large", "wrong-field", "1x1"])
def test_bad_uploads_get_a_clear_4xx_and_the_server_keeps_serving(upload, field, status, message):
    tiny = png(Image.fromarray(np.full((32, 32, 3), 128, np.uint8)))

    async def check(session, url):
        got = await post(session, url, upload, name=field)
        after = await post(session, url, tiny)
        return got, after
    (code, body), (after_code, after_body) = serve_and(check, max_pixels=100_000, max_upload=200_000)
    assert code == status and message in body["error"]
    assert after_code == 200 and after_body["faces"] == []
