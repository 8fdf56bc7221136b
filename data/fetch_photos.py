"""Re-create ``data/photos/train_extra/`` from free-licensed photographs in Debian packages.

The bundled model needs more (and sharper) training photos than the six in
``data/photos/train/``, and the repository may only carry images whose licence allows it.
Debian's wallpaper packages ship real photographs under licences that Debian checked; this
script is the provenance of the folder: it downloads the pinned ``.deb`` files with
``apt-get download``, checks their SHA-256, checks each photo's licence in the package's
``usr/share/doc/PKG/copyright`` (and in the upstream licence note where one exists), and
stores every photo resized with Lanczos from the original so that

* the long side is at most 2048 px (never upscaled), and
* photos that are softer than their pixel grid (defocus, old compression) are shrunk by a
  further "detail factor" of up to 2, so the stored pixels carry real detail: a model
  trained to restore HR crops should not learn that HR means blurry. The factors below
  were chosen with ``--measure`` (see :func:`suggest_detail_factor`) and are fixed here so
  that a rebuild does not depend on a borderline measurement.

Output is JPEG quality 95 with 4:4:4 chroma, no metadata, plus ``MANIFEST.json`` (file,
SHA-256, size, package, version, original path, author, licence). The committed images are
the source of truth for training; a rebuild with another Pillow/libjpeg build may differ in
bytes, which ``--check`` reports with the pixel difference.

    python data/fetch_photos.py                  # download, rebuild the folder and manifest
    python data/fetch_photos.py --check          # rebuild in a temp dir, compare with the folder
    python data/fetch_photos.py --debs DIR       # use (or cache) the .deb files in DIR
    python data/fetch_photos.py --measure        # print the suggested detail factor per photo

Needs ``apt-get`` and ``dpkg-deb`` (Debian/Ubuntu) with Debian bookworm's package lists.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import fnmatch
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps

from runtime.errors import MissingDependencyError, UpscaleError
from runtime.utils import DefaultsHelpFormatter, atomic_write_bytes, atomic_write_json, file_sha256, is_image_path

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "data" / "photos" / "train_extra"
MANIFEST = "MANIFEST.json"
MAX_SIDE = 2048
JPEG_QUALITY = 95
DETAIL_FACTORS = (1.0, 1.25, 1.5, 2.0)
"""Extra shrink factors :func:`suggest_detail_factor` may pick (beyond the 2048 cap)."""
DETAIL_PSNR_DB = 40.0
"""A shrink is lossless enough when down-and-up keeps this PSNR-Y on the detailed tiles."""


class PhotoSourceError(UpscaleError, RuntimeError):
    """A package, its checksum, a member or a licence statement is not what was recorded."""


@dataclass(frozen=True)
class Package:
    """One pinned Debian package and where its licence statements live."""

    name: str
    version: str
    deb_sha256: str

    @property
    def copyright_member(self) -> str:
        return f"usr/share/doc/{self.name}/copyright"


@dataclass(frozen=True)
class Photo:
    """One stored photo: its source inside a package, its licence and how it is resized.

    ``dep5_path`` is the file as ``debian/copyright`` names it (its ``Files:`` patterns are
    relative to the upstream tree) and ``dep5_licence`` the ``License:`` that stanza must
    give. ``licence`` is the licence recorded for the stored file: the same, or the more
    specific upstream one that ``evidence`` (member, text) proves.
    """

    file: str
    package: str
    member: str
    author: str
    licence: str
    dep5_path: str
    dep5_licence: str
    detail_factor: float = 1.0
    evidence: tuple[str, str] | None = None
    note: str = ""


PACKAGES: dict[str, Package] = {
    p.name: p
    for p in (
        Package("mate-backgrounds", "1.26.0-1", "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04"),
        Package(
            "plasma-workspace-wallpapers",
            "4:5.27.5-2",
            "32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b",
        ),
        Package(
            "lomiri-wallpapers-16.04", "20.04.0-2", "a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab"
        ),
        Package(
            "lomiri-wallpapers-20.04", "20.04.0-2", "d44e89b8473aafe64a5b678f014862dc31335aaaf18665c544d985d854f1a709"
        ),
        Package("lxqt-themes", "1.2.0-1", "d518df36b515b09d36cb00b12645dd8ce170bb82bb0966297741905ce3edc8e1"),
    )
}


def _mate(name: str, author: str, factor: float, note: str) -> Photo:
    return Photo(
        file=f"mate_{name.lower()}.jpg",
        package="mate-backgrounds",
        member=f"usr/share/backgrounds/mate/nature/{name}.jpg",
        author=author,
        licence="GPL-2+",
        dep5_path=f"nature/{name}.jpg",
        dep5_licence="GPL-2+",
        detail_factor=factor,
        note=note,
    )


def _plasma(name: str, author: str, factor: float, note: str) -> Photo:
    return Photo(
        file=f"plasma_{name.lower().replace('_', '')}.jpg",
        package="plasma-workspace-wallpapers",
        member=f"usr/share/wallpapers/{name}/contents/images/2560x1600.jpg",
        author=author,
        licence="LGPL-3",
        dep5_path=f"{name}/contents/images/2560x1600.jpg",
        dep5_licence="GPL-2+",
        detail_factor=factor,
        evidence=(f"usr/share/wallpapers/{name}/metadata.json", '"License": "LGPLv3"'),
        note=note,
    )


def _lomiri(release: str, stem: str, author: str, licence: str, factor: float, note: str) -> Photo:
    short = stem.split("_by_")[0].lower().replace("_", "")
    return Photo(
        file=f"lomiri_{short}.jpg",
        package=f"lomiri-wallpapers-{release}",
        member=f"usr/share/backgrounds/{stem}.jpg",
        author=author,
        licence=licence,
        dep5_path=f"{release}/{stem}.jpg",
        dep5_licence=licence,
        detail_factor=factor,
        note=note,
    )


def _lxqt(name: str, short: str, factor: float, note: str) -> Photo:
    return Photo(
        file=f"lxqt_{short}.jpg",
        package="lxqt-themes",
        member=f"usr/share/lxqt/wallpapers/{name}",
        author="stefonarch (credited in wallpapers/License); 2022 LXQt Project Team",
        licence="CC-BY-SA-3.0",
        dep5_path=f"wallpapers/{name}",
        dep5_licence="LGPL-2.1+",
        detail_factor=factor,
        evidence=(
            "usr/share/lxqt/wallpapers/License",
            "Licensed under https://creativecommons.org/licenses/by-sa/3.0/",
        ),
        note=note,
    )


PHOTOS: tuple[Photo, ...] = (
    _mate("Aqua", "2008, Charles Barbin", 1.5, "water drop splash"),
    _mate("Blinds", "2008, Lennart Poettering; 2008, Andrea Cimitan", 2.0, "backlit leaf"),
    _mate("Dune", "2007, Marco Cogoni; 2008, Hylke Bons", 1.5, "dune grass, sea"),
    _mate("Garden", "2008, Charles Barbin", 2.0, "red flower"),
    _mate("GreenMeadow", "2005, Timothy Schellhase; 2008, Lapo Calamandrei", 1.5, "grass blades"),
    _mate("LadyBird", "2008, Charles Barbin", 2.0, "ladybird, forget-me-nots"),
    _mate("RainDrops", "2008, blackcombwhistler07", 2.0, "drops on leaves"),
    _mate("TwoWings", "2008, Charles Barbin; 2008, Hylke Bons", 1.5, "dandelion seeds"),
    _mate("Wood", "2008, Jean-François Fortin Tam", 1.5, "weathered wood"),
    _mate("YellowFlower", "2008, Charles Barbin", 2.0, "yellow flower"),
    _plasma("FallenLeaf", "Martin Klapetek", 1.25, "autumn leaves"),
    _plasma("Path", "Risto Saukonpää", 1.0, "forest path"),
    _plasma("summer_1am", "Risto Saukonpää", 1.0, "lake at dusk, reeds"),
    _plasma("EveningGlow", "Ian Hex", 1.0, "rowing boats, lake, sunset"),
    _plasma("Grey", "Sigi Sagi", 1.5, "facade, black and white"),
    _plasma("Kite", "Risto Saukonpää", 2.0, "kite in the sky"),
    _plasma("ColorfulCups", "Dmitri Popov", 1.25, "stacked plastic cups"),
    _plasma("OneStandsOut", "Risto Saukonpää", 1.25, "moss"),
    _plasma("ColdRipple", "Risto Saukonpää", 1.0, "pier in fog, black and white"),
    _plasma("BytheWater", "Maciej Wiklo", 1.25, "bench by the water"),
    _lomiri(
        "16.04", "Bridge_by_Sander_Klootwijk", "2018, Sander Klootwijk", "CC-BY-SA-4.0", 1.25, "bridge cables, beach"
    ),
    _lomiri("16.04", "Dragonfly_by_Bolly", '"Bolly", 2018', "CC-BY-SA-4.0", 1.0, "dragonfly, leaves"),
    _lomiri("16.04", "Picture_0B_by_freespace", 'Trevor "Freespace", 2018', "CC-BY-4.0", 1.25, "fig in a bowl"),
    _lomiri("16.04", "Picture_1A_by_freespace", 'Trevor "Freespace", 2018', "CC-BY-4.0", 1.0, "paint brushes"),
    _lomiri("16.04", "Wine_by_Jakkub_Mede", "Jakub Mede, 2018", "CC-BY-4.0", 2.0, "room interior, drum"),
    _lomiri("16.04", "aitzgorri_by_Aitzol_Berasategi", "Aitzol Berasategi, 2018", "CC-BY-4.0", 1.0, "mountain, forest"),
    _lomiri("16.04", "analogpattern_by_Peter_Nerlich", "Peter Nerlich, 2018", "CC-BY-SA-4.0", 2.0, "textured surface"),
    _lomiri("16.04", "free_by_Peter_Nerlich", "Peter Nerlich, 2018", "CC-BY-SA-4.0", 1.5, "bird ornament, lamps"),
    _lomiri("16.04", "friends_by_Aitzol_Berasategi", "Aitzol Berasategi, 2018", "CC-BY-4.0", 2.0, "two dogs at a door"),
    _lomiri("16.04", "greentock_by_Peter_Nerlich", "Peter Nerlich, 2018", "CC-BY-SA-4.0", 2.0, "wall clock"),
    _lomiri("16.04", "life_by_Aitzol_Berasategi", "Aitzol Berasategi, 2018", "CC-BY-4.0", 1.0, "stream, rocks"),
    _lomiri(
        "16.04", "picosdeeuropa_by_Aitzol_Berasategi", "Aitzol Berasategi, 2018", "CC-BY-4.0", 1.0, "mountains, path"
    ),
    _lomiri("16.04", "seeding_by_Clements_Engelhardt", "Clemens Engelhardt, 2018", "CC0-1.0", 1.0, "dandelions"),
    _lomiri("16.04", "sunset_by_Aitzol_Berasategi", "Aitzol Berasategi, 2018", "CC-BY-4.0", 1.25, "sunset, hills"),
    _lomiri("20.04", "Kleiber_by_Lukas_Baubkus", "2021, Lukas Baubkus", "CC-BY-SA-3.0", 1.25, "nuthatch, bark"),
    _lxqt("beam.png", "beam", 2.0, "sun rays, hills"),
    _lxqt("flowers.png", "flowers", 1.25, "meadow flowers"),
    _lxqt("butterfly.png", "butterfly", 1.5, "butterfly on a flower"),
    _lxqt("fog.jpg", "fog", 1.5, "fog over a field"),
    _lxqt("this-is-not-windows.jpg", "notwindows", 1.0, "green hills, sky"),
    _lxqt("after-the-rain.jpg", "aftertherain", 1.5, "clouds at sunset"),
)

EXCLUDED: dict[str, str] = {
    "mate-backgrounds: nature/FreshFlower.jpg": "almost all defocus, 0.34 bit/pixel JPEG",
    "mate-backgrounds: nature/Storm.jpg": "motion-blurred, nearly flat",
    "plasma-workspace-wallpapers: DarkestHour": "a flat gradient (5% of tiles textured)",
    "lxqt-themes: wallpapers/appleflower.png, drop.png": "over 90% defocus blur",
    "lxqt-themes: wallpapers/Valendas.png, cloud.png, Butterfly-Kenneth-Wimer.jpg": (
        "photos, but not credited in wallpapers/License: only the Files: * catch-all covers them"
    ),
    "renders and drawings": (
        "gnome-backgrounds, ukui-wallpapers, sway-backgrounds, desktop-base, debian-edu-artwork-*, "
        "mate abstract/ and desktop/, the other Plasma and Lomiri wallpapers, LXQt logos"
    ),
}


# ----------------------------------------------------------------------------- sizing


def stored_size(source: tuple[int, int], detail_factor: float) -> tuple[int, int]:
    """The stored (width, height): long side capped at :data:`MAX_SIDE`, then / detail factor.

    Never larger than ``source``: a photo is shrunk or kept, never upscaled.
    """
    if detail_factor < 1.0:
        raise ValueError(f"detail_factor must be >= 1 (no upscaling), got {detail_factor}")
    w, h = source
    scale = min(1.0, MAX_SIDE / max(w, h)) / detail_factor
    if scale >= 1.0:
        return w, h
    return max(1, round(w * scale)), max(1, round(h * scale))


def _luma(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


def detail_loss_db(image: Image.Image, factor: float, *, tile: int = 64, top: float = 0.2) -> float:
    """PSNR-Y (dB) of a Lanczos shrink by ``factor`` and back, on the most detailed tiles.

    Only the ``top`` fraction of ``tile``-sized tiles by standard deviation count, so that
    a sharp subject on a defocused background is judged by the subject.
    """
    w, h = image.size
    y = _luma(image)
    cells = [(i, j) for i in range(0, h - tile + 1, tile) for j in range(0, w - tile + 1, tile)]
    if not cells:
        raise ValueError(f"image {w}x{h} is smaller than one {tile}px tile")
    stds = np.array([y[i : i + tile, j : j + tile].std() for i, j in cells])
    chosen = [cells[k] for k in np.argsort(stds, kind="stable")[-max(1, int(len(cells) * top)) :]]
    small = image.resize((max(1, round(w / factor)), max(1, round(h / factor))), Image.Resampling.LANCZOS)
    back = _luma(small.resize((w, h), Image.Resampling.LANCZOS))
    diffs = [y[i : i + tile, j : j + tile] - back[i : i + tile, j : j + tile] for i, j in chosen]
    mse = float(np.mean([np.mean(d**2) for d in diffs]))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def suggest_detail_factor(image: Image.Image) -> float:
    """The largest :data:`DETAIL_FACTORS` entry whose round trip keeps :data:`DETAIL_PSNR_DB`.

    ``image`` is the photo already capped to :data:`MAX_SIDE`. Factors are tried in order
    and the first that loses too much stops the search.
    """
    best = DETAIL_FACTORS[0]
    for factor in DETAIL_FACTORS[1:]:
        if detail_loss_db(image, factor) < DETAIL_PSNR_DB:
            break
        best = factor
    return best


# ----------------------------------------------------------------------------- licences


def dep5_licence(copyright_text: str, path: str) -> str:
    """The ``License:`` short name that a DEP-5 ``debian/copyright`` gives ``path``.

    As the format says, the last ``Files:`` stanza whose patterns match wins.
    """
    if not copyright_text.lstrip().startswith("Format:"):
        raise PhotoSourceError("copyright file is not machine-readable (DEP-5): no 'Format:' header")
    found = None
    for para in re.split(r"\n\s*\n", copyright_text):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if "Files" in fields and "License" in fields:
            patterns = fields["Files"].split()
            if any(fnmatch.fnmatchcase(path, p) for p in patterns):
                found = (fields["License"].split() or [""])[0]
    if found is None:
        raise PhotoSourceError(f"no Files: stanza of the copyright file covers {path!r}")
    return found


def _normalise(text: str) -> str:
    return " ".join(text.split())


def check_licence(photo: Photo, members: dict[str, bytes]) -> None:
    """Raise unless the package's own files still state the licence recorded for ``photo``."""
    package = PACKAGES[photo.package]
    copyright_text = members[package.copyright_member].decode("utf-8")
    stated = dep5_licence(copyright_text, photo.dep5_path)
    if stated != photo.dep5_licence:
        raise PhotoSourceError(
            f"{photo.package} {package.copyright_member}: {photo.dep5_path} is under {stated!r}, "
            f"expected {photo.dep5_licence!r}"
        )
    if photo.evidence is not None:
        member, text = photo.evidence
        if _normalise(text) not in _normalise(members[member].decode("utf-8")):
            raise PhotoSourceError(f"{photo.package} {member}: does not state {text!r} (recorded for {photo.file})")


# ----------------------------------------------------------------------------- packages


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingDependencyError(f"{tool} not found on PATH: this script needs Debian's apt-get and dpkg-deb")
    return path


def fetch_deb(package: Package, debs: Path) -> Path:
    """The package's ``.deb`` in ``debs`` (downloaded with ``apt-get download`` if absent), checked."""
    debs.mkdir(parents=True, exist_ok=True)
    version = package.version.split(":", 1)[-1]
    candidates = sorted(debs.glob(f"{package.name}_*{version}_*.deb"))
    if not candidates:
        subprocess.run([_require("apt-get"), "download", f"{package.name}={package.version}"], cwd=debs, check=True)
        candidates = sorted(debs.glob(f"{package.name}_*{version}_*.deb"))
    if len(candidates) != 1:
        raise PhotoSourceError(f"expected one {package.name} {package.version} .deb in {debs}, found {candidates}")
    digest = file_sha256(candidates[0])
    if digest != package.deb_sha256:
        raise PhotoSourceError(f"{candidates[0]}: sha256 {digest}, expected {package.deb_sha256}")
    return candidates[0]


def read_members(deb: Path, wanted: Iterable[str]) -> dict[str, bytes]:
    """The bytes of the ``wanted`` paths inside ``deb`` (streamed through ``dpkg-deb --fsys-tarfile``)."""
    wanted = set(wanted)
    found: dict[str, bytes] = {}
    with subprocess.Popen([_require("dpkg-deb"), "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
        if proc.stdout is None:
            raise PhotoSourceError(f"dpkg-deb gave no output for {deb}")
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for entry in tar:
                name = entry.name.removeprefix("./")
                if name in wanted and entry.isfile():
                    data = tar.extractfile(entry)
                    found[name] = data.read() if data is not None else b""
    if proc.returncode:
        raise PhotoSourceError(f"dpkg-deb --fsys-tarfile {deb} exited with {proc.returncode}")
    missing = wanted - found.keys()
    if missing:
        raise PhotoSourceError(f"{deb.name} lacks {sorted(missing)}")
    return found


# ----------------------------------------------------------------------------- images


def open_source(data: bytes, what: str) -> Image.Image:
    """Decode a source photo to upright sRGB ``RGB``; a non-sRGB colour profile is refused."""
    image = Image.open(io.BytesIO(data))
    icc = image.info.get("icc_profile")
    if icc:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
        if "srgb" not in description.lower():
            raise PhotoSourceError(f"{what}: colour profile {description.strip()!r}, expected sRGB")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        if image.getchannel("A").getextrema() != (255, 255):
            raise PhotoSourceError(f"{what}: has transparency, expected an opaque photo")
    return image.convert("RGB")


def encode_jpeg(image: Image.Image) -> bytes:
    """JPEG at :data:`JPEG_QUALITY`, 4:4:4 chroma, optimised Huffman tables, no metadata."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=True)
    return buf.getvalue()


def render(photo: Photo, data: bytes) -> tuple[bytes, dict[str, object]]:
    """The stored JPEG bytes of ``photo`` and its manifest entry (without the file hash)."""
    source = open_source(data, f"{photo.package}:{photo.member}")
    size = stored_size(source.size, photo.detail_factor)
    stored = source if size == source.size else source.resize(size, Image.Resampling.LANCZOS)
    package = PACKAGES[photo.package]
    entry: dict[str, object] = {
        "file": photo.file,
        "package": package.name,
        "version": package.version,
        "deb_sha256": package.deb_sha256,
        "original_path": "/" + photo.member,
        "original_sha256": _sha256(data),
        "original_size": list(source.size),
        "size": list(size),
        "detail_factor": photo.detail_factor,
        "author": photo.author,
        "licence": photo.licence,
        "debian_copyright_licence": photo.dep5_licence,
        "subject": photo.note,
    }
    return encode_jpeg(stored), entry


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build(out_dir: Path, debs: Path, photos: Sequence[Photo] = PHOTOS) -> dict[str, object]:
    """Write every photo and ``MANIFEST.json`` into ``out_dir``; return the manifest.

    Images already in ``out_dir`` that are not in ``photos`` stop the build (they would
    be left unlisted); nothing is deleted.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {p.file for p in photos}
    strays = sorted(f.name for f in out_dir.iterdir() if is_image_path(f) and f.name not in names)
    if strays:
        raise PhotoSourceError(f"{out_dir} holds images this script does not make: {strays}; move them away first")
    entries: list[dict[str, object]] = []
    for name, package in PACKAGES.items():
        mine = [p for p in photos if p.package == name]
        if not mine:
            continue
        wanted = {package.copyright_member} | {p.member for p in mine} | {p.evidence[0] for p in mine if p.evidence}
        members = read_members(fetch_deb(package, debs), wanted)
        for photo in mine:
            check_licence(photo, members)
            jpeg, entry = render(photo, members[photo.member])
            atomic_write_bytes(out_dir / photo.file, jpeg)
            entry["sha256"] = _sha256(jpeg)
            entry["bytes"] = len(jpeg)
            entries.append(entry)
            print(f"{photo.file}: {entry['original_size']} -> {entry['size']}, {len(jpeg) / 1e6:.2f} MB", flush=True)
    entries.sort(key=lambda e: str(e["file"]))
    total = sum(len((out_dir / str(e["file"])).read_bytes()) for e in entries)
    manifest: dict[str, object] = {
        "generator": "data/fetch_photos.py",
        "pillow": Image.__version__,
        "max_side": MAX_SIDE,
        "jpeg": {"quality": JPEG_QUALITY, "subsampling": "4:4:4"},
        "total_bytes": total,
        "files": entries,
    }
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest


def compare(built: Path, committed: Path) -> list[str]:
    """Differences between two built folders: hashes, and the pixel difference where they differ."""
    problems = []
    new = {e["file"]: e for e in json.loads((built / MANIFEST).read_text())["files"]}
    old = {e["file"]: e for e in json.loads((committed / MANIFEST).read_text())["files"]}
    for name in sorted(new.keys() | old.keys()):
        if name not in old or name not in new:
            problems.append(f"{name}: only in the {'rebuilt' if name in new else 'committed'} folder")
        elif new[name]["sha256"] != old[name]["sha256"]:
            a = np.asarray(Image.open(built / name).convert("RGB"), dtype=np.int16)
            b = np.asarray(Image.open(committed / name).convert("RGB"), dtype=np.int16)
            diff = "different size" if a.shape != b.shape else f"max pixel difference {np.abs(a - b).max()}"
            problems.append(f"{name}: sha256 differs ({diff})")
    return problems


def measure(debs: Path) -> None:
    """Print, per photo, the recorded detail factor, the suggested one and the round-trip PSNRs."""
    for name, package in PACKAGES.items():
        mine = [p for p in PHOTOS if p.package == name]
        members = read_members(fetch_deb(package, debs), {p.member for p in mine})
        for photo in mine:
            source = open_source(members[photo.member], photo.member)
            capped = source.resize(stored_size(source.size, 1.0), Image.Resampling.LANCZOS)
            losses = " ".join(f"x{f}:{detail_loss_db(capped, f):.1f}dB" for f in DETAIL_FACTORS[1:])
            suggested = suggest_detail_factor(capped)
            flag = "" if suggested == photo.detail_factor else "  <- differs"
            print(f"{photo.file:28s} recorded {photo.detail_factor} suggested {suggested}  {losses}{flag}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder to (re)build")
    parser.add_argument("--debs", type=Path, default=None, help="folder for the .deb files (default: a temp dir)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with --out")
    mode.add_argument("--measure", action="store_true", help="print suggested detail factors")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fetch_photos_") as tmp:
        debs = args.debs if args.debs is not None else Path(tmp) / "debs"
        if args.measure:
            measure(debs)
            return 0
        if args.check:
            build(Path(tmp) / "built", debs)
            problems = compare(Path(tmp) / "built", args.out)
            for line in problems:
                print(line)
            print("identical" if not problems else f"{len(problems)} difference(s)")
            return 1 if problems else 0
        manifest = build(args.out, debs)
        print(f"{len(PHOTOS)} photos, {manifest['total_bytes']} bytes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
