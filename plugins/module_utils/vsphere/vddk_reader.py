"""The collection's VDDK reader: an nbdkit plugin, run by nbdkit's Python plugin host, that reads one
vSphere disk as of a snapshot through the user's VDDK (``libvixDiskLib``), loaded with ctypes.

Why it exists: Debian and Ubuntu ship no nbdkit ``vddk`` plugin, so a conversion host there could not
read a real vCenter at all. nbdkit's Python host is packaged everywhere (``nbdkit-plugin-python``).
It takes the parameters of nbdkit's vddk plugin (datapath.py builds one command line for both) and
is started as ``nbdkit python <a copy of this file> ...``: datapath.py writes the copy into the
disk server's private directory, since a module runs from a zip that nbdkit cannot read.

It follows VDDK's published rules (the Virtual Disk Development Kit programming guide):
- ``InitEx`` once per process, at ``config_complete``; ``Exit`` at ``cleanup``;
- ``ConnectEx`` read-only with the VM's moref (``vm=moref=...``), the snapshot's moref, the
  certificate thumbprint and user and password; the password arrives on an inherited descriptor
  (``password=-FD``), never on the command line or in a file;
- ``ConnectEx``, ``Open``, ``Close`` and ``Disconnect`` one at a time in the process (they are not
  thread safe); reads and block queries on one handle one at a time, while the handles of several
  NBD connections read side by side (each connection is its own handle: NFC is slow per connection);
- reads in whole sectors (an unaligned request reads the sectors around it);
- ``QueryAllocatedBlocks`` in chunks of at least 128 sectors and at most 512 Ki chunks per call,
  mapped to NBD extents (unallocated areas are holes that read as zero), so a seed reads only
  allocated areas;
- every failure carries VDDK's own text (``GetErrorText``) and its VIX code.

The first handle is opened before nbdkit serves (``get_ready``): wrong credentials, a thumbprint
that is not the server's, an unknown VM or snapshot and a file the snapshot does not have stop
nbdkit with VDDK's error before any client connects, and that handle serves the first connection.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from typing import List, Optional, Tuple

try:
    import nbdkit  # provided by nbdkit's Python plugin host
except ImportError:  # imported by the collection itself (to copy this file, and by its tests): not serving
    nbdkit = None

API_VERSION = 2
SECTOR = 512
CHUNK_SECTORS = 128  # VIXDISKLIB_MIN_CHUNK_SIZE: QueryAllocatedBlocks refuses smaller chunks
MAX_CHUNKS = 512 * 1024  # VIXDISKLIB_MAX_CHUNK_NUMBER: chunks per QueryAllocatedBlocks call
MAJORS = (9, 8, 7, 6)  # lib64/libvixDiskLib.so.N, newest first
FLAG_OPEN_READ_ONLY = 4
CRED_UID = 1
REQUIRED = ("libdir", "server", "user", "password", "thumbprint", "vm", "snapshot", "file")
OPTIONAL = ("port", "transports")


# --- the published structure layouts (VDDK 6.7 and later) -------------------------------------------
class _Uid(ctypes.Structure):
    _fields_ = [("userName", ctypes.c_char_p), ("password", ctypes.c_char_p)]


class _SessionId(ctypes.Structure):
    _fields_ = [("cookie", ctypes.c_char_p), ("userName", ctypes.c_char_p), ("key", ctypes.c_char_p)]


class _Creds(ctypes.Union):
    _fields_ = [("uid", _Uid), ("sessionId", _SessionId), ("ticketId", ctypes.c_void_p)]


class _VStorageObjectSpec(ctypes.Structure):
    _fields_ = [("id", ctypes.c_char_p), ("datastoreMoRef", ctypes.c_char_p), ("ssId", ctypes.c_char_p)]


class _Spec(ctypes.Union):
    _fields_ = [("vStorageObjSpec", _VStorageObjectSpec)]


class ConnectParams(ctypes.Structure):
    _fields_ = [
        ("vmxSpec", ctypes.c_char_p),
        ("serverName", ctypes.c_char_p),
        ("thumbPrint", ctypes.c_char_p),
        ("privateUse", ctypes.c_long),
        ("credType", ctypes.c_int),
        ("creds", _Creds),
        ("port", ctypes.c_uint32),
        ("nfcHostPort", ctypes.c_uint32),
        ("vimApiVer", ctypes.c_char_p),
        ("reserved", ctypes.c_char * 8),
        ("reserved2", ctypes.c_void_p),
        ("spec", _Spec),
        ("specType", ctypes.c_int),
    ]


class _Geometry(ctypes.Structure):
    _fields_ = [("cylinders", ctypes.c_uint32), ("heads", ctypes.c_uint32), ("sectors", ctypes.c_uint32)]


class DiskInfo(ctypes.Structure):
    _fields_ = [
        ("biosGeo", _Geometry),
        ("physGeo", _Geometry),
        ("capacity", ctypes.c_uint64),  # sectors
        ("adapterType", ctypes.c_int),
        ("numLinks", ctypes.c_int),
        ("parentFileNameHint", ctypes.c_char_p),
        ("uuid", ctypes.c_char_p),
    ]


class Block(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_uint64), ("length", ctypes.c_uint64)]  # sectors


class BlockList(ctypes.Structure):
    _fields_ = [("numBlocks", ctypes.c_uint32), ("blocks", Block * 1)]


class VddkError(Exception):
    """A VDDK call failed: its name, VDDK's text and the VIX code (the low 16 bits), as the log shows them."""

    def __init__(self, call: str, code: int, text: str) -> None:
        super().__init__(f"{call}: {text} (VIX error {code})")
        self.code = code


# --- pure helpers (unit-tested) ------------------------------------------------------------------------
def read_password(value: str) -> str:
    """The password from ``-FD``: read to its end from descriptor FD, which is then closed. Anything
    else is refused: a password on the command line is readable by every local user, one in a file
    outlives a killed run."""
    if not (value.startswith("-") and value[1:].isdigit()):
        raise ValueError("password must be -FD, an inherited descriptor to read it from")
    fd, chunks = int(value[1:]), []
    try:
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode().rstrip("\n")


def sectors_around(offset: int, count: int) -> Tuple[int, int]:
    """The first sector and the number of whole sectors that hold ``count`` bytes from ``offset``."""
    first = offset // SECTOR
    last = (offset + count + SECTOR - 1) // SECTOR
    return first, last - first


def chunk_query(offset: int, count: int, size: int) -> Optional[Tuple[int, int]]:
    """The (start sector, sectors) to ask QueryAllocatedBlocks about for ``count`` bytes from ``offset``:
    whole chunks inside the disk, at most MAX_CHUNKS of them; None when ``offset`` lies in the disk's last,
    partial chunk (VDDK can answer only whole chunks)."""
    chunk = CHUNK_SECTORS * SECTOR
    start = offset // chunk * chunk
    end = min((offset + count + chunk - 1) // chunk * chunk, size // chunk * chunk, start + MAX_CHUNKS * chunk)
    if end <= start:
        return None
    return start // SECTOR, (end - start) // SECTOR


def extents_of(start: int, length: int, blocks: List[Tuple[int, int]], hole: int) -> List[Tuple[int, int, int]]:
    """NBD extents (offset, length, type) of ``length`` bytes from ``start``: the allocated ``blocks``
    (byte offset, byte length) as data (type 0), the gaps between them as ``hole``."""
    found, pos, end = [], start, start + length
    for offset, size in sorted(blocks):
        offset, stop = max(offset, start), min(offset + size, end)
        if stop <= pos:
            continue
        if offset > pos:
            found.append((pos, offset - pos, hole))
        found.append((max(offset, pos), stop - max(offset, pos), 0))
        pos = stop
    if pos < end:
        found.append((pos, end - pos, hole))
    return found


def library_path(libdir: str) -> str:
    """``<libdir>/lib64/libvixDiskLib.so.N`` of the newest N present (VMware's layout of VDDK)."""
    for major in MAJORS:
        path = os.path.join(libdir, "lib64", f"libvixDiskLib.so.{major}")
        if os.path.exists(path):
            return path
    raise ValueError(f"libdir={libdir} holds no lib64/libvixDiskLib.so.N (N in {', '.join(map(str, MAJORS))})")


# --- the library ----------------------------------------------------------------------------------------
_LOG = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)


class Vddk:
    """libvixDiskLib, loaded and initialized once for the process."""

    def __init__(self, path: str) -> None:
        self.lib = ctypes.CDLL(path)
        c = ctypes
        self._bind("VixDiskLib_InitEx", c.c_uint64,
                   [c.c_uint32, c.c_uint32, c.c_void_p, c.c_void_p, c.c_void_p, c.c_char_p, c.c_char_p])  # fmt: skip
        self._bind("VixDiskLib_Exit", None, [])
        self._bind("VixDiskLib_GetErrorText", c.c_void_p, [c.c_uint64, c.c_char_p])
        self._bind("VixDiskLib_FreeErrorText", None, [c.c_void_p])
        self._bind("VixDiskLib_ConnectEx", c.c_uint64,
                   [c.POINTER(ConnectParams), c.c_char, c.c_char_p, c.c_char_p, c.POINTER(c.c_void_p)])  # fmt: skip
        self._bind("VixDiskLib_Disconnect", c.c_uint64, [c.c_void_p])
        self._bind("VixDiskLib_Open", c.c_uint64, [c.c_void_p, c.c_char_p, c.c_uint32, c.POINTER(c.c_void_p)])
        self._bind("VixDiskLib_Close", c.c_uint64, [c.c_void_p])
        self._bind("VixDiskLib_GetInfo", c.c_uint64, [c.c_void_p, c.POINTER(c.POINTER(DiskInfo))])
        self._bind("VixDiskLib_FreeInfo", None, [c.POINTER(DiskInfo)])
        self._bind("VixDiskLib_Read", c.c_uint64, [c.c_void_p, c.c_uint64, c.c_uint64, c.c_void_p])
        self.extents = hasattr(self.lib, "VixDiskLib_QueryAllocatedBlocks")  # VDDK 6.7 and later
        if self.extents:
            self._bind("VixDiskLib_QueryAllocatedBlocks", c.c_uint64,
                       [c.c_void_p, c.c_uint64, c.c_uint64, c.c_uint64, c.POINTER(c.POINTER(BlockList))])  # fmt: skip
            self._bind("VixDiskLib_FreeBlockList", c.c_uint64, [c.POINTER(BlockList)])
        self._log = self._warn = None
        if platform.machine() == "x86_64":  # a va_list travels as a pointer there: VDDK's messages reach the log
            libc = ctypes.CDLL(None)
            libc.vsnprintf.argtypes = [c.c_char_p, c.c_size_t, c.c_char_p, c.c_void_p]

            def emit(fmt, args):
                text = ctypes.create_string_buffer(2048)
                libc.vsnprintf(text, len(text), fmt, args)
                message = text.value.decode(errors="replace").rstrip()
                if nbdkit is not None:
                    nbdkit.debug(message)
                os.write(2, f"vddk: {message}\n".encode())

            self._log = self._warn = _LOG(emit)  # kept referenced: VDDK calls them until Exit
        self.check("VixDiskLib_InitEx", self.lib.VixDiskLib_InitEx(6, 7, self._log, self._warn, None, None, None))
        # Not thread safe in VDDK: connecting, opening, closing and disconnecting, one at a time per process.
        self.open_lock = threading.Lock()

    def _bind(self, name: str, restype, argtypes) -> None:
        function = getattr(self.lib, name)
        function.restype, function.argtypes = restype, argtypes

    def check(self, call: str, err: int) -> None:
        """Raise VddkError for a VIX error other than VIX_OK."""
        if err == 0:
            return
        pointer = self.lib.VixDiskLib_GetErrorText(err, None)
        text = ctypes.string_at(pointer).decode(errors="replace") if pointer else "unknown error"
        if pointer:
            self.lib.VixDiskLib_FreeErrorText(pointer)
        raise VddkError(call, err & 0xFFFF, text)


class Handle:
    """One NBD connection's own VDDK connection and disk handle."""

    def __init__(self, vddk: Vddk, params: dict) -> None:
        self.vddk, self.lock = vddk, threading.Lock()  # one call at a time on a handle
        self.connection, self.disk = ctypes.c_void_p(), ctypes.c_void_p()
        cp = ConnectParams()
        cp.vmxSpec = params["vm"].encode()
        cp.serverName = params["server"].encode()
        cp.thumbPrint = params["thumbprint"].encode()
        cp.credType = CRED_UID
        cp.creds.uid.userName = params["user"].encode()
        cp.creds.uid.password = params["password"].encode()
        cp.port = int(params.get("port") or 0)
        transports = params.get("transports")
        with vddk.open_lock:
            vddk.check("VixDiskLib_ConnectEx", vddk.lib.VixDiskLib_ConnectEx(
                ctypes.byref(cp), b"\x01", params["snapshot"].encode(), transports.encode() if transports else None,
                ctypes.byref(self.connection),
            ))  # fmt: skip
            try:
                vddk.check("VixDiskLib_Open", vddk.lib.VixDiskLib_Open(
                    self.connection, params["file"].encode(), FLAG_OPEN_READ_ONLY, ctypes.byref(self.disk)
                ))  # fmt: skip
            except VddkError:
                vddk.lib.VixDiskLib_Disconnect(self.connection)
                raise
        info = ctypes.POINTER(DiskInfo)()
        try:
            vddk.check("VixDiskLib_GetInfo", vddk.lib.VixDiskLib_GetInfo(self.disk, ctypes.byref(info)))
        except VddkError:
            self.close()
            raise
        self.size = info.contents.capacity * SECTOR
        vddk.lib.VixDiskLib_FreeInfo(info)

    def read(self, buf, offset: int) -> None:
        """Fill ``buf`` (writable) from ``offset``, reading whole sectors."""
        count = len(buf)
        first, sectors = sectors_around(offset, count)
        aligned = offset % SECTOR == 0 and count % SECTOR == 0
        target = (ctypes.c_char * count).from_buffer(buf) if aligned else ctypes.create_string_buffer(sectors * SECTOR)
        with self.lock:
            self.vddk.check("VixDiskLib_Read", self.vddk.lib.VixDiskLib_Read(self.disk, first, sectors, target))
        if not aligned:
            skip = offset - first * SECTOR
            buf[:] = target.raw[skip : skip + count]

    def allocated(self, start_sector: int, sectors: int) -> List[Tuple[int, int]]:
        """The allocated (byte offset, byte length) blocks of the given whole chunks."""
        blocks = ctypes.POINTER(BlockList)()
        with self.lock:
            self.vddk.check("VixDiskLib_QueryAllocatedBlocks", self.vddk.lib.VixDiskLib_QueryAllocatedBlocks(
                self.disk, start_sector, sectors, CHUNK_SECTORS, ctypes.byref(blocks)
            ))  # fmt: skip
        try:
            count = blocks.contents.numBlocks
            array = ctypes.cast(ctypes.addressof(blocks.contents.blocks), ctypes.POINTER(Block * max(count, 1)))
            return [(b.offset * SECTOR, b.length * SECTOR) for b in array.contents[:count]]
        finally:
            self.vddk.lib.VixDiskLib_FreeBlockList(blocks)

    def close(self) -> None:
        with self.vddk.open_lock:
            if self.disk:
                self.vddk.lib.VixDiskLib_Close(self.disk)
                self.disk = ctypes.c_void_p()
            if self.connection:
                self.vddk.lib.VixDiskLib_Disconnect(self.connection)
                self.connection = ctypes.c_void_p()


# --- nbdkit's plugin callbacks --------------------------------------------------------------------------
_params: dict = {}
_state: dict = {}  # "vddk": Vddk; "ready": the handle opened before serving, for the first connection


def config(key: str, value: str) -> None:
    if key not in REQUIRED + OPTIONAL:
        raise ValueError(f"unknown parameter {key}")
    _params[key] = read_password(value) if key == "password" else value


def config_complete() -> None:
    missing = [key for key in REQUIRED if key not in _params]
    if missing:
        raise ValueError(f"missing parameter(s): {', '.join(missing)}")
    if not _params["vm"].startswith("moref="):
        raise ValueError("vm must be moref=<the VM's managed object id>")
    _state["vddk"] = Vddk(library_path(_params["libdir"]))


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL


def get_ready() -> None:
    _state["ready"] = Handle(_state["vddk"], _params)


def open(readonly):  # nbdkit's name for the callback
    ready = _state.pop("ready", None)
    return ready if ready is not None else Handle(_state["vddk"], _params)


def get_size(h: Handle) -> int:
    return h.size


def can_write(h: Handle) -> bool:
    return False


def can_multi_conn(h: Handle) -> bool:
    return True  # read only: every connection sees the same snapshot


def can_extents(h: Handle) -> bool:
    return h.vddk.extents


def pread(h: Handle, buf, offset: int, flags: int) -> None:
    h.read(buf, offset)


def extents(h: Handle, count: int, offset: int, flags: int):
    query = chunk_query(offset, count, h.size)
    if query is None:  # the disk's last, partial chunk: VDDK cannot say, so it is data
        return [(offset, h.size - offset, 0)]
    start_sector, sectors = query
    blocks = h.allocated(start_sector, sectors)
    return extents_of(start_sector * SECTOR, sectors * SECTOR, blocks, nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO)


def close(h: Handle) -> None:
    h.close()


def cleanup() -> None:
    ready = _state.pop("ready", None)
    if ready is not None:
        ready.close()
    vddk = _state.pop("vddk", None)
    if vddk is not None:
        vddk.lib.VixDiskLib_Exit()
