"""The library as a C programmer gets it.  The built and the installed
libringws.so export exactly the functions of include/ringws.h
(`nm -D --defined-only`), with a soname; the installed libringws.a defines
no other global symbol either; `meson install --destdir` puts the header,
both libraries and ringws.pc in place; and the README's example, which is
examples/echo.c word for word, built with `pkg-config --cflags --libs
ringws` against the installed tree, shared and static, runs and echoes.

In a sanitizer tree the library's objects need the sanitizer runtime: the
program is built with the tree's -fsanitize flags, and its fully static
link (which those runtimes do not allow) is left out, saying so.

Environment (tests/meson.build): RINGWS_BUILD_ROOT, RINGWS_SOURCE_ROOT,
RINGWS_SANITIZE (the tree's b_sanitize), CC."""

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import Runner, Server, eq, expect, fail, ws_connect  # noqa: E402

BUILD = os.environ.get("RINGWS_BUILD_ROOT", "")
SOURCE = os.environ.get("RINGWS_SOURCE_ROOT", "")
SANITIZE = os.environ.get("RINGWS_SANITIZE", "none")
CC = os.environ.get("CC", "cc")
TMP = tempfile.mkdtemp(prefix="ringws-install-")


def run(cmd, env=None, what=None):
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=120)
    if p.returncode:
        fail("%s failed (status %d): %s\n%s" % (what or cmd[0], p.returncode, " ".join(cmd),
                                                p.stdout[-3000:]))
    return p.stdout


def api_names():
    """The functions include/ringws.h declares."""
    with open(os.path.join(SOURCE, "include", "ringws.h")) as f:
        text = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
    names = set(re.findall(r"\b(ringws_\w+)\s*\(", text))
    expect(len(names) >= 15, "the header's functions", sorted(names))
    return names


def defined_globals(nm_args, path):
    out = run(["nm"] + nm_args + [path], what="nm")
    return {f[2] for f in (line.split() for line in out.splitlines()) if len(f) == 3}


def t_shared_exports(path):
    eq(sorted(defined_globals(["-D", "--defined-only"], path)), sorted(api_names()),
       "symbols exported by %s" % path)


def t_static_globals(path):
    eq(sorted(defined_globals(["-g", "--defined-only"], path)), sorted(api_names()),
       "global symbols defined in %s" % path)


def libdir():
    for root, _, files in os.walk(TMP):
        if "ringws.pc" in files:
            return os.path.dirname(root)
    fail("no ringws.pc under %s after meson install" % TMP)


def t_install():
    run(["meson", "install", "-C", BUILD, "--no-rebuild", "--quiet", "--destdir", TMP],
        what="meson install")
    lib = libdir()
    prefix = os.path.dirname(os.path.dirname(lib)) if "-linux-" in lib else os.path.dirname(lib)
    for rel in ("include/ringws.h",):
        expect(os.path.isfile(os.path.join(prefix, rel)), "installed " + rel, prefix)
    for name in ("libringws.a", "libringws.so", "libringws.so.0", "pkgconfig/ringws.pc"):
        expect(os.path.exists(os.path.join(lib, name)), "installed " + name, sorted(os.listdir(lib)))
    soname = run(["objdump", "-p", os.path.join(lib, "libringws.so")], what="objdump")
    expect(re.search(r"SONAME\s+libringws\.so\.0\b", soname), "SONAME libringws.so.0",
           [l for l in soname.splitlines() if "SONAME" in l])
    t_shared_exports(os.path.join(lib, "libringws.so"))
    t_static_globals(os.path.join(lib, "libringws.a"))


def readme_example():
    with open(os.path.join(SOURCE, "README.md")) as f:
        readme = f.read()
    m = re.search(r"^## The library\n.*?^```c\n(.*?)^```", readme, flags=re.S | re.M)
    if not m:
        fail("README.md has no C example under '## The library'")
    with open(os.path.join(SOURCE, "examples", "echo.c")) as f:
        eq(m.group(1), f.read(), "README's example against examples/echo.c")
    return m.group(1)


def pkg_config(*args):
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(libdir(), "pkgconfig"),
               PKG_CONFIG_SYSROOT_DIR=TMP)
    return run(["pkg-config"] + list(args) + ["ringws"], env=env, what="pkg-config").split()


def build(kind):
    src = os.path.join(TMP, "example.c")
    with open(src, "w") as f:
        f.write(readme_example())
    out = os.path.join(TMP, "example-" + kind)
    san = ["-fsanitize=" + SANITIZE] if SANITIZE != "none" else []
    libs = pkg_config("--libs") if kind == "shared" else pkg_config("--static", "--libs")
    link = ["-static"] if kind == "static" else []
    if kind == "archive":  # the archive, the system libraries shared
        libs = [a for l in libs for a in (["-Wl,-Bstatic", l, "-Wl,-Bdynamic"]
                                         if l == "-lringws" else [l])]
    run([CC, "-o", out, src] + san + pkg_config("--cflags") + libs + link, what="cc " + kind)
    return out


async def echo_once(port):
    async with ws_connect(port, "/echo") as ws:
        await ws.send("through the installed library")
        eq(await ws.recv(), "through the installed library", "echo")


def t_example_runs(kind):
    prog = build(kind)
    env = {"LD_LIBRARY_PATH": libdir()} if kind == "shared" else None
    deps = run(["ldd", prog], env=dict(os.environ, **(env or {})), what="ldd") \
        if kind != "static" else ""
    if kind == "shared":
        expect(re.search(r"libringws\.so\.0 => %s/" % re.escape(TMP), deps),
               "libringws.so.0 from the installed tree", deps)
    else:
        expect("libringws" not in deps, "no libringws.so in a static link", deps)
    srv = Server(cmd=[prog, 0], label="readme-" + kind, env=env).start()
    try:
        asyncio.run(asyncio.wait_for(echo_once(srv.port), 10))
    finally:
        problems = srv.stop()
    expect(not problems, "the example ends cleanly on SIGTERM", "; ".join(problems))


def main():
    r = Runner("library", watchdog=300)
    if not (BUILD and SOURCE):
        fail("RINGWS_BUILD_ROOT and RINGWS_SOURCE_ROOT must be set (tests/meson.build)")
    r.case("built-shared-exports-only-the-api", t_shared_exports,
           os.path.join(BUILD, "libringws.so"))
    r.case("built-archive-globals-only-the-api", t_static_globals,
           os.path.join(BUILD, "libringws.a"))
    r.case("readme-example-is-examples-echo", readme_example)
    if r.case("meson-install-destdir", t_install, timeout=120):
        r.case("readme-example-shared", t_example_runs, "shared", timeout=120)
        r.case("readme-example-archive", t_example_runs, "archive", timeout=120)
        if SANITIZE == "none":
            r.case("readme-example-static", t_example_runs, "static", timeout=120)
        else:
            print("skip readme-example-static: a -static link cannot take the %s "
                  "runtime of this tree" % SANITIZE, flush=True)
    shutil.rmtree(TMP, ignore_errors=True)
    r.finish()


if __name__ == "__main__":
    main()
