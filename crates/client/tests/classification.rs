//! What the client decides without a server: which reasons it knows, and which calls it retries.

use roster_client::proto::v1;
use roster_client::{Error, Reason, RetrySafe};
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The backticked names in the first column of every table whose header's first cell is "Reason".
fn reasons_in_errors_md() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/ERRORS.md");
    let text = std::fs::read_to_string(path).expect("docs/ERRORS.md is readable");
    let mut reasons = Vec::new();
    let mut in_reasons_table = false;
    for line in text.lines() {
        let Some(row) = line.trim().strip_prefix('|') else {
            in_reasons_table = false;
            continue;
        };
        let first_cell = row.split('|').next().unwrap_or_default().trim();
        if first_cell == "Reason" {
            in_reasons_table = true;
        } else if in_reasons_table {
            reasons.extend(first_cell.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    reasons
}

#[test]
fn every_reason_in_errors_md_parses_to_a_known_variant() {
    let reasons = reasons_in_errors_md();
    // A broken extraction must not pass as "nothing to check".
    assert!(reasons.len() >= 50, "found only {reasons:?}");
    for expected in ["INVALID_FIELD", "SEAT_LIMIT_REACHED", "SERVER_OVERLOADED", "TRANSPORT_ERROR"] {
        assert!(reasons.iter().any(|r| r == expected), "{expected} not found in {reasons:?}");
    }
    let unknown: Vec<_> = reasons.iter().filter(|r| matches!(Reason::parse(r), Reason::Unknown(_))).collect();
    assert!(unknown.is_empty(), "docs/ERRORS.md lists reasons Reason does not know: {unknown:?}");
    for reason in &reasons {
        assert_eq!(Reason::parse(reason).as_str(), reason);
    }
}

#[test]
fn the_scoped_service_key_reason_is_known() {
    assert_eq!(Reason::parse("SERVICE_KEY_OUT_OF_SCOPE"), Reason::ServiceKeyOutOfScope);
}

#[test]
fn a_reason_from_a_newer_server_is_kept_by_name() {
    assert_eq!(Reason::parse("SOMETHING_NEW"), Reason::Unknown("SOMETHING_NEW".to_owned()));
}

#[test]
fn a_roster_status_decodes_to_its_reason_and_details() {
    let mut details = ErrorDetails::new();
    details.set_error_info(
        "SEAT_LIMIT_REACHED",
        "roster",
        HashMap::from([("seat_limit".to_owned(), "1".to_owned()), ("seats_used".to_owned(), "1".to_owned())]),
    );
    let status =
        Status::with_error_details(Code::ResourceExhausted, "plan Free Trial allows 1 seat, 1 in use", details);
    assert_eq!(Reason::from_status(&status), Some(Reason::SeatLimitReached));
    let error = Error::from(status);
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert_eq!(error.reason(), Some(&Reason::SeatLimitReached));
    assert_eq!(error.metadata("seat_limit"), Some("1"));
    assert!(!error.is_transient(), "a seat limit does not lift by waiting");
}

#[test]
fn reads_are_always_safe_to_retry() {
    assert!(v1::GetUserRequest::default().retry_safe());
    assert!(v1::ListUsersRequest::default().retry_safe());
    assert!(v1::CheckPermissionRequest::default().retry_safe());
    assert!(v1::CheckPermissionsRequest::default().retry_safe());
    assert!(v1::WhoAmIRequest::default().retry_safe());
    assert!(v1::ListPermissionsRequest::default().retry_safe());
    assert!(v1::ListPlansRequest::default().retry_safe());
    assert!(v1::GetSubscriptionRequest::default().retry_safe());
    assert!(v1::GetConversationAssignmentRequest::default().retry_safe());
}

#[test]
fn creates_are_safe_to_retry_only_with_a_request_id() {
    let key = || "4f9a1c".to_owned();
    assert!(!v1::CreateWorkspaceRequest::default().retry_safe());
    assert!(v1::CreateWorkspaceRequest { request_id: key(), ..Default::default() }.retry_safe());
    assert!(!v1::CreateUserRequest::default().retry_safe());
    assert!(v1::CreateUserRequest { request_id: key(), ..Default::default() }.retry_safe());
    assert!(!v1::ReactivateUserRequest::default().retry_safe());
    assert!(v1::ReactivateUserRequest { request_id: key(), ..Default::default() }.retry_safe());
}

/// A create without a key is tried once, even when the failure is transient.
#[tokio::test]
async fn a_create_without_request_id_is_tried_once() {
    let mut attempts = 0;
    let policy = roster_client::Retry::new(5).with_delays(std::time::Duration::ZERO, std::time::Duration::ZERO);
    let result = roster_client::retry(&policy, v1::CreateUserRequest::default(), |_| {
        attempts += 1;
        async { Err::<tonic::Response<()>, _>(Status::unavailable("connection reset")) }
    })
    .await;
    assert_eq!(result.map_err(|e| e.code()), Err(Code::Unavailable));
    assert_eq!(attempts, 1);
}

/// A read is tried again on UNAVAILABLE, up to the policy's attempts, and never on a final error.
#[tokio::test]
async fn a_read_is_retried_only_while_the_failure_is_transient() {
    let policy = roster_client::Retry::new(3).with_delays(std::time::Duration::ZERO, std::time::Duration::ZERO);
    let mut attempts = 0;
    let result = roster_client::retry(&policy, v1::GetUserRequest::default(), |_| {
        attempts += 1;
        async { Err::<tonic::Response<()>, _>(Status::unavailable("database down")) }
    })
    .await;
    assert!(result.is_err());
    assert_eq!(attempts, 3);

    let mut attempts = 0;
    let result = roster_client::retry(&policy, v1::GetUserRequest::default(), |_| {
        attempts += 1;
        async { Err::<tonic::Response<()>, _>(Status::permission_denied("no")) }
    })
    .await;
    assert_eq!(result.map_err(|e| e.code()), Err(Code::PermissionDenied));
    assert_eq!(attempts, 1);

    let mut attempts = 0;
    let result = roster_client::retry(&policy, v1::GetUserRequest::default(), |_| {
        attempts += 1;
        let answer = if attempts < 2 { Err(Status::unavailable("blip")) } else { Ok(tonic::Response::new(42)) };
        async move { answer }
    })
    .await;
    assert_eq!(result.map_err(|e| e.code()), Ok(42));
    assert_eq!(attempts, 2);
}
