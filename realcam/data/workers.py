"""Worker processes for the data commands (``make-shards --workers``, ``check --workers``)."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator


def quiet_worker(init: Callable[..., None] | None = None, *args: Any) -> None:
    """Start of a data worker process: Ctrl-C is the main process's to handle (it ends the pool), one torch
    thread (the processes are the parallelism), then ``init(*args)``."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    if init is not None:
        init(*args)


@contextlib.contextmanager
def worker_pool(workers: int, init: Callable[..., None] | None = None, *args: Any) -> Iterator[Any]:
    """A ``multiprocessing`` pool of ``workers`` :func:`quiet_worker` processes (fork where the platform has it),
    or None for ``workers == 0``; terminated and joined on the way out, whatever happened."""
    import multiprocessing

    if workers <= 0:
        yield None
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = ctx.Pool(workers, initializer=quiet_worker, initargs=(init, *args))
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()
