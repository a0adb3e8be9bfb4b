//! Issue 8, the views through the JSON API with three appliances in the lab: A's directory
//! lists the phones of B and C (asked over the overlay, nothing collected centrally), the
//! network view lists all three; 50 concurrent "free extension" requests spread over the three
//! give 50 distinct extensions; a frozen appliance cannot make the view hang and a stopped one
//! is marked unreachable. Bad input gets a 4xx that names the field, the mesh side cannot
//! change anything, and a client that floods the API is slowed down.

use fieldmesh_tests::http;
use fieldmesh_tests::lab::{Appliance, Lab, bound, in_netns, wait_neighbours};
use fieldmesh_tests::node::{Node, NodeOptions};
use fieldmesh_tests::wait::wait_until_why;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The issue's bound for a merged view.
const VIEW_TARGET: Duration = Duration::from_secs(2);
/// The issue's bound for marking a stopped appliance unreachable.
const UNREACHABLE_WITHIN: Duration = Duration::from_secs(15);
/// A's API also listens here on every address, its mesh side included.
const OPEN_API_PORT: u16 = 8081;

/// The appliance named `node` in a `/api/network` answer.
fn appliance<'a>(network: &'a Value, node: &str) -> Option<&'a Value> {
    network["appliances"]
        .as_array()?
        .iter()
        .find(|a| a["node"] == node)
}

/// The directory entry of `extension`.
fn entry<'a>(directory: &'a Value, extension: &str) -> Option<&'a Value> {
    directory["phones"]
        .as_array()?
        .iter()
        .find(|p| p["extension"] == extension)
}

fn register_phones(b: &Appliance, c: &Appliance) {
    b.register_named("2201", "Bea Costa", 5070, 300);
    c.register_named("2301", "Caio Dias", 5070, 300);
}

#[test]
fn web_views_merge_every_appliance_allocate_without_duplicates_and_name_the_silent() {
    let lab = Lab::new("web-views");
    let apps = ["a", "b", "c"].map(|n| lab.appliance(n));
    let [a, b, c] = &apps;
    let open_api = NodeOptions {
        extra_args: vec!["--api-listen".into(), format!("0.0.0.0:{OPEN_API_PORT}")],
        ..NodeOptions::default()
    };
    let mut nodes = [
        lab.start_node(a, open_api),
        lab.start_node(b, NodeOptions::default()),
        lab.start_node(c, NodeOptions::default()),
    ];
    wait_neighbours(&nodes.each_ref(), Duration::from_secs(10));

    // The directory on A lists the phones registered on B and C, with their names.
    register_phones(b, c);
    let registered = Instant::now();
    let directory = wait_until_why(
        "A's directory to list 2201 (on b) and 2301 (on c)",
        bound(VIEW_TARGET),
        || {
            let d = nodes[0].get("/api/directory").json();
            let on = |ext: &str, node: &str| {
                entry(&d, ext).is_some_and(|e| e["node"] == node && e["reachable"] == true)
            };
            if on("2201", "b") && on("2301", "c") {
                Ok(d)
            } else {
                Err(d.to_string())
            }
        },
    );
    eprintln!(
        "A's directory listed B's and C's phones {:?} after they registered (target {VIEW_TARGET:?}); \
         the answer took {} ms",
        registered.elapsed(),
        directory["took_ms"]
    );
    let bea = entry(&directory, "2201").expect("2201");
    assert_eq!(bea["display_name"], "Bea Costa");
    assert!(bea["registered_for_s"].as_u64().is_some(), "{bea}");
    assert_eq!(
        entry(&directory, "2301").expect("2301")["display_name"],
        "Caio Dias"
    );
    assert_eq!(directory["unreachable"], serde_json::json!([]));

    // The same directory as phone books at stable URLs.
    let vcf = nodes[0].get("/phonebook.vcf");
    assert_eq!(vcf.status, 200);
    assert!(
        vcf.body.contains("FN:Bea Costa\r\n") && vcf.body.contains("TEL;TYPE=work,voice:2201\r\n"),
        "{}",
        vcf.body
    );
    assert_eq!(vcf.body.matches("BEGIN:VCARD").count(), 2, "{}", vcf.body);
    let xml = nodes[0].get("/phonebook.xml");
    assert!(
        xml.body
            .contains("<Name>Caio Dias</Name><Telephone>2301</Telephone>"),
        "{}",
        xml.body
    );

    // The network view lists all three, each with its own account.
    let network = nodes[0].get("/api/network").json();
    for (name, phones) in [("a", 0), ("b", 1), ("c", 1)] {
        let x = appliance(&network, name).unwrap_or_else(|| panic!("{name} in {network}"));
        assert_eq!(x["reachable"], true, "{x}");
        assert_eq!(x["here"], name == "a", "{x}");
        let report = &x["report"];
        assert_eq!(
            report["phones"].as_array().map(Vec::len),
            Some(phones),
            "{x}"
        );
        assert_eq!(
            report["neighbours"].as_array().map(Vec::len),
            Some(2),
            "{x}"
        );
        assert!(report["uptime_s"].as_u64().is_some() && report["version"].is_string());
    }
    let took = network["took_ms"].as_u64().expect("took_ms");
    eprintln!("network view: 3 appliances in {took} ms");
    assert!(took < VIEW_TARGET.as_millis() as u64, "{network}");

    // 50 concurrent requests for a free extension, spread over the three appliances.
    let t = Instant::now();
    let answers: Vec<(String, http::Reply)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let node = &nodes[i % 3];
                s.spawn(move || {
                    let body = format!("{{\"display_name\": \"Person {i}\"}}");
                    (node.label.clone(), node.post("/api/extensions", &body))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("allocation thread"))
            .collect()
    });
    let mut extensions = BTreeSet::new();
    for (node, reply) in &answers {
        assert_eq!(reply.status, 201, "{node}: {}", reply.body);
        let json = reply.json();
        let ext = json["extension"].as_str().expect("extension").to_string();
        let n: u32 = ext.parse().expect("digits");
        assert!((2000..=7999).contains(&n), "{ext} outside api.extensions");
        assert!(
            json["provisioning_url"]
                .as_str()
                .is_some_and(|u| u.ends_with(&format!("/provisioning/{ext}.xml"))),
            "{json}"
        );
        extensions.insert(ext);
    }
    eprintln!(
        "50 concurrent allocations on 3 appliances in {:?}: {} distinct",
        t.elapsed(),
        extensions.len()
    );
    assert_eq!(extensions.len(), 50, "duplicates among {answers:?}");
    assert!(!extensions.contains("2201") && !extensions.contains("2301"));
    let conflicts = nodes[1].get("/api/network").json()["conflicts"].clone();
    assert_eq!(
        conflicts,
        serde_json::json!([]),
        "no conflict without a partition"
    );

    check_bad_input(&nodes[0]);
    check_mesh_side_is_read_only(a, b);

    // C frozen (SIGSTOP): A's view does not wait for it beyond its per-peer deadline.
    let c_pid = nix::unistd::Pid::from_raw(nodes[2].pid() as i32);
    nix::sys::signal::kill(c_pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP c");
    let t = Instant::now();
    let network = nodes[0].get("/api/network").json();
    let frozen_took = t.elapsed();
    nix::sys::signal::kill(c_pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT c");
    let frozen = appliance(&network, "c").expect("c is still listed");
    eprintln!(
        "with c frozen the network view answered in {frozen_took:?}: {}",
        frozen["error"]
    );
    assert_eq!(frozen["reachable"], false, "{frozen}");
    assert_eq!(
        appliance(&network, "b").map(|b| &b["reachable"]),
        Some(&Value::Bool(true))
    );
    assert!(frozen_took < bound(VIEW_TARGET), "{frozen_took:?}");

    // C stopped: marked unreachable, and its phone is still shown from the overlay's records.
    nodes[2].kill9();
    let stopped = Instant::now();
    let network = wait_until_why(
        "A's network view to mark c unreachable",
        UNREACHABLE_WITHIN,
        || {
            let n = nodes[0].get("/api/network").json();
            match appliance(&n, "c") {
                Some(x) if x["reachable"] == false => Ok(n),
                other => Err(format!("{other:?}")),
            }
        },
    );
    eprintln!(
        "c marked unreachable {:?} after kill -9: {}",
        stopped.elapsed(),
        appliance(&network, "c").expect("c")["error"]
    );
    let directory = nodes[0].get("/api/directory").json();
    assert!(
        directory["unreachable"]
            .as_array()
            .is_some_and(|u| u.iter().any(|n| n == "c")),
        "{directory}"
    );
    if let Some(caio) = entry(&directory, "2301") {
        assert_eq!(caio["reachable"], false, "{caio}");
    }
    assert_eq!(entry(&directory, "2201").expect("2201")["reachable"], true);

    check_rate_limit(a, b);
}

/// Every bad field gets a 400 that names it; other bad requests their own 4xx.
fn check_bad_input(node: &Node) {
    let cases = [
        (
            "/api/messages",
            r#"{"to": "2a", "text": "hi"}"#,
            400,
            "to: must be 2-8 digits",
        ),
        (
            "/api/messages",
            r#"{"to": "2201", "text": ""}"#,
            400,
            "text: must be",
        ),
        (
            "/api/messages",
            r#"{"to": 2201, "text": "hi"}"#,
            400,
            "to: must be a string",
        ),
        (
            "/api/extensions",
            r#"{"display_name": 5}"#,
            400,
            "display_name: must be a string",
        ),
        (
            "/api/extensions",
            "\"a\\nb\"",
            400,
            "body: expected a JSON object",
        ),
        (
            "/api/extensions",
            r#"{"display_name": "line\nbreak"}"#,
            400,
            "display_name: at most 40 characters",
        ),
        ("/api/extensions", "{nope", 400, "body: expected"),
    ];
    for (path, body, status, says) in cases {
        let reply = node.post(path, body);
        assert_eq!(reply.status, status, "POST {path} {body}: {}", reply.body);
        let error = reply.json()["error"].as_str().unwrap_or("").to_string();
        assert!(
            error.contains(says),
            "POST {path} {body}: {error:?}, wanted {says:?}"
        );
    }
    let big = format!("{{\"to\": \"2201\", \"text\": \"{}\"}}", "x".repeat(20_000));
    assert_eq!(node.post("/api/messages", &big).status, 413, "a 20 kB body");
    let missing = node.get("/api/nothing-here");
    assert_eq!(missing.status, 404);
    assert!(
        missing.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("/api/nothing-here"))
    );
    let bad_path = node.get("/provisioning/12x.xml");
    assert_eq!(bad_path.status, 400, "{}", bad_path.body);
    // A text for an extension no phone has now: kept for it, and said so.
    let reply = node.post("/api/messages", r#"{"to": "9999", "text": "anyone?"}"#);
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.json()["outcome"], "stored", "{}", reply.body);
    eprintln!(
        "bad input: {} cases answered with the field named",
        cases.len()
    );
}

/// A's API listens on its mesh side too: reads are served there, changes refused.
fn check_mesh_side_is_read_only(a: &Appliance, b: &Appliance) {
    let api = SocketAddr::new(a.mesh_ip().into(), OPEN_API_PORT);
    let (read, write) = in_netns(&b.netns, || {
        (
            http::get(api, "/api/join").expect("GET over the mesh"),
            http::post(api, "/api/extensions", "{}").expect("POST over the mesh"),
        )
    });
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(write.status, 403, "{}", write.body);
    assert!(write.body.contains("api.mesh_writes"), "{}", write.body);
}

/// A client on the mesh side that keeps asking is told to wait (429 + Retry-After) before the
/// views are recomputed for it again and again (loopback, the appliance itself, is not limited).
fn check_rate_limit(a: &Appliance, b: &Appliance) {
    let api = SocketAddr::new(a.mesh_ip().into(), OPEN_API_PORT);
    let statuses = in_netns(&b.netns, || {
        let mut statuses = Vec::new();
        for _ in 0..100 {
            let reply = http::get(api, "/api/join").expect("GET over the mesh");
            statuses.push(reply.status);
            if reply.status == 429 {
                let error = reply.json()["error"].as_str().unwrap_or("").to_string();
                assert!(error.contains("too many requests"), "{error}");
                break;
            }
        }
        statuses
    });
    eprintln!(
        "rate limit: {} requests from b answered before the first 429",
        statuses.len() - 1
    );
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}
