//! Routing across appliances, from one appliance's side: the overlay's routes arrive as
//! commands, and a scripted phone at a mesh address stands in for the other appliance.

use crate::support::{Answer, Net};
use fieldmesh_sip::message::{Message, print_uri};
use fieldmesh_sip::{Command, Config, Event, MeshSide, RemoteRoute};
use std::time::Duration;

const MESH_LOCAL: &str = "10.99.0.1:5060";

fn mesh_net(seed: u64) -> Net {
    let config = Config {
        mesh: Some(MeshSide {
            local: MESH_LOCAL.parse().expect("addr"),
            peer_timeout: Duration::from_secs(3),
            lookup_timeout: Duration::from_secs(2),
        }),
        ..Config::default()
    };
    Net::with_config(seed, config)
}

fn route_to(peer_addr: std::net::SocketAddr) -> RemoteRoute {
    RemoteRoute {
        peer: "12D3KooWpeerC".into(),
        node: "c".into(),
        sip: peer_addr,
    }
}

#[test]
fn a_call_for_an_extension_on_another_appliance_goes_there_marked_and_double_record_routed() {
    let mut net = mesh_net(50);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let appliance_c = net.phone("10.99.0.3:5060", Answer::After(Duration::from_millis(200)));
    net.command(Command::RemoteRoutes {
        aor: "303".into(),
        routes: vec![route_to(appliance_c)],
        known: true,
    });
    let invite = net.invite_text(alice, "303", "x1");
    assert_eq!(net.send_and_wait_final(alice, &invite), 200);
    let Some(Message::Request(at_c)) = net.phone_ref(appliance_c).received.first().cloned() else {
        panic!("nothing reached appliance C")
    };
    assert_eq!(print_uri(&at_c.uri), "sip:303@10.99.0.3:5060;fm=peer");
    let via = fieldmesh_sip::message::print(at_c.top_via());
    assert!(
        via.contains("10.99.0.1:5060"),
        "our Via is the mesh-side address: {via}"
    );
    let rr: Vec<&str> = at_c.header(&ezk_sip_types::Name::RECORD_ROUTE).collect();
    assert_eq!(
        rr,
        vec!["<sip:10.99.0.1:5060;lr>", "<sip:10.0.0.1:5060;lr>"],
        "mesh side on top (RFC 5658)"
    );
}

#[test]
fn a_silent_appliance_gives_the_caller_480_within_the_peer_timeout() {
    let mut net = mesh_net(51);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let gone = net.phone("10.99.0.3:5060", Answer::Silent);
    net.command(Command::RemoteRoutes {
        aor: "303".into(),
        routes: vec![route_to(gone)],
        known: true,
    });
    let invite = net.invite_text(alice, "303", "x2");
    net.send(alice, &invite);
    net.drive_for(Duration::from_millis(2900));
    assert_eq!(net.phone_ref(alice).codes(), vec![100]);
    net.drive_for(Duration::from_millis(200));
    assert_eq!(net.phone_ref(alice).codes(), vec![100, 480]);
}

#[test]
fn a_miss_asks_the_overlay_and_forwards_to_what_it_finds() {
    let mut net = mesh_net(52);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let appliance_c = net.phone("10.99.0.3:5060", Answer::Silent);
    let text = format!(
        "MESSAGE sip:303@fieldmesh SIP/2.0\r\nVia: SIP/2.0/UDP {alice};branch=z9hG4bKlk\r\nFrom: <sip:201@x>;tag=f\r\n\
         To: <sip:303@x>\r\nCall-ID: lookup1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    net.send(alice, &text);
    net.drive_for(Duration::from_millis(50));
    let Some(Event::Lookup { id, aor }) = net
        .events
        .iter()
        .find(|e| matches!(e, Event::Lookup { .. }))
    else {
        panic!("no lookup asked: {:?}", net.events)
    };
    assert_eq!(aor.0, "303");
    let id = *id;
    net.command(Command::LookupResult {
        id,
        routes: vec![route_to(appliance_c)],
    });
    net.drive_for(Duration::from_millis(50));
    assert_eq!(net.phone_ref(appliance_c).methods(), vec!["MESSAGE"]);
}

#[test]
fn a_lookup_that_finds_nothing_is_404_within_two_seconds() {
    let mut net = mesh_net(53);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let invite = net.invite_text(alice, "399", "x4");
    net.send(alice, &invite);
    net.drive_for(Duration::from_millis(1900));
    assert_eq!(net.phone_ref(alice).codes(), vec![100]);
    net.drive_for(Duration::from_millis(200));
    assert_eq!(net.phone_ref(alice).codes(), vec![100, 404]);
}

#[test]
fn a_request_relayed_by_another_appliance_is_never_sent_back_into_the_mesh() {
    let mut net = mesh_net(54);
    let b = net.phone("10.99.0.2:5060", Answer::Silent);
    let c = net.phone("10.99.0.3:5060", Answer::Silent);
    // A stale record says C serves 303; B relays a request for 303 to us.
    net.command(Command::RemoteRoutes {
        aor: "303".into(),
        routes: vec![route_to(c)],
        known: true,
    });
    let text = format!(
        "MESSAGE sip:303@10.99.0.1:5060;fm=peer SIP/2.0\r\nVia: SIP/2.0/UDP {b};branch=z9hG4bKrel\r\n\
         From: <sip:201@x>;tag=f\r\nTo: <sip:303@x>\r\nCall-ID: relayed\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 69\r\n\
         Content-Length: 0\r\n\r\n"
    );
    assert_eq!(net.send_and_wait_final(b, &text), 480);
    assert!(net.phone_ref(c).received.is_empty());
}

#[test]
fn local_and_remote_bindings_of_one_extension_are_forked_together() {
    let mut net = mesh_net(55);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let desk = net.phone("10.0.1.3:5080", Answer::RingForever);
    let c = net.phone("10.99.0.3:5060", Answer::After(Duration::from_millis(100)));
    net.register(desk, "303", "reg-desk", "300");
    net.command(Command::RemoteRoutes {
        aor: "303".into(),
        routes: vec![route_to(c)],
        known: true,
    });
    let invite = net.invite_text(alice, "303", "x6");
    assert_eq!(net.send_and_wait_final(alice, &invite), 200);
    assert_eq!(
        net.phone_ref(desk).methods(),
        vec!["INVITE", "CANCEL", "ACK"]
    );
}

#[test]
fn a_phone_that_moved_to_another_appliance_loses_its_binding_here() {
    let mut net = mesh_net(56);
    let phone = net.phone("10.0.1.3:5080", Answer::Silent);
    net.register(phone, "303", "roam-call", "300");
    net.events.clear();
    net.command(Command::PhonesMoved {
        aor: "303".into(),
        call_ids: vec!["roam-call".into()],
        instances: vec![],
    });
    assert!(net.endpoint.bindings(net.now).is_empty());
    assert!(net.endpoint.storage().bindings.is_empty());
    assert!(matches!(
        net.events.as_slice(),
        [Event::BindingsChanged { .. }]
    ));
}

#[test]
fn an_in_dialog_request_towards_another_appliance_leaves_from_our_mesh_address() {
    let mut net = mesh_net(57);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let appliance_c = net.phone("10.99.0.3:5060", Answer::Silent);
    net.command(Command::RemoteRoutes {
        aor: "303".into(),
        routes: vec![route_to(appliance_c)],
        known: true,
    });
    // Alice's BYE follows the route set the INVITE recorded: us (both sides), then C.
    let bye = format!(
        "BYE sip:303@10.42.0.2:5090 SIP/2.0\r\nVia: SIP/2.0/UDP {alice};branch=z9hG4bKbye2\r\n\
         Route: <sip:10.0.0.1:5060;lr>, <sip:10.99.0.1:5060;lr>, <sip:10.99.0.3:5060;lr>\r\n\
         From: <sip:201@x>;tag=a\r\nTo: <sip:303@x>;tag=c\r\nCall-ID: dlg-mesh\r\nCSeq: 2 BYE\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    net.send(alice, &bye);
    net.drive_for(Duration::from_millis(50));
    let Some(Message::Request(at_c)) = net.phone_ref(appliance_c).received.first().cloned() else {
        panic!("the BYE did not reach appliance C")
    };
    let via = fieldmesh_sip::message::print(at_c.top_via());
    assert!(
        via.contains("10.99.0.1:5060"),
        "mesh-side Via, not the shared phone-side one: {via}"
    );
    let routes: Vec<String> = at_c
        .routes()
        .iter()
        .map(fieldmesh_sip::message::print)
        .collect();
    assert_eq!(
        routes,
        vec!["<sip:10.99.0.3:5060;lr>".to_string()],
        "our two entries popped"
    );
}
