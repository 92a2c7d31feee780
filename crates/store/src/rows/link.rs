//! Emails queued in the outbox and the single-use password links some of them carry: at most one
//! pending link per user, a newer one voiding the older (and its email, if not yet sent).

use crate::entity::{outbox, password_link};
use crate::{Context, Mail, OutboxStatus, PasswordLink, Result, classify, new_id};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter};

/// Queues `mail` in the outbox on `txn`, with the password link its body's placeholder stands
/// for, if any. Its id.
pub(crate) async fn queue_mail(
    txn: &DatabaseTransaction,
    ctx: &Context,
    workspace_id: &str,
    mail: &Mail,
    link: Option<&str>,
) -> Result<String> {
    let id = new_id();
    let row = outbox::ActiveModel {
        id: Set(id.clone()),
        workspace_id: Set(workspace_id.to_owned()),
        recipient: Set(mail.to.as_str().to_owned()),
        subject: Set(mail.subject.clone()),
        body: Set(mail.body.clone()),
        status: Set(OutboxStatus::Pending.as_str().to_owned()),
        attempts: Set(0),
        next_attempt_at: Set(ctx.now),
        lease_until: Set(0),
        last_error: Set(None),
        created_at: Set(ctx.now),
        sent_at: Set(None),
        link: Set(link.map(str::to_owned)),
    };
    outbox::Entity::insert(row).exec_without_returning(txn).await.map_err(classify)?;
    Ok(id)
}

/// Voids the user's pending link, if any: it stops working, and its email is not sent if it has
/// not been yet. Whether there was one.
pub(crate) async fn void<C: ConnectionTrait>(conn: &C, user_id: &str) -> Result<bool> {
    let links = password_link::Entity::find()
        .filter(password_link::Column::UserId.eq(user_id))
        .all(conn)
        .await
        .map_err(classify)?;
    for link in &links {
        outbox::Entity::delete_many()
            .filter(outbox::Column::Id.eq(link.outbox_id.as_str()))
            .filter(outbox::Column::Status.eq(OutboxStatus::Pending.as_str()))
            .exec(conn)
            .await
            .map_err(classify)?;
    }
    password_link::Entity::delete_many()
        .filter(password_link::Column::UserId.eq(user_id))
        .exec(conn)
        .await
        .map_err(classify)?;
    Ok(!links.is_empty())
}

/// Issues `link` to the user on `txn`: voids their pending one, queues the email and stores the
/// token's hash.
pub(crate) async fn issue(
    txn: &DatabaseTransaction,
    ctx: &Context,
    workspace_id: &str,
    user_id: &str,
    link: &PasswordLink,
) -> Result<()> {
    void(txn, user_id).await?;
    let outbox_id = queue_mail(txn, ctx, workspace_id, &link.mail, Some(&link.url)).await?;
    let row = password_link::ActiveModel {
        token_hash: Set(link.token.as_stored().to_owned()),
        user_id: Set(user_id.to_owned()),
        workspace_id: Set(workspace_id.to_owned()),
        purpose: Set(link.purpose.as_str().to_owned()),
        outbox_id: Set(outbox_id),
        created_at: Set(ctx.now),
        expires_at: Set(link.expires_at),
    };
    password_link::Entity::insert(row).exec_without_returning(txn).await.map_err(classify)?;
    Ok(())
}
