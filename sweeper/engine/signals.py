"""Stopping a run: Ctrl-C (SIGINT), SIGTERM (what `timeout`, SLURM, Kubernetes and cloud preemption
send) and SIGHUP (a closed terminal) all stop it the same way.

- During a phase, ``StopOnSignal`` asks Tune for its graceful stop (SIGUSR1: Tune saves its
  experiment state and returns); the phase then raises ``Interrupted`` naming the signal.
- Elsewhere in the run (encoding, writing outputs), ``signals_interrupt`` turns the signal into
  ``StopSignal``, a ``KeyboardInterrupt``, which the run turns into ``Interrupted``.

Either way the command prints one line with the ``--resume`` command and exits with status
128 + the signal's number: 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP). A second signal while Tune
saves gets the handler that was there before (Python's KeyboardInterrupt for Ctrl-C).

Ray's ``ray.init`` installs its own SIGTERM handler in the driver (it kills the local cluster's
processes and exits 1, with a native stack trace): ``signals_interrupt`` is entered after it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignal(KeyboardInterrupt):
    """A stop signal outside a phase."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _raise_stop(signum, frame):
    raise StopSignal(signum)


@contextlib.contextmanager
def signals_interrupt():
    """Within: SIGINT, SIGTERM and SIGHUP raise ``StopSignal`` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class StopOnSignal:
    """Within a phase: the first stop signal is remembered (``signum``) and Tune asked for its graceful
    stop. Tune's own SIGINT handler is off because after it returns nothing tells the caller that it
    was interrupted: the stopped trials read as terminated."""

    def __enter__(self):
        self.signum, self.active = None, threading.current_thread() is threading.main_thread()
        if self.active:
            self.saved_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
            if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):  # until Tune installs its own
                signal.signal(signal.SIGUSR1, lambda *_: None)
            self.previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.signum = signum
        self._restore()
        os.kill(os.getpid(), signal.SIGUSR1)

    def _restore(self):
        for signum, handler in self.previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, handler)

    @property
    def pressed(self) -> bool:
        return self.signum is not None

    def __exit__(self, *exc):
        if self.active:
            self._restore()
            if self.saved_env is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self.saved_env
        return False
