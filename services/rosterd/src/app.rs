//! What every handler shares.

use crate::auth::{self, Caller, Hasher, ServiceKeys};
use crate::authz_cache::AuthzCache;
use crate::metrics::Metrics;
use crate::throttle::LoginThrottle;
use roster_identity::{Email, FullName, Slug, WorkspaceName};
use roster_store::{Context, Mail, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tonic::{Request, Status};

/// The server's state: the store, the credentials it accepts and how it hashes.
pub(crate) struct App {
    pub(crate) store: Store,
    pub(crate) keys: ServiceKeys,
    pub(crate) hasher: Hasher,
    pub(crate) session_ttl: Duration,
    pub(crate) sign_in_url: String,
    /// Wakes the outbox worker when a change queued an email.
    pub(crate) outbox: Arc<Notify>,
    /// Every workspace's roles and members, for answering checks from memory.
    pub(crate) authz: Arc<AuthzCache>,
    pub(crate) metrics: Arc<Metrics>,
    /// Failed-login counts, consulted before a login does any work.
    pub(crate) login_throttle: LoginThrottle,
}

impl App {
    /// Authenticates the caller of a request.
    pub(crate) async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        auth::authenticate(&self.store, &self.keys, request).await
    }

    /// Checks that a workspace a service key named exists, so that listing an unknown workspace
    /// answers NOT_FOUND rather than an empty page. A person's workspace always exists.
    pub(crate) async fn ensure_workspace(&self, caller: &Caller, workspace_id: &str) -> Result<(), Status> {
        if caller.user().is_none() {
            self.store.workspace(workspace_id).await.map_err(crate::error::store)?;
        }
        Ok(())
    }

    /// Hands out the workspace's queued conversations after a change that may have made an agent
    /// eligible. The change itself has committed, so a failure here is logged, not answered: the
    /// conversations stay queued, not lost, and the next such change hands them out.
    pub(crate) async fn drain_queues(&self, ctx: &Context, workspace_id: &str) {
        if let Err(err) = self.store.drain_queues(ctx, workspace_id).await {
            tracing::warn!(error = %crate::error::error_chain(&err), "handing out queued conversations failed");
        }
    }

    /// The welcome email of a new user: where and as whom to sign in, never the password.
    pub(crate) fn welcome(&self, slug: &Slug, workspace: &WorkspaceName, email: &Email, name: &FullName) -> Mail {
        Mail {
            to: email.clone(),
            subject: format!("Welcome to {workspace} on Roster"),
            body: format!(
                "Hello {name},\n\n\
                 You have been added to the {workspace} workspace on Roster.\n\n\
                 Sign in at: {url}\n\
                 Workspace: {slug}\n\
                 Email: {email}\n\n\
                 Your password is the one your administrator set for you; ask them if you do not have it.\n\
                 You can change it once you are signed in.\n",
                url = self.sign_in_url,
            ),
        }
    }
}
