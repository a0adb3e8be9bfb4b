//! End-to-end tests: the real `fieldmesh` binary driven by real SIP clients (sipp, baresip,
//! linphonec) and raw sockets, all on loopback. One test binary; each file is one topic and
//! each test one short story.

mod cli_config;
mod cli_views;
mod durability;
mod media_calls;
mod mesh_bad_neighbours;
mod mesh_bridge;
mod mesh_lab;
mod mesh_late_address;
mod mesh_line;
mod mesh_partition;
mod mesh_roaming;
mod mesh_silent_death;
mod messages_replicas;
mod phones_baresip;
mod phones_linphone;
mod raw;
mod sip_bad_input;
mod sip_call;
mod sip_fork;
mod sip_message;
mod sip_register;
mod sip_torture;
mod sip_unknown_method;
mod voicemail;
mod web_conflict;
mod web_join;
mod web_views;
