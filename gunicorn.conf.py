"""Gunicorn settings for Luca: gthread workers, timeouts that suit streamed answers."""
import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads, not processes, carry concurrency: a request waiting on an AI provider holds a
# thread, not a whole worker.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
# A streamed answer can take minutes; the worker heartbeat still catches a hung process.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "180"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
preload_app = True
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "5000"))
max_requests_jitter = 500
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"
# Several gunicorns may share a host (web + benchmarks); the per-user control socket would clash.
control_socket_disable = True
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")


def post_fork(server, worker):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    """Give each worker its own database connections (the preloaded app's pool is not fork-safe)."""
    from luca.extensions import db
    from wsgi import app

    with app.app_context():
        db.engine.dispose(close=False)
