"""The node's HTTP surface: the route groups ("components") on one Klein app."""

from stationd.web.admin import AdminRoutes
from stationd.web.configs import ConfigRoutes
from stationd.web.core import Core
from stationd.web.imports import Import
from stationd.web.ingest import NativeIngest
from stationd.web.metrics import MetricsRoutes
from stationd.web.query import QueryRoutes
from stationd.web.sensors import SensorRoutes
from stationd.web.upload import Upload
from stationd.web.http import make_app, mount
from stationd.web.site import CORS, HotRoutes, NodeSite

# [web] components names -> route group classes, each built with the node.
COMPONENTS = {
    "core": Core,
    "admin": AdminRoutes,
    "upload": Upload,
    "ingest": NativeIngest,
    "query": QueryRoutes,
    "configs": ConfigRoutes,
    "import": Import,
    "sensors": SensorRoutes,
    "metrics": MetricsRoutes,
}


def make_resource(node, components, prefix, cors_origins=()):
    app = make_app()
    mounted = {}
    for name in components:
        mounted[name] = COMPONENTS[name](node)
        mount(app, mounted[name], prefix)
    routes = HotRoutes(app.resource(), prefix, mounted.get("ingest"), mounted.get("upload"))
    return CORS(routes, cors_origins) if cors_origins else routes


def make_site(node, reactor):
    web = node.config["web"]
    resource = make_resource(node, web["components"], web["request_path"], web["cors_origins"])
    return NodeSite(resource, web["max_body_size"], reactor)
