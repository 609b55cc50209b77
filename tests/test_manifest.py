"""SHA256SUMS: readable by coreutils, appended under a lock, never contradicting itself."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tasks.files import manifest
from tasks.files.fits_files import WrittenFile, append_manifest, verify_manifest
from tasks.files.manifest import MANIFEST_NAME, ManifestError


def _file(folder: Path, name: str, content: bytes) -> WrittenFile:
    path = folder / name
    path.write_bytes(content)
    return WrittenFile(path, hashlib.sha256(content).hexdigest(), len(content))


def _sha256sum_check(folder: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("sha256sum")
    if tool is None:
        pytest.skip("coreutils sha256sum not installed")
    return subprocess.run(
        [tool, "--check", "--strict", MANIFEST_NAME],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )


def test_manifest_is_what_sha256sum_checks(tmp_path: Path) -> None:
    first = [_file(tmp_path, "a-00000001.fits", b"a"), _file(tmp_path, "b-00000001.fits", b"b")]
    manifest = append_manifest(tmp_path, first)
    append_manifest(tmp_path, [_file(tmp_path, "seq-0001.h5", b"hdf5")])
    assert manifest == tmp_path / MANIFEST_NAME
    assert manifest.read_text().splitlines() == [
        f"{hashlib.sha256(b'a').hexdigest()}  a-00000001.fits",
        f"{hashlib.sha256(b'b').hexdigest()}  b-00000001.fits",
        f"{hashlib.sha256(b'hdf5').hexdigest()}  seq-0001.h5",
    ]
    result = _sha256sum_check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert verify_manifest(tmp_path) == []


def test_appending_the_same_file_again_is_a_no_op(tmp_path: Path) -> None:
    written = _file(tmp_path, "a.fits", b"a")
    append_manifest(tmp_path, [written])
    before = (tmp_path / MANIFEST_NAME).read_bytes()
    append_manifest(tmp_path, [written, written])
    assert (tmp_path / MANIFEST_NAME).read_bytes() == before


def test_a_name_listed_with_another_hash_is_refused_and_nothing_appended(tmp_path: Path) -> None:
    append_manifest(tmp_path, [_file(tmp_path, "a.fits", b"a")])
    before = (tmp_path / MANIFEST_NAME).read_bytes()
    rewritten = _file(tmp_path, "a.fits", b"rewritten")
    with pytest.raises(ManifestError, match=r"a\.fits is listed with sha256"):
        append_manifest(tmp_path, [_file(tmp_path, "new.fits", b"n"), rewritten])
    assert (tmp_path / MANIFEST_NAME).read_bytes() == before


@pytest.mark.parametrize(
    ("name", "sha256", "message"),
    [
        ("ok.fits", "0" * 63, "not a lowercase hex"),
        ("ok.fits", "A" * 64, "not a lowercase hex"),
        ("new\nline.fits", "0" * 64, "would escape"),
        ("back\\slash.fits", "0" * 64, "would escape"),
    ],
)
def test_entries_the_format_cannot_hold_are_refused(
    tmp_path: Path, name: str, sha256: str, message: str
) -> None:
    with pytest.raises(ManifestError, match=message):
        append_manifest(tmp_path, [WrittenFile(tmp_path / name, sha256, 1)])
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_a_file_from_another_folder_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ManifestError, match="is not in"):
        append_manifest(tmp_path, [_file(other, "a.fits", b"a")])


def test_verify_reports_missing_and_changed_files_as_sha256sum_does(tmp_path: Path) -> None:
    files = [_file(tmp_path, f"f{i}.fits", bytes([i]) * 100) for i in range(3)]
    append_manifest(tmp_path, files)
    (tmp_path / "f0.fits").unlink()
    (tmp_path / "f1.fits").write_bytes(bytes(100))
    zeros = hashlib.sha256(bytes(100)).hexdigest()
    assert verify_manifest(tmp_path) == [
        "f0.fits: missing",
        f"f1.fits: sha256 is {zeros}, manifest says {files[1].sha256}",
    ]
    assert _sha256sum_check(tmp_path).returncode != 0


def test_verify_reports_a_missing_or_malformed_manifest(tmp_path: Path) -> None:
    assert verify_manifest(tmp_path) == [f"{tmp_path / MANIFEST_NAME}: missing"]
    (tmp_path / MANIFEST_NAME).write_text("not a manifest line\n")
    (problem,) = verify_manifest(tmp_path)
    assert "not '<sha256>  <name>'" in problem
    with pytest.raises(ManifestError, match="not '<sha256>  <name>'"):
        append_manifest(tmp_path, [_file(tmp_path, "a.fits", b"a")])


def test_concurrent_appends_never_list_a_name_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads racing to list the same name with different hashes: exactly one wins.

    Each thread opens its own descriptor, so flock serializes them as it would separate
    processes (one per controller). Reading is slowed down to widen the race: without
    the lock, several would read the manifest before any wrote, and all would append.
    """
    real_read = manifest._read_all

    def slow_read(fd: int) -> str:
        text = real_read(fd)
        time.sleep(0.01)
        return text

    monkeypatch.setattr(manifest, "_read_all", slow_read)
    racers, rounds = 6, 3
    barrier = threading.Barrier(racers)
    refused: list[ManifestError] = []

    def racer(n: int) -> None:
        own = _file(tmp_path, f"own-{n}.fits", bytes([n]))
        same = WrittenFile(tmp_path / "same.fits", hashlib.sha256(bytes([n])).hexdigest(), 1)
        barrier.wait()
        for _ in range(rounds):
            try:
                append_manifest(tmp_path, [own, same])
            except ManifestError as exc:
                refused.append(exc)

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = (tmp_path / MANIFEST_NAME).read_text().splitlines()
    assert sum(line.endswith("  same.fits") for line in lines) == 1
    assert len(refused) == (racers - 1) * rounds
    assert len(lines) == len(set(lines)) == 1 + 1  # the winner's two files only
