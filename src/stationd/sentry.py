"""[metrics] sentry_dsn: every logged failure and error reported to Sentry, as Avalon did.

Twisted logs what goes wrong through its logger: an unhandled error in a Deferred, a
failing handler (``log.failure``), an error the node logs itself.  An observer on the global
log publisher hands those to sentry-sdk (the ``stationd[sentry]`` extra), tagged with the
node's name, id and version; sentry-sdk sends them from its own thread.  Unset, none of
this is imported.
"""

from typing import Any, cast

from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher

from stationd import __version__


class SentryUnavailable(Exception):
    """The DSN is set but cannot be used: a one-line reason for the operator."""


class SentryReporter(Service):
    def __init__(self, dsn: str, node_name: str, node_id: str) -> None:
        self.setName("sentry")
        try:
            import sentry_sdk
        except ImportError:
            raise SentryUnavailable("needs sentry-sdk: pip install 'stationd[sentry]'") from None
        self.sdk = sentry_sdk
        try:
            sentry_sdk.init(dsn=dsn, release=f"stationd@{__version__}", server_name=node_name,
                            default_integrations=False)  # (the log observer below reports; nothing else hooks in)
        except Exception as e:  # (sentry_sdk's BadDsn, for one)
            raise SentryUnavailable(f"bad DSN: {e}") from None
        sentry_sdk.set_tag("node_name", node_name)
        sentry_sdk.set_tag("node_id", node_id)

    def startService(self) -> None:
        super().startService()
        globalLogPublisher.addObserver(cast(ILogObserver, self.observe))

    def stopService(self) -> "defer.Deferred[None]":
        super().stopService()
        globalLogPublisher.removeObserver(cast(ILogObserver, self.observe))
        return threads.deferToThread(self.sdk.flush, timeout=5)  # (off the reactor: a server away takes 5 s)

    def observe(self, event: dict[str, Any]) -> None:
        failure = event.get("log_failure")
        level = event.get("log_level")
        if failure is None and level not in (LogLevel.error, LogLevel.critical):
            return
        with self.sdk.new_scope() as scope:
            scope.set_extra("message", formatEvent(event))
            scope.set_extra("namespace", event.get("log_namespace"))
            if failure is not None:
                self.sdk.capture_exception((failure.type, failure.value, failure.getTracebackObject()))
            else:
                self.sdk.capture_message(formatEvent(event), level="fatal" if level == LogLevel.critical else "error")
