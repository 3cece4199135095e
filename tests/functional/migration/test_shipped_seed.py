"""A seed carried on disks (both labs): exported at the source site while the guest writes, copied with
``cp`` (the courier), imported into the initialized migration, then caught up by one incremental.

Each refusal is shown before anything changes: the record stays unseeded and nothing is attached.
"""

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.verify import digest_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import shipped, store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import Phase
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.shipped import (
    MANIFEST,
    SeedFileError,
    binding,
    export_seed,
    import_seed,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.cbt import SNAPSHOT_PREFIX

from ..vsphere.conftest import VDDK_LIBDIR, set_cbt
from .conftest import EVENTS_VM, Writer, assert_volumes_equal_source, snapshot_names, start, wave_playbooks


def courier(source, tmp_path, name="target-site"):
    """What carrying the disks amounts to: a plain copy of the directory (holes kept)."""
    carried = tmp_path / name
    subprocess.run(["cp", "-r", "--sparse=always", str(source), str(carried)], check=True)
    return str(carried)


def our_snapshots(vsphere, vm):
    return [name for name in snapshot_names(vsphere, vm) if name.startswith(SNAPSHOT_PREFIX)]


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_a_seed_exported_while_the_guest_writes_is_carried_imported_and_caught_up_by_one_incremental(
    vsphere, events_vm, openstack, target, settings, tmp_path, fmt
):
    migration_id = start(vsphere, events_vm, openstack, target).migration_id
    key = str(store.load(openstack, migration_id).disks[0].disk_key)
    with Writer(EVENTS_VM, key, 1_000_000):
        exported = export_seed(MigrationContext.read(vsphere, events_vm), str(tmp_path / "source-site"), fmt, settings)
        assert exported.changed and our_snapshots(vsphere, events_vm) == []  # the export's snapshot is gone
        again = export_seed(MigrationContext.read(vsphere, events_vm), str(tmp_path / "source-site"), fmt, settings)
        assert not again.changed and again.manifest == exported.manifest
        carried = courier(tmp_path / "source-site", tmp_path)
        predicted = import_seed(
            MigrationContext.read(vsphere, events_vm, openstack), carried, settings, check_mode=True
        )
        assert predicted.changed and store.load(openstack, migration_id).sync_count == 0
        imported = import_seed(MigrationContext.read(vsphere, events_vm, openstack), carried, settings)
    state = store.load(openstack, migration_id)
    assert imported.changed and imported.kind == "seed" and state.phase is Phase.READY
    assert {d.disk_key: d.change_id for d in state.disks} == {d.disk_key: d.change_id for d in exported.manifest.disks}
    rerun = import_seed(MigrationContext.read(vsphere, events_vm, openstack), carried, settings)
    assert not rerun.changed
    caught_up = run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings)
    assert caught_up.kind == "incremental" and caught_up.bytes_copied > 0  # what the writer wrote since
    assert_volumes_equal_source(vsphere, events_vm, openstack, store.load(openstack, migration_id))


def test_a_carried_seed_that_cannot_be_used_is_refused_before_anything_changes(
    vsphere, events_vm, openstack, target, settings, tmp_path
):
    migration_id = start(vsphere, events_vm, openstack, target).migration_id
    exported = export_seed(
        MigrationContext.read(vsphere, events_vm), str(tmp_path / "source-site"), "raw", settings
    ).manifest
    first = exported.disks[0]
    offset = first.extents[0][0]

    def refused(directory, words):
        with pytest.raises(SeedFileError) as err:
            import_seed(MigrationContext.read(vsphere, events_vm, openstack), directory, settings)
        assert err.value.parameter == "directory" and words in str(err.value), err.value
        state = store.load(openstack, migration_id)
        assert not any(d.change_id or d.pending_change_id for d in state.disks) and state.sync_count == 0
        assert state.phase is Phase.INITIALIZING

    def edited(name, change):
        """A carried copy whose manifest says something else (what another export would have written)."""
        directory = courier(tmp_path / "source-site", tmp_path, name)
        with open(os.path.join(directory, MANIFEST)) as handle:
            manifest = json.load(handle)
        change(manifest)
        with open(os.path.join(directory, MANIFEST), "w") as handle:
            json.dump(manifest, handle)
        return directory

    another = {"migration_id": "vm-00000000-0000-0000-0000-000000000000", "vm_name": "another-vm"}
    refused(edited("another-vm", lambda m: m.update(another)), "holds the export of VM 'another-vm'")
    refused(edited("one-disk", lambda m: m.update(disks=m["disks"][:1])), "the export holds disks")

    damaged = courier(tmp_path / "source-site", tmp_path, "damaged")
    with open(os.path.join(damaged, first.file), "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    refused(damaged, "its checksum differs")

    short = courier(tmp_path / "source-site", tmp_path, "short")
    os.truncate(os.path.join(short, first.file), first.capacity - (1 << 20))
    refused(short, "cut short")

    unfinished = courier(tmp_path / "source-site", tmp_path, "unfinished")
    os.unlink(os.path.join(unfinished, MANIFEST))
    refused(unfinished, "did not finish")

    set_cbt(vsphere, events_vm, False)  # VMware's "reset CBT": off, then on; the export's change ids are void
    set_cbt(vsphere, events_vm, True)
    refused(courier(tmp_path / "source-site", tmp_path), "seed over the network with block_sync")


def test_a_carried_seed_proves_identity_and_with_a_key_authenticity_and_is_checked_as_copied(
    vsphere, events_vm, openstack, target, settings, tmp_path, monkeypatch
):
    """Entries swapped between disks (each digest valid for its own file), planted data with digests recomputed
    (what anyone can do without the sites' key), a qcow2 pointing at another file of the host, and a file
    changed after the check: none is imported, and no change id of a wrong disk is recorded."""
    migration_id = start(vsphere, events_vm, openstack, target).migration_id
    key = b"a secret both sites hold"
    source = tmp_path / "source-site"
    exported = export_seed(MigrationContext.read(vsphere, events_vm), str(source), "raw", settings, key=key).manifest
    first = exported.disks[0]

    def untouched(disk_key=None):
        state = store.load(openstack, migration_id)
        assert not any(d.change_id for d in state.disks if disk_key in (None, d.disk_key)), state.disks
        assert state.sync_count == 0

    def refused(directory, *words, with_key=key):
        with pytest.raises(SeedFileError) as err:
            import_seed(MigrationContext.read(vsphere, events_vm, openstack), directory, settings, key=with_key)
        assert any(w in str(err.value) for w in words), err.value
        untouched()

    def edited(name, change):
        directory = courier(source, tmp_path, name)
        manifest = shipped.read_manifest(directory)
        change(directory, manifest)
        with open(os.path.join(directory, MANIFEST), "w") as handle:
            json.dump(manifest.as_dict(), handle)
        return directory

    def swap(_directory, manifest):
        a, b = manifest.disks[0], manifest.disks[1]
        a.file, b.file, a.sha256, b.sha256 = b.file, a.file, b.sha256, a.sha256
        a.extents, b.extents = b.extents, a.extents
        manifest.hmac = manifest.mac(key)  # even re-signed by someone holding the key: the binding catches it

    refused(edited("swapped", swap), "its checksum differs", "cut short")  # the smaller disk's file: cut short

    def plant(directory, manifest):
        with open(os.path.join(directory, first.file), "r+b") as handle:
            handle.seek(first.extents[0][0])
            handle.write(b"planted" * 64)
        disk = manifest.disks[0]
        disk.sha256 = digest_extents(os.path.join(directory, disk.file), disk.data, binding(migration_id, disk))

    planted = edited("planted", plant)
    refused(planted, "not signed with this key")
    refused(planted, "is signed, and no key was given", with_key=None)

    def backed(directory, manifest):
        for disk in manifest.disks:
            raw = os.path.join(directory, disk.file)
            disk.file = disk.file.replace(".raw", ".qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", raw, "-F", "raw",
                            os.path.join(directory, disk.file)], check=True)  # fmt: skip
        manifest.format = "qcow2"
        manifest.hmac = manifest.mac(key)

    refused(edited("backed", backed), "refers to another file")

    carried = courier(source, tmp_path, "changed-after-check")
    check = shipped._check

    def then_the_file_changes(*args, **kwargs):
        """The real check, then a writer changes the carried file before the copy reads it."""
        check(*args, **kwargs)
        with open(os.path.join(carried, first.file), "r+b") as handle:
            handle.seek(first.extents[0][0])
            handle.write(b"late" * 64)

    monkeypatch.setattr(shipped, "_check", then_the_file_changes)
    with pytest.raises(SeedFileError) as err:
        import_seed(MigrationContext.read(vsphere, events_vm, openstack), carried, settings, key=key)
    assert "changed after it was checked" in str(err.value)
    untouched(first.disk_key)  # the other disk, copied whole from an unchanged file, may have been recorded


def test_the_wave_playbooks_ship_a_seed(vsphere, events_vm, openstack, lab, tmp_path):
    """seed_export, the courier, seed_import, sync: the collection's playbooks on a wave of the events VM."""
    playbook = wave_playbooks(lab, tmp_path, {"wave1": {
        "hosts": {EVENTS_VM: {}},
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "warm_migration_volume_type": "standard-ssd", "warm_migration_availability_zone": "az1",
                 "warm_migration_network_map": [{"source": "DC0_DVPG0", "network": "lab-net-a"}]},
    }}, {"state_dir": str(tmp_path / "state"), "vddk_libdir": VDDK_LIBDIR})  # fmt: skip

    playbook("seed_export", "-e", f"ship_seed_root={tmp_path / 'shipping'}")
    carried = courier(tmp_path / "shipping", tmp_path)
    playbook("seed_import", "-e", f"ship_seed_root={carried}")
    migration_id = MigrationContext.read(vsphere, events_vm).migration_id
    assert store.load(openstack, migration_id).sync_count == 1
    playbook("sync")
    state = store.load(openstack, migration_id)
    assert state.seeded and state.sync_count == 2 and state.bytes_incr == 0  # nothing written since the export
    assert_volumes_equal_source(vsphere, events_vm, openstack, state)
