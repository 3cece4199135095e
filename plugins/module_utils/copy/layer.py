"""A volume written through its own format: qcow2 files and LUKS encryption.

Cinder does not always hand out a raw disk. Its NFS driver makes an encrypted
volume a LUKS-encrypted qcow2 file, and a snapshot turns any volume's active
file into a qcow2 overlay; a block back-end's encrypted volume carries a LUKS
header in front of the ciphertext. Raw bytes written there destroy the volume.

``plain_view`` opens such a volume with QEMU's own format drivers in a
``qemu-storage-daemon`` and serves the guest's view (plaintext, raw) as an NBD
export on a private UNIX socket, which the copy engine writes on any
conversion host (no device-mapper, no kernel NBD). virt-v2v reads no NBD
socket, so conversion gets the same view as a FUSE file (``as_file``) in a
private directory (mounted without ``allow_other``). Zeros reach the format
driver as write-zeroes, never as a discard: QEMU writes encrypted zeros below
LUKS and zero clusters in qcow2. The passphrase reaches the daemon through a pipe
(``secret,file=/dev/fd/N``): never on argv, never in a file; the daemon dies
with this process (parent-death signal), so a killed run leaves no open view.

Formats are never probed from the data (a guest can write any header into a
raw disk): the top format is the one Cinder states, a backing file's is the
one its overlay records.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from contextlib import contextmanager
from enum import Enum
from typing import ContextManager, Dict, Iterator, List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.common.process import dies_with_parent
from ansible_collections.xms.warm_migration.plugins.module_utils.copy import nbd_source
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.errors import SourceUnreachableError, TargetError

START_TIMEOUT_S = 120.0  # opening a LUKS key slot is deliberately slow (PBKDF2); TCG hosts are slower
SECRET_ID = "xmskey"
EXPORT = "disk"


class VolumeFormat(str, Enum):
    """The formats a volume's attached path may hold (Cinder's connection ``format``)."""

    RAW = "raw"
    QCOW2 = "qcow2"


def volume_format(value: Optional[str], volume: str) -> VolumeFormat:
    """The connection's format, or a clear refusal before anything is written."""
    try:
        return VolumeFormat(value or "raw")
    except ValueError:
        raise TargetError(
            f"volume {volume} is attached in format '{value}', which this tool cannot write",
            parameter="attach_mode",
            hint="Only raw and qcow2 volumes are written; attach_mode nova lets the cloud present it as a disk",
        ) from None


def needs_layer(fmt: VolumeFormat, encrypted: bool) -> bool:
    return encrypted or fmt is not VolumeFormat.RAW


def plain_view(
    path: str, fmt: VolumeFormat, passphrase: Optional[bytes] = None, *, as_file: bool = False
) -> ContextManager[str]:
    """A context yielding an NBD URI (a file path with ``as_file``) serving ``path``'s guest view.

    ``passphrase`` opens its LUKS encryption. Without encryption and in raw format the
    path itself is yielded: nothing to translate.
    """
    if not needs_layer(fmt, passphrase is not None):
        return contextlib.nullcontext(path)
    return _served(path, fmt, passphrase, as_file=as_file)


def nbd_view(path: str, fmt: VolumeFormat) -> ContextManager[str]:
    """A context yielding an NBD URI serving the disk image file ``path`` in ``fmt``, raw included:
    for the copy engine, whose source is always NBD (a carried seed file is read this way)."""
    return _served(path, fmt, None, as_file=False)


@contextmanager
def _served(path: str, fmt: VolumeFormat, passphrase: Optional[bytes], *, as_file: bool) -> Iterator[str]:
    """The daemon serving ``path`` through its format (and LUKS with ``passphrase``) until the block ends."""
    node = _node(path, fmt, SECRET_ID if passphrase is not None else None)
    work = tempfile.mkdtemp(prefix="xms-view-")  # 0700: only this user reaches the socket
    sock = os.path.join(work, "nbd.sock")
    argv = [_qsd()]
    fds = []
    if passphrase is not None:
        read_end, write_end = os.pipe()
        os.write(write_end, passphrase)  # far below a pipe's buffer: never blocks
        os.close(write_end)
        fds.append(read_end)
        argv += ["--object", f"secret,id={SECRET_ID},format=raw,file=/dev/fd/{read_end}"]
    argv += ["--blockdev", json.dumps(node)]
    if as_file:
        view = os.path.join(work, EXPORT)
        open(view, "wb").close()  # pylint: disable=consider-using-with  # the mount point: an empty file
        argv += ["--export", f"type=fuse,id=e0,node-name=top,mountpoint={view},writable=on,allow-other=off"]
    else:
        view = f"nbd+unix:///{EXPORT}?socket={sock}"
        argv += ["--nbd-server", f"addr.type=unix,addr.path={sock}",
                 "--export", f"type=nbd,id=e0,node-name=top,name={EXPORT},writable=on"]  # fmt: skip
    proc = None
    try:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with  # stopped in the finally below
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=fds,
            preexec_fn=dies_with_parent(signal.SIGTERM),  # pylint: disable=subprocess-popen-preexec-fn
        )
        for fd in fds:
            os.close(fd)
        fds = []
        _wait_ready(proc, view, path)
        yield view
    finally:
        for fd in fds:
            os.close(fd)
        if proc is not None:
            _stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def _node(path: str, fmt: VolumeFormat, secret: Optional[str]) -> Dict[str, object]:
    """The daemon's block graph, top node named ``top``: the format over the file, down the backing chain."""
    protocol = {"driver": "host_device" if _is_block(path) else "file", "filename": path}
    if fmt is VolumeFormat.RAW and secret is None:  # a plain raw image, served as it is (nbd_view)
        return {"node-name": "top", "driver": "raw", "file": protocol}
    if fmt is VolumeFormat.RAW:  # raw and encrypted: a LUKS header in front of the ciphertext
        return {"node-name": "top", "driver": "luks", "key-secret": secret, "file": protocol}
    chain = _chain(path)
    node: Dict[str, object] = {}  # built from the bottom of the chain up; {} below the last layer
    for depth in range(len(chain) - 1, -1, -1):
        image = chain[depth]
        layer_fmt = "qcow2" if depth == 0 else chain[depth - 1].get("backing-filename-format")
        if layer_fmt not in ("raw", "qcow2"):
            raise TargetError(
                f"{chain[depth - 1]['filename']} does not record the format of its backing file"
                f" {image['filename']} (or it is '{layer_fmt}')",
                parameter="attach_mode",
                hint="Rebase the volume's active file with an explicit backing format (qemu-img rebase -u -F raw)",
            )
        current: Dict[str, object] = {
            "driver": layer_fmt,
            "file": {"driver": "file", "filename": image["filename"]} if depth else protocol,
        }
        if layer_fmt == "qcow2":
            current["backing"] = node or None  # None: no backing file
        if image.get("encrypted"):
            if secret is None:
                raise TargetError(
                    f"{image['filename']} is encrypted but Cinder did not say so",
                    parameter="attach_mode",
                    hint="Check the volume's type; nothing was written",
                )
            if layer_fmt == "qcow2":
                current["encrypt"] = {"format": "luks", "key-secret": secret}
            else:
                current = {"driver": "luks", "key-secret": secret, "file": current["file"]}
        node = current
    node["node-name"] = "top"
    return node


def _chain(path: str) -> List[Dict[str, object]]:
    """``qemu-img info`` of the qcow2 at ``path`` and its backing files, top first (no data read)."""
    argv = [_qemu_img(), "info", "-f", "qcow2", "--backing-chain", "--output=json", "-U", path]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode:
        raise TargetError(
            f"cannot read the qcow2 volume at {path}: {done.stderr.strip()[-300:]}",
            parameter="attach_mode",
            hint="Cinder said the volume is qcow2; nothing was written",
        )
    info = json.loads(done.stdout)
    return info if isinstance(info, list) else [info]


def _wait_ready(proc: subprocess.Popen, view: str, path: str) -> None:
    """Until the daemon serves ``view`` (an NBD URI that accepts a connection, or a mounted file)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise TargetError(
                f"cannot open the volume at {path} through its format: {err[-400:]}",
                parameter="attach_mode",
                hint="A wrong key ('Invalid password') means the key manager's key is not this volume's",
            )
        if not nbd_source.is_nbd_uri(view):
            if os.path.ismount(view):
                return
        else:
            with contextlib.suppress(SourceUnreachableError):  # not listening yet
                nbd_source.connect(view, parameter="target").shutdown()
                return
        time.sleep(0.1)
    raise TargetError(
        f"qemu-storage-daemon did not open {path} within {START_TIMEOUT_S:.0f} s", parameter="attach_mode"
    )


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM: the daemon flushes and closes the image; kill only if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr:
        proc.stderr.close()


def _is_block(path: str) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISBLK(os.stat(path).st_mode)
    return False


def _qsd() -> str:
    return _program("qemu-storage-daemon", "qemu-system-common")


def _qemu_img() -> str:
    return _program("qemu-img", "qemu-utils")


def _program(name: str, package: str) -> str:
    found = shutil.which(name)
    if not found:
        raise TargetError(
            f"{name} is not installed on the conversion host",
            parameter="attach_mode",
            hint=f"Install {package} (bindep.txt lists it); it writes qcow2 and encrypted volumes",
        )
    return found
