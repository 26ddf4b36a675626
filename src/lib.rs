//! medic: a plan-based remediation runner for Kubernetes clusters.
//!
//! A procedure (`plans/*.yaml`) becomes an operation whose plan — a tree of phases — is stored
//! in sled and executed, resumed or rolled back phase by phase. See `README.md` and the module
//! docs: [`plan`] (pure core), [`procedure`], [`store`], [`engine`], [`action`], [`render`],
//! [`cli`].

pub mod action;
pub mod cli;
pub mod drill;
pub mod engine;
pub mod etcd;
pub mod events;
pub mod inventory;
pub mod notify;
mod operation;
pub mod phase_id;
pub mod plan;
pub mod procedure;
pub mod render;
mod report;
pub mod schema;
pub mod shell_placement;
pub mod source;
pub mod ssh;
mod status;
pub mod store;
pub mod template;
