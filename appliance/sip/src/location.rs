//! The location service (RFC 3261 §10, §16.5): which contacts serve an extension now, and which
//! extensions were seen recently enough to answer `480` instead of `404`.
//!
//! An AOR is the extension alone, the user part of the To URI, whatever host the phone wrote:
//! the same extension is the same person on every appliance. Bindings here are learnt from local
//! REGISTERs; the mesh issue adds bindings learnt from other appliances through the same table.

use crate::Transport;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// An address-of-record: the extension.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Aor(pub String);

impl std::fmt::Display for Aor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where to send requests for one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub transport: Transport,
    /// Our address to send from (the one the phone registered to).
    pub local: SocketAddr,
    /// The phone's address.
    pub remote: SocketAddr,
}

/// One contact bound to an AOR.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub aor: Aor,
    /// The contact URI as the phone sent it (without `<>` or header params).
    pub contact: String,
    /// Preference, in thousandths (RFC 3261 q-value ×1000).
    pub q: u16,
    pub expires_at: Instant,
    /// Call-ID and CSeq of the REGISTER that made it: a refresh on the same Call-ID replaces.
    pub call_id: String,
    pub cseq: u32,
    /// RFC 5626 `+sip.instance`: a refresh from the same device replaces, whatever its address.
    pub instance: Option<String>,
    pub target: Target,
    /// Where the REGISTER came from.
    pub source: SocketAddr,
    /// When the phone last registered (our clock; after a restart, the restart).
    pub registered_at: Instant,
    /// The display name the phone gave in its REGISTER (To's, else From's), cleaned for the
    /// operator: no surrounding quotes or whitespace, no control characters, at most
    /// [`DISPLAY_NAME_MAX`](crate::registrar::DISPLAY_NAME_MAX) characters.
    pub display_name: Option<String>,
    /// When this phone first registered (our clock): a refresh, or a new binding that replaces
    /// one of the same phone, keeps it; unlike `registered_at`, which every REGISTER moves.
    pub since: Instant,
}

impl Binding {
    /// This binding as the durable store keeps it: expiry relative to `now`.
    pub fn record(&self, now: Instant) -> BindingRecord {
        BindingRecord {
            aor: self.aor.0.clone(),
            contact: self.contact.clone(),
            q: self.q,
            expires_in: self.expires_at.saturating_duration_since(now),
            call_id: self.call_id.clone(),
            cseq: self.cseq,
            instance: self.instance.clone(),
            transport: self.target.transport,
            local: self.target.local,
            remote: self.target.remote,
            source: self.source,
            display_name: self.display_name.clone(),
            registered_for: now.saturating_duration_since(self.since),
        }
    }

    /// Whether `other` is the same phone refreshing (same contact, instance or Call-ID).
    pub fn same_phone(&self, other: &Binding) -> bool {
        self.contact == other.contact
            || (self.instance.is_some() && self.instance == other.instance)
            || self.call_id == other.call_id
    }
}

/// A binding as stored: relative expiry and age, because the core never sees wall-clock time
/// and the store's clock may differ after a restart.
#[derive(Clone, Debug, PartialEq)]
pub struct BindingRecord {
    pub aor: String,
    pub contact: String,
    pub q: u16,
    pub expires_in: Duration,
    pub call_id: String,
    pub cseq: u32,
    pub instance: Option<String>,
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub source: SocketAddr,
    pub display_name: Option<String>,
    /// How long the phone has been registered (`now - since`); zero when unknown.
    pub registered_for: Duration,
}

impl BindingRecord {
    /// The binding back in the core's clock: `registered_at` is `now` (the restart), `since`
    /// is `registered_for` before it (or `now` if the clock cannot go back that far).
    pub fn into_binding(self, now: Instant) -> Binding {
        Binding {
            aor: Aor(self.aor),
            contact: self.contact,
            q: self.q,
            expires_at: now + self.expires_in,
            call_id: self.call_id,
            cseq: self.cseq,
            instance: self.instance,
            target: Target {
                transport: self.transport,
                local: self.local,
                remote: self.remote,
            },
            source: self.source,
            registered_at: now,
            display_name: self.display_name,
            since: now.checked_sub(self.registered_for).unwrap_or(now),
        }
    }
}

/// Another appliance that serves an AOR, as the overlay reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteRoute {
    /// Its overlay identity.
    pub peer: String,
    /// Its name, for logs.
    pub node: String,
    /// Its mesh-side SIP address.
    pub sip: SocketAddr,
}

/// Bindings by AOR, and how long each extension stays "known" after its last registration.
/// `remote` holds what the overlay says other appliances serve (the mesh issue's seam: the
/// same table, fed by a command instead of a REGISTER).
#[derive(Debug, Default)]
pub struct Location {
    bindings: BTreeMap<Aor, Vec<Binding>>,
    known_until: HashMap<Aor, Instant>,
    remote: HashMap<Aor, Vec<RemoteRoute>>,
}

impl Location {
    /// Live bindings of `aor`, best q first.
    pub fn lookup(&self, now: Instant, aor: &Aor) -> Vec<&Binding> {
        let mut live: Vec<&Binding> = self
            .bindings
            .get(aor)
            .map(|v| v.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default();
        live.sort_by_key(|b| std::cmp::Reverse(b.q));
        live
    }

    /// Whether `aor` registered within the remembered window (a `480`, not a `404`).
    pub fn is_known(&self, now: Instant, aor: &Aor) -> bool {
        self.known_until.get(aor).is_some_and(|until| *until > now)
            || !self.lookup(now, aor).is_empty()
    }

    /// Replaces the bindings of `aor` with `bindings`, and remembers the extension until
    /// `known_until`.
    pub fn set(&mut self, aor: &Aor, bindings: Vec<Binding>, known_until: Instant) {
        let entry = self.known_until.entry(aor.clone()).or_insert(known_until);
        *entry = (*entry).max(known_until);
        if bindings.is_empty() {
            self.bindings.remove(aor);
        } else {
            self.bindings.insert(aor.clone(), bindings);
        }
    }

    /// Other appliances serving `aor` now.
    pub fn remote(&self, aor: &Aor) -> &[RemoteRoute] {
        self.remote.get(aor).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Replaces what the overlay says about `aor`.
    pub fn set_remote(&mut self, aor: Aor, routes: Vec<RemoteRoute>) {
        if routes.is_empty() {
            self.remote.remove(&aor);
        } else {
            self.remote.insert(aor, routes);
        }
    }

    /// Remembers `aor` as known until `until` (restored from the store at start).
    pub fn remember(&mut self, aor: Aor, until: Instant) {
        let entry = self.known_until.entry(aor).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Every live binding, by AOR.
    pub fn all(&self, now: Instant) -> impl Iterator<Item = &Binding> {
        self.bindings
            .values()
            .flatten()
            .filter(move |b| b.expires_at > now)
    }

    /// Drops expired bindings and forgotten extensions; returns the expired bindings.
    pub fn sweep(&mut self, now: Instant) -> Vec<Binding> {
        let mut expired = Vec::new();
        self.bindings.retain(|_, list| {
            let (dead, live): (Vec<Binding>, Vec<Binding>) =
                list.drain(..).partition(|b| b.expires_at <= now);
            expired.extend(dead);
            *list = live;
            !list.is_empty()
        });
        self.known_until.retain(|_, until| *until > now);
        expired
    }

    /// Which binding, if any, has this address as its phone (to route in-dialog requests from
    /// the right local address).
    pub fn by_remote(&self, now: Instant, remote: std::net::SocketAddr) -> Option<&Binding> {
        self.all(now).find(|b| b.target.remote == remote)
    }

    pub fn len(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }
}
