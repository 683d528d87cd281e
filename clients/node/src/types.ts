// The public types of the Node client. They mirror the Rust client's `LicenseState`
// (clients/core/src/license_state.rs) with camelCase names and `Date`s.

export type GraceReason = "offline_too_long" | "clock_rollback" | "license_expired" | "server_grace";

export type InvalidCode =
  | "MALFORMED"
  | "CHECKSUM_MISMATCH"
  | "BAD_SIGNATURE"
  | "NOT_YET_VALID"
  | "EXPIRED"
  | "SUSPENDED"
  | "REVOKED"
  | "TOO_MANY_DEPLOYMENTS"
  | "ACTIVATION_RATE_LIMITED"
  | "REFUSED"
  | "NOT_VALIDATED"
  | "OFFLINE_TOO_LONG"
  | "CLOCK_ROLLBACK"
  | "OFFLINE_FILE_INVALID";

export interface LicenseInfo {
  id: string;
  customerId: string;
  tier: string;
  features: string[];
  /** metric → monthly limit */
  limits: Record<string, number>;
  offlineDays: number;
  graceDays: number;
  /** `null`: perpetual */
  expiresAt: Date | null;
}

export type LicenseState =
  | { state: "valid"; license: LicenseInfo; source: "receipt" | "offline_file"; validUntil: Date }
  | {
      state: "offline";
      license: LicenseInfo;
      lastValidatedAt: Date;
      offlineUntil: Date;
      graceUntil: Date;
      why: string;
    }
  | { state: "grace"; license: LicenseInfo; reason: GraceReason; endsAt: Date; warning: string }
  | { state: "invalid"; code: InvalidCode; reason: string };

export type AnswerOutcome =
  | { outcome: "good"; nextCheckIn: Date | null; warning: string | null }
  | { outcome: "refused"; code: InvalidCode; reason: string; nextCheckIn: Date | null }
  | { outcome: "offline"; why: string };

export interface LimitCheck {
  allowed: boolean;
  /** `null`: no limit on this metric */
  limit: number | null;
  used: number;
  remaining: number | null;
}

export interface UsageRecord {
  metric: string;
  value: number;
  /** RFC 3339 */
  at: string;
}

export interface FlushReport {
  batchesSent: number;
  recordsSent: number;
  batchesRejected: number;
  /** Set when sending stopped early (offline); the rest stays spooled. */
  stopped: string | null;
}

export interface ClientOptions {
  /** NLS base URL. Omit for an air-gapped install (then `offlineFile` is required). */
  serverUrl?: string;
  /** The license key. May be omitted with `offlineFile`: the key inside it is used. */
  licenseKey?: string;
  /** The public JWKS the app trusts (JSON text or object); ship it with the app. */
  jwks: string | object;
  /** Where the receipt cache, the deployment id and the usage spool live. */
  dataDir: string;
  /** Default: a random id created once and kept in `dataDir`, so restarts keep their seat. */
  deploymentId?: string;
  fingerprint?: string;
  appVersion?: string;
  /** The JSON text of an offline license file (air-gapped installs). */
  offlineFile?: string;
  /** Default: when the server says (`next_heartbeat_at`). */
  heartbeatIntervalMs?: number;
  /** Default 60 s. */
  usageFlushIntervalMs?: number;
  /** Default 10 s. */
  requestTimeoutMs?: number;
  /** A backward clock step up to this is NTP slew, not a rollback. Default 300. */
  rollbackToleranceSeconds?: number;
  /** Injected wall clock, for tests. */
  clock?: () => Date;
  /** Where warnings go. Default: console.warn / console.error. */
  logger?: { warn(msg: string): void; error(msg: string): void };
}

/** One limited metric's fleet-wide use, as the server's snapshot counted it. */
export interface MetricUsage {
  used: number;
  limit: number;
  /** The counter period, a UTC month: `2026-12`. */
  period: string;
}

/** The newest fleet-wide usage the server sent: every deployment's reports up to `asOf`. */
export interface FleetUsage {
  asOf: Date;
  metrics: Record<string, MetricUsage>;
}

/** The numbers behind `checkLimit` for one metric this month. */
export interface UsageStanding {
  /** The fleet-wide count from the newest answer or receipt (null: none names the metric). */
  fleetUsed: number | null;
  /** Delivered by this process since that answer. */
  deliveredUnconfirmed: number;
  /** Spooled by this process, not delivered yet. */
  spooled: number;
  /** What the limit check counts: fleet + unconfirmed + spooled, never less than this install's own month total. */
  used: number;
}
