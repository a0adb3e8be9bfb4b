//! Configuration in two stages (the shape of ripgrep's lowargs → hiargs): [`ConfigFile`] is
//! what the embedded default, the operator's TOML file and the flags say, checked key by key
//! with errors that name the key; [`Config`] is that, resolved against this machine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The embedded default; a file given with `--config` overrides it key by key.
pub(crate) const DEFAULT_TOML: &str = include_str!("../fieldmesh.default.toml");

/// A configuration error: which key, what value, what was expected. Printed as one line.
#[derive(Debug, thiserror::Error)]
#[error("config: {0}")]
pub(crate) struct ConfigError(pub String);

/// The settings, after the file and the flags were applied and every value was checked.
#[derive(Clone, Debug)]
pub(crate) struct ConfigFile {
    pub(crate) node_name: String,
    pub(crate) sip_listen: Vec<SocketAddr>,
    pub(crate) sip_domains: Vec<String>,
    pub(crate) no_answer: Duration,
    pub(crate) max_expires: u32,
    pub(crate) min_expires: u32,
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) api_listen: Vec<SocketAddr>,
    /// Free extensions are handed out from this range (both inclusive).
    pub(crate) api_extensions: (u32, u32),
    /// Accept state-changing API requests that arrive on a mesh-side address.
    pub(crate) api_mesh_writes: bool,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) mesh_enabled: bool,
    pub(crate) mesh_interface: Vec<String>,
    pub(crate) mesh_listen: SocketAddr,
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) peer_timeout: Duration,
    /// Where the connected neighbours are written as chrony peers; `None`: nowhere.
    pub(crate) mesh_chrony_sources: Option<PathBuf>,
    pub(crate) media_enabled: bool,
    /// First and last port of the RTP relay's range (both inclusive; the first is even).
    pub(crate) media_ports: (u16, u16),
    pub(crate) media_timeout: Duration,
    /// The echo test number; empty turns the service off.
    pub(crate) media_echo: String,
    pub(crate) media_echo_delay: Duration,
    pub(crate) voicemail_enabled: bool,
    /// The number a phone dials to hear its mailbox.
    pub(crate) voicemail_number: String,
    pub(crate) voicemail_max: Duration,
    /// How long voicemails (and undelivered messages) are kept.
    pub(crate) store_keep: Duration,
    /// How long a holder of stored items may be gone before the others copy them elsewhere.
    pub(crate) store_restore_after: Duration,
    /// Tell the sender of a stored message when a phone took it.
    pub(crate) store_delivery_notice: bool,
}

/// Overrides from the command line.
#[derive(Clone, Debug, Default)]
pub(crate) struct Flags {
    pub(crate) config: Option<PathBuf>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) sip_listen: Vec<String>,
    pub(crate) api_listen: Vec<String>,
    pub(crate) mesh_interface: Vec<String>,
    pub(crate) mesh_listen: Option<String>,
    pub(crate) no_mesh: bool,
    pub(crate) media_ports: Option<String>,
}

/// The resolved configuration the daemon runs with.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) file: ConfigFile,
    pub(crate) node_name: String,
    pub(crate) state_dir: PathBuf,
}

impl ConfigFile {
    /// Loads the embedded default, then the file from `flags`, then the flags.
    pub(crate) fn load(flags: &Flags) -> Result<ConfigFile, ConfigError> {
        let default: toml::Table = DEFAULT_TOML
            .parse()
            .expect("the embedded default is valid TOML");
        let mut config = ConfigFile::from_table(&default, "default")?;
        if let Some(path) = &flags.config {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                ConfigError(format!(
                    "{}: not valid TOML: {}",
                    path.display(),
                    one_line(e.message())
                ))
            })?;
            config.apply(&table, &path.display().to_string())?;
        }
        if !flags.sip_listen.is_empty() {
            config.sip_listen = flags
                .sip_listen
                .iter()
                .map(|s| socket_addr("sip.listen", s))
                .collect::<Result<_, _>>()?;
        }
        if !flags.api_listen.is_empty() {
            config.api_listen = flags
                .api_listen
                .iter()
                .map(|s| socket_addr("api.listen", s))
                .collect::<Result<_, _>>()?;
        }
        if let Some(dir) = &flags.state_dir {
            config.state_dir = Some(dir.clone());
        }
        if !flags.mesh_interface.is_empty() {
            config.mesh_interface = flags.mesh_interface.clone();
        }
        if let Some(ports) = &flags.media_ports {
            config.media_ports = port_range("media.ports", ports)?;
        }
        if let Some(listen) = &flags.mesh_listen {
            config.mesh_listen = socket_addr("mesh.listen", listen)?;
        }
        if flags.no_mesh {
            config.mesh_enabled = false;
        }
        config.check()?;
        Ok(config)
    }

    fn from_table(table: &toml::Table, origin: &str) -> Result<ConfigFile, ConfigError> {
        let mut c = ConfigFile {
            node_name: String::new(),
            sip_listen: Vec::new(),
            sip_domains: Vec::new(),
            no_answer: Duration::ZERO,
            max_expires: 0,
            min_expires: 0,
            t1: Duration::ZERO,
            t2: Duration::ZERO,
            t4: Duration::ZERO,
            max_message_bytes: 0,
            api_listen: Vec::new(),
            api_extensions: (0, 0),
            api_mesh_writes: false,
            state_dir: None,
            mesh_enabled: true,
            mesh_interface: Vec::new(),
            mesh_listen: SocketAddr::from(([0, 0, 0, 0], 7070)),
            mesh_chrony_sources: None,
            ping_interval: Duration::ZERO,
            ping_timeout: Duration::ZERO,
            peer_timeout: Duration::ZERO,
            media_enabled: true,
            media_ports: (0, 0),
            media_timeout: Duration::ZERO,
            media_echo: String::new(),
            media_echo_delay: Duration::ZERO,
            voicemail_enabled: true,
            voicemail_number: String::new(),
            voicemail_max: Duration::ZERO,
            store_keep: Duration::ZERO,
            store_restore_after: Duration::ZERO,
            store_delivery_notice: true,
        };
        c.apply(table, origin)?;
        Ok(c)
    }

    /// Applies every key present in `table`; unknown sections and keys are errors, so a typo
    /// never silently falls back to a default.
    fn apply(&mut self, table: &toml::Table, origin: &str) -> Result<(), ConfigError> {
        for (section, value) in table {
            let toml::Value::Table(keys) = value else {
                return Err(ConfigError(format!(
                    "{origin}: {section}: expected a [{section}] section"
                )));
            };
            for (key, value) in keys {
                let name = format!("{section}.{key}");
                self.set(&name, value)
                    .map_err(|e| ConfigError(format!("{origin}: {}", e.0)))?;
            }
        }
        Ok(())
    }

    fn set(&mut self, name: &str, v: &toml::Value) -> Result<(), ConfigError> {
        match name {
            "node.name" => self.node_name = string(name, v)?,
            "sip.listen" => {
                self.sip_listen = strings(name, v)?
                    .iter()
                    .map(|s| socket_addr(name, s))
                    .collect::<Result<_, _>>()?
            }
            "sip.domains" => self.sip_domains = strings(name, v)?,
            "sip.no_answer_secs" => {
                self.no_answer = Duration::from_secs(integer(name, v, 1, 3600)?)
            }
            "sip.max_expires" => self.max_expires = integer(name, v, 1, 86_400)? as u32,
            "sip.min_expires" => self.min_expires = integer(name, v, 0, 86_400)? as u32,
            "sip.t1_ms" => self.t1 = Duration::from_millis(integer(name, v, 1, 60_000)?),
            "sip.t2_ms" => self.t2 = Duration::from_millis(integer(name, v, 1, 600_000)?),
            "sip.t4_ms" => self.t4 = Duration::from_millis(integer(name, v, 0, 600_000)?),
            "sip.max_message_bytes" => {
                self.max_message_bytes = integer(name, v, 1024, 1 << 20)? as usize
            }
            "api.listen" => {
                let addrs = match v {
                    toml::Value::String(s) => vec![s.clone()],
                    _ => strings(name, v)?,
                };
                self.api_listen = addrs
                    .iter()
                    .map(|s| socket_addr(name, s))
                    .collect::<Result<_, _>>()?
            }
            "api.extensions" => self.api_extensions = extension_range(name, &string(name, v)?)?,
            "api.mesh_writes" => {
                self.api_mesh_writes = v.as_bool().ok_or_else(|| {
                    ConfigError(format!("{name}: expected true or false, got {v}"))
                })?
            }
            "mesh.enabled" => {
                self.mesh_enabled = v.as_bool().ok_or_else(|| {
                    ConfigError(format!("{name}: expected true or false, got {v}"))
                })?
            }
            "mesh.interface" => {
                self.mesh_interface = match v {
                    toml::Value::String(s) if s.is_empty() => Vec::new(),
                    toml::Value::String(s) => vec![s.clone()],
                    _ => strings(name, v)?,
                }
            }
            "mesh.listen" => self.mesh_listen = socket_addr(name, &string(name, v)?)?,
            "mesh.chrony_sources" => {
                let path = string(name, v)?;
                self.mesh_chrony_sources = match path.as_str() {
                    "" => None,
                    p if p.starts_with('/') && p.ends_with(".sources") => Some(PathBuf::from(p)),
                    p => {
                        return Err(ConfigError(format!(
                            "{name}: {p:?} is not an absolute path ending in .sources"
                        )));
                    }
                }
            }
            "mesh.ping_interval_ms" => {
                self.ping_interval = Duration::from_millis(integer(name, v, 100, 60_000)?)
            }
            "mesh.ping_timeout_ms" => {
                self.ping_timeout = Duration::from_millis(integer(name, v, 100, 60_000)?)
            }
            "mesh.peer_timeout_ms" => {
                self.peer_timeout = Duration::from_millis(integer(name, v, 100, 30_000)?)
            }
            "media.enabled" => {
                self.media_enabled = v.as_bool().ok_or_else(|| {
                    ConfigError(format!("{name}: expected true or false, got {v}"))
                })?
            }
            "media.ports" => self.media_ports = port_range(name, &string(name, v)?)?,
            "media.timeout_secs" => {
                self.media_timeout = Duration::from_secs(integer(name, v, 5, 3600)?)
            }
            "media.echo" => self.media_echo = extension(name, v, true)?,
            "voicemail.enabled" => {
                self.voicemail_enabled = v.as_bool().ok_or_else(|| {
                    ConfigError(format!("{name}: expected true or false, got {v}"))
                })?
            }
            "voicemail.number" => self.voicemail_number = extension(name, v, false)?,
            "voicemail.max_secs" => {
                self.voicemail_max = Duration::from_secs(integer(name, v, 5, 3600)?)
            }
            "store.keep_days" => {
                self.store_keep = Duration::from_secs(integer(name, v, 1, 365)? * 86_400)
            }
            "store.delivery_notice" => {
                self.store_delivery_notice = v.as_bool().ok_or_else(|| {
                    ConfigError(format!("{name}: expected true or false, got {v}"))
                })?
            }
            "store.restore_after_secs" => {
                self.store_restore_after = Duration::from_secs(integer(name, v, 2, 7 * 86_400)?)
            }
            "media.echo_delay_ms" => {
                self.media_echo_delay = Duration::from_millis(integer(name, v, 0, 5000)?)
            }
            "state.dir" => {
                let dir = string(name, v)?;
                self.state_dir = (!dir.is_empty()).then(|| PathBuf::from(dir));
            }
            _ => return Err(ConfigError(format!("{name}: unknown key"))),
        }
        Ok(())
    }

    /// Checks that need more than one key.
    fn check(&self) -> Result<(), ConfigError> {
        if self.sip_listen.is_empty() {
            return Err(ConfigError(
                "sip.listen: at least one address is needed".into(),
            ));
        }
        if self.min_expires > self.max_expires {
            return Err(ConfigError(format!(
                "sip.min_expires: {} is larger than sip.max_expires ({})",
                self.min_expires, self.max_expires
            )));
        }
        if self.api_listen.is_empty() {
            return Err(ConfigError(
                "api.listen: at least one address is needed".into(),
            ));
        }
        if self.t2 < self.t1 {
            return Err(ConfigError(format!(
                "sip.t2_ms: {:?} is shorter than sip.t1_ms ({:?})",
                self.t2, self.t1
            )));
        }
        Ok(())
    }

    /// Resolves machine-dependent values: the node name and the state directory.
    pub(crate) fn resolve(self) -> Config {
        let node_name = if self.node_name.is_empty() {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "fieldmesh".into())
        } else {
            self.node_name.clone()
        };
        let state_dir = self.state_dir.clone().unwrap_or_else(default_state_dir);
        Config {
            file: self,
            node_name,
            state_dir,
        }
    }
}

/// `$STATE_DIRECTORY` (systemd's StateDirectory=), else the XDG state home, else `./fieldmesh-state`.
fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("fieldmesh");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Path::new(&home).join(".local/state/fieldmesh"),
        None => PathBuf::from("fieldmesh-state"),
    }
}

fn string(name: &str, v: &toml::Value) -> Result<String, ConfigError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| ConfigError(format!("{name}: expected a string, got {v}")))
}

fn strings(name: &str, v: &toml::Value) -> Result<Vec<String>, ConfigError> {
    let err = || ConfigError(format!("{name}: expected a list of strings, got {v}"));
    v.as_array()
        .ok_or_else(err)?
        .iter()
        .map(|s| s.as_str().map(str::to_string).ok_or_else(err))
        .collect()
}

/// A service number like `*43`; `may_be_empty` for services that "" turns off.
fn extension(name: &str, v: &toml::Value, may_be_empty: bool) -> Result<String, ConfigError> {
    let number = string(name, v)?;
    if (number.is_empty() && !may_be_empty)
        || !number
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"*#+-_.".contains(&b))
    {
        return Err(ConfigError(format!(
            "{name}: expected an extension like \"*43\" (digits, letters, * # + - _ .), got {number:?}"
        )));
    }
    Ok(number)
}

fn integer(name: &str, v: &toml::Value, min: u64, max: u64) -> Result<u64, ConfigError> {
    v.as_integer()
        .and_then(|i| u64::try_from(i).ok())
        .filter(|i| (min..=max).contains(i))
        .ok_or_else(|| {
            ConfigError(format!(
                "{name}: expected a whole number from {min} to {max}, got {v}"
            ))
        })
}

/// `"20000-20999"`: an even first port and at least two RTP/RTCP pairs.
fn port_range(name: &str, s: &str) -> Result<(u16, u16), ConfigError> {
    let bad = || {
        ConfigError(format!(
            "{name}: expected \"FIRST-LAST\" with an even FIRST, 1024 <= FIRST and at least 4 ports, got {s:?}"
        ))
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a < 1024 || !a.is_multiple_of(2) || b < a.saturating_add(3) {
        return Err(bad());
    }
    Ok((a, b))
}

/// `"2000-7999"`: extensions of 2 to 8 digits, FIRST <= LAST.
fn extension_range(name: &str, s: &str) -> Result<(u32, u32), ConfigError> {
    let bad = || {
        ConfigError(format!(
            "{name}: expected \"FIRST-LAST\" of 2-8 digit extensions with FIRST <= LAST, got {s:?}"
        ))
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let digits = |x: &str| {
        let x = x.trim();
        ((2..=8).contains(&x.len()) && x.bytes().all(|b| b.is_ascii_digit()) && !x.starts_with('0'))
            .then(|| x.parse::<u32>().ok())
            .flatten()
    };
    let (a, b) = (digits(a).ok_or_else(bad)?, digits(b).ok_or_else(bad)?);
    if a > b {
        return Err(bad());
    }
    Ok((a, b))
}

fn socket_addr(name: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| ConfigError(format!("{name}: {s:?} is not a valid socket address")))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(toml: &str) -> Result<ConfigFile, ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f.toml");
        std::fs::write(&path, toml).expect("write");
        ConfigFile::load(&Flags {
            config: Some(path),
            ..Flags::default()
        })
    }

    #[test]
    fn the_embedded_default_loads() {
        let c = ConfigFile::load(&Flags::default()).expect("default");
        assert_eq!(c.sip_listen, vec!["0.0.0.0:5060".parse().expect("addr")]);
        assert_eq!(c.max_expires, 300);
        assert_eq!(c.no_answer, Duration::from_secs(25));
    }

    #[test]
    fn a_file_overrides_only_what_it_names() {
        let c = load_with("[sip]\nno_answer_secs = 3\n").expect("load");
        assert_eq!(c.no_answer, Duration::from_secs(3));
        assert_eq!(c.max_expires, 300);
    }

    #[test]
    fn errors_name_the_key_and_the_value() {
        let flags = Flags {
            sip_listen: vec!["127.0.0.1:99999".into()],
            ..Flags::default()
        };
        let e = ConfigFile::load(&flags).expect_err("bad port");
        assert_eq!(
            e.to_string(),
            r#"config: sip.listen: "127.0.0.1:99999" is not a valid socket address"#
        );
        let e = load_with("[sip]\nfoo = 1\n").expect_err("unknown");
        assert!(e.to_string().ends_with("sip.foo: unknown key"), "{e}");
        let e = load_with("[sip]\nmax_expires = \"long\"\n").expect_err("type");
        assert!(
            e.to_string()
                .contains("sip.max_expires: expected a whole number"),
            "{e}"
        );
        let e = load_with("[sip\n").expect_err("toml");
        assert!(
            e.to_string().contains("not valid TOML") && !e.to_string().contains('\n'),
            "{e}"
        );
        let e = load_with("[api]\nextensions = \"3000-2000\"\n").expect_err("range");
        assert!(e.to_string().contains("api.extensions: expected"), "{e}");
        let c = load_with(
            "[api]\nlisten = [\"127.0.0.1:8080\", \"10.42.0.1:80\"]\nextensions = \"100-199\"\n",
        )
        .expect("a list of listen addresses");
        assert_eq!(c.api_listen.len(), 2);
        assert_eq!(c.api_extensions, (100, 199));
        let e = load_with("[sip]\nmin_expires = 400\n").expect_err("min > max");
        assert!(e.to_string().contains("sip.min_expires"), "{e}");
    }
}
