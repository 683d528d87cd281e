// The admin portal's admin and system pages in real Chromium against the real `nls serve`:
// API keys (the secret shown once, a revoked key refused by the API), staff users (a new
// viewer, disabled, loses their session), the TOTP second factor (enrol, sign out, sign in
// with a code computed here, a wrong code refused, `nls staff disable-totp` for lockout) and
// the System page. Each page is scanned by axe-core, logs no console error and is
// screenshotted. Run by tests/portal/run.sh, which builds nls and sets NLS_BIN.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { createHmac, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkPage, launchChromium, startNlsServe, stopNlsServe } from './portal_harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const NLS_BIN = process.env.NLS_BIN;
const WORK = mkdtempSync(join(tmpdir(), 'nls-portal-admin-'));
const SHOTS = process.env.NLS_PORTAL_SCREENSHOTS || join(WORK, 'screenshots');

const secret = () => randomBytes(12).toString('hex');

/** RFC 4648 base32 (no padding) to bytes. */
function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0, value = 0;
  const out = [];
  for (const c of text.replace(/[\s=]/g, '').toUpperCase()) {
    const i = alphabet.indexOf(c);
    assert.ok(i >= 0, `not base32: ${c}`);
    value = (value << 5) | i;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >>> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

/** RFC 6238 TOTP (HMAC-SHA-1, 6 digits, 30 s), written here independently of the server's. */
function totp(secretBase32, unixSeconds, stepOffset = 0) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(unixSeconds / 30) + stepOffset));
  const hash = createHmac('sha1', base32Decode(secretBase32)).update(counter).digest();
  const offset = hash[19] & 0x0f;
  const binary = hash.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 1_000_000).padStart(6, '0');
}

let server, base, dataDir, browser;
const requestedUrls = [];
const secrets = [];
const users = {};

function nls(args, input) {
  const r = spawnSync(NLS_BIN, [...args, '--data-dir', dataDir], { input, encoding: 'utf8' });
  assert.equal(r.status, 0, `nls ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function staff(role, email) {
  const password = secret() + secret();
  nls(['staff', 'create', '--email', email, '--name', `${role[0].toUpperCase()}${role.slice(1)} Person`, '--role', role],
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
  staff('admin', 'root@nectar.test');
  staff('support', 'otp@nectar.test');
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await stopNlsServe(server);
});

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') page.consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => page.consoleErrors.push(String(e)));
  page.on('request', (r) => requestedUrls.push(r.url()));
  return page;
}

async function check(page, name) {
  await checkPage(page, name, SHOTS);
}

async function signIn(page, { email, password }, code) {
  await page.goto(`${base}/admin/login`);
  await page.fill('#email', email);
  await page.fill('#password', password);
  if (code !== undefined) await page.fill('#code', code);
  await page.click('button[type=submit]');
}

async function adminPage() {
  const page = await newPage();
  await signIn(page, users['root@nectar.test']);
  await page.waitForURL(`${base}/admin/`);
  return page;
}

const listLicenses = (key) => fetch(`${base}/v1/licenses`, { headers: { authorization: `Bearer ${key}` } });

test('an admin makes an API key, sees its secret once, revokes it, and the API refuses it', async () => {
  const page = await adminPage();
  await page.click('nav >> text=API keys');
  await page.waitForURL(`${base}/admin/api-keys`);
  await check(page, 'api-keys');
  await page.fill('#name', 'reporting job');
  await page.check('input[name=scopes][value=read]');
  await page.click('main button:has-text("Create key")');
  await page.waitForSelector('#api-key-secret');
  const key = (await page.textContent('#api-key-secret')).trim();
  secrets.push(key);
  assert.match(key, /^nls_/);
  assert.ok(await page.isVisible('#copy-secret'), 'the script shows the copy button');
  await check(page, 'api-key-once');
  assert.equal((await listLicenses(key)).status, 200, 'the new key works');

  await page.click('text=Back to the API keys');
  await page.waitForURL(`${base}/admin/api-keys`);
  assert.ok(!(await page.content()).includes(key), 'the secret is not shown again');
  const row = page.locator('tbody tr', { hasText: 'reporting job' });
  page.once('dialog', (d) => d.accept());
  await row.locator('button:has-text("Revoke")').click();
  await page.waitForURL(/done=revoke/);
  assert.match(await row.textContent(), /revoked/);
  assert.equal((await listLicenses(key)).status, 401, 'a revoked key is refused at once');

  await page.goto(`${base}/admin/audit?action=api_key.`);
  const rows = await page.locator('tbody tr').allTextContents();
  for (const action of ['api_key.create', 'api_key.revoke']) {
    assert.ok(rows.some((r) => r.includes(action) && r.includes('staff:stf_')), rows.join('\n'));
  }
  await page.context().close();
});

test('an admin creates a viewer, who signs in; disabling them ends their session at once', async () => {
  const admin = await adminPage();
  await admin.click('nav >> text=Staff');
  await admin.waitForURL(`${base}/admin/staff`);
  await check(admin, 'staff');
  await admin.fill('#email', 'new.viewer@nectar.test');
  await admin.fill('#name', 'New Viewer');
  await admin.selectOption('#role', 'viewer');
  await admin.click('main button:has-text("Create staff user")');
  await admin.waitForSelector('#staff-password');
  const password = (await admin.textContent('#staff-password')).trim();
  secrets.push(password);
  await check(admin, 'staff-password-once');

  const viewer = await newPage();
  await signIn(viewer, { email: 'new.viewer@nectar.test', password });
  await viewer.waitForURL(`${base}/admin/`);
  assert.equal(await viewer.locator('nav >> text=Staff').count(), 0, 'a viewer has no staff link');
  assert.equal((await viewer.goto(`${base}/admin/staff`)).status(), 403);

  await admin.click('text=Go to New Viewer');
  await admin.waitForURL(/\/admin\/staff\/stf_/);
  await check(admin, 'staff-user');
  admin.once('dialog', (d) => d.accept());
  await admin.click('main button:has-text("Disable")');
  await admin.waitForURL(/done=disable/);
  await viewer.goto(`${base}/admin/licenses`);
  assert.match(viewer.url(), /\/admin\/login$/, 'the disabled viewer is out at once');
  await signIn(viewer, { email: 'new.viewer@nectar.test', password });
  assert.match(viewer.url(), /\/admin\/login$/);
  await viewer.context().close();
  await admin.context().close();
});

test('TOTP: enrol with a code, sign out, sign in with a fresh code; a wrong code is refused', async () => {
  const page = await newPage();
  const user = users['otp@nectar.test'];
  await signIn(page, user);
  await page.waitForURL(`${base}/admin/`);
  await page.click('header a[href="/admin/account"]');
  await check(page, 'account');
  await page.click('button:has-text("Set up two-step sign-in")');
  await page.waitForSelector('#totp-secret');
  const totpSecret = (await page.textContent('#totp-secret')).trim();
  secrets.push(totpSecret);
  assert.match(await page.textContent('#totp-uri'), /^otpauth:\/\/totp\/.*secret=[A-Z2-7]{32}&issuer=/);
  await check(page, 'totp-setup');
  await page.fill('#code', totp(totpSecret, Date.now() / 1000));
  await page.click('main button:has-text("Turn on two-step sign-in")');
  await page.waitForURL(/done=totp-on/);
  assert.equal((await page.textContent('#totp-status')).trim(), 'on');

  await page.click('button:has-text("Sign out")');
  await page.waitForURL(`${base}/admin/login`);
  await signIn(page, user);
  assert.match(await page.textContent('[role=alert]'), /not right/, 'no code: refused');
  const now = Date.now() / 1000;
  const wrong = String((Number(totp(totpSecret, now)) + 500_000) % 1_000_000).padStart(6, '0');
  await signIn(page, user, wrong);
  assert.match(await page.textContent('[role=alert]'), /not right/, 'a wrong code: refused');
  // The enrolment's code is used up; the next step's code is within the ±1 step window.
  const code = totp(totpSecret, Date.now() / 1000, 1);
  await signIn(page, user, code);
  await page.waitForURL(`${base}/admin/`);
  await page.click('button:has-text("Sign out")');
  await page.waitForURL(`${base}/admin/login`);
  // (A used code refused on its second try is the router test's: five sign-ins per account.)

  // Lockout recovery from the command line; the user signs in with the password alone.
  nls(['staff', 'disable-totp', '--email', 'otp@nectar.test']);
  await signIn(page, user);
  await page.waitForURL(`${base}/admin/`);
  await page.context().close();
});

test('the System page shows the store, the signing key, pushes, the renewals run and the version', async () => {
  const page = await adminPage();
  await page.click('nav >> text=System');
  await page.waitForURL(`${base}/admin/system`);
  assert.match(await page.textContent('#store-status'), /yes/);
  const jwks = await (await fetch(`${base}/.well-known/jwks.json`)).json();
  const kid = jwks.keys[0].kid;
  assert.match(await page.textContent('#signing-keys'), new RegExp(`${kid} \\(current\\)`));
  assert.match(await page.textContent('#version'), /^NLS \d+\.\d+\.\d+/);
  await check(page, 'system');
  await page.context().close();
});

test('no secret ever travelled in a URL', () => {
  assert.ok(requestedUrls.length > 10, `only ${requestedUrls.length} requests seen`);
  for (const url of requestedUrls) {
    const decoded = decodeURIComponent(url);
    for (const s of secrets) assert.ok(!decoded.includes(s), `a secret in ${url}`);
  }
});
