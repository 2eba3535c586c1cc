"""``cnnvision serve``: the face pipeline behind a small local web server (aiohttp, the ``serve``
extra).

- ``GET /``: one page. Drop or choose photos; each comes back drawn with its faces, listed with
  their boxes and scores; the results download as JSON.
- ``POST /predict``: a multipart upload (field ``image``) -> ``{"width", "height", "faces": [...]}``,
  the faces as ``cnnvision predict`` writes them; ``?overlay=1`` adds the drawn photo as a PNG
  data URL.

Limits: uploads over ``max_upload`` bytes get 413; images over ``max_pixels`` are refused from
their header, before decoding (decompression bombs); a file that is not an image, or an image
under 16 px a side (too small to hold a face), gets 400. The
pipeline runs one request at a time in a worker thread; up to ``queue`` more wait their turn,
beyond that 503. A failure inside one request is that request's 500, never the server's end.
"""
import asyncio
import base64
import io
import json

from PIL import Image

from cnnvision.errors import InputError

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cnnvision: faces</title>
<style>
body { font: 15px system-ui, sans-serif; margin: 2em; color: #222; }
#drop { border: 2px dashed #888; border-radius: 8px; padding: 2em; text-align: center; }
#drop.over { background: #eef; }
.result { display: flex; gap: 1.5em; margin: 1.5em 0; align-items: flex-start; }
.result img { max-width: 640px; max-height: 480px; border: 1px solid #ccc; }
.error { color: #b00; }
</style></head>
<body>
<h1>Faces in photos</h1>
<div id="drop">Drop photos here, or <input id="files" type="file" accept="image/*" multiple></div>
<p><a id="download" href="#" download="faces.json" hidden>Download the results as JSON</a></p>
<div id="results"></div>
<script>
const results = {};
const list = document.getElementById("results");
const link = document.getElementById("download");
async function send(file) {
  const row = document.createElement("div");
  row.className = "result";
  row.textContent = file.name + ": working...";
  list.prepend(row);
  const form = new FormData();
  form.append("image", file);
  try {
    const reply = await fetch("predict?overlay=1", {method: "POST", body: form});
    const data = await reply.json();
    if (!reply.ok) throw new Error(data.error || reply.statusText);
    row.textContent = "";
    const img = document.createElement("img");
    img.src = data.overlay; img.alt = file.name;
    const text = document.createElement("div");
    const title = document.createElement("h3");
    title.textContent = file.name + ": " + data.faces.length + (data.faces.length === 1 ? " face" : " faces");
    text.append(title);
    const items = document.createElement("ol");
    for (const f of data.faces) {
      const li = document.createElement("li");
      li.textContent = "box " + f.box.map(v => v.toFixed(0)).join(", ") + "; score " + f.score.toFixed(3);
      items.append(li);
    }
    text.append(items);
    row.append(img, text);
    delete data.overlay;
    results[file.name] = data.faces;
    link.href = URL.createObjectURL(new Blob([JSON.stringify(results, null, 2)], {type: "application/json"}));
    link.hidden = false;
  } catch (e) {
    row.className = "result error";
    row.textContent = file.name + ": " + e.message;
  }
}
const drop = document.getElementById("drop");
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over");
  for (const f of e.dataTransfer.files) send(f); });
document.getElementById("files").addEventListener("change", e => { for (const f of e.target.files) send(f); });
</script>
</body></html>
"""


MIN_SIDE = 16  # the detector's smallest face is about this size; a smaller image cannot hold one


def decode(data: bytes, max_pixels: int) -> Image.Image:
    """An uploaded file as an RGB image; InputError (a 4xx) for anything else."""
    if not data:
        raise InputError("the upload is empty")
    from cnnvision.images import decode as decode_image, open_pil
    image = decode_image(io.BytesIO(data), "the upload", max_pixels)
    if min(image.size) < MIN_SIDE:
        raise InputError(f"the image is {image.width}x{image.height}, too small to hold a face "
                         f"(at least {MIN_SIDE} px a side)")
    return open_pil(image, 3)


def make_app(pipeline, max_upload: int = 20 << 20, max_pixels: int = 40_000_000, queue: int = 32):
    """The aiohttp application around a FacePipeline."""
    from aiohttp import web

    from cnnvision.apps.faces import draw_faces
    from cnnvision.apps.predict import face_json

    turn = asyncio.Semaphore(1)
    waiting = 0

    def fail(status: int, message: str):
        return web.json_response({"error": message}, status=status)

    async def page(_request):
        return web.Response(text=PAGE, content_type="text/html")

    def run(photo: Image.Image, overlay: bool) -> dict:
        faces = pipeline(photo)
        result = {"width": photo.width, "height": photo.height, "faces": [face_json(f) for f in faces]}
        if overlay:
            buffer = io.BytesIO()
            draw_faces(photo, faces).save(buffer, "PNG")
            result["overlay"] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        return result

    async def predict(request):
        nonlocal waiting
        try:
            reader = await request.multipart()
            part = await reader.next()
            while part is not None and part.name != "image":
                part = await reader.next()
            if part is None:
                return fail(400, "no 'image' field in the multipart upload")
            data = await part.read(decode=False)
        except web.HTTPRequestEntityTooLarge:
            return fail(413, f"the upload is over the limit of {max_upload:,} bytes")
        except (ValueError, AssertionError, KeyError) as e:
            return fail(400, f"expected a multipart/form-data upload ({e.__class__.__name__})")
        try:
            photo = decode(bytes(data), max_pixels)
        except InputError as e:
            return fail(413 if "limit" in str(e) or "too large" in str(e) else 400, str(e))
        if waiting >= queue:
            return fail(503, "too many requests waiting; try again shortly")
        waiting += 1
        try:
            async with turn:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(None, run, photo, request.query.get("overlay") == "1")
        except Exception as e:  # one request's failure is not the server's end
            return fail(500, f"prediction failed ({e.__class__.__name__})")
        finally:
            waiting -= 1
        return web.json_response(result, dumps=json.dumps)

    app = web.Application(client_max_size=max_upload)
    app.router.add_get("/", page)
    app.router.add_post("/predict", predict)
    return app


def serve(pipeline, host: str = "127.0.0.1", port: int = 8000, **limits) -> None:
    try:
        from aiohttp import web
    except ImportError:
        raise InputError('serve needs the serve extra: pip install "cnnvision[serve]"') from None
    print(f"cnnvision serve: http://{host}:{port}/ (Ctrl-C to stop)")
    try:
        web.run_app(make_app(pipeline, **limits), host=host, port=port, print=None)
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
