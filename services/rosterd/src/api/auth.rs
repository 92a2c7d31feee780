use crate::app::App;
use crate::auth::{Lane, Principal, now_millis, random_bytes};
use crate::context::RequestId;
use crate::convert;
use crate::error::{self, Violations, checked, permission_denied, unauthenticated};
use roster_identity::{Email, Password, PasswordHash, SessionToken, Slug};
use roster_proto::v1::{self as pb, auth_service_server::AuthService};
use roster_store::{Actor, Conflict, Context, Entity, StoreError, UserStatus};
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

fn login_failed() -> Status {
    unauthenticated("INVALID_CREDENTIALS", "the workspace, email or password is wrong")
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let app = &self.0;
        let request_id = request.extensions().get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default();
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
            Principal::Service(name) => pb::WhoAmIResponse {
                principal: Some(pb::who_am_i_response::Principal::ServiceKeyName(name)),
                session_expire_time: None,
            },
            Principal::User { user, expires_at, .. } => pb::WhoAmIResponse {
                principal: Some(pb::who_am_i_response::Principal::User(convert::user(&user))),
                session_expire_time: Some(convert::timestamp(expires_at)),
            },
        }))
    }
}
