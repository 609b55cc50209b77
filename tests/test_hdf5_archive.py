"""tasks.files.hdf5_archive: layout, all-or-nothing appends, live SWMR readers, verification."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from tasks.files.hdf5_archive import (
    STR_BYTES,
    ArchiveError,
    SequenceArchive,
    frame_sha256,
    verify_archive,
)

CCDS = {"r1": (6, 8), "b1": (6, 8)}
COLUMNS: list[tuple[str, Any]] = [("object", "str"), ("exptime", "float"), ("buffer", "int")]
PROVENANCE: dict[str, str | int | float] = {
    "instrument": "ccdsim",
    "sequence": "flats-2",
    "night": 20261120,
    "airmass": 1.2,
}


def _frames(seed: int) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, 65535, shape, dtype=np.uint16) for name, shape in CCDS.items()}


def _values(n: int) -> dict[str, Any]:
    return {"object": f"field {n}", "exptime": 1.5 * n, "buffer": n % 3 + 1}


def _create(path: Path) -> SequenceArchive:
    return SequenceArchive.create(
        path, CCDS, dtype=np.dtype("u2"), provenance=PROVENANCE, columns=COLUMNS
    )


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with h5py.File(path, "r", libver="latest", swmr=True) as h5:
        shapes = {name: h5["ccds"][name].shape for name in CCDS}
        shapes["frames"] = h5["frames"].shape
        return shapes


def test_layout_provenance_and_table(tmp_path: Path) -> None:
    path = tmp_path / "seq.h5"
    written = {n: _frames(n) for n in (3, 4, 5)}
    with _create(path) as archive:
        for n, frames in written.items():
            archive.append(n, frames, _values(n))
        assert archive.frame_count == 3
    with h5py.File(path, "r") as h5:
        assert h5.attrs["software"] == "ccdflow"
        assert h5.attrs["format_version"] == 1
        assert h5.attrs["created"].endswith("+00:00")
        for key, value in PROVENANCE.items():
            assert h5.attrs[key] == value
        for name, (height, width) in CCDS.items():
            cube = h5["ccds"][name]
            assert cube.shape == (3, height, width)
            assert cube.maxshape == (None, height, width)
            assert cube.chunks == (1, height, width)
            assert cube.fletcher32
            assert cube.dtype == np.uint16
            for index, n in enumerate(written):
                np.testing.assert_array_equal(cube[index], written[n][name])
        table = h5["frames"][:]
        assert table["expnum"].tolist() == [3, 4, 5]
        assert [s.decode() for s in table["object"]] == ["field 3", "field 4", "field 5"]
        assert table["exptime"].tolist() == [4.5, 6.0, 7.5]
        assert table["sha256_b1"][1].decode() == frame_sha256(written[4]["b1"])
    assert verify_archive(path) == 3


def test_an_existing_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "seq.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        _create(path)
    assert path.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("expnum", "change", "message"),
    [
        (1, lambda f, v: None, "already in the archive"),
        (-2, lambda f, v: None, "non-negative"),
        (2, lambda f, v: f.pop("b1"), "frames for"),
        (2, lambda f, v: f.update(z9=f["r1"]), "frames for"),
        (2, lambda f, v: f.update(b1=f["b1"][:, :-1]), "shape"),
        (2, lambda f, v: f.update(b1=f["b1"].astype("i4")), "dtype"),
        (2, lambda f, v: f.update(b1=f["b1"].tolist()), "shape"),
        (2, lambda f, v: v.pop("object"), "values for"),
        (2, lambda f, v: v.update(extra=1), "values for"),
        (2, lambda f, v: v.update(buffer=1.5), "not an int"),
        (2, lambda f, v: v.update(exptime="1"), "not a float"),
        (2, lambda f, v: v.update(object=7), "not a str"),
        (2, lambda f, v: v.update(object="é" * (STR_BYTES // 2 + 1)), "UTF-8 bytes"),
    ],
)
def test_a_bad_append_raises_and_leaves_the_archive_as_it_was(
    tmp_path: Path, expnum: int, change: Any, message: str
) -> None:
    path = tmp_path / "seq.h5"
    with _create(path) as archive:
        archive.append(1, _frames(1), _values(1))
        before = _shapes(path)
        frames, values = _frames(2), _values(2)
        change(frames, values)
        with pytest.raises(ArchiveError, match=message):
            archive.append(expnum, frames, values)
        assert _shapes(path) == before
        archive.append(2, _frames(2), _values(2))  # still usable
    assert verify_archive(path) == 2


def test_an_hdf5_failure_half_way_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "seq.h5"
    with _create(path) as archive:
        archive.append(1, _frames(1), _values(1))

        def disk_full(index: int, row: Any) -> None:
            raise OSError("No space left on device")

        monkeypatch.setattr(archive, "_write_row", disk_full)
        with pytest.raises(ArchiveError, match="append failed"):
            archive.append(2, _frames(2), _values(2))
        assert _shapes(path)["r1"][0] == 1  # the cubes were grown, then shrunk back
        monkeypatch.undo()
        archive.append(2, _frames(2), _values(2))  # and expnum 2 was not consumed
    assert verify_archive(path) == 2


READER = """
import sys
import h5py
with h5py.File(sys.argv[1], "r", libver="latest", swmr=True) as h5:
    table, cube = h5["frames"], h5["ccds"]["r1"]
    for line in sys.stdin:
        table.refresh()
        cube.refresh()
        last = int(table[-1]["expnum"]) if table.shape[0] else -1
        print(table.shape[0], cube.shape[0], last, int(cube[-1].sum()), flush=True)
"""


def test_a_separate_process_sees_the_archive_grow_while_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "seq.h5"
    with _create(path) as archive:
        archive.append(10, _frames(10), _values(10))
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert reader.stdin is not None
        assert reader.stdout is not None
        try:
            seen = []
            for n in range(10, 14):
                if n > 10:
                    archive.append(n, _frames(n), _values(n))
                reader.stdin.write("next\n")
                reader.stdin.flush()
                seen.append(reader.stdout.readline().split())
        finally:
            reader.stdin.close()
            assert reader.wait(timeout=20) == 0
    assert seen == [
        [str(k), str(k), str(n), str(int(_frames(n)["r1"].sum(dtype=np.int64)))]
        for k, n in enumerate(range(10, 14), start=1)
    ]


def test_verify_names_the_frame_and_ccd_whose_pixels_changed(tmp_path: Path) -> None:
    path = tmp_path / "seq.h5"
    with _create(path) as archive:
        for n in range(3):
            archive.append(n + 100, _frames(n), _values(n))
    with h5py.File(path, "r+") as h5:  # a rewrite: fletcher32 is recomputed, sha256 is not
        h5["ccds"]["b1"][1, 2, 3] += 1
    with pytest.raises(ArchiveError, match=r"frame 1 \(expnum 101\) CCD b1: sha256 differs"):
        verify_archive(path)


def test_verify_names_the_frame_and_ccd_of_a_corrupted_chunk(tmp_path: Path) -> None:
    path = tmp_path / "seq.h5"
    with _create(path) as archive:
        for n in range(3):
            archive.append(n + 100, _frames(n), _values(n))
    with h5py.File(path, "r") as h5:
        offset = h5["ccds"]["r1"].id.get_chunk_info(2).byte_offset
    with path.open("r+b") as handle:
        handle.seek(offset + 10)
        byte = handle.read(1)
        handle.seek(offset + 10)
        handle.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(ArchiveError, match=r"frame 2 \(expnum 102\) CCD r1: unreadable"):
        verify_archive(path)


def test_h5dump_reads_the_archive_and_prints_text_cleanly(tmp_path: Path) -> None:
    tool = shutil.which("h5dump")
    if tool is None:
        pytest.skip("h5dump not installed (make tools)")
    path = tmp_path / "seq.h5"
    with _create(path) as archive:
        archive.append(1, _frames(1), _values(1))
        archive.append(2, _frames(2), _values(2))
    # h5dump is no SWMR reader: it opens the archive once the writer has closed it.
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr
    assert '"field 2",' in result.stdout  # null-terminated: no trailing \000s
    assert (
        "CHECKSUM FLETCHER32"
        in subprocess.run(
            [tool, "-p", "-H", str(path)], capture_output=True, text=True, check=True
        ).stdout
    )


@pytest.mark.parametrize(
    ("ccds", "columns", "provenance", "message"),
    [
        ({}, [], {}, "at least one CCD"),
        ({"a/b": (2, 2)}, [], {}, "CCD name"),
        ({"a": (0, 2)}, [], {}, "shape"),
        (CCDS, [("expnum", "int")], {}, "reserved"),
        (CCDS, [("sha256_r1", "str")], {}, "reserved"),
        (CCDS, [("x", "int"), ("x", "float")], {}, "repeat"),
        (CCDS, [("x", "bytes")], {}, "kind"),
        (CCDS, [], {"created": "yesterday"}, "written by the archive"),
        (CCDS, [], {"flag": True}, "not str/int/float"),
    ],
)
def test_a_bad_layout_is_refused_before_a_file_is_created(
    tmp_path: Path, ccds: Any, columns: Any, provenance: Any, message: str
) -> None:
    with pytest.raises(ArchiveError, match=message):
        SequenceArchive.create(
            tmp_path / "x.h5", ccds, dtype=np.dtype("u2"), provenance=provenance, columns=columns
        )
    assert list(tmp_path.iterdir()) == []
