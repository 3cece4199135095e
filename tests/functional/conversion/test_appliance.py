"""What libguestfs's appliance on the conversion host can open: the file systems estates' guests use.

A fresh conversion host could not convert an XFS root (RHEL's default) because the appliance lacked
XFS; bindep.txt now brings libguestfs-xfs. A real XFS file system, made and read by the appliance.
"""

import subprocess

from ..conftest import libguestfs_env


def test_the_appliance_makes_and_mounts_xfs(tmp_path):
    env = libguestfs_env()
    disk = tmp_path / "xfs.img"
    argv = ["guestfish", f"-N{disk}=fs:xfs:320M", "-m", "/dev/sda1", "write", "/probe", "written on XFS",
            ":", "vfs-type", "/dev/sda1", ":", "cat", "/probe"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["xfs", "written", "on", "XFS"]
