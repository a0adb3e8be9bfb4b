//! Issue 8, free extensions across a split: two appliances that have not met each hand out
//! their first free number, the same one, and a phone takes it on each side. When they meet,
//! both views list the conflict, and both phones are told by a text that one of them should
//! take a new extension.

use fieldmesh_tests::lab::{Lab, wait_neighbours};
use fieldmesh_tests::node::NodeOptions;
use fieldmesh_tests::wait::wait_until_why;
use std::time::{Duration, Instant};

#[test]
fn web_an_extension_handed_out_on_both_sides_of_a_split_is_shown_and_told_to_both_phones() {
    let lab = Lab::new("web-conflict");
    let a = lab.appliance("a");
    let c = lab.appliance("c");
    let node_a = lab.start_node(&a, NodeOptions::default());
    let c_state = tempfile::tempdir().expect("temp dir");
    let c_opts = |extra: &[&str]| NodeOptions {
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        state_dir: Some(c_state.path().join("state")),
        ..NodeOptions::default()
    };
    // C serves its phones alone: A and C do not know each other yet.
    let mut node_c = lab.start_node(&c, c_opts(&["--no-mesh"]));

    let allocate = |node: &fieldmesh_tests::node::Node, name: &str| {
        let reply = node.post(
            "/api/extensions",
            &format!("{{\"display_name\": \"{name}\"}}"),
        );
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()["extension"]
            .as_str()
            .expect("extension")
            .to_string()
    };
    let on_a = allocate(&node_a, "Ana");
    let on_c = allocate(&node_c, "Caio");
    assert_eq!(
        on_a, on_c,
        "alone, each appliance owns every number: the same first one"
    );
    let ext = on_a;
    let hold = Duration::from_secs(90);
    let phone_a = a.phone("uas_conflict_notice").timeout(hold).spawn();
    a.register(&ext, phone_a.port(), 300);
    let phone_c = c.phone("uas_conflict_notice").timeout(hold).spawn();
    c.register(&ext, phone_c.port(), 300);

    // C joins the overlay (same state: its allocation and its phone's binding are kept).
    node_c.kill9();
    drop(node_c);
    let node_c = lab.start_node(&c, c_opts(&[]));
    wait_neighbours(&[&node_a, &node_c], Duration::from_secs(10));
    let met = Instant::now();

    for node in [&node_a, &node_c] {
        let conflicts = wait_until_why(
            &format!("{}'s network view to list the conflict", node.label),
            Duration::from_secs(10),
            || {
                let network = node.get("/api/network").json();
                let conflicts = network["conflicts"].clone();
                let listed = conflicts.as_array().is_some_and(|list| {
                    list.iter().any(|x| {
                        x["extension"] == ext.as_str()
                            && x["nodes"].as_array().map(Vec::len) == Some(2)
                    })
                });
                if listed {
                    Ok(conflicts)
                } else {
                    Err(network.to_string())
                }
            },
        );
        eprintln!("{} lists {conflicts}", node.label);
        let page = node.get("/directory");
        assert!(
            page.body.contains("was handed out on") && page.body.contains(&ext),
            "{} directory page shows no conflict banner",
            node.label
        );
    }

    // Both phones are told, through the overlay for the one on the other side.
    for (name, phone) in [("a", phone_a), ("c", phone_c)] {
        let got = phone.wait();
        got.expect_success(1);
        let message = got
            .received()
            .into_iter()
            .find(|m| m.starts_with("MESSAGE "))
            .expect("a MESSAGE");
        eprintln!(
            "the phone on {name} was told {:?} after the appliances met",
            met.elapsed()
        );
        assert!(message.contains("handed out twice"), "{message}");
    }
}
