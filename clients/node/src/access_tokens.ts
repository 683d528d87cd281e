// Cloud access tokens for the customer app (docs/cloud-access.md): `LicenseClient.accessToken`
// keeps one per audience until shortly before it expires; this file holds the types and the
// answer parsing.

/** A token to send as `Authorization: Bearer <token>`. */
export interface AccessToken {
  token: string;
  expiresAt: Date;
  /** Set while the license is in grace. */
  warning: string | null;
}

export type AccessTokenErrorKind = "unreachable" | "refused" | "no_server" | "bad_answer";

/**
 * Why no token: `unreachable` (no answer or a 5xx: retry later, use the basic features
 * meanwhile), `refused` (`code` is the validation code, e.g. SUSPENDED, FEATURE_NOT_ENTITLED,
 * USAGE_LIMIT_EXCEEDED), `no_server` (air-gapped), `bad_answer`.
 */
export class AccessTokenError extends Error {
  constructor(
    readonly kind: AccessTokenErrorKind,
    message: string,
    readonly status: number | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = "AccessTokenError";
  }

  get transient(): boolean {
    return this.kind === "unreachable";
  }
}

/** Refreshed in the background once less than this is left. */
export const REFRESH_BEFORE_EXPIRY_MS = 60_000;
/** Never handed out with less than this left. */
export const MIN_REMAINING_MS = 5_000;

export function parseAccessTokenReply(status: number, body: string): AccessToken {
  if (status >= 500) throw new AccessTokenError("unreachable", `NLS answered HTTP ${status}`, status);
  let json: any;
  try {
    json = JSON.parse(body);
  } catch {
    throw new AccessTokenError("bad_answer", `not JSON (HTTP ${status})`, status);
  }
  if (status !== 200) {
    const code = json?.error?.code ?? "unknown";
    throw new AccessTokenError("refused", `NLS refused an access token (HTTP ${status}, ${code}): ${json?.error?.message ?? ""}`, status, code);
  }
  const expiresAt = new Date(json?.expires_at);
  if (typeof json?.token !== "string" || Number.isNaN(expiresAt.getTime())) {
    throw new AccessTokenError("bad_answer", "the answer has no token or expires_at", status);
  }
  return { token: json.token, expiresAt, warning: json.warning ?? null };
}
