"""A mail sink: the least SMTP server smtplib can send to, on a spare local port, keeping every message."""
from __future__ import annotations

import socketserver
import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from types import TracebackType


class MailSink:
    """Accepts every message on 127.0.0.1 and keeps it parsed; use as a context manager."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"220 sink\r\n")
                while line := self.rfile.readline():
                    command = line.strip().upper()
                    if command.startswith(b"DATA"):
                        self.wfile.write(b"354 end with .\r\n")
                        data = []
                        while (part := self.rfile.readline()) not in (b".\r\n", b""):
                            data.append(part[1:] if part.startswith(b"..") else part)
                        sink.messages.append(message_from_bytes(b"".join(data), policy=policy.default))
                        self.wfile.write(b"250 kept\r\n")
                    elif command.startswith(b"QUIT"):
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:  # EHLO, MAIL FROM, RCPT TO, RSET, NOOP
                        self.wfile.write(b"250 ok\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"smtp://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> MailSink:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
