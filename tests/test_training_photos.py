"""data/photos/train_extra/: every photo is listed, licensed, intact and within the size budget.

No network: the committed folder is checked against its MANIFEST.json, LICENSES.md and the
source table of data/fetch_photos.py; the script's helpers are tested on synthetic data.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFilter, JpegImagePlugin

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "data" / "photos" / "train_extra"
LICENSES_MD = REPO / "data" / "photos" / "LICENSES.md"
BUDGET_BYTES = 60 * 1000 * 1000
ALLOWED_LICENCES = {
    "CC0-1.0",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "GPL-2+",
    "GPL-3+",
    "LGPL-2.1+",
    "LGPL-3",
    "public-domain",
}


def _load_script():
    """Import data/fetch_photos.py (a script, not a package) as a module."""
    spec = importlib.util.spec_from_file_location("data_fetch_photos", REPO / "data" / "fetch_photos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fetch = _load_script()


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((FOLDER / "MANIFEST.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def entries(manifest) -> dict[str, dict]:
    return {e["file"]: e for e in manifest["files"]}


def _images() -> list[Path]:
    return sorted(p for p in FOLDER.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


def test_folder_holds_only_listed_images(entries):
    on_disk = {p.name for p in _images()}
    assert on_disk == set(entries), (on_disk - set(entries), set(entries) - on_disk)
    others = {p.name for p in FOLDER.iterdir()} - on_disk - {"MANIFEST.json"}
    assert not others, f"unlisted files in {FOLDER}: {sorted(others)}"
    assert 30 <= len(on_disk) <= 80


def test_each_image_matches_its_manifest_entry(entries):
    for path in _images():
        entry = entries[path.name]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], path.name
        assert len(data) == entry["bytes"], path.name
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and im.mode == "RGB", (path.name, im.format, im.mode)
            assert JpegImagePlugin.get_sampling(im) == 0, f"{path.name} is not 4:4:4"
            assert list(im.size) == entry["size"], path.name
            assert max(im.size) <= fetch.MAX_SIDE, path.name
            im.load()  # decodes the whole file: a truncated JPEG raises here
        assert all(s <= o for s, o in zip(entry["size"], entry["original_size"])), f"{path.name} was upscaled"


def test_total_size_within_budget(manifest):
    total = sum(p.stat().st_size for p in FOLDER.iterdir())
    assert total <= BUDGET_BYTES, f"{total / 1e6:.1f} MB > {BUDGET_BYTES / 1e6:.0f} MB"
    assert manifest["total_bytes"] == sum(p.stat().st_size for p in _images())


def test_licences_allowed_and_recorded_in_licenses_md(entries):
    rows = {}
    for line in LICENSES_MD.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| train_extra/(\S+) \| (\S+) (\S+) \| `([^`]+)` \| (.+) \| (.+) \|$", line)
        if m:
            rows[m.group(1)] = m.groups()[1:]
    assert set(rows) == set(entries), set(rows) ^ set(entries)
    for name, entry in entries.items():
        assert entry["licence"] in ALLOWED_LICENCES, (name, entry["licence"])
        assert entry["debian_copyright_licence"] in ALLOWED_LICENCES, (name, entry["debian_copyright_licence"])
        package, version, original, author, licence = rows[name]
        assert (package, version, original) == (entry["package"], entry["version"], entry["original_path"]), name
        assert author == entry["author"], name
        assert licence.split(" ")[0] == entry["licence"], (name, licence)


def test_manifest_matches_the_script_table(entries):
    assert {p.file for p in fetch.PHOTOS} == set(entries)
    for photo in fetch.PHOTOS:
        entry = entries[photo.file]
        package = fetch.PACKAGES[photo.package]
        assert entry["package"] == package.name and entry["version"] == package.version
        assert entry["deb_sha256"] == package.deb_sha256
        assert entry["original_path"] == "/" + photo.member
        assert (entry["licence"], entry["debian_copyright_licence"]) == (photo.licence, photo.dep5_licence)
        assert entry["author"] == photo.author and entry["detail_factor"] == photo.detail_factor
        assert entry["size"] == list(fetch.stored_size(tuple(entry["original_size"]), photo.detail_factor))


def test_no_standard_benchmark_images(entries):
    banned = re.compile(r"set5|set14|bsd|b100|div2k|urban100|manga109|srbench|lena|baboon", re.I)
    for name, entry in entries.items():
        assert not banned.search(name + " " + entry["original_path"]), name


# ----------------------------------------------------------------------------- script helpers


def test_stored_size_caps_the_long_side_and_never_upscales():
    assert fetch.stored_size((4096, 2048), 1.0) == (2048, 1024)
    assert fetch.stored_size((2048, 4096), 2.0) == (512, 1024)
    assert fetch.stored_size((1000, 600), 1.0) == (1000, 600)
    assert fetch.stored_size((1000, 600), 2.0) == (500, 300)
    with pytest.raises(ValueError, match="detail_factor"):
        fetch.stored_size((1000, 600), 0.5)


def test_suggest_detail_factor_tells_sharp_from_soft(rng):
    sharp = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    assert fetch.suggest_detail_factor(sharp) == 1.0
    # A smooth image upsampled x2: the top half of its spectrum is empty, so x2 loses nothing.
    noise = Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    small = noise.filter(ImageFilter.GaussianBlur(1.5))
    soft = small.resize((256, 256), Image.Resampling.LANCZOS)
    assert fetch.suggest_detail_factor(soft) == 2.0


COPYRIGHT = """
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo

Files: *
Copyright: 2020 Someone
License: GPL-2+

Files: nature/a.jpg
       nature/b.jpg
Copyright: 2008, A Photographer
License: CC-BY-SA-4.0
Comment: a stanza after the catch-all wins

License: GPL-2+
 text
"""


def test_dep5_licence_takes_the_last_matching_stanza():
    assert fetch.dep5_licence(COPYRIGHT, "nature/b.jpg") == "CC-BY-SA-4.0"
    assert fetch.dep5_licence(COPYRIGHT, "other/c.jpg") == "GPL-2+"
    with pytest.raises(fetch.PhotoSourceError, match="DEP-5"):
        fetch.dep5_licence("free text copyright\n", "nature/a.jpg")
    with pytest.raises(fetch.PhotoSourceError, match="covers"):
        fetch.dep5_licence(COPYRIGHT.replace("Files: *\n", "Files: debian/*\n"), "other/c.jpg")


def test_check_licence_refuses_a_changed_statement(monkeypatch):
    package = fetch.Package("demo-wallpapers", "1.0-1", "0" * 64)
    monkeypatch.setitem(fetch.PACKAGES, package.name, package)
    photo = fetch.Photo(
        file="demo_a.jpg",
        package=package.name,
        member="usr/share/backgrounds/a.jpg",
        author="A Photographer",
        licence="CC-BY-SA-4.0",
        dep5_path="nature/a.jpg",
        dep5_licence="CC-BY-SA-4.0",
        evidence=("usr/share/backgrounds/LICENSE", "Licensed under CC BY-SA 4.0"),
    )
    members = {
        package.copyright_member: COPYRIGHT.encode(),
        "usr/share/backgrounds/LICENSE": b"Licensed under\n CC BY-SA 4.0",
    }
    fetch.check_licence(photo, members)  # whitespace in the upstream note does not matter
    changed = COPYRIGHT.replace("CC-BY-SA-4.0", "non-free").encode()
    with pytest.raises(fetch.PhotoSourceError, match="expected 'CC-BY-SA-4.0'"):
        fetch.check_licence(photo, {**members, package.copyright_member: changed})
    with pytest.raises(fetch.PhotoSourceError, match="does not state"):
        fetch.check_licence(photo, {**members, "usr/share/backgrounds/LICENSE": b"All rights reserved"})


def _encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_open_source_refuses_transparency_and_foreign_colour_profiles(rng):
    rgb = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    assert fetch.open_source(_encoded(rgb, "PNG"), "x").mode == "RGB"
    assert fetch.open_source(_encoded(rgb.convert("L"), "PNG"), "x").mode == "RGB"
    rgba = rgb.convert("RGBA")
    rgba.putpixel((0, 0), (1, 2, 3, 0))
    with pytest.raises(fetch.PhotoSourceError, match="transparency"):
        fetch.open_source(_encoded(rgba, "PNG"), "x")
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    with pytest.raises(fetch.PhotoSourceError, match="expected sRGB"):
        fetch.open_source(_encoded(rgb, "PNG", icc_profile=lab), "x")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert fetch.open_source(_encoded(rgb, "PNG", icc_profile=srgb), "x").size == (48, 32)


def test_encode_jpeg_is_444_quality_95_without_metadata(rng):
    image = Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    with Image.open(io.BytesIO(fetch.encode_jpeg(image))) as im:
        assert JpegImagePlugin.get_sampling(im) == 0
        assert "exif" not in im.info and "icc_profile" not in im.info
        assert im.size == (80, 64)
