// The compliance sections (issue 12) in real Chromium against the real `nls serve`: a license
// validated through the public API from five machines and five client addresses (named by the
// edge's trusted forwarded-address header, with its service token) while it has one seat gets
// real flags; the license page shows them with their evidence, as `GET /v1/licenses/{id}/compliance`
// reports them; the dashboard lists the license (and not an unflagged one). Each page is
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
const WORK = mkdtempSync(join(tmpdir(), 'nls-portal-compliance-'));
const SHOTS = process.env.NLS_PORTAL_SCREENSHOTS || join(WORK, 'screenshots');
const ADMIN_KEY = `portal-compliance-admin-${randomBytes(16).toString('hex')}`;
const viewer = { email: 'viewer@nectar.test', password: randomBytes(16).toString('hex') };
// `nls serve`'s defaults: a day is flagged past max_deployments × 3 distinct fingerprints or
// client addresses, and at 3 refusals of one kind.
const SHARING_FACTOR = 3;
const REPEATED_REFUSALS = 3;
const MACHINES = 5;

let server, base, browser;

before(async () => {
  assert.ok(NLS_BIN, 'NLS_BIN must name the nls binary (tests/portal/run.sh sets it)');
  mkdirSync(SHOTS, { recursive: true });
  const dataDir = join(WORK, 'data');
  ({ server, base } = await startNlsServe({ bin: NLS_BIN, workDir: WORK, dataDir, env: { NLS_BOOTSTRAP_ADMIN_KEY: ADMIN_KEY } }));
  const made = spawnSync(NLS_BIN, ['staff', 'create', '--email', viewer.email, '--name', 'Vera Viewer',
    '--role', 'viewer', '--data-dir', dataDir], { input: `${viewer.password}\n${viewer.password}\n`, encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await stopNlsServe(server);
});

async function api(method, path, body, headers = { authorization: `Bearer ${ADMIN_KEY}` }) {
  const r = await fetch(base + path, {
    method, headers: { ...headers, 'content-type': 'application/json' }, body: body && JSON.stringify(body),
  });
  const json = await r.json();
  assert.ok(r.status < 300, `${method} ${path} → ${r.status} ${JSON.stringify(json)}`);
  return json;
}

async function issueLicense(customerId) {
  const created = await api('POST', '/v1/licenses', { customer_id: customerId, max_deployments: 1 });
  return { id: created.license.id, key: created.key };
}

test('a license validated from more machines than its seats allow is flagged on its page, with evidence, and on the dashboard', async () => {
  const { customer } = await api('POST', '/v1/customers', { name: 'Sharing Co', email: 'it@sharing.test' });
  const shared = await issueLicense(customer.id);
  const quiet = await issueLicense(customer.id);
  const edgeToken = (await api('POST', '/v1/api-keys', { name: 'edge service token', scopes: ['edge'] })).secret;

  // One seat, five machines: each validates from its own address, as an edge forwards it.
  const codes = [];
  for (let i = 1; i <= MACHINES; i++) {
    const answer = await api('POST', '/v1/licenses/validate',
      { key: shared.key, deployment_id: `host-${i}`, fingerprint: `fp-machine-${i}` },
      { 'x-nls-client-ip': `203.0.113.${i}`, 'x-nls-edge-token': edgeToken });
    codes.push(answer.code);
  }
  assert.deepEqual(codes, ['VALID', ...Array(MACHINES - 1).fill('TOO_MANY_DEPLOYMENTS')]);
  // The other license is used as its seat allows: one machine.
  for (let i = 0; i < 3; i++) {
    assert.equal((await api('POST', '/v1/licenses/validate', { key: quiet.key, deployment_id: 'only-host' })).code, 'VALID');
  }

  // The API's view of the day (reading it flushes the origin's own events first).
  const { items } = await api('GET', `/v1/licenses/${shared.id}/compliance`);
  assert.equal(items.length, 1, JSON.stringify(items));
  const [record] = items;
  const day = record.day; // today (UTC), unless the run straddled midnight
  assert.match(day, /^\d{4}-\d{2}-\d{2}$/);
  assert.equal(record.flagged, true);
  const expectedFlags = [
    { kind: 'too_many_fingerprints', observed: MACHINES, threshold: SHARING_FACTOR },
    { kind: 'too_many_client_ips', observed: MACHINES, threshold: SHARING_FACTOR },
    { kind: 'repeated_too_many_deployments', observed: MACHINES - 1, threshold: REPEATED_REFUSALS },
  ];
  assert.deepEqual(record.flags, expectedFlags);
  assert.deepEqual(record.evidence.validations_by_code, { TOO_MANY_DEPLOYMENTS: MACHINES - 1, VALID: 1 });
  assert.equal((await api('GET', `/v1/licenses/${quiet.id}/compliance`)).items[0]?.flagged, false);

  const page = await signedInPage(browser, base, viewer);
  const context = page.context();

  // The dashboard lists the flagged license, not the other one, and links to its flags.
  const rows = page.locator('#flagged-licenses tbody tr');
  assert.equal(await rows.count(), 1);
  const cells = (await rows.first().locator('td').allTextContents()).map((t) => t.trim());
  assert.deepEqual(cells, [shared.id, day,
    'More machine fingerprints than seats allow; More client addresses than seats allow; Repeated TOO_MANY_DEPLOYMENTS refusals', '1']);
  assert.equal(await page.locator(`#flagged-licenses a[href="/admin/licenses/${quiet.id}#compliance"]`).count(), 0);
  await checkPage(page, 'dashboard-flagged-licenses', SHOTS);

  // The license page: the day's flags with observed and threshold, the counts, and the values seen.
  await page.click(`#flagged-licenses a[href="/admin/licenses/${shared.id}#compliance"]`);
  await page.waitForURL(`${base}/admin/licenses/${shared.id}#compliance`);
  const section = page.locator('section#compliance');
  const flagRows = await section.locator('table.compliance-flags tbody tr').evaluateAll((trs) =>
    trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim())));
  assert.deepEqual(flagRows, [
    ['More machine fingerprints than seats allow', String(MACHINES), String(SHARING_FACTOR)],
    ['More client addresses than seats allow', String(MACHINES), String(SHARING_FACTOR)],
    ['Repeated TOO_MANY_DEPLOYMENTS refusals', String(MACHINES - 1), String(REPEATED_REFUSALS)],
  ]);
  const facts = await section.locator('dl.facts').evaluate((dl) => Object.fromEntries(
    [...dl.querySelectorAll('dt')].map((dt) => [dt.textContent.trim(), dt.nextElementSibling.textContent.trim()])));
  assert.match(facts.Validations, new RegExp(`^${MACHINES}\\b`));
  assert.match(facts.Validations, new RegExp(`TOO_MANY_DEPLOYMENTS=${MACHINES - 1}`));
  assert.equal(facts['Distinct fingerprints'], String(MACHINES));
  assert.equal(facts['Distinct client IPs'], String(MACHINES));
  assert.equal(facts['Distinct countries'], '0');
  const evidence = await section.locator('table.compliance-evidence tbody tr').evaluateAll((trs) =>
    trs.map((tr) => [...tr.querySelectorAll('td')].slice(0, 3).map((td) => td.textContent.trim())));
  for (let i = 1; i <= MACHINES; i++) {
    assert.ok(evidence.some((r) => r[0] === 'Client IP' && r[1] === `203.0.113.${i}` && r[2] === '1'), JSON.stringify(evidence));
    assert.ok(evidence.some((r) => r[0] === 'Fingerprint' && r[1] === `fp-machine-${i}` && r[2] === '1'), JSON.stringify(evidence));
  }
  // The service's own address never stands in for a forwarded caller.
  assert.ok(!evidence.some((r) => r[0] === 'Client IP' && r[1] === '127.0.0.1'), JSON.stringify(evidence));
  await checkPage(page, 'license-compliance-flags', SHOTS);

  // The unflagged license's page says so.
  await page.goto(`${base}/admin/licenses/${quiet.id}`);
  assert.equal(await page.locator('section#compliance table.compliance-flags').count(), 0);
  assert.match(await page.locator('section#compliance').textContent(), /No flags in the last 30 days/);
  await context.close();
});
