"""Test doubles of a conversion host's storage stack below os-brick, named as such.

This machine's kernel has no iSCSI initiator and no RBD, so the brick attach mode's iSCSI and RBD
paths run os-brick's real connector classes (``ISCSIConnector``, ``RBDConnector``, ``LinuxSCSI``)
against doubles of what sits under them, following their published behaviour:

- :class:`FakeHost`: the commands os-brick runs (it runs every one through oslo.concurrency's
  ``processutils.execute``, which this replaces) and the host's ``/sys`` and ``/dev``, redirected
  into a directory: every path under them, nothing else. A command no double models is recorded
  in ``unmodelled`` (os-brick swallows most errors, so a raise would go unseen): a test asserts the
  list is empty, and a newer os-brick that runs something new shows up there.
- :class:`FakeIscsiInitiator`: open-iscsi's ``iscsiadm`` (node records, sessions, login and logout,
  with its exit codes: 21 no records or sessions, 15 session exists, 20 iscsid unreachable) and
  what the kernel and udev do for a login: a SCSI host and session in sysfs, and on a scan (the
  session's ``node.session.scan`` is manual, as os-brick sets it) the LUN's block device with its
  WWID and its ``/dev/disk/by-id/scsi-`` link; writing 1 to the device's ``delete`` removes them.
- :class:`FakeCephClient`: ceph-common's ``rbd map``, ``rbd showmapped --format=json`` (Mimic's
  list form) and ``rbd unmap``, with krbd's ``/dev/rbdN`` and the ``/dev/rbd/<pool>/<image>`` link
  ceph's udev rules make.
"""

from __future__ import annotations

import builtins
import glob
import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from oslo_concurrency import processutils

Result = Tuple[int, str, str]  # exit code, stdout, stderr
HOST_PATHS = ("/sys/", "/dev/")


class FakeHost:
    """The host os-brick sees: its commands and its /sys and /dev, under ``root``."""

    def __init__(self, root: Path, monkeypatch) -> None:
        self.root = str(root)
        self.commands: Dict[str, Callable[..., Result]] = {}
        self.ran: List[Tuple[str, ...]] = []
        self.unmodelled: List[Tuple[str, ...]] = []
        self._patch(monkeypatch)

    def on(self, command: str, handler: Callable[..., Result]) -> None:
        self.commands[command] = handler

    def path(self, host_path: str) -> Path:
        """Where ``host_path`` (under /sys or /dev) is kept."""
        return Path(self.root + host_path)

    def _map(self, path):
        if isinstance(path, str) and path.startswith(HOST_PATHS):
            return self.root + path
        return path

    def _unmap(self, path: str) -> str:
        return path[len(self.root) :] if path.startswith(self.root + "/") else path

    def _mapped(self, call: Callable) -> Callable:
        return lambda path, *args, **kwargs: call(self._map(path), *args, **kwargs)

    def _patch(self, monkeypatch) -> None:
        real = {
            "glob": glob.glob, "exists": os.path.exists, "islink": os.path.islink, "realpath": os.path.realpath,
            "readlink": os.readlink, "listdir": os.listdir, "stat": os.stat, "unlink": os.unlink,
            "open": builtins.open,
        }  # fmt: skip
        mapped = {
            name: self._mapped(real[name])
            for name in ("exists", "islink", "readlink", "listdir", "stat", "unlink", "open")
        }
        monkeypatch.setattr(glob, "glob", lambda pattern, *a, **k: [
            self._unmap(p) for p in real["glob"](self._map(pattern), *a, **k)])  # fmt: skip
        monkeypatch.setattr(os.path, "realpath", lambda path, *a, **k: self._unmap(
            real["realpath"](self._map(path), *a, **k)))  # fmt: skip
        for name in ("exists", "islink"):
            monkeypatch.setattr(os.path, name, mapped[name])
        for name in ("readlink", "listdir", "stat", "unlink"):
            monkeypatch.setattr(os, name, mapped[name])
        from os_brick.initiator import linuxscsi

        monkeypatch.setattr(linuxscsi, "open", mapped["open"], raising=False)  # sysfs reads; nothing else's open
        monkeypatch.setattr(processutils, "execute", self._execute)

    def _execute(self, *cmd, process_input=None, check_exit_code=True, **_kwargs):
        """processutils.execute's contract: (stdout, stderr), ProcessExecutionError on an unexpected exit code."""
        cmd = tuple(str(c) for c in cmd)
        self.ran.append(cmd)
        handler = self.commands.get(cmd[0])
        if handler is None:
            self.unmodelled.append(cmd)
            code, out, err = 127, "", f"{cmd[0]}: command not found"
        else:
            code, out, err = handler(*cmd[1:], stdin=process_input)
        allowed = [0] if check_exit_code is True else check_exit_code
        if isinstance(allowed, int) and not isinstance(allowed, bool):
            allowed = [allowed]
        if allowed is not False and code not in allowed:
            raise processutils.ProcessExecutionError(exit_code=code, stdout=out, stderr=err, cmd=" ".join(cmd))
        return out, err

    def write(self, host_path: str, text: str = "") -> None:
        path = self.path(host_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def link(self, host_path: str, target: str) -> None:
        path = self.path(host_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)

    def remove(self, host_path: str) -> None:
        path = self.path(host_path)
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                child.unlink() if child.is_symlink() or child.is_file() else child.rmdir()
            path.rmdir()


class FakeIscsiInitiator:
    """open-iscsi and the kernel's SCSI layer on ``host``, with a target exporting ``luns`` (LUN -> WWID)."""

    def __init__(self, host: FakeHost, *, iscsid_running: bool = True, luns: Optional[Dict[int, str]] = None) -> None:
        self.host, self.iscsid_running = host, iscsid_running
        self.luns = luns if luns is not None else {}
        self.nodes: Dict[Tuple[str, str], Dict[str, str]] = {}
        self.sessions: Dict[int, Tuple[str, str, int]] = {}  # sid -> portal, iqn, SCSI host number
        self.devices: Dict[str, Tuple[int, int]] = {}  # sdX -> sid, LUN
        host.on("iscsiadm", self.iscsiadm)
        host.on("grep", self.grep)
        host.on("tee", self.tee)
        host.on("blockdev", lambda *args, stdin=None: (0, "", "") if host.path(args[-1]).exists() else (1, "", ""))
        host.on("multipathd", lambda *_a, stdin=None: (1, "", "can't connect to the multipathd socket"))

    def grep(self, *args, stdin=None) -> Result:
        """os-brick greps iscsiadm's binary for manual scan support (open-iscsi 2.0.874 and later)."""
        if args == ("-F", "node.session.scan", "/sbin/iscsiadm"):
            return 0, "", "grep: /sbin/iscsiadm: binary file matches"
        self.host.unmodelled.append(("grep", *args))
        return 2, "", ""

    def iscsiadm(self, *args, stdin=None) -> Result:
        opts = dict(zip(args[::2], args[1::2]))
        if args[:2] == ("-m", "discoverydb"):  # nothing discovered (Cinder gave the portal): static nodes only
            static = "".join(f"Target: {iqn}\n\tPortal: {p},-1\n\t\tIface Name: default\n" for p, iqn in self.nodes)
            none = "No targets found.\n"
            return 0, f"SENDTARGETS:\n{none}iSNS:\n{none}STATIC:\n{static or none}FIRMWARE:\n{none}", ""
        if args[:2] == ("-m", "session"):
            lines = [f"tcp: [{sid}] {p},1 {iqn} (non-flash)" for sid, (p, iqn, _h) in sorted(self.sessions.items())]
            return (0, "\n".join(lines) + "\n", "") if lines else (21, "", "iscsiadm: No active sessions.")
        if args == ("-m", "node"):
            lines = [f"{p},1 {iqn}" for p, iqn in self.nodes]
            return (0, "\n".join(lines) + "\n", "") if lines else (21, "", "iscsiadm: No records found")
        node = (opts.get("-p", ""), opts.get("-T", ""))
        if "--op" in args:
            op = args[args.index("--op") + 1]
            if op == "new":
                self.nodes[node] = {}
                return 0, f"New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] {node[0]},-1 {node[1]}] added", ""
            if node not in self.nodes:
                return 21, "", "iscsiadm: No records found"
            if op == "update":
                self.nodes[node][opts["-n"]] = opts["-v"]
            elif op == "delete":
                del self.nodes[node]
            return 0, "", ""
        if node not in self.nodes:
            return 21, "", "iscsiadm: No records found"
        target = f"[iface: default, target: {node[1]}, portal: {node[0]}]"
        if "--login" in args:
            if not self.iscsid_running:
                return 20, "", (
                    f"iscsiadm: can not connect to iSCSI daemon (111)!\niscsiadm: Could not login to {target}.\n"
                    "iscsiadm: initiator reported error (20 - could not connect to iscsid)"
                )  # fmt: skip
            if node in [(p, iqn) for p, iqn, _h in self.sessions.values()]:
                return 15, "", "iscsiadm: default: 1 session requested, but 1 already present."
            sid, scsi_host = len(self.sessions) + 1, 7 + len(self.sessions)
            self.sessions[sid] = (*node, scsi_host)
            for cls in ("iscsi_host", "scsi_host"):
                self.host.path(f"/sys/class/{cls}/host{scsi_host}/device/session{sid}").mkdir(parents=True)
            if self.nodes[node].get("node.session.scan") != "manual":
                self._scan(scsi_host, sid)
            return 0, f"Logging in to {target}\nLogin to {target} successful.", ""
        if "--logout" in args:
            found = [sid for sid, (p, iqn, _h) in self.sessions.items() if (p, iqn) == node]
            if not found:
                return 21, "", "iscsiadm: No matching sessions found"
            for sid in found:
                self._logout(sid)
            return 0, f"Logging out of session {target}\nLogout of {target} successful.", ""
        return 0, "", ""  # showing a node record

    def tee(self, *args, stdin=None) -> Result:
        path = args[-1]
        if path.endswith("/scan"):  # /sys/class/scsi_host/hostH/scan: "channel target lun", '-' for all
            scsi_host = int(path.split("/")[4][4:])
            sid = next(s for s, (_p, _i, h) in self.sessions.items() if h == scsi_host)
            lun = stdin.split()[2]
            self._scan(scsi_host, sid, None if lun == "-" else int(lun))
        elif path.endswith("/device/delete") and stdin.strip() == "1":
            self._delete(path.split("/")[3])
        else:
            self.host.unmodelled.append(("tee", *args))
        return 0, stdin, ""

    def _scan(self, scsi_host: int, sid: int, only: Optional[int] = None) -> None:
        for lun, wwid in self.luns.items():
            if (only is not None and lun != only) or any(v == (sid, lun) for v in self.devices.values()):
                continue
            name = "sd" + "zyxwvutsrq"[len(self.devices)]  # far from the host's own disks
            hctl = f"{scsi_host}:0:0:{lun}"
            session = f"/sys/class/scsi_host/host{scsi_host}/device/session{sid}"
            self.host.path(f"{session}/target{scsi_host}:0:0/{hctl}/block/{name}").mkdir(parents=True)
            self.host.path(f"/sys/class/iscsi_host/host{scsi_host}/device/session{sid}/target{scsi_host}:0:0").mkdir(
                exist_ok=True
            )
            self.host.write(f"/sys/block/{name}/device/wwid", f"naa.{wwid}\n")
            self.host.write(f"/sys/block/{name}/device/delete")
            self.host.write(f"/dev/{name}")
            self.host.link(f"/dev/disk/by-id/scsi-3{wwid}", f"../../{name}")  # udev: 3 is NAA in page 0x83
            self.devices[name] = (sid, lun)

    def _delete(self, name: str) -> None:
        sid, lun = self.devices.pop(name)
        scsi_host = self.sessions[sid][2]
        self.host.remove(f"/sys/class/scsi_host/host{scsi_host}/device/session{sid}/target{scsi_host}:0:0/"
                         f"{scsi_host}:0:0:{lun}")  # fmt: skip
        self.host.remove(f"/sys/block/{name}")
        self.host.remove(f"/dev/{name}")
        for link in self.host.path("/dev/disk/by-id").glob("scsi-*"):
            if os.readlink(link) == f"../../{name}":
                link.unlink()

    def _logout(self, sid: int) -> None:
        for name in [n for n, (s, _lun) in self.devices.items() if s == sid]:
            self._delete(name)
        scsi_host = self.sessions.pop(sid)[2]
        for cls in ("iscsi_host", "scsi_host"):
            self.host.remove(f"/sys/class/{cls}/host{scsi_host}")


class FakeCephClient:
    """ceph-common's ``rbd`` and krbd on ``host``, reaching a cluster that has ``images`` ("pool/image")."""

    def __init__(self, host: FakeHost, *, installed: bool = True, images: Optional[List[str]] = None) -> None:
        self.host, self.installed = host, installed
        self.images = images if images is not None else []
        self.mapped: Dict[str, str] = {}  # /dev/rbdN -> pool/image
        self.args: List[Tuple[str, ...]] = []
        host.on("which", self.which)
        host.on("rbd", self.rbd)

    def which(self, *args, stdin=None) -> Result:
        return (0, "/usr/bin/rbd\n", "") if self.installed and args == ("rbd",) else (1, "", "")

    def rbd(self, *args, stdin=None) -> Result:
        self.args.append(args)
        if args[0] == "map":
            image = f"{args[args.index('--pool') + 1]}/{args[1]}"
            if image not in self.images:
                return 2, "", f"rbd: error opening image {args[1]}: (2) No such file or directory"
            device = f"/dev/rbd{len(self.mapped)}"
            self.host.write(device)
            self.host.link(f"/dev/rbd/{image}", f"../../{device[5:]}")
            self.mapped[device] = image
            return 0, device + "\n", ""
        if args[0] == "showmapped":
            listing = [
                {"id": d[8:], "pool": i.split("/")[0], "namespace": "", "name": i.split("/")[1], "snap": "-",
                 "device": d}
                for d, i in self.mapped.items()
            ]  # fmt: skip
            return 0, json.dumps(listing), ""
        if args[0] == "unmap":
            image = self.mapped.pop(args[1])
            self.host.remove(f"/dev/rbd/{image}")
            self.host.remove(args[1])
            return 0, "", ""
        self.host.unmodelled.append(("rbd", *args))
        return 22, "", "rbd: unknown command"
