//! The records the store hands out and takes in. Database models never leave the crate; these do.

use roster_assignment::{Capacity, ConversationId, Ineligible, Seen, Strategy, Target};
use roster_authz::RoleId;
use roster_authz::{Grants, Role};
pub use roster_billing::{ExtraSeats, Plan, Seats, Subscription};
use roster_identity::{Email, FullName, PasswordHash, RoleName, Slug, TeamName, TokenHash, WorkspaceName};
use std::collections::BTreeMap;
use std::fmt;

/// Milliseconds since the Unix epoch; every timestamp in the store.
pub type Millis = i64;

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn from_stored(text: &str) -> Result<Self, crate::StoreError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(crate::StoreError::Corrupt(format!(
                        concat!("unknown ", stringify!($name), " {:?}"),
                        other
                    ))),
                }
            }
        }
    };
}

text_enum!(
    /// Whether a user holds a seat and may log in.
    UserStatus {
        /// Holds a seat, may log in.
        Active = "ACTIVE",
        /// Holds no seat, may not log in, keeps history.
        Deactivated = "DEACTIVATED",
        /// Created without a password: holds a seat, may not log in until they set one with the
        /// link of their invitation.
        Invited = "INVITED",
    }
);

text_enum!(
    /// What a password link is for.
    LinkPurpose {
        /// An invited user's first password; accepting activates them.
        Invitation = "INVITATION",
        /// A new password for an active user; setting it revokes every session.
        Reset = "RESET",
    }
);

/// Where the link goes in the body of the email that carries it: the link is kept apart from
/// the body, and only until the email is sent. Control characters, so no name can contain it.
pub const LINK_PLACEHOLDER: &str = "\u{1}link\u{1}";

/// A single-use password link to send: the hash of its token, when it expires, its URL (which
/// holds the token: never logged, dropped once the email is sent) and the email that carries it,
/// whose body has [`LINK_PLACEHOLDER`] where the URL goes.
#[derive(Clone)]
pub struct PasswordLink {
    pub purpose: LinkPurpose,
    pub token: TokenHash,
    pub expires_at: Millis,
    pub url: String,
    pub mail: Mail,
}

impl fmt::Debug for PasswordLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordLink")
            .field("purpose", &self.purpose)
            .field("expires_at", &self.expires_at)
            .field("to", &self.mail.to)
            .finish_non_exhaustive()
    }
}

/// How a new user gets in.
#[derive(Debug, Clone)]
pub enum Welcome {
    /// Their manager chose the first password; the email says where to sign in.
    Password(PasswordHash, Mail),
    /// Invited: the email carries a link to choose a password.
    Invitation(PasswordLink),
}

/// Whether a password link may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Valid(LinkPurpose),
    Expired,
    /// Never issued, used already, or replaced.
    Unknown,
}

text_enum!(
    /// Whether a user takes new conversations.
    Availability {
        /// Takes new conversations.
        Online = "ONLINE",
        /// Takes none.
        Away = "AWAY",
    }
);

/// A workspace with its current seat use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub slug: Slug,
    pub name: WorkspaceName,
    /// Plan and extra seats.
    pub subscription: Subscription,
    /// Active users right now.
    pub seats_used: u32,
    /// The default capacity per agent.
    pub max_open: Capacity,
    pub created_at: Millis,
}

impl Workspace {
    /// Its seat limit and seats in use.
    pub fn seats(&self) -> Seats {
        self.subscription.seats(self.seats_used)
    }
}

/// A user. The password hash is deliberately not here: only [`crate::LoginCandidate`] carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub workspace_id: String,
    pub email: Email,
    pub full_name: FullName,
    pub role: RoleId,
    pub status: UserStatus,
    pub availability: Availability,
    /// Increases on every change; the API's etag.
    pub version: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What it takes to create a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub full_name: FullName,
    pub role: RoleId,
}

/// A new workspace.
#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub slug: Slug,
    pub name: WorkspaceName,
}

/// An email to queue in the outbox in the same transaction as the change that causes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: Email,
    pub subject: String,
    pub body: String,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub full_name: Option<FullName>,
    pub role: Option<RoleId>,
    /// A corrected login email; voids a pending invitation or reset link.
    pub email: Option<Email>,
}

/// A role as stored: the authorization model's [`Role`] plus what the API shows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRole {
    pub role: Role,
    /// `None` for the built-in roles, which every workspace shares.
    pub workspace_id: Option<String>,
    pub description: String,
    /// Increases on every change; the API's etag.
    pub version: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What it takes to create a custom role.
#[derive(Debug, Clone)]
pub struct NewRole {
    pub name: RoleName,
    pub description: String,
    pub grants: Grants,
}

/// Changes to a custom role; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RoleChanges {
    pub name: Option<RoleName>,
    pub description: Option<String>,
    pub grants: Option<Grants>,
}

/// What the authorization cache reads of one workspace: everything, or what changed since the
/// version of its copy.
#[derive(Debug, Clone)]
pub struct AuthzChanges {
    /// The workspace's authorization version when the reading started: the members read are at
    /// least as new as it.
    pub version: i64,
    /// The built-in roles and the workspace's custom roles; `None` when no role changed since.
    pub roles: Option<Vec<Role>>,
    /// The members, or those whose role or status changed (or who were created) since.
    pub members: Vec<Member>,
}

/// What a permission check needs to know about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub role_id: String,
    pub active: bool,
}

text_enum!(
    /// Whether a conversation still needs someone.
    ConversationStatus {
        Open = "OPEN",
        Resolved = "RESOLVED",
    }
);

/// A team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: String,
    pub workspace_id: String,
    pub name: TeamName,
    pub strategy: Strategy,
    pub members: i64,
    /// Increases on every change; the API's etag.
    pub version: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What it takes to create a team.
#[derive(Debug, Clone)]
pub struct NewTeam {
    pub name: TeamName,
    pub strategy: Strategy,
}

/// The changes UpdateTeam can make; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TeamChanges {
    pub name: Option<TeamName>,
    pub strategy: Option<Strategy>,
}

/// A user's membership of a team, with what routing sees of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamMember {
    pub team_id: String,
    pub user_id: String,
    pub full_name: FullName,
    /// The team's stable order.
    pub position: i64,
    /// The member's own capacity in the team, if set.
    pub max_open: Option<Capacity>,
    /// The override, else the workspace default.
    pub capacity: Capacity,
    pub open: u32,
    pub status: UserStatus,
    pub availability: Availability,
    pub last_assigned_at: Option<Millis>,
    pub added_at: Millis,
}

impl TeamMember {
    /// As a pick sees them.
    pub fn candidate(&self) -> roster_assignment::Member<'_> {
        roster_assignment::Member {
            user_id: &self.user_id,
            name: self.full_name.as_str(),
            position: self.position,
            active: self.status == UserStatus::Active,
            online: self.availability == Availability::Online,
            open: self.open,
            capacity: self.capacity,
            last_assigned_at: self.last_assigned_at,
        }
    }
}

/// A conversation's assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub workspace_id: String,
    pub id: ConversationId,
    pub team_id: String,
    pub assignee: Option<String>,
    pub status: ConversationStatus,
    pub reason: String,
    pub queued_at: Millis,
    pub assigned_at: Option<Millis>,
    pub resolved_at: Option<Millis>,
    /// The current assignment's number in its team's order of assignments; `None` while queued.
    pub sequence: Option<i64>,
    pub version: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// An AssignConversation call.
#[derive(Debug, Clone, Copy)]
pub struct AssignRequest<'a> {
    pub conversation: &'a ConversationId,
    /// Required for a new or resolved conversation; `None` keeps an open one's team.
    pub team_id: Option<&'a str>,
    pub to: Target<'a>,
    /// Move an already assigned conversation.
    pub transfer: bool,
    /// To a person by hand: whether their availability and capacity bind.
    pub limits: crate::Limits,
    /// Whose conversation the caller's permission was decided on: if that changed meanwhile, the
    /// call is refused rather than acting on someone else's.
    pub seen: Seen<'a>,
}

/// What AssignConversation did.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub conversation: Conversation,
    /// False when nothing changed.
    pub changed: bool,
}

/// What a change did besides its answer: what the server follows up once it has committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effects {
    /// What permission checks answer changed: a new user, a user's role or status, a role.
    pub permissions: bool,
    /// An agent may take more than before (back ONLINE, reactivated, added to a team, a load
    /// released, a team no longer MANUAL): queued conversations may now be handed out.
    pub room: bool,
    /// An email waits in the outbox.
    pub mail: bool,
}

/// A change's answer and its [`Effects`].
#[derive(Debug, Clone)]
pub struct Changed<T> {
    pub value: T,
    pub effects: Effects,
}

impl<T> Changed<T> {
    /// An answer with no effects.
    pub fn new(value: T) -> Self {
        Self { value, effects: Effects::default() }
    }
}

/// Why a named user cannot take a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotEligible {
    NotAMember,
    Is(Ineligible),
}

impl fmt::Display for NotEligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotEligible::NotAMember => f.write_str("the user is not a member of the conversation's team"),
            NotEligible::Is(why) => write!(f, "the user is {why}"),
        }
    }
}

/// Filters for listing conversations; `status` `None` means open.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub assignee: Option<String>,
    pub team: Option<String>,
    pub queued: bool,
    pub status: Option<ConversationStatus>,
}

/// Filters for listing users.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub status: Option<UserStatus>,
    pub role: Option<RoleId>,
    /// Members of this team only.
    pub team: Option<String>,
}

/// One page of a listing, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The key of the last item, when more may follow.
    pub next: Option<String>,
}

/// Who made a change, as recorded in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A person, by user id.
    User(String),
    /// A service key, by its configured name.
    Service(String),
    /// Nobody authenticated (a failed login).
    Anonymous,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::Service(name) => write!(f, "service:{name}"),
            Actor::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// The facts every change records: who, which request, when.
#[derive(Debug, Clone)]
pub struct Context {
    pub actor: Actor,
    pub request_id: String,
    pub now: Millis,
}

/// A recorded change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    pub workspace_id: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub request_id: String,
    pub details: BTreeMap<String, String>,
    pub created_at: Millis,
}

/// Exact-match filters for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub action: Option<String>,
}

/// A live session and the active user it belongs to.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub expires_at: Millis,
}

/// What login needs to decide: the workspace if the slug exists, the user and hash if the email does.
#[derive(Debug, Clone)]
pub struct LoginCandidate {
    pub workspace_id: String,
    pub user: Option<(User, PasswordHash)>,
}

/// An outbox message due for delivery. Its body may carry a password link: `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxMail {
    pub id: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// Attempts so far, including the one this claim starts.
    pub attempts: i32,
    /// When this claim's lease ends; identifies the claim.
    pub lease_until: i64,
}

/// Where an outbox message stands.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: String,
    pub workspace_id: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub status: OutboxStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// The password link the body's placeholder stands for, until the message is sent.
    pub link: Option<String>,
}

impl fmt::Debug for OutboxMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxMail")
            .field("id", &self.id)
            .field("recipient", &self.recipient)
            .field("subject", &self.subject)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for OutboxEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxEntry")
            .field("id", &self.id)
            .field("recipient", &self.recipient)
            .field("subject", &self.subject)
            .field("status", &self.status)
            .field("attempts", &self.attempts)
            .field("last_error", &self.last_error)
            .field("link", &self.link.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

text_enum!(
    /// Where an outbox message stands.
    OutboxStatus {
        /// Waiting for (another) delivery attempt.
        Pending = "PENDING",
        /// Accepted by the SMTP server.
        Sent = "SENT",
        /// Given up after too many attempts.
        Abandoned = "ABANDONED",
    }
);
