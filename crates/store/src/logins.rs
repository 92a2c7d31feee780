//! Login attempts, for throttling failed logins: every process records its attempts here, so the
//! limits hold for all of them together (`roster_identity::throttle` has the rule).
//!
//! Each attempt is one row per key it counts against (the account, the client's address): begun,
//! then marked failed, or deleted when it succeeded or ended without an outcome. An attempt is
//! judged and recorded in one transaction holding its keys' rows in `login_keys` (locked in the
//! order of the keys, so two attempts never wait for each other both ways): attempts on one key
//! are judged one at a time, each seeing every attempt before it, so at most the limit go on.
//!
//! Keys are chosen by the caller; the server stores digests, not emails or addresses.

use crate::entity::{login_attempt, login_key};
use crate::{Result, Store, classify, commit, new_id};
use roster_identity::throttle::{IN_PROGRESS_EXPIRY_MS, Limit, RetryAfter, admit};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

/// What became of a login attempt asking to begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// It is recorded as in progress: the ids of its rows.
    Begun(Vec<String>),
    /// A limit is reached: the index of its key, and how long until an attempt may begin.
    Refused { key: usize, wait: RetryAfter },
}

impl Store {
    /// Begins a login attempt at `now` under each of `keys` and its limit, unless one of them
    /// is reached. The attempt counts as soon as this returns.
    pub async fn begin_login_attempt(&self, keys: &[(&str, Limit)], now: i64) -> Result<Admission> {
        // An attempt the counts already refuse is refused by a plain read: a flood of them takes
        // no write lock (on SQLite, the whole database's).
        if let Some(refused) = judge(&self.db, keys, now).await? {
            return Ok(refused);
        }
        let txn = self.write().await?;
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&i| keys[i].0);
        for &i in &order {
            let row = login_key::ActiveModel { key: Set(keys[i].0.to_owned()), used_at: Set(now) };
            login_key::Entity::insert(row)
                .on_conflict(
                    OnConflict::column(login_key::Column::Key).update_column(login_key::Column::UsedAt).to_owned(),
                )
                .exec_without_returning(&txn)
                .await
                .map_err(classify)?;
        }
        if let Some(refused) = judge(&txn, keys, now).await? {
            return Ok(refused);
        }
        let ids: Vec<String> = keys.iter().map(|_| new_id()).collect();
        let rows = keys.iter().zip(&ids).map(|((key, _), id)| login_attempt::ActiveModel {
            id: Set(id.clone()),
            key: Set((*key).to_owned()),
            started_at: Set(now),
            failed_at: Set(None),
        });
        login_attempt::Entity::insert_many(rows).exec_without_returning(&txn).await.map_err(classify)?;
        commit(txn).await?;
        Ok(Admission::Begun(ids))
    }

    /// The attempts `ids` failed at `now`.
    pub async fn fail_login_attempt(&self, ids: &[String], now: i64) -> Result<()> {
        login_attempt::Entity::update_many()
            .col_expr(login_attempt::Column::FailedAt, Expr::val(now))
            .filter(login_attempt::Column::Id.is_in(ids.iter().map(String::as_str)))
            .exec(&self.db)
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Deletes the attempts `ids` (they do not count: a success, or no outcome) and the failures
    /// under the keys `forget` (an account whose failures a success forgets; others' attempts in
    /// progress still count).
    pub async fn end_login_attempt(&self, ids: &[String], forget: &[&str]) -> Result<()> {
        let mut which = Condition::any().add(login_attempt::Column::Id.is_in(ids.iter().map(String::as_str)));
        for key in forget {
            which = which.add(
                Condition::all()
                    .add(login_attempt::Column::Key.eq(*key))
                    .add(login_attempt::Column::FailedAt.is_not_null()),
            );
        }
        login_attempt::Entity::delete_many().filter(which).exec(&self.db).await.map_err(classify)?;
        Ok(())
    }

    /// Deletes the attempts begun, and the keys last used, before `before`: none of them counts
    /// any more.
    pub async fn purge_login_attempts(&self, before: i64) -> Result<u64> {
        let attempts = login_attempt::Entity::delete_many()
            .filter(login_attempt::Column::StartedAt.lt(before))
            .exec(&self.db)
            .await
            .map_err(classify)?;
        // One key per statement: a statement deleting several would lock them in its own order,
        // and could deadlock with an attempt locking its two keys in theirs.
        let stale: Vec<String> = login_key::Entity::find()
            .select_only()
            .column(login_key::Column::Key)
            .filter(login_key::Column::UsedAt.lt(before))
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(classify)?;
        let mut deleted = attempts.rows_affected;
        for key in stale {
            let result = login_key::Entity::delete_many()
                .filter(login_key::Column::Key.eq(key))
                .filter(login_key::Column::UsedAt.lt(before))
                .exec(&self.db)
                .await
                .map_err(classify)?;
            deleted += result.rows_affected;
        }
        Ok(deleted)
    }
}

/// The refusal of the first of `keys` whose limit is reached, if one is.
async fn judge<C: ConnectionTrait>(conn: &C, keys: &[(&str, Limit)], now: i64) -> Result<Option<Admission>> {
    for (index, (key, limit)) in keys.iter().enumerate() {
        let (failures, in_progress) = history(conn, key, now.saturating_sub(limit.window_ms), now).await?;
        if let Err(wait) = admit(*limit, now, &failures, in_progress) {
            return Ok(Some(Admission::Refused { key: index, wait }));
        }
    }
    Ok(None)
}

/// The attempts under `key` that count at `now`: the times of the failures after `failed_after`,
/// and how many are in progress. An attempt still without an outcome after
/// [`IN_PROGRESS_EXPIRY_MS`] (its process died, or its outcome could not be written) counts as a
/// failure at its start: the limits fail closed.
async fn history<C: ConnectionTrait>(conn: &C, key: &str, failed_after: i64, now: i64) -> Result<(Vec<i64>, u32)> {
    let counting = Condition::any().add(login_attempt::Column::FailedAt.gt(failed_after)).add(
        Condition::all()
            .add(login_attempt::Column::FailedAt.is_null())
            .add(login_attempt::Column::StartedAt.gt(failed_after)),
    );
    let rows: Vec<(i64, Option<i64>)> = login_attempt::Entity::find()
        .select_only()
        .column(login_attempt::Column::StartedAt)
        .column(login_attempt::Column::FailedAt)
        .filter(login_attempt::Column::Key.eq(key))
        .filter(counting)
        .into_tuple()
        .all(conn)
        .await
        .map_err(classify)?;
    let mut failures = Vec::with_capacity(rows.len());
    let mut in_progress = 0u32;
    for (started_at, failed_at) in rows {
        match failed_at {
            Some(at) => failures.push(at),
            None if started_at > now - IN_PROGRESS_EXPIRY_MS => in_progress = in_progress.saturating_add(1),
            None => failures.push(started_at),
        }
    }
    Ok((failures, in_progress))
}
