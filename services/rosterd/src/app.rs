//! What every handler shares: the server's state, the preamble of a call and the follow-ups of a
//! change.

use crate::auth::{Caller, Hasher};
use crate::authz_cache::AuthzCache;
use crate::error;
use crate::feed::Feed;
use crate::keys::{self, Beyond, Keys, ServiceKey};
use crate::mail::Mails;
use crate::metrics::Metrics;
use crate::policy::Need;
use crate::throttle::LoginThrottle;
use roster_store::{Changed, Context, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tonic::{Request, Status};

/// The server's state: the store, how it hashes, and what follows a change.
pub(crate) struct App {
    pub(crate) store: Store,
    pub(crate) hasher: Arc<Hasher>,
    pub(crate) session_ttl: Duration,
    /// The emails it sends, and their links.
    pub(crate) mails: Mails,
    /// Wakes the outbox worker when a change queued an email.
    pub(crate) outbox: Arc<Notify>,
    /// Every workspace's roles and members, for answering checks from memory.
    pub(crate) authz: Arc<AuthzCache>,
    pub(crate) metrics: Arc<Metrics>,
    /// Failed-login counts, consulted before a login does any work.
    pub(crate) login_throttle: LoginThrottle,
    /// The change feed's watchers, woken as changes commit.
    pub(crate) feed: Arc<Feed>,
    /// The service keys in force.
    pub(crate) keys: Arc<Keys>,
}

/// A call past its preamble: who calls, in which workspace, allowed what the call needs.
pub(crate) struct Call {
    pub(crate) caller: Caller,
    pub(crate) workspace_id: String,
    /// The audit facts of the change it makes: who, which request, when.
    pub(crate) ctx: Context,
}

/// A request that names the workspace it addresses (empty: the calling person's own).
pub(crate) trait Addressed {
    fn workspace_id(&self) -> &str;
}

impl App {
    /// The caller of a request, as the request-context layer authenticated it.
    pub(crate) fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
        request.extensions().get::<Caller>().cloned().ok_or_else(|| {
            error::internal(&std::io::Error::other("a protected method reached its handler without a caller"))
        })
    }

    /// The preamble of every call that addresses a workspace: the caller, the workspace it may
    /// reach (a person only their own, a service key bound to a workspace only that one), and
    /// `need` allowed ([`crate::policy`]). A call only a service key (or only a person) may make
    /// says so before it looks at the workspace.
    pub(crate) async fn call<T: Addressed>(&self, request: &Request<T>, need: Need<'_>) -> Result<Call, Status> {
        let caller = Self::caller(request)?;
        if matches!(need, Need::ServiceKey | Need::Take) {
            self.authorize(&caller, need).await?;
        }
        let requested = request.get_ref().workspace_id();
        // A malformed id is refused as such below, not audited as a reach beyond the key's scope.
        let well_formed = requested.is_empty() || crate::api::is_record_id(requested);
        if let Some(key) = caller.service_key()
            && well_formed
            && !key.reaches(requested)
        {
            return Err(self.refuse(&caller, key, Beyond::Workspace(requested)).await);
        }
        let workspace_id = caller.workspace(requested)?;
        self.authorize(&caller, need).await?;
        let ctx = caller.context();
        Ok(Call { caller, workspace_id, ctx })
    }

    /// Refuses `key` a call beyond its scope ([`keys::refuse`]).
    pub(crate) async fn refuse(&self, caller: &Caller, key: &ServiceKey, beyond: Beyond<'_>) -> Status {
        keys::refuse(&self.store, key, &caller.context(), &caller.method, beyond).await
    }

    /// Checks that a workspace a service key named exists, so that listing an unknown workspace
    /// answers NOT_FOUND rather than an empty page. A person's workspace always exists.
    pub(crate) async fn ensure_workspace(&self, call: &Call) -> Result<(), Status> {
        if call.caller.user().is_none() {
            self.store.workspace(&call.workspace_id).await.map_err(error::store)?;
        }
        Ok(())
    }

    /// Runs what a committed change calls for, and hands back its answer: the authorization copy
    /// brought up to date (every later check on this process sees the change), the outbox woken,
    /// queued conversations handed out. The change itself has committed, so a failure here is
    /// logged, not answered: queued conversations stay queued for the next trigger or the sweep.
    pub(crate) async fn settle<T>(&self, call: &Call, changed: Changed<T>) -> T {
        self.settle_in(&call.ctx, &call.workspace_id, changed).await
    }

    /// [`App::settle`] for a change made by `ctx` in `workspace_id` outside a [`Call`] (a change
    /// made through a password link, or in the background).
    pub(crate) async fn settle_in<T>(&self, ctx: &Context, workspace_id: &str, changed: Changed<T>) -> T {
        self.feed.wake();
        let effects = changed.effects;
        if effects.permissions {
            self.authz.refresh(workspace_id).await;
        }
        if effects.mail {
            self.outbox.notify_one();
        }
        if effects.room {
            self.drain_queues(ctx, workspace_id).await;
        }
        changed.value
    }

    /// Hands out the workspace's queued conversations after a change that may have made an agent
    /// eligible; failures are logged (see [`App::settle`]).
    pub(crate) async fn drain_queues(&self, ctx: &Context, workspace_id: &str) {
        if let Err(err) = self.store.drain_queues(ctx, workspace_id).await {
            tracing::warn!(error = %crate::error::error_chain(&err), "handing out queued conversations failed");
        }
    }
}

/// The requests whose `workspace_id` field names the workspace they address.
macro_rules! addressed {
    ($($request:ident),+ $(,)?) => {
        $(impl Addressed for roster_proto::v1::$request {
            fn workspace_id(&self) -> &str {
                &self.workspace_id
            }
        })+
    };
}

addressed!(
    GetWorkspaceRequest,
    CreateUserRequest,
    GetUserRequest,
    ListUsersRequest,
    UpdateUserRequest,
    DeactivateUserRequest,
    ResendInvitationRequest,
    SendPasswordResetRequest,
    SetPasswordRequest,
    ReactivateUserRequest,
    SetAvailabilityRequest,
    CreateRoleRequest,
    GetRoleRequest,
    ListRolesRequest,
    UpdateRoleRequest,
    DeleteRoleRequest,
    CheckPermissionRequest,
    CheckPermissionsRequest,
    ListEffectivePermissionsRequest,
    ListAuditEventsRequest,
    ListEventsRequest,
    WatchEventsRequest,
    CreateTeamRequest,
    GetTeamRequest,
    ListTeamsRequest,
    UpdateTeamRequest,
    DeleteTeamRequest,
    AddTeamMemberRequest,
    RemoveTeamMemberRequest,
    UpdateTeamMemberRequest,
    ListTeamMembersRequest,
    AssignConversationRequest,
    UnassignConversationRequest,
    ResolveConversationRequest,
    GetConversationAssignmentRequest,
    ListConversationAssignmentsRequest,
    TakeConversationRequest,
    GetSubscriptionRequest,
    ChangePlanRequest,
    SetExtraSeatsRequest,
);

/// UpdateWorkspace names its workspace in the resource it changes.
impl Addressed for roster_proto::v1::UpdateWorkspaceRequest {
    fn workspace_id(&self) -> &str {
        self.workspace.as_ref().map_or("", |w| w.id.as_str())
    }
}
