"""The carried seed's manifest: read back exactly as written, and refused clearly when it cannot be used."""

import json
import os

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.shipped import (
    MANIFEST,
    Manifest,
    SeedFileError,
    ShippedDisk,
    _write_manifest,
    read_manifest,
)


def manifest():
    disk = ShippedDisk(disk_key=2000, label="Hard disk 1", capacity=1 << 30, change_id="52 aa/4",
                       file="disk-2000.raw", extents=[[0, 65536], [1 << 20, 4096]], sha256="ab" * 32)  # fmt: skip
    return Manifest(migration_id="vm-1", vm_name="db01", snapshot_at="2026-11-24T03:00:00Z", format="raw",
                    disks=[disk])  # fmt: skip


def test_a_manifest_reads_back_as_written_and_no_temporary_file_is_left(tmp_path):
    _write_manifest(str(tmp_path), manifest())
    assert read_manifest(str(tmp_path)) == manifest()
    assert os.listdir(tmp_path) == [MANIFEST]


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "did not finish"),
        ("{not json", "cannot be read as a seed manifest"),
        (json.dumps({"disks": []}), "cannot be read as a seed manifest"),
        (json.dumps({**manifest().as_dict(), "snapshot_at": "yesterday"}), "cannot be read as a seed manifest"),
        (json.dumps({**manifest().as_dict(), "version": 9}), "version 9"),
        (json.dumps({**manifest().as_dict(), "format": "vmdk"}), "format 'vmdk'"),
    ],
)
def test_a_manifest_that_cannot_be_used_names_the_directory(tmp_path, content, words):
    if content is not None:
        (tmp_path / MANIFEST).write_text(content)
    with pytest.raises(SeedFileError) as err:
        read_manifest(str(tmp_path))
    assert err.value.parameter == "directory" and words in str(err.value)
