#!/bin/sh
# tls-setup.sh - the TLS pieces that the benchmarks (bench/tls.sh) and the
# tests of the load generator (tests/integration/test_loadgen_tls.py) share:
# a test certificate, and nginx terminating TLS in front of a plain ringws.
#
# Why it exists: nginx in front of a plain server is what many would
# deploy instead of TLS in ringws, so it is measured beside it, and the
# tests drive the load generator's wss:// through the same set-up; the
# configuration is written here once.
#
# Usage:
#   bench/tls-setup.sh cert DIR [ecdsa|rsa]
#       writes DIR/cert.pem and DIR/key.pem: a self-signed certificate for
#       localhost and 127.0.0.1, valid 30 days, ECDSA P-256 by default (RSA
#       2048 with rsa).  It is its own CA: ringws-bench --ca DIR/cert.pem
#       verifies a server that presents it.
#   bench/tls-setup.sh nginx-conf DIR PORT BACKEND_PORT CERT KEY [WORKERS]
#       writes DIR/nginx.conf: TLS 1.2 and 1.3 on 127.0.0.1:PORT (session
#       tickets on, nginx's default), every request (WebSocket upgrades and
#       POST /publish/... included) proxied to http://127.0.0.1:BACKEND_PORT,
#       no access log, its pid, error log and temporary files in DIR.  One
#       process by default; WORKERS > 1 (a master and WORKERS workers, the
#       listening socket shared with reuseport) when one process cannot hold
#       the descriptors (two per proxied connection, 20000 at most each).
#       Run it in the foreground, stopped by its PID:
#         nginx -p DIR -c DIR/nginx.conf -e DIR/error.log
set -eu

usage() {
    sed -n '/^# Usage:/,/^set -eu/p' "$0" | sed '$d' | cut -c3- >&2
    exit 2
}

tls_cert() {
    dir=$1
    case ${2:-ecdsa} in
    ecdsa) key="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1" ;;
    rsa) key="-newkey rsa:2048" ;;
    *) usage ;;
    esac
    mkdir -p "$dir"
    # shellcheck disable=SC2086  # $key is several words
    openssl req -x509 $key -nodes -days 30 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>"$dir/openssl.err" || {
        cat "$dir/openssl.err" >&2
        exit 1
    }
}

tls_nginx_conf() {
    dir=$1 port=$2 backend=$3 cert=$4 key=$5 workers=${6:-1}
    master=off reuseport=
    if [ "$workers" -gt 1 ]; then
        master=on
        reuseport=" reuseport"
    fi
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
# TLS in front of a plain ringws (bench/tls-setup.sh).
worker_processes $workers;
master_process $master;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http {
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        '' close;
    }
    server {
        listen 127.0.0.1:$port ssl$reuseport;
        ssl_certificate $cert;
        ssl_certificate_key $key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://127.0.0.1:$backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$http_host;
            proxy_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }
    }
}
EOF
}

[ $# -ge 1 ] || usage
what=$1
shift
case $what in
cert)
    if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
    tls_cert "$@" ;;
nginx-conf)
    if [ $# -lt 5 ] || [ $# -gt 6 ]; then usage; fi
    tls_nginx_conf "$@" ;;
*) usage ;;
esac
