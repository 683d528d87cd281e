// The cloud service's own count of the calls it allowed (docs/cloud-access.md, "Metering"),
// the Node twin of the Rust `NlsCallMeter`: `CloudAccess.withMeter(meter)` counts every call the
// middleware let through per (audience, license, UTC day); `flush()` seals the counts into
// batches and posts them to `POST /v1/cloud-usage` with an API key whose only scope is `meter`.
// A batch keeps its id until NLS acknowledged it (202), so a flush whose answer was lost sends
// the same batch again, and NLS counts a batch id once per license.
//
//   const meter = new CloudCallMeter("https://licenses.nectar.example", process.env.NLS_METER_KEY);
//   const stop = meter.startFlushing(10_000);
//   const access = (await CloudAccess.fromJwksUrl(jwksUrl)).withMeter(meter);
//
// Counts live in memory: a crash loses what was not flushed (an undercount, never a double
// count). Bounded like the Rust meter: MAX_OPEN_COUNTS counters, MAX_SEALED_BATCHES batches.

import { randomBytes } from "node:crypto";

import type { AccessClaims } from "./cloud";

export const CLOUD_USAGE_PATH = "/v1/cloud-usage";
export const MAX_RECORDS_PER_BATCH = 1000;
export const MAX_OPEN_COUNTS = 100_000;
export const MAX_SEALED_BATCHES = 1000;
const REQUEST_TIMEOUT_MS = 10_000;

/** Why a flush stopped; the batches are kept and resent with the same ids. */
export class MeterError extends Error {
  constructor(
    readonly kind: "unreachable" | "refused",
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = "MeterError";
  }
}

export interface MeterFlush {
  batches: number;
  calls: number;
  /** Batches NLS refused as malformed (400): dropped and logged, never resent. */
  rejected: number;
}

interface SealedBatch {
  batchId: string;
  audience: string;
  records: { license_id: string; calls: number; at: string }[];
}

const BASE32 = "abcdefghijklmnopqrstuvwxyz234567";

function batchId(): string {
  return "mb_" + Array.from(randomBytes(26), (b) => BASE32[b & 31]).join("");
}

export class CloudCallMeter {
  /** `audience \n license id \n day` → calls and the first call's time. */
  private open = new Map<string, { audience: string; licenseId: string; calls: number; at: Date }>();
  private sealed: SealedBatch[] = [];
  private flushing: Promise<MeterFlush> | null = null;
  private dropped = 0;

  constructor(
    nlsUrl: string,
    private readonly meterKey: string,
    private readonly options: { clock?: () => Date; logger?: Pick<Console, "warn" | "error"> } = {},
  ) {
    this.url = nlsUrl.replace(/\/+$/, "") + CLOUD_USAGE_PATH;
  }

  private readonly url: string;

  private now(): Date {
    return this.options.clock ? this.options.clock() : new Date();
  }

  /** Counts one allowed call (the middleware calls this). */
  recordCall(claims: AccessClaims): void {
    const now = this.now();
    const key = `${claims.aud}\n${claims.sub}\n${now.toISOString().slice(0, 10)}`;
    const count = this.open.get(key);
    if (count) {
      count.calls += 1;
    } else if (this.open.size < MAX_OPEN_COUNTS) {
      this.open.set(key, { audience: claims.aud, licenseId: claims.sub, calls: 1, at: now });
    } else {
      this.dropped += 1;
      if ((this.dropped & (this.dropped - 1)) === 0) {
        (this.options.logger ?? console).warn(`nls: the call meter is full; ${this.dropped} calls uncounted`);
      }
    }
  }

  /** Calls counted and not yet acknowledged by NLS. */
  pendingCalls(): number {
    let total = 0;
    for (const c of this.open.values()) total += c.calls;
    for (const b of this.sealed) for (const r of b.records) total += r.calls;
    return total;
  }

  droppedCalls(): number {
    return this.dropped;
  }

  /** Seals the counts, then sends every waiting batch, oldest first, until one is not
   * acknowledged (rejects with a MeterError; the batches stay). One flush at a time. */
  flush(): Promise<MeterFlush> {
    if (!this.flushing) {
      this.flushing = this.flushNow().finally(() => {
        this.flushing = null;
      });
    }
    return this.flushing;
  }

  private seal(): void {
    const byAudience = new Map<string, SealedBatch["records"]>();
    const open = this.open;
    this.open = new Map();
    for (const c of open.values()) {
      const records = byAudience.get(c.audience) ?? [];
      records.push({ license_id: c.licenseId, calls: c.calls, at: c.at.toISOString() });
      byAudience.set(c.audience, records);
    }
    for (const [audience, records] of byAudience) {
      for (let i = 0; i < records.length; i += MAX_RECORDS_PER_BATCH) {
        const chunk = records.slice(i, i + MAX_RECORDS_PER_BATCH);
        if (this.sealed.length >= MAX_SEALED_BATCHES) {
          // No room: keep them in the open counters until NLS is back.
          for (const r of chunk) {
            this.open.set(`${audience}\n${r.license_id}\n${r.at.slice(0, 10)}`, {
              audience, licenseId: r.license_id, calls: r.calls, at: new Date(r.at),
            });
          }
          continue;
        }
        this.sealed.push({ batchId: batchId(), audience, records: chunk });
      }
    }
  }

  private async flushNow(): Promise<MeterFlush> {
    this.seal();
    const delivered: MeterFlush = { batches: 0, calls: 0, rejected: 0 };
    while (this.sealed.length > 0) {
      const batch = this.sealed[0];
      let response: Response;
      try {
        response = await fetch(this.url, {
          method: "POST",
          headers: { authorization: `Bearer ${this.meterKey}`, "content-type": "application/json" },
          body: JSON.stringify({ batch_id: batch.batchId, audience: batch.audience, records: batch.records }),
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
      } catch (e) {
        throw new MeterError("unreachable", `NLS did not take the batch; it is kept and resent: ${e}`);
      }
      const text = await response.text().catch(() => "");
      if (response.status === 202) {
        delivered.batches += 1;
        delivered.calls += batch.records.reduce((sum, r) => sum + r.calls, 0);
      } else if (response.status === 400 || response.status === 413) {
        (this.options.logger ?? console).error(`nls: NLS refused cloud usage batch ${batch.batchId} as malformed; dropped: ${text}`);
        delivered.rejected += 1;
      } else if (response.status === 401 || response.status === 403) {
        throw new MeterError("refused", `NLS refused the meter key (HTTP ${response.status}): ${text}`, response.status);
      } else {
        throw new MeterError("unreachable", `HTTP ${response.status}: ${text}`, response.status);
      }
      if (this.sealed[0] === batch) this.sealed.shift();
    }
    return delivered;
  }

  /** Flushes every `everyMs` until the returned function is called; failures are logged and
   * retried at the next tick with the same batch ids. The timer does not keep Node alive. */
  startFlushing(everyMs: number): () => void {
    const timer = setInterval(() => {
      this.flush().catch((e) => (this.options.logger ?? console).warn(`nls: cloud usage not delivered yet: ${e.message}`));
    }, everyMs);
    timer.unref();
    return () => clearInterval(timer);
  }
}
