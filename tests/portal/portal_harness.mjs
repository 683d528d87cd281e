// What every portal browser test needs: a free port, the real `nls serve` started on a data
// dir and stopped, Debian's Chromium with the flags this closed network needs, and the
// per-page check (axe-core, console errors, a screenshot).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { freePort } from '../free_port.mjs';

export { freePort };

const here = dirname(fileURLToPath(import.meta.url));
const AXE = readFileSync(join(here, 'node_modules/axe-core/axe.min.js'), 'utf8');
// Without the background-networking flags Chromium keeps calling out, and this machine's
// closed network refuses each call.
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function launchChromium() {
  return chromium.launch({ executablePath: process.env.NLS_CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS });
}

/** Starts `bin serve` on a free port over `dataDir` (log in `workDir/serve.log`) and waits
 * for `/health`; returns `{ server, base }`. */
export async function startNlsServe({ bin, workDir, dataDir, env = {} }) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const log = openSync(join(workDir, 'serve.log'), 'a');
  const server = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir], {
    env: { ...process.env, RUST_LOG: 'warn', ...env }, detached: true, stdio: ['ignore', log, log],
  });
  server.exitPromise = new Promise((r) => server.on('exit', r));
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/health`)).ok) break;
    } catch {}
    assert.ok(i < 240, 'nls serve did not become healthy');
    await sleep(250);
  }
  return { server, base };
}

export async function stopNlsServe(server) {
  if (server && server.exitCode === null) {
    process.kill(-server.pid, 'SIGTERM');
    await Promise.race([server.exitPromise, sleep(5000)]);
  }
}

/** A page in a context of its own that records console errors (checked by `checkPage`), signed
 * in to the portal at `base` as `user` ({ email, password }); close it with `page.context().close()`. */
export async function signedInPage(browser, base, user, contextOptions = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...contextOptions });
  const page = await context.newPage();
  page.consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') page.consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => page.consoleErrors.push(String(e)));
  await page.goto(`${base}/admin/login`);
  await page.fill('#email', user.email);
  await page.fill('#password', user.password);
  await page.click('button[type=submit]');
  await page.waitForURL(`${base}/admin/`);
  return page;
}

/** axe-core on the current page, no console error so far, and a screenshot `shots/name.png`. */
export async function checkPage(page, name, shots) {
  // Through the DevTools protocol: the portal's CSP (rightly) refuses an inline script tag.
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => (await window.axe.run()).violations
    .map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 3) })));
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${name}: accessibility violations`);
  assert.deepEqual(page.consoleErrors, [], `${name}: console errors`);
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}
