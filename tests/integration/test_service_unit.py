"""tools/ringws.service: the hardening and the stop, reload and limit
settings docs/DEPLOY.md promises, read from the file; its ExecStart flags
accepted by the built binary (run with --print-config on the example
configuration); a stop timeout above the drain; and, where systemd-analyze is
installed, `systemd-analyze verify` without a word to say."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import Runner, eq, expect, fail  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
UNIT = os.path.join(ROOT, "tools", "ringws.service")
EXAMPLE = os.path.join(ROOT, "docs", "ringws.conf.example")
BINARY = os.environ.get("RINGWS_BIN", "")
DRAIN_MARGIN = 0.5  # a stopping worker gives up close-timeout plus this

WANT = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "DynamicUser": "yes",
    "CapabilityBoundingSet": "", "KillSignal": "SIGTERM", "ExecReload": "/bin/kill -HUP $MAINPID",
}


def parse_unit(path):
    """{section: {key: [values in order]}}, continuation lines joined."""
    sections, section, pending = {}, None, ""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = pending + line.rstrip("\n")
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            s = line.strip()
            if not s or s[0] in "#;":
                continue
            m = re.fullmatch(r"\[([^\]]+)\]", s)
            if m:
                section = sections.setdefault(m.group(1), {})
                continue
            if section is None or "=" not in s:
                fail("%s:%d: not a key=value in a section: %r" % (path, n, s))
            k, v = s.split("=", 1)
            section.setdefault(k.strip(), []).append(v.strip())
    return sections


def seconds(value):
    m = re.fullmatch(r"([0-9.]+)\s*(ms|s|min)?", value)
    if not m:
        fail("not a duration: %r" % value)
    return float(m.group(1)) * {"ms": 0.001, None: 1.0, "s": 1.0, "min": 60.0}[m.group(2)]


def service():
    return parse_unit(UNIT)["Service"]


def last(svc, key):
    expect(key in svc, "%s= in [Service]" % key, sorted(svc))
    return svc[key][-1]


def t_hardening(*_):
    svc = service()
    for k, v in WANT.items():
        eq(last(svc, k), v, k)
    eq(sorted(last(svc, "RestrictAddressFamilies").split()), ["AF_INET", "AF_INET6", "AF_UNIX"],
       "RestrictAddressFamilies")
    expect(int(last(svc, "LimitNOFILE")) >= 16384, "LimitNOFILE at least max-connections' default",
           last(svc, "LimitNOFILE"))
    expect(last(svc, "LimitMEMLOCK"), "LimitMEMLOCK set (the rings are charged to it)", "")
    expect("AmbientCapabilities" not in svc or last(svc, "AmbientCapabilities") == "",
           "no ambient capability", svc.get("AmbientCapabilities"))
    # A filter must let the rings be made and entered: an allow-list names
    # them, a deny-list (~) must not.
    allowed = set()
    for v in svc.get("SystemCallFilter", []):
        names = set(v.lstrip("~").split())
        if v.startswith("~"):
            expect(not names & {"io_uring_setup", "io_uring_enter", "io_uring_register", "@io_uring"},
                   "io_uring left out of a deny list", v)
        else:
            allowed |= names
    if svc.get("SystemCallFilter"):
        expect({"io_uring_setup", "io_uring_enter", "io_uring_register"} <= allowed,
               "io_uring system calls in the allow list", sorted(allowed))


def t_exec_start(*_):
    svc = service()
    argv = shlex.split(last(svc, "ExecStart"))
    eq(argv[:3], ["/usr/local/bin/ringws", "--config", "/etc/ringws/ringws.conf"], "ExecStart")
    # The same flags, the configuration swapped for the example, read back.
    args = [EXAMPLE if a == "/etc/ringws/ringws.conf" else a for a in argv[1:]]
    p = subprocess.run([BINARY] + args + ["--print-config"], capture_output=True, text=True, timeout=30)
    eq(p.returncode, 0, "status of ringws %s --print-config (stderr %r)" % (" ".join(args), p.stderr))
    m = re.search(r"^close-timeout = (\S+)$", p.stdout, re.M)
    expect(m, "close-timeout in --print-config", p.stdout[:300])
    drain = seconds(m.group(1)) + DRAIN_MARGIN
    stop = seconds(last(svc, "TimeoutStopSec"))
    expect(stop > drain + 1.0, "TimeoutStopSec above the drain (%.1fs)" % drain, stop)


def t_systemd_verify(*_):
    tool = shutil.which("systemd-analyze")
    if not tool:
        print("  systemd-analyze is not installed: only the parsed checks ran", flush=True)
        return
    with tempfile.TemporaryDirectory() as d:
        # verify wants ExecStart's program to exist: point it at the build.
        with open(UNIT, encoding="utf-8") as f:
            text = f.read().replace("/usr/local/bin/ringws", os.path.abspath(BINARY))
        path = os.path.join(d, "ringws.service")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        p = subprocess.run([tool, "verify", path], capture_output=True, text=True, timeout=60)
    eq(p.returncode, 0, "systemd-analyze verify status (output %r)" % (p.stdout + p.stderr))
    eq((p.stdout + p.stderr).strip(), "", "systemd-analyze verify output")


def main():
    if not BINARY:
        fail("RINGWS_BIN is not set")
    r = Runner("service_unit")
    r.case("hardening-keys", t_hardening, timeout=30)
    r.case("exec-start-flags-and-stop-timeout", t_exec_start, timeout=30)
    r.case("systemd-analyze-verify", t_systemd_verify, timeout=90)
    r.finish()


if __name__ == "__main__":
    main()
