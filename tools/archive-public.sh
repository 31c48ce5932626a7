#!/bin/sh
# archive-public.sh OUT MAP LD OBJCOPY NM AR ARCHIVE... - builds the installed
# static libringws.a: every object of the given archives partially linked
# (ld -r) into one, in which only the names that MAP (the shared library's
# version script) exports stay global.  The modules' own cross-file names
# (conn_*, frame_*, log_msg...) become local, so a program linked with the
# archive sees exactly the API the shared library offers and can never clash
# with them.  Fails when a name of MAP is not defined, so the two libraries
# cannot drift apart.
set -eu
out=$1 map=$2 ld=$3 objcopy=$4 nm=$5 ar=$6
shift 6
tmp=$out.d
rm -rf "$tmp" "$out"
mkdir "$tmp"
sed -n 's/^[[:space:]]*\(ringws_[a-z0-9_]*\);.*/\1/p' "$map" >"$tmp/keep"
"$ld" -r -o "$tmp/ringws.o" --whole-archive "$@" --no-whole-archive
"$objcopy" --keep-global-symbols="$tmp/keep" "$tmp/ringws.o"
"$nm" -g --defined-only "$tmp/ringws.o" | awk '{print $3}' | sort >"$tmp/global"
if ! sort "$tmp/keep" | cmp -s - "$tmp/global"; then
    echo "archive-public.sh: the global symbols differ from $map:" >&2
    sort "$tmp/keep" | diff - "$tmp/global" >&2 || true
    exit 1
fi
"$ar" rcD "$out" "$tmp/ringws.o"
rm -rf "$tmp"
