//! fieldmesh's SIP core: the registrar, location service and stateful proxy of one appliance.
//!
//! This crate has no networking code and reads no timestamps from the operating system: every
//! input arrives through [`Endpoint::handle_input`] with the current `now`, every output leaves
//! through [`Endpoint::poll_output`], and [`Endpoint::poll_timeout`] says when to call again.
//! The daemon's SIP driver owns the sockets; tests drive the same code with a fake clock.
//!
//! Map: [`message`] is the parse edge (bytes → typed request or response, or the `400` that
//! says why not); [`transaction`] holds RFC 3261's four machines; [`registrar`] and
//! [`location`] keep bindings; [`proxy`] decides where a request goes; [`endpoint`] ties them
//! together; [`storage`] is the narrow trait the daemon implements over SQLite.

pub(crate) mod dialog;
pub mod endpoint;
pub mod location;
pub mod media;
pub mod message;
pub mod messaging;
pub(crate) mod mwi;
pub mod proxy;
pub mod registrar;
pub mod reject;
pub mod response;
pub mod storage;
pub mod transaction;
pub mod voicemail;

pub use endpoint::{Command, Config, Datagram, Endpoint, Event, Input, MeshSide, Output};
pub use location::{Aor, Binding, BindingRecord, RemoteRoute, Target};
pub use media::{Media, MediaRefusal, Toward};
pub use messaging::{
    DeliveryNotice, MessagingConfig, StoredMessage, WEB_USER, WebText, id_belongs_to, item_id,
};
pub use registrar::RegistrarConfig;
pub use storage::{MemoryStorage, Storage, StorageError};
pub use transaction::Intervals;
pub use voicemail::{MailboxAction, StoredVoicemail, VoicemailConfig};

/// The transport a message travels on. Stream transports are framed by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Methods the appliance routes or serves, for Allow headers.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, SUBSCRIBE, NOTIFY, REFER, INFO, UPDATE, PRACK";
