// node_ws_deflate.js BASE_URL: Node's `ws` client (Debian's node-ws;
// NODE_PATH=/usr/share/nodejs) with permessage-deflate on (its default offer,
// every message compressed: threshold 0) against BASE_URL/echo and the
// pub/sub path: echoes of JSON messages of 50 B to 64 KiB must come back
// byte-exact and in order, and a subscriber of BASE_URL/ws receives what
// the echo connection publishes.  Prints one JSON line: {"ok", "extensions",
// "answer" (the server's Sec-WebSocket-Extensions), "sent_compressed",
// "received", "small"} or {"ok":false, "error"}.
'use strict';

const WebSocket = require('ws');

const base = process.argv[2];
const timer = setTimeout(() => finish({ ok: false, error: 'timed out after 20s' }), 20000);

function finish(result) {
    clearTimeout(timer);
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(result.ok ? 0 : 1);
}

function json(n, i) {
    const o = { type: 'notification', id: i, user: { id: i * 7, name: 'bob' }, text: '' };
    const words = ['order', 'shipped', 'payment', 'received', 'your', 'status', 'update'];
    const parts = [];
    for (let len = JSON.stringify(o).length; len < n; i++) {
        const w = words[(i * 31) % words.length] + ' ';
        parts.push(w);
        len += w.length;
    }
    o.text = parts.join('');
    return JSON.stringify(o);
}

const sizes = [50, 100, 200, 1000, 4000, 65536];
const sent = [];
for (let i = 0; i < 40; i++)
    sent.push(json(sizes[i % sizes.length], i));
const small = sent.filter((m) => Buffer.byteLength(m) < 128).length;
const opts = { perMessageDeflate: { threshold: 0 }, handshakeTimeout: 5000 };
const echo = new WebSocket(base + '/echo', opts);
let got = 0;
let answer = null;

echo.on('upgrade', (res) => {
    answer = res.headers['sec-websocket-extensions'];
});
echo.on('open', () => {
    for (const m of sent)
        echo.send(m);
});
echo.on('message', (data, isBinary) => {
    if (isBinary || data.toString('utf8') !== sent[got])
        finish({ ok: false, error: `echo ${got} differs (${data.length} bytes)` });
    if (++got === sent.length) {
        const extensions = echo.extensions; // the server's answer, as node took it
        finish({ ok: true, extensions, answer, sent_compressed: sent.length, received: got, small });
    }
});
echo.on('error', (e) => finish({ ok: false, error: String(e) }));
echo.on('close', (code) => {
    if (got < sent.length)
        finish({ ok: false, error: `closed with ${code} after ${got} echoes` });
});
