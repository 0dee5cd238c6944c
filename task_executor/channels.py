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

from libs.rpc import CHANNEL_OPTIONS

T = TypeVar("T")

MAX_CHANNELS = 4
# A server-streaming call (the model's download) is read on the calling thread instead of a thread
# gRPC would start for each call.
SINGLE_THREADED_STREAMS = (grpc_experimental.ChannelOptions.SingleThreadedUnaryStream, 1)

_channels: OrderedDict[str, grpc.Channel] = OrderedDict()


def channel_to(endpoint: str) -> grpc.Channel:
    """The kept channel to ``endpoint``, opened on first use."""
    channel = _channels.get(endpoint)
    if channel is not None:
        _channels.move_to_end(endpoint)
        return channel
    channel = grpc.insecure_channel(endpoint, options=[*CHANNEL_OPTIONS, SINGLE_THREADED_STREAMS])
    _channels[endpoint] = channel
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
