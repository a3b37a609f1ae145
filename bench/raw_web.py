# From ../shared/bench/ (the project's ceilings), unchanged; run by bench/ingest.py.
"""Ceiling (a): raw twisted.web Resource, reads the body, fixed small answer, no access log."""
import sys
from twisted.internet import reactor
from twisted.web import resource, server
class Accept(resource.Resource):
    isLeaf = True
    def render_POST(self, request):
        request.content.read()
        request.setHeader(b"content-type", b"application/json")
        return b'{"accepted": 1, "duplicates": 0, "quarantined": 0}'
    render_GET = render_POST
class Site(server.Site):
    def log(self, request): pass
reactor.listenTCP(int(sys.argv[1]), Site(Accept()), interface="127.0.0.1")
reactor.run()
