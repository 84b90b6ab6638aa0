"""One scrape of /metrics reports every worker of ``--processes N``.

The kernel hands each connection to whichever worker's socket it picks (SO_REUSEPORT), so a
scrape reached one worker and saw its figures only. Here each worker also answers its own
metrics on a private Unix socket in a folder the parent made (mode 0700); the worker a scrape
reaches asks its siblings at once (concurrently, each within ``SIBLING_TIMEOUT``) and answers
every series of every worker with a ``worker`` label: one scrape is the truth, and a worker
that is restarting is only missing from it. (prometheus-client's multiprocess mode keeps its
values in files that every increment writes; the relay's counters are plain integers, and
the process metrics of each worker come along this way too.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

log = logging.getLogger(__name__)

#: Longest a scrape waits for a sibling's figures (a frozen worker is left out).
SIBLING_TIMEOUT = 1.0
#: Largest exposition read from a sibling.
MAX_EXPOSITION = 8 * 1024 * 1024


def socket_path(folder: str, number: int) -> str:
    return os.path.join(folder, f"worker-{number}.sock")


class WorkerGroup:
    """This worker's place in its group: its ``number`` of ``size``, and the folder the group's
    sockets live in."""

    def __init__(self, folder: str, number: int, size: int) -> None:
        self.folder = folder
        self.number = number
        self.size = size
        self._server: asyncio.AbstractServer | None = None
        self._own: Callable[[], bytes] | None = None

    async def start(self, own_metrics: Callable[[], bytes]) -> None:
        """Answer ``own_metrics()`` to the siblings that ask."""
        self._own = own_metrics
        path = socket_path(self.folder, self.number)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by this worker's previous life
        self._server = await asyncio.start_unix_server(self._answer, path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(OSError):
            os.unlink(socket_path(self.folder, self.number))

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            assert self._own is not None
            writer.write(self._own())
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _ask(self, number: int) -> str | None:
        try:
            opening = asyncio.open_unix_connection(socket_path(self.folder, number))
            reader, writer = await asyncio.wait_for(opening, SIBLING_TIMEOUT)
        except (OSError, TimeoutError):
            return None  # not started yet, restarting, or stopped
        try:
            data = await asyncio.wait_for(reader.read(MAX_EXPOSITION), SIBLING_TIMEOUT)
            return data.decode("utf-8")
        except (OSError, TimeoutError, UnicodeDecodeError):
            log.warning("worker %d did not answer its metrics in time", number)
            return None
        finally:
            writer.close()

    async def exposition(self) -> bytes:
        """Every worker's metrics, each series labelled with its worker."""
        assert self._own is not None
        others = [number for number in range(self.size) if number != self.number]
        answers = await asyncio.gather(*(self._ask(number) for number in others))
        texts = {self.number: self._own().decode("utf-8")}
        texts.update({number: text for number, text in zip(others, answers, strict=True) if text is not None})
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(texts))
        return generate_latest(registry)


class _Merged:
    """The families of several workers' expositions, as one collector."""

    def __init__(self, texts: dict[int, str]) -> None:
        self.texts = texts

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for number in sorted(self.texts):
            for family in text_string_to_metric_families(self.texts[number]):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                worker = str(number)
                merged.samples.extend(
                    Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp, s.exemplar) for s in family.samples
                )
        yield from families.values()
