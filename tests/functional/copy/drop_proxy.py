"""A fault injector between the engine and a real NBD server: it relays a unix socket and drops the
connection whenever a client asks to read at one offset.

No NBD server can be told to drop a connection at an offset (nbdkit's error filter answers an error
and keeps the connection), so the fault is injected on the wire. The server behind it is real; the
proxy only recognises NBD read requests (magic 0x25609513, type 0) in the client's byte stream.
"""

import contextlib
import os
import socket
import struct
import threading

REQUEST = struct.Struct(">IHHQQI")  # magic, flags, type, handle, offset, length
REQUEST_BYTES = 28
REQUEST_MAGIC, READ = 0x25609513, 0


class DropProxy:
    """Serve ``listen_path``, relay to ``server_path``, drop any connection that reads at ``offset``."""

    def __init__(self, listen_path: str, server_path: str, offset: int) -> None:
        self.server_path, self.offset = server_path, offset
        self.drops = 0
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(listen_path)
        self.listener.listen(16)
        self.uri = f"nbd+unix:///?socket={listen_path}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _address = self.listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.server_path)
            threading.Thread(target=self._relay, args=(server, client, False), daemon=True).start()
            threading.Thread(target=self._relay, args=(client, server, True), daemon=True).start()

    def _relay(self, source, sink, inspect: bool) -> None:
        seen = b""
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                if inspect and self._reads_the_offset(seen + data):
                    self.drops += 1
                    break
                seen = (seen + data)[-REQUEST_BYTES:]
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def _reads_the_offset(self, data: bytes) -> bool:
        magic = struct.pack(">I", REQUEST_MAGIC)
        at = data.find(magic)
        while at != -1 and at + REQUEST_BYTES <= len(data):
            _magic, _flags, kind, _handle, offset, length = REQUEST.unpack_from(data, at)
            if kind == READ and offset <= self.offset < offset + length:
                return True
            at = data.find(magic, at + 1)
        return False


def start(tmp_path, server_uri: str, offset: int) -> DropProxy:
    return DropProxy(os.path.join(str(tmp_path), "drop.sock"), server_uri.split("socket=", 1)[1], offset)
