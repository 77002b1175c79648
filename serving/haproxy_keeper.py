"""Keeps HAProxy serving when it dies: the process Ray Serve starts as HAProxy holds the real one.

Ray Serve's HAProxy manager knows its HAProxy by one fact: ``show info`` on the admin socket
reports the pid it spawned. It notices a dead HAProxy only when three health checks 10 s apart
have failed, and the HAProxy it then starts has no routes until the controller pushes them (404 to
every request meanwhile). Measured before this module: ``kill -9`` of HAProxy under load failed
75% of requests for 30-33 s, hundreds of them with 404.

So the process Ray spawns (this keeper, run by ``slimgate-haproxy``) stays, and HAProxy runs as
its child:

* **Restart at once.** A child that dies without having been asked to stop (SIGKILL, a crash) is
  started again within milliseconds from the same config file, which holds the routes Ray wrote
  last. Asked to stop means: SIGUSR1 (soft stop) or SIGTERM reached the keeper, the child exited 0
  (a successor's ``-sf`` soft stop ends that way), or a newer keeper has taken over. More than
  :data:`MAX_RESTARTS` deaths in :data:`RESTART_WINDOW_S` and the keeper gives up with the
  child's status, so Ray sees a crash it can act on.
* **The admin socket, relayed.** HAProxy's own socket is moved next to Ray's path
  (``<path>.haproxy``); the keeper serves Ray's path and relays each connection byte for byte,
  except that its child's ``Pid:`` reads as the keeper's pid: the identity Ray checks survives a
  restart of the child.
* **Reloads.** Ray reloads by spawning a new process with ``-sf <old pids>`` and ``-x <path>``; the
  new keeper hands the old keeper's child's pid to ``-sf`` (so HAProxy soft-stops HAProxy) and
  HAProxy's own socket to ``-x`` (listening sockets pass from HAProxy to HAProxy). It takes Ray's
  path over only once its own child answers, so a reload whose HAProxy fails to start leaves the
  old one reachable, as before.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

MAX_RESTARTS = 5
# What the keeper passes on to HAProxy: the stops (SIGUSR1 soft, SIGTERM hard), a state dump and
# the pause/resume pair.
FORWARDED = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTOU, signal.SIGTTIN)
RESTART_WINDOW_S = 60.0
_STATS_SOCKET = re.compile(r"^(\s*stats\s+socket\s+)(\S+)(\s.*)?$")


def private_socket(path: str) -> str:
    """Where HAProxy's own admin socket moves to when the keeper serves ``path``."""
    return f"{path}.haproxy"


def child_pid_file(path: str, keeper_pid: int) -> str:
    return f"{path}.keeper.{keeper_pid}"


def newest_keeper_file(path: str) -> str:
    return f"{path}.keeper"


def move_admin_socket(text: str) -> tuple[str, str | None]:
    """The config with HAProxy's admin socket moved to :func:`private_socket`, and Ray's path."""
    out, found = [], None
    for line in text.splitlines():
        m = _STATS_SOCKET.match(line)
        if m and found is None and not m.group(2).endswith(".haproxy"):
            found = m.group(2)
            line = f"{m.group(1)}{private_socket(found)}{m.group(3) or ''}"
        elif m and m.group(2).endswith(".haproxy"):
            found = m.group(2)[: -len(".haproxy")]
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else ""), found


def child_args(args: Sequence[str], path: str, child_of: Callable[[int], int | None]) -> list[str]:
    """HAProxy's arguments for the keeper's: each ``-sf``/``-st`` pid that is a keeper becomes its
    child's, and ``-x <path>`` becomes HAProxy's own socket."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-x" and i + 1 < len(args) and args[i + 1] == path:
            out += ["-x", private_socket(path)]
            i += 2
            continue
        out.append(a)
        i += 1
        if a in ("-sf", "-st"):
            while i < len(args) and args[i].isdigit():
                out.append(str(child_of(int(args[i])) or args[i]))
                i += 1
    return out


def restart_args(args: Sequence[str]) -> list[str]:
    """The arguments of a restart after a death: no predecessor to take over from."""
    out: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "-x":
            i += 2
            continue
        if args[i] in ("-sf", "-st"):
            i += 1
            while i < len(args) and args[i].isdigit():
                i += 1
            continue
        out.append(args[i])
        i += 1
    return out


class PidRewriter:
    """Rewrites ``Pid: <child>`` lines of a byte stream to ``Pid: <keeper>``, holding back only a
    partial line that could still become one."""

    def __init__(self, child: int, keeper: int) -> None:
        self.old, self.new = f"Pid: {child}".encode(), f"Pid: {keeper}".encode()
        self.pending = b""

    def feed(self, data: bytes) -> bytes:
        data = self.pending + data
        cut = data.rfind(b"\n") + 1
        done, rest = data[:cut], data[cut:]
        if rest and not (rest.startswith(b"Pid:") or b"Pid:".startswith(rest)):
            done, rest = data, b""
        self.pending = rest
        return self._swap(done)

    def flush(self) -> bytes:
        out, self.pending = self._swap(self.pending), b""
        return out

    def _swap(self, data: bytes) -> bytes:
        lines = data.split(b"\n")
        return b"\n".join(self.new if line.rstrip(b"\r") == self.old else line for line in lines)


def ask(path: str, command: str, timeout_s: float = 2.0) -> str:
    """One admin-socket command, HAProxy's non-interactive way: the answer ends at EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def answering_pid(path: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in ask(path, "show info").splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
    return None


class AdminRelay:
    """Serves Ray's admin-socket path for the keeper: each connection is relayed to HAProxy's own
    socket, with the child's ``Pid:`` reading as the keeper's."""

    def __init__(self, path: str, child: Callable[[], int]) -> None:
        self.path, self.target, self.child = path, private_socket(path), child
        self.me = os.getpid()
        self.sock: socket.socket | None = None

    def take_over(self) -> None:
        """Bind a fresh socket and move it onto Ray's path in one step (rename), mode 600."""
        tmp = f"{self.path}.{self.me}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(tmp)
        finally:
            os.umask(old)
        sock.listen(64)
        os.replace(tmp, self.path)
        self.sock = sock
        threading.Thread(target=self._accept, name="admin-relay", daemon=True).start()

    def owns_path(self) -> bool:
        if self.sock is None:
            return False
        with contextlib.suppress(OSError):
            return os.stat(self.path).st_ino == os.fstat(self.sock.fileno()).st_ino
        return False

    def _accept(self) -> None:
        assert self.sock is not None
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _upstream(self) -> socket.socket | None:
        # A child being restarted answers within a fraction of a second: wait for it, briefly.
        deadline = time.monotonic() + 2.0
        while True:
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                up.connect(self.target)
                return up
            except OSError:
                up.close()
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.05)

    def _relay(self, conn: socket.socket) -> None:
        with conn:
            up = self._upstream()
            if up is None:
                return
            with up:
                pump(conn, up, PidRewriter(self.child(), self.me))


def pump(client: socket.socket, up: socket.socket, rewriter: PidRewriter, idle_s: float = 60.0) -> None:
    """Both directions until HAProxy closes (or the client does, or nothing moves for ``idle_s``)."""
    sel = selectors.DefaultSelector()
    sel.register(client, selectors.EVENT_READ, up)
    sel.register(up, selectors.EVENT_READ, client)
    try:
        while events := sel.select(idle_s):
            for key, _ in events:
                src: socket.socket = key.fileobj  # type: ignore[assignment]
                data = src.recv(65536)
                if src is up:
                    if not data:
                        client.sendall(rewriter.flush())
                        return
                    client.sendall(rewriter.feed(data))
                elif data:
                    up.sendall(data)
                else:  # the client is done sending; HAProxy still answers
                    sel.unregister(client)
                    up.shutdown(socket.SHUT_WR)
    except OSError:
        return
    finally:
        sel.close()


class Keeper:
    """HAProxy as a child, restarted when it dies unasked (see the module docstring)."""

    def __init__(self, binary: str, args: Sequence[str], path: str, log: Callable[[str], None]) -> None:
        self.binary, self.args, self.path, self.log = binary, list(args), path, log
        self.me = os.getpid()
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.relay = AdminRelay(path, lambda: self.proc.pid if self.proc else 0)

    def _spawn(self, args: Sequence[str]) -> subprocess.Popen[bytes]:
        from serving import process_fate

        # The child must not outlive the keeper; a preexec_fn is unsafe beside the relay's threads,
        # so a tiny exec step (process_fate run as a script) asks Linux for it.
        cmd = [sys.executable, "-S", process_fate.__file__, self.binary, *args]
        proc = subprocess.Popen(cmd)
        with open(child_pid_file(self.path, self.me), "w", encoding="utf-8") as f:
            f.write(f"{proc.pid}\n")
        return proc

    def _signal(self, signum: int, _frame: object) -> None:
        if signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    def _is_newest(self) -> bool:
        return read_pid(newest_keeper_file(self.path)) == self.me

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        while proc.poll() is None:
            if answering_pid(private_socket(self.path)) == proc.pid:
                return True
            time.sleep(0.02)
        return False

    def run(self) -> int:
        for signum in (
            signal.SIGUSR1,
            signal.SIGTERM,
            signal.SIGINT,
            signal.SIGHUP,
            signal.SIGTTOU,
            signal.SIGTTIN,
        ):
            signal.signal(signum, self._signal)
        self.proc = self._spawn(child_args(self.args, self.path, self._child_of))
        if not self._wait_ready(self.proc):
            return self._finish(self.proc.wait())
        self.relay.take_over()
        with open(newest_keeper_file(self.path), "w", encoding="utf-8") as f:
            f.write(f"{self.me}\n")
        deaths: deque[float] = deque()
        while True:
            code = self.proc.wait()
            if self.stopping or code == 0 or not self._is_newest():
                return self._finish(code)
            now = time.monotonic()
            deaths.append(now)
            while deaths and deaths[0] < now - RESTART_WINDOW_S:
                deaths.popleft()
            if len(deaths) > MAX_RESTARTS:
                self.log(f"HAProxy died {len(deaths)} times in {RESTART_WINDOW_S:.0f} s; giving up")
                return self._finish(code)
            self.log(f"HAProxy (pid {self.proc.pid}) died ({describe(code)}); restarting it with its routes")
            self.proc = self._spawn(restart_args(self.args))
            self._wait_ready(self.proc)

    def _child_of(self, keeper_pid: int) -> int | None:
        return read_pid(child_pid_file(self.path, keeper_pid))

    def _finish(self, code: int) -> int:
        with contextlib.suppress(OSError):
            os.unlink(child_pid_file(self.path, self.me))
        if self.relay.owns_path():
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        return code if code >= 0 else 128 - code


def read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit status {code}"
