//! Staff accounts for the admin portal: argon2id password hashing and the rules a new or
//! changed account must meet. Used by `nls staff` and by the portal's login, so both hash and
//! check passwords one way.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::issuing::new_id;
use crate::model::{StaffRole, StaffUser, Timestamp};

/// Shorter passwords are refused. Length beats composition rules (NIST SP 800-63B).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longer ones are refused too, so a login cannot be made to hash megabytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaffAccountError {
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    PasswordTooShort,
    #[error("the password must have at most {MAX_PASSWORD_BYTES} bytes")]
    PasswordTooLong,
    #[error("{0:?} is not an email address")]
    InvalidEmail(String),
    #[error("the name must not be empty")]
    EmptyName,
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// argon2id with OWASP's minimum parameters (19 MiB, 2 passes, 1 lane): about 20–40 ms here.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn check_password_policy(password: &str) -> Result<(), StaffAccountError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(StaffAccountError::PasswordTooLong);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(StaffAccountError::PasswordTooShort);
    }
    Ok(())
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) of `password`, with a fresh
/// random salt. Checks the policy first.
pub fn hash_password(password: &str) -> Result<String, StaffAccountError> {
    check_password_policy(password)?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the platform random source is unavailable");
    let salt = SaltString::encode_b64(&salt).map_err(|e| StaffAccountError::Hashing(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StaffAccountError::Hashing(e.to_string()))
}

/// Whether `password` matches the stored PHC string. A malformed stored hash never matches.
/// The comparison inside argon2 is constant-time.
pub fn verify_password(stored_phc: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(stored_phc) else { return false };
    hasher().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// Burns the same time as a real check, for logins with an unknown email, so that timing does
/// not tell which emails have accounts.
pub fn verify_password_against_nobody(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("not a real account password").unwrap_or_default());
    let _ = verify_password(dummy, password);
}

/// Trims and lower-cases an email, and checks its rough shape (`local@domain.tld`).
pub fn normalize_email(email: &str) -> Result<String, StaffAccountError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        });
    if valid { Ok(email) } else { Err(StaffAccountError::InvalidEmail(email)) }
}

/// A new, enabled staff user (`version` 1). The caller commits it with
/// `Write::CreateStaffUser` and an audit entry.
pub fn new_staff_user(
    email: &str,
    name: &str,
    role: StaffRole,
    password: &str,
    now: Timestamp,
) -> Result<StaffUser, StaffAccountError> {
    let email = normalize_email(email)?;
    let name = name.trim();
    if name.is_empty() {
        return Err(StaffAccountError::EmptyName);
    }
    Ok(StaffUser {
        id: new_id("stf"),
        email,
        name: name.to_owned(),
        role,
        password_hash: hash_password(password)?,
        totp_secret: None,
        totp_last_step: None,
        disabled: false,
        sessions_valid_after: now,
        version: 1,
        created_at: now,
        updated_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(verify_password(&a, "correct horse battery"));
        assert!(!verify_password(&a, "correct horse batterY"));
        assert!(!verify_password("not a phc string", "correct horse battery"));
    }

    #[test]
    fn policy_and_email_rules() {
        assert_eq!(hash_password("short"), Err(StaffAccountError::PasswordTooShort));
        assert_eq!(hash_password(&"x".repeat(2000)), Err(StaffAccountError::PasswordTooLong));
        assert_eq!(normalize_email("  Ops@Nectar.Example ").unwrap(), "ops@nectar.example");
        for bad in ["", "ops", "ops@", "@nectar.example", "ops@nectar", "o ps@nectar.example"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        let now = chrono::Utc::now();
        let user =
            new_staff_user("A@B.example", " Ann ", StaffRole::Support, "long enough password", now).unwrap();
        assert_eq!((user.email.as_str(), user.name.as_str(), user.version), ("a@b.example", "Ann", 1));
        assert!(user.id.starts_with("stf_"));
        assert_eq!(
            new_staff_user("a@b.example", " ", StaffRole::Admin, "long enough password", now).unwrap_err(),
            StaffAccountError::EmptyName
        );
    }
}
