// @nectar/nls-client: license validation with offline mode and grace, heartbeats, lossless
// usage reporting and Express middlewares, for Node apps. The verification and the state
// machine are the Rust core (clients/core) compiled to wasm.

export { LicenseClient } from "./client";
export { configFromEnv, LicenseConfigError, OFFLINE_FILE_NAME } from "./env";
export { requireValidLicense, requireFeature, checkUsageLimit, WARNING_HEADER } from "./express";
export type { Middleware, ResponseLike, Next } from "./express";
export { UsageSpool } from "./spool";
export { CloudAccess, JWKS_REFRESH_INTERVAL_MS, JWKS_MAX_AGE_MS } from "./cloud";
export { CloudCallMeter, MeterError } from "./cloud_meter";
export type { MeterFlush } from "./cloud_meter";
export type { AccessClaims, AccessMiddleware, RequestLike } from "./cloud";
export { AccessTokenError } from "./access_tokens";
export type { AccessToken, AccessTokenErrorKind } from "./access_tokens";
export { warningOf } from "./wire";
export type * from "./types";
