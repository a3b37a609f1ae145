"""stationd.client: talk to a node over HTTP(S) with treq.

TLS is verified against ``ca`` (a PEM file) or the system's trust store, the
host name checked by service_identity; a client certificate is presented when
``client_cert`` and ``client_key`` are given (mutual TLS).
"""

import json

import treq
from twisted.internet import ssl
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


class ClientError(Exception):
    """The node answered with an error, or could not be reached."""

    def __init__(self, message, status=None, code=None):
        super().__init__(message)
        self.status = status
        self.code = code


@implementer(IPolicyForHTTPS)
class TLSPolicy:
    """Verify the node against ``ca`` (PEM), optionally present a client certificate."""

    def __init__(self, ca=None, client_cert=None, client_key=None):
        self.trust = None
        if ca is not None:
            with open(ca, "rb") as f:
                self.trust = ssl.Certificate.loadPEM(f.read())
        self.client = None
        if client_cert is not None:
            with open(client_cert, "rb") as c, open(client_key or client_cert, "rb") as k:
                self.client = ssl.PrivateCertificate.loadPEM(c.read() + b"\n" + k.read())

    def creatorForNetloc(self, hostname, port):
        if self.trust is None and self.client is None:
            return BrowserLikePolicyForHTTPS().creatorForNetloc(hostname, port)
        return ssl.optionsForClientTLS(
            hostname.decode("ascii"), trustRoot=self.trust, clientCertificate=self.client
        )


class Client:
    def __init__(self, url, api_key=None, ca=None, client_cert=None, client_key=None,
                 reactor=None, timeout=30, http_client=None):
        if reactor is None:
            from twisted.internet import reactor
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        if http_client is None:
            agent = Agent(reactor, contextFactory=TLSPolicy(ca, client_cert, client_key), pool=self.pool)
            http_client = treq.client.HTTPClient(agent)
        self.http = http_client

    def _headers(self):
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def request(self, method, path, **kwargs):
        """Send a request; return (status, body bytes); raise ClientError on failure."""
        headers = {**self._headers(), **kwargs.pop("headers", {})}
        try:
            response = await self.http.request(
                method, self.url + path, headers=headers, timeout=self.timeout, **kwargs
            )
            body = await treq.content(response)
        except Exception as e:
            raise ClientError(f"cannot reach {self.url}: {_reason(e)}") from None
        if response.code >= 400:
            raise _error(response.code, body)
        return response.code, body

    async def heartbeat(self):
        _, body = await self.request("GET", "/heartbeat")
        return body.decode("utf-8")

    async def status(self):
        _, body = await self.request("GET", "/api/v1/status")
        return json.loads(body)

    async def close(self):
        await self.pool.closeCachedConnections()


def _error(status, body):
    try:
        error = json.loads(body)["error"]
        return ClientError(f"HTTP {status}: {error['message']}", status, error["code"])
    except (ValueError, KeyError, TypeError):
        return ClientError(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}", status)


def _reason(exception):
    # treq/Agent wrap the real cause (TLS, refused, timeout) in lists of Failures.
    reasons = getattr(exception, "reasons", None)
    if reasons:
        return "; ".join(_reason(r.value) for r in reasons)
    return str(exception) or type(exception).__name__
