// The license list in real Chromium against the real `nls serve`: a filter and a header sort
// served by the store's search, bulk renewal of three licenses from the filtered list, the
// same form posted again applying nothing, and each renewal in the audit log. Every page is
// scanned by axe-core. Run by tests/portal/run.sh (which builds nls and sets NLS_BIN).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkPage, launchChromium, signedInPage, startNlsServe, stopNlsServe } from './portal_harness.mjs';

const NLS_BIN = process.env.NLS_BIN;
const WORK = mkdtempSync(join(tmpdir(), 'nls-portal-list-'));
const SHOTS = process.env.NLS_PORTAL_SCREENSHOTS || join(WORK, 'screenshots');

let server, base, dataDir, browser;
const billing = { email: 'billing@nectar.test', password: randomBytes(16).toString('hex') };

before(async () => {
  assert.ok(NLS_BIN, 'NLS_BIN must name the nls binary (tests/portal/run.sh sets it)');
  mkdirSync(SHOTS, { recursive: true });
  dataDir = join(WORK, 'data');
  ({ server, base } = await startNlsServe({ bin: NLS_BIN, workDir: WORK, dataDir }));
  const made = spawnSync(NLS_BIN, ['staff', 'create', '--email', billing.email, '--name', 'Bill Ing',
    '--role', 'billing', '--data-dir', dataDir], { input: `${billing.password}\n${billing.password}\n`, encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await stopNlsServe(server);
});

async function check(page, name) {
  await checkPage(page, name, SHOTS);
}

const day = (offset) => new Date(Date.now() + offset * 86400000).toISOString().slice(0, 10);

/** Creates a license with the wizard; returns its id. */
async function createLicense(page, customerId, tier, expiresOn) {
  await page.goto(`${base}/admin/licenses/new?customer_id=${customerId}`);
  await page.fill('#tier', tier);
  await page.fill('#expires_on', expiresOn);
  await page.click('main button[type=submit]');
  await page.waitForSelector('#license-key');
  await page.click('text=Go to the license');
  await page.waitForURL(/\/admin\/licenses\/lic_/);
  return page.url().split('/').pop();
}

const listedIds = (page) => page.locator('input[name=license]').evaluateAll((boxes) => boxes.map((b) => b.value));

test('bulk-renew three licenses from a filtered, sorted list; a re-post applies nothing; each renewal is audited', async () => {
  const page = await signedInPage(browser, base, billing);
  const context = page.context();

  await page.goto(`${base}/admin/customers/new`);
  await page.fill('#name', 'Bulk Buyers');
  await page.fill('#email', 'ops@bulk.test');
  await page.click('main button[type=submit]');
  await page.waitForURL(/\/admin\/customers\/cus_/);
  const customerId = page.url().split('/').pop().split('?')[0];
  // Three in the tier the filter picks (expiring in 40, 20 and 60 days), one that it leaves out.
  const ids = [];
  for (const days of [40, 20, 60]) ids.push(await createLicense(page, customerId, 'bulk-tier', day(days)));
  const other = await createLicense(page, customerId, 'other-tier', day(10));

  // The filter: only the tier's three, newest first.
  await page.goto(`${base}/admin/licenses`);
  await page.fill('#tier', 'bulk-tier');
  await page.click('form.filters button[type=submit]');
  await page.waitForURL(/tier=bulk-tier/);
  assert.deepEqual(await listedIds(page), [...ids].reverse());
  assert.ok(!(await listedIds(page)).includes(other));
  // Sorting: the Expires header link, ascending, then descending; the filter stays.
  await page.click('th a[data-sort=expires_at]');
  await page.waitForURL(/sort=expires_at&dir=asc/);
  assert.match(page.url(), /tier=bulk-tier/);
  assert.deepEqual(await listedIds(page), [ids[1], ids[0], ids[2]], 'soonest expiry first');
  assert.equal(await page.getAttribute('th[aria-sort]', 'aria-sort'), 'ascending');
  await check(page, 'licenses-sorted');
  await page.click('th a[data-sort=expires_at]');
  await page.waitForURL(/dir=desc/);
  assert.deepEqual(await listedIds(page), [ids[2], ids[0], ids[1]]);

  // Select the three and renew them by 30 days.
  for (const id of ids) await page.check(`#select-${id}`);
  await page.selectOption('#bulk-action', 'renew');
  await page.fill('#bulk-days', '30');
  const posted = await page.evaluate(() => [...new FormData(document.getElementById('bulk'))]);
  await page.click('form#bulk button[type=submit]');
  await page.waitForSelector('#bulk-summary');
  assert.equal((await page.textContent('#bulk-summary')).trim(), '3 applied, 0 already applied by this form, 0 failed.');
  assert.equal(await page.locator('#bulk-results tr[data-outcome=applied]').count(), 3);
  await check(page, 'licenses-bulk-result');

  // The very same form posted again (what a reload or a double click sends): nothing twice.
  await Promise.all([page.waitForNavigation(), page.evaluate((fields) => {
    const form = document.createElement('form');
    form.method = 'post';
    form.action = '/admin/licenses/bulk';
    for (const [name, value] of fields) {
      const input = document.createElement('input');
      input.type = 'hidden';
      input.name = name;
      input.value = value;
      form.append(input);
    }
    document.body.append(form);
    form.submit();
  }, posted)]);
  await page.waitForSelector('#bulk-summary');
  assert.equal((await page.textContent('#bulk-summary')).trim(), '0 applied, 3 already applied by this form, 0 failed.');

  // Each expiry moved by 30 days, once.
  await page.goto(`${base}/admin/licenses?tier=bulk-tier&sort=expires_at&dir=asc`);
  const expiries = await page.locator('tbody tr td:last-child').allTextContents();
  assert.deepEqual(expiries.map((t) => t.trim()), [day(50), day(70), day(90)]);

  // The audit log has exactly one renewal per license, by the staff user.
  await page.goto(`${base}/admin/audit?action=license.renew`);
  const rows = await page.locator('tbody > tr').allTextContents();
  for (const id of ids) {
    const mine = rows.filter((r) => r.includes(id));
    assert.equal(mine.length, 1, `one renewal of ${id}: ${rows.join('\n')}`);
    assert.match(mine[0], /staff:stf_/);
  }
  await check(page, 'audit-bulk-renewals');
  await context.close();
});
