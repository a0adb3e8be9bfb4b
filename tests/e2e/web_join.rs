//! Issue 8, the browser story: a phone's browser (headless Chromium at 360 px) opens the join
//! page, asks for a free extension and gets a QR code; the code, read back from a screenshot as
//! a camera would, is all linphonec is given (Linphone's remote provisioning: `config-uri`), and
//! it registers with the name typed on the page. The directory lists it; a coordinator's laptop
//! (1280 px) sends it a text from the page, and the phone shows it. Screenshots are kept in
//! `target/test-artefacts/web/`.

use fieldmesh_tests::audio;
use fieldmesh_tests::browser::{BROWSER_TIMEOUT, Browser};
use fieldmesh_tests::linphone::{LinphoneOptions, Linphonec};
use fieldmesh_tests::node::{Node, artefacts};
use fieldmesh_tests::qr;
use fieldmesh_tests::wait::wait_until_why;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

const ANA_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 21));
const TEXT: &str = "water at the school at 14:00";

/// The page is no wider than the screen: nothing to scroll sideways on a phone.
fn assert_fits(browser: &mut Browser, what: &str) {
    let widths = browser.eval("[document.documentElement.scrollWidth, window.innerWidth]");
    let (page, screen) = (widths[0].as_u64(), widths[1].as_u64());
    assert!(
        page.is_some() && page <= screen,
        "{what}: the page is {page:?} px wide on a {screen:?} px screen"
    );
}

fn text_of(browser: &mut Browser, id: &str) -> String {
    browser
        .eval(&format!("document.getElementById('{id}').textContent"))
        .as_str()
        .unwrap_or_else(|| panic!("no #{id} on {}", browser.url()))
        .trim()
        .to_string()
}

fn shot(browser: &mut Browser, dir: &Path, name: &str) {
    let path = dir.join(name);
    browser.screenshot(&path);
    eprintln!("screenshot {}", path.display());
}

#[test]
fn web_a_phone_joins_from_the_qr_code_is_listed_and_gets_a_text_typed_on_the_page() {
    let node = Node::start();
    let base = format!("http://{}", node.api);
    let shots = artefacts("web");
    let mut browser = Browser::start();

    // The join page on a phone: ask for a free extension under a name.
    browser.set_width(360);
    browser.navigate(&format!("{base}/join"));
    assert_fits(&mut browser, "join page at 360 px");
    shot(&mut browser, &shots, "join-360.png");
    browser.eval(
        "document.getElementById('name').value = 'Ana Lima';
         document.querySelector('#allocate button').click(); true",
    );
    browser.wait_for(
        "location.pathname.startsWith('/join/') && document.readyState == 'complete' \
         && document.getElementById('qr') !== null",
        BROWSER_TIMEOUT,
    );
    let extension = text_of(&mut browser, "extension");
    let shown_url = text_of(&mut browser, "provisioning-url");
    assert!(
        extension.len() >= 2 && extension.bytes().all(|b| b.is_ascii_digit()),
        "{extension:?}"
    );
    assert_fits(&mut browser, "extension page at 360 px");
    let qr_png = shots.join("extension-360.png");
    shot(&mut browser, &shots, "extension-360.png");

    // What a camera gets from the screen: exactly the provisioning URL the page names.
    let codes = qr::decode_png(&qr_png);
    assert_eq!(codes, vec![shown_url.clone()], "QR codes in the screenshot");
    eprintln!("extension {extension}, QR code: {}", codes[0]);

    // linphonec knows nothing but that URL; it fetches its account and registers.
    let media = tempfile::tempdir().expect("temp dir");
    let tone = media.path().join("tone.wav");
    audio::write_sine(&tone, 48_000, 440.0, 5.0, 0.5);
    let mut phone = Linphonec::start(LinphoneOptions::provisioned(
        &extension, ANA_IP, node.sip, &codes[0], &tone,
    ));
    let registered = phone.wait_registered();
    eprintln!("linphonec provisioned and registered {registered:?} after start");
    let binding = wait_until_why(
        "the provisioned phone's binding",
        Duration::from_secs(5),
        || {
            let status = node.status();
            status["bindings"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|b| b["aor"] == extension.as_str())
                .cloned()
                .ok_or_else(|| status["bindings"].to_string())
        },
    );
    assert_eq!(
        binding["display_name"], "Ana Lima",
        "the name typed on the page reached the phone"
    );

    // The directory lists it, with its name.
    browser.navigate(&format!("{base}/directory"));
    let row = format!("document.querySelector('#directory tr[data-extension=\"{extension}\"]')");
    browser.wait_for(
        &format!("{row} !== null && {row}.textContent.includes('Ana Lima')"),
        BROWSER_TIMEOUT,
    );
    assert_fits(&mut browser, "directory at 360 px");
    shot(&mut browser, &shots, "directory-360.png");

    // The coordinator's laptop sends it a text from the page.
    browser.set_width(1280);
    browser.navigate(&format!("{base}/messages"));
    browser.eval(&format!(
        "document.getElementById('to').value = '{extension}';
         document.getElementById('from_name').value = 'HQ';
         document.getElementById('text').value = '{TEXT}';
         document.querySelector('#send button').click(); true"
    ));
    browser.wait_for(
        "document.getElementById('outcome') !== null && document.readyState == 'complete'",
        BROWSER_TIMEOUT,
    );
    let outcome = browser.eval("document.getElementById('outcome').dataset.outcome");
    shot(&mut browser, &shots, "messages-1280.png");
    assert_eq!(outcome, "delivered", "{}", text_of(&mut browser, "outcome"));
    let line = phone.wait_log(TEXT, Duration::from_secs(10));
    eprintln!("the phone shows: {}", line.trim());

    // The network view renders this appliance on a phone too.
    browser.set_width(360);
    browser.navigate(&format!("{base}/network"));
    assert_fits(&mut browser, "network view at 360 px");
    shot(&mut browser, &shots, "network-360.png");
}
