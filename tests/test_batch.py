"""``runtime batch`` in this process: sources, naming, resume, failures, and the Ray-less path.

The outputs must be the bytes ``runtime upscale`` writes for the same inputs: both commands
name outputs with :func:`runtime.batch.output_name` and write them with
``Upscaler.upscale_file``. The bundled model on small crops keeps each run near a second.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from runtime.batch import (
    FAILURES_NAME,
    SUMMARY_NAME,
    Item,
    Location,
    UpscalerSettings,
    list_sources,
    output_name,
    plan_batch,
    process_item,
    resolve_location,
)
from runtime.cli import main
from runtime.errors import ImageReadError, InvalidArgumentError
from runtime.image_io import read_image
from tests._batch_photos import GOOD, make_sources


@pytest.fixture(scope="module")
def sources(photos_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sources(tmp_path_factory.mktemp("batch-src") / "in", photos_dir)


@pytest.fixture(scope="module")
def reference(sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``runtime upscale`` writes for the folder (it too fails on the corrupt file only)."""
    out = tmp_path_factory.mktemp("batch-ref")
    assert main(["upscale", str(sources), "-o", str(out), "--quiet"]) == 1
    return out


def outputs(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.glob("*_x4.png"))}


def reader_error(path: Path) -> str:
    """The project's reader's own message for a bad file (what ``upscale`` prints after ``error:``)."""
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    return str(caught.value)


def summary_of(dst: Path) -> dict:
    return json.loads((dst / SUMMARY_NAME).read_text())


def failures_of(dst: Path) -> list[dict]:
    return [json.loads(line) for line in (dst / FAILURES_NAME).read_text().splitlines()]


@pytest.mark.slow
def test_in_process_matches_upscale_records_failures_and_resumes(
    sources: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = tmp_path / "out"
    assert main(["batch", str(sources), str(dst), "-q"]) == 1
    written = outputs(dst)
    assert sorted(written) == sorted(output_name(n, 4) for n in GOOD)
    for name, (data, _) in written.items():
        assert data == (reference / name).read_bytes(), name
    assert read_image(dst / "deep16_x4.png")[1].bit_depth == 16
    (failure,) = failures_of(dst)
    assert failure["source"] == str(sources / "corrupt.png")
    assert failure["error"] == reader_error(sources / "corrupt.png")
    summary = summary_of(dst)
    assert (summary["done"], summary["skipped"], summary["failed"], summary["ray"]) == (3, 0, 1, False)
    assert summary["megapixels"] == pytest.approx((48 * 40 * 2 + 40 * 32) / 1e6)
    assert "batch: 3 done, 0 skipped, 1 failed" in capsys.readouterr().out

    assert main(["batch", str(sources), str(dst), "-q"]) == 1  # resume: nothing rewritten
    assert outputs(dst) == written
    summary = summary_of(dst)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 3, 1)

    assert main(["batch", str(sources), str(dst), "-q", "--overwrite"]) == 1
    redone = outputs(dst)
    assert all(redone[n][1] > written[n][1] for n in written) and summary_of(dst)["done"] == 3


def test_sources_folder_glob_list_file_uri_and_single_image(sources: Path, tmp_path: Path) -> None:
    names = lambda locs: [Path(loc.path).name for loc in locs]  # noqa: E731
    everything = ["camera.png", "corrupt.png", "deep16.png", "hubble_crop.png"]
    assert names(list_sources(str(sources))) == everything
    assert names(list_sources(str(sources / "c*.png"))) == ["camera.png", "corrupt.png"]
    assert names(list_sources(str(sources.parent / "**" / "d*.png"))) == ["deep16.png"]
    assert names(list_sources(sources.as_uri())) == everything  # file:// through pyarrow
    uri = list_sources(sources.as_uri() + "/deep16.png")
    assert uri[0].local and uri[0].path == str(sources / "deep16.png")
    listing = tmp_path / "todo.txt"
    listing.write_text(f"# two of them\n{sources.name}/camera.png\n\n{sources / 'deep16.png'}\n")
    (tmp_path / sources.name).symlink_to(sources)
    assert names(list_sources(str(listing))) == ["camera.png", "deep16.png"]
    assert names(list_sources(str(sources / "camera.png"))) == ["camera.png"]
    with pytest.raises(InvalidArgumentError, match="SRC .*missing.*no such file, folder or glob"):
        list_sources(str(tmp_path / "missing"))


def test_two_sources_with_one_output_name_fail_before_any_work(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "x.png", tmp_path / "b" / "x.jpg"
    plan = plan_batch(
        [Location(str(a), str(a)), Location(str(b), str(b))], Location("out", "out"), 4, "png", overwrite=False
    )
    assert [i.source.path for i in plan.todo] == [str(a)]
    ((item, error),) = plan.failed
    assert item.source.path == str(b) and "is also the output of" in error and error.startswith(str(b))
    assert output_name("x.JPG", 4, "same") == "x_x4.jpg" and output_name("a.b.png", 2) == "a.b_x2.png"


def test_bad_arguments_exit_2_naming_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["batch", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert "SRC" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    assert main(["batch", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "holds no image files" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "empty"), "ftp-nope://x/y"]) == 2


def test_ray_missing_says_how_to_install(
    sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    assert main(["batch", str(sources), str(tmp_path / "out"), "--ray"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "fourpp-eusr[cluster]"' in err and "batch --ray" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_remote_filesystem_writes_atomically_through_pyarrow(sources: Path, reference: Path, tmp_path: Path) -> None:
    """A non-local pyarrow filesystem (a SubTree over the disk stands in for S3): sources are read
    as bytes and spooled, outputs uploaded under a hidden name and moved onto theirs."""
    from pyarrow.fs import LocalFileSystem, SubTreeFileSystem

    (tmp_path / "bucket" / "in").mkdir(parents=True)
    for name in ("camera.png", "corrupt.png"):
        (tmp_path / "bucket" / "in" / name).write_bytes((sources / name).read_bytes())
    fs = SubTreeFileSystem(str(tmp_path / "bucket"), LocalFileSystem())
    folder = Location("sub://in", "in", fs)
    dst = Location("sub://out", "out", fs)
    dst.make_dir()
    from runtime.batch import _images_in

    found = _images_in(folder)
    assert [loc.text for loc in found] == ["sub://in/camera.png", "sub://in/corrupt.png"]
    plan = plan_batch(found, dst, 4, "png", overwrite=False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with UpscalerSettings().create() as upscaler:
        rows = [process_item(upscaler, item, overwrite=False, scratch=scratch) for item in plan.todo]
        again = process_item(upscaler, plan.todo[0], overwrite=False, scratch=scratch)
    assert [r["status"] for r in rows] == ["done", "failed"]
    assert rows[1]["error"] == reader_error(sources / "corrupt.png").replace(
        str(sources / "corrupt.png"), "sub://in/corrupt.png"
    )
    assert (tmp_path / "bucket" / "out" / "camera_x4.png").read_bytes() == (reference / "camera_x4.png").read_bytes()
    assert sorted(p.name for p in (tmp_path / "bucket" / "out").iterdir()) == ["camera_x4.png"]  # no temp left
    assert again["status"] == "failed" and "already exists" in again["error"]
    assert list(scratch.iterdir()) == []
    assert resolve_location("file:///tmp/x").local
    assert Item(found[0], dst.child("a.png")).output.text == "sub://out/a.png"
