"""libdebugger: PostHog's Live Debugger for CPython 3.11+, in process.

The original library's API::

    from posthog import Posthog
    from libdebugger import LiveDebuggerManager

    client = Posthog("phc_...", personal_api_key="phx_...", host="https://us.posthog.com")
    debugger = LiveDebuggerManager(client=client, poll_interval=30)
    debugger.start()
    ...
    debugger.stop()

The work is done by the native module ``libdebugger._native``: libdebugger's helper (the code
the host agent injects into processes), linked together with the agent's PostHog poller,
breakpoints file reader and event builder. See README.md for what differs from the original.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from . import _native

__version__: str = _native.__version__
__all__ = ["Breakpoint", "LiveDebuggerManager", "HIT_EVENT", "__version__"]

#: The event name of a captured hit.
HIT_EVENT = "$data_breakpoint_hit"

# The original library's logger.
_log = logging.getLogger("posthog.data_breakpoints")


def _say(message: str) -> str:
    return f"[LIVE DEBUGGER] {message}"


@dataclass
class Breakpoint:
    """One breakpoint, as the original library describes it.

    ``uuid`` identifies it (PostHog's breakpoint id), ``filename`` is the source file
    (repository-relative, matched as a path suffix at a component boundary, or absolute),
    ``lineno`` its 1-based line, ``conditional_expr`` an optional side-effect-free Python
    expression: the hit is captured only when it is true.
    """

    uuid: str
    filename: str
    lineno: int
    conditional_expr: Optional[str] = None

    def _spec(self) -> Dict[str, Any]:
        return {
            "id": str(self.uuid),
            "file": self.filename,
            "line": self.lineno,
            "condition": self.conditional_expr,
        }

    @classmethod
    def _from_spec(cls, spec: Dict[str, Any]) -> "Breakpoint":
        return cls(
            uuid=spec["id"],
            filename=spec["file"],
            lineno=spec["line"],
            conditional_expr=spec.get("condition"),
        )


Sink = Callable[[Dict[str, Any]], None]

_TIMESTAMP = re.compile(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _parse_timestamp(text: str) -> Optional[datetime]:
    """RFC 3339 (the helper writes nanoseconds) → an aware datetime (microseconds)."""
    m = _TIMESTAMP.match(text)
    if m is None:
        return None
    frac = (m.group(2) or ".0")[:7]
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        return datetime.fromisoformat(m.group(1) + frac + zone)
    except ValueError:
        return None


def _host_agent_helper() -> Any:
    """The host agent's helper, if the agent injected it into this process."""
    return sys.modules.get("libdebugger_helper")


class LiveDebuggerManager:
    """Arms PostHog Live Debugger breakpoints in this process and sends their hits.

    ``LiveDebuggerManager(client, poll_interval=30)`` as in the original library: breakpoints
    come from PostHog's Live Debugger API through the client's ``personal_api_key`` and
    ``host`` (the first fetch at ``start()``, then every ``poll_interval`` seconds), and each
    hit goes through ``client.capture()`` as a ``$data_breakpoint_hit`` event.

    Beyond the original (keyword-only):

    * ``breakpoints``: a list of :class:`Breakpoint` to arm instead of polling PostHog
      (local mode; see also :meth:`from_file`).
    * ``sink``: a callable receiving every hit event (a dict: ``event``, ``distinct_id``,
      ``uuid``, ``timestamp``, ``properties``) instead of ``client.capture()``. It runs on
      libdebugger's own thread; exceptions it raises are logged.
    * ``distinct_id``: of the events (default ``libdebugger-<hostname>``, as the agent's).
    * ``settings``: the helper's process-wide budgets and redaction: ``process_rate``
      (snapshots/s, default 100), ``cpu_budget`` (default 0.02), ``queue_capacity`` (256),
      ``redact_add`` and ``redact_exclude`` (lists of names).
    """

    def __init__(
        self,
        client: Any = None,
        poll_interval: Union[int, float] = 30,
        *,
        breakpoints: Optional[Sequence[Breakpoint]] = None,
        sink: Optional[Sink] = None,
        distinct_id: Optional[str] = None,
        settings: Optional[Dict[str, Any]] = None,
    ) -> None:
        if client is None and sink is None:
            raise ValueError(
                "LiveDebuggerManager needs a PostHog client (hits are sent with its "
                "capture()) or a sink= callable (hits are handed to it)"
            )
        if client is None and breakpoints is None:
            raise ValueError(
                "LiveDebuggerManager without a client needs breakpoints= (a list of "
                "Breakpoint) or LiveDebuggerManager.from_file(path)"
            )
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)):
            raise TypeError(
                f"poll_interval must be a number of seconds, not {type(poll_interval).__name__}"
            )
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval}")
        if breakpoints is not None:
            for b in breakpoints:
                if not isinstance(b, Breakpoint):
                    raise TypeError(
                        f"breakpoints must be Breakpoint objects, not {type(b).__name__}"
                    )
        self.client = client
        self.poll_interval = poll_interval
        self.log = _log
        #: The breakpoints in force (as the source last gave them).
        self.breakpoints: List[Breakpoint] = list(breakpoints or [])
        self.enabled = False
        self.distinct_id = distinct_id or _native.default_distinct_id()
        self._local = list(breakpoints) if breakpoints is not None else None
        self._file: Optional[str] = None
        self._sink = sink
        self._settings = dict(settings) if settings else None
        self._lock = threading.RLock()
        self._last_source_error: Optional[str] = None
        self._delivery_errors = 0
        self._sent = 0
        self._endpoint: Optional[str] = None

    @classmethod
    def from_file(
        cls,
        path: Union[str, "os.PathLike[str]"],
        *,
        client: Any = None,
        sink: Optional[Sink] = None,
        distinct_id: Optional[str] = None,
        settings: Optional[Dict[str, Any]] = None,
    ) -> "LiveDebuggerManager":
        """Breakpoints from a file instead of PostHog, re-read whenever it changes (the
        agent's ``--breakpoints`` format: TOML ``[[breakpoint]]`` tables with ``file``,
        ``line`` and optionally ``id``, ``condition``, ``enabled``; or PostHog's JSON answer).
        A malformed file raises ``ValueError`` here; a later bad edit keeps the last good set.
        Hits go to ``sink`` if given, else through ``client.capture()``."""
        path = os.fspath(path)
        # Validates now, where the caller sees the error.
        _native.load_breakpoints_file(path)
        m = cls(
            client=client,
            sink=sink,
            breakpoints=[],
            distinct_id=distinct_id,
            settings=settings,
        )
        m._local = None
        m._file = os.path.abspath(path)
        return m

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        """Arms the breakpoints (fetching them first, in PostHog mode) and starts sending
        hits. Idempotent."""
        with self._lock:
            if self.enabled:
                self.log.info(_say("Already started"))
                return
            source = self._source_kind()
            if source == "posthog":
                key = getattr(self.client, "personal_api_key", None)
                if not key:
                    self.log.warning(
                        _say(
                            "the PostHog client has no personal_api_key: breakpoints cannot be "
                            "fetched, so the debugger stays off. Create a personal API key with "
                            "the scope live_debugger:read and pass it as "
                            "Posthog(..., personal_api_key=...)"
                        )
                    )
                    return
            global _active
            if _active is not None and _active is not self:
                raise RuntimeError(
                    "another LiveDebuggerManager is started in this process; stop() it first"
                )
            agent = _host_agent_helper()
            if agent is not None:
                # In-process wins: withdraw the host agent's breakpoints at once; the agent sees
                # LDBG_INPROCESS and stops sending any (see README, "With the host agent").
                try:
                    agent.set_breakpoints([])
                except Exception as e:  # the agent's helper is not ours to fail on
                    self.log.warning(_say(f"could not disarm the host agent's helper: {e}"))
            _native.set_active(True)
            _native.set_sink(self._on_message)
            _active = self
            self.enabled = True
            try:
                self._start_source(source)
            except BaseException:
                self._disarm()
                raise

    def stop(self) -> None:
        """Disarms every breakpoint, stops fetching, delivers the hits already captured to
        the client (its own queue then sends them) or sink, and stops. Idempotent."""
        with self._lock:
            if not self.enabled:
                return
            self.enabled = False  # a set arriving from the source now is ignored
        # Not under the lock: the source thread may be waiting for it in _on_change.
        _native.stop_source()
        with self._lock:
            self._disarm()

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits until every hit captured so far was handed to the client or sink. False on
        timeout. (The client sends them on its own schedule; ``client.flush()`` for that.)"""
        return bool(_native.flush(timeout))

    def status(self) -> Dict[str, Any]:
        """Each breakpoint's state (``armed``, ``pending`` with the reason, ``error``,
        ``throttled``) and counters (hits, captured, rate-limited, condition false/errors,
        dropped), the source's health (fetches, failures, last error), and process counters."""
        helper = _native.status()
        source = _native.source_status()
        return {
            "enabled": self.enabled,
            "source": json.loads(source) if source else {"source": self._source_kind()},
            "breakpoints": helper.get("breakpoints", []),
            "process": helper.get("process", {}),
            "events_sent": self._sent,
            "delivery_errors": self._delivery_errors,
            "host_agent_helper_loaded": _host_agent_helper() is not None,
        }

    # -- internals -------------------------------------------------------------------

    def _source_kind(self) -> str:
        if self._file is not None:
            return "file"
        if self._local is not None:
            return "list"
        return "posthog"

    def _start_source(self, source: str) -> None:
        if source == "list":
            self._apply([b._spec() for b in self._local or []])
        elif source == "file":
            # Armed before start() returns; the watcher then applies every change.
            self._apply(json.loads(_native.load_breakpoints_file(self._file))["breakpoints"])
            _native.start_file(self._file, self._on_change, self._on_status)
        else:
            self._endpoint = _native.start_posthog(
                getattr(self.client, "host", None),
                self.client.personal_api_key,
                getattr(self.client, "api_key", "") or "",
                float(self.poll_interval),
                self._on_change,
                self._on_status,
            )

    def _disarm(self) -> None:
        global _active
        try:
            _native.set_breakpoints([])
            _native.flush(2.0)
        finally:
            _native.set_sink(None)
            _native.set_active(False)
            if _active is self:
                _active = None
            self.enabled = False

    def _apply(self, specs: List[Dict[str, Any]]) -> None:
        if not self.enabled:
            return
        _native.set_breakpoints(specs, self._settings)
        self.breakpoints = [Breakpoint._from_spec(s) for s in specs]

    def _on_change(self, control_json: str) -> None:
        # The source thread: the set changed.
        try:
            with self._lock:
                self._apply(json.loads(control_json)["breakpoints"])
        except Exception as e:
            self.log.warning(_say(f"applying the breakpoints failed: {e}"))

    def _on_status(self, status_json: str) -> None:
        # The source thread: its health changed. Each distinct error is logged once.
        try:
            err = json.loads(status_json).get("last_error")
        except ValueError:
            return
        if err and err != self._last_source_error:
            self.log.warning(_say(f"{err}; the breakpoints in force stay"))
        elif not err and self._last_source_error:
            self.log.info(_say("breakpoints are fetched again"))
        self._last_source_error = err

    def _on_message(self, kind: str, message: str) -> None:
        # libdebugger's own thread: one message from the helper.
        if kind != "hit":
            return
        try:
            event = json.loads(_native.hit_event(message, self.distinct_id))
            if self._sink is not None:
                self._sink(event)
            else:
                self._capture(event)
            self._sent += 1
        except Exception as e:
            self._delivery_errors += 1
            if self._delivery_errors == 1 or self._delivery_errors % 1000 == 0:
                self.log.warning(
                    _say(f"delivering a hit failed ({self._delivery_errors} so far): {e!r}")
                )

    def _capture(self, event: Dict[str, Any]) -> None:
        # Keywords only: posthog 3.x takes distinct_id first, 6.x and later the event.
        self.client.capture(
            event=event["event"],
            distinct_id=event["distinct_id"],
            properties=event["properties"],
            timestamp=_parse_timestamp(event["timestamp"]),
            uuid=event["uuid"],
        )


# The started manager (one per process: the helper's breakpoint set is process-wide).
_active: Optional[LiveDebuggerManager] = None


def _after_fork_in_child() -> None:
    # The source thread did not survive the fork; the helper's own thread restarts itself.
    _native._source_after_fork_child()
    m = _active
    if m is not None and m.enabled and m._source_kind() in ("posthog", "file"):
        try:
            m._start_source(m._source_kind())
        except Exception as e:
            m.log.warning(_say(f"restarting the breakpoint source after fork failed: {e}"))


def _at_exit() -> None:
    m = _active
    if m is not None:
        try:
            m.stop()
        except Exception:
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
