//! EventService: the change feed, read a page at a time or watched.

use crate::app::{Addressed, App};
use crate::auth::{Caller, Principal};
use crate::convert;
use crate::error::{self, invalid, unauthenticated};
use crate::policy::Need;
use roster_proto::v1::{self as pb, event_service_server::EventService};
use roster_store::{EventCursor, EventFilter};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub(crate) struct EventApi(pub(crate) Arc<App>);

/// Events per page of ListEvents (0 asks for the default) and per message of WatchEvents.
const DEFAULT_PAGE: u64 = 100;
const MAX_PAGE: u64 = 500;
/// How often at most a watcher whose events do not pass by is told how far the feed has moved.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a watch goes on sending on the strength of its last authorization: a person whose
/// session is revoked, or who loses `audit.read`, receives at most this much more.
const REAUTHORIZE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a watcher may still read what it was allowed to when it started: a service key while
/// its secret is configured with the same scope (the keys file may change); a person while their
/// session lives and their role, as it is now, grants `audit.read`.
async fn still_allowed(app: &App, caller: &Caller) -> Result<(), Status> {
    let token = match &caller.principal {
        Principal::Service(key) if app.keys.still_valid(key) => return Ok(()),
        Principal::Service(_) => {
            return Err(unauthenticated(
                "CREDENTIALS_INVALID",
                "the service key was removed or changed: connect again",
            ));
        }
        Principal::User { token, .. } => token,
    };
    let now = crate::auth::session_caller(&app.store, token.clone(), caller.request_id.clone(), caller.method.clone())
        .await?;
    app.authorize(&now, Need::ReadAudit).await
}

/// What a watcher's stream yields.
type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send>>;

/// The arguments every read of the feed shares.
trait FeedRequest: Addressed {
    fn after(&self) -> &str;
    fn types(&self) -> &[i32];
}

impl FeedRequest for pb::ListEventsRequest {
    fn after(&self) -> &str {
        &self.after
    }
    fn types(&self) -> &[i32] {
        &self.types
    }
}

impl FeedRequest for pb::WatchEventsRequest {
    fn after(&self) -> &str {
        &self.after
    }
    fn types(&self) -> &[i32] {
        &self.types
    }
}

impl EventApi {
    /// Who may read what: a service key every workspace (no `workspace_id`) or the one it names (a
    /// key bound to a workspace: that one); a person their own, with `audit.read`. Then the cursor
    /// and the types asked for.
    async fn read<T: FeedRequest>(&self, request: &Request<T>) -> Result<(EventFilter, Option<EventCursor>), Status> {
        let app = &self.0;
        let caller = App::caller(request)?;
        let req = request.get_ref();
        let every_workspace = caller.service_key().is_some_and(|key| key.workspace_id().is_none());
        let workspace_id = if every_workspace && req.workspace_id().is_empty() {
            app.authorize(&caller, Need::ReadAudit).await?;
            None
        } else {
            let call = app.call(request, Need::ReadAudit).await?;
            app.ensure_workspace(&call).await?;
            Some(call.workspace_id)
        };
        let after = match req.after() {
            "" => None,
            text => Some(convert::cursor_from(text).ok_or_else(|| invalid("after", "not a cursor of this feed"))?),
        };
        let types = req
            .types()
            .iter()
            .map(|&t| convert::event_type_from(t).map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| invalid("types", why))?;
        Ok((EventFilter { workspace_id, types }, after))
    }
}

#[tonic::async_trait]
impl EventService for EventApi {
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let (filter, after) = self.read(&request).await?;
        let limit = match request.get_ref().page_size {
            0 => DEFAULT_PAGE,
            n => convert::page_size(n)?.min(MAX_PAGE),
        };
        let page = self.0.store.events(&filter, after, limit).await.map_err(error::store)?;
        let next_cursor = page.through.map(convert::cursor).unwrap_or_default();
        let events = page.events.into_iter().map(convert::event).collect();
        Ok(Response::new(pb::ListEventsResponse { events, next_cursor }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let (filter, after) = self.read(&request).await?;
        let caller = App::caller(&request)?;
        let app = self.0.clone();
        // One page waits in the buffer at most: a client that does not read holds the task here,
        // and it reads on from the table when the client catches up.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut newest = app.feed.newest();
            let mut closing = app.feed.closing();
            let mut cursor = after;
            let mut progress_sent = tokio::time::Instant::now();
            let mut allowed_at = tokio::time::Instant::now();
            loop {
                // Before reading: an event that commits from here on wakes the wait below.
                newest.mark_unchanged();
                let page = match app.store.events(&filter, cursor, MAX_PAGE).await {
                    Ok(page) => page,
                    Err(err) => {
                        let _ = tx.send(Err(error::store(err))).await;
                        return;
                    }
                };
                let full = page.events.len() as u64 == MAX_PAGE;
                let moved = page.through > cursor;
                cursor = page.through.or(cursor);
                let progress = moved && progress_sent.elapsed() >= PROGRESS_EVERY;
                if !page.events.is_empty() || progress {
                    // A service key's secret is checked in memory before every send; a person's
                    // session and role at most every REAUTHORIZE_EVERY, as that reads the database.
                    let service = matches!(caller.principal, Principal::Service(_));
                    if service || allowed_at.elapsed() >= REAUTHORIZE_EVERY {
                        if let Err(refused) = still_allowed(&app, &caller).await {
                            let _ = tx.send(Err(refused)).await;
                            return;
                        }
                        allowed_at = tokio::time::Instant::now();
                    }
                    let events = page.events.into_iter().map(convert::event).collect();
                    let message =
                        pb::WatchEventsResponse { events, cursor: cursor.map(convert::cursor).unwrap_or_default() };
                    if tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                    progress_sent = tokio::time::Instant::now();
                }
                if *closing.borrow_and_update() {
                    let _ = tx.send(Err(error::shutting_down())).await;
                    return;
                }
                if full {
                    continue;
                }
                tokio::select! {
                    changed = newest.changed() => if changed.is_err() { return },
                    _ = closing.changed() => {}
                    () = tx.closed() => return,
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }
}
