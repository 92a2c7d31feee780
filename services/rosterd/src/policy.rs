//! Who may call what: the one table of what each RPC needs, decided by `roster_authz`.
//!
//! | RPC | Needs |
//! |---|---|
//! | CreateWorkspace | a service key not bound to a workspace |
//! | SetExtraSeats | a service key |
//! | GetWorkspace, ListPermissions, ListPlans, GetSubscription | membership |
//! | ChangePlan | `billing.manage` |
//! | UpdateWorkspace | `settings.write` |
//! | CreateUser | `users.manage`; the new user's role grants nothing the caller lacks |
//! | GetUser | `users.read`, or the user is the caller |
//! | ListUsers | `users.read` |
//! | UpdateUser | `users.manage`; the target's current and new role grant nothing the caller lacks |
//! | DeactivateUser, ReactivateUser, ResendInvitation, SendPasswordReset, SetPassword | `users.manage`; the target's role grants nothing the caller lacks |
//! | SetAvailability | the user is the caller, or as DeactivateUser |
//! | ChangePassword, Logout | a person (acts on the caller's own password or session) |
//! | WhoAmI, Login, RequestPasswordReset, SetPasswordWithToken | nothing |
//! | GetRole, ListRoles | `users.read` or `roles.manage` |
//! | CreateRole | `roles.manage`; the caller holds every grant the role gives |
//! | UpdateRole, DeleteRole | `roles.manage`; the caller holds every grant the role has, will have, or (DeleteRole) its users move to |
//! | CheckPermission, CheckPermissions, ListEffectivePermissions | a service key, or a person asking about themselves |
//! | ListAuditEvents | `audit.read` |
//! | GetTeam, ListTeams, ListTeamMembers | membership |
//! | CreateTeam, UpdateTeam, DeleteTeam | `teams.manage` |
//! | AddTeamMember, UpdateTeamMember, RemoveTeamMember | `teams.manage`; the member's role grants nothing the caller lacks |
//! | AssignConversation (by strategy or by hand), UnassignConversation | `conversations.assign` on the conversation |
//! | ResolveConversation | `conversations.reply` on the conversation |
//! | GetConversationAssignment | `conversations.read` on the conversation |
//! | ListConversationAssignments | `conversations.read`; with scope ASSIGNED only the caller's own (`assignee_id` = self); or a team's queue for a member holding `conversations.take` |
//! | TakeConversation | a person holding `conversations.take`, a member of the team (decided by the store) |
//!
//! "On the conversation" means the resource of the check is the conversation with its current
//! assignee (nobody for a new or queued one), so a grant with scope ASSIGNED covers the caller's
//! own conversations only.
//!
//! Who decides what: this table (the permission a call needs) is decided here, with
//! `roster_authz::decide` on the caller's role from the [`crate::authz_cache`], the same copy
//! CheckPermission answers from. "Grants nothing the caller lacks" — the no-escalation rule
//! (`roster_authz::check_grantable`, `check_manageable`; only admins touch admins) — and the
//! last-admin guard are decided by the store, inside the transaction that makes the change, with
//! the caller's role and the rows as that transaction reads them. "Asking about themselves"
//! (CheckPermission and its kin) is decided per check by `api::authorization`, since a batch
//! answers each item on its own.
//!
//! Service keys may do everything, in any workspace they name, unless the keys file narrows them
//! to some methods (refused before the request is read, [`crate::auth`]) or to one workspace
//! (refused in [`App::call`]); see [`crate::keys`]. People act only in their own workspace
//! ([`crate::auth::Caller::workspace`]). A person's status comes from their session
//! (a deactivated user has none).

use crate::app::App;
use crate::auth::{Caller, Principal};
use crate::error::{self, permission_denied, status_with};
use crate::keys::Beyond;
use roster_authz::{Decision, Permission, Resource, Subject, decide};
use tonic::{Code, Status};

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need<'a> {
    /// Create workspaces: service keys not bound to a workspace.
    NewWorkspace,
    /// Grant extra seats: service keys only.
    ServiceKey,
    /// Read the workspace, its teams, the permission catalog; ask about oneself: any member.
    Member,
    /// Read users (`users.read`).
    ReadUsers,
    /// Read this user: `users.read`, or the user is the caller.
    ReadUser(&'a str),
    /// Create, change, deactivate, reactivate users (`users.manage`).
    ManageUsers,
    /// Change this user's availability (empty: the caller's own): the caller, or `users.manage`.
    SetAvailability(&'a str),
    /// Read roles: `users.read` (to see what people hold) or `roles.manage`.
    ReadRoles,
    /// Create, change and delete roles (`roles.manage`).
    ManageRoles,
    /// Read the audit trail (`audit.read`).
    ReadAudit,
    /// Create, change and delete teams and their membership (`teams.manage`).
    ManageTeams,
    /// Change the workspace's settings (`settings.write`).
    WriteSettings,
    /// Change the workspace's plan (`billing.manage`).
    ManageBilling,
    /// Take queued conversations for oneself (`conversations.take`): people only.
    Take,
    /// Use `permission` on a conversation assigned to this user (`None`: nobody), so that a grant
    /// with scope ASSIGNED covers the caller's own conversations only.
    On(Permission, Option<&'a str>),
}

impl App {
    /// Allows or denies `caller` what `need` names.
    pub(crate) async fn authorize(&self, caller: &Caller, need: Need<'_>) -> Result<(), Status> {
        let user = match &caller.principal {
            Principal::Service(_) if need == Need::Take => {
                return Err(permission_denied(
                    "PERSON_REQUIRED",
                    "only a person takes a conversation, for themselves; services assign with AssignConversation",
                ));
            }
            Principal::Service(key) if need == Need::NewWorkspace && key.workspace_id().is_some() => {
                return Err(self.refuse(caller, key, Beyond::Workspace("")).await);
            }
            Principal::Service(_) => return Ok(()),
            Principal::User { user, .. } => user,
        };
        let (permissions, resource): (&[Permission], _) = match need {
            Need::ServiceKey | Need::NewWorkspace => {
                return Err(permission_denied("SERVICE_KEY_REQUIRED", "only internal services may call this"));
            }
            Need::Member => return Ok(()),
            Need::ReadUser(id) if id == user.id => return Ok(()),
            Need::SetAvailability(id) if id.is_empty() || id == user.id => return Ok(()),
            Need::ReadUsers | Need::ReadUser(_) => (&[Permission::UsersRead], None),
            Need::ManageUsers | Need::SetAvailability(_) => (&[Permission::UsersManage], None),
            Need::ReadRoles => (&[Permission::UsersRead, Permission::RolesManage], None),
            Need::ManageRoles => (&[Permission::RolesManage], None),
            Need::ReadAudit => (&[Permission::AuditRead], None),
            Need::ManageTeams => (&[Permission::TeamsManage], None),
            Need::WriteSettings => (&[Permission::SettingsWrite], None),
            Need::ManageBilling => (&[Permission::BillingManage], None),
            Need::Take => (&[Permission::ConversationsTake], None),
            Need::On(permission, assignee) => (&[permission][..], Some(Resource { assignee })),
        };
        let role = self.authz.role(&user.workspace_id, &user.role).await.map_err(error::store)?;
        let subject = Subject { user_id: &user.id, active: true, role: &role };
        let mut first: Option<(Permission, Decision)> = None;
        for permission in permissions {
            let decision = decide(&subject, *permission, resource.as_ref());
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
}
