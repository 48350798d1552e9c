"""SIGTERM and SIGINT become a request that the loop honours between two steps:
it saves a checkpoint at the step reached and stops (a second SIGINT stops at
once, as usual)."""

import signal


class StopSignals:
    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = signals
        self.requested: signal.Signals | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum)

    def __enter__(self) -> "StopSignals":
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
