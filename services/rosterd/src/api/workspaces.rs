use crate::app::App;
use crate::auth::Lane;
use crate::convert;
use crate::error::{self, Violations, checked, invalid};
use crate::mail::Recipient;
use crate::policy::Need;
use roster_authz::BuiltinRole;
use roster_identity::{Email, FullName, Password, Slug, WorkspaceName};
use roster_proto::v1::{self as pb, workspace_service_server::WorkspaceService};
use roster_store::{NewUser, NewWorkspace, Welcome};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub(crate) struct WorkspaceApi(pub(crate) Arc<App>);

#[tonic::async_trait]
impl WorkspaceService for WorkspaceApi {
    async fn create_workspace(
        &self,
        request: Request<pb::CreateWorkspaceRequest>,
    ) -> Result<Response<pb::CreateWorkspaceResponse>, Status> {
        let app = &self.0;
        let caller = App::caller(&request)?;
        app.authorize(&caller, Need::NewWorkspace).await?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let slug = v.check("slug", Slug::parse(&req.slug));
        let name = v.check("name", WorkspaceName::parse(&req.name));
        let admin = req.admin.unwrap_or_default();
        let email = v.check("admin.email", Email::parse(&admin.email));
        let full_name = v.check("admin.full_name", FullName::parse(&admin.full_name));
        let password = v.check("admin.password", Password::parse(&admin.password));
        let request_id = super::request_id(&mut v, &req.request_id);
        v.finish()?;
        let (slug, name, email, full_name) = (checked(slug)?, checked(name)?, checked(email)?, checked(full_name)?);
        let password_hash = app.hasher.hash(Lane::Account, checked(password)?).await?;
        let to = Recipient { slug: &slug, workspace: &name, email: &email, name: &full_name };
        let welcome = Welcome::Password(password_hash, app.mails.welcome(&to));
        let admin = NewUser { email, full_name, role: BuiltinRole::Admin.into() };
        let changed = app
            .store
            .create_workspace(&caller.context(), NewWorkspace { slug, name }, admin, welcome, request_id)
            .await
            .map_err(error::store)?;
        if changed.effects.mail {
            app.outbox.notify_one();
        }
        let (workspace, admin) = changed.value;
        tracing::info!(workspace_id = %workspace.id, slug = %workspace.slug, "workspace created");
        Ok(Response::new(pb::CreateWorkspaceResponse {
            workspace: Some(convert::workspace(&workspace)),
            admin: Some(convert::user(&admin)),
        }))
    }

    async fn get_workspace(
        &self,
        request: Request<pb::GetWorkspaceRequest>,
    ) -> Result<Response<pb::GetWorkspaceResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::Member).await?;
        let workspace = app.store.workspace(&call.workspace_id).await.map_err(error::store)?;
        Ok(Response::new(pb::GetWorkspaceResponse { workspace: Some(convert::workspace(&workspace)) }))
    }

    async fn update_workspace(
        &self,
        request: Request<pb::UpdateWorkspaceRequest>,
    ) -> Result<Response<pb::UpdateWorkspaceResponse>, Status> {
        let app = &self.0;
        if request.get_ref().workspace.is_none() {
            return Err(invalid("workspace", "required"));
        }
        let call = app.call(&request, Need::WriteSettings).await?;
        let req = request.into_inner();
        let workspace = req.workspace.unwrap_or_default();
        let mut v = Violations::new();
        let set = [("name", !workspace.name.is_empty()), ("max_open_conversations", false)];
        let paths = super::mask_paths(&mut v, req.update_mask, &set);
        let (mut name, mut max_open) = (None, None);
        for path in &paths {
            match path.as_str() {
                "name" => name = v.check("workspace.name", WorkspaceName::parse(&workspace.name)),
                "max_open_conversations" => {
                    max_open = super::capacity(
                        &mut v,
                        "workspace.max_open_conversations",
                        Some(workspace.max_open_conversations),
                    )
                }
                other => v.add(
                    "update_mask",
                    format!("unknown or read-only path {other:?}; updatable: name, max_open_conversations"),
                ),
            }
        }
        v.finish()?;
        let changed =
            app.store.update_workspace(&call.ctx, &call.workspace_id, name, max_open).await.map_err(error::store)?;
        let updated = app.settle(&call, changed).await;
        Ok(Response::new(pb::UpdateWorkspaceResponse { workspace: Some(convert::workspace(&updated)) }))
    }
}
