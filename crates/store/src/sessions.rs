//! Sessions: stored only as the hash of their token, valid while unexpired and the user active.

use crate::entity::{session, user};
use crate::rows::user::to_user;
use crate::{Conflict, Context, Entity, Result, Session, Store, StoreError, User, UserStatus, audit, classify, commit};
use roster_identity::{PasswordHash, TokenHash};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

impl Store {
    /// Opens a session for `user_id`, recording `login.succeeded`, if the user is still active
    /// and `verified` (the hash the password was checked against) is still their password hash.
    /// The user row is locked for the transaction (PostgreSQL `FOR UPDATE`; SQLite's write lock
    /// covers it), so a deactivation or password change that lands since the check either
    /// commits first and is seen here, or waits and revokes this session too.
    ///
    /// A deactivated user is [`StoreError::NotFound`]; a changed password is
    /// [`Conflict::StaleVersion`].
    pub async fn create_session(
        &self,
        ctx: &Context,
        user: &User,
        verified: &PasswordHash,
        token: &TokenHash,
        expires_at: i64,
    ) -> Result<User> {
        let (workspace_id, user_id) = (user.workspace_id.as_str(), user.id.as_str());
        let txn = self.write().await?;
        let row = user::Entity::find_by_id(user_id.to_owned())
            .filter(user::Column::WorkspaceId.eq(workspace_id))
            .filter(user::Column::Status.eq(UserStatus::Active.as_str()))
            .lock_exclusive()
            .one(&txn)
            .await
            .map_err(classify)?
            .ok_or(StoreError::NotFound(Entity::User))?;
        if row.password_hash != verified.as_stored() {
            return Err(StoreError::Conflict(Conflict::StaleVersion { current: row.version }));
        }
        let model = session::ActiveModel {
            token_hash: Set(token.as_stored().to_owned()),
            user_id: Set(user_id.to_owned()),
            workspace_id: Set(workspace_id.to_owned()),
            created_at: Set(ctx.now),
            expires_at: Set(expires_at),
        };
        session::Entity::insert(model).exec_without_returning(&txn).await.map_err(classify)?;
        audit::record(&txn, workspace_id, ctx, "login.succeeded", &format!("user:{user_id}"), &[]).await?;
        let user = to_user(row)?;
        commit(txn).await?;
        Ok(user)
    }

    /// Records a refused login. `target` names the attempted email; the reason is not recorded,
    /// so the trail does not tell apart an unknown email from a wrong password either.
    pub async fn record_login_failure(&self, ctx: &Context, workspace_id: &str, email: &str) -> Result<()> {
        self.record_refusal(ctx, workspace_id, "login.failed", &format!("email:{email}"), &[]).await
    }

    /// Records a refused call in the audit trail: it changed nothing, but the attempt is worth
    /// knowing about (a service key calling outside its scope, say).
    pub async fn record_refusal(
        &self,
        ctx: &Context,
        workspace_id: &str,
        action: &str,
        target: &str,
        details: &[(&str, &str)],
    ) -> Result<()> {
        let txn = self.write().await?;
        audit::record(&txn, workspace_id, ctx, action, target, details).await?;
        commit(txn).await
    }

    /// The live session with this token hash: unexpired at `now`, its user active.
    pub async fn session(&self, token: &TokenHash, now: i64) -> Result<Option<Session>> {
        let Some(row) = session::Entity::find_by_id(token.as_stored().to_owned())
            .filter(session::Column::ExpiresAt.gt(now))
            .one(&self.db)
            .await
            .map_err(classify)?
        else {
            return Ok(None);
        };
        let user = user::Entity::find_by_id(row.user_id.clone())
            .filter(user::Column::Status.eq(UserStatus::Active.as_str()))
            .one(&self.db)
            .await
            .map_err(classify)?;
        match user {
            Some(user) => Ok(Some(Session { user: to_user(user)?, expires_at: row.expires_at })),
            None => Ok(None),
        }
    }

    /// Ends a session, recording `logout`. Ending an ended session is not an error.
    pub async fn delete_session(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        token: &TokenHash,
    ) -> Result<()> {
        let txn = self.write().await?;
        let deleted = session::Entity::delete_by_id(token.as_stored().to_owned()).exec(&txn).await.map_err(classify)?;
        if deleted.rows_affected > 0 {
            audit::record(&txn, workspace_id, ctx, "logout", &format!("user:{user_id}"), &[]).await?;
        }
        commit(txn).await
    }

    /// Deletes sessions that expired before `now`; returns how many.
    pub async fn purge_expired_sessions(&self, now: i64) -> Result<u64> {
        let result = session::Entity::delete_many()
            .filter(session::Column::ExpiresAt.lte(now))
            .exec(&self.db)
            .await
            .map_err(classify)?;
        Ok(result.rows_affected)
    }
}
