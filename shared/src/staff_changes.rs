//! Changes to staff users, written once for `nls staff` (actor `cli`) and the portal's staff
//! and account pages (actor `staff:<id>`): each is one store commit with its audit entry, an
//! optimistic update that re-reads and retries when someone else changed the user first.
//! Disabling a user and setting a password also end every session of the user at once
//! (`sessions_valid_after`). The audit entries record [`StaffUserView`], never the password
//! hash or the second-factor secret.

use serde::Serialize;

use crate::issuing::new_id;
use crate::model::{AuditEntry, StaffUser, Timestamp};
use crate::ports::{Clock, Store, StoreError, Write};
use crate::staff_accounts::{StaffAccountError, normalize_email};
use crate::totp::{self, TotpError};

/// Optimistic updates re-read and retry this often when someone else changed the user first.
const UPDATE_ATTEMPTS: u32 = 5;
/// 24 characters of 5 random bits: 120 bits.
const GENERATED_PASSWORD_CHARS: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum StaffChangeError {
    #[error("{0}")]
    Account(#[from] StaffAccountError),
    #[error("a staff user with email {0} already exists")]
    EmailTaken(String),
    #[error("no staff user {0}")]
    UnknownUser(String),
    #[error("staff user {0} kept changing under us; try again")]
    KeptChanging(String),
    /// A change the rules refuse (e.g. an admin disabling their own account).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Totp(#[from] TotpError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A staff user as audit entries and `nls staff` show it: never the password hash or the
/// second-factor secret.
#[derive(Debug, Serialize)]
pub struct StaffUserView<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub role: &'a str,
    pub disabled: bool,
    pub totp_enabled: bool,
    pub sessions_valid_after: Timestamp,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl<'a> From<&'a StaffUser> for StaffUserView<'a> {
    fn from(u: &'a StaffUser) -> Self {
        Self {
            id: &u.id,
            email: &u.email,
            name: &u.name,
            role: u.role.as_str(),
            disabled: u.disabled,
            totp_enabled: u.totp_secret.is_some(),
            sessions_valid_after: u.sessions_valid_after,
            version: u.version,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

pub fn staff_target(id: &str) -> String {
    format!("staff_user:{id}")
}

pub fn audit_entry(
    actor: &str,
    action: &str,
    after: &StaffUser,
    before: Option<&StaffUser>,
    now: Timestamp,
) -> Write {
    let view = |u: &StaffUser| serde_json::to_value(StaffUserView::from(u)).ok();
    Write::Audit(AuditEntry {
        id: new_id("aud"),
        at: now,
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: staff_target(&after.id),
        before: before.and_then(view),
        after: view(after),
    })
}

/// Lower-case letters and digits without the look-alikes `0 1 l o`: exactly 32 symbols, so
/// `byte % 32` is unbiased. Grouped by six for reading aloud.
pub fn generated_password() -> String {
    const ALPHABET: &[u8; 32] = b"23456789abcdefghijkmnpqrstuvwxyz";
    let mut bytes = [0u8; GENERATED_PASSWORD_CHARS];
    getrandom::fill(&mut bytes).expect("the platform random source is unavailable");
    let mut password = String::with_capacity(GENERATED_PASSWORD_CHARS + GENERATED_PASSWORD_CHARS / 6);
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 && i % 6 == 0 {
            password.push('-');
        }
        password.push(char::from(ALPHABET[usize::from(*byte % 32)]));
    }
    password
}

/// Commits a new user (from `staff_accounts::new_staff_user`) with its audit entry.
pub async fn create_staff_user(
    store: &dyn Store,
    actor: &str,
    user: &StaffUser,
) -> Result<(), StaffChangeError> {
    let entry = audit_entry(actor, "staff_user.create", user, None, user.created_at);
    match store.commit(None, vec![Write::CreateStaffUser(user.clone()), entry]).await {
        Ok(_) => Ok(()),
        Err(StoreError::AlreadyExists(_)) => Err(StaffChangeError::EmailTaken(user.email.clone())),
        Err(e) => Err(e.into()),
    }
}

/// Which user a change is for.
#[derive(Debug, Clone, Copy)]
pub enum StaffLookup<'a> {
    Id(&'a str),
    Email(&'a str),
}

async fn find(store: &dyn Store, who: StaffLookup<'_>) -> Result<StaffUser, StaffChangeError> {
    let found = match who {
        StaffLookup::Id(id) => store.get_staff_user(id).await?,
        StaffLookup::Email(email) => store.find_staff_user_by_email(&normalize_email(email)?).await?,
    };
    found.ok_or_else(|| {
        StaffChangeError::UnknownUser(match who {
            StaffLookup::Id(id) => id.to_owned(),
            StaffLookup::Email(email) => email.to_owned(),
        })
    })
}

/// Whether a change also ends the user's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sessions {
    End,
    Keep,
}

/// Applies `change` to the user, bumps `version` (and, with [`Sessions::End`], sets
/// `sessions_valid_after = now`), and commits it with its audit entry as `actor`. A lost race
/// re-reads and tries again. Returns the user after the change.
pub async fn update_staff_user(
    store: &dyn Store,
    clock: &dyn Clock,
    who: StaffLookup<'_>,
    actor: &str,
    action: &str,
    sessions: Sessions,
    change: impl Fn(&mut StaffUser) -> Result<(), StaffChangeError>,
) -> Result<StaffUser, StaffChangeError> {
    for _ in 0..UPDATE_ATTEMPTS {
        let before = find(store, who).await?;
        let now = clock.now();
        let mut after = before.clone();
        change(&mut after)?;
        if sessions == Sessions::End {
            after.sessions_valid_after = now;
        }
        after.updated_at = now;
        after.version = before.version + 1;
        let writes = vec![
            Write::UpdateStaffUser { user: after.clone(), expected_version: before.version },
            audit_entry(actor, action, &after, Some(&before), now),
        ];
        match store.commit(None, writes).await {
            Ok(_) => return Ok(after),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StaffChangeError::KeptChanging(match who {
        StaffLookup::Id(id) => id.to_owned(),
        StaffLookup::Email(email) => email.to_owned(),
    }))
}

/// Checks a sign-in code for `user` (who has a second factor) and records its step, so the
/// same code is never accepted twice: the step is written only if the user's `version` is
/// still the one read, so of two sign-ins racing with one code exactly one wins. A lost race
/// re-reads: a step now used is refused, any other change is retried. Not an admin change, so
/// not audited (the sign-in is logged, without the code).
pub async fn accept_totp_code(
    store: &dyn Store,
    clock: &dyn Clock,
    user: &StaffUser,
    code: &str,
) -> Result<StaffUser, StaffChangeError> {
    let mut current = user.clone();
    for _ in 0..UPDATE_ATTEMPTS {
        let secret = current.totp_secret.as_deref().ok_or(TotpError::Wrong)?;
        let now = clock.now();
        let step = totp::check_code(secret, code, now, current.totp_last_step)?;
        let mut after = current.clone();
        after.totp_last_step = Some(step);
        after.version = current.version + 1;
        let write = Write::UpdateStaffUser { user: after.clone(), expected_version: current.version };
        match store.commit(None, vec![write]).await {
            Ok(_) => return Ok(after),
            Err(StoreError::Conflict(_)) => {
                current = find(store, StaffLookup::Id(&user.id)).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(StaffChangeError::KeptChanging(user.id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_fresh_and_pass_the_policy() {
        let a = generated_password();
        let b = generated_password();
        assert_ne!(a, b);
        assert_eq!(a.len(), GENERATED_PASSWORD_CHARS + 3, "{a}");
        assert!(crate::staff_accounts::check_password_policy(&a).is_ok());
        assert!(a.split('-').all(|group| group.len() == 6), "{a}");
    }
}
