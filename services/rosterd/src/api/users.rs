use crate::app::{Addressed, App};
use crate::auth::{Lane, Principal, now_millis};
use crate::convert;
use crate::error::{self, Violations, checked, invalid, permission_denied};
use crate::mail::Recipient;
use crate::policy::Need;
use roster_authz::RoleId;
use roster_identity::{Email, FullName, Password};
use roster_proto::v1::{self as pb, user_service_server::UserService};
use roster_store::{LinkPurpose, LinkSender, NewUser, UserChanges, UserFilter, UserStatus, Welcome};
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};

pub(crate) struct UserApi(pub(crate) Arc<App>);

const PAGE_KIND: &str = "users";

fn user_response(user: &roster_store::User) -> Option<pb::User> {
    Some(convert::user(user))
}

/// DeactivateUserRequest and ReactivateUserRequest: the user, and (reactivation) an idempotency key.
trait StatusChange: Addressed {
    fn user_id(&self) -> &str;
    fn request_id(&self) -> &str {
        ""
    }
}

impl StatusChange for pb::DeactivateUserRequest {
    fn user_id(&self) -> &str {
        &self.user_id
    }
}

impl StatusChange for pb::ReactivateUserRequest {
    fn user_id(&self) -> &str {
        &self.user_id
    }
    fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl UserApi {
    /// DeactivateUser and ReactivateUser.
    async fn set_status(&self, request: Request<impl StatusChange>, status: UserStatus) -> Result<pb::User, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageUsers).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        super::record_id(&mut v, "user_id", req.user_id());
        let request_id = super::request_id(&mut v, req.request_id());
        v.finish()?;
        let changed = app
            .store
            .set_user_status(&call.ctx, &call.workspace_id, req.user_id(), status, request_id)
            .await
            .map_err(error::store)?;
        let user = app.settle(&call, changed).await;
        tracing::info!(user_id = %user.id, status = status.as_str(), "user status set");
        Ok(convert::user(&user))
    }
}

/// ResendInvitationRequest and SendPasswordResetRequest: the user.
trait LinkRequest: Addressed {
    fn user_id(&self) -> &str;
}

impl LinkRequest for pb::ResendInvitationRequest {
    fn user_id(&self) -> &str {
        &self.user_id
    }
}

impl LinkRequest for pb::SendPasswordResetRequest {
    fn user_id(&self) -> &str {
        &self.user_id
    }
}

impl UserApi {
    /// ResendInvitation and SendPasswordReset: a fresh link of `purpose`, sent by a manager.
    async fn send_link(&self, request: Request<impl LinkRequest>, purpose: LinkPurpose) -> Result<pb::User, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageUsers).await?;
        let user_id = request.get_ref().user_id();
        let mut v = Violations::new();
        super::record_id(&mut v, "user_id", user_id);
        v.finish()?;
        let user = app.store.user(&call.workspace_id, user_id).await.map_err(error::store)?;
        let workspace = app.store.workspace(&call.workspace_id).await.map_err(error::store)?;
        let to =
            Recipient { slug: &workspace.slug, workspace: &workspace.name, email: &user.email, name: &user.full_name };
        let link = match purpose {
            LinkPurpose::Invitation => app.mails.invitation(&to, call.ctx.now)?,
            LinkPurpose::Reset => app.mails.reset(&to, LinkSender::Manager, call.ctx.now)?,
        };
        let changed = app
            .store
            .send_link(&call.ctx, &call.workspace_id, user_id, link, LinkSender::Manager)
            .await
            .map_err(error::store)?;
        let user = app.settle(&call, changed).await;
        tracing::info!(user_id = %user.id, purpose = purpose.as_str(), "password link sent");
        Ok(convert::user(&user))
    }
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageUsers).await?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let email = v.check("email", Email::parse(&req.email));
        let full_name = v.check("full_name", FullName::parse(&req.full_name));
        // No password: invited, to choose their own.
        let password = (!req.password.is_empty()).then(|| v.check("password", Password::parse(&req.password)));
        let role = v.check("role", RoleId::parse(&req.role));
        let request_id = super::request_id(&mut v, &req.request_id);
        v.finish()?;
        let (email, full_name, role) = (checked(email)?, checked(full_name)?, checked(role)?);
        let workspace = app.store.workspace(&call.workspace_id).await.map_err(error::store)?;
        let to = Recipient { slug: &workspace.slug, workspace: &workspace.name, email: &email, name: &full_name };
        let welcome = match password {
            Some(password) => {
                let password_hash = app.hasher.hash(Lane::Account, checked(password)?).await?;
                Welcome::Password(password_hash, app.mails.welcome(&to))
            }
            None => Welcome::Invitation(app.mails.invitation(&to, call.ctx.now)?),
        };
        let new = NewUser { email, full_name, role };
        let changed = app
            .store
            .create_user(&call.ctx, &call.workspace_id, new, welcome, request_id)
            .await
            .map_err(error::store)?;
        let user = app.settle(&call, changed).await;
        Ok(Response::new(pb::CreateUserResponse { user: user_response(&user) }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ReadUser(&request.get_ref().user_id)).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        super::record_id(&mut v, "user_id", &req.user_id);
        v.finish()?;
        let user = app.store.user(&call.workspace_id, &req.user_id).await.map_err(error::store)?;
        Ok(Response::new(pb::GetUserResponse { user: user_response(&user) }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ReadUsers).await?;
        app.ensure_workspace(&call).await?;
        let req = request.into_inner();
        let limit = convert::page_size(req.page_size)?;
        // The cursor is the last email of the previous page; anything else is not our token.
        let after = convert::decode_page_token(PAGE_KIND, &req.page_token)?
            .map(|cursor| match Email::parse(&cursor) {
                Ok(email) if email.as_str() == cursor => Ok(cursor),
                _ => Err(invalid("page_token", "not a page token of this listing; start again without one")),
            })
            .transpose()?;
        let status = convert::status_filter(req.status)?;
        let role = if req.role.is_empty() {
            None
        } else {
            Some(RoleId::parse(&req.role).map_err(|e| invalid("role", e.to_string()))?)
        };
        let team = if req.team_id.is_empty() {
            None
        } else if super::is_record_id(&req.team_id) {
            Some(req.team_id.clone())
        } else {
            return Err(invalid("team_id", "not an id this server issued"));
        };
        let filter = UserFilter { status, role, team };
        let page =
            app.store.list_users(&call.workspace_id, &filter, after.as_deref(), limit).await.map_err(error::store)?;
        Ok(Response::new(pb::ListUsersResponse {
            users: page.items.iter().map(convert::user).collect(),
            next_page_token: convert::encode_page_token(PAGE_KIND, page.next),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageUsers).await?;
        let req = request.into_inner();
        let Some(user) = req.user else { return Err(invalid("user", "required")) };
        let mut v = Violations::new();
        super::record_id(&mut v, "user.id", &user.id);
        let set = [
            ("full_name", !user.full_name.is_empty()),
            ("role", !user.role.is_empty()),
            ("email", !user.email.is_empty()),
        ];
        let paths = super::mask_paths(&mut v, req.update_mask, &set);
        let mut changes = UserChanges::default();
        for path in &paths {
            match path.as_str() {
                "full_name" => changes.full_name = v.check("user.full_name", FullName::parse(&user.full_name)),
                "role" => changes.role = v.check("user.role", RoleId::parse(&user.role)),
                "email" => changes.email = v.check("user.email", Email::parse(&user.email)),
                "status" => v.add("update_mask", "status changes through DeactivateUser and ReactivateUser"),
                "availability" => v.add("update_mask", "availability changes through SetAvailability"),
                other => {
                    let updatable = "updatable: full_name, role, email";
                    v.add("update_mask", format!("unknown or read-only path {other:?}; {updatable}"))
                }
            }
        }
        let expected_version = super::etag(&mut v, "user.etag", &user.etag);
        v.finish()?;
        // An invited user whose email is corrected is invited again at the new address, in the
        // same transaction (the store uses the invitation only then).
        let invitation = match &changes.email {
            Some(email) => {
                let current = app.store.user(&call.workspace_id, &user.id).await.map_err(error::store)?;
                let workspace = app.store.workspace(&call.workspace_id).await.map_err(error::store)?;
                let name = changes.full_name.as_ref().unwrap_or(&current.full_name);
                let to = Recipient { slug: &workspace.slug, workspace: &workspace.name, email, name };
                Some(app.mails.invitation(&to, call.ctx.now)?)
            }
            None => None,
        };
        let changed = app
            .store
            .update_user(&call.ctx, &call.workspace_id, &user.id, changes, expected_version, invitation)
            .await
            .map_err(|e| error::store_with_role_field(e, "user.role"))?;
        let updated = app.settle(&call, changed).await;
        Ok(Response::new(pb::UpdateUserResponse { user: user_response(&updated) }))
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<Response<pb::DeactivateUserResponse>, Status> {
        let user = self.set_status(request, UserStatus::Deactivated).await?;
        Ok(Response::new(pb::DeactivateUserResponse { user: Some(user) }))
    }

    async fn reactivate_user(
        &self,
        request: Request<pb::ReactivateUserRequest>,
    ) -> Result<Response<pb::ReactivateUserResponse>, Status> {
        let user = self.set_status(request, UserStatus::Active).await?;
        Ok(Response::new(pb::ReactivateUserResponse { user: Some(user) }))
    }

    async fn resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Result<Response<pb::ResendInvitationResponse>, Status> {
        let user = self.send_link(request, LinkPurpose::Invitation).await?;
        Ok(Response::new(pb::ResendInvitationResponse { user: Some(user) }))
    }

    async fn send_password_reset(
        &self,
        request: Request<pb::SendPasswordResetRequest>,
    ) -> Result<Response<pb::SendPasswordResetResponse>, Status> {
        let user = self.send_link(request, LinkPurpose::Reset).await?;
        Ok(Response::new(pb::SendPasswordResetResponse { user: Some(user) }))
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Result<Response<pb::SetPasswordResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageUsers).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        super::record_id(&mut v, "user_id", &req.user_id);
        let password = v.check("password", Password::parse(&req.password));
        v.finish()?;
        // Whom first: no bcrypt work for a user who is not there or not the caller's to manage.
        app.store.user(&call.workspace_id, &req.user_id).await.map_err(error::store)?;
        let hash = app.hasher.hash(Lane::Account, checked(password)?).await?;
        let changed =
            app.store.set_password(&call.ctx, &call.workspace_id, &req.user_id, &hash).await.map_err(error::store)?;
        let user = app.settle(&call, changed).await;
        tracing::info!(user_id = %user.id, "password set by a manager");
        Ok(Response::new(pb::SetPasswordResponse { user: user_response(&user) }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let app = &self.0;
        let caller = App::caller(&request)?;
        let Principal::User { user, token, .. } = &caller.principal else {
            return Err(permission_denied("PERSON_REQUIRED", "only a person changes their own password"));
        };
        let req = request.get_ref();
        let mut v = Violations::new();
        if req.current_password.is_empty() {
            v.add("current_password", "required");
        }
        let new_password = v.check("new_password", Password::parse(&req.new_password));
        v.finish()?;
        // Guessing the current password with a stolen session is throttled like a login.
        let attempt = app.login_throttle.begin_password_check(&user.id, now_millis()).await?;
        let current = app.store.password_hash(&user.workspace_id, &user.id).await.map_err(error::store)?;
        let matched =
            app.hasher.verify(Lane::Account, Some(current.clone()), Password::candidate(&req.current_password)).await?;
        if !matched {
            attempt.failed(now_millis()).await;
            let mut details = tonic_types::ErrorDetails::new();
            details.add_bad_request_violation("current_password", "does not match");
            return Err(error::status_with(
                Code::InvalidArgument,
                "CURRENT_PASSWORD_INCORRECT",
                "current_password: does not match",
                &[("fields", "current_password".to_owned())],
                details,
            ));
        }
        attempt.succeeded().await;
        let hash = app.hasher.hash(Lane::Account, checked(new_password)?).await?;
        // Written only if the password is still the one verified and this session still open:
        // a change made meanwhile (by the owner, from another session) is not overwritten.
        app.store
            .change_password(&caller.context(), &user.workspace_id, &user.id, &current, &hash, token)
            .await
            .map_err(error::store)?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn set_availability(
        &self,
        request: Request<pb::SetAvailabilityRequest>,
    ) -> Result<Response<pb::SetAvailabilityResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::SetAvailability(&request.get_ref().user_id)).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let user_id = v.check("user_id", super::about(&call.caller, &req.user_id));
        let availability = v.check("availability", convert::availability_from(req.availability));
        v.finish()?;
        let changed = app
            .store
            .set_availability(&call.ctx, &call.workspace_id, checked(user_id)?, checked(availability)?)
            .await
            .map_err(error::store)?;
        let user = app.settle(&call, changed).await;
        Ok(Response::new(pb::SetAvailabilityResponse { user: user_response(&user) }))
    }
}
