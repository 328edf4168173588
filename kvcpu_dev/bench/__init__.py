"""The bench for runtime developers: record what a runtime sent, replay
it, break the device on purpose (faults, reset, unplug: controls.py and
the fast path), and watch it live (metrics, ``kvctl top``).

The daemon calls ``attach(server)`` once its attributes are built and
``detach(server)`` first thing when it closes; everything else here is
used by kvctl and the pytest plugin.  Modules:

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
from typing import TYPE_CHECKING, Any

from ..device.sysfs import Attribute

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("kvcpu_dev")


class Bench:
    """What attach() made for one server."""

    def __init__(self, server: Any):
        from . import stats
        from .recorder import RecordControl

        opts = server.opts
        model = opts.model
        self.control = RecordControl(
            server.driver, opts.name,
            model_config=(lambda: model.config.to_toml()) if model is not None else (lambda: None))
        self.stats = stats.CommandStats()
        server.driver.add_listener(self.stats)
        self._server = server
        self._metrics: Metrics | None = None

    @property
    def metrics(self) -> Metrics:
        """The exposition, made on first use: prometheus-client is 3 MB of
        an idle daemon's RSS that nobody may ever read."""
        if self._metrics is None:
            from . import metrics

            def recording() -> tuple[bool, int]:
                rec = self.control.recorder
                return (rec is not None, rec.events if rec is not None else 0)

            self._metrics = metrics.Metrics(metrics.Collector(
                self._server.driver, self.stats, metrics.model_view_for(self._server), recording))
        return self._metrics

    def attributes(self) -> list[Attribute]:
        return [
            Attribute("record", self.control.show, self.control.store, control=True),
            Attribute("metrics", lambda: self.metrics.text()),
        ]

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
        self.control.stop()


def attach(server: Any) -> list[Attribute]:
    """Make the recorder and the metrics for ``server``, start what its
    options ask for (``record``: a path; ``metrics``: HOST:PORT), and
    return the attribute files to publish.  Raises StartError (one line)."""
    from ..errors import StartError

    bench = Bench(server)
    server._bench = bench
    opts = server.opts
    try:
        if getattr(opts, "record", None):
            bench.control.start(opts.record)
        if getattr(opts, "metrics", None):
            from .metrics import parse_address

            try:
                host, port = parse_address(opts.metrics)
                bench.metrics.serve(host, port)
            except (OSError, ValueError) as exc:
                raise StartError(f"--metrics {opts.metrics}: {getattr(exc, 'strerror', None) or exc}") from None
            host, port = bench.metrics.address or (host, port)
            log.info("%s: metrics at http://%s:%d/metrics", opts.name, host, port)
    except BaseException:
        bench.close()
        raise
    return bench.attributes()


def detach(server: Any) -> None:
    """Stop the metrics server and close the recording (its stop mark
    written after a last drain); safe to call twice."""
    bench = getattr(server, "_bench", None)
    if bench is not None:
        bench.close()
        server._bench = None
