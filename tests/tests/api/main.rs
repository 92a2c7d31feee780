//! Every RPC of Roster, through a real gRPC client against a real server and database.

mod audit;
mod auth;
mod authorization;
mod escalation;
mod mail;
mod roles;
mod server;
mod users;
mod workspaces;
