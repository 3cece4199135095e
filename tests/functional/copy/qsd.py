"""A qemu-storage-daemon serving one qcow2 image over NBD, driven over QMP.

Stands in for a running VM's disk with QEMU's real change tracking (persistent
dirty bitmaps): tests write through the live export, then rotate bitmaps in
one QMP transaction, as a CBT epoch would.
"""

import json
import os
import socket
import subprocess

from ..conftest import require, wait_for_socket


class StorageDaemon:
    def __init__(self, base: str, image: str) -> None:
        self.qmp_path = os.path.join(base, "qmp.sock")
        self.nbd_path = os.path.join(base, "qsd-nbd.sock")
        log = os.path.join(base, "qsd.log")
        argv = [
            require("qemu-storage-daemon"),
            "--blockdev", f"driver=file,node-name=file0,filename={image}",
            "--blockdev", "driver=qcow2,node-name=disk0,file=file0",
            "--nbd-server", f"addr.type=unix,addr.path={self.nbd_path},max-connections=16",
            "--chardev", f"socket,id=qmp0,path={self.qmp_path},server=on,wait=off",
            "--monitor", "chardev=qmp0",
        ]  # fmt: skip
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out)
        wait_for_socket(self.qmp_path, self.proc, log=log)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.qmp_path)
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
                raise RuntimeError(f"{command}: {reply['error']}")
            return reply["return"]

    def export(self, name: str, *, writable: bool = False, bitmaps=()) -> str:
        """Export the disk as ``name`` (with dirty bitmaps as meta contexts); returns its URI."""
        self.cmd("block-export-add", type="nbd", id=name, **{"node-name": "disk0"}, name=name,
                 writable=writable, bitmaps=list(bitmaps))  # fmt: skip
        return f"nbd+unix:///{name}?socket={self.nbd_path}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.sock.close()
