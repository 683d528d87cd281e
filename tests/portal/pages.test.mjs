// The license detail actions, customer pages, dashboard and renewal pipeline in real Chromium
// against the real `nls serve` (its own server and data dir, with a priced plan catalogue and
// the default outbox mailer). Each page visited is scanned by axe-core (no serious or critical
// violation), logs no console error, and is screenshotted. Run by tests/portal/run.sh.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createHmac, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkPage, launchChromium, signedInPage, startNlsServe, stopNlsServe } from './portal_harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const NLS_BIN = process.env.NLS_BIN;
const WORK = mkdtempSync(join(tmpdir(), 'nls-portal-pages-'));
const SHOTS = process.env.NLS_PORTAL_SCREENSHOTS || join(WORK, 'screenshots');
// The price of the Stripe fixtures (shared/tests/fixtures/stripe), with a monthly amount.
const PLANS = { plans: [{ stripe_price: 'price_1QproMonthlyNLS', tier: 'pro', features: ['sso'],
  max_deployments: 10, amount: 4900, currency: 'eur' }] };
const FIXTURES = join(here, '../../shared/tests/fixtures/stripe');
const WEBHOOK_SECRET = `whsec_${randomBytes(16).toString("hex")}`;

const secret = () => randomBytes(12).toString('hex');

let server, base, dataDir, browser;
const users = {};

function staff(role) {
  const email = `${role}@nectar.test`;
  const password = secret() + secret();
  const r = spawnSync(NLS_BIN, ['staff', 'create', '--email', email, '--name', `${role} tester`, '--role', role,
    '--data-dir', dataDir], { input: `${password}\n${password}\n`, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  users[role] = { email, password };
}

before(async () => {
  assert.ok(NLS_BIN, 'NLS_BIN must name the nls binary (tests/portal/run.sh sets it)');
  mkdirSync(SHOTS, { recursive: true });
  dataDir = join(WORK, 'data');
  const plansFile = join(WORK, 'plans.json');
  writeFileSync(plansFile, JSON.stringify(PLANS));
  ({ server, base } = await startNlsServe({ bin: NLS_BIN, workDir: WORK, dataDir, env: { NLS_PLANS_FILE: plansFile, NLS_STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET } }));
  for (const role of ['admin', 'billing', 'support', 'viewer']) staff(role);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await stopNlsServe(server);
  console.log(`screenshots: ${SHOTS}`);
});

/** A signed-in page of its own context that records console errors and accepts confirms. */
async function signedIn(role) {
  const page = await signedInPage(browser, base, users[role], { acceptDownloads: true });
  page.on('dialog', (d) => d.accept());
  return page;
}

/** axe-core on the current page, no console error so far, and a screenshot named `name`. */
async function check(page, name) {
  await checkPage(page, name, SHOTS);
}

async function validate(key, deploymentId) {
  const r = await fetch(`${base}/v1/licenses/validate`, {
    method: 'POST', body: JSON.stringify({ key, deployment_id: deploymentId }),
  });
  assert.equal(r.status, 200);
  return (await r.json()).code;
}

/** A customer and a license through the portal's forms; returns { licenseId, key, customerUrl }. */
async function customerWithLicense(page, name, email, expiresOn) {
  await page.goto(`${base}/admin/customers/new`);
  await page.fill('#name', name);
  await page.fill('#email', email);
  await page.click('main button[type=submit]');
  await page.waitForURL(/\/admin\/customers\/cus_/);
  const customerUrl = page.url().split('?')[0];
  await page.click('text=New license for this customer');
  await page.fill('#tier', 'pro');
  await page.fill('#features', 'sso');
  await page.fill('#limits', 'workflow_runs=10000');
  await page.fill('#max_deployments', '3');
  if (expiresOn) await page.fill('#expires_on', expiresOn);
  await page.click('main button[type=submit]');
  await page.waitForSelector('#license-key');
  const key = (await page.textContent('#license-key')).trim();
  await page.click('text=Go to the license');
  await page.waitForURL(/\/admin\/licenses\/lic_/);
  return { licenseId: page.url().split('/').pop(), key, customerUrl };
}

/** Delivers a Stripe fixture event, signed as Stripe does; returns the HTTP status. */
async function deliverStripe(fixture) {
  const body = readFileSync(join(FIXTURES, `${fixture}.json`), 'utf8');
  const t = Math.floor(Date.now() / 1000);
  const v1 = createHmac('sha256', WEBHOOK_SECRET).update(`${t}.${body}`).digest('hex');
  const r = await fetch(`${base}/v1/webhooks/stripe`, {
    method: 'POST', body, headers: { 'stripe-signature': `t=${t},v1=${v1}`, 'content-type': 'application/json' },
  });
  return r.status;
}

const inDays = (n) => new Date(Date.now() + n * 86400e3).toISOString().slice(0, 10);
let acme;

test('support releases a deployment, resends the key email and downloads an offline file', async () => {
  const admin = await signedIn('admin');
  acme = await customerWithLicense(admin, 'Acme Robotics', 'ops@acme.test', inDays(10));
  await admin.context().close();
  assert.equal(await validate(acme.key, 'host-a'), 'VALID');
  assert.equal(await validate(acme.key, 'host-b'), 'VALID');
  // Usage for the chart.
  const usage = await fetch(`${base}/v1/usage`, {
    method: 'POST',
    body: JSON.stringify({ key: acme.key, deployment_id: 'host-a', batch_id: 'b-1',
      records: [{ metric: 'workflow_runs', value: 1234, at: new Date().toISOString() }] }),
  });
  assert.equal(usage.status, 202);

  const page = await signedIn('support');
  await page.goto(`${base}/admin/licenses/${acme.licenseId}`);
  assert.match(await page.textContent('main'), /NLS keeps only the key's id/);
  assert.equal(await page.locator('figure.chart > svg').count(), 1, 'a usage chart for workflow_runs');
  await check(page, 'license-detail-deployments');
  await page.click('button[aria-label="Release deployment host-a"]');
  await page.waitForURL(/done=release/);
  assert.match(await page.textContent('.notice'), /Deployment released/);
  // The store forgets a released seat (SQLite deletes it): host-a is no longer live.
  const rows = await page.locator('#deployments tbody tr').allTextContents();
  assert.ok(!rows.some((r) => r.includes('host-a') && r.includes('live')), rows.join('\n'));
  assert.ok(rows.some((r) => r.includes('host-b') && r.includes('live')), rows.join('\n'));
  assert.match(await page.textContent('main'), /license\.deployment_release/);

  await page.click('button:has-text("Resend key email")');
  await page.waitForURL(/done=resend/);
  const outbox = readdirSync(join(dataDir, 'outbox'));
  assert.equal(outbox.length, 1, 'the outbox mailer wrote the email');
  assert.match(readFileSync(join(dataDir, 'outbox', outbox[0]), 'utf8'), /ops@acme\.test/);
  assert.match(await page.textContent('#notifications'), /key_delivery/);

  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.click('button:has-text("Download offline license file")'),
  ]);
  assert.equal(download.suggestedFilename(), `${acme.licenseId}.nls-offline.json`);
  const file = JSON.parse(readFileSync(await download.path(), 'utf8'));
  assert.equal(file.format, 'nls-offline-license/1');
  assert.ok(file.token.split('.').length === 3, 'a JWS');
  await page.context().close();
});

test('billing toggles the reminder opt-out and edits the customer; support sees neither', async () => {
  assert.ok(acme, 'needs the license of the first test');
  const support = await signedIn('support');
  await support.goto(acme.customerUrl);
  assert.equal(await support.locator('text=Turn renewal reminders off').count(), 0);
  await support.context().close();

  const page = await signedIn('billing');
  await page.goto(acme.customerUrl);
  assert.match(await page.textContent('#communication-log'), /key_delivery/);
  await page.click('button:has-text("Turn renewal reminders off")');
  await page.waitForURL(/done=reminders-off/);
  assert.match(await page.textContent('#reminders'), /opted out/);
  await check(page, 'customer-detail');
  await page.click('text=Edit customer');
  await page.waitForURL(/\/edit$/);
  await check(page, 'customer-edit');
  await page.fill('#name', 'Acme Robotics GmbH');
  await page.fill('#stripe_customer_id', 'cus_TESTstripe');
  await page.click('main button[type=submit]');
  await page.waitForURL(/done=edit/);
  assert.equal(await page.textContent('h1'), 'Acme Robotics GmbH');
  assert.equal(await page.getAttribute('a[href^="https://dashboard.stripe.com/customers/"]', 'href'),
    'https://dashboard.stripe.com/customers/cus_TESTstripe');
  await page.goto(`${base}/admin/audit?action=customer.update`);
  assert.match(await page.textContent('tbody'), /staff:stf_/);
  await page.context().close();
});

test('the dashboard charts validations by code and shows revenue, deployments and past due', async () => {
  // A Stripe subscription on the priced plan that then fails to pay: revenue and past due.
  for (const event of ['customer.subscription.created', 'customer.subscription.updated.past_due']) {
    assert.equal(await deliverStripe(event), 200, event);
  }
  // A delivery with a bad signature: a failed webhook delivery.
  const forged = await fetch(`${base}/v1/webhooks/stripe`, { method: 'POST', body: '{}', headers: { 'stripe-signature': 't=1,v1=00' } });
  assert.equal(forged.status, 400);
  const page = await signedIn('viewer');
  assert.match(await page.textContent('#revenue'), /pro\s*1\s*49\.00 EUR/);
  assert.equal(await page.locator('#past-due tbody tr').count(), 1);
  assert.match(await page.textContent('#failed-webhooks'), /^\s*1\s*failed webhook/);
  const chart = page.locator('#validations-chart > svg');
  assert.equal(await chart.count(), 1);
  assert.match(await page.textContent('#validations-chart'), /VALID/);
  assert.match(await page.textContent('#active-deployments'), /^\s*1\s*active deployments/);
  await check(page, 'dashboard-charts');
  await page.context().close();
});

test('the renewal pipeline lists the license under its week with the notices sent', async () => {
  const page = await signedIn('viewer');
  await page.click('nav >> text=Renewals');
  await page.waitForURL(`${base}/admin/renewals`);
  const weeks = await page.locator('section.week').allTextContents();
  const week = weeks.find((w) => w.includes(acme.licenseId));
  assert.ok(week, weeks.join('\n'));
  assert.match(week, /Acme Robotics GmbH/);
  assert.match(week, /\(no reminders\)/);
  await check(page, 'renewal-pipeline');
  await page.context().close();
});
