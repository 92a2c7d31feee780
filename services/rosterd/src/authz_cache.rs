//! The in-memory copy of each workspace's roles and members that every check is answered from.
//!
//! Consistency works by version stamp, the same on SQLite and PostgreSQL: every transaction that
//! changes what a check answers bumps its workspace's `authz_version`, and stamps the user rows it
//! changes with the new version (see `roster_store`).
//!
//! - On the process that made a change, the handler calls [`AuthzCache::refresh`] before it
//!   answers, so every later check there sees the change.
//! - Every process follows the change feed every `refresh_interval`: every such transaction also
//!   writes an event in its workspace's stream, so two small queries (the feed's head, and the
//!   workspaces with events after the last one seen) tell which held workspaces to bring up to
//!   date, and a change is in force everywhere within the interval plus one read. An idle process
//!   costs the same whether it holds ten workspaces or a hundred thousand.
//!
//! The copies are held within a memory budget (`--authz-cache-mib`, estimated by
//! [`Snapshot::bytes`]): every fifth follow of the change feed (once a second by default), when
//! they take more, the copies read least recently are let go until the rest take nine tenths of
//! it. A copy let go is read again by its next check, in one read of the workspace, as at first.
//!
//! Bringing a copy up to date reads only the members changed since its version and sets them in
//! place: an invitation costs one member, not a read of the whole workspace. A change to a role
//! reloads the workspace. A loaded copy replaces the held one only if its version is not older,
//! and changes are applied only to an older copy, so a slow read that started before a change
//! cannot undo a refresh that saw it.

use crate::metrics::CacheMetrics;
use roster_authz::RoleId;
use roster_authz::{Directory, Member, MemberRef, Role};
use roster_store::{AuthzChanges, EventCursor, Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// One workspace's directory and the version it was read at.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) version: i64,
    pub(crate) directory: Directory,
    /// The cache's clock when a check last read it: what eviction goes by.
    used: AtomicU64,
}

impl Clone for Snapshot {
    fn clone(&self) -> Self {
        Snapshot {
            version: self.version,
            directory: self.directory.clone(),
            used: AtomicU64::new(self.used.load(Ordering::Relaxed)),
        }
    }
}

impl Snapshot {
    fn new(version: i64, directory: Directory, now: u64) -> Self {
        Snapshot { version, directory, used: AtomicU64::new(now) }
    }

    /// Sets the members of `changes`, and their version.
    fn apply(&mut self, changes: &AuthzChanges) {
        for member in &changes.members {
            self.directory.set_member(&member.user_id, &member.role_id, member.active);
        }
        self.version = changes.version;
    }

    /// About how much memory the copy takes, in bytes: its tables' entries with their overhead
    /// (a member's entry is 56 bytes, kept in a hash table at most seven eighths full and grown by
    /// doubling; a role holds its id, name and grants in several tables), and the map's entry.
    fn bytes(&self) -> usize {
        let (members, roles) = self.directory.len();
        512 + 128 * members + 512 * roles
    }

    /// Marks the copy read at `now`; written only when the clock moved, so that the checks of a
    /// busy workspace on every core do not all write the same cache line.
    fn touch(&self, now: u64) {
        if self.used.load(Ordering::Relaxed) != now {
            self.used.store(now, Ordering::Relaxed);
        }
    }
}

/// What a look at the budget found and did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Eviction {
    /// The workspaces let go, least recently read first.
    gone: Vec<String>,
    /// The copies held after it, and their estimated bytes.
    held: usize,
    bytes: usize,
}

/// Lets go of the copies read least recently until the rest take at most nine tenths of
/// `budget` bytes, when all of them take more than `budget`. A copy let go is read again from the
/// database by its next check.
fn evict(held: &Held, budget: usize) -> Eviction {
    let mut ages: Vec<(u64, String)> = {
        let held = held.read().unwrap_or_else(|e| e.into_inner());
        if held.bytes <= budget {
            return Eviction { gone: Vec::new(), held: held.copies.len(), bytes: held.bytes };
        }
        held.copies.iter().map(|(id, s)| (s.used.load(Ordering::Relaxed), id.clone())).collect()
    };
    ages.sort_unstable();
    let target = budget / 10 * 9;
    let mut gone = Vec::new();
    let mut held = held.write().unwrap_or_else(|e| e.into_inner());
    for (_, id) in ages {
        if held.bytes <= target {
            break;
        }
        // Gone meanwhile: dropped by a follow, say.
        if held.remove(&id).is_some() {
            gone.push(id);
        }
    }
    Eviction { gone, held: held.copies.len(), bytes: held.bytes }
}

/// The copy held of each workspace, and their estimated bytes in all ([`Snapshot::bytes`]), kept
/// as copies come, change and go, so that the budget is checked without a walk over every copy.
#[derive(Debug, Default)]
struct Copies {
    copies: HashMap<String, Arc<Snapshot>>,
    bytes: usize,
}

impl Copies {
    fn get(&self, workspace_id: &str) -> Option<&Arc<Snapshot>> {
        self.copies.get(workspace_id)
    }

    fn put(&mut self, workspace_id: &str, snapshot: Arc<Snapshot>) {
        self.bytes += snapshot.bytes();
        if let Some(old) = self.copies.insert(workspace_id.to_owned(), snapshot) {
            self.bytes -= old.bytes();
        }
    }

    fn remove(&mut self, workspace_id: &str) -> Option<Arc<Snapshot>> {
        let old = self.copies.remove(workspace_id)?;
        self.bytes -= old.bytes();
        Some(old)
    }

    fn clear(&mut self) {
        self.copies.clear();
        self.bytes = 0;
    }
}

type Held = RwLock<Copies>;

/// Sets the members of `changes` (read since version `since`) in the held copy of the workspace,
/// if it is older than them. `None` when the copy was dropped in between, or replaced by one
/// older than `since` (a load that read before a drop): the caller reads the workspace anew.
///
/// In place when no check reads the copy. Otherwise the copy is copied and changed outside the
/// lock, which every check of every workspace takes (a big workspace's copy is megabytes), and
/// put in its place unless another update replaced it meanwhile; then it starts over from the
/// one held now, and after two such misses copies under the lock, as it did before.
fn apply(held: &Held, workspace_id: &str, since: i64, changes: &AuthzChanges) -> Option<Arc<Snapshot>> {
    let mut attempt = 0;
    loop {
        let read = {
            let mut held = held.write().unwrap_or_else(|e| e.into_inner());
            let Copies { copies, bytes } = &mut *held;
            let entry = copies.get_mut(workspace_id)?;
            if entry.version < since {
                return None;
            }
            if entry.version >= changes.version {
                return Some(entry.clone());
            }
            // In place, counting what the copy grew by.
            let before = entry.bytes();
            let in_place = match Arc::get_mut(entry) {
                Some(snapshot) => Some(snapshot),
                None if attempt == 2 => Some(Arc::make_mut(entry)),
                None => None,
            };
            if let Some(snapshot) = in_place {
                snapshot.apply(changes);
                *bytes = *bytes - before + snapshot.bytes();
                return Some(entry.clone());
            }
            entry.clone()
        };
        let mut copy = Snapshot::clone(&read);
        copy.apply(changes);
        let copy = Arc::new(copy);
        let mut held = held.write().unwrap_or_else(|e| e.into_inner());
        if held.get(workspace_id).is_some_and(|entry| Arc::ptr_eq(entry, &read)) {
            held.put(workspace_id, copy.clone());
            return Some(copy);
        }
        attempt += 1;
    }
}

/// How many follows of the change feed go by between two looks at the copies' total size.
const EVICT_EVERY: u64 = 5;

/// The cache of the workspaces this process checked, within a memory budget.
pub(crate) struct AuthzCache {
    store: Store,
    /// Counts each read of the database (`roster_authz_cache_reads_total`), the copies held and
    /// their size, and evictions.
    metrics: CacheMetrics,
    held: Held,
    /// One load at a time per workspace, so a burst of first checks reads the database once.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// How much memory the copies may take, in bytes (estimated: [`Snapshot::bytes`]).
    budget: usize,
    /// The clock copies are marked with when read: one tick per follow of the change feed.
    clock: AtomicU64,
}

impl AuthzCache {
    pub(crate) fn new(store: Store, metrics: CacheMetrics, budget: usize) -> Self {
        Self { store, metrics, held: RwLock::default(), loading: Mutex::default(), budget, clock: AtomicU64::new(0) }
    }

    fn held(&self, workspace_id: &str) -> Option<Arc<Snapshot>> {
        let snapshot = self.held.read().unwrap_or_else(|e| e.into_inner()).get(workspace_id).cloned()?;
        snapshot.touch(self.clock.load(Ordering::Relaxed));
        Some(snapshot)
    }

    /// Lets go of the copies read least recently when all of them take more than the budget,
    /// and of their load gates when no load waits on them.
    fn evict_over_budget(&self) {
        let Eviction { gone, held, bytes } = evict(&self.held, self.budget);
        self.metrics.workspaces.set(i64::try_from(held).unwrap_or(i64::MAX));
        self.metrics.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        if gone.is_empty() {
            return;
        }
        self.metrics.evictions.inc_by(gone.len() as u64);
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        for id in &gone {
            if loading.get(id).is_some_and(|gate| Arc::strong_count(gate) == 1) {
                loading.remove(id);
            }
        }
        tracing::debug!(evicted = gone.len(), "authorization cache over its budget: least recently used copies let go");
    }

    /// The workspace's snapshot, loading it on first use.
    pub(crate) async fn snapshot(&self, workspace_id: &str) -> Result<Arc<Snapshot>, StoreError> {
        if let Some(snapshot) = self.held(workspace_id) {
            return Ok(snapshot);
        }
        let gate = self.gate(workspace_id);
        let _loading = gate.lock().await;
        if let Some(snapshot) = self.held(workspace_id) {
            return Ok(snapshot);
        }
        self.read_and_hold(workspace_id).await
    }

    fn gate(&self, workspace_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.loading.lock().unwrap_or_else(|e| e.into_inner()).entry(workspace_id.to_owned()).or_default().clone()
    }

    /// Reads the workspace from the database and holds it, unless a newer copy is held already;
    /// one load at a time per workspace (see [`AuthzCache::follow`]).
    async fn load(&self, workspace_id: &str) -> Result<Arc<Snapshot>, StoreError> {
        let gate = self.gate(workspace_id);
        let _loading = gate.lock().await;
        self.read_and_hold(workspace_id).await
    }

    /// [`AuthzCache::load`], its gate held.
    async fn read_and_hold(&self, workspace_id: &str) -> Result<Arc<Snapshot>, StoreError> {
        self.metrics.reads.inc();
        let data = self.store.authz_changes(workspace_id, None).await?;
        let directory = Directory::new(
            data.roles.unwrap_or_default(),
            data.members.iter().map(|m| (m.user_id.clone(), m.role_id.as_str(), m.active)),
        );
        let loaded = Arc::new(Snapshot::new(data.version, directory, self.clock.load(Ordering::Relaxed)));
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        match held.get(workspace_id) {
            Some(newer) if newer.version > loaded.version => Ok(newer.clone()),
            _ => {
                held.put(workspace_id, loaded.clone());
                Ok(loaded)
            }
        }
    }

    /// Brings the held copy up to date by reading only what changed since its version: the
    /// members changed since are set in place, which costs what changed, not the workspace's
    /// size. A change to a role reloads the whole workspace. Loads a workspace not held.
    ///
    /// Each member in a copy is at least as new as the copy's version (what is read is at least
    /// as new as the version read before it), so applying changes read since an older version
    /// to a copy that moved on in between keeps that true; older reads are not applied.
    pub(crate) async fn catch_up(&self, workspace_id: &str) -> Result<Arc<Snapshot>, StoreError> {
        let Some(since) = self.held(workspace_id).map(|snapshot| snapshot.version) else {
            return self.load(workspace_id).await;
        };
        self.metrics.reads.inc();
        let changes = self.store.authz_changes(workspace_id, Some(since)).await?;
        if changes.roles.is_some() {
            return self.load(workspace_id).await;
        }
        match apply(&self.held, workspace_id, since, &changes) {
            Some(snapshot) => Ok(snapshot),
            None => self.load(workspace_id).await,
        }
    }

    /// Re-reads a workspace after this process changed it, so that every later check here sees
    /// the change. A workspace not held needs nothing; if the read fails, the copy is dropped and
    /// the next check loads it.
    pub(crate) async fn refresh(&self, workspace_id: &str) {
        if self.held(workspace_id).is_none() {
            return;
        }
        if let Err(err) = self.catch_up(workspace_id).await {
            tracing::warn!(workspace_id, error = %err, "could not refresh the authorization cache; dropping the copy");
            self.held.write().unwrap_or_else(|e| e.into_inner()).remove(workspace_id);
        }
    }

    /// A member of the workspace. A user the held copy does not know — created on another process
    /// since it was read — is looked up in the database before the answer is "no such user".
    pub(crate) async fn member(&self, workspace_id: &str, user_id: &str) -> Result<Option<Member>, StoreError> {
        let held = self.snapshot(workspace_id).await?.directory.member(user_id).map(MemberRef::to_member);
        if held.is_some() {
            return Ok(held);
        }
        self.metrics.reads.inc();
        match self.store.user(workspace_id, user_id).await {
            Ok(_) => Ok(self.catch_up(workspace_id).await?.directory.member(user_id).map(MemberRef::to_member)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The role a role id stands for in the workspace. An id the held copy does not know is
    /// looked for once more in a fresh copy; a role that does not exist grants nothing.
    pub(crate) async fn role(&self, workspace_id: &str, role_id: &RoleId) -> Result<Arc<Role>, StoreError> {
        if let Some(builtin) = role_id.builtin() {
            return Ok(Arc::new(Role::builtin(builtin)));
        }
        if let Some(role) = self.snapshot(workspace_id).await?.directory.role(role_id.as_str()) {
            return Ok(role.clone());
        }
        let fresh = self.load(workspace_id).await?;
        Ok(fresh.directory.role(role_id.as_str()).cloned().unwrap_or_else(|| Arc::new(Role::missing(role_id.as_str()))))
    }

    /// Brings up to date the held workspaces whose stream in the change feed has events after
    /// `after`; `after` moves to the newest event every reader may read. Workspaces that no longer
    /// exist are dropped, as is one that cannot be brought up to date (its next check loads it
    /// afresh); the others are still brought up to date: one bad workspace stalls nobody else.
    ///
    /// What is read first is the feed's head, then the workspaces changed after the cursor, so a
    /// change is never missed between the two reads; changes committed beyond the head (a long
    /// transaction elsewhere holds the head back) are acted on now and read again next time.
    async fn follow_once(&self, after: &mut Option<EventCursor>) -> Result<(), StoreError> {
        let head = self.store.newest_event().await?;
        let Some(from) = *after else {
            // The first look. Copies read before it may miss changes before it: let them go.
            self.held.write().unwrap_or_else(|e| e.into_inner()).clear();
            *after = Some(head.unwrap_or_default());
            return Ok(());
        };
        for id in self.store.workspaces_changed_after(from).await? {
            // The database went away meanwhile: keep answering from the copies held and look at
            // the same changes again next time.
            self.follow(&id).await?;
        }
        if let Some(head) = head {
            *after = Some(head.max(from));
        }
        Ok(())
    }

    /// Brings the workspace up to date if it is held, or after the load of it under way. Taking
    /// its load gate first means a load that read before the change cannot put its copy in place
    /// after this looked. An unreachable database is handed back, the copy kept; a workspace that
    /// is gone or cannot be read is dropped.
    async fn follow(&self, id: &str) -> Result<(), StoreError> {
        // Without a gate this process never loaded the workspace: nothing to do, and no gate is
        // made for every workspace that changes anywhere.
        let gate = self.loading.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
        let Some(gate) = gate else { return Ok(()) };
        drop(gate.lock().await);
        if self.held(id).is_none() {
            return Ok(());
        }
        match self.catch_up(id).await {
            Ok(_) => {}
            Err(err @ StoreError::Unavailable(_)) => return Err(err),
            Err(StoreError::NotFound(_)) => {
                self.held.write().unwrap_or_else(|e| e.into_inner()).remove(id);
            }
            Err(err) => {
                tracing::warn!(workspace_id = %id, error = %err, "could not refresh a workspace; dropping its copy");
                self.held.write().unwrap_or_else(|e| e.into_inner()).remove(id);
            }
        }
        Ok(())
    }

    /// Follows the change feed until `stop` turns true; see the module documentation.
    pub(crate) async fn run(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut after = None;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticker.tick() => {}
            }
            let tick = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
            // The copies' total is summed about once a second, not at every follow.
            if tick.is_multiple_of(EVICT_EVERY) {
                self.evict_over_budget();
            }
            match self.follow_once(&mut after).await {
                Ok(()) if failing => {
                    tracing::info!("the authorization cache follows the change feed again");
                    failing = false;
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    tracing::warn!(error = %err, "cannot read the change feed; answering from the held copy");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_authz::BuiltinRole;
    use roster_store::Member as Changed;

    const ADA: &str = "0123456789abcdef0123456789abcdef";

    fn held(version: i64) -> Held {
        let directory = Directory::new(
            vec![Role::builtin(BuiltinRole::Admin), Role::builtin(BuiltinRole::Agent)],
            [(ADA.to_owned(), "agent", true)],
        );
        let mut copies = Copies::default();
        copies.put("w", Arc::new(Snapshot::new(version, directory, 0)));
        RwLock::new(copies)
    }

    fn deactivation(version: i64) -> AuthzChanges {
        let ada = Changed { user_id: ADA.into(), role_id: "agent".into(), active: false };
        AuthzChanges { version, roles: None, members: vec![ada] }
    }

    fn active(snapshot: &Snapshot) -> bool {
        snapshot.directory.member(ADA).expect("ada").active
    }

    #[test]
    fn a_copy_no_check_reads_is_changed_in_place() {
        let held = held(5);
        let before = Arc::as_ptr(held.read().unwrap().get("w").unwrap());
        let after = apply(&held, "w", 5, &deactivation(6)).expect("held");
        assert!(std::ptr::eq(before, Arc::as_ptr(&after)));
        assert_eq!((after.version, active(&after)), (6, false));
    }

    #[test]
    fn a_copy_a_check_reads_is_replaced_by_a_changed_copy_and_left_as_it_was() {
        let held = held(5);
        let reading = held.read().unwrap().get("w").unwrap().clone();
        let after = apply(&held, "w", 5, &deactivation(6)).expect("held");
        assert!(!Arc::ptr_eq(&reading, &after));
        assert!(Arc::ptr_eq(held.read().unwrap().get("w").unwrap(), &after));
        assert_eq!((after.version, active(&after)), (6, false));
        assert_eq!((reading.version, active(&reading)), (5, true));
    }

    #[test]
    fn changes_apply_only_to_an_older_copy_not_older_than_their_start() {
        let held = held(7);
        let kept = apply(&held, "w", 5, &deactivation(6)).expect("held");
        assert_eq!((kept.version, active(&kept)), (7, true));
        assert!(apply(&held, "w", 8, &deactivation(9)).is_none(), "a copy older than the read");
        assert!(apply(&held, "gone", 5, &deactivation(6)).is_none(), "a workspace not held");
    }

    #[test]
    fn over_its_budget_the_cache_lets_go_of_the_least_recently_read_copies() {
        let one = || {
            let directory = Directory::new(vec![Role::builtin(BuiltinRole::Agent)], [(ADA.to_owned(), "agent", true)]);
            Snapshot::new(1, directory, 0)
        };
        let size = one().bytes();
        let held: Held = RwLock::default();
        for i in 0..10u64 {
            let snapshot = one();
            snapshot.touch(i);
            held.write().unwrap().put(&format!("w{i}"), Arc::new(snapshot));
        }
        // At the budget: nothing goes.
        assert_eq!(evict(&held, 10 * size), Eviction { gone: vec![], held: 10, bytes: 10 * size });
        // One copy over: down to nine tenths of the budget, the least recently read first.
        let eviction = evict(&held, 9 * size);
        assert_eq!(eviction.gone, ["w0", "w1"], "9 × 0.9 = 8.1 copies' worth: 8 stay");
        assert_eq!((eviction.held, eviction.bytes), (8, 8 * size));
        let mut left: Vec<String> = held.read().unwrap().copies.keys().cloned().collect();
        left.sort();
        assert_eq!(left, (2..10).map(|i| format!("w{i}")).collect::<Vec<_>>());
        // A copy read again is kept over one read before it.
        held.read().unwrap().get("w2").unwrap().touch(20);
        assert_eq!(evict(&held, 7 * size).gone, ["w3", "w4"]);
        assert!(held.read().unwrap().get("w2").is_some());
    }

    /// The running total is what a walk over the copies would sum, as copies come, grow in
    /// place or by a copy, are replaced and go.
    #[test]
    fn the_estimated_bytes_follow_every_change_of_the_copies() {
        let walked = |held: &Held| held.read().unwrap().copies.values().map(|s| s.bytes()).sum::<usize>();
        let joins = |version: i64, users: &[&String]| AuthzChanges {
            version,
            roles: None,
            members: users
                .iter()
                .map(|u| Changed { user_id: (*u).clone(), role_id: "agent".into(), active: true })
                .collect(),
        };
        let held = held(5);
        let w = held.read().unwrap().get("w").unwrap().clone();
        held.write().unwrap().put("v", w);
        apply(&held, "w", 5, &joins(6, &[&ADA.replace('0', "1"), &ADA.replace('0', "2")])).expect("grown by a copy");
        // Read by a check meanwhile, then not.
        let reading = held.read().unwrap().get("w").unwrap().clone();
        apply(&held, "w", 6, &joins(7, &[&ADA.replace('0', "3")])).expect("grown by a copy");
        drop(reading);
        assert_eq!(held.read().unwrap().bytes, walked(&held));
        apply(&held, "w", 7, &joins(8, &[&ADA.replace('0', "4")])).expect("grown in place");
        assert_eq!(held.read().unwrap().bytes, walked(&held));
        let small = held.read().unwrap().get("v").unwrap().clone();
        assert!(held.read().unwrap().bytes > 2 * small.bytes(), "w grew by four members");
        held.write().unwrap().put("w", small);
        assert_eq!(held.read().unwrap().bytes, walked(&held));
        held.write().unwrap().remove("v");
        assert_eq!(held.read().unwrap().bytes, walked(&held));
        held.write().unwrap().clear();
        assert_eq!(held.read().unwrap().bytes, 0);
    }
}
