"""Attaching a target volume to the conversion host for writing, and always detaching it.

Two ways, chosen by ``mode``:

- ``brick``: this host attaches the volume itself, as Cinder's own backup
  service does: an attachment through the block-storage API with this host's
  connector, then os-brick connects the returned connection (iSCSI, RBD, NFS,
  FC...) and gives a device or file path. Needs root, as os-brick does; its
  privileged calls run in this process (no privsep helper to install).
- ``nova``: the conversion host is an instance of the target cloud; Nova
  attaches the volume to it and the device appears under
  ``/dev/disk/by-id`` by the volume's serial. The hypervisor already
  presents the guest's view (decrypted, raw), whatever the volume's format.

With ``brick``, Cinder's connection says what the path holds: its ``format``
(raw, or qcow2 for an NFS volume that is encrypted or was snapshotted) and
whether it is ``encrypted``. Anything but raw plaintext is written through
:mod:`..copy.layer`, with the key the cloud will use at boot: the volume's
secret in the key manager, read with the migration's own credentials.
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import glob
import logging
import os
import socket
import threading
import warnings
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.common.waiter import wait_for
from ansible_collections.xms.warm_migration.plugins.module_utils.copy import layer
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import AttachError

ATTACH_TIMEOUT = 300.0
# Volumes attach side by side (HeldAttachment), but os-brick's import, connect and disconnect run
# one at a time: two volumes on one NFS share would otherwise race to mount (or unmount) it, and
# the import silences warnings through the process-wide filter list.
_BRICK = threading.Lock()
# os-brick serialises its iSCSI, FC and NVMe logins across processes with lock files; a wave's runs on
# one conversion host attach side by side. Locks need no persistence: /run/lock is cleared at boot.
BRICK_LOCK_DIR = "/run/lock/xms-warm-migration"

logging.getLogger("os_brick").addHandler(logging.NullHandler())  # see _os_brick


@contextmanager
def attach_for_write(
    client, volume_id: str, *, mode: str = "brick", server_id: Optional[str] = None, as_file: bool = False
) -> Iterator[str]:
    """Yield where this host writes the guest's view of ``volume_id``; detach on the way out, also on failure.

    A path or an NBD URI (of a format layer); ``as_file`` asks for a path in every case, as virt-v2v needs.
    """
    if mode == "brick":
        with _brick(client, volume_id, as_file) as path:
            yield path
    elif mode == "nova":
        if not server_id:
            raise AttachError("attach_mode nova needs the conversion host's server", parameter="conversion_server")
        with _nova(client, volume_id, server_id) as path:
            yield path
    else:
        raise AttachError(f"unknown attach mode '{mode}'", parameter="attach_mode", hint="Use brick or nova")


def _os_brick():
    """os-brick's connector, quiet: importing it imports eventlet, which warns that it is deprecated,
    and its connectors log what they probe (NVMe multipath, remote file systems) at WARNING through
    no handler. Both would land on the module's stderr, which Ansible copies into every async
    result. Neither is for the operator: an attach that fails says why in its own error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from os_brick import privileged
            from os_brick.initiator import connector
            from oslo_config import cfg
    except ImportError:
        raise AttachError(
            "os-brick is not installed on the conversion host",
            parameter="attach_mode",
            hint="pip install os-brick, or use attach_mode nova on a conversion host inside the cloud",
        ) from None
    privileged.default.set_client_mode(False)
    # Without a lock path os-brick's first external lock (every iSCSI connect takes one) fails with
    # "value required for option lock_path"; a service sets it from its config, this tool has none.
    cfg.CONF.set_override("lock_path", BRICK_LOCK_DIR, group="os_brick")
    return connector


@functools.cache
def _connector_properties(connector) -> Dict[str, object]:
    """This host's connector, as Cinder is to see it; asked once per process (and os-brick connector):
    os-brick runs half a dozen commands for it, and every volume of a sync would ask the same."""
    return connector.get_connector_properties(None, _my_ip(), False, False)


def warm_up() -> None:
    """Import os-brick and ask this host's connector ahead of a sync's first attach, on a thread of
    the caller's while its main thread waits on vSphere and the record: under a wave's load the
    import alone took 0.4-0.8 s, all of it between the sync's start and Cinder's first request.
    Quiet: what fails here fails again, and is raised, when the attach asks the same."""
    with contextlib.suppress(Exception):
        with _BRICK:
            connector = _os_brick()
        _connector_properties(connector)


# What a conversion host needs for each protocol Cinder back-ends hand out (bindep.txt's conversion-host lines).
CONNECT_HINTS = {
    "iscsi": "The host needs an iSCSI initiator (open-iscsi / iscsi-initiator-utils, iscsid running, and"
    " multipath-tools / device-mapper-multipath for multipath back-ends) and a route to the storage network's portals",
    "rbd": "The host needs the Ceph client (ceph-common), the rbd kernel module, and a route to the Ceph monitors",
    "nfs": "The host needs the NFS client (nfs-common / nfs-utils) and a route to the share's server",
    "fibre_channel": "The host needs an HBA zoned to the array, and multipath-tools / device-mapper-multipath",
    "nvmeof": "The host needs nvme-cli and the nvme-fabrics (nvme-tcp or nvme-rdma) modules, and a route to the"
    " storage network",
}


NOVA = "attach_mode: nova on a conversion host inside the cloud"


@contextmanager
def _brick(client, volume_id: str, as_file: bool) -> Iterator[str]:
    if os.geteuid() != 0:
        raise AttachError(
            "attach_mode brick needs root on the conversion host",
            parameter="attach_mode",
            hint="Run the task with become: true",
        )
    with _BRICK:
        connector = _os_brick()
    os.makedirs(BRICK_LOCK_DIR, mode=0o700, exist_ok=True)
    storage = client.conn.block_storage
    properties = dict(_connector_properties(connector))
    release_stale_attachments(client, volume_id, properties.get("host") or socket.gethostname())
    try:
        attachment = storage.create_attachment(volume_id, connector=properties, mode="rw")
    except Exception as err:  # Cinder's refusal, whatever its type, named with the volume
        raise AttachError(
            f"Cinder refused to attach volume {volume_id} to this host: {_text(err)}",
            hint="The volume must be 'available' (not attached elsewhere)",
        ) from None
    info = dict(attachment.connection_info or {})
    protocol = info.get("driver_volume_type", "")
    try:  # what the path will hold, and its key: refused here, before anything is connected or written
        fmt = layer.volume_format(info.get("format"), volume_id)
        passphrase = _passphrase(client, volume_id) if info.get("encrypted") else None
    except Exception:  # re-raised unchanged once the attachment is undone
        _detach(storage, attachment.id, volume_id)
        raise
    try:
        brick = connector.InitiatorConnector.factory(  # RBD mapped by the kernel (krbd): a block device to write
            protocol, None, use_multipath=False, do_local_attach=True, nfs_mount_point_base=info.get("mount_point_base")
        )
        with _BRICK:
            device = brick.connect_volume(info)
    except Exception as err:  # os-brick raises its own exceptions: undone, then named with what would help
        _detach(storage, attachment.id, volume_id)
        raise AttachError(
            f"os-brick could not connect volume {volume_id} ({protocol}): {_text(err)}",
            parameter="attach_mode",
            hint=f"{CONNECT_HINTS[protocol]}; or use {NOVA}" if protocol in CONNECT_HINTS else f"Use {NOVA}",
        ) from None
    try:
        storage.complete_attachment(attachment.id)
        path = device["path"]
        if not isinstance(path, str):  # RBD whose connection turns krbd off: a Python file object, no path
            raise AttachError(
                f"os-brick attaches volume {volume_id} ({protocol}) as a file object, not a path",
                parameter="attach_mode",
                hint=f"Use {NOVA}",
            )
        with layer.plain_view(path, fmt, passphrase, as_file=as_file) as view:
            yield view
    finally:
        try:
            with _BRICK:
                brick.disconnect_volume(info, device)
        finally:
            _detach(storage, attachment.id, volume_id)


class HeldAttachment:
    """One volume attached for writing by a thread of its own, which holds it until ``close``.

    Cinder takes seconds per attachment and as long again per detach, most of it waiting on its
    volume service: a VM's volumes attached side by side start its copies (or its conversion, in
    the downtime) that much sooner. The attachment lives on its thread from attach to detach
    because what ``attach_for_write`` may start for it (a format layer's qemu-storage-daemon)
    dies with the thread that started it. ``close`` waits for the thread's own word that it is
    done, not for the thread: a thread that ran os-brick (eventlet's greenlets) never ends for
    ``Thread.join``.
    """

    def __init__(
        self, client, volume_id: str, *, mode: str = "brick", server_id: Optional[str] = None, as_file: bool = False
    ) -> None:
        self.volume_id = volume_id
        self._ready, self._release, self._done = threading.Event(), threading.Event(), threading.Event()
        self._path: Optional[str] = None
        self._error: Optional[BaseException] = None  # the attach's, raised by path()
        self._detach_error: Optional[BaseException] = None  # the detach's, raised by close()
        threading.Thread(
            target=self._hold, args=(client, mode, server_id, as_file), name=f"xms-attach-{volume_id[:8]}", daemon=True
        ).start()

    def _hold(self, client, mode: str, server_id: Optional[str], as_file: bool) -> None:
        try:
            with attach_for_write(client, self.volume_id, mode=mode, server_id=server_id, as_file=as_file) as path:
                self._path = path
                self._ready.set()
                self._release.wait()
        except BaseException as err:  # handed to the thread that asks for the path, or closes
            if self._path is None:
                self._error = err
            else:
                self._detach_error = err
        finally:
            self._ready.set()
            self._done.set()

    def path(self) -> str:
        """Where this host writes the volume, once attached; the attach's error if it failed."""
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self._path or ""

    def release(self) -> None:
        """Start the detach; ``close`` waits for it."""
        self._release.set()

    def close(self) -> None:
        """Detach (if attached) and wait for it; the detach's error, if any."""
        self.release()
        self._done.wait()
        if self._detach_error is not None:
            raise self._detach_error


def close_all(held: List[HeldAttachment], *, raising: bool = True) -> None:
    """Detach every volume of ``held`` side by side; the first detach error is raised if ``raising``
    (every other volume is detached all the same)."""
    for each in held:
        each.release()
    errors = []
    for each in held:
        try:
            each.close()
        except Exception as err:  # every volume detaches whatever one raised; first error raised after
            errors.append(err)
    if errors and raising:
        raise errors[0]


@contextmanager
def attach_all(
    client, volume_ids: List[str], *, mode: str = "brick", server_id: Optional[str] = None, as_file: bool = False
) -> Iterator[List[str]]:
    """Yield the paths of ``volume_ids`` (in order), attached side by side; all detached on the way out."""
    held = [HeldAttachment(client, v, mode=mode, server_id=server_id, as_file=as_file) for v in volume_ids]
    try:
        yield [each.path() for each in held]
    except BaseException:
        close_all(held, raising=False)  # the error that stopped the work matters more than a detach's
        raise
    close_all(held)


def _passphrase(client, volume_id: str) -> bytes:
    """The LUKS passphrase of an encrypted volume, as Cinder and Nova derive it: hex of the key's bytes."""
    key_id = client.conn.block_storage.get_volume(volume_id).encryption_key_id
    if not key_id:
        raise AttachError(
            f"volume {volume_id} is encrypted but Cinder does not show its key",
            parameter="cloud",
            hint="The block-storage API must allow microversion 3.64 or later",
        )
    hint = (
        "The migration's user must be allowed to read its project's secrets (Barbican: role member, or creator"
        " under the legacy policy); nothing was written"
    )
    try:
        payload = client.conn.key_manager.get_secret(key_id).payload
    except Exception as err:  # the key manager's errors (castellan, Barbican): named with the volume
        raise AttachError(
            f"the key manager did not give the key of encrypted volume {volume_id}: {_text(err)}",
            parameter="cloud",
            hint=hint,
        ) from None
    if isinstance(payload, str):
        payload = payload.encode()
    if not payload:  # the secret's metadata without its payload: what a user without read rights gets
        raise AttachError(f"the key manager gave no key for encrypted volume {volume_id}", parameter="cloud", hint=hint)
    return binascii.hexlify(payload)


def release_stale_attachments(client, volume_id: str, host: str) -> int:
    """Delete this host's instance-less attachments of ``volume_id``; returns how many.

    Only a sync or cutover of this tool attaches a replica to a host without an instance, and
    only one runs per migration (the host lock here, the record's heartbeat across hosts): an
    attachment found now was left by a process that died holding it (killed, host rebooted).
    Without this the rerun could not attach. Cinder leaves ``host_name`` empty on an attachment
    that was never completed, which is exactly the state a killed attach leaves behind.
    """
    storage = client.conn.block_storage
    stale = [
        a["attachment_id"]
        for a in storage.get_volume(volume_id).attachments or []
        if not a.get("server_id") and a.get("host_name") in (None, host) and a.get("attachment_id")
    ]
    for attachment_id in stale:
        storage.delete_attachment(attachment_id)
    if stale:
        wait_for(
            lambda: storage.get_volume(volume_id).status == "available",
            timeout=ATTACH_TIMEOUT,
            what=f"volume {volume_id} to be released",
        )
    return len(stale)


def connection_of(client, volume_id: str) -> Dict[str, object]:
    """What Cinder tells a host that attaches the volume (``driver_volume_type``, ``format``,
    ``encrypted``...), asked with an attachment of this host's that is deleted again at once: nothing
    is connected, nothing read or written. The volume must be available (between syncs it is)."""
    storage = client.conn.block_storage
    try:
        with _BRICK:
            properties = dict(_connector_properties(_os_brick()))
    except AttachError:  # attach_mode nova: no os-brick here; file back-ends ask for no more than this
        properties = {"host": socket.gethostname(), "ip": _my_ip(), "platform": "x86_64", "os_type": "linux"}
    attachment = storage.create_attachment(volume_id, connector=properties, mode="ro")
    try:
        return dict(attachment.connection_info or {})
    finally:
        _detach(storage, attachment.id, volume_id)


def release_and_delete(client, volume_ids: list, *, cascade: bool = True) -> None:
    """Delete volumes, first releasing what a run killed on this host left attached to them.

    A run killed while it held a volume (a test converting its clones, a sync or a test run
    stopped mid-way) leaves it ``in-use``, and a delete refuses an attached volume; only this
    host may say its own instance-less attachments are stale.
    """
    for volume_id in volume_ids:
        release_stale_attachments(client, volume_id, socket.gethostname())
    os_volumes.delete_volumes(client, volume_ids, cascade=cascade)


def _detach(storage, attachment_id: str, volume_id: str) -> None:
    storage.delete_attachment(attachment_id)
    wait_for(
        lambda: storage.get_volume(volume_id).status == "available",
        timeout=ATTACH_TIMEOUT,
        what=f"volume {volume_id} to be detached",
    )


@contextmanager
def _nova(client, volume_id: str, server_id: str) -> Iterator[str]:
    compute = client.conn.compute
    server = compute.find_server(server_id, ignore_missing=True)
    if server is None:
        raise AttachError(f"conversion host server '{server_id}' does not exist", parameter="conversion_server")
    try:
        compute.create_volume_attachment(server, volume=volume_id)
    except Exception as err:  # Nova's refusal, whatever its type, named with the volume and the server
        raise AttachError(f"Nova could not attach volume {volume_id} to {server.name}: {_text(err)}") from None
    try:
        path = wait_for(
            lambda: _by_serial(volume_id),
            timeout=ATTACH_TIMEOUT,
            what=f"volume {volume_id} to appear under /dev/disk/by-id",
            hint="Is this task running on the conversion host named by conversion_server?",
        )
        yield path
    finally:
        compute.delete_volume_attachment(server, volume_id, ignore_missing=True)
        wait_for(
            lambda: client.conn.block_storage.get_volume(volume_id).status == "available",
            timeout=ATTACH_TIMEOUT,
            what=f"volume {volume_id} to be detached from {server.name}",
        )


def _by_serial(volume_id: str) -> Optional[str]:
    """virtio-blk shows the first 20 characters of the volume id as serial; SCSI shows all of it."""
    for pattern in (f"/dev/disk/by-id/virtio-{volume_id[:20]}", f"/dev/disk/by-id/*{volume_id}*"):
        found = sorted(glob.glob(pattern))
        if found:
            return os.path.realpath(found[0])
    return None


def _my_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _text(err: Exception) -> str:
    return str(getattr(err, "details", None) or err).strip()
