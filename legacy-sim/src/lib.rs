//! `legacy-sim`: a simulated monolith for outbox-bridge.
//!
//! It owns customers and orders in Postgres and, like a well-behaved monolith, writes every change
//! together with its domain events into the `outbox` table in ONE transaction (DESIGN §1). It can:
//!
//! - apply the schema migrations ([`migrate`]),
//! - serve a small HTTP API for customers and orders ([`api`]),
//! - generate load straight through the domain layer ([`load`]).
//!
//! The event catalogue lives in [`domain::outbox`].

pub mod api;
pub mod cli;
pub mod database;
pub mod domain;
pub mod load;
pub mod logging;
pub mod migrate;
