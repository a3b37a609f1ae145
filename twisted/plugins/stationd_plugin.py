"""twistd dropin: `twistd -n stationd` (the service is built in stationd.service)."""

from twisted.application.service import ServiceMaker

stationd = ServiceMaker(
    "stationd",
    "stationd.service",
    "The data node of a network of scientific field stations.",
    "stationd",
)
