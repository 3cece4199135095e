"""The collection's VDDK reader: the arithmetic VDDK's rules impose, and how the password arrives."""

import os

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import vddk_reader as r

HOLE = 3  # nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO
CHUNK = r.CHUNK_SECTORS * r.SECTOR


def test_the_password_is_read_from_the_inherited_descriptor_and_nothing_else():
    read, write = os.pipe()
    os.write(write, b"s3cret\n")
    os.close(write)
    assert r.read_password(f"-{read}") == "s3cret"
    with pytest.raises(OSError):
        os.fstat(read)  # closed once read
    for value in ("s3cret", "+/etc/vcenter.password", "-", "-x1"):
        with pytest.raises(ValueError, match="-FD"):
            r.read_password(value)


@pytest.mark.parametrize(
    ("offset", "count", "expected"),
    [(0, 512, (0, 1)), (3, 10, (0, 1)), (510, 4, (0, 2)), (1024, 4096, (2, 8)), (1000, 100, (1, 2))],
)
def test_reads_cover_whole_sectors(offset, count, expected):
    assert r.sectors_around(offset, count) == expected


def test_block_queries_ask_whole_chunks_inside_the_disk_and_not_too_many():
    size = 10 * CHUNK + 4096  # a disk whose end is no whole chunk
    assert r.chunk_query(100, 10, size) == (0, r.CHUNK_SECTORS)
    assert r.chunk_query(CHUNK - 1, 2, size) == (0, 2 * r.CHUNK_SECTORS)
    assert r.chunk_query(0, size, size) == (0, 10 * r.CHUNK_SECTORS)  # the partial chunk is left out
    assert r.chunk_query(10 * CHUNK + 1, 100, size) is None  # only the partial chunk: VDDK cannot answer
    huge = (r.MAX_CHUNKS + 5) * CHUNK
    assert r.chunk_query(0, huge, huge) == (0, r.MAX_CHUNKS * r.CHUNK_SECTORS)


def test_allocated_blocks_become_data_and_the_gaps_holes_covering_the_range():
    blocks = [(2 * CHUNK, CHUNK), (0, CHUNK)]
    assert r.extents_of(0, 4 * CHUNK, blocks, HOLE) == [
        (0, CHUNK, 0), (CHUNK, CHUNK, HOLE), (2 * CHUNK, CHUNK, 0), (3 * CHUNK, CHUNK, HOLE),
    ]  # fmt: skip
    assert r.extents_of(CHUNK, CHUNK, [], HOLE) == [(CHUNK, CHUNK, HOLE)]
    assert r.extents_of(0, CHUNK, [(0, 4 * CHUNK)], HOLE) == [(0, CHUNK, 0)]  # clipped to the range


def test_vddk_is_found_where_vmware_lays_it_out(tmp_path):
    with pytest.raises(ValueError, match=r"lib64/libvixDiskLib\.so\.N"):
        r.library_path(str(tmp_path))
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64" / "libvixDiskLib.so.7").touch()
    (tmp_path / "lib64" / "libvixDiskLib.so.8").touch()
    assert r.library_path(str(tmp_path)).endswith("lib64/libvixDiskLib.so.8")


def test_unknown_and_missing_parameters_are_refused(monkeypatch):
    monkeypatch.setattr(r, "_params", {})
    with pytest.raises(ValueError, match="unknown parameter"):
        r.config("pasword", "x")
    r.config("server", "vc")
    with pytest.raises(ValueError, match=r"missing parameter.*libdir"):
        r.config_complete()
