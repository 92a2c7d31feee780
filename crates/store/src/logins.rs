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
use sea_orm::{ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect};

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
        for (index, (key, limit)) in keys.iter().enumerate() {
            let (failures, in_progress) = history(&txn, key, now.saturating_sub(limit.window_ms), now).await?;
            if let Err(wait) = admit(*limit, now, &failures, in_progress) {
                return Ok(Admission::Refused { key: index, wait });
            }
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
    /// under `forget` (an account whose failures a success forgets; others' attempts in progress
    /// still count).
    pub async fn end_login_attempt(&self, ids: &[String], forget: Option<&str>) -> Result<()> {
        let mut which = Condition::any().add(login_attempt::Column::Id.is_in(ids.iter().map(String::as_str)));
        if let Some(key) = forget {
            which = which.add(
                Condition::all()
                    .add(login_attempt::Column::Key.eq(key))
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
        let keys = login_key::Entity::delete_many()
            .filter(login_key::Column::UsedAt.lt(before))
            .exec(&self.db)
            .await
            .map_err(classify)?;
        Ok(attempts.rows_affected + keys.rows_affected)
    }
}

/// The attempts under `key` that count at `now`: the times of the failures after `failed_after`,
/// and how many are in progress (begun less than [`IN_PROGRESS_EXPIRY_MS`] ago).
async fn history(
    txn: &sea_orm::DatabaseTransaction,
    key: &str,
    failed_after: i64,
    now: i64,
) -> Result<(Vec<i64>, u32)> {
    let counting = Condition::any().add(login_attempt::Column::FailedAt.gt(failed_after)).add(
        Condition::all()
            .add(login_attempt::Column::FailedAt.is_null())
            .add(login_attempt::Column::StartedAt.gt(now - IN_PROGRESS_EXPIRY_MS)),
    );
    let rows: Vec<Option<i64>> = login_attempt::Entity::find()
        .select_only()
        .column(login_attempt::Column::FailedAt)
        .filter(login_attempt::Column::Key.eq(key))
        .filter(counting)
        .into_tuple()
        .all(txn)
        .await
        .map_err(classify)?;
    let in_progress = u32::try_from(rows.iter().filter(|at| at.is_none()).count()).unwrap_or(u32::MAX);
    Ok((rows.into_iter().flatten().collect(), in_progress))
}
