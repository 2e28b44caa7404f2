// A WebSocket client over HTTP/2 (RFC 8441) written on Node's own `http2` module, as a second
// implementation to check `sockeye serve` against: it waits for the server's SETTINGS to enable
// the extended CONNECT, opens a stream with `:protocol: websocket`, speaks RFC 6455 frames on it
// (masked, as a client must), checks the echoes of a text and a binary message larger than the
// HTTP/2 windows, then closes with 1000 and expects the stream to end cleanly (END_STREAM).
//
// Usage: node node-client.mjs https://localhost:PORT/PATH CA_FILE
// Exit 0 on success; 1 with the reason on stderr otherwise.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';

const [url, caFile] = process.argv.slice(2);
if (!url || !caFile) {
  console.error('usage: node node-client.mjs https://localhost:PORT/PATH CA_FILE');
  process.exit(2);
}
const target = new URL(url);
const fail = (why) => {
  console.error(`node h2 client: ${why}`);
  process.exit(1);
};
setTimeout(() => fail('timed out'), 15000).unref();

/** One client frame: FIN set, the opcode, the payload masked with a fresh key. */
function frame(opcode, payload) {
  const len = payload.length;
  const head = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = Buffer.alloc(head + 4 + len);
  out[0] = 0x80 | opcode;
  if (len < 126) {
    out[1] = 0x80 | len;
  } else if (len < 65536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeBigUInt64BE(BigInt(len), 2);
  }
  const key = crypto.randomBytes(4);
  key.copy(out, head);
  for (let i = 0; i < len; i++) out[head + 4 + i] = payload[i] ^ key[i & 3];
  return out;
}

/** Reads server frames (unmasked) and hands out whole messages: { opcode, payload }. */
class Reader {
  constructor() {
    this.buf = Buffer.alloc(0);
    this.parts = [];
    this.opcode = 0;
    this.messages = [];
    this.waiting = null;
  }

  push(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.buf.length < 2) return;
      const fin = (this.buf[0] & 0x80) !== 0;
      const opcode = this.buf[0] & 0x0f;
      if (this.buf[1] & 0x80) fail('the server masked a frame');
      let len = this.buf[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        at = 10;
      }
      if (this.buf.length < at + len) return;
      const payload = this.buf.subarray(at, at + len);
      this.buf = this.buf.subarray(at + len);
      if (opcode >= 8) {
        this.deliver({ opcode, payload });
        continue;
      }
      if (opcode !== 0) this.opcode = opcode;
      this.parts.push(payload);
      if (fin) {
        this.deliver({ opcode: this.opcode, payload: Buffer.concat(this.parts) });
        this.parts = [];
      }
    }
  }

  deliver(message) {
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = null;
      resolve(message);
    } else {
      this.messages.push(message);
    }
  }

  next() {
    if (this.messages.length) return Promise.resolve(this.messages.shift());
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }
}

const session = http2.connect(target.origin, { ca: fs.readFileSync(caFile) });
session.on('error', (e) => fail(`session: ${e.message}`));
const settings = await new Promise((resolve) => session.once('remoteSettings', resolve));
if (!settings.enableConnectProtocol) fail('the server does not enable the extended CONNECT');

const stream = session.request({
  ':method': 'CONNECT',
  ':protocol': 'websocket',
  ':scheme': 'https',
  ':path': target.pathname,
  ':authority': target.host,
  'sec-websocket-version': '13',
});
stream.on('error', (e) => fail(`stream: ${e.message}`));
const headers = await new Promise((resolve) => stream.once('response', resolve));
if (headers[':status'] !== 200) fail(`status ${headers[':status']}, not 200`);
if (headers['sec-websocket-accept']) fail('a Sec-WebSocket-Accept in an HTTP/2 answer');

const reader = new Reader();
const ended = new Promise((resolve) => stream.once('end', resolve));
stream.on('data', (chunk) => reader.push(chunk));

const text = Buffer.from('hello from node over h2');
stream.write(frame(0x1, text));
let message = await reader.next();
if (message.opcode !== 1 || !message.payload.equals(text)) fail('the text echo differs');

// Larger than the HTTP/2 windows both ways (65535 at Node's end by default).
const binary = crypto.randomBytes(300_000);
stream.write(frame(0x2, binary));
message = await reader.next();
if (message.opcode !== 2 || !message.payload.equals(binary)) fail('the binary echo differs');

const code = Buffer.alloc(2);
code.writeUInt16BE(1000);
stream.write(frame(0x8, code));
message = await reader.next();
if (message.opcode !== 8 || message.payload.readUInt16BE(0) !== 1000) fail('no Close 1000 back');
stream.end();
await ended;
if (stream.rstCode) fail(`the stream was reset (${stream.rstCode}), not ended`);
session.close();
console.log('ok: echo over an HTTP/2 extended CONNECT, closed with 1000 and END_STREAM');
