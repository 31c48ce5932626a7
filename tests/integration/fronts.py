"""Private instances of the proxies users put in front of ringws: Debian's
nginx (tls_nginx.py terminating TLS, test_proxy.py as a WebSocket reverse
proxy) and HAProxy (test_proxy_protocol.py, sending PROXY headers). Each
runs in the foreground as a child of the test, from a temporary directory
of its own (configuration, pid file, temp paths, log), on ports picked
free, and is killed with its process group when the test is done."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DEPLOY_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "DEPLOY.md")
NGINX = os.environ.get("RINGWS_NGINX", "/usr/sbin/nginx")
HAPROXY = os.environ.get("RINGWS_HAPROXY", "/usr/sbin/haproxy")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Front:
    """One proxy process. `conf` is its configuration text; `cmd` its
    command line given the directory and the configuration's path; it is
    ready once every port of `ports` accepts a connection (RuntimeError
    with the end of its log otherwise)."""

    def __init__(self, name, conf_name, conf, cmd, ports, log_name="output.log"):
        self.dir = tempfile.mkdtemp(prefix="ringws-%s-" % name)
        self.conf = os.path.join(self.dir, conf_name)
        self.log = os.path.join(self.dir, log_name)
        self.output = os.path.join(self.dir, "output.log")
        with open(self.conf, "w") as f:
            f.write(conf.replace("{dir}", self.dir))
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(cmd(self.dir, self.conf), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 10
        for port in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        text = self.log_text() + self._read(self.output)
                        self.stop()
                        raise RuntimeError("%s did not start: %s" % (name, text[-800:]))
                    time.sleep(0.02)

    @staticmethod
    def _read(path):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_text(self):
        return self._read(self.log)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# What every private nginx needs around the http{} body it is given: no
# daemon, its pid file, log and temp paths in its own directory.
NGINX_MAIN = """daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
%s
}
"""


class Nginx(Front):
    """nginx with `http_body` inside its http{} block, listening on `ports`."""

    def __init__(self, http_body, ports):
        super().__init__("nginx", "nginx.conf", NGINX_MAIN % http_body,
                         lambda d, conf: [NGINX, "-p", d, "-c", conf, "-e", os.path.join(d, "error.log")],
                         ports, log_name="error.log")


class HAProxy(Front):
    """HAProxy in the foreground (-db) with configuration `conf`; it logs
    to its output."""

    def __init__(self, conf, ports):
        super().__init__("haproxy", "haproxy.cfg", conf, lambda d, c: [HAPROXY, "-db", "-f", c],
                         ports)

    def log_text(self):
        return self._read(self.output)


def missing(path):
    """A reason to skip when a proxy's binary is not installed (exit 77)."""
    return None if os.access(path, os.X_OK) else "%s is not installed (tools/setup.sh installs it)" % path


def deploy_snippet(lang, replace):
    """The first ```LANG block of docs/DEPLOY.md, with each (old, new) of
    `replace` done: the tests run the configuration the documentation
    shows, and fail (ValueError) when an old text is no longer there
    exactly once."""
    with open(DEPLOY_MD, encoding="utf-8") as f:
        m = re.search(r"^```%s\n(.*?)^```$" % re.escape(lang), f.read(), re.M | re.S)
    if not m:
        raise ValueError("docs/DEPLOY.md has no ```%s block" % lang)
    text = m.group(1)
    for old, new in replace:
        if text.count(old) != 1:
            raise ValueError("docs/DEPLOY.md's %s block holds %r %d times, not once"
                             % (lang, old, text.count(old)))
        text = text.replace(old, new)
    return text
