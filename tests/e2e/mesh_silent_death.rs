//! Issue 4, story 4: silent death. C's link goes down and then C is killed with SIGKILL. Taking
//! the link down first keeps the kernel's TCP resets from reaching A and B, so only the
//! overlay's liveness check can notice. Calls to C's phones get 480 within 15 s. C restarts with
//! the same state dir and link: it keeps its overlay identity, and its phones can be reached
//! again without registering anew.

use fieldmesh_tests::lab::{
    Lab, ROUTE_WAIT, SILENT_DEATH_TARGET, UNANSWERED_480_TARGET, assert_mesh_addresses_only, bound,
    check_neighbour_times, wait_neighbours, wait_peer_gone, wait_route,
};
use fieldmesh_tests::node::{NO_VOICEMAIL, NodeOptions};
use std::time::{Duration, Instant};

#[test]
fn calls_to_a_silently_dead_appliance_get_480_and_after_restart_its_phones_answer_again() {
    let lab = Lab::new("mesh-death");
    let apps = ["a", "b", "c"].map(|n| lab.appliance(n));
    let [a, _b, c] = &apps;
    let mut nodes = apps.each_ref().map(|x| {
        lab.start_node(
            x,
            NodeOptions {
                config_toml: Some(NO_VOICEMAIL.into()),
                ..NodeOptions::default()
            },
        )
    });
    {
        let [na, nb, nc] = &nodes;
        check_neighbour_times(&wait_neighbours(&[na, nb, nc], Duration::from_secs(10)));
    }
    let c_phone = c
        .phone("uas_proxy")
        .timeout(Duration::from_secs(150))
        .spawn();
    c.register("301", c_phone.port(), 300);
    wait_route(
        &nodes[0],
        "301",
        &nodes[2],
        c.mesh_sip(),
        ROUTE_WAIT,
        |_| true,
    );
    let c_id = nodes[2].peer_id();

    lab.link_down(c);
    let died = Instant::now();
    nodes[2].kill9();
    let [na, nb, _] = &nodes;
    let seen = wait_peer_gone(&[na, nb], &c_id, died, bound(SILENT_DEATH_TARGET));
    eprintln!(
        "silent death seen after {} ms (target {} ms)",
        seen.as_millis(),
        SILENT_DEATH_TARGET.as_millis()
    );
    let call = a
        .caller("invite_unavailable")
        .service("301")
        .recv_timeout(bound(UNANSWERED_480_TARGET))
        .run();
    call.expect_success(1);
    let answered = died.elapsed();
    eprintln!(
        "call to a phone of the dead appliance: 480 in {} ms, {} ms after the death (target {} ms)",
        call.elapsed.as_millis(),
        answered.as_millis(),
        SILENT_DEATH_TARGET.as_millis()
    );
    assert!(
        answered <= bound(SILENT_DEATH_TARGET),
        "480 only {answered:?} after the death"
    );

    lab.link_up(c);
    let restarted = Instant::now();
    nodes[2].restart();
    assert_eq!(
        nodes[2].peer_id(),
        c_id,
        "C's overlay identity changed across the restart"
    );
    // A still holds C's record, suspended since C went silent: wait until C is back in
    // A's overlay and the record routes again.
    wait_route(&nodes[0], "301", &nodes[2], c.mesh_sip(), ROUTE_WAIT, |r| {
        r["reachable"] == true
    });
    a.caller("uac_proxy")
        .service("301")
        .pause_ms(200)
        .run()
        .expect_success(1);
    c_phone.wait().expect_success(1);
    eprintln!(
        "after the restart C's phone answered in {} ms, without registering again",
        restarted.elapsed().as_millis()
    );
    nodes.iter().for_each(assert_mesh_addresses_only);
}
