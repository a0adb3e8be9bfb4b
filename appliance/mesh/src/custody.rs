//! Who holds which replica, and who must copy it where so that a stored message or voicemail
//! stays on `1 + k` appliances (the one that accepted it plus k replicas) when a holder
//! disappears for good. Pure: driven with `now`, no sockets.
//!
//! Appliances swap inventories (the ids they hold, and recently delivered ids) with each
//! connected neighbour every [`inventory_period`]. A holder that stops answering still counts for
//! `restore_after`, so a reboot or a short partition does not trigger copies; after that, the
//! live holder closest to the id (by the same distance that chose the first holders) copies it
//! to the closest neighbours that lack it. Only one holder acts, so copies are not multiplied;
//! if two views differ for a round, a copy too many is harmless (stores are idempotent by id).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Most ids read from one neighbour's inventory (a larger one is cut, not trusted whole).
pub const MAX_INVENTORY: usize = 10_000;

/// What an appliance tells a neighbour it keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inventory {
    /// Ids of the messages and voicemails it holds.
    pub held: Vec<String>,
    /// Ids it knows were delivered or deleted: a holder cut off when that happened drops them.
    pub gone: Vec<String>,
}

/// One copy to make: send the item `id` (waiting for `aor`) to these neighbours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restore {
    pub id: String,
    pub aor: String,
    pub to: Vec<String>,
}

/// How often inventories are swapped: often enough that a holder gone for `restore_after` is
/// noticed within a fraction of it, rarely enough that idle meshes stay quiet.
pub fn inventory_period(restore_after: Duration) -> Duration {
    (restore_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

struct Holdings {
    ids: HashSet<String>,
    seen: Instant,
}

/// This appliance's view of where its items are.
pub struct Custody {
    me: String,
    copies: usize,
    restore_after: Duration,
    started: Instant,
    /// What we hold: id → AOR.
    held: BTreeMap<String, String>,
    /// Each neighbour's last inventory and when it was last alive.
    peers: HashMap<String, Holdings>,
    /// Copies sent and not yet in the receiver's inventory: (id, peer) → when.
    sent: HashMap<(String, String), Instant>,
}

impl Custody {
    /// `k` replicas besides the accepting appliance's own copy.
    pub fn new(me: String, k: usize, restore_after: Duration, now: Instant) -> Custody {
        Custody {
            me,
            copies: 1 + k,
            restore_after,
            started: now,
            held: BTreeMap::new(),
            peers: HashMap::new(),
            sent: HashMap::new(),
        }
    }

    /// What we hold now: (id, AOR) pairs.
    pub fn hold(&mut self, held: impl IntoIterator<Item = (String, String)>) {
        self.held = held.into_iter().collect();
    }

    /// The ids we hold, for our inventory.
    pub fn held_ids(&self) -> Vec<String> {
        self.held.keys().cloned().collect()
    }

    /// A neighbour's inventory arrived; returns the ids we hold that it says are gone.
    pub fn heard(&mut self, peer: &str, inventory: Inventory, now: Instant) -> Vec<String> {
        let ids: HashSet<String> = inventory.held.into_iter().take(MAX_INVENTORY).collect();
        self.sent
            .retain(|(id, to), _| !(to == peer && ids.contains(id)));
        self.peers
            .insert(peer.to_string(), Holdings { ids, seen: now });
        inventory
            .gone
            .into_iter()
            .take(MAX_INVENTORY)
            .filter(|id| self.held.contains_key(id))
            .collect()
    }

    /// `peer` is connected now.
    pub fn alive(&mut self, peer: &str, now: Instant) {
        if let Some(h) = self.peers.get_mut(peer) {
            h.seen = now;
        }
    }

    /// The copies this appliance must make now, given the neighbours connected at `now`.
    pub fn plan(&mut self, now: Instant, connected: &[String]) -> Vec<Restore> {
        let restore_after = self.restore_after;
        // Right after a start we cannot know who held what a moment ago: wait as long as a
        // holder may be away.
        if now.saturating_duration_since(self.started) < restore_after {
            return Vec::new();
        }
        self.peers
            .retain(|_, h| now.saturating_duration_since(h.seen) < restore_after);
        self.sent
            .retain(|_, at| now.saturating_duration_since(*at) < restore_after);
        let live: HashSet<&str> = connected.iter().map(String::as_str).collect();
        let mut plan = Vec::new();
        for (id, aor) in &self.held {
            let mut holders = 1;
            let mut acting = vec![self.me.as_str()];
            let mut lacking = Vec::new();
            for (peer, h) in &self.peers {
                if h.ids.contains(id) || self.sent.contains_key(&(id.clone(), peer.clone())) {
                    holders += 1;
                    if live.contains(peer.as_str()) {
                        acting.push(peer);
                    }
                } else if live.contains(peer.as_str()) {
                    lacking.push(peer.as_str());
                }
            }
            if holders >= self.copies || lacking.is_empty() {
                continue;
            }
            let first = acting
                .iter()
                .min_by_key(|p| (distance(p, id), **p))
                .copied();
            if first != Some(self.me.as_str()) {
                continue;
            }
            lacking.sort_by_key(|p| (distance(p, id), *p));
            let to: Vec<String> = lacking
                .into_iter()
                .take(self.copies - holders)
                .map(str::to_string)
                .collect();
            plan.push(Restore {
                id: id.clone(),
                aor: aor.clone(),
                to,
            });
        }
        for r in &plan {
            for p in &r.to {
                self.sent.insert((r.id.clone(), p.clone()), now);
            }
        }
        plan
    }
}

/// A stable distance between a peer and a replica id (FNV of both): the first holders are the
/// closest connected neighbours, and so is the holder that restores the count.
pub(crate) fn distance(peer: &str, id: &str) -> u64 {
    let h = |s: &str| {
        s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    h(peer) ^ h(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(60);

    fn inv(held: &[&str]) -> Inventory {
        Inventory {
            held: held.iter().map(|s| s.to_string()).collect(),
            gone: Vec::new(),
        }
    }

    fn peers(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Custody at `me` holding `m1`, with `b` and `c` holding it too and `d` holding nothing,
    /// all heard at `t0`.
    fn three_copies(me: &str, t0: Instant) -> Custody {
        let mut c = Custody::new(me.into(), 2, AFTER, t0);
        c.hold([("m1".to_string(), "303".to_string())]);
        for (p, held) in [
            ("a", &["m1"][..]),
            ("b", &["m1"]),
            ("c", &["m1"]),
            ("d", &[]),
        ] {
            if p != me {
                c.heard(p, inv(held), t0);
            }
        }
        c
    }

    #[test]
    fn nothing_moves_while_the_count_is_met() {
        let t0 = Instant::now();
        let mut c = three_copies("b", t0);
        let later = t0 + AFTER + Duration::from_secs(1);
        for p in ["a", "c", "d"] {
            c.alive(p, later);
        }
        assert!(c.plan(later, &peers(&["a", "c", "d"])).is_empty());
    }

    #[test]
    fn a_holder_gone_for_restore_after_is_replaced_by_exactly_one_holder() {
        let t0 = Instant::now();
        // A, a holder, goes silent at t0; B, C and D stay connected.
        let mut b = three_copies("b", t0);
        let mut c = three_copies("c", t0);
        let soon = t0 + AFTER / 2;
        for custody in [&mut b, &mut c] {
            for p in ["b", "c", "d"] {
                custody.alive(p, soon);
            }
        }
        // Not yet gone for good: nobody copies.
        let (bs, cs) = (peers(&["c", "d"]), peers(&["b", "d"]));
        assert!(b.plan(soon, &bs).is_empty() && c.plan(soon, &cs).is_empty());

        let late = t0 + AFTER + Duration::from_secs(1);
        for custody in [&mut b, &mut c] {
            for p in ["b", "c", "d"] {
                custody.alive(p, late);
            }
        }
        let plans = [b.plan(late, &bs), c.plan(late, &cs)];
        let all: Vec<&Restore> = plans.iter().flatten().collect();
        assert_eq!(all.len(), 1, "one holder acts: {plans:?}");
        assert_eq!(all[0].to, vec!["d".to_string()]);
        assert_eq!(all[0].aor, "303");
        // Until D's inventory shows it, the copy counts: no second copy next round.
        let next = late + Duration::from_secs(1);
        assert!(b.plan(next, &bs).is_empty() && c.plan(next, &cs).is_empty());
    }

    #[test]
    fn the_acting_holder_is_the_closest_live_one() {
        let t0 = Instant::now();
        let late = t0 + AFTER + Duration::from_secs(1);
        let mut acted = Vec::new();
        for me in ["b", "c"] {
            let mut custody = three_copies(me, t0);
            for p in ["b", "c", "d"] {
                custody.alive(p, late);
            }
            let others: Vec<String> = ["b", "c", "d"]
                .into_iter()
                .filter(|p| *p != me)
                .map(String::from)
                .collect();
            if !custody.plan(late, &others).is_empty() {
                acted.push(me);
            }
        }
        let closest = ["b", "c"]
            .into_iter()
            .min_by_key(|p| (distance(p, "m1"), *p))
            .expect("two holders");
        assert_eq!(acted, vec![closest]);
    }

    #[test]
    fn a_lone_copy_is_spread_to_the_closest_neighbours_once_they_are_known() {
        let t0 = Instant::now();
        let mut a = Custody::new("a".into(), 2, AFTER, t0);
        a.hold([("m1".to_string(), "303".to_string())]);
        let late = t0 + AFTER;
        // Neighbours whose inventories we have not heard are not chosen.
        assert!(a.plan(late, &peers(&["b"])).is_empty());
        for p in ["b", "c", "d"] {
            a.heard(p, inv(&[]), late);
        }
        let plan = a.plan(late, &peers(&["b", "c", "d"]));
        assert_eq!(plan.len(), 1);
        let mut expected = peers(&["b", "c", "d"]);
        expected.sort_by_key(|p| (distance(p, "m1"), p.clone()));
        expected.truncate(2);
        assert_eq!(plan[0].to, expected);
    }

    #[test]
    fn right_after_a_start_nothing_is_copied() {
        let t0 = Instant::now();
        let mut a = Custody::new("a".into(), 2, AFTER, t0);
        a.hold([("m1".to_string(), "303".to_string())]);
        a.heard("b", inv(&[]), t0);
        assert!(a.plan(t0 + AFTER / 2, &peers(&["b"])).is_empty());
    }

    #[test]
    fn ids_a_neighbour_knows_are_gone_are_returned_for_forgetting() {
        let t0 = Instant::now();
        let mut a = Custody::new("a".into(), 2, AFTER, t0);
        a.hold([
            ("m1".to_string(), "303".to_string()),
            ("m2".to_string(), "303".to_string()),
        ]);
        let gone = a.heard(
            "b",
            Inventory {
                held: Vec::new(),
                gone: peers(&["m2", "zz"]),
            },
            t0,
        );
        assert_eq!(gone, peers(&["m2"]));
    }

    #[test]
    fn a_copy_that_never_shows_up_is_retried_after_restore_after() {
        let t0 = Instant::now();
        let mut a = Custody::new("a".into(), 1, AFTER, t0);
        a.hold([("m1".to_string(), "303".to_string())]);
        let late = t0 + AFTER;
        a.heard("b", inv(&[]), late);
        assert_eq!(a.plan(late, &peers(&["b"])).len(), 1);
        let mid = late + AFTER / 2;
        a.heard("b", inv(&[]), mid);
        assert!(a.plan(mid, &peers(&["b"])).is_empty());
        let retry = late + AFTER;
        a.heard("b", inv(&[]), retry);
        assert_eq!(a.plan(retry, &peers(&["b"])).len(), 1);
    }
}
