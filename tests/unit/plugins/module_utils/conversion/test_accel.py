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


# Finding QEMU and virt-v2v-in-place where RHEL puts them, and a QEMU without TCG. The QEMUs are named fakes
# answering `-accel help` as Debian's qemu-system-x86_64 (tcg and kvm) and RHEL's qemu-kvm (kvm only) do.

ACCEL_HELP = {"debian": "Accelerators supported in QEMU binary:\ntcg\nkvm\n",
              "rhel": "Accelerators supported in QEMU binary:\nkvm\n"}  # fmt: skip


@pytest.fixture
def rhel_host(tmp_path, monkeypatch):
    """A host with nothing on PATH and RHEL's layout under a fake /usr/libexec."""
    libexec, path = tmp_path / "libexec", tmp_path / "bin"
    libexec.mkdir()
    path.mkdir()
    monkeypatch.setattr(accel, "LIBEXEC", str(libexec))
    monkeypatch.setenv("PATH", str(path))
    accel.has_tcg.cache_clear()
    yield libexec
    accel.has_tcg.cache_clear()


def fake_qemu(where, flavour):
    where.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in ACCEL_HELP[flavour].splitlines()))
    where.chmod(0o755)
    return str(where)


def test_qemu_and_virt_v2v_in_place_are_found_under_libexec_as_rhel_installs_them(rhel_host):
    assert accel.program("virt-v2v-in-place") is None and accel.qemu() == accel.QEMU
    fake_qemu(rhel_host / "qemu-kvm", "rhel")
    (rhel_host / "virt-v2v-in-place").write_text("#!/bin/sh\n")
    (rhel_host / "virt-v2v-in-place").chmod(0o755)
    assert accel.qemu() == str(rhel_host / "qemu-kvm")
    assert accel.program("virt-v2v-in-place") == str(rhel_host / "virt-v2v-in-place")


def test_a_qemu_without_tcg_is_refused_where_kvm_does_not_work(rhel_host, monkeypatch):
    fake_qemu(rhel_host / "qemu-kvm", "rhel")
    monkeypatch.setattr(accel, "accelerator", lambda: "tcg")
    assert "has no TCG" in accel.check_usable()
    monkeypatch.setattr(accel, "accelerator", lambda: "kvm")
    assert accel.check_usable() is None


def test_a_qemu_with_tcg_serves_a_host_without_kvm(rhel_host, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    fake_qemu(tmp_path / "bin" / accel.QEMU, "debian")
    monkeypatch.setattr(accel, "accelerator", lambda: "tcg")
    assert accel.has_tcg(accel.qemu()) and accel.check_usable() is None


def test_no_qemu_at_all_is_said(rhel_host):
    assert "is not installed" in accel.check_usable()
