//! Core scenarios: the SIP endpoint with scripted phones on a simulated network, driven by a
//! fake clock. One test binary (hickory's layout): each file is a `mod`.

mod bad_input;
mod call;
mod cancel;
mod fork;
mod media;
mod mesh;
mod messaging;
mod register;
mod rfc4475;
mod support;
mod timeouts;
mod voicemail;
