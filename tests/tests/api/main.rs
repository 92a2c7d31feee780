//! Every RPC of Roster, through a real gRPC client against a real server and database.

mod audit;
mod auth;
mod mail;
mod server;
mod users;
mod workspaces;
