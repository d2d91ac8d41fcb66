"""The line's classification in a process of its own, fed over a private socket pair.

The controller is bound by one interpreter lock: its event loop (PLC, XRF, label), its database
thread and classification share it, and a cell's classification is a few ms of small numpy
calls. In a child process the classification runs on the other core and the event loop does
not wait for it (docs/bench.md has the figures). The child loads the model itself from the
registry (skops, checked as everywhere); only evidence and decisions cross the socket.

Frames are JSON with the spectra's counts after it (plant/classifier_frames.py), between this
process and the child it started (a socketpair, no address anyone else can reach). A child that
dies fails the batch it held (those cells go to quarantine, as any failed decision) and is
started again for the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from drivers.backoff import Backoff
from models.registry import LoadedModel, Registry
from plant.children import cpu_of, reap
from plant.classifier_frames import (
    HEAD,
    Frame,
    decisions_frame,
    decisions_of,
    error_frame,
    evidence_frame,
    evidence_of,
    ok_frame,
)
from plant.decide import Evidence, decide_batch
from plant.domain import Decision
from plant.routing import RoutingRules

log = logging.getLogger(__name__)
START_TIMEOUT_S = 120.0  # the child imports scikit-learn and loads the model first
DECIDE_TIMEOUT_S = 30.0  # a batch takes ms; a child this late is stuck (its cells: quarantine)
# After a failed start (model will not load, no memory, ...): wait this long before the next try,
# doubling up to the cap. Meanwhile batches fail at once (their cells: quarantine) instead of
# each waiting seconds for a start that fails again; a child that died is restarted at once.
RESTART_BACKOFF_S = (1.0, 30.0)


class ClassifierProcessError(RuntimeError):
    """The classifier process failed, exited or did not answer (the message says which)."""


class ClassifierProcess:
    """`decide_batch` in a child process; one request at a time, answered in order."""

    def __init__(
        self,
        registry: Registry,
        model_name: str,
        rules: RoutingRules,
        *,
        restart_backoff_s: tuple[float, float] = RESTART_BACKOFF_S,
    ) -> None:
        self.registry = (registry.root, registry.default_dir)
        self.model_name = model_name
        self.model_version: str | None = None
        self.rules = rules
        self.start_attempts = 0
        self._backoff = Backoff(*restart_backoff_s)
        self._start_error = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock = asyncio.Lock()
        self._cpu_done = 0.0  # CPU seconds of children already stopped

    async def start(self) -> None:
        """Start the child and wait until it has loaded the model."""
        async with self._lock:
            await self._start()

    async def decide_batch(self, items: Sequence[Evidence]) -> list[Decision]:
        async with self._lock:
            if self._sock is None:
                left = self._backoff.left()
                if left > 0:
                    raise ClassifierProcessError(
                        f"classifier process not running ({self._start_error}); "
                        f"next start attempt in {left:.1f} s"
                    )
                await self._start()
            return decisions_of(await self._ask(evidence_frame(list(items)), DECIDE_TIMEOUT_S))

    async def use(self, model_name: str) -> str:
        """Load another model from the registry (activated by an engineer); its version."""
        async with self._lock:
            if self._sock is None:
                self.model_name = model_name
                await self._start()
            else:
                self.model_version = await self._ask(
                    Frame({"kind": "model", "name": model_name}), START_TIMEOUT_S
                )
                self.model_name = model_name
            assert self.model_version is not None
            return self.model_version

    async def set_rules(self, rules: RoutingRules) -> None:
        """Route by these rules from the next batch on (config/routing.toml changed)."""
        async with self._lock:
            self.rules = rules  # a child started from now on gets them with `init`
            if self._sock is None:
                return
            try:
                await self._ask(_rules_frame("rules", rules), DECIDE_TIMEOUT_S)
            except ClassifierProcessError as exc:  # stopped: the next batch starts a new one
                log.warning("new routing rules reach the next classifier process: %s", exc)

    async def close(self) -> None:
        async with self._lock:
            await self._stop()

    def cpu_seconds(self) -> float:
        """CPU seconds the classifier processes used so far (Linux /proc; for `plant bench`)."""
        return self._cpu_done + cpu_of(self._proc)

    @property
    def pid(self) -> int | None:
        """The child's process id (None while none runs)."""
        return self._proc.pid if self._proc is not None else None

    # -- parent side ---------------------------------------------------------------------------
    async def _start(self) -> None:
        """Start the child now (whatever the backoff says); a failure sets the backoff."""
        await self._stop()
        self.start_attempts += 1
        try:
            parent, child = socket.socketpair()
            with child:
                proc = await asyncio.to_thread(
                    subprocess.Popen,
                    [sys.executable, "-m", "plant.classifier_process", str(child.fileno())],
                    pass_fds=[child.fileno()],
                )
            parent.setblocking(False)
            self._proc, self._sock = proc, parent
            root, default_dir = self.registry
            init = _rules_frame("init", self.rules).message | {
                "root": str(root),
                "default_dir": str(default_dir),
                "name": self.model_name,
            }
            self.model_version = await self._ask(Frame(init), START_TIMEOUT_S)
        except (ClassifierProcessError, OSError) as exc:
            await self._stop()
            self._start_error = f"start failed: {exc}"
            self._backoff.failed()
            if isinstance(exc, ClassifierProcessError):
                raise
            raise ClassifierProcessError(f"classifier process not started: {exc}") from None
        self._backoff.succeeded()

    async def _ask(self, request: Frame, timeout: float) -> Any:
        """Send one request and return its answer; a child that is gone or stuck is stopped
        (the next request starts a new one), an error it reports is raised."""
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_sendall(self._sock, request.to_bytes())
                head, counts = HEAD.unpack(await self._read(HEAD.size))
                answer = Frame.parse(await self._read(head), await self._read(counts))
        except TimeoutError:
            await self._stop()
            raise ClassifierProcessError(
                f"classifier process did not answer within {timeout:g} s; restarting it"
            ) from None
        except (ClassifierProcessError, OSError) as exc:
            code = await asyncio.to_thread(self._exit_code)
            await self._stop()
            raise ClassifierProcessError(
                f"classifier process exited (exit code {code}): {exc}"
                if code is not None
                else f"classifier process lost: {exc}"
            ) from None
        if answer.message.get("status") != "ok":
            raise ClassifierProcessError(f"classifier process: {answer.message.get('value')}")
        return answer.message["value"]

    async def _read(self, n: int) -> bytes:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        buf = bytearray()
        while len(buf) < n:
            chunk = await loop.sock_recv(self._sock, n - len(buf))
            if not chunk:
                raise ClassifierProcessError("it closed its end of the socket")
            buf += chunk
        return bytes(buf)

    def _exit_code(self) -> int | None:
        if self._proc is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5.0)
        return self._proc.returncode

    async def _stop(self) -> None:
        sock, proc = self._sock, self._proc
        self._sock = self._proc = None
        self._cpu_done += cpu_of(proc)
        if sock is not None:
            sock.close()  # the child's read ends: it exits
        if proc is not None:
            await reap(proc, 5.0)


# -- child side --------------------------------------------------------------------------------
def main(argv: list[str]) -> None:
    """The child (`python -m plant.classifier_process FD`): load the model it is told, say its
    version, then answer requests until the parent closes the socket (Ctrl-C at a terminal
    stops the parent, which closes it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(1)  # small matrix products; an idle BLAS thread would spin on a core
    sock = socket.socket(fileno=int(argv[0]))

    with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # the parent was killed
        _answer(sock)


def _answer(sock: socket.socket) -> None:
    """Answer the parent's requests until it closes the socket."""
    registry: Registry | None = None
    model: LoadedModel | None = None
    rules: RoutingRules | None = None
    while (request := _read_frame(sock)) is not None:
        msg = request.message
        kind = msg.get("kind")
        try:
            if kind == "init":
                rules = RoutingRules.model_validate(msg["rules"])
                registry = Registry(Path(msg["root"]), Path(msg["default_dir"]))
                model = registry.load(msg["name"])
                answer = ok_frame(model.version)
            elif kind == "model" and registry is not None:
                model = registry.load(msg["name"])
                answer = ok_frame(model.version)
            elif kind == "rules" and model is not None:
                rules = RoutingRules.model_validate(msg["rules"])
                answer = ok_frame(None)
            elif kind == "decide" and model is not None and rules is not None:
                cells = evidence_of(request)
                answer = decisions_frame(
                    decide_batch(cells, model.classifier, rules, model.version)
                )
            else:
                answer = error_frame(f"request {kind!r} not understood here")
        except Exception as exc:  # the parent fails this request and goes on
            answer = error_frame(f"{type(exc).__name__}: {exc}")
        sock.sendall(answer.to_bytes())


def _rules_frame(kind: str, rules: RoutingRules) -> Frame:
    return Frame({"kind": kind, "rules": rules.model_dump(mode="json")})


def _read_frame(sock: socket.socket) -> Frame | None:
    """The next request, None once the parent has closed its end."""
    head = _read_exact(sock, HEAD.size)
    if head is None:
        return None
    json_size, counts_size = HEAD.unpack(head)
    body = _read_exact(sock, json_size + counts_size)
    return None if body is None else Frame.parse(body[:json_size], body[json_size:])


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


if __name__ == "__main__":
    main(sys.argv[1:])
