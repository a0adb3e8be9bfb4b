//! Joining: the settings a phone needs, a free extension on request, Linphone's remote
//! provisioning XML and the QR code that points a softphone at it.
//!
//! Free extensions are split between appliances by rendezvous hashing (HRW): number `n`
//! belongs to the appliance whose `hash(peer id, n)` is highest among the appliances it
//! knows. Two appliances that know each other can never both own `n`, whatever else each
//! knows, so concurrent requests on several appliances cannot hand out the same number
//! without any coordination round. Only a partition (A and B not knowing each other) makes a
//! duplicate possible; the reports then carry both allocations and the views show the
//! conflict once the halves meet.

use std::collections::HashSet;
use std::fmt::Write as _;

/// The extension this appliance hands out next: the lowest number in `range` that it owns
/// among `me` and `others` (peer ids) and that is not in `used`.
pub(crate) fn pick(
    range: (u32, u32),
    me: &str,
    others: &[String],
    used: &HashSet<String>,
) -> Option<String> {
    (range.0..=range.1).map(|n| n.to_string()).find(|n| {
        !used.contains(n) && {
            let mine = weight(me, n);
            others.iter().all(|o| o == me || weight(o, n) < mine)
        }
    })
}

/// FNV-1a (64 bit) of `peer/number`, then murmur3's finaliser: stable across builds and
/// machines (every appliance must compute the same weights). FNV alone leaves the weights of
/// peers that differ in one byte ordered by the number's last digits, so ownership came in
/// runs; the finaliser spreads every input bit over the whole word.
fn weight(peer: &str, number: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in peer
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(number.bytes())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// An extension as a person types it: 2–8 digits.
pub(crate) fn valid_extension(s: &str) -> bool {
    (2..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// A display name: at most 40 characters, no control characters.
pub(crate) fn valid_name(s: &str) -> bool {
    s.chars().count() <= 40 && !s.chars().any(char::is_control)
}

/// Where phones reach this appliance, as the browser did: the host of the request (the AP
/// address on the Pi), with the SIP port.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Settings {
    /// Domain and outbound proxy: the same address.
    pub(crate) server: String,
    pub(crate) port: u16,
    pub(crate) transport: &'static str,
    /// The HTTP base the page was reached on (for the provisioning URL).
    #[serde(skip)]
    pub(crate) base: String,
}

impl Settings {
    pub(crate) fn provisioning_url(&self, extension: &str) -> String {
        format!("{}/provisioning/{extension}.xml", self.base)
    }
}

/// Linphone's remote provisioning (lpconfig XML): one account for `extension`, no password
/// (the appliance does not authenticate its phones), registering every 300 s.
pub(crate) fn provisioning_xml(settings: &Settings, extension: &str, name: &str) -> String {
    let identity = if name.is_empty() {
        format!("sip:{extension}@{}", settings.server)
    } else {
        format!(
            "\"{}\" <sip:{extension}@{}>",
            name.replace('"', ""),
            settings.server
        )
    };
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <config xmlns=\"http://www.linphone.org/xsds/lpconfig.xsd\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xsi:schemaLocation=\"http://www.linphone.org/xsds/lpconfig.xsd lpconfig.xsd\">\n",
    );
    let entry = |xml: &mut String, name: &str, value: &str| {
        let _ = writeln!(
            xml,
            "    <entry name=\"{name}\" overwrite=\"true\">{}</entry>",
            escape(value)
        );
    };
    xml.push_str("  <section name=\"proxy_0\">\n");
    entry(
        &mut xml,
        "reg_proxy",
        &format!("<sip:{}:{};transport=udp>", settings.server, settings.port),
    );
    entry(&mut xml, "reg_identity", &identity);
    entry(&mut xml, "reg_expires", "300");
    entry(&mut xml, "reg_sendregister", "1");
    entry(&mut xml, "publish", "0");
    xml.push_str("  </section>\n");
    xml.push_str("  <section name=\"sip\">\n");
    entry(&mut xml, "default_proxy", "0");
    xml.push_str("  </section>\n</config>\n");
    xml
}

/// The QR code of `text` as an SVG element, large enough for a phone camera at arm's length.
pub(crate) fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(240, 240)
            .quiet_zone(true)
            .build(),
    )
}

/// Escapes text for HTML and XML element content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("12D3KooPeer{i}")).collect()
    }

    #[test]
    fn appliances_that_know_each_other_never_pick_the_same_number() {
        let all = peers(5);
        let strangers = (0..4)
            .map(|i| format!("12D3KooStranger{i}"))
            .collect::<Vec<_>>();
        let mut taken: HashSet<String> = HashSet::new();
        let mut used: Vec<HashSet<String>> = vec![HashSet::new(); all.len()];
        // Each appliance picks 40 numbers on its own, seeing only its own allocations; they
        // all know each other, but each also knows a different set of far appliances (which
        // hand out nothing here): the picks still never collide.
        for round in 0..40 {
            for (i, me) in all.iter().enumerate() {
                let mut known = all.clone();
                known.extend(strangers.iter().skip((round + i) % 4).cloned());
                let n = pick((2000, 2999), me, &known, &used[i]).expect("a free number");
                assert!(taken.insert(n.clone()), "{n} picked twice");
                used[i].insert(n);
            }
        }
    }

    #[test]
    fn appliances_apart_may_collide_which_is_why_conflicts_are_shown() {
        // A and B partitioned: each knows only itself, so each owns every number.
        let (a, b) = ("12D3KooA".to_string(), "12D3KooB".to_string());
        let none = HashSet::new();
        assert_eq!(
            pick((2000, 2999), &a, &[], &none),
            pick((2000, 2999), &b, &[], &none)
        );
        // Once they know each other, the same number has one owner.
        let both = [a.clone(), b.clone()];
        let first_a = pick((2000, 2999), &a, &both, &none);
        let first_b = pick((2000, 2999), &b, &both, &none);
        assert_ne!(first_a, first_b);
    }

    #[test]
    fn a_used_number_is_skipped_and_a_full_range_says_so() {
        let me = "12D3KooMe".to_string();
        let first = pick((2000, 2009), &me, &[], &HashSet::new()).expect("free");
        assert_eq!(first, "2000", "alone, every number is ours");
        let used: HashSet<String> = ["2000".to_string(), "2001".to_string()].into();
        assert_eq!(pick((2000, 2009), &me, &[], &used).as_deref(), Some("2002"));
        let all: HashSet<String> = (2000..=2009).map(|n| n.to_string()).collect();
        assert_eq!(pick((2000, 2009), &me, &[], &all), None);
    }

    #[test]
    fn the_numbers_are_shared_out_roughly_evenly() {
        let all = peers(3);
        let mut counts = [0usize; 3];
        for n in 2000..3000u32 {
            let n = n.to_string();
            let owner = (0..3)
                .max_by_key(|i| weight(&all[*i], &n))
                .expect("three peers");
            counts[owner] += 1;
        }
        assert!(counts.iter().all(|c| (250..420).contains(c)), "{counts:?}");
    }

    #[test]
    fn fields_are_checked_and_the_xml_escapes_what_it_carries() {
        assert!(valid_extension("2001") && valid_extension("20") && !valid_extension("2"));
        assert!(!valid_extension("20a1") && !valid_extension("123456789"));
        assert!(valid_name("Ana Lima") && !valid_name("a\nb") && !valid_name(&"x".repeat(41)));
        let s = Settings {
            server: "10.42.0.1".into(),
            port: 5060,
            transport: "udp",
            base: "http://10.42.0.1".into(),
        };
        let xml = provisioning_xml(&s, "2001", "Ana <&>");
        assert!(
            xml.contains("&lt;sip:10.42.0.1:5060;transport=udp&gt;"),
            "{xml}"
        );
        assert!(
            xml.contains("&quot;Ana &lt;&amp;&gt;&quot; &lt;sip:2001@10.42.0.1&gt;"),
            "{xml}"
        );
        assert_eq!(
            s.provisioning_url("2001"),
            "http://10.42.0.1/provisioning/2001.xml"
        );
        assert!(qr_svg(&s.provisioning_url("2001")).is_some_and(|svg| svg.contains("<svg")));
    }
}
