//! RobustMQ Placement Center: the cluster metadata service, a Raft group of
//! one to five members (raft-rs), with its client and `robust-ctl`.
//!
//! Layout, following one request: [`server`] accepts a connection and decodes
//! frames ([`frame`], [`wire`]); [`service`] validates the call and turns it
//! into a write ([`command::Txn`]) or a read; [`node`] hands it to the Raft
//! loop in [`driver`], which replicates through [`transport`], persists in
//! [`storage`], applies to [`state`] (key layout in [`keys`]) and runs the
//! leader-only [`controller`]. [`client`] is the other end; [`cli`] is
//! `robust-ctl`; [`role`] starts it all inside `robust-server`.

pub mod cli;
pub mod client;
pub mod command;
pub mod config;
pub mod controller;
pub mod driver;
pub mod error;
pub mod frame;
pub mod keys;
mod logger;
pub mod node;
pub mod role;
pub mod server;
pub mod service;
pub mod state;
pub mod storage;
pub mod transport;
pub mod wal;
pub mod wire;
