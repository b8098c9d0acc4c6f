"""Signed-in browsers: a test client holding a session cookie and the CSRF token its sign-in answered."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.support.api import create_user

PASSWORD = "correct horse battery"


@dataclass
class Browser:
    """A client signed in with a password; writes carry X-CSRF-Token."""

    client: FlaskClient
    csrf_token: str
    user: dict[str, Any]

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET with the session cookie."""
        return self.client.get(path, **kwargs)

    def send(self, method: str, path: str, json: Any = None, csrf: bool = True, **kwargs: Any) -> Any:
        """A write with the session cookie (and the CSRF token unless csrf=False)."""
        headers = {"X-CSRF-Token": self.csrf_token} if csrf else {}
        return self.client.open(path, method=method, json=json, headers={**headers, **kwargs.pop("headers", {})},
                                **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """POST JSON with the session cookie and CSRF token."""
        return self.send("POST", path, json, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """PATCH JSON with the session cookie and CSRF token."""
        return self.send("PATCH", path, json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        """DELETE with the session cookie and CSRF token."""
        return self.send("DELETE", path, **kwargs)


def login(app: Flask, email: str, password: str = PASSWORD, address: str = "127.0.0.1") -> Browser:
    """Sign in through POST /api/auth/login from a new client (at address); fails the test unless 200."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    response = client.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    return Browser(client, body["csrf_token"], body["user"])


def set_password(app: Flask, email: str, password: str = PASSWORD) -> None:
    """Give a user a password the way an operator would: `users reset-link`, then the link's token."""
    result = app.test_cli_runner().invoke(args=["users", "reset-link", email])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1].rpartition("token=")[2]
    response = app.test_client().post("/api/auth/reset", json={"token": token, "password": password})
    assert response.status_code == 204, response.get_json()


def member(app: Flask, email: str, org: str | None = None, admin: bool = False) -> tuple[int, str]:
    """A user with a password (through the CLI, in organisation org or one of their own); their id and API token."""
    user_id, token = create_user(app, email, admin=admin, org=org)
    set_password(app, email)
    return user_id, token
