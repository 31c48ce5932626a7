// test_ringws_js.mjs SRC/ringws.js - ringws.js's decisions on what a server
// sends, with a scripted WebSocket given in the options (node, no network):
// the cases the real server never produces on purpose (a duplicate, a
// message of a subscription left, a frame outside the envelope) and the
// arithmetic of reconnection (the hint, full jitter within its bound, the
// reset after a stable connection, the closes after which it stops).  The
// browser tests (tests/integration/test_client_js.py) run it against the
// server.  Exits 0 when every case passed.
import assert from 'node:assert/strict';
import {pathToFileURL} from 'node:url';

const {RingWS} = await import(pathToFileURL(process.argv[2]).href);

/* The peer: records what the client sends; the test plays the server. */
class Script {
  static made = [];

  constructor(url, protocol) {
    this.url = url;
    this.protocol = '';
    this.offered = protocol;
    this.readyState = 0;
    this.sent = [];
    this.listeners = {};
    Script.made.push(this);
  }

  addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); }
  send(text) { this.sent.push(text); }
  close(code) { this.closedWith = code; }
  fire(type, event) { for (const fn of this.listeners[type] || []) fn(event); }

  open(protocol = 'ringws.v1') {
    this.protocol = protocol;
    this.readyState = 1;
    this.fire('open', {});
  }

  text(frame) { this.fire('message', {data: frame}); }
  binary(header, bytes) {
    const buf = new Uint8Array(header.length + 1 + bytes.length);
    buf.set(new TextEncoder().encode(header + '\n'));
    buf.set(bytes, header.length + 1);
    this.fire('message', {data: buf.buffer});
  }

  end(code, reason = '') {
    this.readyState = 3;
    this.fire('close', {code, reason});
  }
}

function last() { return Script.made[Script.made.length - 1]; }
const tick = () => new Promise((r) => setTimeout(r, 0));
const E = '0123456789abcdef';

function client(options = {}) {
  const c = new RingWS('ws://127.0.0.1:1/ws', Object.assign({WebSocket: Script}, options));
  c.seen = [];
  for (const type of ['open', 'close', 'reconnecting', 'recovered', 'gap', 'subscribed', 'error']) {
    c.addEventListener(type, (e) => c.seen.push([type, e.detail]));
  }
  return c;
}

const cases = {
  async 'messages: text, binary as a view, meta; duplicates dropped and counted'() {
    const c = client();
    const got = [];
    c.subscribe('a', (data, meta) => got.push([data, meta]));
    await tick();
    const ws = last();
    assert.equal(ws.offered, 'ringws.v1');
    ws.open();
    assert.deepEqual(ws.sent, ['sub a']);
    ws.text(`msg a ${E} 1\nbefore the answer`);
    ws.text(`subscribed a ${E} 4`);
    ws.text(`msg a ${E} 4\nalready had`);
    ws.text(`msg a ${E} 5\nfive\nlines`);
    ws.binary(`msg a ${E} 6`, new Uint8Array([0, 10, 255]));
    ws.text(`msg a ${E} 6\nagain`);
    assert.equal(got.length, 2);
    assert.deepEqual(got[0], ['five\nlines', {topic: 'a', epoch: E, offset: 5}]);
    assert.ok(got[1][0] instanceof Uint8Array);
    assert.deepEqual([...got[1][0]], [0, 10, 255]);
    assert.equal(c.duplicates, 2);
    assert.deepEqual(c.position('a'), {epoch: E, offset: 6});
    assert.throws(() => c.subscribe('a,b', () => {}), TypeError);
    await assert.rejects(c.publish('a b', 'x'), TypeError);
    assert.deepEqual(ws.sent, ['sub a'], 'nothing sent for names that are no topics');
    c.close();
  },

  async 'resume: positions in sub, recovered, gap with the old position'() {
    const c = client({backoff: {initial: 1, max: 1}});
    c.subscribe('a', () => {});
    c.subscribe('b:x', () => {}, {since: `${E}:7`});
    c.subscribe('c', () => {});
    await tick();
    let ws = last();
    ws.open();
    assert.deepEqual(ws.sent, [`sub a,b:x,c b:x:${E}:7`]);
    ws.text(`subscribed a ${E} 3`);
    ws.text(`gap b:x fedcba9876543210 1 2`);
    ws.text(`subscribed c ${E} 0`);
    ws.end(1006);
    await new Promise((r) => setTimeout(r, 20));
    ws = last();
    ws.open();
    assert.deepEqual(ws.sent, [`sub a,b:x,c a:${E}:3,b:x:fedcba9876543210:2,c:${E}:0`]);
    ws.text(`recovered a ${E} 4 3`);
    const gap = c.seen.find((e) => e[0] === 'gap')[1];
    assert.deepEqual(gap, {topic: 'b:x', epoch: 'fedcba9876543210', oldest: 1, last: 2,
                           previousEpoch: E, previousOffset: 7});
    assert.deepEqual(c.seen.find((e) => e[0] === 'recovered')[1],
                     {topic: 'a', epoch: E, from: 4, to: 3});
    c.close();
  },

  async 'unsub then sub: the old subscription\'s messages are not the new one\'s'() {
    const c = client();
    const got = [];
    const s = c.subscribe('a', (d) => got.push(d));
    await tick();
    const ws = last();
    ws.open();
    ws.text(`subscribed a ${E} 0`);
    s.unsubscribe();
    c.subscribe('a', (d) => got.push(d));
    assert.deepEqual(ws.sent, ['sub a', 'unsub a', 'sub a']);
    ws.text(`msg a ${E} 1\nold`);
    ws.text('unsubscribed a');
    ws.text(`subscribed a ${E} 1`);
    ws.text(`msg a ${E} 2\nnew`);
    assert.deepEqual(got, ['new']);
    c.close();
  },

  async 'publish: the position; 1008 rejects it with the reason and stops'() {
    const c = client();
    const early = c.publish('p', 'queued before open');
    await tick();
    const ws = last();
    ws.open();
    assert.deepEqual(ws.sent, ['pub p queued before open']);
    ws.text(`published p ${E} 9`);
    assert.deepEqual(await early, {topic: 'p', epoch: E, offset: 9});
    const refused = c.publish('q', 'no');
    ws.end(1008, 'publishing to this topic is not allowed');
    await assert.rejects(refused, {code: 1008, message: 'publishing to this topic is not allowed'});
    assert.equal(c.state, 'closed');
    assert.deepEqual(c.seen.at(-1), ['close', {code: 1008, reason:
      'publishing to this topic is not allowed', reconnect: false}]);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(last(), ws, 'no reconnect after 1008');
    await assert.rejects(c.publish('p', 'after'));
  },

  async 'reconnect delays: the hint, full jitter within its bound, reset when stable'() {
    const c = client({backoff: {initial: 100, max: 250, factor: 2, stable: 30}});
    await tick();
    last().open();
    last().end(1012, 'server restarting; retry after 7 ms');
    const delays = () => c.seen.filter((e) => e[0] === 'reconnecting').map((e) => e[1]);
    assert.deepEqual(delays()[0], {delay: 7, attempt: 1});
    await new Promise((r) => setTimeout(r, 15));
    last().end(1006);          /* failed before opening: attempt 1, bound 200 */
    last().end(1000);          /* a second close of a socket left: ignored */
    const d = delays();
    assert.equal(d.length, 2);
    assert.ok(d[1].delay >= 0 && d[1].delay < 200, 'jitter within 100 * 2^1');
    clearTimeout(c.timer);
    for (let k = 0; k < 200; k++) {
      c.retry(1006, '');
      clearTimeout(c.timer);
    }
    assert.ok(delays().every((x) => x.delay < 250), 'never past max');
    c.connect();               /* after 200 failures in a row ... */
    await tick();
    last().open();
    await new Promise((r) => setTimeout(r, 40));
    last().end(1001, 'going away');  /* ... one stable connection: from attempt 0 again */
    assert.equal(delays().at(-1).attempt, 1);
    assert.ok(delays().at(-1).delay < 100);
    c.close();
  },

  async 'tokens: getToken before each connect, 4001 reconnects; without getToken it stops'() {
    let n = 0;
    const c = client({getToken: async () => 'tok' + ++n, backoff: {initial: 1, max: 1}});
    await tick();
    assert.match(last().url, /[?&]token=tok1$/);
    last().open();
    last().end(4001, 'token expired');
    await new Promise((r) => setTimeout(r, 20));
    assert.match(last().url, /[?&]token=tok2$/);
    c.close();

    const d = client({token: 'fixed'});
    await tick();
    last().open();
    last().end(4001, 'token expired');
    assert.equal(d.state, 'closed');
  },

  async 'a server without the envelope, a frame outside it'() {
    const c = client();
    await tick();
    last().open('');
    assert.equal(c.state, 'closed');
    assert.equal(c.seen.at(-1)[1].code, 1002);

    const d = client({backoff: {initial: 1, max: 1}});
    d.subscribe('a', () => {});
    await tick();
    const ws = last();
    ws.open();
    ws.text('hello, raw stream');
    assert.equal(ws.closedWith, 1000);
    assert.equal(d.seen.find((e) => e[0] === 'error')[1].message.slice(0, 17), 'unreadable frame:');
    d.close();
  },
};

let failed = 0;
for (const [name, fn] of Object.entries(cases)) {
  try {
    await fn();
    console.log('ok   ' + name);
  } catch (err) {
    failed++;
    console.log('FAIL ' + name + ': ' + (err.stack || err));
  }
}
console.log(`ringws_js: ${Object.keys(cases).length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
