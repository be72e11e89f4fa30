"""What one request may cost, and how many may wait: the server's memory is bounded by
its pool and queue, not by how many clients connect.

- A body larger than ``max_body`` bytes is refused, from its Content-Length when it
  declares one, else after ``max_body`` bytes have arrived (never buffered beyond that).
- A request takes an :class:`Admission` slot *before* its body is read: ``pool`` slots
  are working, ``queue`` more may wait; past that the answer is 503 with Retry-After at
  once, and a refused body is read and dropped chunk by chunk (so the client hears the
  answer rather than a reset), never kept. So at most ``pool + queue`` bodies and decoded
  images are in memory, whatever the number of connections.
- A slot is given back only when the work is really over: a request past its deadline is
  answered (504) at once, but its slot stays taken until the worker thread finishes.
"""

from __future__ import annotations

import threading


class Overloaded(Exception):
    """Every working and waiting slot is taken: answer 503 with Retry-After."""


class BodyTooLarge(Exception):
    """The body is over the cap (413, or the form's own error)."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before its tags were ready (504)."""


class Admission:
    """A counter of the requests being served or waiting, at most ``capacity``."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._taken = 0
        self._lock = threading.Lock()

    @property
    def taken(self) -> int:
        return self._taken

    def enter(self) -> "Slot":
        """A slot, or Overloaded at once (no waiting: the queue is the slots themselves)."""
        with self._lock:
            if self._taken >= self.capacity:
                raise Overloaded(f"all {self.capacity} places (pool and queue) are taken")
            self._taken += 1
        return Slot(self)

    def _leave(self) -> None:
        with self._lock:
            self._taken -= 1


class Slot:
    """One admitted request's place; released once, by whichever ends last: the request or its work."""

    def __init__(self, admission: Admission):
        self._admission = admission
        self._holders = 1  # the request
        self._lock = threading.Lock()

    def hold(self) -> None:
        """The work (a worker thread) holds the slot too, until :meth:`release` from its side."""
        with self._lock:
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            last = self._holders == 0
        if last:
            self._admission._leave()


async def read_body(receive_stream, declared: str | None, cap: int) -> bytes:
    """The whole body, or BodyTooLarge as soon as it is known to be over ``cap`` bytes.

    ``receive_stream``: an async iterator of chunks (Starlette's ``request.stream()``)."""
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise BodyTooLarge(f"the body is {int(declared)} bytes; the limit is {cap}")
    chunks, size = [], 0
    async for chunk in receive_stream:
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge(f"the body is over the limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def drain(receive_stream, cap: int) -> None:
    """Read and drop a body we will not use (at most ``cap`` bytes), so the answer reaches the client."""
    size = 0
    try:
        async for chunk in receive_stream:
            size += len(chunk)
            if size > cap:
                return
    except Exception:  # a client that hung up: nothing to answer
        return
