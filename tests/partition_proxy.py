"""A TCP forwarder on 127.0.0.1 that can cut what goes through it off, as
a network partition does: ``hold()`` stops it reading and forwarding (the
connections stay open, nothing is refused or reset), ``release()`` lets
what was held through and goes on forwarding. Between a node (and its
crawls) and PostgreSQL in the tests."""

from __future__ import annotations

import socket
import threading
from typing import Self

CHUNK = 65536


class PartitionProxy:
    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]

    def start(self) -> Self:
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()
        return self

    def url(self, url: str) -> str:
        """A PostgreSQL URL of the upstream server, through the proxy."""
        return url.replace(f":{self.upstream[1]}/", f":{self.port}/", 1)

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    @property
    def holding(self) -> bool:
        return not self._flowing.is_set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._keep(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        # A connection made during a partition reaches the server after it.
        self._flowing.wait()
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            _close(client)  # the server is down: as if it had refused
            return
        self._keep(server)
        for source, target in ((client, server), (server, client)):
            threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                self._flowing.wait()
                data = source.recv(CHUNK)
                if not data:
                    break
                # Read just as the partition began: held with the rest.
                self._flowing.wait()
                target.sendall(data)
        except OSError:
            pass
        self._flowing.wait()  # an end seen during a partition reaches the other side after it
        for sock in (source, target):
            _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
