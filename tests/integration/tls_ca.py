"""A certificate authority made by the tests themselves, with the openssl
command line in a temporary directory: a root (ECDSA P-256), certificates it
signs for the names a test asks for (ECDSA P-256 or RSA 2048, with the serial
and subject a test may check), an intermediate for chains, the TLS client
contexts that trust the root and nothing else, and an NSS database (what
Chromium reads on Linux) that trusts it.

The directory is removed when the process ends. Python 3.11 standard library
and /usr/bin/openssl only (certutil, from libnss3-tools, for the NSS
database).
"""

import atexit
import ipaddress
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading

OPENSSL = os.environ.get("RINGWS_OPENSSL", "/usr/bin/openssl")
CERTUTIL = os.environ.get("RINGWS_CERTUTIL", "/usr/bin/certutil")

# Names the default server certificate holds: a client may reach the server
# by any of them and verify it.
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


def _run(args, what, stdin=None):
    proc = subprocess.run(args, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60)
    if proc.returncode != 0:
        raise RuntimeError("%s failed (status %d): %s %s" % (
            what, proc.returncode, " ".join(args),
            proc.stderr.decode("utf-8", "replace")[-600:]))
    return proc.stdout


def _is_ip(name):
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _key_args(kind):
    if kind == "ec":
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    if kind == "rsa":
        return ["-newkey", "rsa:2048"]
    raise ValueError("key kind %r: ec or rsa" % kind)


class Cert:
    """A certificate and its key, as PEM files. `cert` may hold the chain
    (the leaf first, then the intermediates); `names` are its SAN names,
    `cn` its subject's common name, `serial` an int."""

    def __init__(self, cert, key, names, cn, serial, kind):
        self.cert, self.key, self.names = cert, key, tuple(names)
        self.cn, self.serial, self.kind = cn, serial, kind

    def pem(self):
        with open(self.cert, "rb") as f:
            return f.read()

    def leaf_der(self):
        """The leaf certificate (the first in the file), DER-encoded."""
        text = self.pem().decode("ascii")
        first = text[:text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
        return ssl.PEM_cert_to_DER_cert(first)

    def __repr__(self):
        return "<cert CN=%s serial=%d %s %s>" % (self.cn, self.serial, self.kind, ",".join(self.names))


class TestCA:
    """A root CA in its own temporary directory; `issue` signs leaves and
    `intermediate` makes a CA under it whose leaves come with the chain."""

    def __init__(self, name="ringws test root", parent=None):
        self.parent = parent
        self.dir = parent.dir if parent else tempfile.mkdtemp(prefix="ringws-ca-")
        if parent is None:
            atexit.register(shutil.rmtree, self.dir, True)
        self._lock = parent._lock if parent else threading.Lock()
        self._serial = parent._serial if parent else [1000]
        tag = name.replace(" ", "_")
        self.cert = os.path.join(self.dir, tag + ".pem")
        self.key = os.path.join(self.dir, tag + ".key")
        self.name = name
        ext = ["-addext", "basicConstraints=critical,CA:TRUE",
               "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        if parent is None:
            _run([OPENSSL, "req", "-x509", "-nodes", "-days", "3", "-subj", "/CN=" + name,
                  "-keyout", self.key, "-out", self.cert] + _key_args("ec") + ext, "making the root CA")
        else:
            csr = os.path.join(self.dir, tag + ".csr")
            _run([OPENSSL, "req", "-new", "-nodes", "-subj", "/CN=" + name, "-keyout", self.key,
                  "-out", csr] + _key_args("ec"), "making an intermediate CA's request")
            parent._sign(csr, self.cert, "basicConstraints=critical,CA:TRUE\n"
                         "keyUsage=critical,keyCertSign,cRLSign\n")
        self._contexts = {}

    @property
    def root(self):
        return self.parent.root if self.parent else self

    def next_serial(self):
        with self._lock:
            self._serial[0] += 1
            return self._serial[0]

    def _sign(self, csr, out, extensions, serial=None):
        serial = serial if serial is not None else self.next_serial()
        extfile = out + ".ext"
        with open(extfile, "w") as f:
            f.write(extensions)
        _run([OPENSSL, "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
              "-set_serial", str(serial), "-days", "3", "-sha256", "-extfile", extfile, "-out", out],
             "signing %s" % out)
        return serial

    def intermediate(self, name="ringws test intermediate"):
        return TestCA(name, parent=self)

    def issue(self, names=SERVER_NAMES, cn=None, kind="ec", serial=None, tag=None):
        """A server certificate for `names` (DNS names, wildcards and IP
        addresses), signed by this CA; when this is an intermediate, the file
        holds the chain up to (not including) the root."""
        cn = cn or names[0]
        serial = serial if serial is not None else self.next_serial()
        tag = tag or "%s-%s-%d" % (re.sub(r"[^A-Za-z0-9.-]", "_", cn), kind, serial)
        key = os.path.join(self.dir, tag + ".key")
        csr = os.path.join(self.dir, tag + ".csr")
        leaf = os.path.join(self.dir, tag + ".pem")
        _run([OPENSSL, "req", "-new", "-nodes", "-subj", "/CN=" + cn, "-keyout", key, "-out", csr]
             + _key_args(kind), "making a request for %s" % cn)
        san = ",".join(("IP:" if _is_ip(n) else "DNS:") + n for n in names)
        usage = "digitalSignature,keyEncipherment" if kind == "rsa" else "digitalSignature"
        self._sign(csr, leaf, "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,%s\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=%s\n" % (usage, san), serial)
        if self.parent is not None:
            with open(leaf, "ab") as out, open(self.cert, "rb") as inter:
                out.write(inter.read())
        return Cert(leaf, key, names, cn, serial, kind)

    def client_context(self, versions=None, alpn=None):
        """A client context that trusts this CA's root alone, checks the
        server's name and tells a close_notify from a bare EOF; `versions`
        (min, max) as ssl.TLSVersion."""
        root = self.root
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # Python sets this by default, which makes an EOF without the
        # server's close_notify read as if it had come.
        ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
        ctx.load_verify_locations(cafile=root.cert)
        if versions:
            ctx.minimum_version, ctx.maximum_version = versions
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def nss_db(self, home):
        """$home/.pki/nssdb, the user database Chromium reads on Linux,
        trusting this CA's root for servers."""
        db = os.path.join(home, ".pki", "nssdb")
        os.makedirs(db, exist_ok=True)
        _run([CERTUTIL, "-N", "-d", "sql:" + db, "--empty-password"], "certutil -N")
        _run([CERTUTIL, "-A", "-d", "sql:" + db, "-n", self.root.name, "-t", "C,,",
              "-i", self.root.cert], "certutil -A")
        return db


_shared = None
_shared_lock = threading.Lock()


def shared_ca():
    """One CA per test process."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = TestCA()
        return _shared


def cert_of_der(der):
    """(subject CN, serial) of a DER certificate, read by openssl."""
    pem = ssl.DER_cert_to_PEM_cert(der).encode("ascii")
    out = _run([OPENSSL, "x509", "-noout", "-serial", "-subject", "-nameopt", "multiline"],
               "openssl x509", stdin=pem).decode()
    serial = cn = None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("serial="):
            serial = int(line.split("=", 1)[1], 16)
        elif line.startswith("commonName"):
            cn = line.split("=", 1)[1].strip()
    return cn, serial
