//! The role → action table: the one place the portal decides who may do what. Every page and
//! every form handler asks [`allows`] (through `session_auth::Staff::require`) before it does
//! anything, and templates ask it before they show a button, so a hidden button and a refused
//! POST can never disagree.

use crate::http::admin_auth::Caller;
use crate::model::{Scope, StaffRole};

/// Everything a staff user can ask the portal to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortalAction {
    /// Every page: licenses, customers, audit log, dashboard.
    Read,
    SuspendLicense,
    ReactivateLicense,
    RenewLicense,
    CreateLicense,
    EditLicense,
    CreateCustomer,
    RevokeLicense,
    /// Free a deployment's seat (license detail page).
    ReleaseDeployment,
    /// Email the license key to the customer again.
    ResendKeyEmail,
    /// Download a signed offline license file.
    DownloadOfflineFile,
    /// Change a customer's name, email, Stripe id or reminder opt-out.
    EditCustomer,
    /// The API keys page: create and revoke keys.
    ManageApiKeys,
    /// The staff users page: create, disable, reset passwords, change roles.
    ManageStaff,
}

impl PortalAction {
    pub const ALL: [PortalAction; 14] = [
        Self::Read,
        Self::SuspendLicense,
        Self::ReactivateLicense,
        Self::RenewLicense,
        Self::CreateLicense,
        Self::EditLicense,
        Self::CreateCustomer,
        Self::RevokeLicense,
        Self::ReleaseDeployment,
        Self::ResendKeyEmail,
        Self::DownloadOfflineFile,
        Self::EditCustomer,
        Self::ManageApiKeys,
        Self::ManageStaff,
    ];
}

/// The least role allowed each action; roles are ordered `viewer` < `support` < `billing` <
/// `admin` (issue 11: support suspends and reactivates, releases deployments, resends key
/// emails and downloads offline files; billing also renews and creates and edits licenses and
/// customers; admin does everything).
pub const fn minimum_role(action: PortalAction) -> StaffRole {
    use PortalAction::*;
    match action {
        Read => StaffRole::Viewer,
        SuspendLicense | ReactivateLicense | ReleaseDeployment | ResendKeyEmail | DownloadOfflineFile => {
            StaffRole::Support
        }
        RenewLicense | CreateLicense | EditLicense | CreateCustomer | EditCustomer => StaffRole::Billing,
        RevokeLicense | ManageApiKeys | ManageStaff => StaffRole::Admin,
    }
}

pub fn allows(role: StaffRole, action: PortalAction) -> bool {
    role >= minimum_role(action)
}

/// The audit log's name for a staff user.
pub fn staff_actor(user_id: &str) -> String {
    format!("staff:{user_id}")
}

/// The caller the shared handler bodies audit as. Its scope mirrors the role for anything
/// that reads it, but the portal's own checks are [`allows`], made before the call.
pub fn staff_caller(user_id: &str, role: StaffRole) -> Caller {
    let scope = match role {
        StaffRole::Viewer => Scope::Read,
        StaffRole::Support | StaffRole::Billing => Scope::Write,
        StaffRole::Admin => Scope::Admin,
    };
    Caller { actor: staff_actor(user_id), scope }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_can_do_what_the_issue_gives_it() {
        use PortalAction::*;
        let check = |role: StaffRole, can: &[PortalAction]| {
            for action in PortalAction::ALL {
                assert_eq!(allows(role, action), can.contains(&action), "{role:?} {action:?}");
            }
        };
        check(StaffRole::Viewer, &[Read]);
        let support =
            [Read, SuspendLicense, ReactivateLicense, ReleaseDeployment, ResendKeyEmail, DownloadOfflineFile];
        check(StaffRole::Support, &support);
        let billing = [RenewLicense, CreateLicense, EditLicense, CreateCustomer, EditCustomer];
        check(StaffRole::Billing, &[&support[..], &billing[..]].concat());
        check(StaffRole::Admin, &PortalAction::ALL);
        assert_eq!(staff_caller("stf_1", StaffRole::Support).actor, "staff:stf_1");
    }
}
