//! Connecting, the credential and deadline on every call, and the service clients.

use crate::{Error, Retry, retry};
use roster_proto::v1;
use roster_proto::v1::assignment_service_client::AssignmentServiceClient;
use roster_proto::v1::audit_service_client::AuditServiceClient;
use roster_proto::v1::auth_service_client::AuthServiceClient;
use roster_proto::v1::authorization_service_client::AuthorizationServiceClient;
use roster_proto::v1::billing_service_client::BillingServiceClient;
use roster_proto::v1::event_service_client::EventServiceClient;
use roster_proto::v1::role_service_client::RoleServiceClient;
use roster_proto::v1::team_service_client::TeamServiceClient;
use roster_proto::v1::user_service_client::UserServiceClient;
use roster_proto::v1::workspace_service_client::WorkspaceServiceClient;
use std::fmt;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{GrpcMethod, Request, Status};

/// The channel every service client of a [`Client`] sends through: the connection, with [`Auth`].
pub type AuthChannel = InterceptedService<Channel, Auth>;

/// Who calls: a service key (for internal services, acting in any workspace they name) or a person's
/// session token (`rst_…`, from `AuthService/Login`).
///
/// `Debug` shows which kind it is, never the secret.
#[derive(Clone)]
pub struct Credential {
    kind: CredentialKind,
    authorization: MetadataValue<Ascii>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CredentialKind {
    ServiceKey,
    SessionToken,
}

/// A secret that cannot be sent: empty, or with characters other than visible ASCII.
#[derive(Debug, thiserror::Error)]
#[error("a credential must be a non-empty run of visible ASCII characters")]
pub struct InvalidCredential;

impl Credential {
    /// A service key's secret, as configured in the server's `ROSTER_SERVICE_KEYS`.
    pub fn service_key(secret: &str) -> Result<Self, InvalidCredential> {
        Self::bearer(CredentialKind::ServiceKey, secret)
    }

    /// A session token from `AuthService/Login`.
    pub fn session_token(token: &str) -> Result<Self, InvalidCredential> {
        Self::bearer(CredentialKind::SessionToken, token)
    }

    fn bearer(kind: CredentialKind, secret: &str) -> Result<Self, InvalidCredential> {
        if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidCredential);
        }
        let mut authorization: MetadataValue<Ascii> =
            format!("Bearer {secret}").parse().map_err(|_| InvalidCredential)?;
        // Keeps the value out of HTTP/2 header compression tables and out of its own Debug output.
        authorization.set_sensitive(true);
        Ok(Credential { kind, authorization })
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential::{:?}(<redacted>)", self.kind)
    }
}

/// The interceptor of every call: `authorization: Bearer <secret>`, and the client's default
/// deadline (`grpc-timeout`) unless the request set its own with [`Request::set_timeout`].
///
/// The deadline is sent to the server, which gives up on the call when it passes, and enforced by
/// the channel while waiting for the answer. A `WatchEvents` stream gets none: it is meant to stay
/// open.
#[derive(Clone)]
pub struct Auth {
    credential: Credential,
    timeout: Duration,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").field("credential", &self.credential).field("timeout", &self.timeout).finish()
    }
}

/// The server-streaming RPCs (service, method), which get no default deadline.
const STREAMING: &[(&str, &str)] = &[("roster.v1.EventService", "WatchEvents")];

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.credential.authorization.clone());
        let streaming = request
            .extensions()
            .get::<GrpcMethod>()
            .is_some_and(|method| STREAMING.contains(&(method.service(), method.method())));
        if !streaming && !request.metadata().contains_key("grpc-timeout") {
            request.set_timeout(self.timeout);
        }
        Ok(request)
    }
}

/// Settings for a [`Client`]; start with [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    credential: Credential,
    timeout: Duration,
    connect_timeout: Duration,
    retry: Retry,
    tls: Option<ClientTlsConfig>,
}

impl ClientBuilder {
    /// The deadline of each call that does not set its own (default 10 s). Roster's own limit is 30 s.
    pub fn timeout(self, timeout: Duration) -> Self {
        ClientBuilder { timeout, ..self }
    }

    /// How long connecting may take (default 5 s). Applies to [`connect`](Self::connect) and
    /// [`connect_endpoint`](Self::connect_endpoint), not to a channel handed over ready-made.
    pub fn connect_timeout(self, connect_timeout: Duration) -> Self {
        ClientBuilder { connect_timeout, ..self }
    }

    /// The retry policy of the client's typed calls (default [`Retry::default`]).
    pub fn retry(self, retry: Retry) -> Self {
        ClientBuilder { retry, ..self }
    }

    /// TLS for [`connect`](Self::connect): the CA to trust (`ClientTlsConfig::ca_certificate`;
    /// the system's roots are not used), and a client certificate (`identity`) when rosterd
    /// requires one (`ROSTER_TLS_CLIENT_CA`). The URL is then `https://…`.
    pub fn tls(self, tls: ClientTlsConfig) -> Self {
        ClientBuilder { tls: Some(tls), ..self }
    }

    /// Connects to `url`: `http://127.0.0.1:50051` in plain text, or `https://roster.internal:50051`
    /// with the [`tls`](Self::tls) configuration.
    pub async fn connect(mut self, url: &str) -> Result<Client, tonic::transport::Error> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())?;
        if let Some(tls) = self.tls.take() {
            endpoint = endpoint.tls_config(tls)?;
        }
        self.connect_endpoint(endpoint).await
    }

    /// Connects through an endpoint the caller configured: TLS (`Endpoint::tls_config`), keep-alive,
    /// an origin. The builder's connect timeout replaces the endpoint's.
    pub async fn connect_endpoint(self, endpoint: Endpoint) -> Result<Client, tonic::transport::Error> {
        let channel = endpoint.connect_timeout(self.connect_timeout).connect().await?;
        Ok(self.with_channel(channel))
    }

    /// Uses a channel the caller built, as is: a lazily connecting one (`Endpoint::connect_lazy`), a
    /// balanced one, one with TLS. Nothing is sent until the first call.
    pub fn with_channel(self, channel: Channel) -> Client {
        Client { channel, auth: Auth { credential: self.credential, timeout: self.timeout }, retry: self.retry }
    }
}

/// A connection to Roster, calling as one [`Credential`].
///
/// Cloning is cheap and shares the connection. The service accessors ([`Client::users`] and the
/// others) give tonic's generated clients for every RPC; the typed methods ([`Client::get_user`],
/// [`Client::check_permission`]…) wrap the common calls, retrying those safe to repeat by the
/// client's [`Retry`] policy and answering [`Error`].
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    auth: Auth,
    retry: Retry,
}

impl Client {
    /// Connects to `url` with the default settings.
    pub async fn connect(url: &str, credential: Credential) -> Result<Client, tonic::transport::Error> {
        Client::builder(credential).connect(url).await
    }

    /// Settings first: timeouts, the retry policy, TLS through an endpoint or channel.
    pub fn builder(credential: Credential) -> ClientBuilder {
        ClientBuilder {
            credential,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retry: Retry::default(),
            tls: None,
        }
    }

    /// The same connection and settings, calling as someone else: a person after `Login`, say.
    pub fn with_credential(&self, credential: Credential) -> Client {
        Client { auth: Auth { credential, ..self.auth.clone() }, ..self.clone() }
    }

    /// The retry policy of the typed methods.
    pub fn retry_policy(&self) -> &Retry {
        &self.retry
    }

    /// `roster.v1.UserService`.
    pub fn users(&self) -> UserServiceClient<AuthChannel> {
        UserServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// `roster.v1.RoleService`.
    pub fn roles(&self) -> RoleServiceClient<AuthChannel> {
        RoleServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// `roster.v1.TeamService`.
    pub fn teams(&self) -> TeamServiceClient<AuthChannel> {
        TeamServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// `roster.v1.AssignmentService`.
    pub fn assignments(&self) -> AssignmentServiceClient<AuthChannel> {
        AssignmentServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// `roster.v1.AuthorizationService`.
    pub fn authorization(&self) -> AuthorizationServiceClient<AuthChannel> {
        AuthorizationServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// `roster.v1.EventService`.
    pub fn events(&self) -> EventServiceClient<AuthChannel> {
        EventServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// `roster.v1.WorkspaceService`.
    pub fn workspaces(&self) -> WorkspaceServiceClient<AuthChannel> {
        WorkspaceServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// `roster.v1.AuthService`.
    pub fn auth(&self) -> AuthServiceClient<AuthChannel> {
        AuthServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// `roster.v1.BillingService`.
    pub fn billing(&self) -> BillingServiceClient<AuthChannel> {
        BillingServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// `roster.v1.AuditService`.
    pub fn audit(&self) -> AuditServiceClient<AuthChannel> {
        AuditServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// `AuthService/WhoAmI`: who this client calls as. Retried.
    pub async fn who_am_i(&self) -> Result<v1::WhoAmIResponse, Error> {
        let auth = self.auth();
        retry(&self.retry, v1::WhoAmIRequest {}, |request| {
            let mut auth = auth.clone();
            async move { auth.who_am_i(request).await }
        })
        .await
    }

    /// `WorkspaceService/CreateWorkspace`. Retried only when `request_id` is set.
    pub async fn create_workspace(
        &self,
        request: v1::CreateWorkspaceRequest,
    ) -> Result<v1::CreateWorkspaceResponse, Error> {
        let workspaces = self.workspaces();
        retry(&self.retry, request, |request| {
            let mut workspaces = workspaces.clone();
            async move { workspaces.create_workspace(request).await }
        })
        .await
    }

    /// `WorkspaceService/GetWorkspace`. Retried.
    pub async fn get_workspace(&self, request: v1::GetWorkspaceRequest) -> Result<v1::GetWorkspaceResponse, Error> {
        let workspaces = self.workspaces();
        retry(&self.retry, request, |request| {
            let mut workspaces = workspaces.clone();
            async move { workspaces.get_workspace(request).await }
        })
        .await
    }

    /// `UserService/CreateUser`. Retried only when `request_id` is set.
    pub async fn create_user(&self, request: v1::CreateUserRequest) -> Result<v1::CreateUserResponse, Error> {
        let users = self.users();
        retry(&self.retry, request, |request| {
            let mut users = users.clone();
            async move { users.create_user(request).await }
        })
        .await
    }

    /// `UserService/GetUser`. Retried.
    pub async fn get_user(&self, request: v1::GetUserRequest) -> Result<v1::GetUserResponse, Error> {
        let users = self.users();
        retry(&self.retry, request, |request| {
            let mut users = users.clone();
            async move { users.get_user(request).await }
        })
        .await
    }

    /// `UserService/ListUsers`: one page. Retried.
    pub async fn list_users(&self, request: v1::ListUsersRequest) -> Result<v1::ListUsersResponse, Error> {
        let users = self.users();
        retry(&self.retry, request, |request| {
            let mut users = users.clone();
            async move { users.list_users(request).await }
        })
        .await
    }

    /// `AuthorizationService/CheckPermission`. Retried.
    pub async fn check_permission(
        &self,
        request: v1::CheckPermissionRequest,
    ) -> Result<v1::CheckPermissionResponse, Error> {
        let authorization = self.authorization();
        retry(&self.retry, request, |request| {
            let mut authorization = authorization.clone();
            async move { authorization.check_permission(request).await }
        })
        .await
    }

    /// `AuthorizationService/CheckPermissions`: up to 1000 checks in one call. Retried.
    pub async fn check_permissions(
        &self,
        request: v1::CheckPermissionsRequest,
    ) -> Result<v1::CheckPermissionsResponse, Error> {
        let authorization = self.authorization();
        retry(&self.retry, request, |request| {
            let mut authorization = authorization.clone();
            async move { authorization.check_permissions(request).await }
        })
        .await
    }

    /// `AssignmentService/GetConversationAssignment`. Retried.
    pub async fn get_conversation_assignment(
        &self,
        request: v1::GetConversationAssignmentRequest,
    ) -> Result<v1::GetConversationAssignmentResponse, Error> {
        let assignments = self.assignments();
        retry(&self.retry, request, |request| {
            let mut assignments = assignments.clone();
            async move { assignments.get_conversation_assignment(request).await }
        })
        .await
    }

    /// `AssignmentService/AssignConversation`. Tried once: the request has no `request_id`, so after
    /// a lost answer a second attempt could reopen a conversation resolved meanwhile, and would
    /// answer `changed: false` for the assignment the first attempt made. On a transient error, read
    /// it back with [`Client::get_conversation_assignment`] before deciding to assign again.
    pub async fn assign_conversation(
        &self,
        request: v1::AssignConversationRequest,
    ) -> Result<v1::AssignConversationResponse, Error> {
        let mut assignments = self.assignments();
        Ok(assignments.assign_conversation(request).await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn debug_output_never_shows_the_secret() {
        let key = Credential::service_key("dev-only-secret-change-me").expect("valid");
        let token = Credential::session_token("rst_0123").expect("valid");
        let auth = Auth { credential: key.clone(), timeout: Duration::from_secs(1) };
        for shown in [format!("{key:?}"), format!("{token:?}"), format!("{auth:?}"), format!("{:?}", key.authorization)]
        {
            assert!(!shown.contains("dev-only") && !shown.contains("rst_0123"), "{shown}");
        }
        assert_eq!(format!("{key:?}"), "Credential::ServiceKey(<redacted>)");
    }

    #[tokio::test]
    async fn a_client_debug_output_never_shows_the_secret() {
        let channel = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let client =
            Client::builder(Credential::service_key("dev-only-secret-change-me").expect("valid")).with_channel(channel);
        let person = client.with_credential(Credential::session_token("rst_0123").expect("valid"));
        for shown in [format!("{client:?}"), format!("{person:?}"), format!("{:?}", client.users())] {
            assert!(!shown.contains("dev-only") && !shown.contains("rst_0123"), "{shown}");
        }
    }

    #[test]
    fn a_secret_that_cannot_travel_in_a_header_is_refused() {
        for bad in ["", "two words", "tab\there", "naïve", "line\nbreak"] {
            assert!(Credential::service_key(bad).is_err(), "{bad:?}");
        }
    }

    fn intercept(method: Option<(&'static str, &'static str)>, timeout: Option<Duration>) -> Request<()> {
        let mut auth =
            Auth { credential: Credential::service_key("k").expect("valid"), timeout: Duration::from_secs(7) };
        let mut request = Request::new(());
        if let Some((service, method)) = method {
            request.extensions_mut().insert(GrpcMethod::new(service, method));
        }
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        auth.call(request).expect("the interceptor never refuses")
    }

    #[test]
    fn every_call_carries_the_credential_and_unary_calls_the_default_deadline() {
        let request = intercept(Some(("roster.v1.UserService", "GetUser")), None);
        assert_eq!(request.metadata().get("authorization").map(|v| v.to_str().ok()), Some(Some("Bearer k")));
        assert_eq!(request.metadata().get("grpc-timeout").map(|v| v.to_str().ok()), Some(Some("7000000u")));
    }

    #[test]
    fn a_deadline_the_request_set_is_kept() {
        let request = intercept(Some(("roster.v1.UserService", "GetUser")), Some(Duration::from_secs(1)));
        assert_eq!(request.metadata().get("grpc-timeout").map(|v| v.to_str().ok()), Some(Some("1000000u")));
    }

    #[test]
    fn a_watch_stream_gets_no_default_deadline() {
        let request = intercept(Some(("roster.v1.EventService", "WatchEvents")), None);
        assert!(request.metadata().get("grpc-timeout").is_none());
        assert!(request.metadata().get("authorization").is_some());
    }

    /// When a proto gains a streaming RPC, this fails until [`STREAMING`] names it.
    #[test]
    fn the_streaming_list_matches_the_protos() {
        let set = prost_types::FileDescriptorSet::decode(roster_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut streaming = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in service.method.iter().filter(|m| m.server_streaming() || m.client_streaming()) {
                    streaming.push((format!("{}.{}", file.package(), service.name()), method.name().to_owned()));
                }
            }
        }
        let listed: Vec<_> = STREAMING.iter().map(|(s, m)| ((*s).to_owned(), (*m).to_owned())).collect();
        assert_eq!(streaming, listed);
    }
}
