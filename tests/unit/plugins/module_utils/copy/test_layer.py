"""The format layer's decisions that need no QEMU: which volumes need it, and the block graph it asks for."""

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.copy import layer
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.errors import TargetError
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.layer import VolumeFormat


def test_only_raw_plaintext_is_written_directly():
    assert not layer.needs_layer(VolumeFormat.RAW, encrypted=False)
    assert layer.needs_layer(VolumeFormat.RAW, encrypted=True)
    assert layer.needs_layer(VolumeFormat.QCOW2, encrypted=False)


def test_cinders_format_is_taken_as_said_and_a_missing_one_is_raw():
    assert layer.volume_format(None, "v") is VolumeFormat.RAW
    assert layer.volume_format("qcow2", "v") is VolumeFormat.QCOW2
    with pytest.raises(TargetError) as err:
        layer.volume_format("vhd", "v")
    assert "vhd" in str(err.value) and err.value.parameter == "attach_mode"


def test_an_encrypted_raw_volume_is_opened_as_luks_by_its_secret_id(tmp_path):
    node = layer._node(str(tmp_path / "dev"), VolumeFormat.RAW, "k")
    assert node == {"node-name": "top", "driver": "luks", "key-secret": "k",
                    "file": {"driver": "file", "filename": str(tmp_path / "dev")}}  # fmt: skip


def chain(monkeypatch, images):
    """Mock of ``qemu-img info --backing-chain`` (its real answers are exercised in tests/functional)."""
    monkeypatch.setattr(layer, "_chain", lambda _path: images)


def test_a_chain_takes_each_backing_format_from_its_overlay_and_keys_every_encrypted_layer(monkeypatch):
    chain(monkeypatch, [
        {"filename": "/s/volume-1.snap", "backing-filename-format": "qcow2", "encrypted": True},
        {"filename": "/s/volume-1", "encrypted": True},
    ])  # fmt: skip
    node = layer._node("/s/volume-1.snap", VolumeFormat.QCOW2, "k")
    assert node["driver"] == "qcow2" and node["encrypt"] == {"format": "luks", "key-secret": "k"}
    backing = node["backing"]
    assert backing["driver"] == "qcow2" and backing["encrypt"]["key-secret"] == "k" and backing["backing"] is None


def test_a_backing_file_of_unrecorded_format_is_refused_never_probed(monkeypatch):
    chain(monkeypatch, [{"filename": "/s/volume-1.snap"}, {"filename": "/s/volume-1"}])
    with pytest.raises(TargetError) as err:
        layer._node("/s/volume-1.snap", VolumeFormat.QCOW2, None)
    assert "does not record the format" in str(err.value) and "rebase" in err.value.hint


def test_an_encrypted_layer_cinder_did_not_call_encrypted_is_refused(monkeypatch):
    chain(monkeypatch, [{"filename": "/s/volume-1", "encrypted": True}])
    with pytest.raises(TargetError) as err:
        layer._node("/s/volume-1", VolumeFormat.QCOW2, None)
    assert "encrypted" in str(err.value)
