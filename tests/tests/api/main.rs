//! Every RPC of Roster, through a real gRPC client against a real server and database.

mod assignment;
mod audit;
mod auth;
mod authorization;
mod billing;
mod boundaries;
mod edges;
mod escalation;
mod events;
mod faults;
mod fuzz;
mod invitations;
mod isolation;
mod listings;
mod mail;
mod metrics;
mod recovery;
mod roles;
mod server;
mod service_keys;
mod taking;
mod teams;
mod throttle;
mod tls;
mod users;
mod workspaces;
