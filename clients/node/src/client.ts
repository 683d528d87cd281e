// The Node license client: the same decisions as the Rust client (receipt checks, the
// offline/grace state machine, clock-rollback detection, answer classification) come from
// nls-client-core compiled to wasm; this file only does the I/O (fetch, files, timers).

import * as fs from "node:fs";
import * as path from "node:path";

import { readOptional, randomId, writeAtomic } from "./durable";
import { UsageSpool, type SealedBatch } from "./spool";
import type { AnswerOutcome, ClientOptions, FleetUsage, FlushReport, LicenseState, LimitCheck, UsageRecord, UsageStanding } from "./types";
import { toFleetUsage, toLimitCheck, toOutcome, toStanding, toState, warningOf } from "./wire";
import {
  AccessTokenError,
  MIN_REMAINING_MS,
  REFRESH_BEFORE_EXPIRY_MS,
  parseAccessTokenReply,
  type AccessToken,
} from "./access_tokens";
// eslint-disable-next-line @typescript-eslint/no-require-imports
import wasm = require("../wasm-pkg/nls_client_wasm");

const CACHE_FILE = "license-cache.json";
const DEPLOYMENT_FILE = "deployment-id";
const COUNTERS_FILE = "usage-month.json";
/** The seat lease as the last heartbeat stated it, for `nectar-license status` (same format as the Rust client's). */
const LEASE_FILE = "deployment-lease.json";
const TICK_MS = 30_000;

interface Reply {
  status: number;
  body: string;
  /** The server's `Date` header, in unix seconds, when it sent a readable one. */
  dateSecs: number | null;
}

const periodOf = (d: Date) => `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;

export class LicenseClient {
  private readonly core: wasm.LicenseCore;
  private readonly spool: UsageSpool;
  private readonly now: () => Date;
  private readonly log: { warn(msg: string): void; error(msg: string): void };
  private month: { period: string; counters: Record<string, number> };
  /** Spooled, not yet acknowledged: "period\u0000metric" → sum (no file read on a check). */
  private spooled = new Map<string, number>();
  private timers = new Set<NodeJS.Timeout>();
  private stopped = false;
  private validationFailures = 0;
  private flushFailures = 0;
  private flushing: Promise<FlushReport> | null = null;
  private accessTokens = new Map<string, AccessToken>();
  private accessFetches = new Map<string, Promise<AccessToken>>();
  readonly deploymentId: string;

  private constructor(private readonly options: ClientOptions) {
    this.now = options.clock ?? (() => new Date());
    this.log = options.logger ?? { warn: (m) => console.warn(m), error: (m) => console.error(m) };
    const jwks = typeof options.jwks === "string" ? options.jwks : JSON.stringify(options.jwks);
    fs.mkdirSync(options.dataDir, { recursive: true });
    const key =
      options.licenseKey && options.licenseKey.trim() !== ""
        ? options.licenseKey
        : options.offlineFile
          ? wasm.keyFromOfflineFile(jwks, options.offlineFile)
          : "";
    this.core = new wasm.LicenseCore(jwks, key, options.rollbackToleranceSeconds ?? null);
    const cache = readOptional(path.join(options.dataDir, CACHE_FILE));
    if (cache !== null) {
      const ignored = this.core.loadCache(cache, this.secs());
      if (ignored) this.log.warn(`nls: the cached license receipt is ignored: ${ignored}`);
    }
    if (options.offlineFile) {
      this.core.loadOfflineFile(options.offlineFile, options.fingerprint ?? null, this.secs());
    }
    this.deploymentId = options.deploymentId ?? this.loadDeploymentId();
    this.spool = new UsageSpool(path.join(options.dataDir, "usage"));
    this.month = this.loadMonth();
    for (const r of this.spool.pending()) this.addSpooled(r, r.value);
    this.persist();
  }

  /** Opens the client without any network call or timer. */
  static open(options: ClientOptions): LicenseClient {
    return new LicenseClient(options);
  }

  /**
   * Opens the client, validates once (an unreachable server is fine: offline mode), and starts
   * the background timers (check-ins with jitter, heartbeats, usage reporting).
   */
  static async start(options: ClientOptions): Promise<LicenseClient> {
    const client = new LicenseClient(options);
    if (client.online) {
      const outcome = await client.validateNow();
      client.scheduleValidation(outcome);
      client.scheduleHeartbeat(0);
      client.scheduleFlush(options.usageFlushIntervalMs ?? 60_000);
    }
    client.every(TICK_MS, () => client.persist());
    client.logState();
    return client;
  }

  private get online(): boolean {
    return !!this.options.serverUrl;
  }

  private secs(): number {
    return Math.floor(this.now().getTime() / 1000);
  }

  get licenseId(): string | undefined {
    return this.core.licenseId();
  }

  /** The license state now. Cheap: no I/O. */
  state(): LicenseState {
    return toState(this.core.state(this.secs()));
  }

  /** The banner text for the current state, if any. */
  warning(): string | null {
    return warningOf(this.state());
  }

  hasFeature(feature: string): boolean {
    return this.core.hasFeature(feature, this.secs());
  }

  /**
   * Whether `amount` more of `metric` fits this month's limit, counting the fleet-wide total
   * from the last answer (every deployment's reports) plus what this process has reported
   * since or spooled but not yet delivered (`usageStanding`). No I/O.
   */
  checkLimit(metric: string, amount = 1): LimitCheck {
    return toLimitCheck(this.core.checkLimit(metric, amount, this.usageStanding(metric).used, this.secs()));
  }

  /** The numbers behind the limit check for `metric` this month. */
  usageStanding(metric: string): UsageStanding {
    const period = periodOf(this.now());
    const spooled = this.spooled.get(`${period}\u0000${metric}`) ?? 0;
    return toStanding(this.core.usageStanding(metric, period, spooled, this.usedThisMonth(metric)));
  }

  /** The newest fleet-wide usage the server sent (answer or receipt), if any. */
  fleetUsage(): FleetUsage | null {
    const json = this.core.fleetUsage();
    return json === undefined ? null : toFleetUsage(json);
  }

  private addSpooled(r: UsageRecord, delta: number): void {
    const slot = `${periodOf(new Date(r.at))}\u0000${r.metric}`;
    const sum = Math.max(0, (this.spooled.get(slot) ?? 0) + delta);
    if (sum === 0) this.spooled.delete(slot);
    else this.spooled.set(slot, sum);
  }

  usedThisMonth(metric: string): number {
    return this.month.period === periodOf(this.now()) ? (this.month.counters[metric] ?? 0) : 0;
  }

  /** Records usage durably (fsync'd to the spool) before returning. */
  recordUsage(metric: string, value = 1): void {
    const at = this.now();
    const record = { metric, value, at: at.toISOString() };
    this.spool.append(record);
    this.addSpooled(record, value);
    const period = periodOf(at);
    if (this.month.period !== period) this.month = { period, counters: {} };
    this.month.counters[metric] = (this.month.counters[metric] ?? 0) + value;
  }

  /**
   * A cloud access token for `audience`, cached until shortly before it expires (then the cached
   * one is still returned while its successor is fetched in the background). Rejects with an
   * `AccessTokenError` (kind `unreachable` when NLS cannot be reached: fall back to the app's
   * basic features).
   */
  async accessToken(audience: string): Promise<AccessToken> {
    const cached = this.accessTokens.get(audience);
    const left = cached ? cached.expiresAt.getTime() - this.now().getTime() : 0;
    if (cached && left > MIN_REMAINING_MS) {
      if (left <= REFRESH_BEFORE_EXPIRY_MS) {
        this.fetchAccessToken(audience).catch((e) => this.log.warn(`nls: access token refresh failed: ${(e as Error).message}`));
      }
      return cached;
    }
    return this.fetchAccessToken(audience);
  }

  /** Fetches a new token now (one request per audience at a time), replacing the cached one. */
  fetchAccessToken(audience: string): Promise<AccessToken> {
    const pending = this.accessFetches.get(audience);
    if (pending) return pending;
    const fetching = (async () => {
      if (!this.online) throw new AccessTokenError("no_server", "no NLS server is configured (air-gapped install)");
      const body = { key: this.core.licenseKey(), deployment_id: this.deploymentId, audience };
      let reply: Reply;
      try {
        reply = await this.request("POST", "/v1/access-tokens", body);
      } catch (e) {
        throw new AccessTokenError("unreachable", `NLS is unreachable: ${(e as Error).message}`);
      }
      const token = parseAccessTokenReply(reply.status, reply.body);
      this.accessTokens.set(audience, token);
      return token;
    })().finally(() => this.accessFetches.delete(audience));
    this.accessFetches.set(audience, fetching);
    return fetching;
  }

  /** Forgets the cached token for `audience` (say, after the service answered 401). */
  forgetAccessToken(audience: string): void {
    this.accessTokens.delete(audience);
  }

  /**
   * Meters one call the cloud service allowed: one unit of `cloud.<audience>.calls` through the
   * usage spool (counted once however often its batch is resent); the monthly quota is enforced
   * on it when the next token is issued.
   */
  recordCloudCall(audience: string): void {
    this.recordUsage(`cloud.${audience}.calls`, 1);
  }

  /** Usage records not yet acknowledged by the server. */
  pendingUsage(): UsageRecord[] {
    return this.spool.pending();
  }

  private async request(method: string, route: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
    const url = this.options.serverUrl!.replace(/\/+$/, "") + route;
    const response = await fetch(url, {
      method,
      headers: { "content-type": "application/json", "user-agent": "nls-client-node", ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(this.options.requestTimeoutMs ?? 10_000),
    });
    const date = response.headers.get("date");
    const parsed = date ? Date.parse(date) : NaN;
    return { status: response.status, body: await response.text(), dateSecs: Number.isNaN(parsed) ? null : Math.floor(parsed / 1000) };
  }

  /** Validates now; the state and the on-disk cache are updated. */
  async validateNow(): Promise<AnswerOutcome> {
    if (!this.online) return { outcome: "offline", why: "no server configured (air-gapped)" };
    const body: Record<string, unknown> = { key: this.core.licenseKey(), deployment_id: this.deploymentId };
    if (this.options.fingerprint) body.fingerprint = this.options.fingerprint;
    let outcome: AnswerOutcome;
    try {
      const reply = await this.request("POST", "/v1/licenses/validate", body);
      outcome = toOutcome(this.core.applyValidationResponse(reply.status, reply.body, this.secs()));
    } catch (e) {
      const why = `POST /v1/licenses/validate: ${(e as Error).message}`;
      this.core.recordUnreachable(why, this.secs());
      outcome = { outcome: "offline", why };
    }
    this.persist();
    return outcome;
  }

  /** Sends one heartbeat; validates at once when the server no longer holds the seat. */
  async heartbeatNow(): Promise<Date | null> {
    if (!this.online) return null;
    const body: Record<string, unknown> = { key: this.core.licenseKey(), deployment_id: this.deploymentId };
    if (this.options.appVersion) body.app_version = this.options.appVersion;
    const reply = await this.request("POST", "/v1/heartbeat", body);
    if (wasm.heartbeatNeedsValidation(reply.status, reply.body)) {
      await this.validateNow();
      return null;
    }
    if (reply.status < 200 || reply.status >= 300) throw new Error(`heartbeat answered HTTP ${reply.status}`);
    const beat = JSON.parse(reply.body);
    this.rememberLease(beat);
    const next = beat.next_heartbeat_at;
    return next ? new Date(next) : null;
  }

  /** Saves what a heartbeat answer said about this deployment's lease (advisory; best effort). */
  private rememberLease(beat: { deployment?: { lease_expires_at?: string }; next_heartbeat_at?: string; queued?: boolean }): void {
    const now = this.now().toISOString();
    const record = {
      deployment_id: this.deploymentId,
      lease_expires_at: beat.deployment?.lease_expires_at ?? null,
      last_heartbeat_at: now,
      next_heartbeat_at: beat.next_heartbeat_at ?? null,
      source: beat.queued ? "heartbeat_queued" : "heartbeat",
      recorded_at: now,
    };
    try {
      writeAtomic(path.join(this.options.dataDir, LEASE_FILE), JSON.stringify(record, null, 2));
    } catch (e) {
      this.log.warn(`nls: could not save the deployment lease: ${(e as Error).message}`);
    }
  }

  /**
   * Seals the open spool segment and sends every sealed batch, oldest first. A batch is deleted
   * only after the server's 202; a retry sends the same `batch_id`, counted once.
   */
  flushUsage(): Promise<FlushReport> {
    if (!this.flushing) {
      this.flushing = this.flushOnce().finally(() => {
        this.flushing = null;
      });
    }
    return this.flushing;
  }

  private async flushOnce(): Promise<FlushReport> {
    const report: FlushReport = { batchesSent: 0, recordsSent: 0, batchesRejected: 0, stopped: null };
    if (!this.online) return { ...report, stopped: "no server configured" };
    this.spool.seal();
    for (const batch of this.spool.sealed()) {
      if (batch.records.length === 0) {
        this.spool.ack(batch);
        continue;
      }
      const sent = await this.sendBatch(batch);
      if (typeof sent === "object" && "accepted" in sent) {
        // Counted as delivered until an answer shows it (compared at the server's Date).
        for (const r of batch.records) this.addSpooled(r, -r.value);
        this.core.noteDelivered(JSON.stringify(batch.records), sent.accepted ?? this.secs());
        this.spool.ack(batch);
        report.batchesSent++;
        report.recordsSent += batch.records.length;
      } else if (sent === "rejected") {
        for (const r of batch.records) this.addSpooled(r, -r.value);
        this.spool.reject(batch);
        report.batchesRejected++;
      } else {
        report.stopped = sent.retry;
        break;
      }
    }
    return report;
  }

  private async sendBatch(batch: SealedBatch): Promise<{ accepted: number | null } | "rejected" | { retry: string }> {
    const body = { key: this.core.licenseKey(), deployment_id: this.deploymentId, batch_id: batch.batchId, records: batch.records };
    let reply: Reply;
    try {
      reply = await this.request("POST", "/v1/usage", body);
    } catch (e) {
      return { retry: (e as Error).message };
    }
    if (reply.status >= 200 && reply.status < 300) return { accepted: reply.dateSecs };
    if (reply.status >= 500 || reply.status === 429 || reply.status === 408) return { retry: `HTTP ${reply.status}` };
    this.log.error(`nls: usage batch ${batch.batchId} refused (HTTP ${reply.status}: ${reply.body}); kept aside`);
    return "rejected";
  }

  /** Frees this deployment's seat now (instead of waiting for its lease to run out). */
  async releaseDeployment(): Promise<void> {
    if (!this.online) return;
    const reply = await this.request("DELETE", `/v1/deployments/${encodeURIComponent(this.deploymentId)}`, undefined, {
      "x-license-key": this.core.licenseKey(),
    });
    if (reply.status >= 300 && reply.status !== 404) throw new Error(`HTTP ${reply.status}: ${reply.body}`);
  }

  /**
   * Stops the timers (heartbeats stop), tries one last usage flush, and saves the cache.
   * Records that could not be sent stay in the spool for the next start.
   */
  async shutdown(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    if (this.online) {
      const report = await this.flushUsage();
      if (report.stopped) this.log.warn(`nls: usage left in the spool for the next start (${report.stopped})`);
    }
    this.persist();
    this.spool.close();
    this.core.free();
  }

  // ------------------------------------------------------------------------------------------
  // Timers

  private after(ms: number, task: () => Promise<void> | void): void {
    if (this.stopped) return;
    const timer = setTimeout(async () => {
      this.timers.delete(timer);
      if (this.stopped) return;
      try {
        await task();
      } catch (e) {
        this.log.warn(`nls: ${(e as Error).message}`);
      }
    }, ms);
    timer.unref();
    this.timers.add(timer);
  }

  private every(ms: number, task: () => void): void {
    this.after(ms, () => {
      task();
      this.every(ms, task);
    });
  }

  private scheduleValidation(outcome: AnswerOutcome): void {
    let delaySecs: number;
    if (outcome.outcome === "offline") {
      delaySecs = wasm.backoffDelaySeconds(this.validationFailures++, Math.random());
    } else {
      this.validationFailures = 0;
      const next = outcome.nextCheckIn ? outcome.nextCheckIn.getTime() / 1000 : this.secs() + 3600;
      delaySecs = wasm.nextCheckDelaySeconds(next, this.secs(), Math.random());
    }
    this.after(delaySecs * 1000, async () => {
      const o = await this.validateNow();
      this.logState();
      this.scheduleValidation(o);
    });
  }

  private scheduleHeartbeat(ms: number): void {
    this.after(ms, async () => {
      let next: number;
      try {
        const at = await this.heartbeatNow();
        next = this.options.heartbeatIntervalMs ?? (at ? Math.min(Math.max(at.getTime() - this.now().getTime(), 5000), 3_600_000) : 300_000);
      } catch (e) {
        this.log.warn(`nls: heartbeat failed: ${(e as Error).message}`);
        next = this.options.heartbeatIntervalMs ?? wasm.backoffDelaySeconds(2, Math.random()) * 1000;
      }
      this.scheduleHeartbeat(next);
    });
  }

  private scheduleFlush(ms: number): void {
    this.after(ms, async () => {
      const report = await this.flushUsage();
      const interval = this.options.usageFlushIntervalMs ?? 60_000;
      if (report.stopped) {
        this.scheduleFlush(wasm.backoffDelaySeconds(this.flushFailures++, Math.random()) * 1000);
      } else {
        this.flushFailures = 0;
        this.scheduleFlush(interval);
      }
    });
  }

  private logState(): void {
    const state = this.state();
    const warning = warningOf(state);
    if (state.state === "offline") this.log.warn(`nls: ${warning}`);
    if (state.state === "grace") this.log.error(`nls: LICENSE GRACE PERIOD: ${warning}`);
    if (state.state === "invalid") this.log.error(`nls: ${warning}; licensed features stop`);
  }

  // ------------------------------------------------------------------------------------------
  // Files

  private loadDeploymentId(): string {
    const file = path.join(this.options.dataDir, DEPLOYMENT_FILE);
    const saved = readOptional(file)?.trim();
    if (saved) return saved;
    const id = `dep-${randomId()}`;
    writeAtomic(file, id);
    return id;
  }

  private loadMonth(): { period: string; counters: Record<string, number> } {
    const period = periodOf(this.now());
    let month = { period, counters: {} as Record<string, number> };
    try {
      const saved = JSON.parse(readOptional(path.join(this.options.dataDir, COUNTERS_FILE)) ?? "null");
      if (saved && saved.period === period) month = saved;
    } catch {
      // unreadable counters are advisory; start from the spool
    }
    const pending: Record<string, number> = {};
    for (const r of this.spool.pending()) {
      if (periodOf(new Date(r.at)) === period) pending[r.metric] = (pending[r.metric] ?? 0) + r.value;
    }
    for (const [metric, value] of Object.entries(pending)) {
      month.counters[metric] = Math.max(month.counters[metric] ?? 0, value);
    }
    return month;
  }

  private persist(): void {
    try {
      this.core.observeClock(this.secs());
      writeAtomic(path.join(this.options.dataDir, CACHE_FILE), this.core.toCache());
      writeAtomic(path.join(this.options.dataDir, COUNTERS_FILE), JSON.stringify(this.month));
    } catch (e) {
      this.log.warn(`nls: could not save the license cache: ${(e as Error).message}`);
    }
  }
}
