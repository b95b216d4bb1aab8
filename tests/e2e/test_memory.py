"""Memory is bounded per request and in total: large images are refused from their header, decodes
take turns in one process-wide pixel budget, and an upload's images share a total pixel budget.

The RSS tests decode in a fresh Python process, so the peak they read (VmHWM) is that process's own.
Budgets asserted (Pillow keeps RGB at 4 bytes a pixel; 64 MP is 256 MB of RGB):
- one 64 MP PNG, built: under 330 MB (the RGB result plus a little; it was 490 MB with a full copy);
  as a query: refused from its header, under 40 MB;
- eight 64 MP PNGs on eight threads at once: under 400 MB (they take turns; it was 3.7 GB);
- a 1 MB zip of twenty 16 MP BMPs, read and decoded as the build pipeline does: under 720 MB, that is
  the 48 MB of each of the eight BMPs that fit the upload's 128 MP (384 MB, held by the pipeline's
  chunk) and two 16 MP decodes at up to 10 bytes a pixel (it was 1.2 GB: all twenty held and decoded).
"""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from search.errors import InvalidImageError
from tests.conftest import hostile_files, png_header_only

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")


def solid_png(width: int, height: int) -> bytes:
    """A real, fully decodable RGB PNG of one colour: a few hundred KB for 64 MP."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" + b"\x80\x40\x20" * width
    deflate = zlib.compressobj(9)
    idat = b"".join([deflate.compress(row) for _ in range(height)] + [deflate.flush()])
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bmp_24bit(width: int, height: int) -> bytes:
    row = b"\x1e\x3c\x5a" * width + b"\0" * (-3 * width % 4)
    header = b"BM" + struct.pack("<IHHI", 54 + len(row) * height, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(row) * height, 2835, 2835, 0, 0)
    return header + info + row * height


@pytest.fixture(scope="module")
def png_64mp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "64mp.png"
    path.write_bytes(solid_png(8000, 8000))
    assert path.stat().st_size < 300_000
    return path


def measure(body: str, *args: str) -> dict:
    """Run ``body`` in a fresh interpreter; it sets ``result``. Returns it with the peak RSS it added."""
    script = f"""
import json, sys, threading
sys.path.insert(0, {str(ROOT)!r})
args = sys.argv[1:]
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
from search.images.decode import decode_image, read_image
from search.sources.uploads import upload_items
from search.errors import InvalidImageError
base = status("VmRSS")
result = None
{body}
print(json.dumps({{"added": status("VmHWM") - base, "result": result}}))
"""
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_64mp_png_costs_its_rgb_and_no_more(png_64mp):
    built = measure("""
img = decode_image(open(args[0], "rb").read())
result = list(img.size)
""", str(png_64mp))
    assert built["added"] < 330 * MB, f"{built['added'] / MB:.0f} MB"
    assert built["result"] == [8000, 8000]


def test_a_64mp_query_is_refused_before_decoding(png_64mp):
    query = measure("""
try:
    read_image(open(args[0], "rb").read(), min_edges=(224, 256))
except InvalidImageError as exc:
    result = [exc.reason, exc.detail]
""", str(png_64mp))
    assert query["added"] < 40 * MB, f"{query['added'] / MB:.0f} MB"
    assert query["result"] and query["result"][0] == "too_large"
    assert "8000x8000" in query["result"][1] and "scale it down" in query["result"][1]


def test_eight_64mp_pngs_at_once_take_turns(png_64mp):
    eight = measure("""
data = open(args[0], "rb").read()
sizes = []
def work():
    img = decode_image(data)
    sizes.append(img.size)
    del img
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
result = len(sizes)
""", str(png_64mp))
    assert eight["added"] < 400 * MB, f"{eight['added'] / MB:.0f} MB"
    assert eight["result"] == 8  # all decoded, one after another: none refused, none left waiting (measure's timeout)


def test_a_zip_of_twenty_large_bmps_is_bounded(tmp_path):
    bmp = bmp_24bit(4000, 4000)  # 16 MP, 48 MB
    path = tmp_path / "bmps.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(20):
            archive.writestr(f"big/{i:02d}.bmp", bmp)
    del bmp
    assert path.stat().st_size < 1.5 * MB
    # As search/build.py does: read (and hold) a chunk of up to 32 items on two threads, then decode
    # them on two threads at the embedder's min_edges.
    zipped = measure("""
from concurrent.futures import ThreadPoolExecutor
def read(item):
    try:
        return item.read()
    except InvalidImageError as exc:
        return exc
def decode(data):
    if isinstance(data, InvalidImageError):
        return data.reason
    try:
        img = decode_image(data, min_edges=(224, 256))
        small = img.resize((224, 224))
        del img
        return "ok"
    except InvalidImageError as exc:
        return exc.reason
items = list(upload_items([args[0]]))
with ThreadPoolExecutor(2) as pool:
    chunk = list(pool.map(read, items))
    result = sorted(pool.map(decode, chunk))
    details = {str(d) for d in chunk if isinstance(d, InvalidImageError)}
    result = [result, sorted(details)]
""", str(path))
    assert zipped["added"] < 720 * MB, f"{zipped['added'] / MB:.0f} MB"
    outcomes, details = zipped["result"]
    assert len(outcomes) == 20
    assert outcomes.count("ok") == 8 and outcomes.count("too_large") == 12
    assert details and all("another upload" in d for d in details)


# -- the pieces, without measuring -------------------------------------------------------------


def test_budget_waits_for_room_and_serves_in_order():
    from search.images.decode import PixelBudget

    budget = PixelBudget(100)
    budget.acquire(80)
    order: list[str] = []

    def take(name: str, cost: int) -> None:
        with budget.reserve(cost):
            order.append(name)

    big = threading.Thread(target=take, args=("big", 60))
    big.start()
    time.sleep(0.1)
    small = threading.Thread(target=take, args=("small", 10))  # would fit now, but waits its turn
    small.start()
    time.sleep(0.1)
    assert order == [] and budget.used == 80
    budget.release(80)
    big.join(5)
    small.join(5)
    assert order == ["big", "small"] and budget.used == 0


def test_budget_refuses_what_can_never_fit_without_waiting():
    from search.images.decode import PixelBudget

    budget = PixelBudget(100)
    budget.acquire(100)  # full: a cost over the total must not wait for it to empty
    with pytest.raises(InvalidImageError) as err:
        budget.acquire(101, "9000x9000")
    assert err.value.reason == "too_large" and "9000x9000" in err.value.detail and "scale it down" in err.value.detail
    assert budget.used == 100


def test_budget_is_given_back_when_a_decode_fails():
    from search.images.decode import PixelBudget

    budget = PixelBudget(100)
    with pytest.raises(RuntimeError), budget.reserve(70):
        raise RuntimeError("decoder blew up")
    assert budget.used == 0
    with pytest.raises(InvalidImageError) as err:
        decode_with(budget, hostile_files()["truncated.jpg"])  # corrupt, and the budget is back
    assert err.value.reason == "corrupt" and budget.used == 0
    decode_with(budget, solid_png(10, 10))
    assert budget.used == 0


def decode_with(budget, data: bytes):
    from search.images.decode import decode_image

    return decode_image(data, budget=budget)


def test_decode_waits_for_the_budget_and_refuses_over_it():
    from search.images.decode import PixelBudget, decode_image

    budget = PixelBudget(150)
    budget.acquire(100)
    done = []
    worker = threading.Thread(target=lambda: done.append(decode_image(solid_png(10, 10), budget=budget).size))
    worker.start()
    time.sleep(0.1)
    assert not done  # 100 pixels do not fit in the 50 left
    budget.release(100)
    worker.join(5)
    assert done == [(10, 10)] and budget.used == 0
    with pytest.raises(InvalidImageError) as err:
        decode_image(solid_png(20, 10), budget=budget)
    assert err.value.reason == "too_large"


def test_query_and_build_limits_differ():
    from search.images.decode import MAX_PIXELS, QUERY_MAX_PIXELS, image_header, read_image

    assert QUERY_MAX_PIXELS < MAX_PIXELS == 64_000_000
    header = png_header_only(6000, 5000)  # 30 MP
    assert image_header(header).pixels == 30_000_000  # a build may take it
    with pytest.raises(InvalidImageError) as err:
        read_image(header)
    assert err.value.reason == "too_large"
    assert err.value.detail == "6000x5000 (30 MP) is over the limit of 24 MP; scale it down and try again"


def test_a_large_jpeg_counts_at_its_drafted_size():
    from search.images.decode import QUERY_MAX_PIXELS, image_header, read_image

    out = io.BytesIO()
    Image.new("RGB", (6400, 4800), "olive").save(out, "JPEG", quality=50)  # 30.7 MP, baseline
    data = out.getvalue()
    header = image_header(data, min_edges=(224, 256))
    assert header.pixels == 800 * 600 and header.cost == header.pixels  # decoded at 1/8
    assert read_image(data, min_edges=(224, 256)).size == (800, 600)
    with pytest.raises(InvalidImageError):  # not drafted: the full size counts
        read_image(data)
    progressive = io.BytesIO()
    Image.new("RGB", (6400, 4800), "olive").save(progressive, "JPEG", quality=50, progressive=True)
    # libjpeg keeps every coefficient of a progressive JPEG, whatever the scale: that counts too.
    assert image_header(progressive.getvalue(), min_edges=(224, 256)).cost > 30_720_000 * 3 // 10
    assert QUERY_MAX_PIXELS < 30_720_000


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


HOSTILE_NAMES = ["/etc/cron.d/x.png", "../up.png", "a/../../b.png", "dir\\x.png", "C:/win.png",
                 "red\x1b[31m.png", "line\nbreak.png", "\u202egnp.exe", "x" * 300 + ".png"]


def test_hostile_member_names_are_skipped_and_never_shown(tmp_path):
    from search.sources.uploads import upload_items

    good = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(good, "PNG")
    path = _zip(tmp_path / "upload.zip", {**{n: good.getvalue() for n in HOSTILE_NAMES}, "cats/ok.png": good.getvalue()})
    items = list(upload_items([path]))
    assert len(items) == len(HOSTILE_NAMES) + 1
    fine = [i for i in items if i.source == "upload.zip/cats/ok.png"]
    assert len(fine) == 1 and fine[0].label == "cats" and fine[0].read() == good.getvalue()
    for name, item in zip(HOSTILE_NAMES, items):  # zip order is kept
        assert item.source.startswith("upload.zip/(file ") and item.source.isprintable() and item.label is None
        with pytest.raises(InvalidImageError) as err:
            item.read()
        assert err.value.reason == "unsupported" and "rename it" in err.value.detail
        assert name not in err.value.detail and err.value.detail.isprintable()


def test_member_name_rules():
    from search.sources.uploads import unsafe_member_name

    for name in HOSTILE_NAMES + ["nul\x00.png", "a/\x7f.png"]:
        assert unsafe_member_name(name), name
    for name in ("cats/tabby.png", "Ünïcødé/фото 1.JPG", "a.b/c..d.png", "👨\u200d👩\u200d👧.png", "x" * 251 + ".png"):
        assert unsafe_member_name(name) is None, name


def test_zip_members_over_the_image_limit_are_refused_from_their_header(tmp_path):
    from search.sources.uploads import upload_items

    bomb = png_header_only(6000, 5000) + b"\0" * (2 * MB)  # 30 MP; the tail is never read
    path = _zip(tmp_path / "up.zip", {"bomb.png": bomb})
    with pytest.raises(InvalidImageError) as err:
        list(upload_items([path]))[0].read()
    assert err.value.reason == "too_large" and "30 MP) is over the limit of 24 MP" in err.value.detail
    single = tmp_path / "bomb.png"
    single.write_bytes(bomb)
    with pytest.raises(InvalidImageError) as err:
        list(upload_items([single]))[0].read()
    assert err.value.reason == "too_large"


def test_an_uploads_pixel_budget_is_shared_and_then_spent(tmp_path):
    from search.sources.uploads import upload_items

    pngs = {f"p{i}.png": png_header_only(1000, 1000) for i in range(5)}  # 1 MP each
    first = _zip(tmp_path / "a.zip", dict(list(pngs.items())[:3]))
    second = _zip(tmp_path / "b.zip", dict(list(pngs.items())[3:]))
    outcomes = []
    for item in upload_items([first, second], total_pixels=3_500_000):
        try:
            item.read()
            item.read()  # read twice (the build may re-read): charged once
            outcomes.append("ok")
        except InvalidImageError as exc:
            outcomes.append(exc.reason)
            assert "another upload" in exc.detail and "3.5 MP" in exc.detail
    assert outcomes == ["ok", "ok", "ok", "too_large", "too_large"]
    assert all(o == "ok" for o in (_read_all(upload_items([first, second], total_pixels=None))))


def _read_all(items) -> list[str]:
    out = []
    for item in items:
        try:
            item.read()
            out.append("ok")
        except InvalidImageError as exc:
            out.append(exc.reason)
    return out
