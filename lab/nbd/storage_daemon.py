"""A qemu-storage-daemon serving one qcow2 image over NBD, driven over QMP.

Stands in for a running VM's disk with QEMU's real change tracking (dirty
bitmaps): tests and the demo write through the live export, then rotate
bitmaps in one QMP transaction, as a CBT epoch would. Used by the copy
engine's tests and by the engine demo.
"""

import json
import os
import shutil
import socket
import subprocess
import time


def wait_for_socket(path: str, proc: subprocess.Popen, log: str = "", timeout: float = 30.0) -> None:
    """Wait until ``proc`` accepts connections on the unix socket ``path`` (the file alone is not enough)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            with open(log or os.devnull) as handle:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}: {handle.read()[-2000:]}")
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing accepts connections on {path}") from None
            time.sleep(0.02)
        finally:
            probe.close()


class Qmp:
    """A QMP session on a unix socket (QEMU's JSON control protocol)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.stream = self.sock.makefile("rw")
        json.loads(self.stream.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, command: str, **args):
        self.stream.write(json.dumps({"execute": command, "arguments": args}) + "\n")
        self.stream.flush()
        while True:
            reply = json.loads(self.stream.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"{command}: {reply['error']['desc']}")
            return reply["return"]

    def close(self) -> None:
        self.sock.close()


class StorageDaemon:
    def __init__(self, base: str, image: str) -> None:
        qmp_path = os.path.join(base, "qmp.sock")
        self.nbd_path = os.path.join(base, "qsd-nbd.sock")
        log = os.path.join(base, "qsd.log")
        argv = [
            shutil.which("qemu-storage-daemon") or "qemu-storage-daemon",
            "--blockdev", f"driver=file,node-name=file0,filename={image}",
            "--blockdev", "driver=qcow2,node-name=disk0,file=file0",
            "--nbd-server", f"addr.type=unix,addr.path={self.nbd_path},max-connections=16",
            "--chardev", f"socket,id=qmp0,path={qmp_path},server=on,wait=off",
            "--monitor", "chardev=qmp0",
        ]  # fmt: skip
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out)
        wait_for_socket(qmp_path, self.proc, log)
        self.qmp = Qmp(qmp_path)
        self.cmd = self.qmp.cmd

    def export(self, name: str, *, writable: bool = False, bitmaps=()) -> str:
        """Export the disk as ``name`` (with dirty bitmaps as meta contexts); returns its URI."""
        self.cmd("block-export-add", type="nbd", id=name, **{"node-name": "disk0"}, name=name,
                 writable=writable, bitmaps=list(bitmaps))  # fmt: skip
        return f"nbd+unix:///{name}?socket={self.nbd_path}"

    def rotate(self, old: str, new: str) -> None:
        """Close a change-tracking epoch atomically: ``old`` stops recording, ``new`` starts."""
        self.cmd("transaction", actions=[
            {"type": "block-dirty-bitmap-disable", "data": {"node": "disk0", "name": old}},
            {"type": "block-dirty-bitmap-add", "data": {"node": "disk0", "name": new}},
        ])  # fmt: skip

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.qmp.close()
