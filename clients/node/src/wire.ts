// Converts the core's JSON (snake_case, RFC 3339 strings) into the public camelCase types.

import type { AnswerOutcome, FleetUsage, LicenseInfo, LicenseState, LimitCheck, UsageStanding } from "./types";

/* eslint-disable @typescript-eslint/no-explicit-any */
const date = (s: string | null | undefined): Date | null => (s ? new Date(s) : null);

function license(l: any): LicenseInfo {
  return {
    id: l.id,
    customerId: l.customer_id,
    tier: l.tier,
    features: l.features ?? [],
    limits: l.limits ?? {},
    offlineDays: l.offline_days,
    graceDays: l.grace_days,
    expiresAt: date(l.expires_at),
  };
}

export function toState(json: string): LicenseState {
  const s = JSON.parse(json);
  switch (s.state) {
    case "valid":
      return { state: "valid", license: license(s.license), source: s.source, validUntil: new Date(s.valid_until) };
    case "offline":
      return {
        state: "offline",
        license: license(s.license),
        lastValidatedAt: new Date(s.last_validated_at),
        offlineUntil: new Date(s.offline_until),
        graceUntil: new Date(s.grace_until),
        why: s.why,
      };
    case "grace":
      return { state: "grace", license: license(s.license), reason: s.reason, endsAt: new Date(s.ends_at), warning: s.warning };
    default:
      return { state: "invalid", code: s.code, reason: s.reason };
  }
}

export function toOutcome(json: string): AnswerOutcome {
  const o = JSON.parse(json);
  switch (o.outcome) {
    case "good":
      return { outcome: "good", nextCheckIn: date(o.next_check_in), warning: o.warning ?? null };
    case "refused":
      return { outcome: "refused", code: o.code, reason: o.reason, nextCheckIn: date(o.next_check_in) };
    default:
      return { outcome: "offline", why: o.why };
  }
}

export function toLimitCheck(json: string): LimitCheck {
  const c = JSON.parse(json);
  return { allowed: c.allowed, limit: c.limit ?? null, used: c.used, remaining: c.remaining ?? null };
}

export function toStanding(json: string): UsageStanding {
  const s = JSON.parse(json);
  return { fleetUsed: s.fleet_used ?? null, deliveredUnconfirmed: s.delivered_unconfirmed, spooled: s.spooled, used: s.used };
}

export function toFleetUsage(json: string): FleetUsage {
  const f = JSON.parse(json);
  return { asOf: new Date(f.as_of * 1000), metrics: f.metrics };
}

/** The text an app should show as a banner, if any (same wording as the Rust client). */
export function warningOf(state: LicenseState): string | null {
  switch (state.state) {
    case "valid":
      return null;
    case "offline":
      return `license server unreachable (${state.why}); working offline until ${state.offlineUntil.toISOString()}`;
    case "grace":
      return state.warning;
    case "invalid":
      return `license invalid (${state.code}): ${state.reason}`;
  }
}
