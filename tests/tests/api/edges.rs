//! Every string field of every request on the edges of its documented limit, one field at a time
//! in an otherwise valid request, against the real `rosterd` binary: so that each value reaches
//! the code that stores it, not only the first validation that refuses a random neighbour.
//!
//! The fields and their limits come from the service descriptors and the table in [`limit`]
//! (docs/ERRORS.md, "Limits"); a field without a documented limit fails the test. Each answer must
//! be deliberate (no INTERNAL, UNKNOWN or broken connection; an `ErrorInfo` reason), a refused
//! call changes no row, a value over its limit is never accepted, and the server's log has no
//! panic.

use crate::fuzz::{UNDECIDED, methods, path};
use crate::roles::create_role;
use crate::teams::team_of_agents;
use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, MethodDescriptor, Value};
use roster_proto::v1 as pb;
use roster_tests::*;
use std::collections::{BTreeSet, HashSet};
use tonic_types::StatusExt;

/// A string field's documented limit (docs/ERRORS.md, "Limits"): what its edge values are built
/// from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Limit {
    /// At most this many characters, trimmed, visible (names, descriptions, audit filters).
    Chars(usize),
    /// At least `min_chars` characters and at most `max_bytes` bytes (passwords).
    Bytes { min_chars: usize, max_bytes: usize },
    /// Visible ASCII, at most this many bytes (request ids, conversation ids, slugs, page tokens).
    Ascii(usize),
    /// An email: 254 bytes, the local part 64, both counted as stored (lower-cased).
    Email,
    /// A record id or a change feed cursor: 32 lower-case hex digits.
    RecordId,
    /// One of a fixed set (a permission, a role name or id, an etag): no length of its own.
    Vocabulary,
}

/// The limit of the string field `field` of the message named `message`, as documented; `None`
/// for a field nobody documented (the test that walks the descriptors fails on it).
pub(crate) fn limit(message: &str, field: &str) -> Option<Limit> {
    Some(match field {
        "workspace_id" | "user_id" | "team_id" | "role_id" | "id" | "assignee_id" | "assignee_user_id"
        | "move_to_role_id" | "after" => Limit::RecordId,
        "name" if message.contains("Role") || message.contains("Team") => Limit::Chars(100),
        "name" | "full_name" => Limit::Chars(200),
        "description" => Limit::Chars(500),
        "actor" | "action" | "target" => Limit::Chars(300),
        "email" => Limit::Email,
        "password" | "new_password" | "current_password" => Limit::Bytes { min_chars: 10, max_bytes: 72 },
        "request_id" | "conversation_id" => Limit::Ascii(128),
        "slug" | "workspace_slug" => Limit::Ascii(63),
        // "rpl_" and 64 hex digits.
        "token" => Limit::Ascii(68),
        "page_token" => Limit::Ascii(2048),
        "permission" | "feature" | "role" | "etag" | "paths" => Limit::Vocabulary,
        _ => return None,
    })
}

/// Values on the edges of `limit`: one under, at and one over it, counted in bytes and in
/// characters, with multi-byte, case-changing, invisible and direction-changing characters.
pub(crate) fn edges(limit: Option<Limit>) -> Vec<String> {
    let repeat = |text: &str, n: usize| text.repeat(n);
    let mut edges: Vec<String> =
        ["", " ", " \t ", "\u{200b}", "\u{2066}x\u{2069}", "\u{202e}"].map(String::from).to_vec();
    match limit {
        Some(Limit::Chars(max)) => {
            for n in [max - 1, max, max + 1] {
                // 'İ' is two bytes and lower-cases to two characters, 'K' (Kelvin) to one byte.
                for c in ["a", "é", "😀", "İ", "\u{212a}", "\u{200b}"] {
                    edges.push(repeat(c, n));
                }
            }
            edges.push(format!("  {}  ", repeat("a", max)));
            edges.push(format!("{}\u{200b}", repeat("a", max - 1)));
            edges.push(format!("\u{202e}{}", repeat("a", max - 1)));
            edges.push(format!("a\u{0301}{}", repeat("a", max - 2)));
        }
        Some(Limit::Bytes { min_chars, max_bytes }) => {
            for n in [min_chars - 1, min_chars, max_bytes - 1, max_bytes, max_bytes + 1] {
                edges.push(repeat("a", n));
            }
            for (c, bytes) in [("é", 2), ("😀", 4), ("İ", 2)] {
                edges.push(repeat(c, min_chars - 1));
                edges.push(repeat(c, max_bytes / bytes));
                edges.push(format!("{}a", repeat(c, max_bytes / bytes)));
            }
            edges.push(format!(" {} ", repeat("a", max_bytes - 2)));
            edges.push(repeat("\0", max_bytes));
        }
        Some(Limit::Ascii(max)) => {
            for n in [1, 2, 3, max - 1, max, max + 1] {
                edges.push(repeat("r", n));
            }
            edges.push(repeat("é", max / 2));
            edges.push(format!("{}\u{7f}", repeat("r", max - 1)));
            edges.push(repeat("R", max));
        }
        Some(Limit::Email) => {
            for local in [63, 64, 65] {
                edges.push(format!("{}@acme.example", repeat("a", local)));
            }
            for total in [253, 254, 255] {
                edges.push(email(64, total));
                edges.push(email(64, total).to_uppercase());
            }
            // Grow when lower-cased: a local part of 64 bytes as sent, 96 as stored; an email of
            // 254 bytes as sent, 275 as stored (its local part 63). The Kelvin sign shrinks.
            edges.push(format!("{}@acme.example", repeat("İ", 32)));
            edges.push(format!("{}@{}", repeat("İ", 21), &email(42, 254)[43..]));
            edges.push(format!("{}@acme.example", repeat("\u{212a}", 30)));
            edges.push("maria\u{200b}@acme.example".into());
            edges.push("MARIA@ACME.EXAMPLE".into());
        }
        Some(Limit::RecordId) => {
            for n in [31, 32, 33] {
                edges.push(repeat("a", n));
            }
            edges.push(repeat("A", 32));
            edges.push(format!("{}g", repeat("0", 31)));
            edges.push(format!("{}é", repeat("0", 30)));
            edges.push(repeat("é", 16));
        }
        Some(Limit::Vocabulary) | None => {}
    }
    edges
}

/// An email of `total` bytes with a local part of `local` bytes.
fn email(local: usize, total: usize) -> String {
    format!("{}@{}.example", "a".repeat(local), "d".repeat(total - local - 1 - ".example".len()))
}

/// Whether `value` is past `limit` as documented, so that no call may accept it: longer than its
/// maximum, counted as the limit counts (characters of the trimmed value; bytes; bytes of the
/// stored, lower-cased email and its local part).
fn over(limit: Limit, value: &str) -> bool {
    match limit {
        Limit::Chars(max) => value.trim().chars().count() > max,
        Limit::Bytes { max_bytes, .. } => value.len() > max_bytes,
        Limit::Ascii(max) => value.len() > max,
        Limit::Email => {
            let stored = value.trim().to_lowercase();
            stored.len() > 254 || stored.split('@').next().is_some_and(|local| local.len() > 64)
        }
        Limit::RecordId | Limit::Vocabulary => false,
    }
}

/// The records valid requests name, and a counter that keeps what must be unique unique.
struct Valid {
    workspace: Workspace,
    /// A member of `team`, and their password (ChangePassword may change it).
    agent: pb::User,
    password: String,
    role: String,
    team: String,
    calls: usize,
}

impl Valid {
    /// A valid value for the string field `field` of `message`.
    fn string(&self, message: &str, field: &str) -> String {
        let n = self.calls;
        match field {
            "workspace_id" => self.workspace.id.clone(),
            "id" if message == "Workspace" => self.workspace.id.clone(),
            "id" if message == "Role" => self.role.clone(),
            "id" if message == "Team" => self.team.clone(),
            "role_id" | "move_to_role_id" => self.role.clone(),
            "team_id" => self.team.clone(),
            "user_id" | "id" | "assignee_id" | "assignee_user_id" => self.agent.id.clone(),
            "name" | "full_name" => format!("Edge {n}"),
            "description" => "a role of the edge test".into(),
            "email" if message == "LoginRequest" || message == "User" => self.agent.email.clone(),
            // No such workspace: a reset request changes nothing, now or in the background.
            "workspace_slug" if message == "RequestPasswordResetRequest" => "nowhere".into(),
            "email" => format!("edge{n}@{}.example", self.workspace.slug),
            "password" | "new_password" => PASSWORD.into(),
            "current_password" => self.password.clone(),
            "request_id" => format!("edge-{n}"),
            "conversation_id" => format!("wa:edge-{n}"),
            "slug" => format!("edge-{n}"),
            "workspace_slug" => self.workspace.slug.clone(),
            "permission" => "contacts.read".into(),
            "role" => "agent".into(),
            _ => String::new(),
        }
    }

    /// A valid request of `descriptor`: every string field set as [`Valid::string`] says, every
    /// enum to its first real value (the largest plan), every number to 1, lists of one item.
    fn message(&self, descriptor: &MessageDescriptor, depth: usize) -> DynamicMessage {
        let mut message = DynamicMessage::new(descriptor.clone());
        let mut oneofs = HashSet::new();
        for field in descriptor.fields() {
            if field.is_map()
                || field.containing_oneof().is_some_and(|oneof| !oneofs.insert(oneof.full_name().to_owned()))
            {
                continue;
            }
            let value = match field.kind() {
                Kind::String => Value::String(self.string(descriptor.name(), field.name())),
                Kind::Enum(e) if e.name() == "Plan" => {
                    Value::EnumNumber(e.values().map(|v| v.number()).max().unwrap_or(0))
                }
                Kind::Enum(e) => Value::EnumNumber(e.values().map(|v| v.number()).find(|&n| n > 0).unwrap_or(0)),
                Kind::Int32 | Kind::Sint32 => Value::I32(1),
                Kind::Int64 | Kind::Sint64 => Value::I64(1),
                Kind::Uint32 => Value::U32(1),
                Kind::Uint64 => Value::U64(1),
                Kind::Bool => Value::Bool(false),
                // No mask: every field set is updated.
                Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask" => continue,
                Kind::Message(m) if depth < 2 => Value::Message(self.message(&m, depth + 1)),
                _ => continue,
            };
            let value = if field.is_list() { Value::List(vec![value]) } else { value };
            message.set_field(&field, value);
        }
        message
    }
}

/// A string field of a request, by the names leading to it, with its limit.
struct Edge {
    path: Vec<prost_reflect::FieldDescriptor>,
    limit: Limit,
}

/// Every string field with a length limit in `descriptor`, nested messages included.
fn edge_fields(descriptor: &MessageDescriptor, prefix: &[prost_reflect::FieldDescriptor], out: &mut Vec<Edge>) {
    for field in descriptor.fields() {
        let mut path = prefix.to_vec();
        path.push(field.clone());
        match field.kind() {
            Kind::String => match limit(descriptor.name(), field.name()) {
                Some(Limit::Vocabulary) | None => {}
                Some(limit) => out.push(Edge { path, limit }),
            },
            Kind::Message(m) if prefix.len() < 2 && m.full_name().starts_with("roster.") => edge_fields(&m, &path, out),
            _ => {}
        }
    }
}

/// Sets the field at `path` in `message` (through singular nested messages) to `value`.
fn set(message: &mut DynamicMessage, path: &[prost_reflect::FieldDescriptor], value: String) {
    match path {
        [field] => {
            let value = Value::String(value);
            message.set_field(field, if field.is_list() { Value::List(vec![value]) } else { value });
        }
        [field, rest @ ..] => {
            if let Some(mut nested) = message.get_field(field).as_message().cloned() {
                set(&mut nested, rest, value);
                message.set_field(field, Value::Message(nested));
            }
        }
        [] => {}
    }
}

/// Fields a method reads nothing from, so any value is accepted: a workspace's slug cannot be
/// changed (UpdateWorkspace's path is `name`).
const IGNORED: [(&str, &str); 1] = [("UpdateWorkspace", "workspace.slug")];

/// Fields only one value passes (a password, the slug and email of an account) or that name a
/// record the edges cannot (their conversations are resolved, or were never queued, by then).
const UNREACHABLE: [&str; 8] = [
    "ChangePassword.current_password",
    "Login.email",
    "Login.password",
    "Login.workspace_slug",
    "SetPasswordWithToken.new_password",
    "SetPasswordWithToken.token",
    "TakeConversation.conversation_id",
    "UnassignConversation.conversation_id",
];

#[tokio::test]
async fn every_string_field_on_the_edges_of_its_limit_gets_a_deliberate_answer() {
    let app = spawn_app_with(|c| c.queue_sweep_ms = 3_600_000).await;
    let log = tempfile::NamedTempFile::new().expect("log file");
    let options = PeerOptions {
        // Wrong current passwords must not throttle the new passwords' edges away.
        args: [
            "--queue-sweep-ms",
            "3600000",
            "--login-max-failures",
            "1000",
            "--reset-max-per-account",
            "1000",
            "--reset-max-per-address",
            "1000",
        ]
        .map(String::from)
        .to_vec(),
        log: Some(log.path().to_owned()),
        ..Default::default()
    };
    let peer = app.spawn_peer_process_with(options).await;
    let workspace = app.workspace("acme").await;
    // Room for every user the edges create.
    let plan = pb::ChangePlanRequest { workspace_id: workspace.id.clone(), plan: pb::Plan::Scale as i32 };
    app.billing().change_plan(service(plan)).await.expect("plan");
    let extra = pb::SetExtraSeatsRequest { workspace_id: workspace.id.clone(), extra_seats: 10_000 };
    app.billing().set_extra_seats(service(extra)).await.expect("seats");
    let role =
        create_role(&app, &workspace.admin_token, "Sales", &[("contacts.read", pb::Scope::All)]).await.expect("role");
    let (team, mut agents) = team_of_agents(&app, &workspace, "Support", pb::Strategy::RoundRobin, 1, None).await;
    let agent = agents.remove(0);
    let mut valid = Valid { workspace, agent, password: PASSWORD.into(), role: role.id, team: team.id, calls: 0 };
    // What ends a record the others name goes last: deletions, deactivation, logout.
    let mut methods = methods();
    methods.sort_by_key(|m| ["Delete", "Deactivate", "Logout"].iter().any(|end| m.name().starts_with(end)));

    let fingerprint = app.fingerprint(false).await;
    let mut before = fingerprint.read().await;
    let (mut failures, mut calls, mut accepted, mut over_limit) = (Vec::new(), 0, 0, 0);
    // The fields with a length limit, and those some value on their edges went through in.
    let (mut limited, mut reached) = (BTreeSet::new(), BTreeSet::new());
    for method in methods {
        let mut fields = Vec::new();
        edge_fields(&method.input(), &[], &mut fields);
        for edge in &fields {
            for value in edges(Some(edge.limit)) {
                valid.calls += 1;
                let mut message = valid.message(&method.input(), 0);
                set(&mut message, &edge.path, value.clone());
                // People's own calls (ChangePassword, Logout, WhoAmI) as the agent, the rest as
                // the service key.
                let own = method.parent_service().name() == "AuthService" || method.name() == "ChangePassword";
                let secret = if own {
                    let session = app.login("acme", &valid.agent.email, &valid.password).await.unwrap_or_default();
                    before = fingerprint.read().await;
                    session
                } else {
                    SERVICE_KEY.to_owned()
                };
                let mut request = tonic::Request::new(message.encode_to_vec());
                request.metadata_mut().insert("authorization", format!("Bearer {secret}").parse().expect("header"));
                let answer = raw::unary(&peer.channel, &path(&method), request).await;
                if !matches!(edge.limit, Limit::RecordId) {
                    limited.insert(format!(
                        "{}.{}",
                        method.name(),
                        edge.path.iter().map(|f| f.name()).collect::<Vec<_>>().join(".")
                    ));
                }
                calls += 1;
                let field: Vec<&str> = edge.path.iter().map(|f| f.name()).collect();
                let what = || {
                    let shown: String = value.chars().take(12).collect();
                    format!(
                        "{} {} = {shown:?}… ({} bytes, {} chars)",
                        path(&method),
                        field.join("."),
                        value.len(),
                        value.chars().count()
                    )
                };
                let after = fingerprint.read().await;
                match &answer {
                    Ok(_) => {
                        accepted += 1;
                        if (method.name() == "ChangePassword" && field == ["new_password"])
                            || (method.name() == "SetPassword" && field == ["password"])
                        {
                            valid.password = value.clone();
                        }
                        if method.name() == "UpdateUser"
                            && let Ok(bytes) = &answer
                            && let Ok(updated) = pb::UpdateUserResponse::decode(bytes.as_slice())
                        {
                            valid.agent.email = updated.user.map(|u| u.email).unwrap_or_default();
                        }
                        reached.insert(format!("{}.{}", method.name(), field.join(".")));
                        if over(edge.limit, &value) && !IGNORED.contains(&(method.name(), field.join(".").as_str())) {
                            failures.push(format!("{}: accepted over its limit {:?}", what(), edge.limit));
                        }
                    }
                    Err(status) => {
                        over_limit += usize::from(over(edge.limit, &value));
                        if UNDECIDED.contains(&status.code()) {
                            failures.push(format!("{}: {:?} {}", what(), status.code(), status.message()));
                        }
                        if status.get_error_details().error_info().is_none() {
                            failures.push(format!("{}: no ErrorInfo in {status:?}", what()));
                        }
                        if after != before {
                            let changed: Vec<&String> =
                                after.keys().filter(|t| after.get(*t) != before.get(*t)).collect();
                            failures.push(format!(
                                "{}: refused with {:?} but changed {changed:?}",
                                what(),
                                status.code()
                            ));
                        }
                    }
                }
                before = after;
                assert!(failures.len() < 20, "stopping early:\n{}", failures.join("\n"));
            }
        }
    }
    let log = std::fs::read_to_string(log.path()).expect("log");
    let panics = log.matches("panicked").count();
    println!(
        "edges: {calls} calls, {accepted} accepted, {over_limit} values over their limit refused, {panics} panics"
    );
    let unreached: Vec<&String> = limited.difference(&reached).collect();
    println!("edges: fields no value on the edges went through in: {unreached:?}");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(panics, 0, "the server panicked:\n{log}");
    // Every field with a length limit took some value on its edges (the rest of the request is
    // valid), but those whose only good value is a secret or a record the edges cannot name.
    assert_eq!(unreached, UNREACHABLE, "fields no value on the edges went through in");
}

/// Every string field of every request, nested messages included, has a documented limit in
/// [`limit`], so that its edges are fuzzed: a new field fails here until it has one.
#[test]
fn every_string_field_of_every_request_has_a_documented_limit() {
    let mut stack: Vec<MessageDescriptor> = methods().iter().map(MethodDescriptor::input).collect();
    let (mut seen, mut missing) = (HashSet::new(), Vec::new());
    while let Some(message) = stack.pop() {
        if !seen.insert(message.full_name().to_owned()) {
            continue;
        }
        for field in message.fields() {
            match field.kind() {
                Kind::String if limit(message.name(), field.name()).is_none() => {
                    missing.push(format!("{}.{}", message.full_name(), field.name()));
                }
                Kind::Message(nested) => stack.push(nested),
                _ => {}
            }
        }
    }
    assert!(missing.is_empty(), "string fields without a documented limit: {missing:?}");
}

#[test]
fn edges_sit_one_under_at_and_one_over_each_limit() {
    let lengths = |limit| -> HashSet<(usize, usize)> {
        edges(Some(limit)).iter().map(|e| (e.len(), e.chars().count())).collect()
    };
    let names = lengths(Limit::Chars(100));
    assert!([99, 100, 101].iter().all(|&n| names.contains(&(n, n)) && names.contains(&(2 * n, n))));
    let passwords = lengths(Limit::Bytes { min_chars: 10, max_bytes: 72 });
    assert!(
        [(9, 9), (10, 10), (71, 71), (72, 72), (73, 73), (72, 36), (73, 37), (72, 18)]
            .iter()
            .all(|e| passwords.contains(e))
    );
    let emails = lengths(Limit::Email);
    assert!([253, 254, 255].iter().all(|&n| emails.contains(&(n, n))));
    assert!(edges(Some(Limit::Email)).iter().any(|e| e.len() == 77 && e.to_lowercase().len() == 109));
    assert!(edges(Some(Limit::Email)).iter().any(|e| e.len() == 254 && e.to_lowercase().len() == 275));
}
