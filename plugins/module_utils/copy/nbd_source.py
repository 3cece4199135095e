"""Connecting to NBD servers and asking them what a disk holds.

libnbd's own URI errors are terse, so URIs are checked here first and a bad
one is rejected with the reason before any connection is tried. Block status
replies are read in windows of at most 1 GiB: libnbd 1.14 takes a 32-bit
length.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.errors import (
    InvalidUriError,
    SourceUnreachableError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent, merge_extents

try:
    import nbd
except ImportError:  # reported when a connection is attempted, with what to install
    nbd = None

STATUS_WINDOW = 1 << 30
STATE_HOLE = 1  # base:allocation: not allocated
STATE_ZERO = 2  # base:allocation: reads as zeros
STATE_DIRTY = 1  # qemu:dirty-bitmap: changed
SCHEMES = ("nbd", "nbds", "nbd+unix", "nbds+unix")


def is_nbd_uri(text: str) -> bool:
    return text.split(":", 1)[0] in SCHEMES


def check_uri(uri: str, parameter: str = "source") -> None:
    """Reject a malformed NBD URI with a message that says what is wrong."""
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        raise InvalidUriError(
            f"'{uri}' is not an NBD URI (scheme '{parts.scheme or '(none)'}')",
            parameter=parameter,
            hint="Use nbd://HOST[:PORT]/EXPORT, nbds://... for TLS, or nbd+unix:///EXPORT?socket=PATH",
        )
    if parts.scheme.endswith("+unix"):
        sockets = parse_qs(parts.query).get("socket")
        if not sockets:
            raise InvalidUriError(f"'{uri}' names no socket", parameter=parameter, hint="Add ?socket=/path/to/socket")
        if parts.netloc:
            raise InvalidUriError(
                f"'{uri}' has a host part, which a unix-socket URI cannot have",
                parameter=parameter,
                hint="Write nbd+unix:///EXPORT?socket=PATH (three slashes)",
            )
    elif not parts.hostname:
        raise InvalidUriError(f"'{uri}' names no host", parameter=parameter, hint="Write nbd://HOST[:PORT]/EXPORT")
    else:
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise InvalidUriError(f"'{uri}' has an invalid port", parameter=parameter) from None


def connect(uri: str, *, meta_contexts: Tuple[str, ...] = (), parameter: str = "source", name: str = "xms"):
    """An open libnbd handle on ``uri``, or a typed error saying why not."""
    check_uri(uri, parameter)
    if nbd is None:
        raise SourceUnreachableError(
            "libnbd's Python binding is not installed", hint="Install python3-libnbd and use a Python that sees it"
        )
    handle = nbd.NBD()
    handle.set_handle_name(name)
    handle.set_pread_initialize(False)  # buffers are always fully overwritten on success
    for context in meta_contexts:
        handle.add_meta_context(context)
    try:
        handle.connect_uri(uri)
    except nbd.Error as err:
        socket_hint = ""
        sockets = parse_qs(urlsplit(uri).query).get("socket")
        if sockets and not os.path.exists(sockets[0]):
            socket_hint = f" (socket {sockets[0]} does not exist)"
        raise SourceUnreachableError(
            f"cannot connect to {uri}{socket_hint}: {err.string}",
            parameter=parameter,
            hint="Check that the NBD server runs and serves that export",
        ) from None
    return handle


def block_status(handle, context: str, start: int, end: int) -> Iterator[Tuple[int, int, int]]:
    """Yield ``(offset, length, flags)`` of ``context`` covering ``[start, end)``."""
    offset = start
    while offset < end:
        replies = _status_once(handle, context, offset, end)
        for pos, length, flags in replies:
            length = min(length, end - pos)
            if length > 0:
                yield pos, length, flags
        offset = min(end, replies[-1][0] + replies[-1][1])


def extents_where(uri: str, context: str, wanted: Callable[[int], bool], parameter: str = "source") -> List[Extent]:
    """The extents of the whole export whose ``context`` flags satisfy ``wanted``."""
    handle = connect(uri, meta_contexts=(context,), parameter=parameter)
    try:
        if not handle.can_meta_context(context):
            raise SourceUnreachableError(
                f"the NBD server at {uri} does not offer '{context}'",
                parameter=parameter,
                hint="Serve the export with that context (e.g. qemu-nbd -B BITMAP for a dirty bitmap)",
            )
        size = handle.get_size()
        return merge_extents(Extent(o, n) for o, n, f in block_status(handle, context, 0, size) if wanted(f))
    finally:
        handle.shutdown()


def plan_allocated(uri: str) -> List[Extent]:
    """Every extent holding data: allocated and not known to read as zeros. Used for a seed."""
    handle = connect(uri, meta_contexts=("base:allocation",))
    try:
        size = handle.get_size()
        if not handle.can_meta_context("base:allocation"):
            return [Extent(0, size)] if size else []  # no map: everything may hold data
        return merge_extents(
            Extent(o, n) for o, n, f in block_status(handle, "base:allocation", 0, size) if not f & STATE_ZERO
        )
    finally:
        handle.shutdown()


def plan_dirty(uri: str, bitmap: str) -> List[Extent]:
    """The extents a QEMU dirty bitmap (``qemu:dirty-bitmap:NAME``) marks as changed."""
    return extents_where(uri, f"qemu:dirty-bitmap:{bitmap}", lambda flags: bool(flags & STATE_DIRTY))


def zero_map(handle, extents: List[Extent]) -> Optional[List[Extent]]:
    """The parts of ``extents`` the server says read as zeros, or None if it cannot say.

    One block-status request covers as far as the server answers (up to 1 GiB
    past the first extent it is asked for), so a plan of many neighbouring
    extents costs few round trips.
    """
    if not handle.can_meta_context("base:allocation") or not extents:
        return None
    zeros: List[Extent] = []
    known_until = 0
    last_end = extents[-1].end
    for ext in extents:
        while known_until < ext.end:
            start = max(ext.offset, known_until)
            replies = _status_once(handle, "base:allocation", start, min(last_end, start + STATUS_WINDOW))
            for pos, length, flags in replies:
                if flags & STATE_ZERO:
                    zeros.append(Extent(pos, length))
            known_until = replies[-1][0] + replies[-1][1]
    plan = merge_extents(extents)
    return _intersect(plan, merge_extents(zeros))


def _status_once(handle, context: str, start: int, end: int) -> List[Tuple[int, int, int]]:
    """One block-status request over ``[start, end)``: whatever prefix the server describes."""
    replies: List[Tuple[int, int, int]] = []

    def collect(metacontext, base, entries, err):
        if metacontext == context:
            pos = base
            for i in range(0, len(entries), 2):
                replies.append((pos, entries[i], entries[i + 1]))
                pos += entries[i]
        return 0

    handle.block_status(min(end - start, STATUS_WINDOW), start, collect)
    if not replies:
        raise SourceUnreachableError(f"the NBD server sent no '{context}' status at offset {start}")
    return replies


def _intersect(a: List[Extent], b: List[Extent]) -> List[Extent]:
    """Ranges covered by both merged lists."""
    out: List[Extent] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i].offset, b[j].offset), min(a[i].end, b[j].end)
        if start < end:
            out.append(Extent(start, end - start))
        if a[i].end < b[j].end:
            i += 1
        else:
            j += 1
    return out
