// The cloud service's side of access tokens (docs/cloud-access.md), for Express (or any
// (req, res, next) framework): verify `Authorization: Bearer <nls-access+jwt>` offline against
// the NLS JWKS, enforce the token's `rate` per license, put the claims on `req.nlsAccess`.
//
//   const access = await CloudAccess.fromJwksUrl("https://licenses.nectar.example/.well-known/jwks.json");
//   app.use(access.requireAccessToken("workflows"));
//   app.post("/v1/runs", (req, res) => res.json({ license: req.nlsAccess.sub }));
//
// The checks (typ, kid, EdDSA, aud, nbf, exp, the verified-token cache, the token bucket) are the
// Rust core's, compiled to wasm: the same code as the Rust `require_access_token`.
// Answers: 401 with `WWW-Authenticate: Bearer error="invalid_token"` and the failed check's
// code; 429 `rate_limited` with `Retry-After`; `RateLimit-Limit/Remaining/Reset` on every
// answer past verification.

import type { CloudCallMeter } from "./cloud_meter";
import type { Next, ResponseLike } from "./express";
// eslint-disable-next-line @typescript-eslint/no-require-imports
import wasm = require("../wasm-pkg/nls_client_wasm");

/** The verified claims of an access token. */
export interface AccessClaims {
  iss: string;
  sub: string;
  customer_id: string;
  deployment_id: string;
  aud: string;
  tier: string;
  features: string[];
  rate: { requests_per_minute: number; burst: number; monthly_quota?: number };
  jti: string;
}

export interface RequestLike {
  headers: Record<string, string | string[] | undefined>;
  nlsAccess?: AccessClaims;
}

export type AccessMiddleware = (req: RequestLike, res: ResponseLike, next: Next) => void;

/** The least time between two JWKS fetches caused by unknown `kid`s. */
export const JWKS_REFRESH_INTERVAL_MS = 30_000;
/** How long a fetched JWKS is used before the next verification refetches it (NLS serves it
 * with `max-age=300`): how a key retired at NLS stops verifying in a running service. */
export const JWKS_MAX_AGE_MS = 300_000;

interface Verdict {
  allowed: boolean;
  limit: number;
  remaining: number;
  reset_secs: number;
  retry_after_secs: number | null;
}

export class CloudAccess {
  private readonly cores: wasm.AccessTokenCore[] = [];
  /** When the JWKS was last fetched or tried, and when the ring in use was fetched (clock ms). */
  private lastRefresh: number | null = null;
  private fetchedAt: number | null = null;
  private refreshing: Promise<boolean> | null = null;
  private meter: CloudCallMeter | null = null;
  private jwksMaxAgeMs = JWKS_MAX_AGE_MS;

  private constructor(
    private jwks: string,
    private readonly jwksUrl: string | null,
    private readonly now: () => Date,
  ) {}

  /** Trusts exactly this JWKS (no refresh). */
  static fromJwks(jwks: string | object, options: { clock?: () => Date } = {}): CloudAccess {
    const text = typeof jwks === "string" ? jwks : JSON.stringify(jwks);
    new wasm.AccessTokenCore(text, "check").free(); // throws now on a bad JWKS
    return new CloudAccess(text, null, options.clock ?? (() => new Date()));
  }

  /** Fetches the JWKS now, and again when a token names a `kid` it lacks. */
  static async fromJwksUrl(url: string, options: { clock?: () => Date } = {}): Promise<CloudAccess> {
    const access = new CloudAccess(await fetchJwks(url), url, options.clock ?? (() => new Date()));
    access.fetchedAt = access.now().getTime();
    return access;
  }

  /** Counts every allowed call (the service's own metering, `CloudCallMeter`). */
  withMeter(meter: CloudCallMeter): this {
    this.meter = meter;
    return this;
  }

  /** How long a fetched JWKS is used before it is fetched again (default JWKS_MAX_AGE_MS). */
  withJwksMaxAge(ms: number): this {
    this.jwksMaxAgeMs = ms;
    return this;
  }

  /** A middleware admitting only tokens for `audience` (this service's name in the plans). */
  requireAccessToken(audience: string): AccessMiddleware {
    const core = new wasm.AccessTokenCore(this.jwks, audience);
    this.cores.push(core);
    return (req, res, next) => {
      this.handle(core, req, res, next).catch(next);
    };
  }

  private async handle(core: wasm.AccessTokenCore, req: RequestLike, res: ResponseLike, next: Next): Promise<void> {
    const header = req.headers["authorization"];
    const value = Array.isArray(header) ? header[0] : header;
    const match = value ? /^bearer\s+(\S+)\s*$/i.exec(value) : null;
    if (!match) {
      unauthorized(res, "missing_token", "send `Authorization: Bearer <access token>`");
      return;
    }
    const token = match[1];
    if (this.fetchedAt !== null && this.now().getTime() - this.fetchedAt >= this.jwksMaxAgeMs) {
      // Keys retired at NLS leave the ring; a failed fetch keeps the keys we have.
      await this.refreshIfDue();
    }
    let result = JSON.parse(core.verify(token, this.now().getTime()));
    if (!result.ok && result.code === "unknown_kid" && (await this.refreshIfDue())) {
      result = JSON.parse(core.verify(token, this.now().getTime()));
    }
    if (!result.ok) {
      unauthorized(res, result.code, result.message);
      return;
    }
    const claims = result.claims as AccessClaims;
    const verdict = JSON.parse(core.take(claims.sub, JSON.stringify(claims.rate), this.now().getTime())) as Verdict;
    res.setHeader("RateLimit-Limit", String(verdict.limit));
    res.setHeader("RateLimit-Remaining", String(verdict.remaining));
    res.setHeader("RateLimit-Reset", String(verdict.reset_secs));
    if (!verdict.allowed) {
      res.setHeader("Retry-After", String(verdict.retry_after_secs ?? 1));
      res.status(429).json({ error: { code: "rate_limited", message: `over the license's rate at ${claims.aud}` } });
      return;
    }
    this.meter?.recordCall(claims);
    req.nlsAccess = claims;
    next();
  }

  /** One refetch at a time, at most every JWKS_REFRESH_INTERVAL_MS; true when keys changed. */
  private refreshIfDue(): Promise<boolean> {
    if (!this.jwksUrl) return Promise.resolve(false);
    if (this.refreshing) return this.refreshing;
    const now = this.now().getTime();
    // A clock set back does not hold refreshes off.
    if (this.lastRefresh !== null && now >= this.lastRefresh && now - this.lastRefresh < JWKS_REFRESH_INTERVAL_MS) {
      return Promise.resolve(false);
    }
    this.lastRefresh = now;
    const url = this.jwksUrl;
    this.refreshing = fetchJwks(url)
      .then((jwks) => {
        for (const core of this.cores) core.replaceJwks(jwks);
        this.jwks = jwks;
        this.fetchedAt = now;
        return true;
      })
      .catch(() => false)
      .finally(() => {
        this.refreshing = null;
      });
    return this.refreshing;
  }
}

async function fetchJwks(url: string): Promise<string> {
  const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  if (response.status !== 200) throw new Error(`fetching the JWKS: HTTP ${response.status}`);
  const text = await response.text();
  new wasm.AccessTokenCore(text, "check").free(); // throws on a JWKS the core cannot use
  return text;
}

function unauthorized(res: ResponseLike, code: string, message: string): void {
  res.setHeader("WWW-Authenticate", `Bearer error="invalid_token", error_description="${code}"`);
  res.status(401).json({ error: { code, message } });
}
