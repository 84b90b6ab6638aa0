// Drives Debian's firefox-esr for the Python tests: one JSON command per line on stdin, one
// JSON answer per line on stdout (tests/firefox.py is the other end).
//
// puppeteer-core speaks WebDriver BiDi to the installed Firefox; it never downloads a browser.
// Commands: {"id", "op", ...}; answers: {"id", "result"} or {"id", "error"}; events without id:
// {"event": "ready", "version"}, {"event": "pageerror", "page", "message"}.
//
//   open {url, width, height, initScript} -> page number  evaluate {page, fn, arg} -> value
//   waitFor {page, fn, arg, timeoutMs} -> value  click / fill / select {page, selector, value}
//   screenshot {page, path}                      close {page}             quit
//
// fn is a function's source text, e.g. "(arg) => document.title": it runs in the page.

import { createInterface } from "node:readline";
import puppeteer from "puppeteer-core";

const executablePath = process.env.FIREFOX || "/usr/bin/firefox-esr";

// Fake camera and microphone, no permission prompt, and nothing that reaches out to the
// internet (the tests also run Firefox in network namespaces that count every such packet).
const prefs = {
  "media.navigator.streams.fake": true,
  "media.navigator.permission.disabled": true,
  "media.autoplay.default": 0,
  "media.autoplay.blocking_policy": 0,
  // Host candidates as they are (no mDNS names, which would send to 224.0.0.251), and
  // loopback ones, so two browsers on a machine with only loopback can meet.
  "media.peerconnection.ice.obfuscate_host_addresses": false,
  "media.peerconnection.ice.loopback": true,
  "media.peerconnection.ice.link_local": false,
  // Pages served over plain http from a test address may use the camera (a test-only choice;
  // set FIREFOX_SECURE_HOSTS, comma-separated, e.g. "203.0.113.1").
  ...(process.env.FIREFOX_SECURE_HOSTS
    ? { "dom.securecontext.allowlist": process.env.FIREFOX_SECURE_HOSTS, "media.devices.insecure.enabled": true }
    : {}),
  // Quiet: no telemetry, updates, captive portal or connectivity checks, remote settings,
  // safe browsing lists, add-on or plugin (OpenH264) downloads, DNS prefetching, push.
  "app.update.enabled": false,
  "app.update.auto": false,
  "app.normandy.enabled": false,
  "browser.safebrowsing.malware.enabled": false,
  "browser.safebrowsing.phishing.enabled": false,
  "browser.safebrowsing.downloads.enabled": false,
  "browser.safebrowsing.blockedURIs.enabled": false,
  "browser.safebrowsing.provider.mozilla.updateURL": "",
  "browser.search.update": false,
  "browser.newtabpage.enabled": false,
  "browser.region.network.url": "",
  "browser.region.update.enabled": false,
  "captivedetect.canonicalURL": "",
  "datareporting.healthreport.uploadEnabled": false,
  "datareporting.policy.dataSubmissionEnabled": false,
  "dom.push.connection.enabled": false,
  "dom.push.serverURL": "",
  "extensions.update.enabled": false,
  "extensions.getAddons.cache.enabled": false,
  "extensions.systemAddon.update.enabled": false,
  "media.gmp-manager.url": "",
  "media.gmp-gmpopenh264.enabled": false,
  "media.gmp-gmpopenh264.autoupdate": false,
  "network.captive-portal-service.enabled": false,
  "network.connectivity-service.enabled": false,
  "network.dns.disablePrefetch": true,
  "network.prefetch-next": false,
  "network.trr.mode": 5,
  "services.settings.server": "",
  "services.sync.enabled": false,
  "toolkit.telemetry.enabled": false,
  "toolkit.telemetry.unified": false,
  "toolkit.telemetry.server": "",
};

const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath,
  headless: true,
  extraPrefsFirefox: prefs,
  protocolTimeout: 60000,
});

const pages = new Map(); // page number -> {context, page}
let nextPage = 1;

function write(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

// The function source is compiled here and handed to puppeteer, which runs it in the page.
function compile(source) {
  return new Function(`return (${source});`)();
}

function pageOf(command) {
  const entry = pages.get(command.page);
  if (!entry) throw new Error(`no page ${command.page}`);
  return entry.page;
}

const operations = {
  async open({ url, width = 1280, height = 720, initScript = null }) {
    // One browser context per page, so two pages are two users (like Playwright's contexts).
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    const number = nextPage++;
    pages.set(number, { context, page });
    page.on("pageerror", (error) => write({ event: "pageerror", page: number, message: String(error && error.message) }));
    await page.setViewport({ width, height });
    // Script text run in every document of the page before its own scripts.
    if (initScript) await page.evaluateOnNewDocument(initScript);
    await page.goto(url);
    return number;
  },
  async evaluate(command) {
    return await pageOf(command).evaluate(compile(command.fn), command.arg ?? null);
  },
  async waitFor(command) {
    const handle = await pageOf(command).waitForFunction(
      compile(command.fn),
      { timeout: command.timeoutMs ?? 20000, polling: 100 },
      command.arg ?? null,
    );
    return await handle.jsonValue();
  },
  async click(command) {
    await pageOf(command).click(command.selector);
  },
  async fill(command) {
    const page = pageOf(command);
    await page.$eval(command.selector, (element) => {
      element.value = "";
    });
    await page.type(command.selector, command.value);
  },
  async select(command) {
    await pageOf(command).select(command.selector, command.value);
  },
  async screenshot(command) {
    await pageOf(command).screenshot({ path: command.path });
  },
  async close(command) {
    const entry = pages.get(command.page);
    pages.delete(command.page);
    if (entry) await entry.context.close();
  },
};

write({ event: "ready", version: await browser.version() });

// Commands run one after another, in the order they came.
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  if (command.op === "quit") break;
  try {
    const operation = operations[command.op];
    if (!operation) throw new Error(`unknown op ${command.op}`);
    write({ id: command.id, result: (await operation(command)) ?? null });
  } catch (error) {
    write({ id: command.id, error: String((error && error.stack) || error) });
  }
}
await browser.close();
process.exit(0);
