//! Black-box support for fieldmesh's end-to-end tests: start the real `fieldmesh` binary, drive
//! real SIP clients (sipp, baresip, linphonec) against it, and check what they saw.
//!
//! Nothing here imports an `appliance/*` crate: the tests see the appliance only over the network,
//! its status API and its exit codes, as a phone or an operator would.

pub mod audio;
pub mod baresip;
pub mod browser;
pub mod host;
pub mod http;
pub mod impair;
pub mod lab;
pub mod linphone;
pub mod media;
pub mod node;
pub mod ports;
pub mod qr;
pub mod sipp;
pub mod trace;
pub mod wait;
