"""The dashboard: one self-contained HTML page at ``GET /`` that draws itself from the API."""

from stationd.web.http import route


class Dashboard:
    def __init__(self, request_path: str):
        self.request_path = request_path

    @route("GET", "/")
    def page(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return b"<!doctype html><title>stationd</title>"
