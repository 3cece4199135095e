"""Conversion hosts for the tests: network namespaces on this machine, each with its own sshd.

Each host is a network namespace with an address of its own (a /30 on a veth pair to this
machine), its own hostname (a UTS namespace) and its own state directory (a private bind mount
over the default ``state_dir``, /var/lib/xms-warm-migration), so what one host keeps locally
(locks, journals, measured times) is invisible to the other, as on separate machines. Ansible
reaches it over real SSH. The labs listen on this machine's loopback only, which a namespace
does not share: socat carries each lab port into it (TCP on the namespace's loopback, to a UNIX
socket, to TCP on this machine's loopback). Files are shared, as the labs' disks and the venv
must be.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import List

# The labs' endpoints the modules reach: Keystone, Nova, Cinder, Placement, Barbican, Neutron, vcsim.
LAB_PORTS = [5000, 8774, 8776, 8778, 9311, 9696, 8989]
STATE_DIR = "/var/lib/xms-warm-migration"  # the modules' default state_dir: private per host


@dataclass
class ConversionHost:
    name: str  # inventory name and hostname
    index: int
    work: str
    processes: List[subprocess.Popen] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return f"xms-{self.name}"

    @property
    def address(self) -> str:
        """In 198.51.100.0/24 (TEST-NET-2; this machine itself may sit in TEST-NET-1): a /30 per host, .1 ours."""
        return f"198.51.100.{self.index * 4 + 2}"

    @property
    def state_dir(self) -> str:
        """Where this host's state_dir really is, seen from this machine."""
        return os.path.join(self.work, "state")

    def inventory_vars(self, key: str) -> dict:
        return {
            "ansible_host": self.address, "ansible_connection": "ssh", "ansible_user": "root",
            "ansible_ssh_private_key_file": key, "ansible_python_interpreter": sys.executable,
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
                                       " -o IdentitiesOnly=yes -o LogLevel=ERROR",
        }  # fmt: skip


class ConversionHosts:
    """``with ConversionHosts(tmp, ["conv-a", "conv-b"], env) as hosts:``; everything is undone on exit."""

    def __init__(self, work: str, names: List[str], env: dict) -> None:
        self.work, self.env = work, env
        self.hosts = [ConversionHost(n, i, os.path.join(work, n)) for i, n in enumerate(names)]
        self.key = os.path.join(work, "id_ed25519")
        self.bridges: List[subprocess.Popen] = []

    def __enter__(self) -> ConversionHosts:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        for host in self.hosts:
            for proc in host.processes:
                proc.kill()
                proc.wait()
            _quiet(["ip", "netns", "del", host.namespace])
        for proc in self.bridges:
            proc.kill()
            proc.wait()

    def _start(self) -> None:
        os.makedirs(self.work, mode=0o700, exist_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key])
        sockets = os.path.join(self.work, "ports")
        os.makedirs(sockets, mode=0o700)
        for port in LAB_PORTS:
            self.bridges.append(_spawn(["socat", f"UNIX-LISTEN:{sockets}/{port}.sock,fork,mode=600",
                                        f"TCP:127.0.0.1:{port}"]))  # fmt: skip
        os.makedirs(STATE_DIR, exist_ok=True)  # the mount point of each host's private state_dir
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        for host in self.hosts:
            self._start_host(host, sockets)
        for host in self.hosts:
            _wait_for_ssh(host, self.key)

    def _start_host(self, host: ConversionHost, sockets: str) -> None:
        ns, outer, inner = host.namespace, f"xmsc{host.index}h", f"xmsc{host.index}n"
        _quiet(["ip", "netns", "del", ns])  # left by a killed run
        _quiet(["ip", "link", "del", outer])
        os.makedirs(host.state_dir, mode=0o700)
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner])
        _run(["ip", "link", "set", inner, "netns", ns])
        _run(["ip", "addr", "add", f"198.51.100.{host.index * 4 + 1}/30", "dev", outer])
        _run(["ip", "link", "set", outer, "up"])
        for argv in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{host.address}/30", "dev", inner],
                     ["ip", "link", "set", inner, "up"]):  # fmt: skip
            _run(["ip", "netns", "exec", ns, *argv])
        for port in LAB_PORTS:
            host.processes.append(_spawn(["ip", "netns", "exec", ns, "socat",
                                          f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
                                          f"UNIX-CONNECT:{sockets}/{port}.sock"]))  # fmt: skip
        config = os.path.join(host.work, "sshd_config")
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(host.work, "host_key")])
        shutil.copy(f"{self.key}.pub", os.path.join(host.work, "authorized_keys"))
        path = self.env["PATH"]
        with open(config, "w") as handle:
            handle.write("\n".join([
                f"ListenAddress {host.address}", f"HostKey {host.work}/host_key",
                f"AuthorizedKeysFile {host.work}/authorized_keys", "PermitRootLogin prohibit-password",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
                f"PidFile {host.work}/sshd.pid", "MaxSessions 50", "MaxStartups 50", "Subsystem sftp internal-sftp",
                # What the tasks see there: the labs' tools first on PATH, the labs' files, as on this machine.
                f"SetEnv PATH={path} XMS_LAB_DIR={self.env['XMS_LAB_DIR']}"
                f" OS_CLIENT_CONFIG_FILE={self.env['OS_CLIENT_CONFIG_FILE']}",
            ]) + "\n")  # fmt: skip
        # Its own hostname and its own state_dir (a private mount namespace; the labs' mounts stay visible).
        script = (f"hostname {host.name} && mount --bind {host.state_dir} {STATE_DIR}"
                  f" && exec /usr/sbin/sshd -D -e -f {config}")  # fmt: skip
        argv = ["ip", "netns", "exec", ns, "unshare", "--uts", "--mount", "--propagation", "slave", "sh", "-c", script]
        host.processes.append(_spawn(argv, log=os.path.join(host.work, "sshd.log")))


def _wait_for_ssh(host: ConversionHost, key: str) -> None:
    deadline = time.monotonic() + 30
    argv = ["ssh", "-i", key, *host.inventory_vars(key)["ansible_ssh_common_args"].split(), f"root@{host.address}",
            "hostname"]  # fmt: skip
    while time.monotonic() < deadline:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        if done.returncode == 0 and done.stdout.strip() == host.name:
            return
        time.sleep(0.3)
    with open(os.path.join(host.work, "sshd.log")) as log:
        raise RuntimeError(f"conversion host {host.name} does not answer over SSH: {log.read()[-2000:]}")


def _spawn(argv: List[str], log: str = os.devnull) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def _run(argv: List[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _quiet(argv: List[str]) -> None:
    subprocess.run(argv, check=False, capture_output=True)
