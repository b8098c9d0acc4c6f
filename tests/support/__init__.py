"""What the tests share, and bench uses too; never imported by Luca itself.

- ``provider``: the fake AI provider, a local OpenAI-compatible server tests switch while it runs;
- ``processes``: the one launcher of real processes (redis-server, gunicorn, RQ workers, flask commands);
- ``services``: the run's PostgreSQL and Redis (temporary databases, key prefixes, skip or fail);
- ``apps``: apps under test and their database (migrate, clean up, count statements, provider settings);
- ``api``: the API as one signed user sees it (``Api``, ``signed``, uploads);
- ``jobs``: RQ mode, a web app and the environment of worker processes that share its services;
- ``documents``: PDF, DOCX, XLSX and ZIP files built in memory, hostile ones included;
- ``pages``: the audit of a page against a strict CSP, the security headers, the browser to drive;
- ``sse``: Server-Sent Events bodies split into events.

Fixtures stay in ``tests/conftest.py``; test modules import from here, never from each other.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
