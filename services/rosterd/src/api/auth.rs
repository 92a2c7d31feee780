use crate::app::App;
use crate::auth::{Lane, Principal, now_millis, random_bytes};
use crate::context::RequestId;
use crate::convert;
use crate::error::{self, Violations, checked, permission_denied, unauthenticated};
use crate::mail::Recipient;
use roster_identity::{Email, LinkToken, Password, PasswordHash, SessionToken, Slug};
use roster_proto::v1::{self as pb, auth_service_server::AuthService};
use roster_store::{Actor, Conflict, Context, Entity, LinkSender, LinkState, StoreError, UserStatus};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub(crate) struct AuthApi(pub(crate) Arc<App>);

fn person_required() -> Status {
    permission_denied("PERSON_REQUIRED", "only a person signed in with a session can do this, not a service key")
}

/// A hash made at a lower cost than the configured one is made again at that cost, now that the
/// password is known, and stored if it is still the hash verified. In the background: the login
/// has its answer.
fn upgrade_hash(app: &Arc<App>, user: &roster_store::User, verified: PasswordHash, password: Password) {
    if verified.cost().is_none_or(|cost| cost >= app.hasher.cost().get()) {
        return;
    }
    let (app, workspace_id, user_id) = (app.clone(), user.workspace_id.clone(), user.id.clone());
    tokio::spawn(async move {
        let upgraded = match app.hasher.hash(Lane::Login, password).await {
            Ok(upgraded) => upgraded,
            Err(status) => return tracing::debug!(message = status.message(), "password hash not upgraded now"),
        };
        match app.store.upgrade_password_hash(&workspace_id, &user_id, &verified, &upgraded).await {
            Ok(true) => tracing::info!(user_id, cost = app.hasher.cost().get(), "password hash upgraded"),
            Ok(false) => {}
            Err(err) => tracing::warn!(user_id, error = %err, "could not upgrade a password hash"),
        }
    });
}

/// Sends a reset link to the account `slug` and `email` name, if it exists and is active; in the
/// background, after the request was answered, so that the answer tells nothing about the
/// account, in what it says or in how long it takes.
fn send_reset_link(app: &Arc<App>, slug: Slug, email: Email, request_id: String) {
    let app = app.clone();
    tokio::spawn(async move {
        let sent = async {
            let Some(candidate) = app.store.login_candidate(&slug, &email).await? else { return Ok(false) };
            // No account, or an invited one (who has no password to reset).
            let Some((user, _)) = candidate.user else { return Ok(false) };
            if user.status != UserStatus::Active {
                return Ok(false);
            }
            let workspace = app.store.workspace(&candidate.workspace_id).await?;
            let to = Recipient {
                slug: &workspace.slug,
                workspace: &workspace.name,
                email: &user.email,
                name: &user.full_name,
            };
            let now = now_millis();
            let Ok(link) = app.mails.reset(&to, LinkSender::Owner, now) else { return Ok(false) };
            let ctx = Context { actor: Actor::Anonymous, request_id, now };
            let sent = app.store.send_link(&ctx, &candidate.workspace_id, &user.id, link, LinkSender::Owner).await?;
            app.settle_in(&ctx, &candidate.workspace_id, sent).await;
            Ok::<_, StoreError>(true)
        };
        match sent.await {
            Ok(true) => tracing::info!("password reset link queued"),
            Ok(false) | Err(StoreError::Conflict(_)) => tracing::info!("password reset asked for no active account"),
            Err(err) => tracing::warn!(error = %crate::error::error_chain(&err), "could not send a reset link"),
        }
    });
}

/// The request id the request-context layer gave a call without a caller.
fn request_id<T>(request: &Request<T>) -> String {
    request.extensions().get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default()
}

fn login_failed() -> Status {
    unauthenticated("INVALID_CREDENTIALS", "the workspace, email or password is wrong")
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let app = &self.0;
        let request_id = request_id(&request);
        let address = app.login_throttle.client_address(request.remote_addr(), request.metadata());
        let req = request.into_inner();
        let mut v = Violations::new();
        let slug = v.check("workspace_slug", Slug::parse(&req.workspace_slug));
        let email = v.check("email", Email::parse(&req.email));
        if req.password.is_empty() {
            v.add("password", "required");
        }
        v.finish()?;
        let (slug, email) = (checked(slug)?, checked(email)?);
        // Before any lookup or bcrypt work: refused attempts cost nothing.
        let attempt = app.login_throttle.begin_login(&slug, &email, address, now_millis()).await?;

        let candidate = app.store.login_candidate(&slug, &email).await.map_err(error::store)?;
        let (workspace_id, found) = match candidate {
            Some(c) => (Some(c.workspace_id), c.user),
            None => (None, None),
        };
        let (user, hash) = found.unzip();
        // The same bcrypt work whether or not the workspace and the email exist.
        let matched = app.hasher.verify(Lane::Login, hash.clone(), Password::candidate(&req.password)).await?;
        let now = now_millis();
        let failure = Context { actor: Actor::Anonymous, request_id: request_id.clone(), now };
        let (user, verified) = match (matched, user, hash) {
            (true, Some(user), Some(hash)) if user.status == UserStatus::Active => (user, hash),
            (matched, user, _) => {
                attempt.failed(now).await;
                if let Some(workspace_id) = &workspace_id {
                    app.store
                        .record_login_failure(&failure, workspace_id, email.as_str())
                        .await
                        .map_err(error::store)?;
                }
                return Err(if matched && user.is_some() {
                    permission_denied("USER_DEACTIVATED", "this user is deactivated; ask an admin to reactivate it")
                } else {
                    login_failed()
                });
            }
        };

        let token = SessionToken::from_random(random_bytes()?);
        let expires_at = now.saturating_add(i64::try_from(app.session_ttl.as_millis()).unwrap_or(i64::MAX));
        let success = Context { actor: Actor::User(user.id.clone()), request_id, now };
        let user = match app.store.create_session(&success, &user, &verified, &token.hash(), expires_at).await {
            Ok(user) => {
                attempt.succeeded().await;
                user
            }
            // The password changed since it was checked: the offered one may be the old one.
            Err(StoreError::Conflict(Conflict::StaleVersion { .. })) => {
                attempt.failed(now).await;
                return Err(login_failed());
            }
            // Deactivated between the password check and now.
            Err(StoreError::NotFound(Entity::User)) => {
                attempt.failed(now).await;
                return Err(permission_denied(
                    "USER_DEACTIVATED",
                    "this user is deactivated; ask an admin to reactivate it",
                ));
            }
            Err(err) => return Err(error::store(err)),
        };
        tracing::info!(user_id = %user.id, workspace_id = %user.workspace_id, "login succeeded");
        if let Some(password) = Password::candidate(&req.password) {
            upgrade_hash(app, &user, verified, password);
        }
        Ok(Response::new(pb::LoginResponse {
            session_token: token.reveal().to_owned(),
            expire_time: Some(convert::timestamp(expires_at)),
            user: Some(convert::user(&user)),
        }))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        let app = &self.0;
        let request_id = request_id(&request);
        let address = app.login_throttle.client_address(request.remote_addr(), request.metadata());
        let req = request.into_inner();
        let mut v = Violations::new();
        let slug = v.check("workspace_slug", Slug::parse(&req.workspace_slug));
        let email = v.check("email", Email::parse(&req.email));
        v.finish()?;
        let (slug, email) = (checked(slug)?, checked(email)?);
        // Counted whether or not the account exists: a refusal says nothing about it either.
        app.login_throttle.count_reset_request(&slug, &email, address, now_millis()).await?;
        send_reset_link(app, slug, email, request_id);
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn set_password_with_token(
        &self,
        request: Request<pb::SetPasswordWithTokenRequest>,
    ) -> Result<Response<pb::SetPasswordWithTokenResponse>, Status> {
        let app = &self.0;
        let request_id = request_id(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let token = v.check("token", LinkToken::parse(&req.token));
        let password = v.check("new_password", Password::parse(&req.new_password));
        v.finish()?;
        let token = checked(token)?.hash();
        // A token that cannot be used costs no bcrypt work.
        match app.store.link_state(&token, now_millis()).await.map_err(error::store)? {
            LinkState::Valid(_) => {}
            LinkState::Expired => return Err(error::store(StoreError::Conflict(Conflict::LinkExpired))),
            LinkState::Unknown => return Err(error::store(StoreError::Conflict(Conflict::LinkInvalid))),
        }
        let hash = app.hasher.hash(Lane::Account, checked(password)?).await?;
        let ctx = Context { actor: Actor::Anonymous, request_id, now: now_millis() };
        let changed = app.store.redeem_link(&ctx, &token, &hash).await.map_err(error::store)?;
        let workspace_id = changed.value.workspace_id.clone();
        let user = app.settle_in(&ctx, &workspace_id, changed).await;
        tracing::info!(user_id = %user.id, workspace_id = %user.workspace_id, "password set with a link");
        Ok(Response::new(pb::SetPasswordWithTokenResponse { user: Some(convert::user(&user)) }))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let app = &self.0;
        let caller = App::caller(&request)?;
        let Principal::User { user, token, .. } = &caller.principal else { return Err(person_required()) };
        app.store.delete_session(&caller.context(), &user.workspace_id, &user.id, token).await.map_err(error::store)?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = App::caller(&request)?;
        Ok(Response::new(match caller.principal {
            Principal::Service(key) => pb::WhoAmIResponse {
                principal: Some(pb::who_am_i_response::Principal::ServiceKeyName(key.name.clone())),
                session_expire_time: None,
            },
            Principal::User { user, expires_at, .. } => pb::WhoAmIResponse {
                principal: Some(pb::who_am_i_response::Principal::User(convert::user(&user))),
                session_expire_time: Some(convert::timestamp(expires_at)),
            },
        }))
    }
}
