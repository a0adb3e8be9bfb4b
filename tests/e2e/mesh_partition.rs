//! Issue 4, story 3: partition and heal. C is cut off for 20 s (`FIELDMESH_PARTITION_SECS`). A
//! call from A to C's phone gets 480 within 5 s instead of hanging. C's phone re-registers
//! during the partition. After the heal, A's call gets through within 10 s, and no appliance
//! keeps a stale binding (checked through every status API).

use fieldmesh_tests::lab::{
    HEAL_TARGET, Lab, ROUTE_WAIT, SILENT_DEATH_TARGET, UNANSWERED_480_TARGET,
    assert_mesh_addresses_only, bindings, bound, check_neighbour_times, connected_peers, hold,
    live_routes, statuses, wait_neighbours, wait_peer_gone, wait_route,
};
use fieldmesh_tests::node::{NO_VOICEMAIL, NodeOptions};
use fieldmesh_tests::ports::free_port;
use fieldmesh_tests::sipp::LOOPBACK;
use fieldmesh_tests::wait::wait_for;
use std::time::{Duration, Instant};

fn partition() -> Duration {
    let secs = std::env::var("FIELDMESH_PARTITION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

#[test]
fn a_call_into_a_partition_gets_480_and_after_the_heal_it_gets_through_with_no_stale_binding() {
    let lab = Lab::new("mesh-partition");
    let apps = ["a", "b", "c"].map(|n| lab.appliance(n));
    let [a, _b, c] = &apps;
    let nodes = apps.each_ref().map(|x| {
        lab.start_node(
            x,
            NodeOptions {
                config_toml: Some(NO_VOICEMAIL.into()),
                ..NodeOptions::default()
            },
        )
    });
    let [na, nb, nc] = &nodes;
    check_neighbour_times(&wait_neighbours(&[na, nb, nc], Duration::from_secs(10)));

    let c_phone = c
        .phone("uas_proxy")
        .timeout(partition() + Duration::from_secs(90))
        .spawn();
    let call_id = format!("partition-{}@10.42.0.2", std::process::id());
    c.register_as("301", c_phone.port(), 120, &call_id, 1);
    a.register("101", free_port(LOOPBACK), 300);
    for n in [na, nb] {
        wait_route(n, "301", nc, c.mesh_sip(), ROUTE_WAIT, |_| true);
    }
    wait_route(nc, "101", na, a.mesh_sip(), ROUTE_WAIT, |_| true);
    let c_id = nc.peer_id();

    lab.link_down(c);
    let cut = Instant::now();
    let call = a
        .caller("invite_unavailable")
        .service("301")
        .recv_timeout(bound(UNANSWERED_480_TARGET))
        .run();
    call.expect_success(1);
    eprintln!(
        "call into the partition: 480 after {} ms (target {} ms)",
        call.elapsed.as_millis(),
        UNANSWERED_480_TARGET.as_millis()
    );
    assert!(call.elapsed <= bound(UNANSWERED_480_TARGET));

    // The phone refreshes during the partition, now for 300 s: only C can know.
    c.register_as("301", c_phone.port(), 300, &call_id, 2);
    let fresh = |r: &serde_json::Value| r["expires_in"].as_u64().is_some_and(|e| e > 120);
    assert!(bindings(&nc.status(), "301").iter().all(|b| fresh(b)));
    let gone = wait_peer_gone(&[na, nb], &c_id, cut, bound(SILENT_DEATH_TARGET));
    eprintln!("A and B saw C gone {} ms after the cut", gone.as_millis());
    wait_for("C to see no peer", bound(SILENT_DEATH_TARGET), || {
        connected_peers(&nc.status()).is_empty()
    });
    hold(
        "the partition",
        partition().saturating_sub(cut.elapsed()),
        || {
            for s in statuses(&[na, nb]) {
                assert!(
                    !connected_peers(&s).contains(&c_id),
                    "C connected while cut off: {s}"
                );
            }
            assert!(
                connected_peers(&nc.status()).is_empty(),
                "C sees peers while cut off"
            );
        },
    );

    lab.link_up(c);
    let healed = Instant::now();
    wait_route(na, "301", nc, c.mesh_sip(), bound(HEAL_TARGET), fresh);
    a.caller("uac_proxy")
        .service("301")
        .pause_ms(200)
        .run()
        .expect_success(1);
    c_phone.wait().expect_success(1);
    let took = healed.elapsed();
    eprintln!(
        "after the heal the call got through in {} ms (target {} ms)",
        took.as_millis(),
        HEAL_TARGET.as_millis()
    );
    assert!(took <= bound(HEAL_TARGET), "call after heal took {took:?}");

    // No stale binding anywhere: A and B route 301 only to C with the refreshed lifetime, and
    // hold no binding of their own for it; C holds exactly one; C still routes 101 to A.
    wait_route(nb, "301", nc, c.mesh_sip(), ROUTE_WAIT, fresh);
    for (n, s) in [na, nb].iter().zip(statuses(&[na, nb])) {
        let routes = live_routes(&s, "301");
        assert!(
            routes.len() == 1 && routes[0]["peer_id"] == c_id.as_str() && fresh(routes[0]),
            "{} after the heal: {s}",
            n.label
        );
        assert!(
            bindings(&s, "301").is_empty(),
            "{} binds 301 itself: {s}",
            n.label
        );
    }
    let s = nc.status();
    assert_eq!(
        bindings(&s, "301").len(),
        1,
        "C's bindings after the heal: {s}"
    );
    wait_route(nc, "101", na, a.mesh_sip(), ROUTE_WAIT, |_| true);
    nodes.iter().for_each(assert_mesh_addresses_only);
}
