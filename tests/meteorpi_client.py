"""A MeteorPi v2 client and camera exporter for the tests, written from ../shared/METEORPI.md (not from
their code): each request is built as ``meteorpi_client.MeteorClient`` and ``meteorpi_db.exporter``
build theirs, over any treq-like ``http`` (treq itself against a real node, a StubTreq in unit tests).
"""

import base64
import hashlib
import json
import uuid
from urllib.parse import quote_plus


def encode_search(search):
    """4.2: the search's dict as compact JSON, URL-encoded twice with quote_plus, for one path segment."""
    return quote_plus(quote_plus(json.dumps(search, separators=(",", ":"))))


def basic(user, password):
    """requests' auth=(user, password)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def _json(response):
    return json.loads(await response.content())


class Client:
    """The query calls of MeteorClient (v2), each returning what it returns (None where it gives up)."""

    def __init__(self, http, base_url, settle=None):
        self.http, self.base = http, base_url.rstrip("/")
        self.settle = settle  # (unit tests: pumps a StubTreq until a Deferred has fired)

    async def _wait(self, d):
        return await (self.settle(d) if self.settle else d)

    async def get(self, path, headers=None):
        response = await self._wait(self.http.get(self.base + path, headers=headers))
        return response, await self._wait(response.content())

    async def list_observatories(self):
        response, body = await self.get("/obstories")
        return json.loads(body)

    async def get_observatory_status(self, obstory_id, time=None):
        path = f"/obstory/{obstory_id}/statusdict" + ("" if time is None else f"/{time}")
        response, body = await self.get(path)
        if response.code != 200:
            return None
        answer = json.loads(body)
        return answer["status"] if "status" in answer else None

    async def search_observations(self, search):
        response, body = await self.get("/obs/" + encode_search(search))
        answer = json.loads(body)
        return {"count": answer["count"], "events": answer["obs"]}  # (the client's key is "events")

    async def search_files(self, search):
        response, body = await self.get("/files/" + encode_search(search))
        answer = json.loads(body)
        return {"count": answer["count"], "files": answer["files"]}

    async def get_content(self, repository_fname, file_name, byte_range=None):
        headers = {"Range": f"bytes={byte_range[0]}-{byte_range[1]}"} if byte_range else None
        return await self.get(f"/files/content/{repository_fname}/{file_name}", headers)


def multipart(content, mime_type):
    """requests_toolbelt's MultipartEncoder with one field ``file`` (filename ``file``); (body, content type)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"file\"\r\n"
            f"Content-Type: {mime_type}\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Exporter:
    """MeteorExporter v2's handle_next_export for one entity: POST the entity (requests' json=: json.dumps
    with its default separators) until the importer answers complete, uploading a file's content to
    ``/data/<repository_fname>/<file_md5>`` whenever it answers need_file_data (that answer unread, as the
    original).  The outcome: "complete", "failed" (an HTTP error) or "confused" (any other state)."""

    def __init__(self, http, target_url, user, password, settle=None):
        self.http, self.target, self.auth = http, target_url, basic(user, password)
        self.settle = settle
        self.posts = []  # (url, state answered) of every POST, for the tests to look at

    async def _wait(self, d):
        return await (self.settle(d) if self.settle else d)

    async def _post(self, url, body, content_type):
        headers = {**self.auth, "Content-Type": content_type}
        response = await self._wait(self.http.post(url, data=body, headers=headers))
        return response, await self._wait(response.content())

    async def export(self, kind, entity, content=None, max_steps=10):
        for _ in range(max_steps):
            response, body = await self._post(self.target, json.dumps({"type": kind, kind: entity}).encode(),
                                              "application/json")
            if response.code != 200:
                self.posts.append((self.target, response.code))
                return "failed"
            state = json.loads(body)["state"]
            self.posts.append((self.target, state))
            if state == "complete":
                return "complete"
            if state != "need_file_data":
                return "confused"
            data, content_type = multipart(content, entity["mime_type"])
            url = f"{self.target}/data/{json.loads(body)['file_id']}/{entity['file_md5']}"
            response, _ = await self._post(url, data, content_type)
            self.posts.append((url, response.code))
        return "confused"


def observation(obstory_id, obs_id, obs_time, obs_type="movingObject", meta=(), name="Camera"):
    return {"obstory_id": obstory_id, "id": obs_id, "obstory_name": name, "obs_id": obs_id, "obs_time": obs_time,
            "obs_type": obs_type, "files": [], "meta": [dict(m) for m in meta]}


def file_record(obstory_id, fname, obs_id, file_time, content, semantic_type="meteorpi:triggers/event",
                mime_type="image/png", meta=(), name="Camera"):
    return {"id": fname, "obstory_id": obstory_id, "obstory_name": name, "observation_id": obs_id,
            "repository_fname": fname, "file_time": file_time, "file_size": len(content),
            "file_name": f"{fname}.png", "mime_type": mime_type, "semantic_type": semantic_type,
            "file_md5": hashlib.md5(content).hexdigest(), "meta": [dict(m) for m in meta]}


def metadata(obstory_id, metadata_id, key, value, time, lat=52.2, lng=0.12, name="Camera"):
    return {"id": metadata_id, "metadata_id": metadata_id, "obstory_id": obstory_id, "obstory_name": name,
            "obstory_lat": lat, "obstory_lng": lng, "key": key, "time": time, "time_created": time,
            "user_created": "camera", "type": "number" if isinstance(value, (int, float)) else "string",
            "value": value}


def public_id(when, seed):
    """A v2 id as meteorpi_model.get_hash makes them: time, "_", md5 hex, cut to 32 characters."""
    import time

    return (time.strftime("%Y%m%d_%H%M%S", time.gmtime(when)) + "_" + hashlib.md5(seed.encode()).hexdigest())[:32]
