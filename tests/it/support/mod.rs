//! Test support: the real binary (`compute`) and throwaway Postgres servers (`postgres`).

pub mod compute;
