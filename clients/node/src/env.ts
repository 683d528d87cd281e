// The client's configuration from the environment, under the names every Nectar install uses
// (the Rust client's `ClientConfig::from_env` and the `nectar-license` CLI read the same):
//
//   NECTAR_LICENSE_SERVER    NLS base URL; absent or empty: air-gapped (needs an offline file)
//   NECTAR_LICENSE_KEY       the license key
//   NECTAR_LICENSE_JWKS      path of the pinned public JWKS file
//   NECTAR_LICENSE_DATA_DIR  the state directory (receipt cache, deployment id, usage spool)
//
// An offline license file imported with `nectar-license activate-offline` lives in the data
// directory as `offline-license.json`; it is loaded when present, and its own key is used.

import * as fs from "node:fs";
import * as path from "node:path";

import type { ClientOptions } from "./types";

export const ENV_SERVER = "NECTAR_LICENSE_SERVER";
export const ENV_KEY = "NECTAR_LICENSE_KEY";
export const ENV_JWKS = "NECTAR_LICENSE_JWKS";
export const ENV_DATA_DIR = "NECTAR_LICENSE_DATA_DIR";
export const OFFLINE_FILE_NAME = "offline-license.json";

/** A missing or unreadable setting; `variable` names it. */
export class LicenseConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
    this.name = "LicenseConfigError";
  }
}

function setting(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

function readFile(variable: string, file: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new LicenseConfigError(variable, `${variable} (${file}): ${(e as Error).message}`);
  }
}

/**
 * Client options from `NECTAR_LICENSE_*` (default: `process.env`). The JWKS file is read and an
 * imported offline file is loaded; pass the result (with any extra options) to
 * `LicenseClient.start`. Throws a `LicenseConfigError` naming the variable that is missing or
 * unreadable.
 */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env): ClientOptions {
  const dataDir = setting(env, ENV_DATA_DIR);
  if (!dataDir) throw new LicenseConfigError(ENV_DATA_DIR, `${ENV_DATA_DIR} is not set`);
  const jwksPath = setting(env, ENV_JWKS);
  if (!jwksPath) throw new LicenseConfigError(ENV_JWKS, `${ENV_JWKS} is not set`);
  const jwks = readFile(ENV_JWKS, jwksPath);
  const offlinePath = path.join(dataDir, OFFLINE_FILE_NAME);
  const offlineFile = fs.existsSync(offlinePath) ? readFile(ENV_DATA_DIR, offlinePath) : undefined;
  const licenseKey = setting(env, ENV_KEY);
  if (!licenseKey && !offlineFile) throw new LicenseConfigError(ENV_KEY, `${ENV_KEY} is not set`);
  const options: ClientOptions = { jwks, dataDir };
  const serverUrl = setting(env, ENV_SERVER);
  if (serverUrl) options.serverUrl = serverUrl;
  // An imported offline file wins: it carries its own key, issued with it.
  if (offlineFile) options.offlineFile = offlineFile;
  else options.licenseKey = licenseKey;
  return options;
}
