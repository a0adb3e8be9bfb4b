//! `fieldmesh setup`: the boot-time oneshot that turns the operator's settings file on the FAT
//! partition (`/boot/firmware/fieldmesh.toml`) into validated configurations for hostapd,
//! dnsmasq, the mesh radio and the daemon, written into the runtime directory.
//!
//! It is lenient where the daemon is strict: a bad value is reported with its key and that key
//! falls back to its default, an unknown key is reported and ignored, and a file that is not
//! TOML at all gives every default. So an operator's typo never stops the appliance from
//! serving phones; the report goes to the journal and the console (stderr).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The phone-side address; the same on every appliance so a phone set up once works anywhere.
pub(crate) const AP_ADDRESS: &str = "10.42.0.1";
/// The phone-side DNS domain and the appliance's fixed name in it.
const DOMAIN: &str = "mesh";
const NAME: &str = "fieldmesh.mesh";
/// Where the daemon keeps its mesh neighbours as chrony peers (`sourcedir` of chrony's conf).
const CHRONY_SOURCES: &str = "/run/fieldmesh/chrony/mesh.sources";
const SIP_PORT: u16 = 5060;
/// The AP interface: the Pi's built-in radio.
const AP_INTERFACE: &str = "wlan0";

/// The operator's settings after checking; every field holds a usable value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) node_name: String,
    pub(crate) ssid: String,
    /// Empty: an open network.
    pub(crate) passphrase: String,
    /// ISO 3166 alpha-2, upper case, or "00" (the world regulatory domain).
    pub(crate) country: String,
    pub(crate) channel: u8,
    /// Interface name of the 802.11s radio; empty: none.
    pub(crate) mesh_radio: String,
    pub(crate) mesh_id: String,
    pub(crate) mesh_channel: u8,
    pub(crate) admin_password: String,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            node_name: String::new(),
            ssid: "fieldmesh".into(),
            passphrase: String::new(),
            country: "00".into(),
            channel: 6,
            mesh_radio: "wlan1".into(),
            mesh_id: "fieldmesh".into(),
            mesh_channel: 1,
            admin_password: String::new(),
        }
    }
}

/// Runs the subcommand; fails only if the configurations cannot be written.
pub(crate) fn run(settings: &Path, out: Option<&Path>) -> ExitCode {
    let out = out.map(Path::to_path_buf).unwrap_or_else(default_out_dir);
    let text = match std::fs::read_to_string(settings) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("fieldmesh setup: {}: cannot read ({e})", settings.display());
            None
        }
    };
    let (s, report) = parse(text.as_deref());
    for line in &report {
        eprintln!("fieldmesh setup: {}: {line}", settings.display());
    }
    match write_all(&s, &out) {
        Ok(()) => {
            eprintln!(
                "fieldmesh setup: wrote {} (ssid {:?}, {}, country {}, channel {}, mesh radio {})",
                out.display(),
                s.ssid,
                if s.passphrase.is_empty() {
                    "open"
                } else {
                    "WPA2"
                },
                s.country,
                s.channel,
                if s.mesh_radio.is_empty() {
                    "none"
                } else {
                    &s.mesh_radio
                },
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fieldmesh setup: {}: {e:#}", out.display());
            ExitCode::FAILURE
        }
    }
}

/// systemd's `$RUNTIME_DIRECTORY`, else `/run/fieldmesh`.
fn default_out_dir() -> PathBuf {
    std::env::var_os("RUNTIME_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/fieldmesh"))
}

/// Reads the settings text leniently: returns usable settings and one line per problem, each
/// naming the key and what was used instead. `None` (no file) gives the defaults silently.
pub(crate) fn parse(text: Option<&str>) -> (Settings, Vec<String>) {
    let mut s = Settings::default();
    let mut report = Vec::new();
    let Some(text) = text else {
        report.push("no settings file; using the defaults".into());
        warn_country(&s, &mut report);
        return (s, report);
    };
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let e: toml::de::Error = e;
            let line = e
                .span()
                .map(|r| text[..r.start.min(text.len())].lines().count().max(1));
            report.push(format!(
                "not valid TOML{}: {}; every key keeps its default",
                line.map(|l| format!(" (line {l})")).unwrap_or_default(),
                e.message().split_whitespace().collect::<Vec<_>>().join(" ")
            ));
            warn_country(&s, &mut report);
            return (s, report);
        }
    };
    for (section, value) in &table {
        let toml::Value::Table(keys) = value else {
            report.push(format!(
                "{section}: unknown key (expected a section such as [wifi]); ignored"
            ));
            continue;
        };
        for (key, value) in keys {
            let name = format!("{section}.{key}");
            if let Err(why) = set(&mut s, &name, value) {
                report.push(why);
            }
        }
    }
    // Checks that need more than one key, once every key is read.
    if !allowed_channel(&s.country, s.channel) {
        report.push(format!(
            "wifi.channel: {} is not allowed in country {}; using {}",
            s.channel,
            s.country,
            Settings::default().channel
        ));
        s.channel = Settings::default().channel;
    }
    if !allowed_channel(&s.country, s.mesh_channel) {
        report.push(format!(
            "mesh.channel: {} is not allowed in country {}; using {}",
            s.mesh_channel,
            s.country,
            Settings::default().mesh_channel
        ));
        s.mesh_channel = Settings::default().mesh_channel;
    }
    if !s.admin_password.is_empty() {
        report.push(
            "admin.password: set, but this version has no admin interface yet; not used".into(),
        );
    }
    warn_country(&s, &mut report);
    (s, report)
}

fn warn_country(s: &Settings, report: &mut Vec<String>) {
    if s.country == "00" {
        report.push(
            "WARNING wifi.country is \"00\" (the world regulatory domain): set the country the \
             kit is deployed in (for example country = \"KE\")"
                .into(),
        );
    }
}

/// Sets one key, or says why the value was refused (the key keeps its default).
fn set(s: &mut Settings, name: &str, v: &toml::Value) -> Result<(), String> {
    let default = Settings::default();
    match name {
        "node.name" => {
            let n = text(name, v)?;
            if !(n.is_empty() || is_hostname_label(&n)) {
                return Err(format!(
                    "{name}: {n:?} is not a name of 1 to 63 letters, digits and '-'; using the \
                     machine's hostname"
                ));
            }
            s.node_name = n;
        }
        "wifi.ssid" => {
            let ssid = text(name, v)?;
            if ssid.is_empty() || ssid.len() > 32 || ssid.chars().any(char::is_control) {
                return Err(format!(
                    "{name}: {ssid:?} must be 1 to 32 bytes without control characters; using \
                     {:?}",
                    default.ssid
                ));
            }
            s.ssid = ssid;
        }
        "wifi.passphrase" => {
            let p = text(name, v)?;
            let printable = p.chars().all(|c| c.is_ascii() && !c.is_ascii_control());
            if !p.is_empty() && (!(8..=63).contains(&p.len()) || !printable) {
                return Err(format!(
                    "{name}: WPA2 needs 8 to 63 printable ASCII characters, this one has {}{}; \
                     the network stays OPEN (the default)",
                    p.chars().count(),
                    if printable { "" } else { " or others" }
                ));
            }
            s.passphrase = p;
        }
        "wifi.country" => {
            let c = text(name, v)?.to_ascii_uppercase();
            let ok = c == "00" || (c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()));
            if !ok {
                return Err(format!(
                    "{name}: {c:?} is not a two-letter country code (ISO 3166, e.g. \"DE\") or \
                     \"00\"; using \"00\""
                ));
            }
            s.country = c;
        }
        "wifi.channel" => s.channel = channel(name, v, default.channel)?,
        "mesh.radio" => {
            let r = text(name, v)?;
            if !(r.is_empty() || is_ifname(&r)) || r == AP_INTERFACE {
                return Err(format!(
                    "{name}: {r:?} is not an interface name other than {AP_INTERFACE} (or \"\" \
                     for none); using {:?}",
                    default.mesh_radio
                ));
            }
            s.mesh_radio = r;
        }
        "mesh.id" => {
            let id = text(name, v)?;
            let ok = !id.is_empty()
                && id.len() <= 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(format!(
                    "{name}: {id:?} must be 1 to 32 letters, digits, '-', '_' or '.'; using {:?}",
                    default.mesh_id
                ));
            }
            s.mesh_id = id;
        }
        "mesh.channel" => s.mesh_channel = channel(name, v, default.mesh_channel)?,
        "admin.password" => s.admin_password = text(name, v)?,
        _ => return Err(format!("{name}: unknown key; ignored")),
    }
    Ok(())
}

fn text(name: &str, v: &toml::Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{name}: expected a string in quotes, got {v}; using the default"))
}

fn channel(name: &str, v: &toml::Value, default: u8) -> Result<u8, String> {
    v.as_integer()
        .and_then(|c| u8::try_from(c).ok())
        .filter(|c| (1..=14).contains(c))
        .ok_or_else(|| {
            format!("{name}: expected a 2.4 GHz channel 1 to 13, got {v}; using {default}")
        })
}

/// 2.4 GHz channels an access point or mesh point may start on. Channels 1–11 are allowed
/// everywhere; 12 and 13 in most countries, but not in the world domain (passive scan only)
/// nor in the North American ones; 14 is 802.11b-only in Japan, so never.
pub(crate) fn allowed_channel(country: &str, channel: u8) -> bool {
    const ONLY_1_TO_11: &[&str] = &["00", "US", "CA", "TW", "PR", "GU", "AS", "VI", "MP", "UM"];
    match channel {
        1..=11 => true,
        12 | 13 => !ONLY_1_TO_11.contains(&country),
        _ => false,
    }
}

fn is_hostname_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// hostapd's configuration for the phone-side AP.
pub(crate) fn hostapd_conf(s: &Settings) -> String {
    let mut c = String::from(
        "# Written at boot by `fieldmesh setup` from /boot/firmware/fieldmesh.toml; edit that.\n",
    );
    let _ = writeln!(c, "interface={AP_INTERFACE}");
    c.push_str("driver=nl80211\nctrl_interface=/run/hostapd\nctrl_interface_group=0\n");
    // Hex, so any SSID bytes survive the line-based format.
    let _ = writeln!(c, "ssid2={}", hex(s.ssid.as_bytes()));
    if !s.ssid.is_ascii() {
        c.push_str("utf8_ssid=1\n");
    }
    if s.country != "00" {
        let _ = writeln!(c, "country_code={}\nieee80211d=1", s.country);
    }
    let _ = writeln!(c, "hw_mode=g\nchannel={}", s.channel);
    c.push_str("ieee80211n=1\nwmm_enabled=1\nauth_algs=1\nignore_broadcast_ssid=0\n");
    if !s.passphrase.is_empty() {
        c.push_str("wpa=2\nwpa_key_mgmt=WPA-PSK\nrsn_pairwise=CCMP\n");
        let _ = writeln!(c, "wpa_passphrase={}", s.passphrase);
    }
    c
}

/// dnsmasq's configuration: DHCP and DNS for phones, the fixed name, the SIP server (DHCP
/// option 120, RFC 3361; DNS SRV and DNS-SD `_sip._udp`) and the time server (option 42).
pub(crate) fn dnsmasq_conf(_s: &Settings) -> String {
    let a = AP_ADDRESS;
    let i = AP_INTERFACE;
    format!(
        "# Written at boot by `fieldmesh setup`; the phone side is the same on every appliance.\n\
         interface={i}\n\
         bind-dynamic\n\
         no-resolv\n\
         domain-needed\n\
         bogus-priv\n\
         domain={DOMAIN}\n\
         local=/{DOMAIN}/\n\
         host-record={NAME},fieldmesh,{a}\n\
         srv-host=_sip._udp.{DOMAIN},{NAME},{SIP_PORT}\n\
         srv-host=_sip._tcp.{DOMAIN},{NAME},{SIP_PORT}\n\
         ptr-record=b._dns-sd._udp.{DOMAIN},{DOMAIN}\n\
         ptr-record=lb._dns-sd._udp.{DOMAIN},{DOMAIN}\n\
         ptr-record=_services._dns-sd._udp.{DOMAIN},_sip._udp.{DOMAIN}\n\
         ptr-record=_sip._udp.{DOMAIN},fieldmesh._sip._udp.{DOMAIN}\n\
         srv-host=fieldmesh._sip._udp.{DOMAIN},{NAME},{SIP_PORT}\n\
         txt-record=fieldmesh._sip._udp.{DOMAIN},\"txtvers=1\"\n\
         dhcp-authoritative\n\
         dhcp-range={i},10.42.0.50,10.42.0.250,255.255.255.0,1h\n\
         dhcp-option={i},option:router,{a}\n\
         dhcp-option={i},option:dns-server,{a}\n\
         dhcp-option={i},option:domain-search,{DOMAIN}\n\
         dhcp-option={i},option:ntp-server,{a}\n\
         dhcp-option={i},option:sip-server,{a}\n\
         dhcp-leasefile=/run/fieldmesh-dnsmasq/leases\n"
    )
}

/// The daemon's configuration (keys of `fieldmesh default-config`).
pub(crate) fn daemon_toml(s: &Settings) -> String {
    format!(
        "# Written at boot by `fieldmesh setup` from /boot/firmware/fieldmesh.toml.\n\
         [node]\n\
         name = \"{}\"\n\n\
         [sip]\n\
         domains = [\"{NAME}\", \"fieldmesh\", \"{DOMAIN}\", \"fieldmesh.local\"]\n\n\
         [api]\n\
         # The web page for phones (http://{NAME}/) and the local CLI; never the mesh side.\n\
         listen = [\"127.0.0.1:8080\", \"{AP_ADDRESS}:80\"]\n\n\
         [mesh]\n\
         # The neighbours as chrony peers: one clock among the appliances (fieldmesh-chrony.path).\n\
         chrony_sources = \"{CHRONY_SOURCES}\"\n",
        s.node_name
    )
}

/// Environment for the mesh-radio script (`/usr/lib/fieldmesh/mesh-radio`).
pub(crate) fn mesh_env(s: &Settings) -> String {
    let freq = 2407 + 5 * u32::from(s.mesh_channel);
    format!(
        "MESH_RADIO={}\nMESH_ID={}\nMESH_FREQ={freq}\nMESH_COUNTRY={}\n",
        s.mesh_radio, s.mesh_id, s.country
    )
}

fn write_all(s: &Settings, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    // chrony's sourcedir for mesh peers (chrony/conf.d/fieldmesh.conf), which the daemon
    // (user fieldmesh) fills at run time.
    let chrony = out.join("chrony");
    std::fs::create_dir_all(&chrony)?;
    if let Ok(Some(user)) = nix::unistd::User::from_name("fieldmesh") {
        nix::unistd::chown(&chrony, Some(user.uid), Some(user.gid))?;
    }
    write_file(&out.join("hostapd-wlan0.conf"), &hostapd_conf(s), 0o600)?;
    write_file(&out.join("dnsmasq.conf"), &dnsmasq_conf(s), 0o644)?;
    write_file(&out.join("mesh.env"), &mesh_env(s), 0o644)?;
    let daemon = out.join("fieldmesh.toml");
    write_file(&daemon, &daemon_toml(s), 0o644)?;
    // The strict loader must accept what we wrote, or the daemon would crash-loop.
    crate::config::ConfigFile::load(&crate::config::Flags {
        config: Some(daemon),
        ..crate::config::Flags::default()
    })?;
    Ok(())
}

/// Writes atomically (temporary file, then rename) with the given mode.
fn write_file(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (Settings, Vec<String>) {
        parse(Some(text))
    }

    #[test]
    fn a_good_file_sets_every_key_and_reports_nothing_but_set_values() {
        let (s, report) = parsed(
            "[node]\nname = \"camp-3\"\n[wifi]\nssid = \"Clinic\"\npassphrase = \"correct horse\"\n\
             country = \"ke\"\nchannel = 13\n[mesh]\nradio = \"wlan2\"\nid = \"relief\"\nchannel = 11\n",
        );
        assert!(report.is_empty(), "{report:?}");
        assert_eq!(s.node_name, "camp-3");
        assert_eq!(s.country, "KE");
        assert_eq!(s.channel, 13);
        assert_eq!(s.mesh_radio, "wlan2");
        let h = hostapd_conf(&s);
        assert!(h.contains("ssid2=436c696e6963\n"), "{h}");
        assert!(h.contains("country_code=KE\nieee80211d=1\n"), "{h}");
        assert!(h.contains("wpa=2\n") && h.contains("wpa_passphrase=correct horse\n"));
        assert!(mesh_env(&s).contains("MESH_FREQ=2462\n"));
    }

    #[test]
    fn bad_toml_gives_every_default_and_says_where() {
        let (s, report) = parsed("[wifi]\nssid = \"Clinic\"\nchannel = = 3\n");
        assert_eq!(s, Settings::default());
        assert!(
            report[0].starts_with("not valid TOML (line 3)"),
            "{report:?}"
        );
        assert!(report.iter().all(|l| !l.contains('\n')));
        assert!(report.iter().any(|l| l.contains("wifi.country")));
    }

    #[test]
    fn unknown_keys_are_named_and_ignored() {
        let (s, report) =
            parsed("ssid = \"top\"\n[wifi]\nsid = \"x\"\nssid = \"Camp\"\n[radio]\nfoo = 1\n");
        assert_eq!(s.ssid, "Camp");
        for line in [
            "ssid: unknown key (expected a section such as [wifi]); ignored",
            "wifi.sid: unknown key; ignored",
            "radio.foo: unknown key; ignored",
        ] {
            assert!(report.contains(&line.to_string()), "{line}: {report:?}");
        }
    }

    #[test]
    fn a_short_passphrase_leaves_the_network_open_and_says_so() {
        let (s, report) = parsed("[wifi]\npassphrase = \"1234567\"\ncountry = \"DE\"\n");
        assert_eq!(s.passphrase, "");
        assert_eq!(
            report,
            vec![
                "wifi.passphrase: WPA2 needs 8 to 63 printable ASCII characters, this one has 7; \
                 the network stays OPEN (the default)"
                    .to_string()
            ]
        );
        let h = hostapd_conf(&s);
        assert!(!h.contains("wpa"), "{h}");
        // A newline would inject a hostapd line: refused as well.
        let (s, report) = parsed("[wifi]\npassphrase = \"12345678\\nwpa=0\"\n");
        assert_eq!(s.passphrase, "");
        assert!(report[0].starts_with("wifi.passphrase"), "{report:?}");
    }

    #[test]
    fn a_channel_not_allowed_in_the_country_falls_back_to_the_default() {
        let (s, report) = parsed("[wifi]\ncountry = \"US\"\nchannel = 13\n");
        assert_eq!(s.channel, 6);
        assert_eq!(
            report,
            vec!["wifi.channel: 13 is not allowed in country US; using 6".to_string()]
        );
        let (s, report) = parsed("[wifi]\ncountry = \"DE\"\nchannel = 99\n[mesh]\nchannel = 14\n");
        assert_eq!((s.channel, s.mesh_channel), (6, 1));
        assert_eq!(report.len(), 2, "{report:?}");
        assert!(report[0].starts_with("wifi.channel: expected a 2.4 GHz channel"));
        // The world domain (the default) allows 1 to 11 only.
        let (s, _) = parsed("[wifi]\nchannel = 12\n");
        assert_eq!(s.channel, 6);
    }

    #[test]
    fn wrong_types_and_values_name_the_key_and_keep_its_default() {
        let (s, report) = parsed(
            "[node]\nname = \"bad name!\"\n[wifi]\nssid = 5\ncountry = \"Kenya\"\n\
             [mesh]\nradio = \"wlan0\"\n",
        );
        let d = Settings::default();
        assert_eq!(
            (s.ssid, s.country, s.mesh_radio),
            (d.ssid, d.country, d.mesh_radio)
        );
        for key in ["node.name", "wifi.ssid", "wifi.country", "mesh.radio"] {
            assert!(
                report.iter().any(|l| l.starts_with(key)),
                "{key}: {report:?}"
            );
        }
    }

    #[test]
    fn no_file_gives_defaults_with_the_country_warning() {
        let (s, report) = parse(None);
        assert_eq!(s, Settings::default());
        assert!(report.iter().any(|l| l.starts_with("WARNING wifi.country")));
        let h = hostapd_conf(&s);
        assert!(
            h.contains("channel=6\n") && !h.contains("country_code"),
            "{h}"
        );
    }

    #[test]
    fn the_written_configs_load_and_phones_get_the_sip_server() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (s, _) = parsed("[node]\nname = \"camp-3\"\n");
        write_all(&s, dir.path()).expect("write");
        let d = std::fs::read_to_string(dir.path().join("dnsmasq.conf")).expect("dnsmasq");
        assert!(
            d.contains("dhcp-option=wlan0,option:sip-server,10.42.0.1\n"),
            "{d}"
        );
        assert!(
            d.contains("dhcp-option=wlan0,option:ntp-server,10.42.0.1\n"),
            "{d}"
        );
        assert!(
            d.contains("srv-host=_sip._udp.mesh,fieldmesh.mesh,5060\n"),
            "{d}"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("hostapd-wlan0.conf"))
            .expect("hostapd")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let daemon = std::fs::read_to_string(dir.path().join("fieldmesh.toml")).expect("daemon");
        assert!(daemon.contains("name = \"camp-3\""), "{daemon}");
    }
}
