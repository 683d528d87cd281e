// Express middlewares, the seed app's three guards. They only read memory; no network call.
//
//   app.use(requireValidLicense(license));
//   app.get("/reports", requireFeature(license, "reports"), handler);
//   app.post("/runs", checkUsageLimit(license, "workflow_runs"), handler);
//
// Answers, in the API's error shape {"error": {"code", "message"}}:
// - no usable license: 402 with the state's code (REVOKED, OFFLINE_TOO_LONG, NOT_VALIDATED, ...);
// - a feature the license lacks: 403 FEATURE_NOT_ENTITLED;
// - a metric over its monthly limit: 402 USAGE_LIMIT_EXCEEDED.
// While offline or in grace, requests pass with an `X-License-Warning` header.
// Express is not a dependency: any (req, res, next) framework with res.status/json works.

import type { LicenseClient } from "./client";
import { warningOf } from "./wire";

export interface ResponseLike {
  status(code: number): ResponseLike;
  json(body: unknown): unknown;
  setHeader(name: string, value: string): unknown;
  statusCode: number;
  on(event: "finish", listener: () => void): unknown;
}
export type Next = (err?: unknown) => void;
export type Middleware = (req: unknown, res: ResponseLike, next: Next) => void;

export const WARNING_HEADER = "X-License-Warning";

function refuse(res: ResponseLike, status: number, code: string, message: string): void {
  res.status(status).json({ error: { code, message } });
}

/** Passes when the license is usable; 402 otherwise. Returns false when it answered. */
function guard(license: LicenseClient, res: ResponseLike): boolean {
  const state = license.state();
  if (state.state === "invalid") {
    refuse(res, 402, state.code, state.reason);
    return false;
  }
  const warning = warningOf(state);
  if (warning) res.setHeader(WARNING_HEADER, warning.replace(/[^\x20-\x7e]/g, "?"));
  return true;
}

export function requireValidLicense(license: LicenseClient): Middleware {
  return (_req, res, next) => {
    if (guard(license, res)) next();
  };
}

export function requireFeature(license: LicenseClient, feature: string): Middleware {
  return (_req, res, next) => {
    if (!guard(license, res)) return;
    if (!license.hasFeature(feature)) {
      refuse(res, 403, "FEATURE_NOT_ENTITLED", `the license does not include the feature ${JSON.stringify(feature)}`);
      return;
    }
    next();
  };
}

/** 402 when one more `metric` would pass the monthly limit; otherwise runs the handler and,
 *  if it answered 2xx, records one unit. */
export function checkUsageLimit(license: LicenseClient, metric: string): Middleware {
  return (_req, res, next) => {
    if (!guard(license, res)) return;
    const check = license.checkLimit(metric, 1);
    if (!check.allowed) {
      refuse(res, 402, "USAGE_LIMIT_EXCEEDED", `${metric}: ${check.used} used of ${check.limit} this month`);
      return;
    }
    res.on("finish", () => {
      if (res.statusCode >= 200 && res.statusCode < 300) {
        try {
          license.recordUsage(metric, 1);
        } catch (e) {
          console.error(`nls: could not record usage of ${metric}: ${(e as Error).message}`);
        }
      }
    });
    next();
  };
}
