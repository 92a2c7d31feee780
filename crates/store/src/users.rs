//! Users: creation with the welcome email, changes guarded by version, deactivation.
//!
//! Every change of another user applies the no-escalation rule with the acting person's role as
//! the transaction reads it (`rows::user::load_manageable`), never a copy read before.

use crate::entity::{session, team_member, user};
use crate::events::{self, Stream};
use crate::routing::{Attempt, Rerouting, teams_of};
use crate::rows::user::{guard_last_admin, insert, load, load_manageable, to_user, update};
use crate::rows::{link, role, workspace};
use crate::{
    Availability, Changed, Conflict, Context, Effects, LoginCandidate, NewUser, Page, PasswordLink, Result, Store,
    StoreError, User, UserChanges, UserFilter, UserStatus, Welcome, audit, classify, commit,
};
use roster_authz::BuiltinRole;
use roster_billing::check_seat;
use roster_identity::{Email, PasswordHash, Slug, TokenHash};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait};
use std::collections::BTreeSet;
use std::sync::Mutex;

impl Store {
    /// Creates a user in a workspace and queues their welcome email, atomically: active with the
    /// password chosen for them, or invited with a link to choose one. With a
    /// `request_id` seen before in this workspace, returns the user the first call created. The
    /// person acting in `ctx` must hold every grant of the new user's role.
    pub async fn create_user(
        &self,
        ctx: &Context,
        workspace_id: &str,
        new: NewUser,
        welcome: Welcome,
        request_id: Option<&str>,
    ) -> Result<Changed<User>> {
        let created = Effects { permissions: true, mail: true, room: false };
        let attempt = self
            .retry(|| async {
                if let Some(user) = self.user_by_request(workspace_id, request_id).await? {
                    return Ok(Changed::new(user));
                }
                let txn = self.write_in(&[Stream::Workspace(workspace_id)]).await?;
                let user = insert(&txn, ctx, workspace_id, new.clone(), request_id, &welcome).await?;
                commit(txn).await?;
                Ok(Changed { value: user, effects: created })
            })
            .await;
        let refused = match attempt {
            // The email's index or the request id's refused the row, or the seat went: a concurrent
            // retry with the same request id may have won the race, and then it is the answer.
            Err(StoreError::Conflict(conflict @ (Conflict::EmailTaken | Conflict::SeatLimit { .. }))) => {
                if let Some(user) = self.user_by_request(workspace_id, request_id).await? {
                    return Ok(Changed::new(user));
                }
                conflict
            }
            other => return other,
        };
        match refused {
            Conflict::SeatLimit { refused, .. } => {
                let details = [("email", new.email.as_str()), ("role", new.role.as_str())];
                let target = format!("workspace:{workspace_id}");
                self.record_seat_refusal(ctx, workspace_id, "user.create_refused", &target, &details, &refused).await;
                Err(workspace::seat_limit(workspace_id, refused))
            }
            conflict => Err(StoreError::Conflict(conflict)),
        }
    }

    async fn user_by_request(&self, workspace_id: &str, request_id: Option<&str>) -> Result<Option<User>> {
        let Some(request_id) = request_id else { return Ok(None) };
        user::Entity::find()
            .filter(user::Column::WorkspaceId.eq(workspace_id))
            .filter(user::Column::CreateRequestId.eq(request_id))
            .one(&self.db)
            .await
            .map_err(classify)?
            .map(to_user)
            .transpose()
    }

    /// A user of a workspace.
    pub async fn user(&self, workspace_id: &str, user_id: &str) -> Result<User> {
        to_user(load(&self.db, workspace_id, user_id).await?)
    }

    /// A user's password hash, for checking a current password.
    pub async fn password_hash(&self, workspace_id: &str, user_id: &str) -> Result<PasswordHash> {
        Ok(PasswordHash::from_stored(load(&self.db, workspace_id, user_id).await?.password_hash))
    }

    /// Users of a workspace ordered by email, starting after the email `after`.
    pub async fn list_users(
        &self,
        workspace_id: &str,
        filter: &UserFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Page<User>> {
        let mut query = user::Entity::find().filter(user::Column::WorkspaceId.eq(workspace_id));
        if let Some(status) = filter.status {
            query = query.filter(user::Column::Status.eq(status.as_str()));
        }
        if let Some(role) = &filter.role {
            query = query.filter(user::Column::RoleId.eq(role.as_str()));
        }
        if let Some(team) = &filter.team {
            let members = team_member::Entity::find()
                .select_only()
                .column(team_member::Column::UserId)
                .filter(team_member::Column::TeamId.eq(team.as_str()))
                .into_query();
            query = query.filter(user::Column::Id.in_subquery(members));
        }
        if let Some(after) = after {
            query = query.filter(user::Column::Email.gt(after));
        }
        let rows = query.order_by_asc(user::Column::Email).limit(limit + 1).all(&self.db).await.map_err(classify)?;
        let more = rows.len() as u64 > limit;
        let items = rows.into_iter().take(limit as usize).map(to_user).collect::<Result<Vec<_>>>()?;
        let next = if more { items.last().map(|u| u.email.as_str().to_owned()) } else { None };
        Ok(Page { items, next })
    }

    /// Changes a user's full name, role and/or email. With `expected_version`, refuses if the user
    /// changed since. A new email must be free in the workspace; it voids a pending invitation or
    /// reset link (sent to the old address). The person acting in `ctx` must hold every grant of the user's current role
    /// and of the new one; only admins touch admins.
    pub async fn update_user(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        changes: UserChanges,
        expected_version: Option<i64>,
        invitation: Option<PasswordLink>,
    ) -> Result<Changed<User>> {
        let txn = self.write_in(&[Stream::Workspace(workspace_id)]).await?;
        let (row, actor) = load_manageable(&txn, workspace_id, user_id, ctx).await?;
        if let Some(expected) = expected_version
            && expected != row.version
        {
            return Err(StoreError::Conflict(Conflict::StaleVersion { current: row.version }));
        }
        let mut columns = Vec::new();
        let mut details: Vec<(&str, String)> = Vec::new();
        if let Some(name) = &changes.full_name
            && name.as_str() != row.full_name
        {
            columns.push((user::Column::FullName, name.as_str().into()));
            details.push(("full_name", name.as_str().to_owned()));
        }
        let role_changes = changes.role.as_ref().filter(|role| role.as_str() != row.role_id);
        if let Some(role) = role_changes {
            let authz_version = role::bump_authz(&txn, workspace_id, role::AuthzChange::Members).await?;
            role::ensure_grantable(actor.as_ref(), &role::load(&txn, workspace_id, role.as_str()).await?.role.grants)?;
            guard_last_admin(&txn, workspace_id, &row, role.builtin() == Some(BuiltinRole::Admin)).await?;
            columns.push((user::Column::RoleId, role.as_str().into()));
            columns.push((user::Column::AuthzVersion, authz_version.into()));
            details.push(("old_role", row.role_id.clone()));
            details.push(("role", role.as_str().to_owned()));
        }
        let email_changes = changes.email.as_ref().filter(|email| email.as_str() != row.email);
        if let Some(email) = email_changes {
            // Otherwise a stolen session could redirect the account's reset emails.
            if matches!(&ctx.actor, crate::Actor::User(me) if me == user_id) {
                return Err(StoreError::Conflict(Conflict::OwnAccount));
            }
            let taken = user::Entity::find()
                .filter(user::Column::WorkspaceId.eq(workspace_id))
                .filter(user::Column::Email.eq(email.as_str()))
                .one(&txn)
                .await
                .map_err(classify)?;
            if taken.is_some() {
                return Err(StoreError::Conflict(Conflict::EmailTaken));
            }
            columns.push((user::Column::Email, email.as_str().into()));
            details.push(("email", email.as_str().to_owned()));
            details.push(("previous_email", row.email.clone()));
            if link::void(&txn, user_id).await? {
                details.push(("link_voided", "true".to_owned()));
            }
            if let Some(invitation) = invitation.as_ref().filter(|_| row.status == UserStatus::Invited.as_str()) {
                link::issue(&txn, ctx, workspace_id, user_id, invitation).await?;
                details.push(("invitation_sent", "true".to_owned()));
            }
        }
        if columns.is_empty() {
            return Ok(Changed::new(to_user(row)?));
        }
        update(&txn, &row, ctx.now, columns).await.map_err(|err| match (err, expected_version) {
            // The etag was current when read, but another change landed before the write.
            (StoreError::Conflict(Conflict::Busy), Some(_)) => {
                StoreError::Conflict(Conflict::StaleVersion { current: row.version + 1 })
            }
            (err, _) => err,
        })?;
        let details: Vec<(&str, &str)> = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
        audit::record(&txn, workspace_id, ctx, "user.updated", &format!("user:{user_id}"), &details).await?;
        let user = to_user(load(&txn, workspace_id, user_id).await?)?;
        commit(txn).await?;
        let effects = Effects { permissions: role_changes.is_some(), mail: email_changes.is_some(), room: false };
        Ok(Changed { value: user, effects })
    }

    /// Deactivates or reactivates a user. Deactivated: no more logins, every session revoked, the
    /// seat freed, and every open conversation of theirs back in its team's queue and re-routed by
    /// the team's strategy, all in one transaction. Reactivated: a seat again, if one is free.
    /// Setting the status a user has changes nothing, and so does a reactivation with the
    /// `request_id` of the user's last one (a retry). The person acting in `ctx` must hold every
    /// grant of the user's role.
    pub async fn set_user_status(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        status: UserStatus,
        request_id: Option<&str>,
    ) -> Result<Changed<User>> {
        // A deactivation locks the teams it re-routes before the user's row; one of the user's
        // conversations may turn out to be in a team it did not lock (assigned in between): it then
        // starts again with that team too.
        let also = Mutex::new(BTreeSet::new());
        let attempt = self
            .retry(|| async {
                let locked = also.lock().unwrap_or_else(|e| e.into_inner()).clone();
                match self.try_set_status(ctx, workspace_id, user_id, status, request_id, &locked).await? {
                    Attempt::Done(user) => Ok(user),
                    Attempt::LockAlso(more) => {
                        also.lock().unwrap_or_else(|e| e.into_inner()).extend(more);
                        Err(StoreError::Conflict(Conflict::Busy))
                    }
                }
            })
            .await;
        match attempt {
            Err(StoreError::Conflict(Conflict::SeatLimit { refused, .. })) => {
                let target = format!("user:{user_id}");
                self.record_seat_refusal(ctx, workspace_id, "user.reactivate_refused", &target, &[], &refused).await;
                Err(workspace::seat_limit(workspace_id, refused))
            }
            other => other,
        }
    }

    /// One attempt of [`Store::set_user_status`]: the user, or the teams to lock too.
    async fn try_set_status(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        status: UserStatus,
        request_id: Option<&str>,
        also: &BTreeSet<String>,
    ) -> Result<Attempt<Changed<User>>> {
        // A deactivation's events belong to the teams it re-routes too: read them (reading gives
        // the transaction no id yet), then take the streams' locks before the first write.
        let txn = self.write().await?;
        let deactivating = status == UserStatus::Deactivated;
        let mut teams = if deactivating { teams_of(&txn, workspace_id, user_id).await? } else { BTreeSet::new() };
        teams.extend(also.iter().cloned());
        let streams: Vec<Stream> =
            std::iter::once(Stream::Workspace(workspace_id)).chain(teams.iter().map(|t| Stream::Team(t))).collect();
        events::order(&txn, &streams).await?;
        // The workspace's row first (every status change writes it: the authorization version, the
        // last-admin count, the seats), then what a deactivation re-routes: teams, then users.
        let authz_version = role::bump_authz(&txn, workspace_id, role::AuthzChange::Members).await?;
        let rerouting =
            if deactivating { Some(Rerouting::lock(&txn, workspace_id, user_id, &teams).await?) } else { None };
        // A team that got one of the user's conversations since they were read: start again with
        // its stream too.
        let unordered = rerouting.as_ref().map(|r| r.team_ids().filter(|id| !teams.contains(*id)).map(str::to_owned));
        let unordered: BTreeSet<String> = unordered.into_iter().flatten().collect();
        if !unordered.is_empty() {
            return Ok(Attempt::LockAlso(unordered));
        }
        let (row, _) = load_manageable(&txn, workspace_id, user_id, ctx).await?;
        // Already so, or a retry of a reactivation already made (which must not undo a
        // deactivation made since): nothing to do.
        let retried = request_id.is_some() && row.reactivate_request_id.as_deref() == request_id;
        // Reactivating an invited user (who was never deactivated) changes nothing either.
        let already = (row.status == UserStatus::Deactivated.as_str()) == deactivating;
        if already || retried {
            return Ok(Attempt::Done(Changed::new(to_user(row)?)));
        }
        // Back as they were: active, or, never having chosen a password, invited (their link
        // was voided: the invitation is sent again on request).
        let status = match status {
            UserStatus::Active if row.password_hash.is_empty() => UserStatus::Invited,
            status => status,
        };
        guard_last_admin(&txn, workspace_id, &row, status == UserStatus::Active).await?;
        if !deactivating {
            // A seat again, checked and taken under the workspace's lock.
            let (subscription, used) = workspace::lock_seats(&txn, workspace_id).await?;
            check_seat(&subscription, used).map_err(|refused| workspace::seat_limit(workspace_id, refused))?;
        }
        let mut changes =
            vec![(user::Column::Status, status.as_str().into()), (user::Column::AuthzVersion, authz_version.into())];
        if let Some(request_id) = request_id {
            changes.push((user::Column::ReactivateRequestId, request_id.into()));
        }
        update(&txn, &row, ctx.now, changes).await?;
        let (action, requeued) = match rerouting {
            Some(rerouting) => {
                session::Entity::delete_many()
                    .filter(session::Column::UserId.eq(user_id))
                    .exec(&txn)
                    .await
                    .map_err(classify)?;
                link::void(&txn, user_id).await?;
                let requeued = match rerouting.requeue_and_route(&txn, workspace_id, user_id, ctx).await? {
                    Attempt::Done(requeued) => requeued,
                    Attempt::LockAlso(more) => return Ok(Attempt::LockAlso(more)),
                };
                ("user.deactivated", Some(requeued.to_string()))
            }
            None => ("user.reactivated", None),
        };
        let mut details: Vec<(&str, &str)> = requeued.iter().map(|n| ("conversations_requeued", n.as_str())).collect();
        details.push(("status", status.as_str()));
        audit::record(&txn, workspace_id, ctx, action, &format!("user:{user_id}"), &details).await?;
        let user = to_user(load(&txn, workspace_id, user_id).await?)?;
        commit(txn).await?;
        // Back, and still ONLINE: the queues of their teams may go to them.
        let effects = Effects { permissions: true, room: status == UserStatus::Active, mail: false };
        Ok(Attempt::Done(Changed { value: user, effects }))
    }

    /// Replaces a person's password hash, if it is still `verified` (the one their current
    /// password was checked against: [`Conflict::Changed`] otherwise) and their session `keep`
    /// is still open ([`Entity::Session`] not found otherwise), revokes every other session and
    /// voids a pending reset link.
    pub async fn change_password(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        verified: &PasswordHash,
        hash: &PasswordHash,
        keep: &TokenHash,
    ) -> Result<()> {
        let txn = self.write_in(&[Stream::Workspace(workspace_id)]).await?;
        let row = load(&txn, workspace_id, user_id).await?;
        if row.password_hash != verified.as_stored() {
            return Err(StoreError::Conflict(Conflict::Changed));
        }
        let open = session::Entity::find_by_id(keep.as_stored().to_owned())
            .filter(session::Column::UserId.eq(user_id))
            .one(&txn)
            .await
            .map_err(classify)?;
        if open.is_none() {
            return Err(StoreError::NotFound(crate::Entity::Session));
        }
        // Conditional on the row's version, so also on the hash just compared.
        update(&txn, &row, ctx.now, vec![(user::Column::PasswordHash, hash.as_stored().into())]).await?;
        session::Entity::delete_many()
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::TokenHash.ne(keep.as_stored()))
            .exec(&txn)
            .await
            .map_err(classify)?;
        // A pending reset link would still open the account.
        link::void(&txn, user_id).await?;
        audit::record(&txn, workspace_id, ctx, "user.password_changed", &format!("user:{user_id}"), &[]).await?;
        commit(txn).await
    }

    /// Replaces a user's password hash with `upgraded` (the same password at a higher cost) if it
    /// is still `verified`: a change of password meanwhile wins. Not a change anyone made: no
    /// version, no audit event, no session revoked. Whether it was replaced.
    pub async fn upgrade_password_hash(
        &self,
        workspace_id: &str,
        user_id: &str,
        verified: &PasswordHash,
        upgraded: &PasswordHash,
    ) -> Result<bool> {
        let result = user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, sea_orm::sea_query::Expr::val(upgraded.as_stored()))
            .filter(user::Column::Id.eq(user_id))
            .filter(user::Column::WorkspaceId.eq(workspace_id))
            .filter(user::Column::PasswordHash.eq(verified.as_stored()))
            .exec(&self.db)
            .await
            .map_err(classify)?;
        Ok(result.rows_affected == 1)
    }

    /// Sets a user's availability: a person's own, or, for someone who may manage them, another's.
    pub async fn set_availability(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        availability: Availability,
    ) -> Result<Changed<User>> {
        let txn = self.write_in(&[Stream::Workspace(workspace_id)]).await?;
        let row = match &ctx.actor {
            crate::Actor::User(me) if me == user_id => load(&txn, workspace_id, user_id).await?,
            _ => load_manageable(&txn, workspace_id, user_id, ctx).await?.0,
        };
        if row.availability == availability.as_str() {
            return Ok(Changed::new(to_user(row)?));
        }
        update(&txn, &row, ctx.now, vec![(user::Column::Availability, availability.as_str().into())]).await?;
        audit::record(
            &txn,
            workspace_id,
            ctx,
            "user.availability_changed",
            &format!("user:{user_id}"),
            &[("availability", availability.as_str())],
        )
        .await?;
        let user = to_user(load(&txn, workspace_id, user_id).await?)?;
        commit(txn).await?;
        let effects = Effects { room: availability == Availability::Online, ..Effects::default() };
        Ok(Changed { value: user, effects })
    }

    /// What login needs: `None` when no workspace has the slug.
    pub async fn login_candidate(&self, slug: &Slug, email: &Email) -> Result<Option<LoginCandidate>> {
        let Some(workspace_id) = self.workspace_id_by_slug(slug).await? else { return Ok(None) };
        let row = user::Entity::find()
            .filter(user::Column::WorkspaceId.eq(workspace_id.as_str()))
            .filter(user::Column::Email.eq(email.as_str()))
            .one(&self.db)
            .await
            .map_err(classify)?;
        let user = match row {
            // An invited user has no password yet: no password opens their account.
            Some(row) if row.password_hash.is_empty() => None,
            Some(row) => {
                let hash = PasswordHash::from_stored(row.password_hash.clone());
                Some((to_user(row)?, hash))
            }
            None => None,
        };
        Ok(Some(LoginCandidate { workspace_id, user }))
    }
}
