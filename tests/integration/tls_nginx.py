"""nginx terminating TLS in front of a plain ringws: the set-up users would
otherwise choose, and a TLS endpoint that is known to work. With
RINGWS_TLS_FRONT=nginx a suite that asks for a TLS server gets a plain
ringws behind this front instead of ringws's own TLS listener, which checks
the TLS tests themselves (their CA, clients and expectations) against a
second implementation. Nothing else needs it.

The front mirrors what the server's flags promise: the first certificate is
the default, the others are chosen by the names they hold; TLS 1.2 and 1.3
with forward-secret AEAD suites; ALPN http/1.1 (nginx refuses a client whose
offer lacks it); --handshake-timeout becomes client_header_timeout, which
nginx applies to the TLS handshake; SIGHUP rereads the certificates.
"""

import os
import re
import signal
import time

import fronts

HTTP = """    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
    ssl_session_tickets on;
    client_header_timeout %s;
%s"""

SERVER = """    server {{
        listen 127.0.0.1:{port} ssl{default};
        server_name {names};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
"""


def _handshake_timeout(args):
    """The value of --handshake-timeout in ringws's arguments, in nginx's
    syntax (both take 500ms and 2s; a plain number is seconds to both)."""
    args = list(args)
    if "--handshake-timeout" in args:
        return args[args.index("--handshake-timeout") + 1]
    return "10s"


class NginxFront(fronts.Nginx):
    def __init__(self, certs, upstream, args=()):
        self.port = fronts.free_port()
        servers = []
        for i, c in enumerate(certs):
            servers.append(SERVER.format(port=self.port, default=" default_server" if i == 0 else "",
                                         names=" ".join(c.names), cert=c.cert, key=c.key,
                                         upstream=upstream))
        super().__init__(HTTP % (_handshake_timeout(args), "".join(servers)), [self.port])

    def reload(self, timeout):
        """SIGHUP: ("ok", text) once new workers run with the reread
        certificates, ("failed", text) when nginx refused them."""
        before = len(self.log_text())
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()[before:]
            if "[emerg]" in text:
                return "failed", text
            # The old worker still accepts until it is told to stop.
            if re.search(r"reconfiguring.*start worker process.*gracefully shutting down", text, re.S):
                return "ok", text
            time.sleep(0.02)
        return None, self.log_text()[before:]
