// What the browser tests need besides a browser: `sockeye serve` processes, a self-signed
// certificate, free ports, a Redis, a TCP relay that reads each TLS ClientHello's ALPN offer,
// and a proxy that records whoever tries to use it.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import { createServer, connect } from "node:net";
import { fileURLToPath } from "node:url";
import { dirname } from "node:path";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..");
export const binary = process.env.SOCKEYE_BIN ?? join(root, "target", "release", "sockeye");

/**
 * Starts `sockeye serve` on a free port (or `addr`); resolves with the process, its address,
 * its exit (a promise of the exit code) and its log lines so far (`SOCKEYE_LOG=info`: one
 * `connected` line with the peer and path per WebSocket).
 */
export function startServer(extraArgs = [], addr = "127.0.0.1:0") {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, ["serve", ...extraArgs, addr], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, SOCKEYE_LOG: "info" },
    });
    const exited = new Promise((done) => child.on("exit", (code, signal) => done(code ?? signal)));
    const server = { child, exited, log: "" };
    const timer = setTimeout(() => reject(new Error(`no address from sockeye serve: ${server.log}`)), 10_000);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      server.log += chunk;
      const match = !server.addr && server.log.match(/https?:\/\/([0-9.]+:[0-9]+)\//);
      if (match) {
        clearTimeout(timer);
        server.addr = match[1];
        server.port = Number(match[1].split(":")[1]);
        resolve(server);
      }
    });
    child.on("error", reject);
  });
}

/** The `connected` lines of a server's log: `{ peerPort, path, extension }`. */
export function connectedLines(server) {
  // The log has ANSI colours only on a terminal; strip them all the same.
  const plain = server.log.replace(/\x1b\[[0-9;]*m/g, "");
  return plain
    .split("\n")
    .filter((line) => /\bconnected\b/.test(line) && !/disconnected/.test(line))
    .map((line) => ({
      peerPort: Number(line.match(/peer=[0-9.]+:([0-9]+)/)?.[1]),
      path: line.match(/path=(\S+)/)?.[1],
      extension: line.match(/extension=(.*?)( \w+=|$)/)?.[1],
    }));
}

/** A self-signed certificate for localhost, its key, and the base64 SHA-256 of its public key. */
export function makeCertificate(dir) {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
  ], { stdio: "ignore" });
  const pub = execFileSync("openssl", ["x509", "-in", cert, "-pubkey", "-noout"]);
  const spki = execFileSync("openssl", ["pkey", "-pubin", "-outform", "der"], { input: pub });
  const hash = execFileSync("openssl", ["dgst", "-sha256", "-binary"], { input: spki }).toString("base64");
  return { cert, key, hash };
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A listener on 127.0.0.1 that records the first bytes of every connection and answers nothing. */
export async function blackHole() {
  const seen = [];
  const sockets = new Set();
  const server = createServer((socket) => {
    sockets.add(socket);
    const entry = { first: "" };
    seen.push(entry);
    socket.on("data", (chunk) => {
      if (entry.first.length < 200) entry.first += chunk.toString("latin1").slice(0, 200);
    });
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    seen,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/**
 * The ALPN protocols a TLS ClientHello offers, once `buffer` holds its whole first record;
 * `undefined` while more bytes are needed, `null` if it is no ClientHello.
 */
export function alpnOffer(buffer) {
  if (buffer.length < 5) return undefined;
  if (buffer[0] !== 0x16) return null;
  const recordEnd = 5 + buffer.readUInt16BE(3);
  if (buffer.length < recordEnd) return undefined;
  const hello = buffer.subarray(5, recordEnd);
  if (hello[0] !== 0x01) return null;
  let at = 4 + 2 + 32; // handshake header, client_version, random
  at += 1 + hello[at]; // session id
  at += 2 + hello.readUInt16BE(at); // cipher suites
  at += 1 + hello[at]; // compression methods
  const extensionsEnd = at + 2 + hello.readUInt16BE(at);
  at += 2;
  while (at + 4 <= extensionsEnd) {
    const type = hello.readUInt16BE(at);
    const length = hello.readUInt16BE(at + 2);
    if (type === 0x0010) {
      const names = [];
      let p = at + 4 + 2;
      while (p < at + 4 + length) {
        names.push(hello.subarray(p + 1, p + 1 + hello[p]).toString("latin1"));
        p += 1 + hello[p];
      }
      return names;
    }
    at += 4 + length;
  }
  return [];
}

/**
 * A TCP relay on 127.0.0.1 in front of `target` that records, for each connection, the ALPN
 * protocols its TLS ClientHello offered and the local port of its connection to the target
 * (the peer port the server logs). Resolves with `{ port, connections, close }`.
 */
export async function alpnRelay(targetPort) {
  const connections = [];
  const sockets = new Set();
  const server = createServer((client) => {
    const entry = { offer: undefined, upstreamPort: undefined };
    connections.push(entry);
    const upstream = connect(targetPort, "127.0.0.1", () => {
      entry.upstreamPort = upstream.localPort;
    });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => sockets.delete(socket));
    }
    let head = Buffer.alloc(0);
    client.on("data", (chunk) => {
      if (entry.offer === undefined) {
        head = Buffer.concat([head, chunk]);
        entry.offer = alpnOffer(head);
      }
      upstream.write(chunk);
    });
    upstream.pipe(client);
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    connections,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/** Resolves once the Redis at `port` answers PING (redis-cli fails while nothing listens). */
export async function untilRedisAnswers(port) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const reply = execFileSync("redis-cli", ["-p", String(port), "PING"], { stdio: ["ignore", "pipe", "ignore"] });
      if (reply.toString().trim() === "PONG") return;
    } catch {
      // Not listening yet.
    }
    assert.ok(Date.now() < deadline, "redis-server did not start");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Resolves once `count` servers are subscribed to the room's channel on the Redis at `port`. */
export async function untilSubscribed(port, room, count) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const reply = execFileSync("redis-cli", ["-p", String(port), "PUBSUB", "NUMSUB", `sockeye:room:${room}`]);
    if (reply.toString().trim().split("\n").pop() === String(count)) return;
    assert.ok(Date.now() < deadline, `${count} servers never subscribed to ${room}: ${reply}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The net log's events with their type names: `{ type, source, params }`. */
export function netLogEvents(text) {
  const log = JSON.parse(text);
  const names = Object.fromEntries(Object.entries(log.constants.logEventTypes).map(([name, id]) => [id, name]));
  return log.events.map((event) => ({ ...event, type: names[event.type] }));
}
