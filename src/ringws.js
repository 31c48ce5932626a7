/* ringws.js - the client of ringws's pub/sub endpoint for browsers (and for
 * Node with a WebSocket class given in the options): one connection that
 * speaks the `ringws.v1` envelope (docs/PUBSUB.md), subscriptions with a
 * callback per topic, publishing, reconnection with exponential backoff and
 * full jitter (or the server's own "retry after N ms"), resumption from the
 * last position seen per topic, and a token refresh hook.  docs/CLIENT.md
 * says how to use it.
 *
 * Why it exists: a subscriber that reconnects must come back spread over
 * time, give the positions it holds, drop what it already has and tell its
 * application where the history could not fill the hole; every application
 * would otherwise write the same code, and get the seams wrong.  An ES
 * module with no dependency, served by the server at /ringws.js (the build
 * embeds this file). */

const PROTOCOL = 'ringws.v1';
const LF = 0x0a;
const OPEN = 1;
/* Close codes after which reconnecting cannot help: the server refused
 * what the connection did (1008), or it does not speak the envelope. */
const FINAL_CODES = [1008, 1002];
const HINT_CODES = [1001, 1012, 1013];
const TOKEN_EXPIRED = 4001;
/* docs/PUBSUB.md, "Topics": refused here, a bad name would otherwise cost
 * the whole connection a 1008. */
const TOPIC = /^[A-Za-z0-9._~:/@-]{1,128}$/;
const headerDecoder = new TextDecoder();

/* A position given as {epoch, offset} or as "EPOCH:OFFSET". */
function parsePosition(since) {
  if (since === undefined || since === null) return null;
  if (typeof since === 'string') {
    const m = /^([0-9a-f]{16}):(\d+)$/.exec(since);
    if (!m) throw new TypeError('not a position (EPOCH:OFFSET): ' + since);
    return {epoch: m[1], offset: Number(m[2])};
  }
  if (typeof since.epoch !== 'string' || !Number.isSafeInteger(since.offset)) {
    throw new TypeError('a position is {epoch, offset}');
  }
  return {epoch: since.epoch, offset: since.offset};
}

/* The exp claim (Unix seconds) of a JWT, or null: the client reads it only
 * to know when to renew, it verifies nothing. */
function tokenExpiry(token) {
  const part = typeof token === 'string' ? token.split('.')[1] : undefined;
  if (!part) return null;
  try {
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    const exp = JSON.parse(json).exp;
    return Number.isFinite(exp) ? exp : null;
  } catch (err) {
    return null;
  }
}

/* The WebSocket URL: relative URLs against the page, http(s) as ws(s). */
function socketUrl(url) {
  const base = globalThis.location ? globalThis.location.href : undefined;
  const u = new URL(url, base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new TypeError('not a WebSocket URL: ' + url);
  }
  return u;
}

/* One frame of the envelope: its header fields and its body, the body a
 * view of the received bytes for a binary frame (never copied). */
function parseFrame(data) {
  if (typeof data === 'string') {
    const end = data.indexOf('\n');
    if (end < 0) return {fields: data.split(' '), body: ''};
    return {fields: data.slice(0, end).split(' '), body: data.slice(end + 1)};
  }
  const bytes = new Uint8Array(data);
  let end = bytes.indexOf(LF);
  if (end < 0) end = bytes.length;
  return {fields: headerDecoder.decode(bytes.subarray(0, end)).split(' '),
          body: bytes.subarray(Math.min(end + 1, bytes.length))};
}

function offsetOf(text) {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error('not an offset: ' + text);
  return n;
}

/* A handler's exception must not stop the other handlers nor the client:
 * it is reported as uncaught, where the page's developer looks. */
function callSafely(fn, ...args) {
  try {
    fn(...args);
  } catch (err) {
    queueMicrotask(() => { throw err; });
  }
}

export class RingWS extends EventTarget {
  /* options: token, getToken, backoff {initial, max, factor, stable},
   * renewBefore, onStateChange, WebSocket (docs/CLIENT.md). */
  constructor(url, options = {}) {
    super();
    this.url = socketUrl(url);
    this.token = options.token || null;
    this.getToken = options.getToken || null;
    this.backoff = Object.assign({initial: 500, max: 30000, factor: 2, stable: 5000},
                                 options.backoff);
    this.renewBefore = options.renewBefore === undefined ? 30000 : options.renewBefore;
    this.onStateChange = options.onStateChange || null;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.state = 'idle';
    this.duplicates = 0;
    this.topics = new Map();      /* topic -> {subs, epoch, offset, answered} */
    this.inflight = [];           /* pub sent, `published` not yet come */
    this.outbox = [];             /* pub asked for while not connected */
    this.authsPending = 0;        /* auth sent, `authed` not yet come */
    this.attempt = 0;
    this.ws = null;
    this.openedAt = 0;
    this.timer = null;
    this.renewTimer = null;
    this.stopped = false;
    this.connect();
  }

  /* ---- public API ---- */

  subscribe(topic, onMessage, options = {}) {
    if (this.stopped) throw new Error('the client is closed');
    if (!TOPIC.test(topic)) throw new TypeError('not a topic: ' + topic);
    let entry = this.topics.get(topic);
    const sub = {topic, onMessage, unsubscribe: () => this.unsubscribe(sub)};
    if (!entry) {
      const since = parsePosition(options.since);
      entry = {subs: new Set(), epoch: since ? since.epoch : null,
               offset: since ? since.offset : 0, answered: false};
      this.topics.set(topic, entry);
      if (this.isOpen()) this.sendSub([topic]);
    }
    entry.subs.add(sub);
    return sub;
  }

  publish(topic, text) {
    return new Promise((resolve, reject) => {
      if (this.stopped) {
        reject(new Error('the client is closed'));
        return;
      }
      if (!TOPIC.test(topic)) {
        reject(new TypeError('not a topic: ' + topic));
        return;
      }
      const pub = {topic, text: String(text), resolve, reject};
      if (this.isOpen()) this.sendPub(pub);
      else this.outbox.push(pub);
    });
  }

  /* The last position seen of a topic ({epoch, offset}), or null: what a
   * later client gives as `since` to resume where this one stopped. */
  position(topic) {
    const entry = this.topics.get(topic);
    return entry && entry.epoch !== null ? {epoch: entry.epoch, offset: entry.offset} : null;
  }

  close() {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.renewTimer);
    const err = new Error('the client is closed');
    this.failPending(this.outbox.splice(0), err);
    this.failPending(this.inflight.splice(0), err);
    if (this.ws) this.ws.close(1000);
    this.setState('closed');
  }

  /* ---- connection ---- */

  isOpen() {
    return this.ws !== null && this.ws.readyState === OPEN && this.state === 'open';
  }

  setState(state) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    if (this.onStateChange) callSafely(this.onStateChange, state, previous);
  }

  /* An Event with a detail, as CustomEvent has (which Node 18 lacks). */
  emit(type, detail) {
    this.dispatchEvent(Object.assign(new Event(type), {detail}));
  }

  async connect() {
    this.setState('connecting');
    if (this.getToken) {
      try {
        this.token = await this.getToken();
      } catch (err) {
        this.emit('error', {message: 'getToken failed: ' + err.message});
        this.retry(0, '');
        return;
      }
    }
    if (this.stopped) return;
    const u = new URL(this.url);
    if (this.token) u.searchParams.set('token', this.token);
    let ws;
    try {
      ws = new this.WebSocket(u.href, PROTOCOL);
    } catch (err) {
      this.emit('error', {message: 'cannot connect: ' + err.message});
      this.retry(0, '');
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.addEventListener('open', () => this.onOpen(ws));
    ws.addEventListener('message', (e) => this.onFrame(ws, e.data));
    ws.addEventListener('close', (e) => this.onClose(ws, e.code, e.reason));
  }

  onOpen(ws) {
    if (ws !== this.ws) return;
    if (ws.protocol !== PROTOCOL) {
      /* A server that does not speak the envelope would hand raw payloads
       * that no header can be read from. */
      this.ws = null;
      ws.close(1000);
      this.finish(1002, 'the server did not accept the ' + PROTOCOL + ' subprotocol');
      return;
    }
    this.openedAt = Date.now();
    this.setState('open');
    const topics = [...this.topics.keys()];
    if (topics.length) this.sendSub(topics);
    for (const pub of this.outbox.splice(0)) this.sendPub(pub);
    this.scheduleRenewal(tokenExpiry(this.token));
    this.emit('open', {});
  }

  onClose(ws, code, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    clearTimeout(this.renewTimer);
    for (const entry of this.topics.values()) entry.answered = false;
    const err = Object.assign(new Error(reason || 'the connection closed (' + code + ')'),
                              {code, reason});
    this.failPending(this.inflight.splice(0), err);
    this.authsPending = 0;
    if (this.stopped) {
      this.emit('close', {code, reason, reconnect: false});
      return;
    }
    if (FINAL_CODES.includes(code) || (code === TOKEN_EXPIRED && !this.getToken)) {
      this.finish(code, reason);
      return;
    }
    this.emit('close', {code, reason, reconnect: true});
    if (this.openedAt && Date.now() - this.openedAt >= this.backoff.stable) this.attempt = 0;
    this.openedAt = 0;
    this.retry(code, reason);
  }

  /* The connection ends for good: reported, nothing retried. */
  finish(code, reason) {
    this.stopped = true;
    this.failPending(this.outbox.splice(0), Object.assign(new Error(reason), {code, reason}));
    this.emit('close', {code, reason, reconnect: false});
    this.setState('closed');
  }

  /* Waits the server's hint where its close gave one, else a full-jitter
   * exponential delay, then connects again. */
  retry(code, reason) {
    const hint = /retry after (\d+) ms/.exec(reason);
    let delay;
    if (hint && HINT_CODES.includes(code)) {
      delay = Number(hint[1]);
    } else {
      const b = this.backoff;
      delay = Math.random() * Math.min(b.max, b.initial * Math.pow(b.factor, this.attempt));
    }
    this.attempt++;
    this.setState('reconnecting');
    this.emit('reconnecting', {delay, attempt: this.attempt});
    this.timer = setTimeout(() => this.connect(), delay);
  }

  failPending(list, err) {
    for (const p of list) p.reject(err);
  }

  /* ---- commands ---- */

  sendSub(topics) {
    const positions = [];
    for (const topic of topics) {
      const entry = this.topics.get(topic);
      entry.answered = false;
      if (entry.epoch !== null) positions.push(topic + ':' + entry.epoch + ':' + entry.offset);
    }
    this.ws.send('sub ' + topics.join(',') + (positions.length ? ' ' + positions.join(',') : ''));
  }

  sendPub(pub) {
    this.inflight.push(pub);
    this.ws.send('pub ' + pub.topic + ' ' + pub.text);
  }

  unsubscribe(sub) {
    const entry = this.topics.get(sub.topic);
    if (!entry || !entry.subs.delete(sub) || entry.subs.size) return;
    this.topics.delete(sub.topic);
    if (this.isOpen()) this.ws.send('unsub ' + sub.topic);
  }

  /* Renews the token with `auth` before it expires (renewBefore ms ahead,
   * or half its remaining life when that is shorter), so that the server
   * never closes the connection with 4001.  Should getToken keep giving
   * the same token, the halving ends at its exp: past it, the server's
   * 4001 and a reconnection with getToken's next token take over. */
  scheduleRenewal(exp) {
    clearTimeout(this.renewTimer);
    if (!this.getToken || !this.renewBefore || exp === null) return;
    const left = exp * 1000 - Date.now();
    if (left <= 0) return;
    const delay = Math.max(left - this.renewBefore, left / 2);
    this.renewTimer = setTimeout(() => this.renew(), delay);
  }

  async renew() {
    let token;
    try {
      token = await this.getToken();
    } catch (err) {
      this.emit('error', {message: 'getToken failed: ' + err.message});
      return;
    }
    if (!this.isOpen()) return;
    this.token = token;
    this.authsPending++;
    this.ws.send('auth ' + token);
  }

  /* ---- frames ---- */

  onFrame(ws, data) {
    if (ws !== this.ws) return;
    const {fields, body} = parseFrame(data);
    try {
      this.handle(fields, body);
    } catch (err) {
      /* A frame outside the envelope: the stream can no longer be trusted;
       * a new connection resumes from the last position seen. */
      this.emit('error', {message: 'unreadable frame: ' + err.message});
      ws.close(1000);
    }
  }

  handle(f, body) {
    const entry = f.length > 1 ? this.topics.get(f[1]) : undefined;
    switch (f[0] + '/' + f.length) {
    case 'msg/4':
      this.deliver(entry, f[1], f[2], offsetOf(f[3]), body);
      break;
    case 'subscribed/4':
      if (!entry) break;
      entry.answered = true;
      entry.epoch = f[2];
      entry.offset = offsetOf(f[3]);
      this.emit('subscribed', {topic: f[1], epoch: f[2], offset: entry.offset});
      break;
    case 'recovered/5':
      if (!entry) break;
      entry.answered = true;
      this.emit('recovered', {topic: f[1], epoch: f[2], from: offsetOf(f[3]), to: offsetOf(f[4])});
      break;
    case 'gap/5': {
      if (!entry) break;
      const detail = {topic: f[1], epoch: f[2], oldest: offsetOf(f[3]), last: offsetOf(f[4]),
                      previousEpoch: entry.epoch, previousOffset: entry.offset};
      entry.answered = true;
      entry.epoch = detail.epoch;
      entry.offset = detail.last;
      this.emit('gap', detail);
      break;
    }
    case 'published/4': {
      const pub = this.inflight.shift();
      if (!pub) throw new Error('an answer to no pub');
      pub.resolve({topic: f[1], epoch: f[2], offset: offsetOf(f[3])});
      break;
    }
    case 'authed/2':
      if (!this.authsPending) throw new Error('an answer to no auth');
      this.authsPending--;
      this.scheduleRenewal(offsetOf(f[1]));
      this.emit('authed', {exp: offsetOf(f[1])});
      break;
    case 'unsubscribed/2':
      break;
    default:
      throw new Error(f.join(' ').slice(0, 80));
    }
  }

  /* A message of a topic: handed to its callbacks once, in offset order.
   * Messages of a subscription whose answer has not come belong to one
   * left before (unsub then sub again) and are not this one's. */
  deliver(entry, topic, epoch, offset, body) {
    if (!entry || !entry.answered) return;
    if (epoch === entry.epoch && offset <= entry.offset) {
      this.duplicates++;
      return;
    }
    entry.epoch = epoch;
    entry.offset = offset;
    const meta = {topic, epoch, offset};
    for (const sub of entry.subs) callSafely(sub.onMessage, body, meta);
  }
}

export default RingWS;
