// The browser tests, written once and registered per engine by chromium.test.mjs,
// firefox.test.mjs and webkit.test.mjs (node --test runs the three files side by side).
//
// Against `sockeye serve`: two demo pages in a room (presence with names, text with é€,
// binary, a member leaving, a refused room name, 1001 on SIGTERM and reconnecting to a restarted
// server); the browser's WebSocket API itself, over ws:// and over wss:// with a self-signed
// certificate: permessage-deflate negotiated as the page sees it, a 1 MiB message each way, the
// page's own close code coming back, 1001 on the server's shutdown; the echo page; two servers
// sharing a room over Redis; and which HTTP carried the wss:// WebSockets: RFC 8441 extended
// CONNECT on the page's HTTP/2 session for Chromium (its net log) and Firefox (its nsHttp log),
// HTTP/1.1 Upgrade on connections of their own for WebKitGTK (their TLS ALPN offers).
//
// SOCKEYE_BROWSER_BROKEN=1 runs only the WebSocket API test, against a server without deflate
// (--no-compress) and expecting another close code than the page chose: the deflate and close
// code checks must then fail on every engine (scripts/browser-test checks that they do).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launch } from "./engines.mjs";
import {
  alpnRelay, connectedLines, freePort, makeCertificate, netLogEvents, root, startServer,
  untilRedisAnswers, untilSubscribed,
} from "./support.mjs";

const BROKEN = process.env.SOCKEYE_BROWSER_BROKEN === "1";
const MIB = 1 << 20;
const shots = join(root, "target", "browser");

/** `sockeye serve` as the tests want it: in broken mode, without permessage-deflate. */
function serve(args = [], addr) {
  return startServer(BROKEN ? ["--no-compress", ...args] : args, addr);
}

// ---- In the page -------------------------------------------------------------------------

/** Opens a WebSocket of the test's own to `path` on the page's host; resolves with its extensions. */
function openSocket(path) {
  const fnv = (bytes) => {
    let h = 0x811c9dc5;
    for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193) >>> 0;
    return h;
  };
  window.fnv = fnv;
  return new Promise((resolve, reject) => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}${path}`);
    socket.binaryType = "arraybuffer";
    window.testSocket = socket;
    window.received = [];
    window.closeEvent = null;
    socket.onmessage = (event) => {
      const text = typeof event.data === "string";
      const bytes = text ? new TextEncoder().encode(event.data) : new Uint8Array(event.data);
      window.received.push({ text, length: bytes.length, digest: fnv(bytes) });
    };
    socket.onclose = (event) => {
      window.closeEvent = { code: event.code, reason: event.reason, wasClean: event.wasClean };
    };
    socket.onopen = () => resolve(socket.extensions);
    socket.onerror = () => reject(new Error(`WebSocket to ${path} failed`));
  });
}

/**
 * Sends 1 MiB on the test's socket: "text" (é€ and ASCII, exactly 1 MiB of UTF-8), "binary"
 * (a random 16 KiB block, every byte value, repeated: compressible) or "random" (incompressible).
 */
function sendMebibyte(kind) {
  const size = 1 << 20;
  let bytes;
  if (kind === "text") {
    const unit = "\u00e9\u20ac sockeye "; // 2 + 3 + 9 bytes
    const text = unit.repeat(Math.floor(size / 14)) + "x".repeat(size % 14);
    bytes = new TextEncoder().encode(text);
    window.testSocket.send(text);
  } else {
    bytes = new Uint8Array(size);
    const block = kind === "random" ? size : 16384;
    for (let at = 0; at < block; at += 65536) crypto.getRandomValues(bytes.subarray(at, Math.min(block, at + 65536)));
    for (let at = block; at < size; at += block) bytes.copyWithin(at, 0, block);
    window.testSocket.send(bytes);
  }
  return { text: kind === "text", length: bytes.length, digest: window.fnv(bytes) };
}

/** Fills the demo page's input `id` and submits its form (as Enter would). */
function submit(id, value) {
  const input = document.getElementById(id);
  input.value = value;
  input.dispatchEvent(new Event("input"));
  input.form.requestSubmit();
}

/** Fills the message box and clicks one of the demo page's buttons. */
function typeAndClick(value, button) {
  document.getElementById("text").value = value;
  document.getElementById(button).click();
}

const statusIs = (prefix) => document.getElementById("status").textContent.startsWith(prefix);
const logHas = (selector, text) =>
  Array.from(document.querySelectorAll(selector)).some((li) => li.textContent.includes(text));

// ---- The tests -----------------------------------------------------------------------------

/** Registers the suite for `engine`. */
export function defineSuite(engine) {
  let browser;
  let dir;
  let certificate;
  const logDir = () => join(dir, "logs");
  // The wss:// WebSockets each test expects to have gone over HTTP/2 (checked at the end).
  const tlsRooms = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), `sockeye-browser-${engine}-`));
    mkdirSync(logDir());
    mkdirSync(shots, { recursive: true });
    certificate = makeCertificate(dir);
    browser = await launch(engine, { spkiHash: certificate.hash, logDir: logDir() });
    writeFileSync(join(shots, `${engine}.version`), `${browser.version}\n`);
  });

  after(async () => {
    await browser?.close().catch(() => {});
    if (dir && !process.env.SOCKEYE_BROWSER_KEEP) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * The WebSocket API between two pages through a room: deflate, 1 MiB each way, the page's
   * close code, 1001 on SIGTERM. `tls`: over wss:// behind the ALPN relay.
   */
  const socketTest = (tls) => async (t) => {
    const args = tls ? ["--tls-cert", certificate.cert, "--tls-key", certificate.key] : [];
    const server = await serve(args);
    const relay = tls ? await alpnRelay(server.port) : null;
    const origin = tls ? `https://localhost:${relay.port}` : `http://${server.addr}`;
    const room = tls ? "tlsbulk" : "bulk";
    const [alice, bob] = [await browser.newPage(), await browser.newPage()];
    try {
      const extensions = [];
      for (const page of [alice, bob]) {
        await page.goto(`${origin}/blank`);
        extensions.push(await page.run(openSocket, `/rooms/${room}`));
      }
      if (tls) tlsRooms.push({ room, sockets: 2 });

      await t.test("permessage-deflate negotiated, as the page sees it", () => {
        for (const seen of extensions) assert.match(seen, /^permessage-deflate\b/);
      });
      await t.test("1 MiB of text (é€) from one page to the other", async () => {
        const sent = await alice.run(sendMebibyte, "text");
        assert.equal(sent.length, MIB);
        const got = await bob.until((n) => window.received.find((m) => m.length === n), [MIB], "1 MiB of text", 20_000);
        assert.deepEqual(got, sent);
      });
      await t.test("1 MiB of binary the other way", async () => {
        const sent = await bob.run(sendMebibyte, "binary");
        const got = await alice.until((n) => window.received.find((m) => m.length === n), [MIB], "1 MiB of binary", 20_000);
        assert.deepEqual(got, sent);
      });
      await t.test("the close code the page chose comes back", async () => {
        const code = 4000 + Math.floor(Math.random() * 900);
        await alice.run((c) => window.testSocket.close(c, "bye \u00e9\u20ac"), code);
        const closed = await alice.until(() => window.closeEvent, [], "the close");
        assert.equal(closed.code, BROKEN ? code + 1 : code, "close code");
        assert.equal(closed.wasClean, true);
      });
      // Firefox and WebKit deflate every message, and a deflated incompressible message is a
      // little larger than the message: serve's frame limit must allow for that.
      await t.test("1 MiB of random bytes (incompressible) on a new socket", async () => {
        await alice.run(openSocket, `/rooms/${room}`);
        await bob.run(() => (window.received = []));
        const sent = await alice.run(sendMebibyte, "random");
        // Until bob has it, or alice's socket is closed (polled here: one page at a time).
        const deadline = Date.now() + 20_000;
        for (;;) {
          const got = await bob.run((n) => window.received.find((m) => m.length === n), MIB);
          if (got) return assert.deepEqual(got, sent);
          const closed = await alice.run(() => window.closeEvent);
          assert.equal(closed, null, "the sender's socket was closed");
          assert.ok(Date.now() < deadline, "1 MiB of random bytes never arrived");
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      });
      if (tls) tlsRooms.push({ room, sockets: 1 });
      await t.test("1001 when the server shuts down (SIGTERM)", async (st) => {
        const start = Date.now();
        server.child.kill("SIGTERM");
        const closed = await bob.until(() => window.closeEvent, [], "the close");
        assert.equal(closed.code, 1001);
        assert.equal(closed.reason, "server shutting down");
        const seen = Date.now() - start;
        assert.equal(await server.exited, 0);
        st.diagnostic(`1001 seen after ${seen} ms, the server exited after ${Date.now() - start} ms`);
      });
      if (tls) {
        await t.test("which HTTP carried the wss:// WebSockets", async () => {
          // The server logs each WebSocket with its peer: the relay's side of a client's
          // connection, whose ClientHello offered the ALPN protocols recorded here.
          const offers = new Map(relay.connections.map((c) => [c.upstreamPort, c.offer]));
          const sockets = connectedLines(server).filter((l) => l.path?.startsWith(`/rooms/${room}`));
          assert.equal(sockets.length, 3, server.log);
          for (const { peerPort } of sockets) {
            const offer = offers.get(peerPort);
            if (engine === "webkit") {
              // WebKitGTK opens each WebSocket on a connection of its own that offers HTTP/1.1
              // only: its WebSockets never use HTTP/2, whatever the page came over.
              assert.deepEqual(offer, ["http/1.1"], `ALPN offered by the WebSocket's connection`);
            } else {
              assert.ok(offer?.includes("h2"), `ALPN ${offer} offered h2`);
            }
          }
        });
      }
    } finally {
      for (const page of [alice, bob]) await page.close().catch(() => {});
      relay?.close();
      server.child.kill("SIGKILL");
    }
  };

  test(`${engine}: the WebSocket API over ws://`, { timeout: 60_000 }, socketTest(false));
  if (BROKEN) return;
  test(`${engine}: the WebSocket API over wss:// (self-signed certificate)`, { timeout: 60_000 }, socketTest(true));

  test(`${engine}: two demo pages talk through a room and reconnect after a restart`, { timeout: 60_000 }, async () => {
    const server = await serve();
    const url = `http://${server.addr}/?room=browsertest`;
    const alice = await browser.newPage();
    const bob = await browser.newPage();
    let again = null;
    try {
      await alice.goto(`${url}&name=alice`);
      await alice.until(statusIs, ["in room browsertest as alice"], "alice in the room");
      await bob.goto(`${url}&name=bob`);
      await bob.until(statusIs, ["in room browsertest as bob"], "bob in the room");

      // Presence: each page lists both members by name, and alice saw bob join.
      for (const page of [alice, bob]) {
        await page.until(() => document.getElementById("count").textContent === "2", [], "two members");
        const names = await page.run(() => Array.from(document.querySelectorAll("#members li"), (li) => li.textContent));
        assert.deepEqual(names.map((n) => n.replace(" (you)", "")).sort(), ["alice", "bob"]);
      }
      await alice.until(logHas, ["#log li.note", "bob joined"], "bob joined");

      // Both pages negotiated permessage-deflate with the server.
      for (const page of [alice, bob]) assert.match(await page.text("#extensions"), /^permessage-deflate\b/);

      // Text from alice reaches bob, with her name and a time.
      await alice.run(typeAndClick, "hello from alice \u00e9\u20ac", "send");
      await bob.until(logHas, ["#log li", "hello from alice \u00e9\u20ac"], "alice's text");
      const line = await bob.run(() => {
        const li = Array.from(document.querySelectorAll("#log li")).find((l) => l.textContent.includes("hello from alice"));
        return { from: li.querySelector(".from")?.textContent, time: li.querySelector("time")?.textContent };
      });
      assert.equal(line.from, "alice");
      assert.match(line.time, /\d{1,2}:\d{2}:\d{2}/);

      // Text from bob (by Enter) reaches alice.
      await bob.run(submit, "text", "hi alice");
      await alice.until(logHas, ["#log li", "hi alice"], "bob's text");

      // Binary: "bin" as bytes 62 69 6e.
      await alice.run(typeAndClick, "bin", "send-binary");
      await bob.until(logHas, ["#log li.binary", "binary 3 bytes: 62 69 6e"], "the binary message");

      await bob.screenshot(join(shots, `${engine}-demo.png`));

      // A third page leaves: the others see it go.
      const carol = await browser.newPage();
      await carol.goto(`${url}&name=carol`);
      await bob.until(() => document.getElementById("count").textContent === "3", [], "three members");
      await carol.close();
      await bob.until(logHas, ["#log li.note", "carol left"], "carol left");
      await bob.until(() => document.getElementById("count").textContent === "2", [], "two members again");

      // A room name the server does not take is refused in the page, and nothing connects.
      await alice.run(submit, "room", "my room");
      await alice.until(() => document.getElementById("hint").textContent.includes("1 to 64 letters"), [], "the hint");
      assert.ok(await alice.run(statusIs, "in room browsertest"));

      // SIGTERM: the server closes every connection with 1001 and its reason.
      server.child.kill("SIGTERM");
      for (const page of [alice, bob]) {
        await page.until(() => document.getElementById("close-info").textContent === "1001 server shutting down", [], "1001 shown");
        await page.until(() => document.getElementById("status").textContent.includes("reconnecting"), [], "reconnecting");
      }
      assert.equal(await server.exited, 0);

      // A server back on the same address: the pages reconnect by themselves, Enter joins
      // another room, and the room keeps working.
      again = await serve([], server.addr);
      for (const page of [alice, bob]) await page.until(statusIs, ["in room browsertest"], "reconnected", 20_000);
      for (const page of [alice, bob]) {
        await page.run(submit, "room", "second");
        await page.until(statusIs, ["in room second"], "in room second");
        assert.match(await page.run(() => location.href), /room=second/);
      }
      await alice.run(submit, "text", "after the restart");
      await bob.until(logHas, ["#log li", "after the restart"], "the text after the restart");
    } finally {
      for (const page of [alice, bob]) await page.close().catch(() => {});
      server.child.kill("SIGKILL");
      again?.child.kill("SIGKILL");
    }
  });

  test(`${engine}: the demo page over https and HTTP/2`, { timeout: 60_000 }, async () => {
    const server = await serve(["--tls-cert", certificate.cert, "--tls-key", certificate.key]);
    const url = `https://localhost:${server.port}/?room=tlstest`;
    const alice = await browser.newPage();
    const bob = await browser.newPage();
    try {
      for (const [page, name] of [[alice, "alice"], [bob, "bob"]]) {
        await page.goto(`${url}&name=${name}`);
        await page.until(statusIs, ["in room tlstest"], "in the room over wss://");
        assert.equal(await page.run(() => location.protocol), "https:");
        assert.match(await page.text("#extensions"), /^permessage-deflate\b/);
        // The page itself came over HTTP/2 on every engine.
        const protocol = await page.run(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
        assert.equal(protocol, "h2");
      }
      tlsRooms.push({ room: "tlstest", sockets: 2 });
      await alice.run(typeAndClick, "over wss", "send");
      await bob.until(logHas, ["#log li", "over wss"], "the text over wss");
      // (Messages larger than the HTTP/2 windows, 1 MiB each way, in "the WebSocket API over
      // wss://" above.)
    } finally {
      for (const page of [alice, bob]) await page.close().catch(() => {});
      server.child.kill("SIGKILL");
    }
  });

  test(`${engine}: serve --echo has a page of its own that echoes`, { timeout: 60_000 }, async () => {
    const server = await serve(["--echo"]);
    const page = await browser.newPage();
    try {
      await page.goto(`http://${server.addr}/`);
      assert.equal(await page.run(() => document.title), "sockeye echo");
      await page.until(() => document.getElementById("status").textContent === "connected", [], "connected");
      await page.run(submit, "text", "echo me \u00e9");
      await page.until(logHas, ["#log li", "< echo me \u00e9"], "the echo");
      // Once: the echo page shows each message once out and once back.
      const lines = await page.run(() => Array.from(document.querySelectorAll("#log li")).filter((li) => li.textContent.includes("echo me")).length);
      assert.equal(lines, 2);
    } finally {
      await page.close().catch(() => {});
      server.child.kill("SIGKILL");
    }
  });

  test(`${engine}: pages on two servers share a room over Redis`, { timeout: 60_000 }, async () => {
    const port = await freePort();
    const redisDir = join(dir, "redis");
    mkdirSync(redisDir);
    const redis = spawn("redis-server", ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no", "--dir", redisDir], { stdio: "ignore" });
    const servers = [];
    const pages = [];
    try {
      await untilRedisAnswers(port);
      for (let i = 0; i < 2; i++) servers.push(await serve(["--redis", `redis://127.0.0.1:${port}`]));
      for (const [i, name] of ["alice", "bob"].entries()) {
        const page = await browser.newPage();
        pages.push(page);
        await page.goto(`http://${servers[i].addr}/?room=scaletest&name=${name}`);
        await page.until(statusIs, ["in room scaletest"], "in the room");
      }
      await untilSubscribed(port, "scaletest", 2);
      const [alice, bob] = pages;
      await alice.run(typeAndClick, "from server one", "send");
      await bob.until(logHas, ["#log li", "from server one"], "the text across servers");
      await bob.run(typeAndClick, "bin", "send-binary");
      await alice.until(logHas, ["#log li.binary", "binary 3 bytes: 62 69 6e"], "the binary across servers");
    } finally {
      for (const page of pages) await page.close().catch(() => {});
      for (const { child } of servers) child.kill("SIGKILL");
      redis.kill("SIGKILL");
    }
  });

  // WebKitGTK keeps no log of its own to read here: its wss:// WebSockets' HTTP/1.1 is checked
  // above by their connections' ALPN offers.
  if (engine === "webkit") return;
  test(`${engine}: the browser's own account of its connections`, { timeout: 60_000 }, async () => {
    // The logs are complete once the browser has exited.
    await browser.close();
    const wanted = tlsRooms.reduce((n, r) => n + r.sockets, 0);
    const isRoom = (path) => tlsRooms.some(({ room }) => new RegExp(`^/rooms/${room}(\\?|$)`).test(path));
    if (engine === "chromium") {
      // The net log: each wss:// WebSocket an extended CONNECT on the session of its page.
      const events = netLogEvents(browser.netLog());
      const sent = events.filter((e) => e.type === "HTTP2_SESSION_SEND_HEADERS");
      const headers = (e) => e.params?.headers ?? [];
      const path = (e) => headers(e).find((h) => h.startsWith(":path: "))?.slice(7);
      const connects = sent.filter((e) => headers(e).includes(":method: CONNECT") && headers(e).includes(":protocol: websocket"));
      assert.equal(connects.filter((e) => isRoom(path(e))).length, wanted, `${wanted} extended CONNECTs in the net log`);
      const pages = sent.filter((e) => headers(e).includes(":method: GET") && /^\/(blank|\?room=)/.test(path(e) ?? ""));
      const sessions = new Set(pages.map((e) => e.source.id));
      assert.ok(connects.every((e) => sessions.has(e.source.id)), "the WebSockets went over their pages' HTTP/2 sessions");
      // And no WebSocket went as an HTTP/1.1 Upgrade.
      const upgrades = events.filter((e) => /upgrade: websocket/i.test(JSON.stringify(e.params ?? {})) && isRoom(e.params?.line?.split(" ")[1]));
      assert.equal(upgrades.length, 0, JSON.stringify(upgrades.slice(0, 2)));
    } else if (engine === "firefox") {
      const log = browser.mozLog();
      const streams = firefoxHttp2Streams(log);
      const connects = streams.filter((s) => s.method === "CONNECT" && s.protocol === "websocket");
      assert.equal(connects.filter((s) => isRoom(s.path)).length, wanted, `${wanted} extended CONNECTs in Firefox's log`);
      const pages = streams.filter((s) => s.method === "GET" && /^\/(blank|\?room=)/.test(s.path ?? ""));
      const sessions = new Set(pages.map((s) => s.session));
      assert.ok(connects.every((s) => sessions.has(s.session)), "the WebSockets went over their pages' HTTP/2 sessions");
      assert.match(log, /Http2Session::GetExtendedCONNECTSupport \S+ enable=1 peer allow=1/);
      // Every connection stayed on loopback: nothing reached the proxy for other hosts, and
      // the log names no other host.
      assert.deepEqual(browser.proxySeen, [], "requests that went to the proxy for non-loopback hosts");
      const hosts = new Set([...log.matchAll(/\bhost=([^\s\]]+)/g)].map((m) => m[1].replace(/:\d+$/, "")));
      const uris = new Set([...log.matchAll(/\b(?:https?|wss?):\/\/([^/\s:\]]+)/g)].map((m) => m[1]));
      const elsewhere = [...hosts, ...uris].filter((h) => !["localhost", "127.0.0.1"].includes(h));
      assert.deepEqual(elsewhere, [], "hosts other than loopback in Firefox's log");
    }
  });
}

/**
 * The HTTP/2 streams in Firefox's nsHttp log: `{ session, method, path, protocol }`. Each
 * stream's "Stream ID ... [session=...]" line comes just before its header block's lines.
 */
function firefoxHttp2Streams(log) {
  const streams = [];
  let stream = null;
  for (const line of log.split("\n")) {
    const id = line.match(/Http2Stream\w* \S+ Stream ID 0x[0-9a-fA-F]+ \[session=(\S+?)\]/);
    if (id) {
      stream = { session: id[1] };
      streams.push(stream);
      continue;
    }
    const header = line.match(/Http2Compressor::ProcessHeader (:\w+) (.*)$/);
    if (header && stream) {
      const [, name, value] = header;
      if (name === ":method") stream.method = value;
      if (name === ":path") stream.path = value;
      if (name === ":protocol") stream.protocol = value;
    }
  }
  return streams;
}
