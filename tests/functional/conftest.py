"""Shared helpers for tests against real components: processes that serve NBD, digests."""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import appliance_env

# The labs' helpers are shared by the tests and the demo: lab/nbd (a qemu-storage-daemon
# driver) and lab/demo (putting lab VMs back after a migration).
LAB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "lab")
sys.path[:0] = [os.path.join(LAB, "nbd"), os.path.join(LAB, "demo")]
from storage_daemon import wait_for_socket  # noqa: E402 - found through the path set just above


def require(binary: str) -> str:
    """The path of ``binary``; a missing one FAILS the test (a suite must not skip a part)."""
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if not path:
        pytest.fail(f"{binary} is not installed: run scripts/setup-host.sh")
    return path


def libguestfs_env() -> dict:
    """The environment the collection runs libguestfs's tools in (virt_v2v.appliance_env: the direct backend, TCG
    where KVM cannot run a Linux kernel), its temporary files in the system's."""
    return appliance_env(tempfile.gettempdir())


def guest_image(script: str) -> str:
    """The image a lab guest builder (``lab/guest/<script>``) built, or took from its cache; a failed build fails."""
    built = subprocess.run(["bash", os.path.join(LAB, "guest", script)], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        pytest.fail(f"lab/guest/{script} failed:\n{built.stderr[-2000:]}")
    return built.stdout.strip().splitlines()[-1]


def qemu_img(*args: str) -> None:
    """``qemu-img ARGS`` through the lab's Cinder wrapper, which retries exactly Debian 12's QEMU 7.2
    PBKDF2 benchmark failure when writing a LUKS header (lab/openstack/qemu-img-retry says why)."""
    require("qemu-img")
    done = subprocess.run([os.path.join(LAB, "openstack", "qemu-img-retry"), *args], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


class Servers:
    """Starts NBD servers on unix sockets under one temporary directory and stops them all."""

    def __init__(self, base):
        self.base = base
        self.procs = []
        self.count = 0

    def _start(self, name: str, argv) -> str:
        """Start a server whose log goes to a file (a full pipe would stall it) and wait for its socket."""
        self.count += 1
        sock = os.path.join(self.base, f"{name}{self.count}.sock")
        log = os.path.join(self.base, f"{name}{self.count}.log")
        with open(log, "wb") as out:
            proc = subprocess.Popen([arg.replace("{sock}", sock) for arg in argv], stderr=out, stdout=out)
        self.procs.append(proc)
        wait_for_socket(sock, proc, log=log)
        return f"nbd+unix:///?socket={sock}"

    def nbdkit(self, *args: str) -> str:
        """``nbdkit [filters...] PLUGIN [params]``; returns the export's URI."""
        return self._start("nbdkit", [require("nbdkit"), "-U", "{sock}", "-f", "--exit-with-parent", *args])

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def servers(tmp_path):
    srv = Servers(str(tmp_path))
    yield srv
    srv.stop()


def sha256_nbd(uri: str, length: int = 0) -> str:
    """Digest of an NBD export (all of it, or its first ``length`` bytes)."""
    import nbd

    handle = nbd.NBD()
    handle.connect_uri(uri)
    size = length or handle.get_size()
    digest = hashlib.sha256()
    for offset in range(0, size, 16 << 20):
        digest.update(handle.pread(min(16 << 20, size - offset), offset))
    handle.shutdown()
    return digest.hexdigest()


def sha256_file(path: str, length: int = 0) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        remaining = length or os.fstat(handle.fileno()).st_size
        if length == 0 and remaining == 0:  # a block device: fstat says 0
            remaining = handle.seek(0, os.SEEK_END)
            handle.seek(0)
        while remaining > 0:
            chunk = handle.read(min(16 << 20, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()
