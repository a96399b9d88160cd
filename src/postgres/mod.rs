//! Postgres itself: the postmaster process, the admin connection, settings, and the activity
//! monitor.

pub mod connect;
pub mod monitor;
pub mod process;
pub mod settings;
