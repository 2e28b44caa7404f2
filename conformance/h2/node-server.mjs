// A WebSocket echo server over HTTP/2 (RFC 8441) written on Node's own `http2` module, as a
// second implementation to check sockeye's client against: it advertises
// `enableConnectProtocol`, answers an extended CONNECT with `:protocol: websocket` with 200
// (selecting the first subprotocol offered), and echoes RFC 6455 frames: client frames must be
// masked, its own are not. It answers a Close with a Close and ends the stream.
//
// Usage: node node-server.mjs   (plain HTTP/2 with prior knowledge on 127.0.0.1; prints the port)

import http2 from 'node:http2';

const server = http2.createServer({ settings: { enableConnectProtocol: true } });

function frame(opcode, payload) {
  const len = payload.length;
  const head = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = Buffer.alloc(head + len);
  out[0] = 0x80 | opcode;
  if (len < 126) {
    out[1] = len;
  } else if (len < 65536) {
    out[1] = 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 127;
    out.writeBigUInt64BE(BigInt(len), 2);
  }
  payload.copy(out, head);
  return out;
}

server.on('stream', (stream, headers) => {
  if (headers[':method'] !== 'CONNECT' || headers[':protocol'] !== 'websocket') {
    stream.respond({ ':status': 400 });
    stream.end('not a WebSocket\n');
    return;
  }
  const offered = (headers['sec-websocket-protocol'] || '').split(',').map((p) => p.trim()).filter(Boolean);
  const answer = { ':status': 200 };
  if (offered.length) answer['sec-websocket-protocol'] = offered[0];
  stream.respond(answer);
  let buf = Buffer.alloc(0);
  let parts = [];
  let opcode = 0;
  stream.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const fin = (buf[0] & 0x80) !== 0;
      const op = buf[0] & 0x0f;
      if ((buf[1] & 0x80) === 0) {
        stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
        return;
      }
      let len = buf[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        at = 10;
      }
      if (buf.length < at + 4 + len) return;
      const key = buf.subarray(at, at + 4);
      const payload = Buffer.from(buf.subarray(at + 4, at + 4 + len));
      for (let i = 0; i < len; i++) payload[i] ^= key[i & 3];
      buf = buf.subarray(at + 4 + len);
      if (op === 0x8) {
        stream.end(frame(0x8, payload.subarray(0, 2)));
        return;
      }
      if (op === 0x9) {
        stream.write(frame(0xa, payload));
        continue;
      }
      if (op >= 0x8) continue;
      if (op !== 0) opcode = op;
      parts.push(payload);
      if (fin) {
        stream.write(frame(opcode, Buffer.concat(parts)));
        parts = [];
      }
    }
  });
});

server.listen(0, '127.0.0.1', () => {
  console.log(server.address().port);
});
