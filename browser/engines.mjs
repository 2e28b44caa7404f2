// The three browser engines behind one small interface, so that the tests are written once:
// Chromium (Debian's, over CDP) and Firefox ESR (over WebDriver BiDi) driven by puppeteer-core,
// WebKitGTK's MiniBrowser driven by selenium-webdriver through WebKitWebDriver.
//
//   const browser = await launch("firefox", { spkiHash, logDir });
//   const page = await browser.newPage();
//   await page.goto(url);
//   const value = await page.run((a, b) => a + b, 1, 2);   // runs in the page, may be async
//   await page.until(() => document.title === "x", [], "the title");
//   await page.screenshot(file); await page.close(); await browser.close();
//
// Each browser keeps its connections on loopback: Chromium with its background networking off,
// Firefox with a proxy for every non-loopback host that records and answers nothing
// (`browser.proxySeen` lists what reached it, and the suite checks that nothing did). WebKit's
// MiniBrowser is not checked for background requests.

import { spawn } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import puppeteer from "puppeteer-core";
import { Builder, Capabilities } from "selenium-webdriver";
import { blackHole, freePort } from "./support.mjs";

export const ENGINES = ["chromium", "firefox", "webkit"];

const paths = {
  chromium: process.env.CHROMIUM ?? "/usr/bin/chromium",
  firefox: process.env.FIREFOX ?? "/usr/bin/firefox-esr",
  webkitDriver: process.env.WEBKIT_WEBDRIVER ?? "/usr/bin/WebKitWebDriver",
  miniBrowser: process.env.MINIBROWSER ?? "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser",
};

/** How long `until` waits by default, in milliseconds. */
const WAIT = 10_000;

/**
 * Launches `engine`. Options: `spkiHash` (the one self-signed certificate to trust; Chromium
 * trusts it by this hash, Firefox and WebKit take WebDriver's acceptInsecureCerts), `logDir`
 * (Chromium writes its net log there as netlog.json, Firefox its nsHttp log as moz.log*).
 */
export async function launch(engine, options = {}) {
  switch (engine) {
    case "chromium":
      return launchChromium(options);
    case "firefox":
      return launchFirefox(options);
    case "webkit":
      return launchWebKit(options);
    default:
      throw new Error(`unknown engine ${engine}`);
  }
}

/** Polls `predicate(...args)` in the page every 20 ms until it returns something truthy. */
function pollInPage(source, args, timeout, what) {
  const predicate = (0, eval)(`(${source})`);
  const deadline = Date.now() + timeout;
  return new Promise((resolve, reject) => {
    const tick = () => {
      let value;
      try {
        value = predicate(...args);
      } catch (e) {
        value = undefined;
      }
      if (value) return resolve(value);
      if (Date.now() > deadline) return reject(new Error(`timed out after ${timeout} ms waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

/** The methods every page has, given its `run`. */
function withHelpers(page) {
  page.until = (predicate, args = [], what = predicate.toString(), timeout = WAIT) =>
    page.run(pollInPage, predicate.toString(), args, timeout, what);
  page.text = (selector) => page.run((s) => document.querySelector(s)?.textContent ?? null, selector);
  return page;
}

function puppeteerPage(page) {
  return withHelpers({
    goto: async (url) => {
      await page.goto(url, { waitUntil: "load" });
    },
    run: (fn, ...args) => page.evaluate(fn, ...args),
    screenshot: (path) => page.screenshot({ path, fullPage: true }),
    close: () => page.close(),
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
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
];

async function launchChromium({ spkiHash, logDir }) {
  const args = [...chromiumArgs];
  if (spkiHash) args.push(`--ignore-certificate-errors-spki-list=${spkiHash}`);
  if (logDir) args.push(`--log-net-log=${join(logDir, "netlog.json")}`);
  const browser = await puppeteer.launch({ browser: "chrome", executablePath: paths.chromium, headless: true, args });
  return {
    name: "chromium",
    version: await browser.version(),
    newPage: async () => puppeteerPage(await browser.newPage()),
    close: () => browser.close(),
    /** The net log, complete once the browser has closed. */
    netLog: () => readFileSync(join(logDir, "netlog.json"), "utf8"),
  };
}

/** Firefox's preferences: every connection but loopback goes to `proxyPort`, and nothing asks for any. */
function firefoxPrefs(proxyPort) {
  return {
    // A proxy for everything that is not loopback (Firefox never proxies localhost and
    // 127.0.0.1 unless network.proxy.allow_hijacking_localhost): a listener of ours that
    // records and answers nothing, so a request to the internet shows up there and goes nowhere.
    "network.proxy.type": 1,
    "network.proxy.http": "127.0.0.1",
    "network.proxy.http_port": proxyPort,
    "network.proxy.ssl": "127.0.0.1",
    "network.proxy.ssl_port": proxyPort,
    "network.proxy.share_proxy_settings": true,
    "network.proxy.socks_remote_dns": true,
    "network.proxy.no_proxies_on": "",
    "network.proxy.allow_hijacking_localhost": false,
    // No DNS of its own: no prefetching, no DNS over HTTPS, no connectivity or portal checks.
    "network.dns.disablePrefetch": true,
    "network.dns.disablePrefetchFromHTTPS": true,
    "network.prefetch-next": false,
    "network.predictor.enabled": false,
    "network.http.speculative-parallel-limit": 0,
    "network.trr.mode": 5,
    "network.connectivity-service.enabled": false,
    "network.captive-portal-service.enabled": false,
    "captivedetect.canonicalURL": "",
    // No telemetry, updates, remote settings, push, safe browsing or suggestions.
    "toolkit.telemetry.enabled": false,
    "toolkit.telemetry.unified": false,
    "toolkit.telemetry.server": "",
    "toolkit.telemetry.archive.enabled": false,
    "datareporting.policy.dataSubmissionEnabled": false,
    "datareporting.healthreport.uploadEnabled": false,
    "app.update.enabled": false,
    "app.update.auto": false,
    "app.normandy.enabled": false,
    "app.shield.optoutstudies.enabled": false,
    "services.settings.server": "http://127.0.0.1:9/",
    "services.sync.enabled": false,
    "dom.push.connection.enabled": false,
    "dom.push.serverURL": "",
    "browser.safebrowsing.update.enabled": false,
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.region.network.url": "",
    "browser.region.update.enabled": false,
    "browser.search.geoip.url": "",
    "browser.topsites.contile.enabled": false,
    "browser.newtabpage.activity-stream.feeds.topsites": false,
    "browser.ping-centre.telemetry": false,
    "extensions.blocklist.enabled": false,
    "extensions.systemAddon.update.enabled": false,
    "media.gmp-gmpopenh264.enabled": false,
    "network.cookie.cookieBehavior": 0,
    "security.OCSP.enabled": 0,
    "security.remote_settings.crlite_filters.enabled": false,
    "security.remote_settings.intermediates.enabled": false,
    // Background tabs keep their timers (the demo page's reconnect, the tests' polling).
    "dom.min_background_timeout_value": 4,
    "dom.min_background_timeout_value_without_budget_throttling": 4,
    "dom.timeout.enable_budget_timer_throttling": false,
    // RFC 8441 WebSockets over HTTP/2 (the default; said here because the test asserts it).
    "network.http.http2.websockets": true,
  };
}

async function launchFirefox({ logDir }) {
  const proxy = await blackHole();
  // Remote settings take services.settings.server only with this set (else a preconnect to
  // firefox.settings.services.mozilla.com goes out at start-up).
  const env = { ...process.env, MOZ_REMOTE_SETTINGS_DEVTOOLS: "1" };
  if (logDir) {
    env.MOZ_LOG = "timestamp,nsHttp:5";
    env.MOZ_LOG_FILE = join(logDir, "moz.log");
  }
  let browser;
  try {
    browser = await puppeteer.launch({
      browser: "firefox",
      executablePath: paths.firefox,
      headless: true,
      acceptInsecureCerts: true,
      extraPrefsFirefox: firefoxPrefs(proxy.port),
      env,
    });
  } catch (e) {
    proxy.close();
    throw e;
  }
  return {
    name: "firefox",
    version: await browser.version(),
    newPage: async () => puppeteerPage(await browser.newPage()),
    close: async () => {
      await browser.close();
      proxy.close();
    },
    /** What reached the proxy for non-loopback hosts: the first bytes of each connection. */
    proxySeen: proxy.seen,
    /** Firefox's HTTP log, every process's file, once the browser has closed. */
    mozLog: () =>
      readdirSync(logDir)
        .filter((name) => name.startsWith("moz.log"))
        .map((name) => readFileSync(join(logDir, name), "utf8"))
        .join("\n"),
  };
}

/** Runs `fn(...args)` in the current window of a selenium session, awaiting its promise. */
const ASYNC_RUNNER = `
  const [source, args, done] = arguments;
  Promise.resolve()
    .then(() => (0, eval)("(" + source + ")")(...args))
    .then((value) => done({ ok: value === undefined ? null : value }),
          (error) => done({ error: String((error && error.message) || error) }));
`;

async function launchWebKit() {
  const port = await freePort();
  const driverProcess = spawn(paths.webkitDriver, [`--port=${port}`], { stdio: "ignore" });
  const capabilities = new Capabilities({
    browserName: "MiniBrowser",
    acceptInsecureCerts: true,
    "webkitgtk:browserOptions": { binary: paths.miniBrowser, args: ["--automation"] },
  });
  let driver;
  // WebKitWebDriver listens within a moment of starting: retry the session until it does.
  for (let attempt = 0; ; attempt++) {
    try {
      driver = await new Builder().usingServer(`http://127.0.0.1:${port}`).withCapabilities(capabilities).build();
      break;
    } catch (e) {
      if (attempt >= 100 || driverProcess.exitCode !== null) {
        driverProcess.kill("SIGKILL");
        throw e;
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  await driver.manage().setTimeouts({ script: 60_000, pageLoad: 30_000 });
  const version = (await driver.getCapabilities()).get("browserVersion");

  // One session, one window per page: every command first makes its page's window current,
  // and commands run one at a time.
  // The first window stays open (on about:blank) for the session's life: closing a session's
  // last window would end it.
  const parking = await driver.getWindowHandle();
  let current = parking;
  let queue = Promise.resolve();
  const serial = (handle, fn) => {
    const next = queue.then(async () => {
      if (current !== handle) {
        await driver.switchTo().window(handle);
        current = handle;
      }
      return fn();
    });
    queue = next.catch(() => {});
    return next;
  };
  const newPage = async () => {
    let handle;
    const opened = queue.then(async () => {
      await driver.switchTo().newWindow("window");
      current = handle = await driver.getWindowHandle();
    });
    queue = opened.catch(() => {});
    await opened;
    return withHelpers({
      goto: (url) => serial(handle, () => driver.get(url)),
      run: (fn, ...args) =>
        serial(handle, async () => {
          const result = await driver.executeAsyncScript(ASYNC_RUNNER, fn.toString(), args);
          if (result && "error" in result) throw new Error(result.error);
          return result.ok;
        }),
      screenshot: (path) => serial(handle, async () => writeFileSync(path, Buffer.from(await driver.takeScreenshot(), "base64"))),
      close: () =>
        serial(handle, async () => {
          await driver.close();
          await driver.switchTo().window(parking);
          current = parking;
        }),
    });
  };
  return {
    name: "webkit",
    version,
    newPage,
    close: async () => {
      try {
        await queue;
        await driver.quit();
      } finally {
        driverProcess.kill("SIGKILL");
      }
    },
  };
}
