"""The KVM probe: KVM only when a kernel boots (and panics) under it in time.

The QEMU here is a named fake (a shell script): whether the real /dev/kvm of the machine running
the tests works is not the question; how the probe reads each outcome is."""

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion import accel


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """Point the probe at a fake device, a fake kernel and a fake QEMU whose behaviour the test writes."""
    (tmp_path / "kvm").write_text("")
    (tmp_path / "vmlinuz-6.1.0-test").write_text("")
    qemu = tmp_path / "fake-qemu"
    monkeypatch.setattr(accel, "KVM_DEVICE", str(tmp_path / "kvm"))
    monkeypatch.setattr(accel, "KERNELS", str(tmp_path / "vmlinuz-*"))
    monkeypatch.setattr(accel, "QEMU", str(qemu))
    monkeypatch.setattr(accel, "PROBE_TIMEOUT_S", 1.0)

    def answer(script: str) -> str:
        qemu.write_text("#!/bin/sh\n" + script + "\n")
        qemu.chmod(0o755)
        accel.accelerator.cache_clear()
        return accel.accelerator()

    yield answer
    accel.accelerator.cache_clear()


def test_a_kernel_that_panics_and_exits_in_time_means_kvm(probe):
    assert probe("exit 0") == "kvm"


def test_a_guest_that_hangs_silently_means_tcg(probe):
    """What this project's CI machines do: the vCPU starts, the kernel never gets anywhere."""
    assert probe("sleep 30") == "tcg"


def test_qemu_aborting_means_tcg(probe):
    assert probe("echo 'failed to set MSR 0x10a' >&2; exit 1") == "tcg"


def test_no_kernel_to_boot_means_tcg(probe, monkeypatch, tmp_path):
    monkeypatch.setattr(accel, "KERNELS", str(tmp_path / "nothing-*"))
    assert probe("exit 0") == "tcg"
