// node_ws_echo.js URL CA_FILE [TLS_VERSION [CIPHERS]]: Node's `ws` client
// (Debian's node-ws; NODE_PATH=/usr/share/nodejs) opens URL trusting CA_FILE
// alone, optionally pinned to one TLS version (TLSv1.2 or TLSv1.3) and to
// the suites CIPHERS (OpenSSL's names, TLS 1.3 ones too), sends text,
// binary, a 1 MiB message and a burst of small ones, checks that every echo
// comes back byte-exact and in order, closes with 1000 and checks the
// server's close. Prints one JSON line: {"ok":true, "protocol", "cipher",
// "authorized", "messages"} or {"ok":false, "error"}; exits 0 only when ok.
'use strict';

const fs = require('fs');
const WebSocket = require('ws');

const [url, caFile, version, ciphers] = process.argv.slice(2);

function finish(result) {
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(result.ok ? 0 : 1);
}

const timer = setTimeout(() => finish({ ok: false, error: 'timed out after 20s' }), 20000);

const big = Buffer.alloc(1 << 20);
for (let i = 0; i < big.length; i++)
    big[i] = (i * 7919) & 0xff;
const sent = ['hello', 'h\u00e9llo \u2713 \ud83d\ude80', Buffer.from([...Array(256).keys()]), big,
              'x'.repeat(70000)];
for (let i = 0; i < 200; i++)
    sent.push(i % 2 ? 'small ' + i : Buffer.from('bin ' + i));

const opts = { ca: fs.readFileSync(caFile), perMessageDeflate: false, handshakeTimeout: 5000 };
if (version)
    opts.minVersion = opts.maxVersion = version;
if (ciphers)
    opts.ciphers = ciphers;
const ws = new WebSocket(url, opts);
let got = 0;
let protocol = null;
let cipher = null;
let authorized = null;

ws.on('open', () => {
    protocol = ws._socket.getProtocol();
    cipher = ws._socket.getCipher().name;
    authorized = ws._socket.authorized;
    for (const m of sent)
        ws.send(m);
});

ws.on('message', (data, isBinary) => {
    const want = sent[got];
    const wantBinary = Buffer.isBuffer(want);
    const same = wantBinary ? Buffer.compare(data, want) === 0 : data.toString('utf8') === want;
    if (isBinary !== wantBinary || !same)
        finish({ ok: false, error: `echo ${got}: expected ${wantBinary ? 'binary' : 'text'} of ` +
                 `${want.length}, got ${isBinary ? 'binary' : 'text'} of ${data.length}` });
    if (++got === sent.length)
        ws.close(1000, 'done');
});

ws.on('close', (code) => {
    clearTimeout(timer);
    if (got !== sent.length)
        finish({ ok: false, error: `closed (${code}) after ${got} of ${sent.length} echoes` });
    if (code !== 1000)
        finish({ ok: false, error: `server closed with ${code}, expected 1000` });
    finish({ ok: true, protocol, cipher, authorized, messages: got });
});

ws.on('error', (err) => finish({ ok: false, error: String(err && err.message || err) }));
