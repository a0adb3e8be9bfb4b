//! Location records and the rules that merge them: pure functions of `now`, tested without a
//! swarm. A record says "appliance P serves extension A for the next T seconds, for these
//! phones". There is one record per (AOR, appliance), so two appliances serving one extension
//! never overwrite each other; a newer sequence number from the same appliance replaces an older
//! one; a tombstone (a record with no phones) beats a live record of the same sequence; and a
//! record never lives longer than its relative lifetime, because appliances have no RTC and
//! their clocks drift.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Longest lifetime a record may claim. Registrations are capped at 300 s by default; a day
/// leaves room for configuration without letting a bad record squat an extension for years.
pub const MAX_TTL_SECS: u32 = 86_400;
/// How long a tombstone is kept so an older replica arriving late cannot resurrect a binding.
pub const TOMBSTONE_KEEP: Duration = Duration::from_secs(600);
/// Bounds on what one record may carry (bad input must not poison the table).
pub const MAX_PHONES: usize = 16;
const MAX_FIELD: usize = 256;

/// One phone behind a record: enough to tell a roaming phone's new binding from its old one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneRef {
    /// Call-ID of its REGISTER; a refresh on the same Call-ID with a higher CSeq is newer.
    pub call_id: String,
    pub cseq: u32,
    /// RFC 5626 `+sip.instance`, when the phone sends one.
    pub instance: Option<String>,
    /// Seconds since the phone's last REGISTER when the record was made (relative, not a date).
    pub age_secs: u32,
}

/// "Appliance `peer` serves extension `aor`": the unit the overlay replicates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationRecord {
    pub aor: String,
    /// The serving appliance's overlay identity (libp2p peer id, base58).
    pub peer: String,
    /// Its human name.
    pub node: String,
    /// Its mesh-side SIP address: where other appliances send requests for `aor`.
    pub sip: SocketAddr,
    /// Per-appliance sequence, increasing across restarts.
    pub seq: u64,
    /// Remaining lifetime in seconds when the record was made.
    pub ttl_secs: u32,
    /// The phones; empty means a tombstone (the extension left this appliance).
    pub phones: Vec<PhoneRef>,
}

impl LocationRecord {
    pub fn is_tombstone(&self) -> bool {
        self.phones.is_empty()
    }

    /// Why this record must be refused, if it must. `author` is who signed the message that
    /// carried it: an appliance may only speak for itself.
    pub fn check(&self, author: Option<&str>) -> Result<(), &'static str> {
        if self.aor.is_empty() || self.aor.len() > 64 || !self.aor.bytes().all(is_user_byte) {
            return Err("bad aor");
        }
        if self.peer.is_empty() || self.peer.len() > 128 || self.node.len() > 64 {
            return Err("bad peer or node name");
        }
        if author.is_some_and(|a| a != self.peer) {
            return Err("record claims another appliance");
        }
        if self.ttl_secs > MAX_TTL_SECS {
            return Err("absurd lifetime");
        }
        if self.phones.len() > MAX_PHONES {
            return Err("too many phones");
        }
        if self.phones.iter().any(|p| {
            p.call_id.is_empty()
                || p.call_id.len() > MAX_FIELD
                || p.instance.as_ref().is_some_and(|i| i.len() > MAX_FIELD)
        }) {
            return Err("bad phone");
        }
        if self.sip.port() == 0 || self.sip.ip().is_unspecified() {
            return Err("bad sip address");
        }
        Ok(())
    }
}

/// SIP user-part characters we accept in an extension (RFC 3261 §25.1 `user`, minus escapes).
fn is_user_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b)
}

/// What a merge did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// The record was new or newer and is now in the table.
    Accepted,
    /// We already had this or something newer.
    Stale,
}

#[derive(Clone, Debug)]
struct Entry {
    record: LocationRecord,
    /// When it stops counting (tombstones: when they are forgotten).
    until: Instant,
    /// When each phone last registered, on our clock.
    registered: Vec<Instant>,
    /// The serving appliance is unreachable: keep the record for when it returns, but do not
    /// route to it.
    suspended: bool,
}

/// A routable remote binding: where to send requests for an AOR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub peer: String,
    pub node: String,
    pub sip: SocketAddr,
}

/// Every appliance's records, merged.
#[derive(Debug, Default)]
pub struct Table {
    entries: HashMap<(String, String), Entry>,
}

impl Table {
    /// Merges one (already checked) record received at `now`.
    pub fn merge(&mut self, now: Instant, record: LocationRecord) -> Merge {
        let key = (record.aor.clone(), record.peer.clone());
        if let Some(old) = self.entries.get(&key) {
            let newer = record.seq > old.record.seq
                || (record.seq == old.record.seq
                    && record.is_tombstone()
                    && !old.record.is_tombstone());
            if !newer {
                return Merge::Stale;
            }
        }
        let until = if record.is_tombstone() {
            now + TOMBSTONE_KEEP
        } else {
            now + Duration::from_secs(u64::from(record.ttl_secs))
        };
        let registered = record
            .phones
            .iter()
            .map(|p| {
                now.checked_sub(Duration::from_secs(u64::from(p.age_secs)))
                    .unwrap_or(now)
            })
            .collect();
        self.entries.insert(
            key,
            Entry {
                record,
                until,
                registered,
                suspended: false,
            },
        );
        Merge::Accepted
    }

    /// Where requests for `aor` may go now: live, unsuspended records of appliances other than
    /// `me`, without phones another appliance has registered more recently (roaming).
    pub fn routes(&self, now: Instant, aor: &str, me: &str) -> Vec<Route> {
        let mut routes: Vec<Route> = self
            .entries
            .iter()
            .filter(|((a, peer), e)| {
                a == aor && peer != me && !e.suspended && e.until > now && !e.record.is_tombstone()
            })
            .filter(|((_, peer), e)| {
                // A record whose every phone moved elsewhere no longer serves the AOR.
                (0..e.record.phones.len()).any(|i| !self.moved(aor, peer, e, i))
            })
            .map(|(_, e)| Route {
                peer: e.record.peer.clone(),
                node: e.record.node.clone(),
                sip: e.record.sip,
            })
            .collect();
        routes.sort_by(|a, b| a.peer.cmp(&b.peer));
        routes
    }

    /// Whether phone `i` of `entry` (from `peer`) has a newer registration at another appliance.
    fn moved(&self, aor: &str, peer: &str, entry: &Entry, i: usize) -> bool {
        let phone = &entry.record.phones[i];
        let at = entry.registered[i];
        self.entries.iter().any(|((a, other), e)| {
            a == aor
                && other != peer
                && !e.record.is_tombstone()
                && e.record.phones.iter().zip(&e.registered).any(|(p, when)| {
                    (p.call_id == phone.call_id && p.cseq > phone.cseq)
                        || (phone.instance.is_some() && p.instance == phone.instance && *when > at)
                })
        })
    }

    /// Our own phones (in `mine`, for `aor`) that registered more recently elsewhere: the
    /// phone roamed, so our binding must go.
    pub fn moved_away(
        &self,
        now: Instant,
        aor: &str,
        me: &str,
        mine: &[PhoneRef],
    ) -> Vec<PhoneRef> {
        let local = Entry {
            record: LocationRecord {
                aor: aor.into(),
                peer: me.into(),
                node: String::new(),
                sip: SocketAddr::from(([127, 0, 0, 1], 5060)),
                seq: 0,
                ttl_secs: 0,
                phones: mine.to_vec(),
            },
            until: now,
            registered: mine
                .iter()
                .map(|p| {
                    now.checked_sub(Duration::from_secs(u64::from(p.age_secs)))
                        .unwrap_or(now)
                })
                .collect(),
            suspended: false,
        };
        (0..mine.len())
            .filter(|i| self.moved(aor, me, &local, *i))
            .map(|i| mine[i].clone())
            .collect()
    }

    /// Whether any appliance's record (live or not) names `aor`: a known extension.
    pub fn knows(&self, aor: &str) -> bool {
        self.entries.keys().any(|(a, _)| a == aor)
    }

    /// Drops what has run out; returns the AORs whose routes may have changed.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut changed = Vec::new();
        self.entries.retain(|(aor, _), e| {
            let keep = e.until > now;
            if !keep {
                changed.push(aor.clone());
            }
            keep
        });
        changed.sort();
        changed.dedup();
        changed
    }

    /// The appliance `peer` stopped answering (or came back): its records stop (or start)
    /// counting. Returns the AORs affected.
    pub fn set_suspended(&mut self, peer: &str, suspended: bool) -> Vec<String> {
        let mut changed: Vec<String> = self
            .entries
            .iter_mut()
            .filter(|((_, p), e)| p == peer && e.suspended != suspended)
            .map(|((aor, _), e)| {
                e.suspended = suspended;
                aor.clone()
            })
            .collect();
        changed.sort();
        changed.dedup();
        changed
    }

    /// (aor, peer, seq) of every record: what anti-entropy compares.
    pub fn digest(&self) -> Vec<(String, String, u64)> {
        let mut d: Vec<_> = self
            .entries
            .iter()
            .map(|((a, p), e)| (a.clone(), p.clone(), e.record.seq))
            .collect();
        d.sort();
        d
    }

    /// The records `their` digest lacks or has older, with lifetimes as of `now`.
    pub fn newer_than(&self, now: Instant, their: &[(String, String, u64)]) -> Vec<LocationRecord> {
        let theirs: HashMap<(&str, &str), u64> = their
            .iter()
            .map(|(a, p, s)| ((a.as_str(), p.as_str()), *s))
            .collect();
        self.entries
            .iter()
            .filter(|((a, p), e)| {
                e.until > now
                    && theirs
                        .get(&(a.as_str(), p.as_str()))
                        .is_none_or(|s| *s < e.record.seq)
            })
            .map(|(_, e)| self.as_of(now, e))
            .collect()
    }

    /// Every record for `aor`, with lifetimes as of `now` (to answer a lookup).
    pub fn records_for(&self, now: Instant, aor: &str) -> Vec<LocationRecord> {
        self.entries
            .iter()
            .filter(|((a, _), e)| a == aor && e.until > now)
            .map(|(_, e)| self.as_of(now, e))
            .collect()
    }

    /// The record re-aged to `now`: remaining lifetime and phone ages move on.
    fn as_of(&self, now: Instant, e: &Entry) -> LocationRecord {
        let mut r = e.record.clone();
        if !r.is_tombstone() {
            r.ttl_secs = e.until.saturating_duration_since(now).as_secs() as u32;
        }
        for (p, when) in r.phones.iter_mut().zip(&e.registered) {
            p.age_secs = now.saturating_duration_since(*when).as_secs() as u32;
        }
        r
    }

    /// Records for the status API: (record as of now, suspended).
    pub fn all(&self, now: Instant) -> Vec<(LocationRecord, bool)> {
        let mut all: Vec<_> = self
            .entries
            .values()
            .map(|e| (self.as_of(now, e), e.suspended))
            .collect();
        all.sort_by(|a, b| (&a.0.aor, &a.0.peer).cmp(&(&b.0.aor, &b.0.peer)));
        all
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(call_id: &str, cseq: u32) -> PhoneRef {
        PhoneRef {
            call_id: call_id.into(),
            cseq,
            instance: None,
            age_secs: 0,
        }
    }

    fn rec(aor: &str, peer: &str, seq: u64, phones: Vec<PhoneRef>) -> LocationRecord {
        LocationRecord {
            aor: aor.into(),
            peer: peer.into(),
            node: format!("node-{peer}"),
            sip: SocketAddr::from(([10, 99, 0, 1], 5060)),
            seq,
            ttl_secs: 300,
            phones,
        }
    }

    #[allow(clippy::disallowed_methods)] // the test's one starting instant
    fn start() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_newer_sequence_replaces_and_an_older_one_is_stale() {
        let now = start();
        let mut t = Table::default();
        assert_eq!(
            t.merge(now, rec("201", "A", 2, vec![phone("c", 1)])),
            Merge::Accepted
        );
        assert_eq!(
            t.merge(now, rec("201", "A", 1, vec![phone("c", 1)])),
            Merge::Stale
        );
        assert_eq!(
            t.merge(now, rec("201", "A", 3, vec![phone("c", 2)])),
            Merge::Accepted
        );
        assert_eq!(t.routes(now, "201", "me").len(), 1);
    }

    #[test]
    fn a_tombstone_wins_over_an_older_or_equal_record_and_is_not_resurrected() {
        let now = start();
        let mut t = Table::default();
        t.merge(now, rec("201", "A", 5, vec![phone("c", 1)]));
        assert_eq!(t.merge(now, rec("201", "A", 5, vec![])), Merge::Accepted);
        assert!(t.routes(now, "201", "me").is_empty());
        assert_eq!(
            t.merge(now, rec("201", "A", 4, vec![phone("c", 1)])),
            Merge::Stale,
            "an old replica"
        );
        assert!(t.knows("201"), "still a known extension");
    }

    #[test]
    fn two_appliances_serving_one_extension_do_not_collide() {
        let now = start();
        let mut t = Table::default();
        t.merge(now, rec("201", "A", 1, vec![phone("a", 1)]));
        t.merge(now, rec("201", "C", 1, vec![phone("c", 1)]));
        let peers: Vec<String> = t
            .routes(now, "201", "B")
            .into_iter()
            .map(|r| r.peer)
            .collect();
        assert_eq!(peers, vec!["A".to_string(), "C".to_string()]);
        assert_eq!(
            t.routes(now, "201", "A").len(),
            1,
            "an appliance never routes to itself"
        );
    }

    #[test]
    fn records_expire_after_their_relative_lifetime() {
        let now = start();
        let mut t = Table::default();
        let mut r = rec("201", "A", 1, vec![phone("a", 1)]);
        r.ttl_secs = 60;
        t.merge(now, r);
        assert_eq!(
            t.routes(now + Duration::from_secs(59), "201", "me").len(),
            1
        );
        assert!(
            t.routes(now + Duration::from_secs(61), "201", "me")
                .is_empty()
        );
        assert_eq!(
            t.expire(now + Duration::from_secs(61)),
            vec!["201".to_string()]
        );
        assert!(t.is_empty());
    }

    #[test]
    fn a_roaming_phone_is_routed_only_to_its_new_appliance() {
        let now = start();
        let mut t = Table::default();
        t.merge(now, rec("201", "A", 1, vec![phone("same-call", 1)]));
        t.merge(now, rec("201", "C", 1, vec![phone("same-call", 2)]));
        let peers: Vec<String> = t
            .routes(now, "201", "B")
            .into_iter()
            .map(|r| r.peer)
            .collect();
        assert_eq!(peers, vec!["C".to_string()]);
        // A learns its own phone moved.
        let moved = t.moved_away(now, "201", "A", &[phone("same-call", 1)]);
        assert_eq!(moved, vec![phone("same-call", 1)]);
        assert!(
            t.moved_away(now, "201", "C", &[phone("same-call", 2)])
                .is_empty()
        );
    }

    #[test]
    fn a_suspended_appliance_is_not_routed_to_until_it_returns() {
        let now = start();
        let mut t = Table::default();
        t.merge(now, rec("201", "A", 1, vec![phone("a", 1)]));
        assert_eq!(t.set_suspended("A", true), vec!["201".to_string()]);
        assert!(t.routes(now, "201", "me").is_empty());
        assert!(t.knows("201"));
        t.set_suspended("A", false);
        assert_eq!(t.routes(now, "201", "me").len(), 1);
    }

    #[test]
    fn anti_entropy_sends_only_what_the_other_side_lacks() {
        let now = start();
        let mut t = Table::default();
        t.merge(now, rec("201", "A", 3, vec![phone("a", 1)]));
        t.merge(now, rec("202", "A", 1, vec![phone("b", 1)]));
        let theirs = vec![
            ("201".to_string(), "A".to_string(), 3),
            ("202".to_string(), "A".to_string(), 0),
        ];
        let missing = t.newer_than(now + Duration::from_secs(10), &theirs);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].aor, "202");
        assert_eq!(
            missing[0].ttl_secs, 290,
            "lifetimes are re-aged, not copied"
        );
    }

    #[test]
    fn bad_records_are_refused_with_a_reason() {
        let good = rec("201", "A", 1, vec![phone("a", 1)]);
        assert_eq!(good.check(Some("A")), Ok(()));
        assert_eq!(
            good.check(Some("B")),
            Err("record claims another appliance")
        );
        let mut r = good.clone();
        r.ttl_secs = 10_000_000;
        assert_eq!(r.check(None), Err("absurd lifetime"));
        let mut r = good.clone();
        r.aor = "a b".into();
        assert_eq!(r.check(None), Err("bad aor"));
        let mut r = good.clone();
        r.phones = (0..100).map(|i| phone(&i.to_string(), 1)).collect();
        assert_eq!(r.check(None), Err("too many phones"));
        let mut r = good;
        r.sip = SocketAddr::from(([0, 0, 0, 0], 5060));
        assert_eq!(r.check(None), Err("bad sip address"));
    }
}
