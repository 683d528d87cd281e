// The admin portal in real Chromium (Debian's, driven by playwright-core) against the real
// `nls serve` binary, with staff users made by `nls staff create`. Each page visited is
// scanned by axe-core (no serious or critical violation), logs no console error, and is
// screenshotted. Run by tests/portal/run.sh, which builds nls and sets NLS_BIN.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkPage, launchChromium, startNlsServe, stopNlsServe } from './portal_harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const NLS_BIN = process.env.NLS_BIN;
const WORK = mkdtempSync(join(tmpdir(), 'nls-portal-'));
const SHOTS = process.env.NLS_PORTAL_SCREENSHOTS || join(WORK, 'screenshots');

const secret = () => randomBytes(12).toString('hex');

let server, base, dataDir, browser, evil;
/** Every URL the browser asked for, to check that no secret ever travels in one. */
const requestedUrls = [];
/** Secrets of this run: staff passwords, license keys. */
const secrets = [];
const users = {};

function nls(args, input) {
  const r = spawnSync(NLS_BIN, [...args, '--data-dir', dataDir], { input, encoding: 'utf8' });
  assert.equal(r.status, 0, `nls ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function staff(role, email = `${role}@nectar.test`) {
  const password = secret() + secret();
  nls(['staff', 'create', '--email', email, '--name', `${role[0].toUpperCase()}${role.slice(1)} Tester`, '--role', role],
    `${password}\n${password}\n`);
  secrets.push(password);
  users[email] = { email, password };
  return users[email];
}

before(async () => {
  assert.ok(NLS_BIN, 'NLS_BIN must name the nls binary (tests/portal/run.sh sets it)');
  mkdirSync(SHOTS, { recursive: true });
  dataDir = join(WORK, 'data');
  ({ server, base } = await startNlsServe({ bin: NLS_BIN, workDir: WORK, dataDir }));
  for (const role of ['admin', 'viewer', 'support']) staff(role);
  staff('support', 'ratelimit@nectar.test');
  browser = await launchChromium();
  // Another site, for the cross-site forgery: it serves a form that posts to the portal.
  evil = createServer((req, res) => {
    const target = new URL(req.url, 'http://x').searchParams.get('target');
    res.setHeader('content-type', 'text/html');
    res.end(`<!doctype html><html lang="en"><title>evil</title><form id=f method=post action="${target}">
      <input name=csrf value=guess></form><script>document.getElementById('f').submit()</script></html>`);
  });
  await new Promise((r) => evil.listen(0, 'localhost', r));
});

after(async () => {
  await browser?.close();
  evil?.close();
  await stopNlsServe(server);
  console.log(`screenshots: ${SHOTS}`);
});

/** A fresh browser context (its own cookies) and page that records console errors and URLs. */
async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') page.consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => page.consoleErrors.push(String(e)));
  page.on('request', (r) => requestedUrls.push(r.url()));
  return page;
}

/** axe-core on the current page, no console error so far, and a screenshot named `name`. */
async function check(page, name) {
  await checkPage(page, name, SHOTS);
}

async function signIn(page, { email, password }) {
  await page.goto(`${base}/admin/login`);
  await page.fill('#email', email);
  await page.fill('#password', password);
  await page.click('button[type=submit]');
}

async function sessionCookie(page) {
  const cookies = await page.context().cookies(`${base}/admin/`);
  return cookies.find((c) => c.name === 'nls_session');
}

async function validate(key) {
  const r = await fetch(`${base}/v1/licenses/validate`, {
    method: 'POST', body: JSON.stringify({ key, deployment_id: 'portal-host-1' }),
  });
  assert.equal(r.status, 200);
  return (await r.json()).code;
}

/** Creates a customer through the portal's form; returns its detail page's URL. */
async function createCustomer(page, name, email) {
  await page.goto(`${base}/admin/customers/new`);
  await page.fill('#name', name);
  await page.fill('#email', email);
  await page.click('main button[type=submit]');
  await page.waitForURL(/\/admin\/customers\/cus_/);
  return page.url();
}

let licenseId, licenseKey;

test('an admin signs in, creates a customer and a license, suspends it and finds it all in the audit log', async () => {
  const page = await newPage();
  await page.goto(`${base}/admin/`);
  assert.match(page.url(), /\/admin\/login$/, 'signed out: sent to the sign-in page');
  await check(page, 'sign-in');
  // A session id planted before sign-in is not the one after it (no fixation).
  await page.context().addCookies([{ name: 'nls_session', value: 'planted-by-an-attacker', domain: '127.0.0.1', path: '/admin' }]);
  await signIn(page, users['admin@nectar.test']);
  await page.waitForURL(`${base}/admin/`);
  const first = await sessionCookie(page);
  assert.notEqual(first.value, 'planted-by-an-attacker');
  assert.ok(first.httpOnly && first.sameSite === 'Strict', JSON.stringify(first));
  await check(page, 'dashboard');

  await createCustomer(page, 'Acme Robotics', 'ops@acme.test');
  await check(page, 'customer');
  await page.click('text=New license for this customer');
  await page.waitForURL(/\/admin\/licenses\/new\?customer_id=/);
  await page.fill('#tier', 'pro');
  await page.fill('#features', 'sso, audit_log');
  await page.fill('#limits', 'workflow_runs=10000');
  await page.fill('#max_deployments', '3');
  await check(page, 'license-wizard');
  await page.click('main button[type=submit]');
  await page.waitForSelector('#license-key');
  licenseKey = (await page.textContent('#license-key')).trim();
  secrets.push(licenseKey);
  assert.match(licenseKey, /^NLS-/);
  assert.ok(await page.isVisible('#copy-key'), 'the script shows the copy button');
  await check(page, 'license-key-once');
  await page.click('text=Go to the license');
  await page.waitForURL(/\/admin\/licenses\/lic_/);
  licenseId = page.url().split('/').pop();
  assert.equal(await page.locator('#license-key').count(), 0, 'the key is not shown again');

  assert.equal(await validate(licenseKey), 'VALID');
  page.once('dialog', (d) => d.accept());
  await page.click('button:has-text("Suspend")');
  await page.waitForURL(/done=suspend/);
  assert.match(await page.textContent('.notice'), /License suspended/);
  assert.equal(await validate(licenseKey), 'SUSPENDED', 'the validation code follows the portal at once');
  await check(page, 'license-detail');

  await page.goto(`${base}/admin/licenses?status=suspended&feature=sso`);
  assert.ok(await page.isVisible(`a:has-text("${licenseId}")`));
  await check(page, 'licenses');

  await page.goto(`${base}/admin/audit?target=license:${licenseId}`);
  const rows = await page.locator('tbody tr').allTextContents();
  assert.ok(rows.some((r) => r.includes('license.suspend') && r.includes('staff:stf_')), rows.join('\n'));
  assert.ok(rows.some((r) => r.includes('license.create') && r.includes('staff:stf_')), rows.join('\n'));
  await page.click('summary >> nth=0');
  await check(page, 'audit-log');
  await page.goto(`${base}/admin/audit?action=customer.create`);
  const customerRow = await page.textContent('tbody');
  assert.match(customerRow, /customer\.create/);
  assert.match(customerRow, /staff:stf_/);

  await page.click('button:has-text("Sign out")');
  await page.waitForURL(`${base}/admin/login`);
  await page.goto(`${base}/admin/licenses`);
  assert.match(page.url(), /\/admin\/login$/, 'signed out: the old session is gone');
  // Signing in again gives another session id.
  await signIn(page, users['admin@nectar.test']);
  await page.waitForURL(`${base}/admin/`);
  assert.notEqual((await sessionCookie(page)).value, first.value);
  await page.context().close();
});

test('a viewer sees no write buttons, and a forged POST with their own token is refused', async () => {
  assert.ok(licenseId, 'needs the license of the first test');
  const page = await newPage();
  await signIn(page, users['viewer@nectar.test']);
  await page.waitForURL(`${base}/admin/`);
  await page.goto(`${base}/admin/licenses/${licenseId}`);
  for (const label of ['Reactivate', 'Suspend', 'Renew', 'Revoke', 'Edit terms']) {
    assert.equal(await page.locator(`main :text-is("${label}")`).count(), 0, `a viewer sees ${label}`);
  }
  // The form a viewer never sees, posted anyway with their own valid CSRF token.
  const [forged] = await Promise.all([page.waitForNavigation(), page.evaluate((id) => {
    const form = document.createElement('form');
    form.method = 'post';
    form.action = `/admin/licenses/${id}/reactivate`;
    const csrf = document.createElement('input');
    csrf.name = 'csrf';
    csrf.value = document.querySelector('input[name=csrf]').value;
    form.append(csrf);
    document.body.append(form);
    form.submit();
  }, licenseId)]);
  const status = forged.status();
  assert.equal(status, 403);
  const newLicense = await page.goto(`${base}/admin/licenses/new`);
  assert.equal(newLicense.status(), 403);
  await page.context().close();
});

test('a cross-site form post is refused (CSRF) and changes nothing', async () => {
  const page = await newPage();
  await signIn(page, users['admin@nectar.test']);
  await page.waitForURL(`${base}/admin/`);
  const target = `${base}/admin/licenses/${licenseId}/reactivate`;
  await page.goto(`http://localhost:${evil.address().port}/?target=${encodeURIComponent(target)}`);
  await page.waitForURL((u) => u.href.startsWith(base));
  // The browser withheld the SameSite=Strict cookie; either way nothing happened.
  assert.equal(await validate(licenseKey), 'SUSPENDED');
  // Without SameSite's help (a client that sends the cookie anyway), the Origin check refuses.
  const cookie = await sessionCookie(page);
  const r = await fetch(target, {
    method: 'POST', redirect: 'manual',
    headers: { cookie: `nls_session=${cookie.value}`, origin: `http://localhost:${evil.address().port}`,
      'content-type': 'application/x-www-form-urlencoded' },
    body: 'csrf=guess',
  });
  assert.equal(r.status, 403);
  assert.equal(await validate(licenseKey), 'SUSPENDED');
  await page.context().close();
});

test('a customer named <script> renders as text', async () => {
  const page = await newPage();
  await signIn(page, users['admin@nectar.test']);
  await page.waitForURL(`${base}/admin/`);
  const name = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">';
  await createCustomer(page, name, 'xss@evil.test');
  assert.equal(await page.textContent('h1'), name);
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  await page.goto(`${base}/admin/customers`);
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  assert.ok((await page.textContent('tbody')).includes(name));
  await check(page, 'customers');
  await page.context().close();
});

test('sign-in is rate limited per account, with the same answer for unknown emails', async () => {
  const page = await newPage();
  const wrong = { email: 'ratelimit@nectar.test', password: 'not-the-password-at-all' };
  await signIn(page, wrong);
  const wrongText = await page.textContent('[role=alert]');
  await signIn(page, { email: 'nobody-here@nectar.test', password: 'not-the-password-at-all' });
  assert.equal(await page.textContent('[role=alert]'), wrongText, 'unknown email and wrong password look alike');
  for (let i = 0; i < 4; i++) await signIn(page, wrong);
  await signIn(page, users['ratelimit@nectar.test']);
  assert.match(await page.textContent('[role=alert]'), /Too many sign-in attempts/);
  assert.match(page.url(), /\/admin\/login$/);
  await page.context().close();
});

test('a disabled user loses access at once', async () => {
  const page = await newPage();
  await signIn(page, users['support@nectar.test']);
  await page.waitForURL(`${base}/admin/`);
  await page.goto(`${base}/admin/licenses`);
  assert.match(page.url(), /\/admin\/licenses$/);
  nls(['staff', 'disable', '--email', 'support@nectar.test']);
  await page.reload();
  assert.match(page.url(), /\/admin\/login$/, 'the next request is refused');
  await page.context().close();
});

test('no secret or license key ever travelled in a URL', () => {
  assert.ok(requestedUrls.length > 20, `only ${requestedUrls.length} requests seen`);
  for (const url of requestedUrls) {
    const decoded = decodeURIComponent(url);
    for (const s of secrets) assert.ok(!decoded.includes(s), `a secret in ${url}`);
    assert.ok(!decoded.includes('NLS-'), `a license key in ${url}`);
  }
});
