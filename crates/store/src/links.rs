//! Passwords set through single-use links (an invitation accepted, a reset completed) and by a
//! manager, and the links sent. A link is stored as its token's hash, one pending per user; using
//! it deletes it in the transaction that sets the password, so of two uses at once exactly one
//! succeeds, on any number of processes.

use crate::entity::{password_link, session, user};
use crate::events::Stream;
use crate::rows::user::{load, load_manageable, to_user, update};
use crate::rows::{link, role};
use crate::{
    Actor, Changed, Conflict, Context, Effects, LinkPurpose, LinkState, PasswordLink, Result, Store, StoreError, User,
    UserStatus, audit, classify, commit,
};
use roster_identity::{PasswordHash, TokenHash};
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter};

/// Who sends a link: a manager (or service) acting on the user, or the person for themselves
/// (a self-service reset, anonymous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkSender {
    Manager,
    Owner,
}

/// What a user's status allows a link of `purpose` for.
fn check_status(purpose: LinkPurpose, status: &str) -> Result<()> {
    let status = UserStatus::from_stored(status)?;
    match (purpose, status) {
        (LinkPurpose::Invitation, UserStatus::Invited) | (LinkPurpose::Reset, UserStatus::Active) => Ok(()),
        (_, UserStatus::Deactivated) => Err(StoreError::Conflict(Conflict::UserDeactivated)),
        (LinkPurpose::Invitation, UserStatus::Active) => Err(StoreError::Conflict(Conflict::NotInvited)),
        (LinkPurpose::Reset, UserStatus::Invited) => Err(StoreError::Conflict(Conflict::UserInvited)),
    }
}

/// Deletes every session of the user on `txn`.
async fn revoke_sessions(txn: &DatabaseTransaction, user_id: &str) -> Result<u64> {
    let deleted =
        session::Entity::delete_many().filter(session::Column::UserId.eq(user_id)).exec(txn).await.map_err(classify)?;
    Ok(deleted.rows_affected)
}

impl Store {
    /// Sends `link` to a user: an invitation again (to an invited user) or a password reset (to
    /// an active one), voiding the link they had. A manager's reset also revokes every session of
    /// the user at once. A manager (the person acting in `ctx`) must be allowed to manage the user.
    pub async fn send_link(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        link: PasswordLink,
        sender: LinkSender,
    ) -> Result<Changed<User>> {
        let txn = self.write_in(&[Stream::Workspace(workspace_id)]).await?;
        let row = match sender {
            LinkSender::Manager => load_manageable(&txn, workspace_id, user_id, ctx).await?.0,
            LinkSender::Owner => load(&txn, workspace_id, user_id).await?,
        };
        check_status(link.purpose, &row.status)?;
        // The email was read before this transaction: an address corrected since gets no link.
        if row.email != link.mail.to.as_str() {
            return Err(StoreError::Conflict(Conflict::Changed));
        }
        link::issue(&txn, ctx, workspace_id, user_id, &link).await?;
        let by = match sender {
            LinkSender::Manager => "manager",
            LinkSender::Owner => "self",
        };
        let mut details = vec![("by", by.to_owned())];
        let action = match link.purpose {
            LinkPurpose::Invitation => "user.invitation_sent",
            LinkPurpose::Reset => {
                if sender == LinkSender::Manager {
                    details.push(("sessions_revoked", revoke_sessions(&txn, user_id).await?.to_string()));
                }
                "user.password_reset_sent"
            }
        };
        let details: Vec<(&str, &str)> = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
        audit::record(&txn, workspace_id, ctx, action, &format!("user:{user_id}"), &details).await?;
        let user = to_user(row)?;
        commit(txn).await?;
        Ok(Changed { value: user, effects: Effects { mail: true, ..Effects::default() } })
    }

    /// Whether a link's token may still be used at `now`, and what for: a cheap look before any
    /// bcrypt work.
    pub async fn link_state(&self, token: &TokenHash, now: i64) -> Result<LinkState> {
        let row =
            password_link::Entity::find_by_id(token.as_stored().to_owned()).one(&self.db).await.map_err(classify)?;
        Ok(match row {
            None => LinkState::Unknown,
            Some(row) if row.expires_at <= now => LinkState::Expired,
            Some(row) => LinkState::Valid(LinkPurpose::from_stored(&row.purpose)?),
        })
    }

    /// Uses a link: sets the password `hash`, deletes the link, and either activates the invited
    /// user (an invitation) or revokes every session of theirs (a reset). Recorded as done by the
    /// user. A link used already, voided, or unknown is [`Conflict::LinkInvalid`]; one past its
    /// time [`Conflict::LinkExpired`].
    pub async fn redeem_link(&self, ctx: &Context, token: &TokenHash, hash: &PasswordHash) -> Result<Changed<User>> {
        let Some(found) =
            password_link::Entity::find_by_id(token.as_stored().to_owned()).one(&self.db).await.map_err(classify)?
        else {
            return Err(StoreError::Conflict(Conflict::LinkInvalid));
        };
        let workspace_id = found.workspace_id.as_str();
        let txn = self.write_in(&[Stream::Workspace(workspace_id)]).await?;
        // Only one use deletes the row: a second, at the same moment on any process, finds none.
        let link = password_link::Entity::find_by_id(token.as_stored().to_owned())
            .one(&txn)
            .await
            .map_err(classify)?
            .ok_or(StoreError::Conflict(Conflict::LinkInvalid))?;
        if link.expires_at <= ctx.now {
            return Err(StoreError::Conflict(Conflict::LinkExpired));
        }
        let purpose = LinkPurpose::from_stored(&link.purpose)?;
        // The workspace's row before any other (the lock order): an acceptance changes checks.
        let authz_version = match purpose {
            LinkPurpose::Invitation => Some(role::bump_authz(&txn, workspace_id, role::AuthzChange::Members).await?),
            LinkPurpose::Reset => None,
        };
        let deleted =
            password_link::Entity::delete_by_id(link.token_hash.clone()).exec(&txn).await.map_err(classify)?;
        if deleted.rows_affected != 1 {
            return Err(StoreError::Conflict(Conflict::LinkInvalid));
        }
        let row = load(&txn, workspace_id, &link.user_id).await?;
        check_status(purpose, &row.status).map_err(|_| StoreError::Conflict(Conflict::LinkInvalid))?;
        let ctx = Context { actor: Actor::User(row.id.clone()), ..ctx.clone() };
        let user_id = row.id.as_str();
        let mut columns = vec![(user::Column::PasswordHash, hash.as_stored().into())];
        let (action, details, permissions) = match authz_version {
            Some(authz_version) => {
                columns.push((user::Column::Status, UserStatus::Active.as_str().into()));
                columns.push((user::Column::AuthzVersion, authz_version.into()));
                ("user.invitation_accepted", vec![("status", UserStatus::Active.as_str().to_owned())], true)
            }
            None => {
                let revoked = revoke_sessions(&txn, user_id).await?;
                ("user.password_reset", vec![("sessions_revoked", revoked.to_string())], false)
            }
        };
        update(&txn, &row, ctx.now, columns).await?;
        let details: Vec<(&str, &str)> = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
        audit::record(&txn, workspace_id, &ctx, action, &format!("user:{user_id}"), &details).await?;
        let user = to_user(load(&txn, workspace_id, user_id).await?)?;
        commit(txn).await?;
        // Now active and ONLINE: the queues of their teams may go to them.
        let effects = Effects { permissions, room: permissions, mail: false };
        Ok(Changed { value: user, effects })
    }

    /// A manager sets a user's password: every session of theirs is revoked and a pending link
    /// voided; an invited user becomes active with it. The person acting in `ctx` must be allowed
    /// to manage the user, and not be them ([`Conflict::OwnAccount`]: their own password changes
    /// through ChangePassword, which asks for the current one).
    pub async fn set_password(
        &self,
        ctx: &Context,
        workspace_id: &str,
        user_id: &str,
        hash: &PasswordHash,
    ) -> Result<Changed<User>> {
        if matches!(&ctx.actor, Actor::User(me) if me == user_id) {
            return Err(StoreError::Conflict(Conflict::OwnAccount));
        }
        let txn = self.write_in(&[Stream::Workspace(workspace_id)]).await?;
        let (row, _) = load_manageable(&txn, workspace_id, user_id, ctx).await?;
        let invited = row.status == UserStatus::Invited.as_str();
        let mut columns = vec![(user::Column::PasswordHash, hash.as_stored().into())];
        let mut details = Vec::new();
        if invited {
            // The workspace's row first (the lock order).
            let authz_version = role::bump_authz(&txn, workspace_id, role::AuthzChange::Members).await?;
            columns.push((user::Column::Status, UserStatus::Active.as_str().into()));
            columns.push((user::Column::AuthzVersion, authz_version.into()));
            details.push(("status", UserStatus::Active.as_str().to_owned()));
        }
        details.push(("sessions_revoked", revoke_sessions(&txn, user_id).await?.to_string()));
        link::void(&txn, user_id).await?;
        update(&txn, &row, ctx.now, columns).await?;
        let details: Vec<(&str, &str)> = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
        audit::record(&txn, workspace_id, ctx, "user.password_set", &format!("user:{user_id}"), &details).await?;
        let user = to_user(load(&txn, workspace_id, user_id).await?)?;
        commit(txn).await?;
        Ok(Changed { value: user, effects: Effects { permissions: invited, room: invited, mail: false } })
    }
}
