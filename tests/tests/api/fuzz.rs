//! Adversarial input to every RPC, against the real `rosterd` binary: well-formed protobuf requests
//! built from the service descriptors with hostile field values, values on the edges of each
//! field's documented limit, bodies on the edge of each service's size limit, and bytes that do
//! not decode.
//!
//! Every answer must be a deliberate one: no INTERNAL, UNKNOWN or broken connection, every error
//! with an `ErrorInfo` reason, no panic in the server's log, no row changed by a refused call (the
//! audit records of refusals and the login throttle's records of attempts aside), and the server
//! still SERVING at the end.
//!
//! `ROSTER_FUZZ_CASES` (10000) and `ROSTER_FUZZ_SEED` change the run; the seed is printed so that
//! a failure can be replayed.

use crate::edges::{edges, limit};
use crate::roles::create_role;
use crate::teams::team_of_agents;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, Value,
};
use roster_proto::v1 as pb;
use roster_tests::*;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic_types::StatusExt;

/// A small, seedable generator (xorshift64*): enough to spread choices, and replayable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What a call presents as `authorization`.
#[derive(Debug, Clone)]
enum Credential {
    Bearer(String),
    /// A person's session, and whose: to make a new one when the fuzz ends it (a Logout, a
    /// password change, a deactivation).
    Session(String, Owner),
    Header(String),
    Missing,
}

/// The workspace and role of a session's person.
#[derive(Debug, Clone)]
struct Owner {
    slug: String,
    email: String,
    workspace_id: String,
    role: String,
}

/// The values fields are drawn from: hostile text, and real ids and names of two workspaces.
struct Pools {
    strings: Vec<String>,
    credentials: Vec<(u64, Credential)>,
    /// Sessions made to replace the ones the fuzz ended.
    renewed: usize,
}

const INTS: [i64; 14] = [0, 1, 2, -1, -2, 3, 50, 100, 101, 1000, 1001, 100_001, i32::MAX as i64, i32::MIN as i64];

impl Pools {
    fn string(&self, rng: &mut Rng) -> String {
        rng.pick(&self.strings).clone()
    }

    fn credential(&self, rng: &mut Rng) -> Credential {
        let total: u64 = self.credentials.iter().map(|(w, _)| w).sum();
        let mut roll = rng.next() % total;
        for (weight, credential) in &self.credentials {
            if roll < *weight {
                return credential.clone();
            }
            roll -= weight;
        }
        Credential::Missing
    }

    /// Replaces a session the fuzz ended (a Logout, a password change, a deactivation): a new
    /// session of the same person when their password still works, else of a new person of the
    /// same role created with the service key, so that most calls keep reaching the handlers.
    async fn renew(&mut self, app: &TestApp, token: &str) {
        let Some(slot) =
            self.credentials.iter().position(|(_, c)| matches!(c, Credential::Session(t, _) if t == token))
        else {
            return;
        };
        let Credential::Session(_, owner) = self.credentials[slot].1.clone() else { return };
        if let Ok(token) = app.login(&owner.slug, &owner.email, PASSWORD).await {
            self.credentials[slot].1 = Credential::Session(token, owner);
            self.renewed += 1;
            return;
        }
        let email = format!("fuzz-{}-{}@{}.example", owner.role, self.renewed, owner.slug);
        let request = pb::CreateUserRequest {
            workspace_id: owner.workspace_id.clone(),
            email: email.clone(),
            full_name: "Fuzz Replacement".into(),
            password: PASSWORD.into(),
            role: owner.role.clone(),
            ..Default::default()
        };
        if app.users().create_user(service(request)).await.is_ok()
            && let Ok(token) = app.login(&owner.slug, &email, PASSWORD).await
        {
            self.credentials[slot].1 = Credential::Session(token, Owner { email, ..owner });
            self.renewed += 1;
        }
    }

    fn int(&self, rng: &mut Rng) -> i64 {
        match rng.below(4) {
            0 => i64::MAX,
            1 => i64::MIN,
            _ => *rng.pick(&INTS),
        }
    }

    /// A message of `descriptor`, each field set (or not) to something hostile.
    fn message(&self, rng: &mut Rng, descriptor: &MessageDescriptor, depth: usize) -> DynamicMessage {
        let mut message = DynamicMessage::new(descriptor.clone());
        let mut oneofs = HashSet::new();
        for field in descriptor.fields() {
            if rng.percent(25) || field.is_map() {
                continue;
            }
            if let Some(oneof) = field.containing_oneof()
                && !oneofs.insert(oneof.full_name().to_owned())
            {
                continue;
            }
            let edges = edges(limit(descriptor.name(), field.name()));
            let value = |rng: &mut Rng| match field.kind() {
                Kind::String if !edges.is_empty() && rng.percent(50) => Value::String(rng.pick(&edges).clone()),
                kind => self.value(rng, &kind, depth),
            };
            let value = if field.is_list() {
                let n = match rng.below(20) {
                    0 => 0,
                    1 => 1001,
                    2 => 101,
                    _ => 1 + rng.below(3),
                };
                Value::List((0..n).map(|_| value(rng)).collect())
            } else {
                value(rng)
            };
            message.set_field(&field, value);
        }
        message
    }

    fn value(&self, rng: &mut Rng, kind: &Kind, depth: usize) -> Value {
        let int = self.int(rng);
        match kind {
            Kind::String => Value::String(self.string(rng)),
            Kind::Bytes => Value::Bytes(self.string(rng).into_bytes().into()),
            Kind::Bool => Value::Bool(rng.percent(50)),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(int as i32),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(int),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(int as u32),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(int as u64),
            Kind::Float => Value::F32(*rng.pick(&[0.0, -1.0, f32::NAN, f32::INFINITY, f32::MAX])),
            Kind::Double => Value::F64(*rng.pick(&[0.0, -1.0, f64::NAN, f64::INFINITY, f64::MAX])),
            Kind::Enum(e) => {
                let mut numbers: Vec<i32> = e.values().map(|v| v.number()).collect();
                numbers.extend([-1, 99, i32::MAX]);
                Value::EnumNumber(*rng.pick(&numbers))
            }
            Kind::Message(m) if depth < 3 => Value::Message(self.message(rng, m, depth + 1)),
            Kind::Message(m) => Value::Message(DynamicMessage::new(m.clone())),
        }
    }
}

/// Two workspaces with people, a custom role, a team and a conversation each; the values of one
/// are what the other's callers must never reach.
async fn pools(app: &TestApp) -> Pools {
    let mut strings: Vec<String> = [
        "",
        " ",
        "\t",
        "a",
        "\0",
        "nul\0byte",
        "\u{202e}rtl\u{202c}",
        "é",
        "Ω≈ç√",
        "\u{feff}",
        "\r\n",
        "%s%n%x",
        "' OR '1'='1",
        "Robert'); DROP TABLE users;--",
        "../../etc/passwd",
        "<script>alert(1)</script>",
        "null",
        "admin",
        "agent",
        "supervisor",
        "owner",
        "contacts.read",
        "users.manage",
        "billing.manage",
        "bogus.permission",
        "*",
        "name",
        "role",
        "email",
        "full_name",
        "strategy",
        "availability",
        "team.name",
        "user.role",
        "bogus",
        "acme",
        "globex",
        "new-slug",
        "UPPER",
        "-bad-",
        "maria@acme.example",
        "admin@globex.example",
        "new@acme.example",
        "a@b",
        "@",
        PASSWORD,
        "short",
        "wa:1",
        "wa:new",
        "AAAA",
        "eyJvZmZzZXQiOjF9",
        UNKNOWN_ID,
        SERVICE_KEY,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    strings.extend(["x".repeat(300), "x".repeat(70_000), "😀".repeat(40), "a".repeat(101)]);
    strings.push(format!("rst_{}", "0".repeat(64)));

    let mut credentials = vec![(5, Credential::Missing), (5, Credential::Header("Basic YWRtaW46YWRtaW4=".into()))];
    credentials.push((5, Credential::Bearer(format!("rst_{}", "f".repeat(64)))));
    credentials.push((20, Credential::Bearer(SERVICE_KEY.into())));
    for (slug, weight) in [("acme", 40), ("globex", 10)] {
        let ws = app.workspace(slug).await;
        let agent = app.create_user(&ws.admin_token, &format!("maria@{slug}.example"), "agent").await.expect("agent");
        let agent_token = app.login(slug, &format!("maria@{slug}.example"), PASSWORD).await.expect("login");
        let role =
            create_role(app, &ws.admin_token, "Sales", &[("contacts.read", pb::Scope::All)]).await.expect("role");
        let (team, agents) = team_of_agents(app, &ws, "Support", pb::Strategy::RoundRobin, 1, Some(2)).await;
        let request = pb::AssignConversationRequest {
            workspace_id: ws.id.clone(),
            conversation_id: "wa:1".into(),
            team_id: team.id.clone(),
            ..Default::default()
        };
        app.assignments().assign_conversation(service(request)).await.expect("assign");
        strings.extend([ws.id.clone(), ws.admin.id.clone(), agent.id.clone(), role.id.clone(), team.id.clone()]);
        strings.extend([agents[0].id.clone(), ws.admin.id.to_uppercase(), format!("{}0", agent.id)]);
        strings.extend([ws.admin_token.clone(), agent_token.clone()]);
        let owner = |email: String, role: &str| Owner {
            slug: slug.into(),
            email,
            workspace_id: ws.id.clone(),
            role: role.into(),
        };
        let admin = owner(format!("admin@{slug}.example"), "admin");
        credentials.push((weight, Credential::Session(ws.admin_token.clone(), admin)));
        let maria = owner(format!("maria@{slug}.example"), "agent");
        credentials.push((weight / 2, Credential::Session(agent_token, maria)));
    }
    Pools { strings, credentials, renewed: 0 }
}

/// Every unary method of Roster's services.
pub(crate) fn methods() -> Vec<MethodDescriptor> {
    let pool = DescriptorPool::decode(roster_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut methods: Vec<MethodDescriptor> = pool
        .services()
        .filter(|s| s.full_name().starts_with("roster.v1."))
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .filter(|m| !m.is_client_streaming() && !m.is_server_streaming())
        .collect();
    methods.sort_by(|a, b| a.full_name().cmp(b.full_name()));
    methods
}

/// The fields a message has set, with long values cut: enough to read a failure.
fn summary(message: &DynamicMessage) -> String {
    let fields: Vec<String> = message
        .fields()
        .map(|(field, value)| {
            let text = match value {
                Value::Message(m) => format!("{{{}}}", summary(m)),
                Value::List(items) if items.len() > 3 => format!("[{} items]", items.len()),
                Value::List(items) => format!(
                    "[{}]",
                    items
                        .iter()
                        .map(|v| match v {
                            Value::Message(m) => format!("{{{}}}", summary(m)),
                            other => format!("{other:?}"),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                other => format!("{other:?}"),
            };
            let text = if text.len() > 120 {
                format!("{}… ({} bytes)", &text[..text.floor_char_boundary(120)], text.len())
            } else {
                text
            };
            format!("{}: {text}", field.name())
        })
        .collect();
    fields.join(", ")
}

pub(crate) fn path(method: &MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

fn request(body: Vec<u8>, credential: &Credential) -> tonic::Request<Vec<u8>> {
    let mut request = tonic::Request::new(body);
    request.set_timeout(Duration::from_secs(10));
    let value = match credential {
        Credential::Bearer(secret) | Credential::Session(secret, _) => format!("Bearer {secret}"),
        Credential::Header(value) => value.clone(),
        Credential::Missing => return request,
    };
    request.metadata_mut().insert("authorization", value.parse().expect("header value"));
    request
}

/// The refusals that record themselves in the audit trail, by design, and change nothing else.
const AUDITED_REFUSALS: [&str; 3] = ["login.failed", "user.create_refused", "user.reactivate_refused"];

/// Codes that would mean the server did not decide: a bug, a crash or a hang.
pub(crate) const UNDECIDED: [Code; 4] = [Code::Internal, Code::Unknown, Code::DataLoss, Code::Unavailable];

#[tokio::test]
async fn ten_thousand_hostile_requests_get_deliberate_answers_and_change_nothing_when_refused() {
    let app = spawn_app_with(|c| c.queue_sweep_ms = 3_600_000).await;
    let mut pools = pools(&app).await;
    let log = tempfile::NamedTempFile::new().expect("log file");
    let options = PeerOptions {
        args: vec!["--queue-sweep-ms".into(), "3600000".into()],
        log: Some(log.path().to_owned()),
        ..Default::default()
    };
    let peer = app.spawn_peer_process_with(options).await;
    let cases: usize = std::env::var("ROSTER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let seed: u64 = std::env::var("ROSTER_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_2026_1129);
    println!("fuzz: {cases} cases, seed {seed} (ROSTER_FUZZ_SEED to replay)");
    let mut rng = Rng(seed.max(1));
    let methods = methods();
    assert!(methods.len() >= 41, "{} methods", methods.len());

    let fingerprint = app.fingerprint(false).await;
    let mut before = fingerprint.read().await;
    let mut last_audit = fingerprint.audit_after(0).await.last().map_or(0, |(id, _)| *id);
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_method: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    for case in 0..cases {
        let method = rng.pick(&methods).clone();
        let message = pools.message(&mut rng, &method.input(), 0);
        let credential = pools.credential(&mut rng);
        let answer = raw::unary(&peer.channel, &path(&method), request(message.encode_to_vec(), &credential)).await;
        let code = answer.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
        *codes.entry(format!("{code:?}")).or_default() += 1;
        let entry = per_method.entry(method.name().to_owned()).or_default();
        entry.0 += 1;
        let after = fingerprint.read().await;
        let audit = fingerprint.audit_after(last_audit).await;
        last_audit = audit.last().map_or(last_audit, |(id, _)| *id);
        let what = || format!("case {case}: {} as {credential:?}: {}", path(&method), summary(&message));
        match &answer {
            Ok(_) => entry.1 += 1,
            Err(status) => {
                if UNDECIDED.contains(&status.code()) {
                    failures.push(format!("{}: {:?} {}", what(), status.code(), status.message()));
                }
                if status.get_error_details().error_info().is_none() {
                    failures.push(format!("{}: no ErrorInfo in {status:?}", what()));
                }
                if after != before {
                    let changed: Vec<&String> = after.keys().filter(|t| after.get(*t) != before.get(*t)).collect();
                    failures.push(format!("{}: refused with {:?} but changed {changed:?}", what(), status.code()));
                }
                if let Some((_, action)) = audit.iter().find(|(_, a)| !AUDITED_REFUSALS.contains(&a.as_str())) {
                    failures.push(format!("{}: refused with {:?} but audited {action}", what(), status.code()));
                }
            }
        }
        before = after;
        // An accepted reset request sends its link in the background, after the answer: let it
        // land before the next call is judged.
        if answer.is_ok() && method.name() == "RequestPasswordReset" {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            before = fingerprint.read().await;
            last_audit = fingerprint.audit_after(last_audit).await.last().map_or(last_audit, |(id, _)| *id);
        }
        if let (Err(status), Credential::Session(token, _)) = (&answer, &credential)
            && error_reason(status).as_deref() == Some("SESSION_INVALID")
        {
            pools.renew(&app, token).await;
            before = fingerprint.read().await;
            last_audit = fingerprint.audit_after(last_audit).await.last().map_or(last_audit, |(id, _)| *id);
        }
        assert!(failures.len() < 20, "stopping early:\n{}", failures.join("\n"));
    }
    let elapsed = started.elapsed();

    // Bytes that do not decode as the method's request, and cut-off messages.
    let mut undecodable = 0;
    for _ in 0..500 {
        let method = rng.pick(&methods).clone();
        let mut body: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        if rng.percent(50) {
            let whole = pools.message(&mut rng, &method.input(), 0).encode_to_vec();
            body = whole[..rng.below(whole.len().max(1))].to_vec();
        }
        let credential = pools.credential(&mut rng);
        if let Err(status) = raw::unary(&peer.channel, &path(&method), request(body, &credential)).await {
            undecodable += usize::from(status.code() == Code::InvalidArgument);
            if UNDECIDED.contains(&status.code()) {
                failures.push(format!("undecodable to {}: {:?} {}", path(&method), status.code(), status.message()));
            }
        }
    }
    // Bodies on the edge of their service's size limit, with the service key: up to the limit an
    // answer of the handler's; one byte over, MESSAGE_TOO_LARGE before anything is decoded.
    let mut oversized = 0;
    // (A cut-off body above may have decoded and been accepted.)
    before = fingerprint.read().await;
    for method in &methods {
        let max = if method.parent_service().name() == "AuthorizationService" { 128 * 1024 } else { 16 * 1024 };
        let input = method.input();
        let Some(field) = input.fields().find(|f| matches!(f.kind(), Kind::String) && !f.is_list()) else { continue };
        for size in [max - 1, max, max + 1] {
            let credential = Credential::Bearer(SERVICE_KEY.into());
            let answer =
                raw::unary(&peer.channel, &path(method), request(padded(&input, &field, size), &credential)).await;
            let what = format!("{} with a body of {size} bytes (limit {max})", path(method));
            let too_large = answer.as_ref().is_err_and(|status| {
                status.code() == Code::ResourceExhausted && error_reason(status).as_deref() == Some("MESSAGE_TOO_LARGE")
            });
            oversized += usize::from(too_large);
            if too_large != (size > max) {
                failures.push(format!(
                    "{what}: {:?}",
                    answer.as_ref().map(|_| ()).map_err(|s| (s.code(), error_reason(s)))
                ));
            }
            if let Err(status) = &answer
                && UNDECIDED.contains(&status.code())
            {
                failures.push(format!("{what}: {:?} {}", status.code(), status.message()));
            }
            let after = fingerprint.read().await;
            if let Err(status) = &answer
                && after != before
            {
                let changed: Vec<&String> = after.keys().filter(|t| after.get(*t) != before.get(*t)).collect();
                failures.push(format!("{what}: refused with {:?} but changed {changed:?}", status.code()));
            }
            before = after;
        }
    }
    // Not even HTTP/2: garbage on a fresh connection.
    {
        use tokio::io::AsyncWriteExt;
        let port = peer.uri.rsplit(':').next().expect("port");
        let mut stream = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await.expect("connect");
        let garbage: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
        let _ = stream.write_all(&garbage).await;
    }

    let mut health = tonic_health::pb::health_client::HealthClient::new(peer.channel.clone());
    let serving = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
    let serving = serving.expect("health answers").into_inner().status();
    let log = std::fs::read_to_string(log.path()).expect("log");
    let panics = log.matches("panicked").count();
    println!(
        "fuzz: {cases} requests in {:.1} s over {} methods; codes {codes:?}; {undecodable} of 500 undecodable bodies \
         refused as INVALID_ARGUMENT; {oversized} bodies over their limit refused as MESSAGE_TOO_LARGE; {panics} \
         panics; health {serving:?}; {} sessions renewed",
        elapsed.as_secs_f64(),
        per_method.len(),
        pools.renewed
    );
    println!("fuzz: calls (accepted) per method: {per_method:?}");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(panics, 0, "the server panicked:\n{log}");
    assert_eq!(serving, tonic_health::pb::health_check_response::ServingStatus::Serving);
    assert_eq!(per_method.len(), methods.len(), "every method was called");
}

/// An encoded `message` of exactly `size` bytes: `field` set to as many 'a's as that takes.
fn padded(message: &MessageDescriptor, field: &FieldDescriptor, size: usize) -> Vec<u8> {
    let mut padded = DynamicMessage::new(message.clone());
    let mut len = size;
    for _ in 0..4 {
        padded.set_field(field, Value::String("a".repeat(len)));
        let body = padded.encode_to_vec();
        match body.len().cmp(&size) {
            std::cmp::Ordering::Equal => return body,
            std::cmp::Ordering::Greater => len -= body.len() - size,
            std::cmp::Ordering::Less => len += size - body.len(),
        }
    }
    panic!("no {} of {size} bytes by padding {}", message.name(), field.name());
}
