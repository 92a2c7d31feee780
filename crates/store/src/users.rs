//! Users: creation with the welcome email, changes guarded by version, deactivation.

use crate::assignments::{Attempt, Rerouting};
use crate::billing::seat_limit;
use crate::entity::{outbox, session, team_member, user, workspace};
use crate::roles::{AuthzChange, bump_authz, ensure_grantable, load_role};
use crate::workspaces::lock_seats;
use crate::{
    Availability, Conflict, Context, Entity, LoginCandidate, Mail, NewUser, OutboxStatus, Page, Result, Store,
    StoreError, User, UserChanges, UserFilter, UserStatus, audit, classify, commit, new_id, unique_violation,
};
use roster_authz::Role;
use roster_billing::check_seat;
use roster_identity::{BuiltinRole, Email, FullName, PasswordHash, RoleId, Slug, TokenHash};
use sea_orm::sea_query::{Expr, ExprTrait, LockType};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait,
};
use std::collections::BTreeSet;

pub(crate) fn to_user(row: user::Model) -> Result<User> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("user {}: {what}: {e}", row.id));
    Ok(User {
        email: Email::parse(&row.email).map_err(|e| corrupt("email", &e))?,
        full_name: FullName::parse(&row.full_name).map_err(|e| corrupt("full name", &e))?,
        role: RoleId::parse(&row.role_id).map_err(|e| corrupt("role", &e))?,
        status: UserStatus::from_stored(&row.status)?,
        availability: Availability::from_stored(&row.availability)?,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
        workspace_id: row.workspace_id,
        id: row.id,
    })
}

/// The no-escalation rule for acting on a user who holds `target`: `actor` is the acting person's
/// role, `None` for a service key.
fn ensure_manageable(actor: Option<&Role>, target: &Role) -> Result<()> {
    match actor {
        Some(actor) => roster_authz::check_manageable(actor, target).map_err(StoreError::Refused),
        None => Ok(()),
    }
}

/// A foreign-key failure on a user row's role: the role was deleted after it was checked.
fn role_gone(err: sea_orm::DbErr) -> StoreError {
    match err.sql_err() {
        Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => StoreError::NotFound(Entity::Role),
        _ => classify(err),
    }
}

/// Inserts a user, their welcome email and the audit event on `txn`. `actor` (the acting
/// person's role, `None` for a service key) must hold every grant of the new user's role. The
/// checks come in the order a caller can act on them: the role, the email, then the seat, taken
/// under the workspace's lock ([`lock_seats`]) so that nothing is written without one.
pub(crate) async fn insert_user(
    txn: &DatabaseTransaction,
    ctx: &Context,
    workspace_id: &str,
    new: NewUser,
    request_id: Option<&str>,
    welcome: &Mail,
    actor: Option<&Role>,
) -> Result<User> {
    let authz_version = bump_authz(txn, workspace_id, AuthzChange::Members).await?;
    let role = load_role(txn, workspace_id, new.role.as_str()).await?;
    ensure_grantable(actor, &role.role.grants)?;
    let taken = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .filter(user::Column::WorkspaceId.eq(workspace_id))
        .filter(user::Column::Email.eq(new.email.as_str()))
        .into_tuple::<String>()
        .one(txn)
        .await
        .map_err(classify)?;
    if taken.is_some() {
        // With a request id, the caller first checks for a concurrent retry that won the race.
        return Err(StoreError::Conflict(if request_id.is_some() { Conflict::Busy } else { Conflict::EmailTaken }));
    }
    let (subscription, used) = lock_seats(txn, workspace_id).await?;
    check_seat(&subscription, used).map_err(|refused| seat_limit(workspace_id, refused))?;
    let id = new_id();
    let row = user::ActiveModel {
        id: Set(id.clone()),
        workspace_id: Set(workspace_id.to_owned()),
        email: Set(new.email.as_str().to_owned()),
        full_name: Set(new.full_name.as_str().to_owned()),
        password_hash: Set(new.password_hash.as_stored().to_owned()),
        role_id: Set(new.role.as_str().to_owned()),
        status: Set(UserStatus::Active.as_str().to_owned()),
        availability: Set(Availability::Online.as_str().to_owned()),
        version: Set(1),
        create_request_id: Set(request_id.map(str::to_owned)),
        created_at: Set(ctx.now),
        updated_at: Set(ctx.now),
        open_conversations: Set(0),
        last_assigned_at: Set(None),
        authz_version: Set(authz_version),
    };
    let inserted = user::Entity::insert(row.clone()).exec_without_returning(txn).await;
    if let Err(err) = inserted {
        return Err(match unique_violation(&err) {
            // Which unique index fails first differs between backends: with a request id, the
            // caller checks for a concurrent retry before calling it a taken email.
            Some(_) if request_id.is_some() => StoreError::Conflict(Conflict::Busy),
            Some(_) => StoreError::Conflict(Conflict::EmailTaken),
            None => role_gone(err),
        });
    }
    let mail = outbox::ActiveModel {
        id: Set(new_id()),
        workspace_id: Set(workspace_id.to_owned()),
        recipient: Set(welcome.to.as_str().to_owned()),
        subject: Set(welcome.subject.clone()),
        body: Set(welcome.body.clone()),
        status: Set(OutboxStatus::Pending.as_str().to_owned()),
        attempts: Set(0),
        next_attempt_at: Set(ctx.now),
        lease_until: Set(0),
        last_error: Set(None),
        created_at: Set(ctx.now),
        sent_at: Set(None),
    };
    outbox::Entity::insert(mail).exec_without_returning(txn).await.map_err(classify)?;
    audit::record(
        txn,
        workspace_id,
        ctx,
        "user.created",
        &format!("user:{id}"),
        &[("email", new.email.as_str()), ("role", new.role.as_str())],
    )
    .await?;
    to_user(user::Model {
        id,
        workspace_id: workspace_id.to_owned(),
        email: new.email.as_str().to_owned(),
        full_name: new.full_name.as_str().to_owned(),
        password_hash: String::new(),
        role_id: new.role.as_str().to_owned(),
        status: UserStatus::Active.as_str().to_owned(),
        availability: Availability::Online.as_str().to_owned(),
        version: 1,
        create_request_id: None,
        created_at: ctx.now,
        updated_at: ctx.now,
        open_conversations: 0,
        last_assigned_at: None,
        authz_version,
    })
}

/// Refuses a change that takes away the workspace's last active admin (`row` is the target as
/// loaded; `stays_admin` says whether it is still an active admin afterwards). The workspace row
/// is locked first — PostgreSQL `FOR UPDATE`; on SQLite the write transaction already serializes
/// writers — so two admins removed at the same moment, on any process, are decided one after the
/// other and exactly one admin stays.
async fn guard_last_admin(
    txn: &DatabaseTransaction,
    workspace_id: &str,
    row: &user::Model,
    stays_admin: bool,
) -> Result<()> {
    let is_active_admin = row.status == UserStatus::Active.as_str() && row.role_id == BuiltinRole::Admin.id();
    if !is_active_admin || stays_admin {
        return Ok(());
    }
    // `FOR NO KEY UPDATE`, as `lock_seats` explains: not blocked by inserts that reference the
    // workspace, so a deactivation holding team and user locks cannot deadlock with routing.
    workspace::Entity::find_by_id(workspace_id.to_owned())
        .lock(LockType::NoKeyUpdate)
        .one(txn)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound(Entity::Workspace))?;
    let admins = crate::count(
        txn,
        user::Entity::find()
            .filter(user::Column::WorkspaceId.eq(workspace_id))
            .filter(user::Column::Status.eq(UserStatus::Active.as_str()))
            .filter(user::Column::RoleId.eq(BuiltinRole::Admin.id())),
    )
    .await?;
    roster_authz::check_last_admin(u64::try_from(admins).unwrap_or(0), true, false)
        .map_err(|rule| StoreError::Conflict(Conflict::LastAdmin(rule)))?;
    Ok(())
}

/// Loads a user of a workspace inside `conn`.
async fn load<C: ConnectionTrait>(conn: &C, workspace_id: &str, user_id: &str) -> Result<user::Model> {
    user::Entity::find_by_id(user_id.to_owned())
        .filter(user::Column::WorkspaceId.eq(workspace_id))
        .one(conn)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound(Entity::User))
}

/// Applies `changes` to a user row if its version is still `row.version`, bumping the version.
/// A concurrent change in between is [`Conflict::Busy`]: callers without an etag should retry
/// (`update_user`, which has one, reports a stale etag itself).
async fn update_row(
    txn: &DatabaseTransaction,
    row: &user::Model,
    now: i64,
    changes: Vec<(user::Column, sea_orm::Value)>,
) -> Result<()> {
    let mut update = user::Entity::update_many()
        .col_expr(user::Column::Version, Expr::col(user::Column::Version).add(1))
        .col_expr(user::Column::UpdatedAt, Expr::val(now));
    for (column, value) in changes {
        update = update.col_expr(column, Expr::val(value));
    }
    let result = update
        .filter(user::Column::Id.eq(row.id.as_str()))
        .filter(user::Column::Version.eq(row.version))
        .exec(txn)
        .await
        .map_err(classify)?;
    if result.rows_affected == 1 { Ok(()) } else { Err(StoreError::Conflict(Conflict::Busy)) }
}

impl Store {
    /// Creates a user in a workspace and queues their welcome email, atomically. With a
    /// `request_id` seen before in this workspace, returns the user the first call created.
    /// `actor` is the acting person's role (`None` for a service key): it must hold every grant
    /// of the new user's role.
    pub async fn create_user(
        &self,
        ctx: &Context,
        workspace_id: &str,
        new: NewUser,
        welcome: Mail,
        request_id: Option<&str>,
        actor: Option<&Role>,
    ) -> Result<User> {
        if let Some(user) = self.user_by_request(workspace_id, request_id).await? {
            return Ok(user);
        }
        let txn = self.write().await?;
        let (email, role) = (new.email.clone(), new.role.clone());
        match insert_user(&txn, ctx, workspace_id, new, request_id, &welcome, actor).await {
            Ok(user) => {
                commit(txn).await?;
                Ok(user)
            }
            Err(StoreError::Conflict(Conflict::Busy)) if request_id.is_some() => {
                // A unique index refused the row. If a concurrent retry with the same request id
                // won the race, answer what it created; otherwise the email is taken.
                txn.rollback().await.map_err(classify)?;
                self.user_by_request(workspace_id, request_id).await?.ok_or(StoreError::Conflict(Conflict::EmailTaken))
            }
            Err(StoreError::Conflict(Conflict::SeatLimit { refused, .. })) => {
                txn.rollback().await.map_err(classify)?;
                // A concurrent retry with the same request id may have taken the seat: its answer.
                if let Some(user) = self.user_by_request(workspace_id, request_id).await? {
                    return Ok(user);
                }
                let details = [("email", email.as_str()), ("role", role.as_str())];
                let target = format!("workspace:{workspace_id}");
                self.record_seat_refusal(ctx, workspace_id, "user.create_refused", &target, &details, &refused).await;
                Err(seat_limit(workspace_id, refused))
            }
            Err(err) => Err(err),
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

    /// Changes a user's full name and/or role. With `expected_version`, refuses if the user
    /// changed since. `actor` (the acting person's role, `None` for a service key) must hold every
    /// grant of the user's current role and of the new one; only admins touch admins.
    pub async fn update_user(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        changes: UserChanges,
        expected_version: Option<i64>,
        actor: Option<&Role>,
    ) -> Result<User> {
        let txn = self.write().await?;
        let row = load(&txn, workspace_id, user_id).await?;
        if let Some(expected) = expected_version
            && expected != row.version
        {
            return Err(StoreError::Conflict(Conflict::StaleVersion { current: row.version }));
        }
        ensure_manageable(actor, &load_role(&txn, workspace_id, &row.role_id).await?.role)?;
        let mut columns = Vec::new();
        let mut details: Vec<(&str, String)> = Vec::new();
        if let Some(name) = &changes.full_name
            && name.as_str() != row.full_name
        {
            columns.push((user::Column::FullName, name.as_str().into()));
            details.push(("full_name", name.as_str().to_owned()));
        }
        if let Some(role) = &changes.role
            && role.as_str() != row.role_id
        {
            let authz_version = bump_authz(&txn, workspace_id, AuthzChange::Members).await?;
            ensure_grantable(actor, &load_role(&txn, workspace_id, role.as_str()).await?.role.grants)?;
            guard_last_admin(&txn, workspace_id, &row, role.builtin() == Some(BuiltinRole::Admin)).await?;
            columns.push((user::Column::RoleId, role.as_str().into()));
            columns.push((user::Column::AuthzVersion, authz_version.into()));
            details.push(("old_role", row.role_id.clone()));
            details.push(("role", role.as_str().to_owned()));
        }
        if columns.is_empty() {
            return to_user(row);
        }
        update_row(&txn, &row, ctx.now, columns).await.map_err(|err| match (err, expected_version) {
            (StoreError::Database(source), _) => role_gone(source),
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
        Ok(user)
    }

    /// Deactivates a user: no more logins, every session revoked, the seat freed, and every open
    /// conversation of theirs back in its team's queue and re-routed by the team's strategy, all in
    /// one transaction. Deactivating a deactivated user changes nothing. `actor` (the acting
    /// person's role, `None` for a service key) must hold every grant of the user's role.
    pub async fn deactivate_user(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        actor: Option<&Role>,
    ) -> Result<User> {
        self.set_status(ctx, workspace_id, user_id, UserStatus::Deactivated, actor).await
    }

    /// Reactivates a user. Reactivating an active user changes nothing. `actor` as for deactivation.
    pub async fn reactivate_user(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        actor: Option<&Role>,
    ) -> Result<User> {
        self.set_status(ctx, workspace_id, user_id, UserStatus::Active, actor).await
    }

    async fn set_status(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        status: UserStatus,
        actor: Option<&Role>,
    ) -> Result<User> {
        // A deactivation locks the teams it re-routes before the user's row; one of the user's
        // conversations may turn out to be in a team it did not lock (assigned in between): it then
        // starts again with that team too. A concurrent change of the same rows starts it again too.
        let mut also = BTreeSet::new();
        for _ in 0..8 {
            match self.try_set_status(ctx, workspace_id, user_id, status, actor, &also).await {
                Ok(Attempt::Done(user)) => return Ok(user),
                Ok(Attempt::LockAlso(more)) => also.extend(more),
                Err(StoreError::Conflict(Conflict::Busy)) => {}
                Err(StoreError::Conflict(Conflict::SeatLimit { refused, .. })) => {
                    let target = format!("user:{user_id}");
                    self.record_seat_refusal(ctx, workspace_id, "user.reactivate_refused", &target, &[], &refused)
                        .await;
                    return Err(seat_limit(workspace_id, refused));
                }
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::Conflict(Conflict::Busy))
    }

    /// One attempt of [`Store::set_status`]: the user, or the teams to lock too.
    async fn try_set_status(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        status: UserStatus,
        actor: Option<&Role>,
        also: &BTreeSet<String>,
    ) -> Result<Attempt<User>> {
        let txn = self.write().await?;
        // The workspace's row first (every status change writes it: the authorization version, the
        // last-admin count, the seats), then what a deactivation re-routes: teams, then users.
        let authz_version = bump_authz(&txn, workspace_id, AuthzChange::Members).await?;
        let rerouting = match status {
            UserStatus::Deactivated => Some(Rerouting::lock(&txn, workspace_id, user_id, also).await?),
            UserStatus::Active => None,
        };
        let row = load(&txn, workspace_id, user_id).await?;
        ensure_manageable(actor, &load_role(&txn, workspace_id, &row.role_id).await?.role)?;
        if row.status == status.as_str() {
            return to_user(row).map(Attempt::Done);
        }
        guard_last_admin(&txn, workspace_id, &row, status == UserStatus::Active).await?;
        if status == UserStatus::Active {
            // A seat again, checked and taken under the workspace's lock.
            let (subscription, used) = lock_seats(&txn, workspace_id).await?;
            check_seat(&subscription, used).map_err(|refused| seat_limit(workspace_id, refused))?;
        }
        let changes =
            vec![(user::Column::Status, status.as_str().into()), (user::Column::AuthzVersion, authz_version.into())];
        update_row(&txn, &row, ctx.now, changes).await?;
        let (action, requeued) = match rerouting {
            Some(rerouting) => {
                session::Entity::delete_many()
                    .filter(session::Column::UserId.eq(user_id))
                    .exec(&txn)
                    .await
                    .map_err(classify)?;
                let requeued = match rerouting.requeue_and_route(&txn, workspace_id, user_id, ctx.now).await? {
                    Attempt::Done(requeued) => requeued,
                    Attempt::LockAlso(more) => return Ok(Attempt::LockAlso(more)),
                };
                ("user.deactivated", Some(requeued.to_string()))
            }
            None => ("user.reactivated", None),
        };
        let details: Vec<(&str, &str)> = requeued.iter().map(|n| ("conversations_requeued", n.as_str())).collect();
        audit::record(&txn, workspace_id, ctx, action, &format!("user:{user_id}"), &details).await?;
        let user = to_user(load(&txn, workspace_id, user_id).await?)?;
        commit(txn).await?;
        Ok(Attempt::Done(user))
    }

    /// Replaces a user's password hash and revokes every session except `keep`.
    pub async fn change_password(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        hash: &PasswordHash,
        keep: Option<&TokenHash>,
    ) -> Result<()> {
        let txn = self.write().await?;
        let row = load(&txn, workspace_id, user_id).await?;
        update_row(&txn, &row, ctx.now, vec![(user::Column::PasswordHash, hash.as_stored().into())]).await?;
        let mut revoke = session::Entity::delete_many().filter(session::Column::UserId.eq(user_id));
        if let Some(keep) = keep {
            revoke = revoke.filter(session::Column::TokenHash.ne(keep.as_stored()));
        }
        revoke.exec(&txn).await.map_err(classify)?;
        audit::record(&txn, workspace_id, ctx, "user.password_changed", &format!("user:{user_id}"), &[]).await?;
        commit(txn).await
    }

    /// Sets a user's availability.
    pub async fn set_availability(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        availability: Availability,
    ) -> Result<User> {
        let txn = self.write().await?;
        let row = load(&txn, workspace_id, user_id).await?;
        if row.availability == availability.as_str() {
            return to_user(row);
        }
        update_row(&txn, &row, ctx.now, vec![(user::Column::Availability, availability.as_str().into())]).await?;
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
        Ok(user)
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
            Some(row) => {
                let hash = PasswordHash::from_stored(row.password_hash.clone());
                Some((to_user(row)?, hash))
            }
            None => None,
        };
        Ok(Some(LoginCandidate { workspace_id, user }))
    }
}
