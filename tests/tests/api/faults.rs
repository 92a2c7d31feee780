//! Faults the real `rosterd` binary survives: SIGTERM and kill -9 under load, the database going
//! away and coming back.

use crate::assignment::team_conversations;
use crate::teams::team_of_agents;
use roster_proto::v1 as pb;
use roster_tests::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// What one client of a load saw: acknowledged results and errors, in order.
#[derive(Default)]
struct Seen {
    users: Vec<(String, String)>,
    assignments: Vec<(String, Option<String>, u64)>,
    errors: Vec<(Code, String)>,
}

/// Mixed load on `channel` until `stop`: invitations and assignments, each client its own ids.
async fn load(
    channel: tonic::transport::Channel,
    ws: String,
    team: String,
    client: usize,
    stop: Arc<AtomicBool>,
) -> Seen {
    let mut seen = Seen::default();
    let mut users = pb::user_service_client::UserServiceClient::new(channel.clone());
    let mut assignments = pb::assignment_service_client::AssignmentServiceClient::new(channel);
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let result = if client.is_multiple_of(2) {
            let email = format!("load-{client}-{n}@acme.example");
            let request = pb::CreateUserRequest {
                workspace_id: ws.clone(),
                email: email.clone(),
                full_name: "Load".into(),
                password: PASSWORD.into(),
                role: "agent".into(),
                ..Default::default()
            };
            users.create_user(service(request)).await.map(|r| {
                seen.users.push((r.into_inner().user.expect("user").id, email));
            })
        } else {
            let conversation = format!("wa:{client}-{n}");
            let request = pb::AssignConversationRequest {
                workspace_id: ws.clone(),
                conversation_id: conversation.clone(),
                team_id: team.clone(),
                ..Default::default()
            };
            assignments.assign_conversation(service(request)).await.map(|r| {
                let a = r.into_inner().assignment.expect("assignment");
                let assignee = (!a.assignee_id.is_empty()).then_some(a.assignee_id);
                seen.assignments.push((conversation, assignee, a.sequence));
            })
        };
        if let Err(status) = result {
            seen.errors
                .push((status.code(), format!("{} {}", error_reason(&status).unwrap_or_default(), status.message())));
        }
    }
    seen
}

#[tokio::test]
async fn sigterm_under_load_turns_not_serving_finishes_in_flight_calls_and_exits_cleanly() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, _) = team_of_agents(&app, &acme, "Support", pb::Strategy::LoadBalanced, 3, Some(1000)).await;
    let seats = pb::SetExtraSeatsRequest { workspace_id: acme.id.clone(), extra_seats: 10_000 };
    app.billing().set_extra_seats(service(seats)).await.expect("seats");
    // bcrypt at cost 10 makes each invitation take a while, so that some are in flight at the signal.
    let options = PeerOptions {
        args: vec!["--shutdown-grace-secs".into(), "10".into()],
        bcrypt_cost: Some(10),
        ..Default::default()
    };
    let mut peer = app.spawn_peer_process_with(options).await;
    let mut watch = HealthClient::new(peer.channel.clone())
        .watch(HealthCheckRequest { service: "roster.v1.UserService".into() })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(watch.message().await.expect("status").expect("first").status(), ServingStatus::Serving);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|client| tokio::spawn(load(peer.channel.clone(), acme.id.clone(), team.id.clone(), client, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Four invitations sent just before the signal: in flight when it arrives.
    let in_flight: Vec<_> = (0..4)
        .map(|i| {
            let mut users = pb::user_service_client::UserServiceClient::new(peer.channel.clone());
            let request = pb::CreateUserRequest {
                workspace_id: acme.id.clone(),
                email: format!("in-flight-{i}@acme.example"),
                full_name: "In Flight".into(),
                password: PASSWORD.into(),
                role: "agent".into(),
                ..Default::default()
            };
            tokio::spawn(async move { users.create_user(service(request)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let signalled = Instant::now();
    peer.terminate();

    let next = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("in time");
    assert_eq!(next.expect("status").expect("update").status(), ServingStatus::NotServing);
    drop(watch);
    let status = peer.wait(Duration::from_secs(15)).await.expect("exits within the grace period");
    let exited = signalled.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (seen, errors) = gather(clients).await;
    let acknowledged = (seen.users.len(), seen.assignments.len());
    println!(
        "sigterm: exit {status:?} {:.0} ms after the signal; {} users and {} assignments acknowledged; errors {errors:?}",
        exited.as_secs_f64() * 1000.0,
        acknowledged.0,
        acknowledged.1
    );
    assert!(status.success(), "exit status {status:?}");
    for call in in_flight {
        let answer = call.await.expect("task");
        assert!(answer.is_ok(), "a call in flight at the signal finished: {answer:?}");
    }
    assert!(acknowledged.0 > 0 && acknowledged.1 > 0, "the load ran");
    // The only failures are calls that found the server gone: refused connections (UNAVAILABLE),
    // and requests the client had queued on a connection the server then closed, which were never
    // sent (hyper's "operation was canceled").
    assert!(errors.keys().all(|code| matches!(code, Code::Unavailable | Code::Cancelled)), "{errors:?}");
    assert_acknowledged_writes_are_there(&app, &acme.id, &seen).await;
}

/// Every client's acknowledgements together, and the count of each error code.
async fn gather(clients: Vec<tokio::task::JoinHandle<Seen>>) -> (Seen, HashMap<Code, usize>) {
    let mut all = Seen::default();
    let mut errors: HashMap<Code, usize> = HashMap::new();
    for client in clients {
        let seen = client.await.expect("client");
        all.users.extend(seen.users);
        all.assignments.extend(seen.assignments);
        for (code, message) in seen.errors {
            if !matches!(code, Code::Unavailable | Code::ResourceExhausted | Code::Unknown | Code::Cancelled) {
                println!("error: {code:?} {message}");
            }
            *errors.entry(code).or_default() += 1;
        }
    }
    (all, errors)
}

/// Every acknowledged invitation and assignment is in the database as it was answered.
async fn assert_acknowledged_writes_are_there(app: &TestApp, ws: &str, seen: &Seen) {
    for (id, email) in &seen.users {
        let request = pb::GetUserRequest { workspace_id: ws.into(), user_id: id.clone() };
        let user = app.users().get_user(service(request)).await.expect("an acknowledged user exists");
        assert_eq!(&user.into_inner().user.expect("user").email, email);
    }
    for (conversation, assignee, sequence) in &seen.assignments {
        let request =
            pb::GetConversationAssignmentRequest { workspace_id: ws.into(), conversation_id: conversation.clone() };
        let found = app.assignments().get_conversation_assignment(service(request)).await.expect("acknowledged");
        let found = found.into_inner().assignment.expect("assignment");
        if let Some(assignee) = assignee {
            assert_eq!((&found.assignee_id, found.sequence), (assignee, *sequence), "{conversation}");
        }
    }
}

/// The seat, capacity and ordering invariants: no more active users than seats, no agent over
/// their limit of open conversations, one team's pick numbers never repeated.
async fn assert_invariants(app: &TestApp, ws: &str, team: &str, max_open: usize) {
    let request = pb::GetSubscriptionRequest { workspace_id: ws.into() };
    let subscription = app.billing().get_subscription(service(request)).await.expect("subscription");
    let subscription = subscription.into_inner().subscription.expect("subscription");
    assert!(subscription.seats_used <= subscription.seat_limit, "{subscription:?}");
    let conversations = team_conversations(app, ws, team).await;
    let mut open: HashMap<&str, usize> = HashMap::new();
    let mut sequences = std::collections::HashSet::new();
    for c in &conversations {
        if !c.assignee_id.is_empty() && c.status == pb::ConversationStatus::Open as i32 {
            *open.entry(c.assignee_id.as_str()).or_default() += 1;
            assert!(sequences.insert(c.sequence), "pick number {} given twice", c.sequence);
        }
    }
    assert!(open.values().all(|n| *n <= max_open), "open per agent {open:?}, limit {max_open}");
}

#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_write_and_breaks_no_invariant() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    // 3 agents taking 5 conversations each: the load fills them and queues the rest.
    let (team, _) = team_of_agents(&app, &acme, "Support", pb::Strategy::LoadBalanced, 3, Some(5)).await;
    let mut peer = app.spawn_peer_process().await;

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|client| tokio::spawn(load(peer.channel.clone(), acme.id.clone(), team.id.clone(), client, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    peer.kill().await;
    stop.store(true, Ordering::SeqCst);
    let (seen, errors) = gather(clients).await;
    println!(
        "kill -9: {} users and {} assignments acknowledged before the kill; errors {errors:?}",
        seen.users.len(),
        seen.assignments.len()
    );
    assert!(!seen.users.is_empty() && !seen.assignments.is_empty(), "the load ran");
    // Besides the calls that found it dead, only the seat limit may refuse.
    assert!(
        errors
            .keys()
            .all(|code| matches!(code, Code::Unavailable | Code::Cancelled | Code::ResourceExhausted | Code::Unknown)),
        "{errors:?}"
    );

    // A new process on the same database: everything acknowledged is there, nothing is broken.
    let restarted = app.spawn_peer_process().await;
    assert_acknowledged_writes_are_there(&app, &acme.id, &seen).await;
    assert_invariants(&app, &acme.id, &team.id, 5).await;
    // And it goes on where the killed one stopped: the next pick is numbered after the last.
    let last = seen.assignments.iter().map(|(_, _, sequence)| *sequence).max().unwrap_or(0);
    let free = pb::ResolveConversationRequest {
        workspace_id: acme.id.clone(),
        conversation_id: seen.assignments[0].0.clone(),
    };
    restarted.assignments().resolve_conversation(service(free)).await.expect("resolve");
    let request = pb::AssignConversationRequest {
        workspace_id: acme.id.clone(),
        conversation_id: "wa:after-restart".into(),
        team_id: team.id.clone(),
        ..Default::default()
    };
    let next = restarted.assignments().assign_conversation(service(request)).await.expect("assign");
    let next = next.into_inner().assignment.expect("assignment");
    assert!(next.sequence == 0 || next.sequence > last, "pick {} after {last}", next.sequence);
    assert_invariants(&app, &acme.id, &team.id, 5).await;
}

/// Makes the database unreachable and reachable again. On PostgreSQL, a server of the test's own is
/// stopped and started (or, without the server programs or root to run it, a proxy between
/// rosterd and the shared server cuts every connection and refuses new ones). On SQLite, another
/// process holds the write lock (a full disk, the unwritable file, is the test after this one).
enum Outage {
    Server(pgserver::PrivateServer),
    /// The proxy, and the shared server's database it leads to (kept until the outage is dropped).
    Proxy(proxy::Proxy, #[allow(dead_code, reason = "held to be dropped with the outage")] TestDatabase),
    Lock(String, Option<sea_orm::DatabaseConnection>),
}

impl Outage {
    /// The outage, and the database rosterd should use.
    async fn new() -> (Self, TestDatabase) {
        let postgres = std::env::var("ROSTER_TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty());
        if postgres && let Some(server) = pgserver::PrivateServer::start() {
            let db = TestDatabase::at(server.url());
            return (Outage::Server(server), db);
        }
        let db = TestDatabase::fresh().await;
        if !db.is_postgres() {
            return (Outage::Lock(db.url.clone(), None), db);
        }
        let authority = db.url.split('@').nth(1).and_then(|rest| rest.split('/').next()).expect("host:port");
        let upstream = tokio::net::lookup_host(authority).await.expect("resolve").next().expect("an address");
        let proxy = proxy::Proxy::start(upstream).await;
        let through = TestDatabase::at(db.url.replacen(authority, &proxy.addr.to_string(), 1));
        (Outage::Proxy(proxy, db), through)
    }

    /// The answer a write gets meanwhile: a lock not obtained in time is ABORTED, retry; a server
    /// gone is UNAVAILABLE.
    fn expected(&self) -> (Code, &'static str) {
        match self {
            Outage::Lock(..) => (Code::Aborted, "CONCURRENT_UPDATE"),
            _ => (Code::Unavailable, "DATABASE_UNAVAILABLE"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Outage::Server(_) => "PostgreSQL stopped",
            Outage::Proxy(..) => "PostgreSQL cut off by a proxy",
            Outage::Lock(..) => "SQLite's write lock held by another process",
        }
    }

    async fn begin(&mut self) {
        match self {
            Outage::Server(server) => server.stop(),
            Outage::Proxy(proxy, _) => proxy.down(),
            Outage::Lock(url, held) => {
                use sea_orm::ConnectionTrait;
                let mut options = sea_orm::ConnectOptions::new(url.clone());
                options.max_connections(1).min_connections(1);
                let connection = sea_orm::Database::connect(options).await.expect("connect");
                connection.execute_unprepared("BEGIN EXCLUSIVE").await.expect("take the write lock");
                *held = Some(connection);
            }
        }
    }

    async fn end(&mut self) {
        match self {
            Outage::Server(server) => server.resume(),
            Outage::Proxy(proxy, _) => proxy.up(),
            Outage::Lock(_, held) => {
                use sea_orm::ConnectionTrait;
                if let Some(connection) = held.take() {
                    connection.execute_unprepared("ROLLBACK").await.expect("release the lock");
                    connection.close().await.expect("close");
                }
            }
        }
    }
}

fn invitation(ws: &str, email: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        workspace_id: ws.into(),
        email: email.into(),
        full_name: "Outage".into(),
        password: PASSWORD.into(),
        role: "agent".into(),
        ..Default::default()
    }
}

/// Invites after@acme.example until it works, within 15 s: the invitation's answer, and how long
/// writes took to resume.
async fn invite_once_writes_resume(app: &TestApp, ws: &str) -> (pb::CreateUserResponse, Duration) {
    let resumed = Instant::now();
    let created = eventually(Duration::from_secs(15), || {
        let (mut users, request) = (app.users(), invitation(ws, "after@acme.example"));
        async move { users.create_user(service(request)).await.ok() }
    })
    .await;
    let created = created.expect("writes resume without a restart");
    (created.into_inner(), resumed.elapsed())
}

#[tokio::test]
async fn a_database_outage_answers_quickly_and_service_resumes_without_a_restart() {
    let (mut outage, db) = Outage::new().await;
    println!("outage: {}", outage.name());
    let app = spawn_app_on(db, |c, _| c.db_timeout_ms = 300).await;
    let acme = app.workspace("acme").await;
    let maria = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("maria");
    let check = pb::CheckPermissionRequest {
        workspace_id: acme.id.clone(),
        user_id: maria.id.clone(),
        permission: "contacts.read".into(),
        resource: None,
    };
    let before = app.authz().check_permission(service(check.clone())).await.expect("the directory is loaded");

    outage.begin().await;
    let started = Instant::now();
    let mut users = app.users();
    let refused = users.create_user(service(invitation(&acme.id, "during@acme.example")));
    let refused = tokio::time::timeout(Duration::from_secs(10), refused).await.expect("answers before 10 s");
    let took = started.elapsed();
    let status = refused.expect_err("no database to write to");
    println!("outage: CreateUser answered {:?} {:?} in {} ms", status.code(), error_reason(&status), took.as_millis());
    let (code, reason) = outage.expected();
    assert_status(&status, code, reason);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Again, now that the server knows its connections are gone and must open new ones.
    let started = Instant::now();
    let again = app.users().create_user(service(invitation(&acme.id, "again@acme.example"))).await;
    let status = again.expect_err("still no database");
    println!(
        "outage: CreateUser again {:?} {:?} in {} ms",
        status.code(),
        error_reason(&status),
        started.elapsed().as_millis()
    );
    assert_status(&status, code, reason);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Permission checks are answered from memory meanwhile.
    let during = app.authz().check_permission(service(check.clone())).await.expect("answered from memory");
    assert_eq!(during.into_inner(), before.into_inner());
    let mut health = HealthClient::new(app.channel.clone());
    let serving = health.check(HealthCheckRequest { service: String::new() }).await.expect("health");
    assert_eq!(serving.into_inner().status(), ServingStatus::Serving);

    outage.end().await;
    let (_, took) = invite_once_writes_resume(&app, &acme.id).await;
    println!("outage: writes resumed {} ms after the database came back", took.as_millis());
    let nothing = app
        .users()
        .get_user(service(pb::GetUserRequest { workspace_id: acme.id.clone(), user_id: UNKNOWN_ID.into() }))
        .await;
    assert_status(&nothing.expect_err("unknown"), Code::NotFound, "USER_NOT_FOUND");
    let scrape = app.metrics().await;
    assert_eq!(scrape.sum("roster_database_up", &[]), 1.0);
}

/// A filesystem of its own for a database (a tmpfs of a fixed size), that a test can fill and
/// free again; unmounted when dropped. Mounting takes root (and, in a container, the right to
/// mount): `None` without them.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        status.is_ok_and(|s| s.success()).then_some(SmallDisk { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem has no space left.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.path().join("filler")).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match filler.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = filler.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).expect("remove the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// SQLite's file made unwritable for real: its filesystem full. (As root, permissions cannot
/// make the file unwritable, and a read-only remount is refused while it is open.) Writes
/// answer UNAVAILABLE quickly, nothing is half written, checks go on from memory, and writes
/// resume without a restart once there is space again. SQLite only, whatever the suite runs on.
#[tokio::test]
async fn a_full_disk_under_sqlite_answers_unavailable_and_writes_resume_when_space_is_freed() {
    let Some(disk) = SmallDisk::mount(8) else {
        eprintln!("skipped: could not mount a tmpfs (it takes root, and in a container the right to mount)");
        return;
    };
    let app = spawn_app_on(TestDatabase::sqlite_in(disk.path()), |c, _| c.db_timeout_ms = 300).await;
    let acme = app.workspace("acme").await;
    let maria = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("maria");
    let check = pb::CheckPermissionRequest {
        workspace_id: acme.id.clone(),
        user_id: maria.id.clone(),
        permission: "contacts.read".into(),
        resource: None,
    };
    let before = app.authz().check_permission(service(check.clone())).await.expect("the directory is loaded");

    disk.fill();
    // The write-ahead log may still have room for a few writes; the disk is full once it has not.
    let mut created = 0;
    let refused = loop {
        let started = Instant::now();
        let email = format!("during-{created}@acme.example");
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            app.users().create_user(service(invitation(&acme.id, &email))),
        )
        .await
        .expect("answers before 10 s");
        match answer {
            Ok(_) => created += 1,
            Err(status) => break (status, started.elapsed()),
        }
        assert!(created < 1000, "a full disk never refused a write");
    };
    let (status, took) = refused;
    println!(
        "full disk: {created} writes fitted, then CreateUser answered {:?} {:?} in {} ms",
        status.code(),
        error_reason(&status),
        took.as_millis()
    );
    assert_status(&status, Code::Unavailable, "DATABASE_UNAVAILABLE");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let again = app.users().create_user(service(invitation(&acme.id, "again@acme.example"))).await;
    assert_status(&again.expect_err("still full"), Code::Unavailable, "DATABASE_UNAVAILABLE");
    let during = app.authz().check_permission(service(check.clone())).await.expect("answered from memory");
    assert_eq!(during.into_inner(), before.into_inner());
    let mut health = HealthClient::new(app.channel.clone());
    let serving = health.check(HealthCheckRequest { service: String::new() }).await.expect("health");
    assert_eq!(serving.into_inner().status(), ServingStatus::Serving);

    disk.free();
    let (after, took) = invite_once_writes_resume(&app, &acme.id).await;
    println!("full disk: writes resumed {} ms after space was freed", took.as_millis());
    // The refused invitations left nothing behind: the owner, Maria, those that fitted, and the last.
    let listed = app
        .users()
        .list_users(service(pb::ListUsersRequest {
            workspace_id: acme.id.clone(),
            page_size: 1000,
            ..Default::default()
        }))
        .await
        .expect("list");
    let emails: Vec<String> = listed.into_inner().users.into_iter().map(|u| u.email).collect();
    assert_eq!(emails.len(), 2 + created + 1, "{emails:?}");
    // And the write answered as done is committed: another connection to the file sees it. (A
    // connection left counting a transaction SQLite had rolled back once ran the next one as a
    // savepoint that never committed.)
    let after = after.user.expect("user");
    let url = format!("sqlite://{}", disk.path().join("roster.db").display());
    let other = roster_store::Store::connect(&roster_store::StoreConfig::new(url)).await.expect("another connection");
    let found = other.user(&acme.id, &after.id).await.expect("the acknowledged user is committed");
    assert_eq!(found.email.as_str(), "after@acme.example");
}
