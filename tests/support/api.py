"""The API as one signed user sees it: a token-carrying client, users made through the CLI, uploads."""
from __future__ import annotations

import base64
import http.client
import json
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from luca.extensions import db


@dataclass
class Api:
    """A test client that signs every request with one user's token."""

    client: FlaskClient
    token: str
    user_id: int

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The Authorization header plus any extra ones."""
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET with the token."""
        return self.client.get(path, headers=self.headers(kwargs.pop("headers", None)), **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """POST JSON with the token."""
        return self.client.post(path, json=json, headers=self.headers(kwargs.pop("headers", None)), **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """PATCH JSON with the token."""
        return self.client.patch(path, json=json, headers=self.headers(kwargs.pop("headers", None)), **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        """DELETE with the token."""
        return self.client.delete(path, headers=self.headers(kwargs.pop("headers", None)), **kwargs)

    def new_conversation(self, **body: Any) -> dict[str, Any]:
        """Create a conversation and return its JSON.

        It gets a title unless the test passes title=None, so that no background title
        job talks to the test's providers behind its back.
        """
        body.setdefault("title", "Test conversation")
        response = self.post("/api/conversations", json={k: v for k, v in body.items() if v is not None})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def ask(self, conversation_id: str, content: str, **body: Any) -> Any:
        """Send a message to a conversation."""
        return self.post(f"/api/conversations/{conversation_id}/messages", json={"content": content, **body})


def create_user(app: Flask, email: str, admin: bool = False, org: str | None = None) -> tuple[int, str]:
    """Create a user through the CLI, as an operator would (in organisation org, else one of its own); return its id
    and token."""
    args = ["users", "create", email] + (["--admin"] if admin else []) + (["--org", org] if org else [])
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    with app.app_context():
        user_id = db.session.execute(sa.text("SELECT id FROM users WHERE email = :e"), {"e": email}).scalar_one()
    return user_id, token


def signed(app: Flask, email: str | None = None, org: str | None = None) -> Api:
    """A signed client of app for a new user (an address of its own unless given; in organisation org if given)."""
    user_id, token = create_user(app, email or f"user-{uuid.uuid4().hex[:8]}@example.com", org=org)
    return Api(app.test_client(), token, user_id)


def basic(user: str, password: str) -> dict[str, str]:
    """An Authorization header with HTTP Basic credentials."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def multipart(fields: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type (built here: the test client leaves big bodies unclosed)."""
    boundary = uuid.uuid4().hex
    parts = [b"--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
             b"Content-Type: application/octet-stream\r\n\r\n%s\r\n" % (boundary.encode(), field.encode(),
                                                                          name.encode(), data)
             for field, (name, data) in fields.items()]
    return b"".join(parts) + b"--%s--\r\n" % boundary.encode(), f"multipart/form-data; boundary={boundary}"


def upload(api: Api, conversation_id: str, name: str, data: bytes) -> dict[str, Any]:
    """Upload a document and return the 202 body."""
    body, content_type = multipart({"file": (name, data)})
    response = api.client.post(f"/api/conversations/{conversation_id}/files", headers=api.headers(),
                               data=body, content_type=content_type)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "pending"
    return body


def file_status(api: Api, file_id: int) -> dict[str, Any]:
    """A file's status as the API shows it."""
    return api.get(f"/api/files/{file_id}").get_json()


def http_request(base: str, method: str, path: str, token: str | None = None, body: Any = None,
                 timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection of its own: status, headers and body."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def new_conversation_over_http(base: str, token: str) -> str:
    """Create a conversation (titled, so no title job runs) and return its id."""
    status, _, body = http_request(base, "POST", "/api/conversations", token, {"title": "held"})
    assert status == 201
    return json.loads(body)["id"]
