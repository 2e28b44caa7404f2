// Headless Chromium (Debian's) against `sockeye serve`: two pages in one room exchange text
// and binary messages with permessage-deflate negotiated, and see the server's close code and
// reason when it shuts down. A screenshot of the demo page goes to target/browser/demo.png.
// Then the same over TLS: `serve --tls-cert/--tls-key` with a certificate made by `openssl` for
// this run, which Chromium trusts by its public key hash only. Then two pages on two servers
// that share their rooms through a real redis-server. And over TLS, HTTP/2: the page comes over
// h2 and Chromium opens the room WebSockets as RFC 8441 extended CONNECTs on that session, which
// its own net log (--log-net-log) shows.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const binary = process.env.SOCKEYE_BIN ?? join(root, "target", "release", "sockeye");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Starts `sockeye serve` on a free port; resolves with the process and its address. */
function startServer(extraArgs = [], addr = "127.0.0.1:0") {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, ["serve", ...extraArgs, addr], { stdio: ["ignore", "ignore", "pipe"] });
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`no address from sockeye serve: ${seen}`)), 10_000);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      seen += chunk;
      const match = seen.match(/https?:\/\/([0-9.]+:[0-9]+)\//);
      if (match) {
        clearTimeout(timer);
        resolve({ child, addr: match[1] });
      }
    });
    child.on("error", reject);
  });
}

const chromiumArgs = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

test("two browser pages talk through a room and see the server's close", { timeout: 60_000 }, async () => {
  const { child, addr } = await startServer();
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
  try {
    const url = `http://${addr}/?room=browsertest`;
    const alice = await browser.newPage();
    const bob = await browser.newPage();
    await alice.goto(`${url}&name=alice`);
    await alice.locator("#status", { hasText: "in room browsertest as alice" }).waitFor({ timeout: 10_000 });
    await bob.goto(`${url}&name=bob`);
    await bob.locator("#status", { hasText: "in room browsertest as bob" }).waitFor({ timeout: 10_000 });

    // Presence: each page lists both members, and alice saw bob join.
    for (const page of [alice, bob]) {
      await page.locator("#count", { hasText: "2" }).waitFor({ timeout: 10_000 });
      const names = await page.locator("#members li").allTextContents();
      assert.deepEqual(names.map((n) => n.replace(" (you)", "")).sort(), ["alice", "bob"]);
    }
    await alice.locator("#log li.note", { hasText: "bob joined" }).waitFor({ timeout: 10_000 });

    // Both pages negotiated permessage-deflate with the server.
    for (const page of [alice, bob]) {
      const extensions = await page.locator("#extensions").textContent();
      assert.match(extensions, /permessage-deflate/);
    }

    // Text from alice reaches bob (and alice's own entry is marked as hers).
    await alice.fill("#text", "hello from alice \u00e9\u20ac");
    await alice.click("#send");
    await bob.locator("#log li", { hasText: "hello from alice \u00e9\u20ac" }).waitFor({ timeout: 10_000 });
    // With the sender's name and a time.
    const line = bob.locator("#log li", { hasText: "hello from alice" });
    assert.equal(await line.locator(".from").textContent(), "alice");
    assert.match(await line.locator("time").textContent(), /\d{1,2}:\d{2}:\d{2}/);

    // Text from bob reaches alice.
    await bob.fill("#text", "hi alice");
    await bob.press("#text", "Enter");
    await alice.locator("#log li", { hasText: "hi alice" }).waitFor({ timeout: 10_000 });

    // Binary: "bin" as bytes 62 69 6e.
    await alice.fill("#text", "bin");
    await alice.click("#send-binary");
    await bob.locator("#log li.binary", { hasText: "binary 3 bytes: 62 69 6e" }).waitFor({ timeout: 10_000 });

    mkdirSync(join(root, "target", "browser"), { recursive: true });
    await bob.screenshot({ path: join(root, "target", "browser", "demo.png"), fullPage: true });

    // A large compressible message survives the trip.
    const big = "sockeye ".repeat(20_000);
    await alice.evaluate((text) => {
      document.getElementById("text").value = text;
      document.getElementById("send").click();
    }, big);
    await bob.waitForFunction(
      (length) => Array.from(document.querySelectorAll("#log li .text")).some((span) => span.textContent.length === length),
      big.length,
      { timeout: 10_000 },
    );

    // A third page leaves: the others see it go.
    const carol = await browser.newPage();
    await carol.goto(`${url}&name=carol`);
    await bob.locator("#count", { hasText: "3" }).waitFor({ timeout: 10_000 });
    await carol.close();
    await bob.locator("#log li.note", { hasText: "carol left" }).waitFor({ timeout: 10_000 });
    await bob.locator("#count", { hasText: "2" }).waitFor({ timeout: 10_000 });

    // A room name the server does not take is refused in the page, and nothing connects.
    await alice.fill("#room", "my room");
    await alice.press("#room", "Enter");
    await alice.locator("#hint", { hasText: "1 to 64 letters" }).waitFor({ timeout: 10_000 });
    await alice.locator("#status", { hasText: "in room browsertest" }).waitFor({ timeout: 10_000 });

    // Ctrl-C: the server closes every connection with 1001 and its reason.
    child.kill("SIGINT");
    for (const page of [alice, bob]) {
      await page.locator("#close-info", { hasText: "1001 server shutting down" }).waitFor({ timeout: 10_000 });
      await page.locator("#status", { hasText: "reconnecting" }).waitFor({ timeout: 10_000 });
    }
    const code = await exited;
    assert.equal(code, 0);

    // A server back on the same address: the pages reconnect by themselves, Enter joins
    // another room, and the room keeps working.
    const again = await startServer([], addr);
    try {
      for (const page of [alice, bob]) {
        await page.locator("#status", { hasText: "in room browsertest" }).waitFor({ timeout: 20_000 });
      }
      for (const page of [alice, bob]) {
        await page.fill("#room", "second");
        await page.press("#room", "Enter");
        await page.locator("#status", { hasText: "in room second" }).waitFor({ timeout: 10_000 });
        assert.match(page.url(), /room=second/);
      }
      await alice.fill("#text", "after the restart");
      await alice.press("#text", "Enter");
      await bob.locator("#log li", { hasText: "after the restart" }).waitFor({ timeout: 10_000 });
    } finally {
      again.child.kill("SIGKILL");
    }
  } finally {
    await browser.close();
    child.kill("SIGKILL");
  }
});

test("serve --echo has a page of its own that echoes", { timeout: 60_000 }, async () => {
  const { child, addr } = await startServer(["--echo"]);
  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
  try {
    const page = await browser.newPage();
    await page.goto(`http://${addr}/`);
    assert.equal(await page.title(), "sockeye echo");
    await page.locator("#status", { hasText: "connected" }).waitFor({ timeout: 10_000 });
    await page.fill("#text", "echo me \u00e9");
    await page.press("#text", "Enter");
    await page.locator("#log li", { hasText: "< echo me \u00e9" }).waitFor({ timeout: 10_000 });
    // Once: the echo page shows each message once out and once back.
    assert.equal(await page.locator("#log li", { hasText: "echo me" }).count(), 2);
  } finally {
    await browser.close();
    child.kill("SIGKILL");
  }
});

/** A self-signed certificate for localhost, its key, and the base64 SHA-256 of its public key. */
function makeCertificate(dir) {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
  ], { stdio: "ignore" });
  const der = execFileSync("openssl", ["x509", "-in", cert, "-pubkey", "-noout"]);
  const spki = execFileSync("openssl", ["pkey", "-pubin", "-outform", "der"], { input: der });
  const hash = execFileSync("openssl", ["dgst", "-sha256", "-binary"], { input: spki }).toString("base64");
  return { cert, key, hash };
}

test("the demo page over https: rooms over wss://", { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "sockeye-browser-tls-"));
  const { cert, key, hash } = makeCertificate(dir);
  const { child, addr } = await startServer(["--tls-cert", cert, "--tls-key", key]);
  const port = addr.split(":")[1];
  // Chromium trusts this one certificate by its key; every other check stays on.
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [...chromiumArgs, `--ignore-certificate-errors-spki-list=${hash}`],
  });
  try {
    const url = `https://localhost:${port}/?room=tlstest`;
    const alice = await browser.newPage();
    const bob = await browser.newPage();
    for (const page of [alice, bob]) {
      await page.goto(url);
      await page.locator("#status", { hasText: "in room tlstest" }).waitFor({ timeout: 10_000 });
      assert.equal(await page.evaluate(() => location.protocol), "https:");
      assert.match(await page.locator("#extensions").textContent(), /permessage-deflate/);
    }
    await alice.fill("#text", "over wss");
    await alice.click("#send");
    await bob.locator("#log li", { hasText: "over wss" }).waitFor({ timeout: 10_000 });
  } finally {
    await browser.close();
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The net log's events with their type names: `{ type, source, params }`. */
function netLogEvents(file) {
  const log = JSON.parse(readFileSync(file, "utf8"));
  const names = Object.fromEntries(Object.entries(log.constants.logEventTypes).map(([name, id]) => [id, name]));
  return log.events.map((event) => ({ ...event, type: names[event.type] }));
}

test("over https the page and its WebSockets share one HTTP/2 session (RFC 8441)", { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "sockeye-browser-h2-"));
  const { cert, key, hash } = makeCertificate(dir);
  const netLog = join(dir, "netlog.json");
  const { child, addr } = await startServer(["--tls-cert", cert, "--tls-key", key]);
  const port = addr.split(":")[1];
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [...chromiumArgs, `--ignore-certificate-errors-spki-list=${hash}`, `--log-net-log=${netLog}`],
  });
  try {
    const url = `https://localhost:${port}/?room=h2test`;
    const alice = await browser.newPage();
    const bob = await browser.newPage();
    for (const page of [alice, bob]) {
      await page.goto(url);
      await page.locator("#status", { hasText: "in room h2test" }).waitFor({ timeout: 10_000 });
      const protocol = await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
      assert.equal(protocol, "h2");
    }
    await alice.fill("#text", "over an h2 stream");
    await alice.click("#send");
    await bob.locator("#log li", { hasText: "over an h2 stream" }).waitFor({ timeout: 10_000 });

    // Larger than the HTTP/2 windows, and not compressible: 300 000 characters both ways.
    for (const [from, to] of [[alice, bob], [bob, alice]]) {
      const big = randomBytes(225_000).toString("base64");
      await from.evaluate((text) => {
        document.getElementById("text").value = text;
        document.getElementById("send").click();
      }, big);
      await to.waitForFunction(
        (text) => Array.from(document.querySelectorAll("#log li")).some((li) => li.textContent.includes(text)),
        big,
        { timeout: 10_000 },
      );
    }
  } finally {
    // The net log is complete once the browser has exited.
    await browser.close();
    child.kill("SIGKILL");
  }
  try {
    const events = netLogEvents(netLog);
    const sent = events.filter((e) => e.type === "HTTP2_SESSION_SEND_HEADERS");
    const headers = (e) => e.params?.headers ?? [];
    const connects = sent.filter((e) => headers(e).includes(":method: CONNECT") && headers(e).includes(":protocol: websocket"));
    const pages = sent.filter((e) => headers(e).includes(":method: GET") && headers(e).includes(":path: /?room=h2test"));
    assert.ok(connects.length >= 2, `two extended CONNECTs in the net log, found ${connects.length}`);
    // The room's path, with the page's ?name= for presence.
    assert.ok(connects.every((e) => headers(e).some((h) => /^:path: \/rooms\/h2test(\?|$)/.test(h))));
    // On the session that carried the page.
    const sessions = new Set(pages.map((e) => e.source.id));
    assert.ok(connects.every((e) => sessions.has(e.source.id)), "the WebSockets went over the page's HTTP/2 session");
    // And no WebSocket went as an HTTP/1.1 Upgrade.
    const upgrades = events.filter((e) => /upgrade: websocket/i.test(JSON.stringify(e.params ?? {})));
    assert.equal(upgrades.length, 0, JSON.stringify(upgrades.slice(0, 2)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A free TCP port on 127.0.0.1. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once the Redis at `port` answers PING (redis-cli fails while nothing listens). */
async function untilAnswers(port) {
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
async function untilSubscribed(port, room, count) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const reply = execFileSync("redis-cli", ["-p", String(port), "PUBSUB", "NUMSUB", `sockeye:room:${room}`]);
    if (reply.toString().trim().split("\n").pop() === String(count)) return;
    assert.ok(Date.now() < deadline, `${count} servers never subscribed to ${room}: ${reply}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test("pages on two servers share a room over Redis", { timeout: 60_000 }, async () => {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "sockeye-browser-redis-"));
  const redis = spawn("redis-server", ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no", "--dir", dir], { stdio: "ignore" });
  const servers = [];
  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
  try {
    await untilAnswers(port);
    for (let i = 0; i < 2; i++) servers.push(await startServer(["--redis", `redis://127.0.0.1:${port}`]));
    const [alice, bob] = [await browser.newPage(), await browser.newPage()];
    await alice.goto(`http://${servers[0].addr}/?room=scaletest`);
    await bob.goto(`http://${servers[1].addr}/?room=scaletest`);
    for (const page of [alice, bob]) {
      await page.locator("#status", { hasText: "in room scaletest" }).waitFor({ timeout: 10_000 });
    }
    await untilSubscribed(port, "scaletest", 2);

    await alice.fill("#text", "from server one");
    await alice.click("#send");
    await bob.locator("#log li", { hasText: "from server one" }).waitFor({ timeout: 10_000 });
    await bob.fill("#text", "bin");
    await bob.click("#send-binary");
    await alice.locator("#log li.binary", { hasText: "binary 3 bytes: 62 69 6e" }).waitFor({ timeout: 10_000 });
  } finally {
    await browser.close();
    for (const { child } of servers) child.kill("SIGKILL");
    redis.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
