"""The bench for runtime developers: record what a runtime sent, replay
it, break the device on purpose (faults, reset, unplug: controls.py and
the fast path), and watch it live (metrics, ``kvctl top``).

The daemon makes one ``Bench`` for its device, ``start``s what its command
line asks for, publishes its ``attributes`` and ``close``s it first thing
when it stops; everything else here is used by kvctl and the pytest
plugin.  Modules:

``kvrec``          the file format and its readers (no cffi, no numpy: kvctl reads it)
``recorder``       the daemon's recorder and how it opens paths (root's, or a caller's)
``replay``         re-issuing a recording against a node, or the model
``controls``       the ``faults`` and ``control`` files; ``faults``: rules as text
``stats``          the ring listener counting commands (no prometheus-client)
``metrics``        Prometheus collector; ``httpd``: the bounded ``--metrics`` server
``pytest_plugin``  the ``kvcpu_device`` fixture
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..device.sysfs import Attribute

if TYPE_CHECKING:
    from ..driver.handle import NativeDriver
    from .httpd import Watch
    from .metrics import Metrics, ModelView

log = logging.getLogger("kvcpu_dev")


class Bench:
    """The bench of one running device: its recorder, the listener counting
    its commands, and its metrics (made when first read or served)."""

    def __init__(self, driver: NativeDriver, name: str, *,
                 model_config: Callable[[], str | None], model_view: ModelView):
        from . import stats
        from .recorder import RecordControl

        self.name = name
        self.control = RecordControl(driver, name, model_config=model_config)
        self.stats = stats.CommandStats()
        driver.add_listener(self.stats)
        self._driver = driver
        self._model_view = model_view
        self._metrics: Metrics | None = None
        self._metrics_asked: str | None = None  # --metrics HOST:PORT as given

    @property
    def metrics(self) -> Metrics:
        """The exposition, made on first use: prometheus-client is 3 MB of
        an idle daemon's RSS that nobody may ever read."""
        if self._metrics is None:
            from . import metrics

            def recording() -> tuple[bool, int]:
                rec = self.control.recorder
                return (rec is not None, rec.events if rec is not None else 0)

            self._metrics = metrics.Metrics(metrics.Collector(self._driver, self.stats, self._model_view, recording))
        return self._metrics

    def start(self, record: pathlib.Path | None, metrics_address: str | None, *,
              watch: Watch | None = None) -> None:
        """Start what the command line asked for: a recording, the metrics
        server (its threads given to ``watch``: httpd.Watch).  Raises
        StartError (one line)."""
        from ..errors import StartError

        if record:
            self.control.start(record)
        if metrics_address:
            from .metrics import parse_address

            self._metrics_asked = metrics_address
            try:
                host, port = parse_address(metrics_address)
                self.metrics.serve(host, port, watch)
            except (OSError, ValueError) as exc:
                raise StartError(f"--metrics {metrics_address}: {getattr(exc, 'strerror', None) or exc}") from None
            host, port = self.metrics.address or (host, port)
            log.info("%s: metrics at http://%s:%d/metrics", self.name, host, port)

    def attributes(self) -> list[Attribute]:
        return [
            Attribute("record", self.control.show, self.control.store, control=True),
            Attribute("metrics", lambda: self.metrics.text()),
        ]

    def describe(self) -> str:
        """What the options started, for the ready line: the recording's
        path and the metrics' URL (with the port the kernel chose for 0)."""
        parts = []
        rec = self.control.recorder
        if rec is not None:
            parts.append(f"recording to {rec.path}")
        if self._metrics is not None and self._metrics_asked:
            from .metrics import parse_address

            # the bound address; prometheus-client before 0.18 (Debian 12's) does not say it
            host, port = self._metrics.address or parse_address(self._metrics_asked)
            where = f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics" if port \
                else f"{host}, on a port the kernel chose"
            parts.append(f"metrics at {where}")
        return "".join(f"; {p}" for p in parts)

    def close(self) -> None:
        """Stop the metrics server and close the recording (its stop mark
        written after a last drain); safe to call twice."""
        if self._metrics is not None:
            self._metrics.close()
        self.control.stop()
