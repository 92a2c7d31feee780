//! Service keys: the configured secrets, the key each stands for, and what each key may reach.
//!
//! A key from `--service-key name=secret` may call every method in every workspace. A key from
//! the keys file (`--service-keys-file`) says what it may call and may be bound to one workspace:
//!
//! ```toml
//! [[key]]
//! name = "router"
//! # Two secrets are valid at once while callers move from the old one to the new one; none
//! # disables the key.
//! secrets = ["new-secret-of-at-least-16", "old-secret-of-at-least-16"]
//! # Whole services, or single methods as `service/Method`; `["*"]` for every method. Required,
//! # so that an entry cut short cannot load as an unrestricted key.
//! methods = ["roster.v1.AuthorizationService", "roster.v1.AssignmentService/AssignConversation"]
//! # The one workspace it reaches; any workspace when left out.
//! workspace_id = "0123456789abcdef0123456789abcdef"
//! ```
//!
//! A call outside a key's scope is refused with PERMISSION_DENIED `SERVICE_KEY_OUT_OF_SCOPE`,
//! logged, and written to the audit trail of the key's workspace when it is bound to one.

use crate::config::{Config, ServiceKeySpec, check_key_name, check_key_secret};
use crate::error::status_with;
use roster_store::{Context, Store};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Code, Status};

/// A service key as one of its secrets presents it: its name (the audit trail's actor) and what
/// it may reach. `Debug` shows the name only.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ServiceKey {
    pub(crate) name: String,
    /// The full method paths it may call (`/roster.v1.X/Y`); `None`: every method.
    methods: Option<HashSet<String>>,
    /// The one workspace it reaches; `None`: any.
    workspace_id: Option<String>,
    /// The SHA-256 digest of the secret, so that a long call (a watch) can tell whether its
    /// secret is still configured.
    digest: [u8; 32],
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceKey({})", self.name)
    }
}

impl ServiceKey {
    /// Whether it may call the method at `path`.
    pub(crate) fn allows(&self, path: &str) -> bool {
        self.methods.as_ref().is_none_or(|methods| methods.contains(path))
    }

    /// The one workspace it reaches, if it is bound to one.
    pub(crate) fn workspace_id(&self) -> Option<&str> {
        self.workspace_id.as_deref()
    }

    /// Whether it may address `requested` (empty: its own, when it is bound).
    pub(crate) fn reaches(&self, requested: &str) -> bool {
        self.workspace_id.as_deref().is_none_or(|own| requested.is_empty() || requested == own)
    }
}

/// The service keys in force, replaced whole when the keys file changes.
pub(crate) struct Keys(RwLock<Arc<KeyRing>>);

impl Keys {
    pub(crate) fn new(ring: KeyRing) -> Self {
        Self(RwLock::new(Arc::new(ring)))
    }

    /// The keys in force now.
    pub(crate) fn current(&self) -> Arc<KeyRing> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Puts `ring` in force for the calls that arrive from now on.
    pub(crate) fn replace(&self, ring: KeyRing) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ring);
    }

    /// Whether `key` is still configured as it was: the same secret, name and scope.
    pub(crate) fn still_valid(&self, key: &ServiceKey) -> bool {
        self.current().0.iter().any(|(_, k)| **k == *key)
    }
}

/// Every configured secret, as a SHA-256 digest, and the key it stands for.
pub(crate) struct KeyRing(Vec<([u8; 32], Arc<ServiceKey>)>);

impl KeyRing {
    /// The keys of the flags and, when given, of the keys file's text. A name may not be in both;
    /// no secret may stand for two keys.
    pub(crate) fn new(flags: &[ServiceKeySpec], file: Option<&str>) -> Result<Self, String> {
        let mut entries: Vec<([u8; 32], Arc<ServiceKey>)> = Vec::new();
        let with_secret = |key: &ServiceKey, secret: &str| {
            let digest = digest(secret);
            (digest, Arc::new(ServiceKey { digest, ..key.clone() }))
        };
        for spec in flags {
            let key = ServiceKey { name: spec.name.clone(), methods: None, workspace_id: None, digest: [0; 32] };
            entries.push(with_secret(&key, &spec.secret));
        }
        let flag_names: HashSet<&str> = flags.iter().map(|spec| spec.name.as_str()).collect();
        if let Some(text) = file {
            let file: KeysFile = toml::from_str(text).map_err(|e| parse_error(text, &e))?;
            let catalog: BTreeSet<String> = crate::metrics::method_paths(roster_proto::FILE_DESCRIPTOR_SET).collect();
            let mut names = BTreeSet::new();
            for entry in file.key {
                let (key, secrets) = entry.into_key(&catalog)?;
                if flag_names.contains(key.name.as_str()) || !names.insert(key.name.clone()) {
                    return Err(format!("service key {} is configured twice", key.name));
                }
                entries.extend(secrets.iter().map(|secret| with_secret(&key, secret)));
            }
        }
        let mut seen = HashSet::new();
        if let Some((_, key)) = entries.iter().find(|(digest, _)| !seen.insert(*digest)) {
            return Err(format!("a secret of service key {} is also another key's, or given twice", key.name));
        }
        Ok(Self(entries))
    }

    /// How many keys there are.
    pub(crate) fn len(&self) -> usize {
        self.0.iter().map(|(_, key)| key.name.as_str()).collect::<HashSet<_>>().len()
    }

    /// The key `secret` stands for. Every configured secret is compared, without an early exit,
    /// so the time taken does not tell which one matched.
    pub(crate) fn find(&self, secret: &str) -> Option<Arc<ServiceKey>> {
        let presented = digest(secret);
        let mut found = None;
        for (stored, key) in &self.0 {
            let diff = stored.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(key);
            }
        }
        found.cloned()
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The keys file. Unknown fields are refused: a misspelt `methods` must not leave a key
/// unrestricted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

/// One `[[key]]` of the file. No `Debug`: it holds secrets.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    secrets: Vec<String>,
    /// Required, so that an entry cut short before it cannot load as an unrestricted key.
    methods: Vec<String>,
    workspace_id: Option<String>,
}

impl KeyEntry {
    /// The key this entry configures and its secrets, its methods checked against `catalog`
    /// (every Roster method's path).
    fn into_key(self, catalog: &BTreeSet<String>) -> Result<(ServiceKey, Vec<String>), String> {
        let name = self.name.trim().to_owned();
        check_key_name(&name)?;
        if self.secrets.len() > 2 {
            return Err(format!("service key {name} has one secret, two while rotating, or none while disabled"));
        }
        for secret in &self.secrets {
            check_key_secret(&name, secret)?;
        }
        let methods = match self.methods.as_slice() {
            [] => return Err(format!("service key {name}: `methods` names nothing (`[\"*\"]` for every method)")),
            [every] if every.trim() == "*" => None,
            list if list.iter().any(|m| m.trim() == "*") => {
                return Err(format!("service key {name}: `*` (every method) stands alone in `methods`"));
            }
            list => Some(expand_methods(&name, list, catalog)?),
        };
        if let Some(id) = &self.workspace_id
            && !crate::api::is_record_id(id)
        {
            return Err(format!("service key {name}: `workspace_id` {id:?} is not a workspace id (32 hex digits)"));
        }
        Ok((ServiceKey { name, methods, workspace_id: self.workspace_id, digest: [0; 32] }, self.secrets))
    }
}

/// The method paths `list` names: `roster.v1.X` for every method of a service, `roster.v1.X/Y`
/// for one.
fn expand_methods(name: &str, list: &[String], catalog: &BTreeSet<String>) -> Result<HashSet<String>, String> {
    let mut paths = HashSet::new();
    for item in list {
        let item = item.trim().trim_start_matches('/');
        let matched: Vec<&String> = if item.contains('/') {
            catalog.iter().filter(|path| path[1..] == *item).collect()
        } else {
            catalog
                .iter()
                .filter(|path| path[1..].split_once('/').is_some_and(|(service, _)| service == item))
                .collect()
        };
        if matched.is_empty() {
            return Err(format!(
                "service key {name}: {item:?} is no Roster service or method \
                 (write `roster.v1.AuthorizationService` or `roster.v1.AssignmentService/AssignConversation`)"
            ));
        }
        paths.extend(matched.into_iter().cloned());
    }
    Ok(paths)
}

/// Where the file does not parse, and why, without quoting it: the line may hold a secret, and so
/// may the parser's message when it quotes a value. Only messages about fields, which name a
/// field and nothing else, are passed on.
fn parse_error(text: &str, error: &toml::de::Error) -> String {
    let line =
        error.span().and_then(|span| text.get(..span.start)).map_or(1, |before| before.matches('\n').count() + 1);
    let why = error.message().trim();
    if ["unknown field", "missing field", "duplicate field"].iter().any(|safe| why.starts_with(safe)) {
        format!("the keys file is not valid at line {line}: {why}")
    } else {
        format!("the keys file is not valid at line {line}")
    }
}

/// The keys `config` configures: its flags, and its keys file when it names one, whose digest is
/// returned too (to tell later whether it changed, without keeping its secrets).
pub(crate) fn load(config: &Config) -> Result<(KeyRing, Option<[u8; 32]>), String> {
    let text = match &config.service_keys_file {
        None => None,
        Some(path) => {
            Some(std::fs::read_to_string(path).map_err(|e| format!("the service keys file {}: {e}", path.display()))?)
        }
    };
    let ring =
        KeyRing::new(&config.service_keys, text.as_deref()).map_err(|e| format!("the service keys file: {e}"))?;
    Ok((ring, text.as_deref().map(digest)))
}

/// Every `every`, reads the keys file again. A text that changed is put in force (with the flags'
/// keys) once it reads the same on two checks in a row, so that a file caught halfway through
/// being written is not taken for the whole; and only if it is valid. A file that cannot be read
/// or is not valid is logged, and the keys in force stay.
pub(crate) async fn follow(
    keys: Arc<Keys>,
    flags: Vec<ServiceKeySpec>,
    path: Option<std::path::PathBuf>,
    mut loaded: Option<[u8; 32]>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let Some(path) = path else { return };
    let mut seen = loaded;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read the service keys file; the keys in force stay");
                continue;
            }
        };
        let now = Some(digest(&text));
        let settled = std::mem::replace(&mut seen, now) == now;
        if now == loaded || !settled {
            continue;
        }
        match KeyRing::new(&flags, Some(&text)) {
            Ok(ring) => {
                tracing::info!(file = %path.display(), keys = ring.len(), "service keys reloaded");
                keys.replace(ring);
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "the service keys file is not valid; the keys in force stay");
            }
        }
        loaded = now;
    }
}

/// What a refused call reached for: a method, or a workspace other than the key's.
pub(crate) enum Beyond<'a> {
    Method,
    Workspace(&'a str),
}

/// Refuses `key` a call of `method` outside its scope: logs it, records it in the audit trail of
/// the key's workspace when it is bound to one, and answers PERMISSION_DENIED
/// `SERVICE_KEY_OUT_OF_SCOPE` naming the key and the method.
pub(crate) async fn refuse(store: &Store, key: &ServiceKey, ctx: &Context, method: &str, beyond: Beyond<'_>) -> Status {
    let (message, target) = match beyond {
        Beyond::Method => (format!("service key {} may not call {method}", key.name), format!("method:{method}")),
        Beyond::Workspace(requested) => (
            format!("service key {} reaches only its own workspace", key.name),
            if requested.is_empty() { "workspace:new".to_owned() } else { format!("workspace:{requested}") },
        ),
    };
    let mut metadata = vec![("key", key.name.clone()), ("method", method.to_owned())];
    tracing::warn!(key = %key.name, %method, %target, "service key call out of scope refused");
    if let Some(own) = key.workspace_id() {
        metadata.push(("workspace_id", own.to_owned()));
        let details = [("key", key.name.as_str()), ("method", method)];
        if let Err(e) = store.record_refusal(ctx, own, "service_key.refused", &target, &details).await {
            tracing::warn!(error = %crate::error::error_chain(&e), "could not audit a refused service key call");
        }
    }
    status_with(Code::PermissionDenied, "SERVICE_KEY_OUT_OF_SCOPE", message, &metadata, Default::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn ring(file: &str) -> Result<KeyRing, String> {
        KeyRing::new(&["ops=full-access-secret-16".parse().expect("flag")], Some(file))
    }

    #[test]
    fn a_scoped_key_allows_what_it_names_and_nothing_else() {
        let ring = ring(&format!(
            r#"
            [[key]]
            name = "router"
            secrets = ["router-secret-new-16", "router-secret-old-16"]
            methods = ["roster.v1.AuthorizationService", "roster.v1.AssignmentService/AssignConversation"]
            workspace_id = "{ID}"
            "#
        ))
        .expect("valid file");
        assert_eq!(ring.len(), 2);
        let new = ring.find("router-secret-new-16").expect("new secret");
        let old = ring.find("router-secret-old-16").expect("old secret");
        assert_eq!((&new.name, &new.methods, &new.workspace_id), (&old.name, &old.methods, &old.workspace_id));
        assert_ne!(new, old, "each secret can be told apart, to end a watch when its secret goes");
        assert!(new.allows("/roster.v1.AuthorizationService/CheckPermission"));
        assert!(new.allows("/roster.v1.AuthorizationService/CheckPermissions"));
        assert!(new.allows("/roster.v1.AssignmentService/AssignConversation"));
        assert!(!new.allows("/roster.v1.AssignmentService/UnassignConversation"));
        assert!(!new.allows("/roster.v1.WorkspaceService/CreateWorkspace"));
        assert!(new.reaches("") && new.reaches(ID));
        assert!(!new.reaches("fedcba9876543210fedcba9876543210"));
        let ops = ring.find("full-access-secret-16").expect("flag key");
        assert!(ops.allows("/roster.v1.WorkspaceService/CreateWorkspace") && ops.reaches(ID));
        assert!(ring.find("router-secret-new-1").is_none());
    }

    #[test]
    fn a_flag_name_given_twice_has_two_secrets() {
        let flags: Vec<ServiceKeySpec> =
            ["ops=first-secret-of-16", "ops=second-secret-of16"].iter().map(|s| s.parse().expect("flag")).collect();
        let ring = KeyRing::new(&flags, None).expect("two secrets");
        assert_eq!(ring.len(), 1);
        assert!(ring.find("first-secret-of-16").is_some() && ring.find("second-secret-of16").is_some());
    }

    #[test]
    fn mistakes_in_the_file_are_refused_with_the_key_named() {
        // An entry as written, with one line changed.
        let entry = |line: &str| {
            let mut lines = vec![
                "[[key]]",
                "name = \"a\"",
                "secrets = [\"secret-of-sixteen\"]",
                "methods = [\"roster.v1.AuthService\"]",
            ];
            if let Some(key) = line.split(' ').next() {
                lines.retain(|l| !l.starts_with(key) || key == "[[key]]");
            }
            if !line.ends_with('!') {
                lines.push(line);
            }
            lines.join("\n")
        };
        let cases = [
            (entry("method = [\"roster.v1.AuthService\"]"), "unknown field `method`"),
            (entry("methods !"), "missing field `methods`"),
            (
                entry("secrets = [\"x1-x1-x1-x1-x1-x1\", \"x2-x2-x2-x2-x2-x2\", \"x3-x3-x3-x3-x3-x3\"]"),
                "one secret, two",
            ),
            (entry("secrets = [\"fifteen-chars-x\"]"), "at least 16"),
            (entry("secrets = [\"rst_0123456789abcdef\"]"), "rst_"),
            (entry("name = \"a b\""), "name"),
            (entry("methods = []"), "names nothing"),
            (entry("methods = [\"*\", \"roster.v1.AuthService\"]"), "stands alone"),
            (entry("methods = [\"roster.v1.Nope\"]"), "no Roster service"),
            (entry("methods = [\"roster.v1.AuthService/Nope\"]"), "no Roster"),
            (entry("methods = [\"roster.v1\"]"), "no Roster"),
            (entry("workspace_id = \"ABC\""), "not a workspace id"),
            (entry("name = \"ops\""), "configured twice"),
            (format!("{}\n{}", entry("name = \"a\""), entry("name = \"a\"")), "twice"),
            (entry("secrets = [\"full-access-secret-16\"]"), "also another key's"),
            (entry("secrets = [\"secret-of-sixteen\", \"secret-of-sixteen\"]"), "given twice"),
            ("[[key]\nname = \"a\"".to_owned(), "line 1"),
            // Values the parser would quote in its message (a string; a number, in backticks), on
            // the entry's last line.
            (entry("secrets = \"secret-of-sixteen\""), "line 4"),
            (entry("secrets = [12345678901234567890123]"), "line 4"),
            (entry("secrets = [1234567890123456789]"), "line 4"),
        ];
        for (file, expected) in cases {
            let err = ring(&file).err().unwrap_or_else(|| panic!("accepted: {file}"));
            assert!(err.contains(expected), "{file}: {err}");
            for secret in ["secret-of-sixteen", "full-access", "1234567890123456789"] {
                assert!(!err.contains(secret), "{err}");
            }
        }
    }

    #[test]
    fn every_method_is_said_in_so_many_words_and_a_key_without_secrets_is_disabled() {
        let ring = ring(
            "[[key]]\nname = \"any\"\nsecrets = [\"any-secret-of-16-chars\"]\nmethods = [\"*\"]\n\
             [[key]]\nname = \"off\"\nsecrets = []\nmethods = [\"*\"]\n",
        )
        .expect("valid");
        let any = ring.find("any-secret-of-16-chars").expect("key");
        assert!(any.allows("/roster.v1.WorkspaceService/CreateWorkspace") && any.reaches("anything"));
        assert_eq!(ring.len(), 2, "the flag's key and `any`; `off` has no secret");
    }
}
