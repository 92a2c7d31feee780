//! Team rows and their members as routing sees them.
//!
//! A member's position in a team comes from the team's `next_position` counter, which only grows,
//! so the team's order is stable: a member keeps their place while skipped, and round robin's
//! turn (the team's `last_position`) stays meaningful as members come and go.

use crate::entity::{team, team_member, user, workspace};
use crate::{Availability, Entity, Result, StoreError, Team, TeamMember, UserStatus, classify, count};
use roster_assignment::{Capacity, Strategy};
use roster_identity::{FullName, TeamName};
use sea_orm::sea_query::LockType;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, JoinType, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait,
};

pub(crate) fn to_team(row: team::Model, members: i64) -> Result<Team> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("team {}: {what}", row.id));
    Ok(Team {
        name: TeamName::parse(&row.name).map_err(|e| corrupt(&e.to_string()))?,
        strategy: Strategy::from_stored(&row.strategy).ok_or_else(|| corrupt("unknown strategy"))?,
        members,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
        workspace_id: row.workspace_id,
        id: row.id,
    })
}

fn capacity(stored: i32) -> Capacity {
    Capacity::new(u32::try_from(stored).unwrap_or(0))
}

/// A team of the workspace, locked for the rest of the transaction (`FOR UPDATE` on PostgreSQL;
/// SQLite's write transaction serializes writers anyway). Every change to a team's queue or turn
/// holds this lock, so round robin's turn and the queue's order are decided one call at a time,
/// on any process.
pub(crate) async fn lock(txn: &DatabaseTransaction, workspace_id: &str, team_id: &str) -> Result<team::Model> {
    team::Entity::find_by_id(team_id.to_owned())
        .filter(team::Column::WorkspaceId.eq(workspace_id))
        .lock_exclusive()
        .one(txn)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound(Entity::Team))
}

pub(crate) async fn load<C: ConnectionTrait>(conn: &C, workspace_id: &str, team_id: &str) -> Result<Team> {
    let row = team::Entity::find_by_id(team_id.to_owned())
        .filter(team::Column::WorkspaceId.eq(workspace_id))
        .one(conn)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound(Entity::Team))?;
    let members = count(conn, team_member::Entity::find().filter(team_member::Column::TeamId.eq(team_id))).await?;
    to_team(row, members)
}

/// A member row joined with what routing needs of their user and the workspace's default capacity.
#[derive(sea_orm::FromQueryResult)]
struct MemberRow {
    team_id: String,
    user_id: String,
    position: i64,
    max_open: Option<i32>,
    created_at: i64,
    full_name: String,
    status: String,
    availability: String,
    open_conversations: i32,
    last_assigned_at: Option<i64>,
    default_max_open: i32,
}

/// How [`load_members`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// For a listing: in the team's order, from a position on; with an availability, only
    /// members who have it.
    Page { after: Option<i64>, limit: u64, availability: Option<Availability> },
    /// For routing: every member, their user rows locked in the order of their ids (the one order
    /// in which any transaction locks several users), so picks see exact counts and two
    /// transactions taking agents of overlapping teams cannot deadlock.
    LockAll,
    /// Every member, as they are.
    All,
}

/// Members of a team with what routing needs of each, in one query.
pub(crate) async fn load_members<C: ConnectionTrait>(conn: &C, team_id: &str, read: Read) -> Result<Vec<TeamMember>> {
    let mut query = team_member::Entity::find()
        .select_only()
        .columns([
            team_member::Column::TeamId,
            team_member::Column::UserId,
            team_member::Column::Position,
            team_member::Column::MaxOpen,
            team_member::Column::CreatedAt,
        ])
        .columns([
            user::Column::FullName,
            user::Column::Status,
            user::Column::Availability,
            user::Column::OpenConversations,
            user::Column::LastAssignedAt,
        ])
        .column_as(workspace::Column::MaxOpenConversations, "default_max_open")
        .join(
            JoinType::InnerJoin,
            team_member::Entity::belongs_to(user::Entity).from(team_member::Column::UserId).to(user::Column::Id).into(),
        )
        .join(
            JoinType::InnerJoin,
            team_member::Entity::belongs_to(workspace::Entity)
                .from(team_member::Column::WorkspaceId)
                .to(workspace::Column::Id)
                .into(),
        )
        .filter(team_member::Column::TeamId.eq(team_id));
    match read {
        Read::Page { after, limit, availability } => {
            if let Some(after) = after {
                query = query.filter(team_member::Column::Position.gt(after));
            }
            if let Some(availability) = availability {
                query = query.filter(user::Column::Availability.eq(availability.as_str()));
            }
            query = query.order_by_asc(team_member::Column::Position).limit(limit);
        }
        Read::LockAll => {
            query = query.order_by_asc(user::Column::Id);
            QueryTrait::query(&mut query).lock_with_tables(LockType::Update, [user::Entity]);
        }
        Read::All => {}
    }
    let rows = query.into_model::<MemberRow>().all(conn).await.map_err(classify)?;
    rows.into_iter()
        .map(|row| {
            let max_open = row.max_open.map(capacity);
            Ok(TeamMember {
                full_name: FullName::parse(&row.full_name)
                    .map_err(|e| StoreError::Corrupt(format!("user {}: {e}", row.user_id)))?,
                position: row.position,
                capacity: max_open.unwrap_or(capacity(row.default_max_open)),
                max_open,
                open: u32::try_from(row.open_conversations).unwrap_or(0),
                status: UserStatus::from_stored(&row.status)?,
                availability: Availability::from_stored(&row.availability)?,
                last_assigned_at: row.last_assigned_at,
                added_at: row.created_at,
                team_id: row.team_id,
                user_id: row.user_id,
            })
        })
        .collect()
}
