//! Demonstration scenarios: generators that publish realistic load for the
//! plugins weir ships (F1 telemetry, fleet telemetry, campus orders,
//! anomaly-detection events), and the run control that starts and stops
//! them, pauses and resumes the stages, and injects faults.
//!
//! A production build can leave this crate out: `weir` without its default
//! `scenarios` feature serves no run-control routes and has no generators.

use weir_engine::{kafka, topology};

pub mod control;
pub mod generate;
