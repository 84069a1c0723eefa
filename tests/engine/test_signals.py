"""Ctrl-C, SIGTERM and SIGHUP stop a run the same way (without Ray: the handlers themselves; the
end-to-end stop of a real sweep by SIGTERM is in test_sweep.py)."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from sweeper.engine.signals import StopOnSignal, StopSignal, signals_interrupt

    signum = int(sys.argv[1])
    before = signal.getsignal(signum)  # inherited: SIG_IGN under nohup or a background job, not Python's default
    asked = []
    signal.signal(signal.SIGUSR1, lambda *_: asked.append("tune"))  # Tune's graceful stop, as Tune installs it
    with signals_interrupt():
        with StopOnSignal() as stop:
            os.kill(os.getpid(), signum)
            time.sleep(0.2)
        print("phase", stop.signum, asked)
        try:
            os.kill(os.getpid(), signum)  # outside a phase
            time.sleep(2)
            print("not stopped")
        except StopSignal as err:
            print("outside", err.signum, isinstance(err, KeyboardInterrupt))
    print("restored", signal.getsignal(signum) == before)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_every_stop_signal_asks_tune_to_stop_in_a_phase_and_interrupts_outside_one(signum):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(int(signum))], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"phase {int(signum)} ['tune']", f"outside {int(signum)} True", "restored True"]


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_an_interrupted_run_exits_with_128_plus_the_signal(monkeypatch, capsys, signum, status):
    from sweeper import cli
    from sweeper.engine import cli as engine_cli
    from sweeper.errors import Interrupted

    def stopped(args):
        raise Interrupted("tune phase stopped (X); `sweeper run smoke --resume --run-name r1` finishes it", signum=signum)

    monkeypatch.setattr(engine_cli, "run_run", stopped)
    assert cli.main(["run", "smoke"]) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sweeper: interrupted: ") and "--resume" in err[0]
