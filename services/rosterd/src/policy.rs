//! Who may call what: the one table of what each RPC needs, decided by `roster_authz`.
//!
//! | RPC | Needs |
//! |---|---|
//! | CreateWorkspace, SetExtraSeats | a service key |
//! | GetWorkspace, ListPermissions, ListPlans, GetSubscription | membership |
//! | ChangePlan | `billing.manage` |
//! | UpdateWorkspace | `settings.write` |
//! | CreateUser | `users.manage`; the new user's role grants nothing the caller lacks |
//! | GetUser | `users.read`, or the user is the caller |
//! | ListUsers | `users.read` |
//! | UpdateUser | `users.manage`; the target's current and new role grant nothing the caller lacks |
//! | DeactivateUser, ReactivateUser | `users.manage`; the target's role grants nothing the caller lacks |
//! | SetAvailability | the user is the caller, or as DeactivateUser |
//! | ChangePassword, Logout | a person (acts on the caller's own password or session) |
//! | WhoAmI, Login | nothing |
//! | GetRole, ListRoles | `users.read` or `roles.manage` |
//! | CreateRole | `roles.manage`; the caller holds every grant the role gives |
//! | UpdateRole, DeleteRole | `roles.manage`; the caller holds every grant the role has, will have, or (DeleteRole) its users move to |
//! | CheckPermission, CheckPermissions, ListEffectivePermissions | a service key, or a person asking about themselves |
//! | ListAuditEvents | `audit.read` |
//! | GetTeam, ListTeams, ListTeamMembers | membership |
//! | CreateTeam, UpdateTeam, DeleteTeam | `teams.manage` |
//! | AddTeamMember, RemoveTeamMember | `teams.manage`; the member's role grants nothing the caller lacks |
//! | AssignConversation (by strategy or by hand), UnassignConversation | `conversations.assign` on the conversation |
//! | ResolveConversation | `conversations.reply` on the conversation |
//! | GetConversationAssignment | `conversations.read` on the conversation |
//! | ListConversationAssignments | `conversations.read`; with scope ASSIGNED only the caller's own (`assignee_id` = self) |
//!
//! "On the conversation" means the resource of the check is the conversation with its current
//! assignee (nobody for a new or queued one), so a grant with scope ASSIGNED covers the caller's
//! own conversations only.
//!
//! "Grants nothing the caller lacks" is the no-escalation rule (`roster_authz::check_grantable`,
//! `check_manageable`; only admins touch admins). For changes it is decided inside the store's
//! write transaction, against the rows being changed.
//!
//! Service keys may do everything, in any workspace they name. People act only in their own
//! workspace ([`crate::auth::Caller::workspace`]). A person's status comes from their session
//! (a deactivated user has none); their role's grants come from the [`crate::authz_cache`], the
//! same copy CheckPermission answers from.

use crate::app::App;
use crate::auth::{Caller, Principal};
use crate::error::{self, permission_denied, status_with};
use roster_authz::{Decision, Permission, Resource, Role, Subject, check_manageable, decide};
use roster_identity::RoleId;
use std::sync::Arc;
use tonic::{Code, Status};

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Create workspaces: service keys only.
    ServiceKey,
    /// Read the workspace or the permission catalog: any member.
    Member,
    /// Read users (`users.read`); people may always read themselves.
    ReadUsers,
    /// Create, change, deactivate, reactivate users; change others' availability (`users.manage`).
    ManageUsers,
    /// Read roles: `users.read` (to see what people hold) or `roles.manage`.
    ReadRoles,
    /// Create, change and delete roles (`roles.manage`).
    ManageRoles,
    /// Read the audit trail (`audit.read`).
    ReadAudit,
    /// Ask about a user's permissions: service keys for anyone, people for themselves.
    CheckPermissions,
    /// Create, change and delete teams and their membership (`teams.manage`).
    ManageTeams,
    /// Change the workspace's settings (`settings.write`).
    WriteSettings,
    /// Change the workspace's plan (`billing.manage`).
    ManageBilling,
}

impl App {
    /// The role of the person calling, `None` for a service key.
    pub(crate) async fn actor_role(&self, caller: &Caller) -> Result<Option<Arc<Role>>, Status> {
        match &caller.principal {
            Principal::Service(_) => Ok(None),
            Principal::User { user, .. } => {
                self.authz.role(&user.workspace_id, &user.role).await.map(Some).map_err(error::store)
            }
        }
    }

    /// Allows or denies `caller` what `need` names; `subject` is the user the call is about, if any.
    pub(crate) async fn authorize(&self, caller: &Caller, need: Need, subject: Option<&str>) -> Result<(), Status> {
        let user = match &caller.principal {
            Principal::Service(_) => return Ok(()),
            Principal::User { user, .. } => user,
        };
        let permissions: &[Permission] = match need {
            Need::ServiceKey => {
                return Err(permission_denied("SERVICE_KEY_REQUIRED", "only internal services may call this"));
            }
            Need::Member => return Ok(()),
            Need::ReadUsers if subject == Some(user.id.as_str()) => return Ok(()),
            Need::CheckPermissions if subject.is_none_or(|s| s.is_empty() || s == user.id) => return Ok(()),
            Need::CheckPermissions => {
                return Err(permission_denied(
                    "SELF_ONLY",
                    "a person can only check their own permissions; internal services check anyone's",
                ));
            }
            Need::ReadUsers => &[Permission::UsersRead],
            Need::ManageUsers => &[Permission::UsersManage],
            Need::ReadRoles => &[Permission::UsersRead, Permission::RolesManage],
            Need::ManageRoles => &[Permission::RolesManage],
            Need::ReadAudit => &[Permission::AuditRead],
            Need::ManageTeams => &[Permission::TeamsManage],
            Need::WriteSettings => &[Permission::SettingsWrite],
            Need::ManageBilling => &[Permission::BillingManage],
        };
        self.decide_any(user, permissions, None).await
    }

    /// Allows or denies `caller` `permission` on a conversation or contact assigned to `assignee`
    /// (nobody: `None`), so that a grant with scope ASSIGNED covers only the caller's own.
    pub(crate) async fn authorize_on(
        &self,
        caller: &Caller,
        permission: Permission,
        assignee: Option<&str>,
    ) -> Result<(), Status> {
        match &caller.principal {
            Principal::Service(_) => Ok(()),
            Principal::User { user, .. } => self.decide_any(user, &[permission], Some(&Resource { assignee })).await,
        }
    }

    /// Allowed when the person's role grants any of `permissions` (on `resource`); else the first
    /// denial, with its reason.
    async fn decide_any(
        &self,
        user: &roster_store::User,
        permissions: &[Permission],
        resource: Option<&Resource<'_>>,
    ) -> Result<(), Status> {
        let role = self.authz.role(&user.workspace_id, &user.role).await.map_err(error::store)?;
        let subject = Subject { user_id: &user.id, active: true, role: &role };
        let mut first: Option<(Permission, Decision)> = None;
        for permission in permissions {
            let decision = decide(&subject, *permission, resource);
            if decision.allowed {
                return Ok(());
            }
            first.get_or_insert((*permission, decision));
        }
        let Some((permission, decision)) = first else { return Ok(()) };
        Err(status_with(
            Code::PermissionDenied,
            "PERMISSION_DENIED",
            decision.reason.to_string(),
            &[("permission", permission.to_string())],
            Default::default(),
        ))
    }

    /// No escalation, for calls the store does not guard itself (another user's availability): a
    /// person may act on a user only if that user's role grants nothing the person lacks.
    pub(crate) async fn may_act_on(&self, caller: &Caller, target_role: &RoleId) -> Result<(), Status> {
        let Principal::User { user, .. } = &caller.principal else { return Ok(()) };
        let actor = self.authz.role(&user.workspace_id, &user.role).await.map_err(error::store)?;
        let target = self.authz.role(&user.workspace_id, target_role).await.map_err(error::store)?;
        check_manageable(&actor, &target).map_err(|e| error::escalation(&e))
    }
}
