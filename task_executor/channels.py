"""gRPC channels to coordinators, opened once per executor process and kept.

Why keep them: a long-lived job executor (one process serving a job's tasks
round after round, see ``task_manager.job_executors``) talks to the same
coordinator several times a round (download, upload).  A new channel per call
pays a TCP connect, an HTTP/2 handshake and gRPC's own setup, milliseconds a
round on a busy host; a kept channel pays it once per job.  In a one-task
executor the channel simply ends with the process.

A kept channel is open while the user's code runs.  A script that forks (a
PyTorch ``DataLoader`` with worker processes) gets children that inherit the
channel's memory but never use it (their work is data loading, and they end
with ``os._exit``), which is safe with gRPC's fork support off, its default;
what is never safe, using a channel in a forked child, nsfl does not do.

Every channel runs over the process's one :class:`~libs.wire.Wire`, made
from the executor's settings (the task manager's TLS files): it presents the
client's certificate and expects the coordinator of the task's job at the
other end, so an endpoint that serves any other certificate (another job's
coordinator, a client's, another CA's) fails the handshake before a byte of
the task leaves.  Channels are kept per (endpoint, job).  Plaintext
(``insecure``) dials loopback endpoints only.

At most :data:`MAX_CHANNELS` endpoints are kept (a job executor serves one
coordinator; a restarted coordinator gets a new executor), the oldest closed
first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import grpc
import grpc.experimental as grpc_experimental

from libs.errors import InvalidSetting
from libs.wire import Wire, WireSettings
from libs.wire.settings import is_loopback

T = TypeVar("T")

MAX_CHANNELS = 4
# A server-streaming call (the model's download) is read on the calling thread instead of a thread
# gRPC would start for each call.
SINGLE_THREADED_STREAMS = (grpc_experimental.ChannelOptions.SingleThreadedUnaryStream, 1)

_channels: OrderedDict[tuple[str, str], grpc.Channel] = OrderedDict()
_wires: dict[WireSettings, Wire] = {}


def wire_of(settings: WireSettings) -> Wire:
    """The process's wire for ``settings`` (its client certificate is checked once)."""
    wire = _wires.get(settings)
    if wire is None:
        wire = _wires[settings] = Wire.from_settings(settings, role="client")
    return wire


def channel_to(endpoint: str, job_id: str, settings: WireSettings) -> grpc.Channel:
    """The kept channel to the coordinator of ``job_id`` at ``endpoint``, opened on first use."""
    key = (endpoint, job_id)
    channel = _channels.get(key)
    if channel is not None:
        _channels.move_to_end(key)
        return channel
    wire = wire_of(settings)
    if not wire.secure and not is_loopback(endpoint):
        raise InvalidSetting(
            f"refusing to send a task in plaintext to {endpoint!r}: 'insecure' is for loopback only; "
            "give the task manager 'tls_ca', 'tls_cert' and 'tls_key'"
        )
    channel = wire.sync_channel(endpoint, wire.coordinator_of(job_id), [SINGLE_THREADED_STREAMS])
    _channels[key] = channel
    while len(_channels) > MAX_CHANNELS:
        _, oldest = _channels.popitem(last=False)
        oldest.close()
    return channel


_background: ThreadPoolExecutor | None = None


def in_background(function: Callable[[], T]) -> Future[T]:
    """Run a blocking call (an RPC whose answer is needed later) on the process's one helper thread.

    Why one kept thread: a gRPC call made with ``.future()`` starts a thread of its own, and starting a
    thread waits for it to run, milliseconds on a busy host, right on the path of the round.
    """
    global _background
    if _background is None:
        _background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nsfl-rpc")
    return _background.submit(function)


def close_all() -> None:
    """Close every kept channel (tests; a process about to exit need not)."""
    while _channels:
        _, channel = _channels.popitem()
        channel.close()
